"""Running a :class:`~mxe.sim.importer.program.Program`: engine layers through an engine,
host layers in numpy, and the per-layer report.

An *engine* is anything with the two coroutines of :class:`mxe.sim.driver.MXEDriver` the
importer uses, ``gemm(A, B, bias=..., relu=..., quant=...)`` and ``conv2d(x, w, stride=...,
padding=..., dilation=..., groups=..., bias=..., relu=..., quant=...)``, each returning
``(result, counters)``, and a ``config``: the driver on the engine RTL (in a cocotb bench,
:mod:`mxe.sim.tb_run`) or :class:`GoldenEngine`, the numpy golden model of the same
arithmetic (no cycles).
"""

import numpy as np

from mxe.sim.importer.program import HostLayer
from mxe.sim.quant import Quantization, onnx_scale


__all__ = ["execute", "GoldenEngine", "EngineRefusal", "LayerStats"]

_KINDS = {"int8": "int8", "uint8": "uint8"}


class EngineRefusal(Exception):
    """The engine cannot take this layer with these inputs: it runs on the host (the message
    says why)."""


class GoldenEngine:
    """The engine's arithmetic in numpy (:mod:`mxe.sim.model`), through the same lowering as the
    driver (:func:`mxe.sim.quant.lower`). No cycles: for quick checks of an import, not for
    claims about the RTL."""

    def __init__(self, config):
        self.config = config

    async def gemm(self, A, B, bias=None, relu=False, *, quant):
        from mxe.sim.model import matmul, postprocess_columns
        from mxe.sim.quant import lower
        low = lower(A, B, quant, self.config, bias=bias)
        acc = matmul(low.A, low.B, self.config)
        out = postprocess_columns(acc, self.config, bias=low.bias if low.bias.any() else None,
                                  relu=relu, requant=low.requant)
        return out.astype(low.out_dtype), {}

    async def conv2d(self, x, w, *, stride=1, padding=0, dilation=1, groups=1, bias=None,
                     relu=False, quant):
        from mxe.sim.conv import ConvGeometry, lower_groups
        geometry = ConvGeometry.of(w.shape[1:3], stride=stride, padding=padding,
                                   dilation=dilation, groups=groups)
        N, H, W, _ = x.shape
        oh, ow = geometry.output_size(H, W)
        y = None
        for A, B, cols in lower_groups(x, w, geometry, pad_value=int(quant.a_zero_point)):
            q = _quant_columns(quant, cols)
            out, _ = await self.gemm(A, B, None if bias is None else np.asarray(bias)[cols],
                                     relu, quant=q)
            if y is None:
                y = np.empty((N * oh * ow, w.shape[0]), dtype=out.dtype)
            y[:, cols] = out
        return y.reshape(N, oh, ow, w.shape[0]), {}


def _quant_columns(quant, cols):
    from dataclasses import replace
    changes = {}
    for name in ("b_zero_point", "scale"):
        value = getattr(quant, name)
        if value is not None and np.ndim(value):
            changes[name] = np.asarray(value)[cols]
    return replace(quant, **changes) if changes else quant


class LayerStats:
    """What one layer did, summed over the inferences of a run."""

    def __init__(self, layer):
        self.name = layer.name
        self.op = layer.op
        self.where = layer.where
        self.fused = list(getattr(layer, "fused", []))
        self.reason = None
        self.calls = 0
        self.gemm = None           # (M, K, N) of the first inference
        self.macs = 0
        self.counters = {}

    def as_dict(self, config=None):
        d = {"layer": self.name, "op": self.op, "where": self.where, "fused": self.fused,
             "calls": self.calls, "gemm": self.gemm, "macs": self.macs,
             "counters": self.counters}
        if self.reason:
            d["reason"] = self.reason
        cycles = self.counters.get("CYCLES")
        if cycles and config is not None:
            d["cycles"] = cycles
            d["utilization"] = self.macs / (config.rows * config.cols * cycles)
        return d


def _get(values, name, default=None):
    if name is None:
        return default
    return values[name]


def _scalar_zero(name, value):
    """A per-tensor zero point (int), or raise EngineRefusal."""
    if value is None:
        return 0
    value = np.asarray(value)
    if value.size != 1:
        raise EngineRefusal(f"{name} has {value.size} values (the engine takes one for the "
                            f"activations)")
    return int(value.reshape(()))


def _kind(name, array):
    kind = np.asarray(array).dtype.name
    if kind not in _KINDS:
        raise EngineRefusal(f"{name} is {kind} (the engine takes int8 and uint8)")
    return kind


def _clip_range(layer, values, y_type, y_zero, y_scale):
    """The fused Relu/Clip as an integer clamp of the output type, or None."""
    from mxe.hw.postproc import OUTPUT_TYPES
    lo, hi = OUTPUT_TYPES[y_type]
    if layer.clip is not None:
        a, b = layer.clip
        lo = lo if a is None else max(lo, int(a))
        hi = hi if b is None else min(hi, int(b))
    elif layer.clip_float is not None:
        # Relu/Clip in float in front of QuantizeLinear: Q is monotonic, so clip(v) then Q is
        # Q(v) clamped to [Q(min), Q(max)].
        a, b = layer.clip_float
        scale = np.asarray(y_scale).reshape(())

        def quantized(v):
            return int(np.clip(np.rint(np.float32(v) / scale) + y_zero, *OUTPUT_TYPES[y_type]))

        if a is not None:
            lo = max(lo, quantized(a))
        if b is not None:
            hi = min(hi, quantized(b))
    if lo > hi:
        raise EngineRefusal(f"the fused clip range {layer.clip or layer.clip_float} is empty")
    return None if (lo, hi) == OUTPUT_TYPES[y_type] else (lo, hi)


def _quantization(layer, values, n_out):
    """The layer's :class:`Quantization` and int32 bias (or None)."""
    x, w = values[layer.x], values[layer.w]
    a_type, b_type = _kind("the activation", x), _kind("the weight", w)
    za = _scalar_zero("the activation zero point", _get(values, layer.x_zero))
    zb = _get(values, layer.w_zero)
    if zb is not None:
        zb = np.asarray(zb).astype(np.int64)
        if zb.size == 1:
            zb = int(zb.reshape(()))
        elif zb.shape != (n_out,):
            raise EngineRefusal(f"the weight zero point has shape {zb.shape}: per tensor or "
                                f"per output channel ({n_out}) only")
    else:
        zb = 0
    bias = _get(values, layer.bias)
    if bias is not None:
        bias = np.asarray(bias)
        if bias.dtype != np.int32:
            raise EngineRefusal(f"the bias is {bias.dtype}, not int32")
        bias = bias.astype(np.int64).reshape(-1)
        if bias.size != n_out:
            raise EngineRefusal(f"the bias has {bias.size} values, not one per output channel "
                                f"({n_out})")
    if layer.y_scale is None:
        return Quantization(a_type, b_type, a_zero_point=za, b_zero_point=zb), bias
    xs, ws, ys = (np.asarray(values[n]) for n in (layer.x_scale, layer.w_scale,
                                                  layer.y_scale))
    if xs.size != 1 or ys.size != 1:
        raise EngineRefusal("the activation and output scales must be per tensor")
    xs, ys = xs.reshape(()), ys.reshape(())
    if ws.size == 1:
        ws = ws.reshape(())
    elif layer.w_axis is not None and \
            layer.w_axis % np.ndim(values[layer.w]) != \
            layer.w_axis_wanted % np.ndim(values[layer.w]):
        raise EngineRefusal(f"the weight scale runs along axis {layer.w_axis}, not the output "
                            f"channels")
    elif ws.shape != (n_out,):
        raise EngineRefusal(f"the weight scale has shape {ws.shape}: per tensor or per output "
                            f"channel ({n_out}) only")
    if layer.bias_scale is not None and bias is not None:
        # QDQ: the bias is an integer in units of x_scale * w_scale, as the QLinear form has it.
        bs = np.asarray(values[layer.bias_scale])
        if not np.array_equal(np.broadcast_to(bs, np.shape(ws) or (1,)).astype(np.float32),
                              np.broadcast_to(xs * ws, np.shape(ws) or (1,)).astype(np.float32)):
            raise EngineRefusal("the bias scale is not x_scale * w_scale")
        bz = _get(values, _bias_zero(layer))
        if bz is not None and np.any(np.asarray(bz) != 0):
            raise EngineRefusal("the bias has a zero point")
    y_zero = _get(values, layer.y_zero)
    y_type = "uint8" if y_zero is None else _kind("the output", y_zero)
    y_zero = 0 if y_zero is None else int(np.asarray(y_zero).reshape(()))
    clamp = _clip_range(layer, values, y_type, y_zero, ys)
    quant = Quantization(a_type, b_type, a_zero_point=za, b_zero_point=zb,
                         scale=onnx_scale(xs, ws, ys), y_zero_point=y_zero, out_type=y_type,
                         clamp=clamp, round_even=True)
    return quant, bias


def _bias_zero(layer):
    for node in layer.nodes:
        if node.op_type == "DequantizeLinear" and node.input[0] == layer.bias:
            return node.input[2] if len(node.input) > 2 and node.input[2] else None
    return None


def _conv_geometry(attrs, x_shape, w_shape):
    """(stride, pads, dilation, groups) of an ONNX 2-D convolution; auto_pad resolved."""
    kh, kw = w_shape[2:]
    strides = list(attrs.get("strides", [1, 1]))
    dilations = list(attrs.get("dilations", [1, 1]))
    pads = list(attrs.get("pads", [0, 0, 0, 0]))
    auto = attrs.get("auto_pad", b"NOTSET")
    auto = auto.decode() if isinstance(auto, bytes) else auto
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        pads = [0, 0, 0, 0]
        for axis, (size, k) in enumerate(zip(x_shape[2:], (kh, kw))):
            out = -(-size // strides[axis])
            total = max(0, (out - 1) * strides[axis] + dilations[axis] * (k - 1) + 1 - size)
            small, large = total // 2, total - total // 2
            begin, end = (small, large) if auto == "SAME_UPPER" else (large, small)
            pads[axis], pads[axis + 2] = begin, end
    elif auto == "VALID":
        pads = [0, 0, 0, 0]
    return tuple(strides), (pads[0], pads[1], pads[2], pads[3]), tuple(dilations), \
        int(attrs.get("group", 1))


async def _run_engine(layer, values, engine, stats):
    x, w = np.asarray(values[layer.x]), np.asarray(values[layer.w])
    if layer.kind == "conv":
        if w.ndim == 3:          # 1-D convolution: a 2-D one of height 1
            x, w = x[:, :, None, :], w[:, :, None, :]
            one_d = True
            attrs = dict(layer.attrs)
            for key in ("strides", "dilations", "kernel_shape"):
                if key in attrs:
                    attrs[key] = [1, *attrs[key]]
            if "pads" in attrs:
                p = attrs["pads"]
                attrs["pads"] = [0, p[0], 0, p[1]]
        elif w.ndim == 4:
            one_d, attrs = False, layer.attrs
        else:
            raise EngineRefusal(f"a {w.ndim - 2}-D convolution (the engine does 1-D and 2-D)")
        if x.ndim != 4:
            raise EngineRefusal(f"the input has shape {x.shape}")
        cout = w.shape[0]
        quant, bias = _quantization(layer, values, cout)
        stride, pads, dilation, groups = _conv_geometry(attrs, x.shape, w.shape)
        # The driver packs groups narrower than the array into block-diagonal GEMMs, or runs
        # convolution descriptors where the engine has the convolution unit.
        y, counters = await engine.conv2d(
            x.transpose(0, 2, 3, 1), w.transpose(0, 2, 3, 1), stride=stride, padding=pads,
            dilation=dilation, groups=groups, bias=bias, relu=layer.relu, quant=quant)
        y = y.transpose(0, 3, 1, 2)
        if one_d:
            y = y[:, :, 0, :]
        n, _, *spatial = y.shape
        K = w.shape[1] * w.shape[2] * w.shape[3]
        M = n * int(np.prod(spatial))
        shape, macs = (M, K, cout), M * K * cout
    else:
        if layer.trans_b:
            w = w.T
        if w.ndim != 2:
            if x.ndim != w.ndim or x.shape[:-2] != w.shape[:-2]:
                raise EngineRefusal(f"a batched MatMul of {x.shape} x {w.shape}")
        if x.ndim < 1 or w.ndim < 2 or x.shape[-1] != w.shape[-2]:
            raise EngineRefusal(f"shapes {x.shape} x {w.shape}")
        K, N = w.shape[-2:]
        quant, bias = _quantization(layer, values, N)
        counters = {}
        if w.ndim == 2:
            A = x.reshape(-1, K)
            out, counters = await engine.gemm(A, w, bias=bias, relu=layer.relu, quant=quant)
            y = out.reshape(*x.shape[:-1], N)
            M = A.shape[0]
            shape, macs = (M, K, N), M * K * N
        else:
            xs = x.reshape(-1, *x.shape[-2:])
            ws = w.reshape(-1, *w.shape[-2:])
            outs = []
            for a, b in zip(xs, ws):
                out, c = await engine.gemm(a, b, bias=bias, relu=layer.relu, quant=quant)
                outs.append(out)
                for k, v in c.items():
                    counters[k] = counters.get(k, 0) + v
            y = np.stack(outs).reshape(*x.shape[:-1], N)
            shape, macs = (xs.shape[1], K, N), len(xs) * xs.shape[1] * K * N
    stats.calls += 1
    stats.gemm = stats.gemm or list(shape)
    stats.macs += int(macs)
    for k, v in counters.items():
        stats.counters[k] = stats.counters.get(k, 0) + int(v)
    return y


async def execute(program, feeds, engine, stats=None):
    """One inference: ``feeds`` (graph input name -> array) through the program.

    Parameters
    ----------
    program : Program
    feeds : dict
    engine : MXEDriver or GoldenEngine
    stats : dict, optional
        ``{layer name: LayerStats}``, summed into across calls (created if None).

    Returns
    -------
    (outputs, stats) : (dict of output name -> array, dict)
    """
    missing = [name for name in program.inputs if name not in feeds]
    if missing:
        raise ValueError(f"inputs missing: {', '.join(missing)} (the model takes "
                         f"{', '.join(program.inputs)})")
    values = dict(program.constants)
    values.update(feeds)
    stats = {} if stats is None else stats
    for layer in program.layers:
        s = stats.get(layer.name)
        if s is None:
            s = stats[layer.name] = LayerStats(layer)
        if isinstance(layer, HostLayer):
            values.update(layer.run(values))
            s.calls += 1
            continue
        try:
            values[layer.output] = await _run_engine(layer, values, engine, s)
        except EngineRefusal as exc:
            for host in layer.fallback:
                values.update(host.run(values))
            s.where = "host"
            s.reason = str(exc)
            s.calls += 1
    return {name: values[name] for name in program.outputs}, stats
