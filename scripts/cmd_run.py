"""``mxe run``: an ONNX model on the engine RTL in simulation, checked against ONNX Runtime.

Imports the model (:mod:`mxe.sim.importer`: quantized linear layers on the engine, the rest on
the host), runs every input through the engine RTL in one simulator process, prints per layer
where it ran, its cycles and utilization, and the agreement of the outputs with ONNX Runtime
(and, with ``--reference``, with ONNX's reference implementation), and writes a JSON summary.
"""

import json
import sys
import time
from pathlib import Path

import numpy as np

from mxe.board_host import add_port_arguments
from mxe.config_args import CommandError, add_config_arguments, config_from_args
from mxe.sim.runner import SIMULATORS, simulator_missing

NAME = "run"
HELP = "run a quantized ONNX model on the engine RTL (simulation) and compare with ONNX Runtime"


def add_arguments(parser):
    parser.add_argument("model", help="the ONNX model file (.onnx)")
    parser.add_argument("--input", metavar="FILE",
                        help=".npy (a model with one input) or .npz (one array per input "
                             "name); an extra leading axis, or a first axis longer than the "
                             "model's batch of 1, is a batch of inferences (default: random "
                             "inputs, see --random)")
    parser.add_argument("--random", type=int, default=1, metavar="N",
                        help="without --input: N random inputs (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the random inputs (default: %(default)s)")
    parser.add_argument("--simulator", choices=(*SIMULATORS, "golden"), default="verilator",
                        help="where the engine layers run: the RTL on a simulator, or "
                             "'golden', the numpy golden model (no cycles) (default: "
                             "%(default)s)")
    parser.add_argument("--board", metavar="BOARD",
                        help="run the engine layers on this board (`mxe board list`) over its "
                             "serial link, given with --port ('sim': the board simulated on "
                             "Verilator), instead of a simulator")
    add_port_arguments(parser, required=False)
    parser.add_argument("--reference", action="store_true",
                        help="also compare with onnx.reference's ReferenceEvaluator")
    parser.add_argument("--labels", metavar="FILE",
                        help=".npy of class labels, one per inference: prints the top-1 "
                             "accuracy of the first output (and of ONNX Runtime's)")
    parser.add_argument("--onnxruntime-optimization", choices=("all", "basic", "none"),
                        default="all",
                        help="ONNX Runtime's graph optimization level for the comparison "
                             "('all', its default, fuses QDQ groups into its integer kernels; "
                             "'basic' does not) (default: %(default)s)")
    parser.add_argument("--no-onnxruntime", action="store_true",
                        help="do not compare with ONNX Runtime")
    parser.add_argument("-o", "--output", default="out/run", metavar="DIR",
                        help="where run.json and outputs.npz go (default: %(default)s)")
    add_config_arguments(parser, default_preset="small")


def _inputs(args, model):
    from mxe.sim.importer.api import samples_of
    if args.input:
        path = Path(args.input)
        try:
            data = np.load(path)
        except (OSError, ValueError) as exc:
            raise CommandError(f"--input {path}: cannot read it ({exc})") from None
        inputs = dict(data) if isinstance(data, np.lib.npyio.NpzFile) else data
    else:
        if args.random < 1:
            raise CommandError(f"--random must be at least 1, not {args.random}")
        inputs = [random_feed(model, np.random.default_rng(args.seed + i))
                  for i in range(args.random)]
    try:
        return samples_of(model, inputs)
    except ValueError as exc:
        raise CommandError(f"--input: {exc}") from None


def _run_simulated(args, model, feeds, config, run_model, log_path):
    """The model on the engine RTL in a simulator: ``(result, None)`` or ``(None, failure)``."""
    from tqdm import tqdm

    from mxe.cmd_demo import _output_to
    from mxe.sim.importer import UnsupportedOperator

    with _output_to(log_path) as terminal:
        bar = tqdm(total=len(feeds), desc=args.simulator, unit="inference", file=terminal,
                   dynamic_ncols=True)
        try:
            return run_model(model, feeds, engine=args.simulator, config=config,
                             progress=lambda n: bar.update(n - bar.n)), None
        except UnsupportedOperator as exc:
            return None, str(exc)
        except Exception as exc:            # noqa: BLE001 - a failed build or bench
            return None, f"{type(exc).__name__}: {exc}"
        finally:
            bar.close()


def _run_on_board(args, model, feeds, run_model):
    """The model with its engine layers on a board: ``(result, None)`` or ``(None, failure)``."""
    import asyncio

    from tqdm import tqdm

    from mxe.board_host import connect, open_link
    from mxe.hw.boards.catalog import board
    from mxe.sim.transport import LinkError

    try:
        target = board(args.board)
    except ValueError as exc:
        raise CommandError(str(exc)) from None
    with open_link(args, target) as (link, window):
        try:
            drv, config = asyncio.run(connect(link, window))
        except LinkError as exc:
            raise CommandError(f"the link to {args.port} failed: {exc}") from None
        print(f"engine: {config.rows}x{config.cols} ({config.key()}), window "
              f"{window[0]:#x}..{window[1]:#x}")
        with tqdm(total=len(feeds), desc=args.board, unit="inference",
                  dynamic_ncols=True) as bar:
            try:
                return run_model(model, feeds, engine=drv,
                                 progress=lambda n: bar.update(n - bar.n)), None
            except LinkError as exc:
                return None, f"the link to {args.port} failed: {exc}"


def random_feed(model, rng):
    """Random values for every graph input of ``model`` (dynamic dimensions 1): uniform in
    [0, 1) for floats, the whole range for integers."""
    from onnx import helper
    constants = {t.name for t in model.graph.initializer}
    feed = {}
    for info in model.graph.input:
        if info.name in constants:
            continue
        t = info.type.tensor_type
        dtype = helper.tensor_dtype_to_np_dtype(t.elem_type)
        shape = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else 1
                 for d in t.shape.dim]
        if np.issubdtype(dtype, np.integer):
            info_ = np.iinfo(dtype)
            feed[info.name] = rng.integers(info_.min, info_.max, size=shape,
                                           endpoint=True).astype(dtype)
        else:
            feed[info.name] = rng.random(size=shape).astype(dtype)
    return feed


def run(args):
    import onnx

    from mxe.sim.importer import UnsupportedOperator, import_model
    from mxe.sim.importer.api import agreement, onnxruntime_outputs, reference_outputs
    from mxe.sim.importer.api import run as run_model

    path = Path(args.model)
    try:
        model = onnx.load(str(path))
    except (OSError, Exception) as exc:        # noqa: BLE001 - protobuf raises its own
        raise CommandError(f"model {path}: cannot read it as ONNX ({exc})") from None
    config = config_from_args(args)
    if (args.board is None) != (args.port is None):
        raise CommandError("--board and --port go together: the board's name and its serial "
                           "port")
    if args.board is None and args.simulator != "golden":
        missing = simulator_missing(args.simulator)
        if missing:
            raise CommandError(f"simulator {args.simulator} is not available: {missing}")
    try:
        program = import_model(model)
    except UnsupportedOperator as exc:
        raise CommandError(str(exc)) from None
    feeds = _inputs(args, model)
    labels = None
    if args.labels:
        try:
            labels = np.load(args.labels).reshape(-1)
        except (OSError, ValueError) as exc:
            raise CommandError(f"--labels {args.labels}: cannot read it ({exc})") from None
        if len(labels) != len(feeds):
            raise CommandError(f"--labels has {len(labels)} labels for {len(feeds)} inputs")
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    engine_layers = [l for l in program.layers if l.where == "engine"]
    where = f"board {args.board} on {args.port}" if args.board else args.simulator
    print(f"MXE run: {path.name}, {len(program.layers)} layers ({len(engine_layers)} on the "
          f"engine, {len(program.layers) - len(engine_layers)} on the host), {len(feeds)} "
          f"input{'s' if len(feeds) != 1 else ''}, "
          + (f"on {where}" if args.board else
             f"{config.rows}x{config.cols} engine ({config.key()}) on {where}"))

    t0 = time.monotonic()
    log_path = out / "sim.log"
    if args.board:
        result, failure = _run_on_board(args, model, feeds, run_model)
    else:
        result, failure = _run_simulated(args, model, feeds, config, run_model, log_path)
    if failure is not None:
        print(f"FAILED: {failure.splitlines()[0]}"
              + ("" if args.board else f" (simulator output: {log_path})"))
        return 1
    wall = time.monotonic() - t0

    c = config = result.config
    print()
    print(f"  {'layer':<28}{'op':<18}{'where':<8}{'GEMM M x K x N':>18}{'MACs':>12}"
          f"{'cycles':>11}{'util':>8}")
    total_macs = total_cycles = 0
    for layer in result.layers:
        gemm = "x".join(str(v) for v in layer["gemm"]) if layer.get("gemm") else ""
        cycles = layer.get("cycles")
        util = f"{layer['utilization']:.1%}" if layer.get("utilization") is not None else ""
        if layer["where"] == "engine":
            total_macs += layer["macs"]
            total_cycles += cycles or 0
        name = layer["layer"] if len(layer["layer"]) < 28 else layer["layer"][:24] + "..."
        op = layer["op"] + ("+" + "+".join(f.split("/")[-1] for f in layer["fused"]
                                           if "Relu" in f or "Clip" in f)
                            if any("Relu" in f or "Clip" in f for f in layer["fused"]) else "")
        print(f"  {name:<28}{op[:17]:<18}{layer['where']:<8}{gemm:>18}"
              f"{layer['macs'] or '':>12}{cycles or '':>11}{util:>8}"
              + (f"  ({layer['reason']})" if layer.get("reason") else ""))
    if total_cycles:
        print(f"  {'engine total':<28}{'':<18}{'':<8}{'':>18}{total_macs:>12}{total_cycles:>11}"
              f"{total_macs / (c.rows * c.cols * total_cycles):>8.1%}")
        print(f"  cycles per inference on the engine: {total_cycles / len(feeds):.0f} "
              f"(utilization = MACs / ({c.rows}*{c.cols} * cycles))")

    summary = {"model": str(path), "inputs": len(feeds),
               "simulator": None if args.board else args.simulator, "board": args.board,
               "config": config.to_dict(), "config_key": config.key(),
               "placement": [{"layer": n, "op": o, "where": w}
                             for n, o, w in program.placement()],
               "layers": result.layers, "wall_s": round(wall, 1)}
    ok = True
    ort_scores = None
    checks = []
    if not args.no_onnxruntime:
        level = args.onnxruntime_optimization
        checks.append(("onnxruntime", lambda m, f: onnxruntime_outputs(m, f,
                                                                       optimization=level)))
    if args.reference:
        checks.append(("onnx.reference", reference_outputs))
    for name, oracle in checks:
        try:
            expected = oracle(model, feeds)
        except Exception as exc:          # noqa: BLE001 - the oracle cannot run the model
            print(f"{name}: cannot run the model ({str(exc).splitlines()[0]})")
            summary[name] = {"error": str(exc).splitlines()[0]}
            continue
        if name == "onnxruntime":
            first = result.output_names[0]
            ort_scores = np.concatenate([np.asarray(e[first]).reshape(1, -1)
                                         for e in expected])
        report = agreement(result.outputs, expected)
        summary[name] = report
        for output, a in report.items():
            line = (f"{name}: output {output}: {a['exact']}/{a['values']} values equal, "
                    f"largest difference {a['max_diff']:g}")
            if "top1" in a:
                line += f", top-1 agrees on {a['top1']}/{a['samples']}"
            print(line)
            if name == "onnx.reference" and a["exact"] != a["values"]:
                ok = False
    if labels is not None:
        scores = result.stacked().reshape(len(feeds), -1)
        accuracy = {"engine": float((scores.argmax(axis=1) == labels).mean())}
        line = (f"top-1 accuracy against {args.labels}: {accuracy['engine']:.2%} "
                f"({int((scores.argmax(axis=1) == labels).sum())}/{len(labels)})")
        if ort_scores is not None:
            accuracy["onnxruntime"] = float((ort_scores.argmax(axis=1) == labels).mean())
            line += f", ONNX Runtime {accuracy['onnxruntime']:.2%}"
        print(line)
        summary["accuracy"] = accuracy
    np.savez(out / "outputs.npz", **{name: result.stacked(name)
                                     for name in result.output_names})
    (out / "run.json").write_text(json.dumps(summary, indent=2, default=_json) + "\n")
    print(f"{len(feeds)} inference{'s' if len(feeds) != 1 else ''} in {wall:.0f} s; wrote "
          f"{out / 'run.json'}, {out / 'outputs.npz'}")
    sys.stdout.flush()
    return 0 if ok else 1


def _json(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON: {value!r}")
