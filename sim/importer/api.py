"""``mxe.run``: an ONNX model on the engine from Python, and its agreement with ONNX Runtime and
ONNX's reference implementation."""

import asyncio
from dataclasses import dataclass, field

import numpy as np


__all__ = ["run", "RunResult", "samples_of", "agreement", "reference_outputs",
           "onnxruntime_outputs"]


@dataclass
class RunResult:
    """What :func:`run` returns.

    Members
    -------
    outputs : list of dict
        Per inference, output name -> array.
    layers : list of dict
        Per layer, in the model's order, summed over the inferences: ``layer``, ``op``,
        ``where`` (``engine`` or ``host``; ``reason`` when an engine layer fell back to the
        host), ``fused`` (nodes folded into it), ``gemm`` (M, K, N of one inference), ``macs``,
        the engine's ``counters`` (``CYCLES``, ``BUSY_CYCLES``, ...), ``cycles`` and
        ``utilization`` (MACs / (rows * cols * cycles)) on the RTL.
    engine : str
    config : EngineConfig
    """
    outputs: list
    layers: list
    engine: str
    config: object
    input_names: list = field(default_factory=list)
    output_names: list = field(default_factory=list)

    def stacked(self, name=None):
        """One output (the first by default) of every inference, concatenated along axis 0."""
        name = name or self.output_names[0]
        return np.concatenate([np.asarray(o[name]) for o in self.outputs], axis=0)


def _load(model):
    import onnx
    if isinstance(model, onnx.ModelProto):
        return model
    return onnx.load(str(model))


def samples_of(model, inputs):
    """``inputs`` as a list of feeds (input name -> array), one per inference.

    ``inputs`` is an array (for a model with one input), a dict of arrays, or a list of either.
    An array whose shape has one axis more than the model's input, or whose first axis is
    longer than a model's fixed batch of 1, is a batch: one inference per entry along axis 0.
    """
    model = _load(model)
    constants = {t.name for t in model.graph.initializer}
    graph_inputs = [i for i in model.graph.input if i.name not in constants]
    names = [i.name for i in graph_inputs]
    if isinstance(inputs, (list, tuple)):
        return [feed for item in inputs for feed in samples_of(model, item)]
    if not isinstance(inputs, dict):
        if len(names) != 1:
            raise ValueError(f"inputs: the model takes {len(names)} inputs "
                             f"({', '.join(names)}); give a dict of them")
        inputs = {names[0]: inputs}
    unknown = [k for k in inputs if k not in names]
    if unknown:
        raise ValueError(f"inputs: the model has no input {unknown[0]!r} (it takes "
                         f"{', '.join(names)})")
    missing = [k for k in names if k not in inputs]
    if missing:
        raise ValueError(f"inputs: {missing[0]!r} is missing")
    split = {}
    count = None
    for info in graph_inputs:
        x = np.asarray(inputs[info.name])
        dims = [d.dim_value if d.HasField("dim_value") else None
                for d in info.type.tensor_type.shape.dim]
        if x.ndim == len(dims) + 1:
            parts = [x[i] for i in range(len(x))]
        elif x.ndim == len(dims) and dims and dims[0] == 1 and x.shape[0] > 1:
            parts = [x[i:i + 1] for i in range(len(x))]
        else:
            parts = [x]
        if count is not None and len(parts) != count:
            raise ValueError(f"inputs: {info.name} has {len(parts)} samples, another input "
                             f"{count}")
        count = len(parts)
        split[info.name] = [_checked(info, dims, part) for part in parts]
    return [{name: split[name][i] for name in names} for i in range(count)]


def _checked(info, dims, x):
    """One sample of input ``info``: its shape against the model's fixed dimensions, a float
    array cast to the model's float type; anything else refused naming the input."""
    from onnx import helper
    want = np.dtype(helper.tensor_dtype_to_np_dtype(info.type.tensor_type.elem_type))
    shape_ok = x.ndim == len(dims) and all(d is None or d <= 0 or d == s
                                           for d, s in zip(dims, x.shape))
    if not shape_ok:
        shown = "x".join("?" if d is None or d <= 0 else str(d) for d in dims)
        raise ValueError(f"input {info.name!r} must have shape {shown} (or a batch of them), "
                         f"not {'x'.join(str(s) for s in x.shape)}")
    if x.dtype != want:
        if np.issubdtype(x.dtype, np.floating) and np.issubdtype(want, np.floating):
            return x.astype(want)
        raise ValueError(f"input {info.name!r} must be {want}, not {x.dtype}")
    return x


def run(model, inputs, engine="verilator", *, config=None, progress=None):
    """Run an ONNX model with its quantized linear layers on the engine.

    Parameters
    ----------
    model : onnx.ModelProto or path
    inputs : array, dict of arrays, or a list of them
        See :func:`samples_of` (a batch runs one inference per sample).
    engine : "verilator", "icarus", "golden", EngineSession or MXEDriver
        The engine RTL in that simulator (one build per configuration, one simulator process
        for the whole call); ``"golden"``: the numpy golden model (no cycles); a running
        :class:`~mxe.sim.importer.session.EngineSession` to reuse across calls; or a driver
        connected to an engine (a board: :func:`mxe.board_host.connect`), its window set.
    config : EngineConfig, optional
        The engine (default: ``small``; ignored for a session).
    progress : callable, optional
        Called with the number of inferences done after each one.

    Returns
    -------
    RunResult

    Raises
    ------
    UnsupportedOperator
        A node neither the engine nor the host runs (one line naming it).
    ValueError
        Bad inputs or engine, naming the parameter.
    """
    from mxe.hw.config import EngineConfig
    from mxe.sim.importer.execute import GoldenEngine, execute
    from mxe.sim.importer.program import import_model
    from mxe.sim.driver import MXEDriver
    from mxe.sim.importer.session import EngineSession

    model = _load(model)
    program = import_model(model)           # refuses what cannot run, before any simulation
    feeds = samples_of(model, inputs)
    outputs, totals = [], {}
    if isinstance(engine, MXEDriver) or (isinstance(engine, str) and engine == "golden"):
        if isinstance(engine, MXEDriver):
            drv, config, where = engine, engine.config, "board"
        else:
            config = config or EngineConfig.preset("small")
            drv, where = GoldenEngine(config), "golden"
        stats = {}
        for i, feed in enumerate(feeds):
            out, stats = asyncio.run(execute(program, feed, drv, stats))
            outputs.append(out)
            if progress:
                progress(i + 1)
        layers = [s.as_dict(config) for s in stats.values()]
        if where == "board":
            _utilization(layers, config)
        return RunResult(outputs, layers, where, config, program.inputs, program.outputs)
    if isinstance(engine, EngineSession):
        session, own = engine, False
    elif engine in ("verilator", "icarus"):
        session, own = EngineSession(engine, config), True
    else:
        raise ValueError(f"engine must be 'verilator', 'icarus', 'golden', an EngineSession or "
                         f"an MXEDriver, not {engine!r}")
    data = model.SerializeToString()
    try:
        session.start()
        for i, feed in enumerate(feeds):
            out, layers = session.infer(data, feed)
            outputs.append(out)
            _add(totals, layers)
            if progress:
                progress(i + 1)
    finally:
        if own:
            session.close()
    layers = list(totals.values())
    _utilization(layers, session.config)
    return RunResult(outputs, layers, session.simulator, session.config,
                     program.inputs, program.outputs)


def _utilization(layers, config):
    for layer in layers:
        if layer.get("cycles"):
            layer["utilization"] = layer["macs"] / (config.macs * layer["cycles"])


def _add(totals, layers):
    for layer in layers:
        t = totals.get(layer["layer"])
        if t is None:
            totals[layer["layer"]] = {**layer, "counters": dict(layer["counters"])}
            continue
        t["calls"] += layer["calls"]
        t["macs"] += layer["macs"]
        if layer["where"] == "host":
            t["where"] = "host"
            t["reason"] = layer.get("reason", t.get("reason"))
        for k, v in layer["counters"].items():
            t["counters"][k] = t["counters"].get(k, 0) + v
        if "cycles" in layer:
            t["cycles"] = t.get("cycles", 0) + layer["cycles"]


def onnxruntime_outputs(model, feeds, *, optimization="all"):
    """ONNX Runtime's outputs (CPU) for each feed; ``optimization`` is its graph optimization
    level: ``"all"`` (its default: QDQ groups fused into its integer kernels), ``"basic"``
    (no such fusion) or ``"none"``."""
    import onnxruntime as ort
    levels = {"all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
              "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
              "none": ort.GraphOptimizationLevel.ORT_DISABLE_ALL}
    if optimization not in levels:
        raise ValueError(f"optimization must be one of {', '.join(levels)}, not "
                         f"{optimization!r}")
    options = ort.SessionOptions()
    options.graph_optimization_level = levels[optimization]
    session = ort.InferenceSession(_load(model).SerializeToString(), options,
                                   providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return [dict(zip(names, session.run(None, feed))) for feed in feeds]


def reference_outputs(model, feeds):
    """``onnx.reference.ReferenceEvaluator``'s outputs for each feed (with the host's
    ``com.microsoft`` operators)."""
    from onnx.reference import ReferenceEvaluator

    from mxe.sim.importer.host_ops import HOST_OPS
    evaluator = ReferenceEvaluator(_load(model), new_ops=HOST_OPS)
    names = list(evaluator.output_names)
    return [dict(zip(names, evaluator.run(None, feed))) for feed in feeds]


def agreement(outputs, expected):
    """Per output name: ``values``, ``exact`` (equal values), ``max_diff`` (largest absolute
    difference), and for a classifier's scores (2-D, more than one class) ``top1``
    (inferences whose argmax agrees) of ``samples``."""
    report = {}
    for name in outputs[0]:
        got = np.concatenate([np.asarray(o[name]).reshape(1, -1) if np.ndim(o[name]) <= 1
                              else np.asarray(o[name]).reshape(-1, np.shape(o[name])[-1])
                              for o in outputs])
        want = np.concatenate([np.asarray(e[name]).reshape(got.shape[0] // len(outputs), -1)
                               for e in expected]).reshape(got.shape)
        diff = np.abs(got.astype(np.float64) - want.astype(np.float64))
        entry = {"values": int(got.size), "exact": int((got == want).sum()),
                 "max_diff": float(diff.max()) if diff.size else 0.0}
        if got.ndim == 2 and got.shape[1] > 1:
            entry["top1"] = int((got.argmax(axis=1) == want.argmax(axis=1)).sum())
            entry["samples"] = int(got.shape[0])
        report[name] = entry
    return report
