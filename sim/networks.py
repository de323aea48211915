"""The MLPerf Tiny reference networks' layer shapes, for ``mxe bench --network``.

Each network is its layers in order: convolutions (depthwise and pointwise included) and dense
layers run on the engine; residual adds and the global average pool run on the host. The
shapes are the reference models' (MLPerf Tiny v1.0 training scripts); batch normalization is
folded into the convolutions, as a deployed int8 model has it. The weights and the input are
random int8 (latency does not depend on the values); each layer's bias is random, and its
per-channel requantization is calibrated on its own accumulators so that its int8 outputs use
their range (a layer whose outputs all saturated or all rounded to zero would check little).

``ae`` is the anomaly-detection autoencoder (640 inputs, ToyADMOS), ``ds_cnn`` keyword
spotting (49x10x1 MFCCs), ``mobilenet`` visual wake words (MobileNetV1 with width 0.25,
96x96x3) and ``resnet8`` image classification (CIFAR-10, 32x32x3).

:func:`build` computes every layer's output with the direct-loop convolution
(:func:`mxe.sim.conv.conv2d_reference`) and the post-processor's model (``Network.reference``);
:func:`run_on_engine` runs the same layers on an engine through
:class:`~mxe.sim.driver.MXEDriver`, each layer on the engine's own output of the layer before.
"""

from dataclasses import dataclass

import numpy as np

from mxe.sim.conv import ConvGeometry, conv2d_reference
from mxe.sim.demo import quantize_multiplier
from mxe.sim.model import Requant, matmul, postprocess_columns, wrap

__all__ = ["Layer", "NETWORKS", "Network", "build", "run_on_engine", "ENGINE_OPS"]

#: Layer kinds the engine runs; the others run on the host.
ENGINE_OPS = ("conv", "dense")
#: Largest output value a calibrated layer aims at (of int8's 127).
_TARGET = 100


@dataclass(frozen=True)
class Layer:
    """One layer.

    ``op`` is ``conv``, ``dense``, ``add`` (saturating int8 sum of the two ``inputs``, then
    ReLU if ``relu``) or ``pool`` (global average, rounded half up). ``inputs`` names the layers
    it reads (``"input"`` is the network's input; by default the layer before). A convolution has
    ``cout``, ``kernel`` (KH, KW), ``stride``, ``pads`` (top, left, bottom, right) and
    ``depthwise``; a dense layer ``cout``. ``raw``: the output is the accumulator (int32
    logits), not requantized.
    """
    name: str
    op: str
    cout: int = 0
    kernel: tuple = (1, 1)
    stride: int = 1
    pads: tuple = (0, 0, 0, 0)
    depthwise: bool = False
    relu: bool = True
    raw: bool = False
    inputs: tuple = ()


def _same(size, k, stride):
    """TensorFlow's "same" padding of one dimension: ``(before, after)``."""
    out = -(-size // stride)
    total = max((out - 1) * stride + k - size, 0)
    return total // 2, total - total // 2


def _conv(name, cout, k, stride, size, **kw):
    """A convolution with "same" padding on a ``size`` (H, W) input."""
    (t, b), (l, r) = (_same(s, kk, stride) for s, kk in zip(size, k))
    return Layer(name, "conv", cout=cout, kernel=k, stride=stride, pads=(t, l, b, r), **kw)


def _resnet8():
    layers = [_conv("conv1", 16, (3, 3), 1, (32, 32))]
    prev, size = "conv1", (32, 32)
    for stage, channels in enumerate((16, 32, 64), 1):
        stride = 1 if stage == 1 else 2
        a = _conv(f"s{stage}a", channels, (3, 3), stride, size, inputs=(prev,))
        size = tuple(-(-s // stride) for s in size)
        b = _conv(f"s{stage}b", channels, (3, 3), 1, size, relu=False)
        layers += [a, b]
        shortcut = prev
        if stage > 1:
            layers.append(_conv(f"s{stage}sc", channels, (1, 1), stride, size, relu=False,
                                inputs=(prev,)))
            shortcut = f"s{stage}sc"
        layers.append(Layer(f"s{stage}add", "add", inputs=(b.name, shortcut)))
        prev = f"s{stage}add"
    return (32, 32, 3), layers + [Layer("pool", "pool"),
                                  Layer("fc", "dense", cout=10, relu=False, raw=True)]


def _ds_cnn():
    layers = [_conv("conv1", 64, (10, 4), 2, (49, 10))]
    for i in range(1, 5):
        layers += [_conv(f"dw{i}", 64, (3, 3), 1, (25, 5), depthwise=True),
                   _conv(f"pw{i}", 64, (1, 1), 1, (25, 5))]
    return (49, 10, 1), layers + [Layer("pool", "pool"),
                                  Layer("fc", "dense", cout=12, relu=False, raw=True)]


def _mobilenet():
    size, channels = (96, 96), 8
    layers = [_conv("conv1", channels, (3, 3), 2, size)]
    size = (48, 48)
    blocks = [(1, 16), (2, 32), (1, 32), (2, 64), (1, 64), (2, 128)] + [(1, 128)] * 5 + \
        [(2, 256), (1, 256)]
    for i, (stride, cout) in enumerate(blocks, 1):
        layers.append(_conv(f"dw{i}", channels, (3, 3), stride, size, depthwise=True))
        size = tuple(-(-s // stride) for s in size)
        layers.append(_conv(f"pw{i}", cout, (1, 1), 1, size))
        channels = cout
    return (96, 96, 3), layers + [Layer("pool", "pool"),
                                  Layer("fc", "dense", cout=2, relu=False, raw=True)]


def _ae():
    widths = [128, 128, 128, 128, 8, 128, 128, 128, 128]
    layers = [Layer(f"fc{i}", "dense", cout=w) for i, w in enumerate(widths, 1)]
    return (640,), layers + [Layer("out", "dense", cout=640, relu=False, raw=True)]


#: Name: (description, builder of (input shape, layers)).
NETWORKS = {
    "ae": ("anomaly detection: fully connected autoencoder 640-128x4-8-128x4-640", _ae),
    "ds_cnn": ("keyword spotting: DS-CNN on 49x10x1", _ds_cnn),
    "mobilenet": ("visual wake words: MobileNetV1 0.25 on 96x96x3", _mobilenet),
    "resnet8": ("image classification: ResNet-8 on CIFAR-10 32x32x3", _resnet8),
}


@dataclass
class Network:
    """A network with its values: ``layers`` in order, ``params[name]`` a layer's ``w``
    (conv ``(Cout, KH, KW, C / groups)``, dense ``(K, N)``), ``bias`` and ``requant``;
    ``x`` the input (batch first); ``reference`` every layer's output by name (and the input
    as ``"input"``), computed while calibrating with the direct-loop convolution and the numpy
    models of the post-processor."""
    name: str
    layers: list
    params: dict
    x: np.ndarray
    reference: dict

    def geometry(self, layer, channels):
        return ConvGeometry.of(layer.kernel, stride=layer.stride, padding=layer.pads,
                               groups=channels if layer.depthwise else 1)

    def macs(self, layer, x, y):
        """Multiply-accumulates of ``layer`` from input ``x`` to output ``y``."""
        if layer.op == "dense":
            return x.shape[0] * x.shape[1] * y.shape[1]
        w = self.params[layer.name]["w"]
        return y.size * w.shape[1] * w.shape[2] * w.shape[3]


def _inputs(layer, previous):
    return layer.inputs or (previous,)


def _host_op(layer, values):
    if layer.op == "add":
        out = np.clip(values[0].astype(np.int64) + values[1], -128, 127)
        return np.maximum(out, 0) if layer.relu else out
    if layer.op == "pool":
        x = values[0].astype(np.int64)
        count = x.shape[1] * x.shape[2]
        return (x.sum(axis=(1, 2)) + count // 2) // count
    raise ValueError(f"layer {layer.name}: unknown operation {layer.op!r}")


def _accumulate(net, layer, x, config):
    """The layer's accumulators (before bias and post-processing), as a matrix of one column
    per output channel, exact to the engine's accumulator width; and the output's shape."""
    p = net.params[layer.name]
    if layer.op == "dense":
        return matmul(x, p["w"], config), (x.shape[0], p["w"].shape[1])
    acc = conv2d_reference(x, p["w"], net.geometry(layer, x.shape[3]))
    return wrap(acc.reshape(-1, acc.shape[3]), config.acc_width, config.signed), acc.shape


def build(name, config, seed):
    """The network ``name`` with random weights, biases and input from ``seed``, its
    requantization calibrated for an engine of ``config`` (batch 1)."""
    if name not in NETWORKS:
        raise ValueError(f"network must be one of {', '.join(NETWORKS)}, not {name!r}")
    if not config.signed or config.input_width != 8:
        raise ValueError("the networks are int8: they need a signed engine with input_width 8")
    shape, layers = NETWORKS[name][1]()
    rng = np.random.default_rng(seed)
    x = rng.integers(-128, 128, size=(1, *shape), dtype=np.int64)
    values = {"input": x}
    net = Network(name, layers, {}, x, values)
    previous = "input"
    for layer in layers:
        ins = [values[n] for n in _inputs(layer, previous)]
        if layer.op not in ENGINE_OPS:
            values[layer.name] = _host_op(layer, ins)
            previous = layer.name
            continue
        x_in = ins[0]
        if layer.op == "dense":
            x_in = x_in.reshape(x_in.shape[0], -1)
            w = rng.integers(-127, 128, size=(x_in.shape[1], layer.cout), dtype=np.int64)
        else:
            cin = x_in.shape[3]
            cg = 1 if layer.depthwise else cin
            cout = cin if layer.depthwise else layer.cout
            w = rng.integers(-127, 128, size=(cout, *layer.kernel, cg), dtype=np.int64)
        net.params[layer.name] = {"w": w}
        acc, out_shape = _accumulate(net, layer, x_in, config)
        spread = max(int(np.abs(acc).max()), 1)
        bias = rng.integers(-spread // 4, spread // 4 + 1, size=acc.shape[1], dtype=np.int64)
        requant = None
        if not layer.raw:
            total = acc + bias
            peak = (np.maximum(total, 0) if layer.relu else np.abs(total)).max(axis=0)
            pairs = [quantize_multiplier(_TARGET / max(int(v), 1)) for v in peak]
            requant = Requant([m for m, _ in pairs], [s for _, s in pairs])
        net.params[layer.name].update(bias=bias, requant=requant)
        y = postprocess_columns(acc, config, bias=bias, relu=layer.relu, requant=requant)
        values[layer.name] = np.asarray(y, dtype=np.int64).reshape(out_shape)
        previous = layer.name
    return net


async def run_on_engine(drv, net, *, done=None):
    """Run ``net`` on the engine behind ``drv``: the engine's layers through
    :meth:`~mxe.sim.driver.MXEDriver.conv2d` and :meth:`~mxe.sim.driver.MXEDriver.gemm`
    (through the hardware descriptors where the engine has them), the others in numpy, each
    layer on the outputs the run itself produced. Returns ``(outputs, stats)``: the outputs by
    layer name, and per layer its name, where it ran, the counters' deltas (engine layers) and
    its MACs. ``done(i)`` is called after layer ``i``."""
    descriptor = drv.config.gemm_unit
    values = {"input": net.x}
    previous = "input"
    stats = []
    for i, layer in enumerate(net.layers):
        ins = [values[n] for n in _inputs(layer, previous)]
        row = {"name": layer.name, "op": layer.op, "where": "host", "counters": {}, "macs": 0}
        if layer.op in ENGINE_OPS:
            p = net.params[layer.name]
            x_in = ins[0]
            if layer.op == "dense":
                x_in = x_in.reshape(x_in.shape[0], -1)
                y, counters = await drv.gemm(x_in, p["w"], bias=p["bias"], relu=layer.relu,
                                             requant=p["requant"], descriptor=descriptor)
            else:
                geometry = net.geometry(layer, x_in.shape[3])
                y, counters = await drv.conv2d(
                    x_in, p["w"], stride=geometry.stride, padding=geometry.pads,
                    groups=geometry.groups, bias=p["bias"], relu=layer.relu,
                    requant=p["requant"], descriptor=descriptor)
            y = np.asarray(y, dtype=np.int64)
            row.update(where="engine", counters={k: int(v) for k, v in counters.items()},
                       macs=int(net.macs(layer, x_in, y)), in_bytes=int(x_in.size),
                       w_bytes=int(p["w"].size),
                       out_bytes=int(y.size * (drv.config.acc_elem_bytes if layer.raw else 1)),
                       shape=_describe(layer, x_in, p["w"]))
        else:
            y = _host_op(layer, ins)
            row["shape"] = "x".join(map(str, y.shape[1:]))
        values[layer.name] = y
        previous = layer.name
        stats.append(row)
        if done is not None:
            done(i)
    return values, stats


def _describe(layer, x, w):
    if layer.op == "dense":
        return f"{x.shape[1]}->{w.shape[1]}"
    _, h, wd, c = x.shape
    kind = "dw " if layer.depthwise else ""
    return f"{kind}{layer.kernel[0]}x{layer.kernel[1]}/{layer.stride} {h}x{wd}x{c}->{w.shape[0]}"
