"""The ``mxe demo`` network: a small convolutional digit classifier, trained in float, quantized
to int8, and run layer by layer as GEMMs (pure Python/numpy; the engine side is
:mod:`mxe.sim.tb_demo`).

Network
-------
scikit-learn's bundled 8x8 digits (``load_digits``, 1797 images, no download), pixels 0..16
scaled to 0..1::

    conv 3x3, 1 -> 8 channels, valid padding, ReLU   (6x6x8 = 288 values; im2col GEMM K=9,  N=8)
    dense 288 -> 64, ReLU                             (GEMM K=288, N=64)
    dense 64 -> 32, ReLU                              (GEMM K=64,  N=32)
    dense 32 -> 10, raw int32 logits                  (GEMM K=32,  N=10), argmax on the host

Every dense layer is one engine GEMM ``C = A @ W`` per batch (``M`` = batch size); the
convolution goes through :meth:`MXEDriver.conv2d <mxe.sim.driver.MXEDriver.conv2d>`: on an engine
with the convolution unit (``conv_unit``) as convolution descriptors, one per image, otherwise
lowered on the host to one GEMM of batch x 36 output positions (the patches of :func:`im2col`).
The engine adds the bias, applies ReLU and requantizes; the host only reshapes between layers.

Quantization
------------
As TFLite quantizes to int8: weights symmetric per output channel, activations asymmetric per
tensor (the engine's post-processor adds the output zero point, the driver folds the input's
into the bias):

- weights: ``s_w[c] = max|W[:, c]| / 127`` for every output channel ``c`` (raised for a
  channel of (near) zero weights until its bias fits 31 bits),
  ``q_w = clip(round(W / s_w), -127, 127)``;
- activations: all of them are non-negative (the input pixels are 0..1, every hidden layer ends
  in a ReLU), so their range ``0 .. max(a)`` (over the training set) maps onto the whole int8
  range: ``s_a = max(a) / 255``, zero point ``z_a = -128``,
  ``q_a = clip(round(a / s_a) + z_a, -128, 127)``;
- biases: int32 at the accumulator's scale, ``round(b[c] / (s_in * s_w[c]))``, minus
  ``z_in * sum(q_w[:, c])``: ``(q_a - z_in) @ q_w = q_a @ q_w - z_in * colsum(q_w)``, so the
  engine's GEMM of the raw ``q_a`` with this bias is the GEMM of the zero-point-free values;
- requantization of a layer's accumulator to the next layer's int8: per channel, the real
  factor ``S[c] = s_in * s_w[c] / s_out`` becomes a signed 32-bit ``multiplier`` and a
  ``shift`` (``S ~= multiplier / 2**shift``) with :func:`quantize_multiplier`: write
  ``S = f * 2**e`` with ``0.5 <= f < 1`` (``frexp``); ``multiplier = round(f * 2**31)`` in
  ``[2**30, 2**31)`` (a carry to ``2**31`` halves it and increments ``e``), ``shift = 31 - e``.
  The relative error is at most ``2**-31``. A factor below ``2**-32`` would need
  ``shift > 63``: the shift is clamped to 63 and the multiplier rounded at that shift (fewer
  significant bits). The engine then computes
  ``clamp(round_half_away(acc * multiplier / 2**shift) - 128, -128, 127)``: one rounding of
  the exact 64-bit product (TFLite's scheme rounds twice), the output zero point added after
  it.
"""

import math
from dataclasses import dataclass, field
from fractions import Fraction

import numpy as np

from mxe.sim.model import Requant, matmul, postprocess_columns


__all__ = ["quantize_multiplier", "im2col", "conv2d_direct", "load_data", "FloatNet",
           "train", "QLayer", "quantize_tensor", "quantize_network", "layer_input",
           "layer_output", "conv_weights", "gemm_ref", "reference_forward", "compare", "accuracy",
           "save_network", "load_network", "quantize_input", "IMAGE_SHAPE",
           "ACTIVATION_ZERO_POINT"]

#: The digits images: 8x8, one channel.
IMAGE_SHAPE = (8, 8, 1)
INT8_MAX = 127
#: Every activation's zero point: its range 0 .. max maps onto the whole of int8.
ACTIVATION_ZERO_POINT = -128


# Fixed point ---------------------------------------------------------------------------------

def quantize_multiplier(real, *, bits=31, max_shift=63):
    """``(multiplier, shift)`` with ``multiplier / 2**shift`` closest to ``real`` (> 0).

    ``multiplier`` has ``bits`` significant bits (``2**(bits-1) <= multiplier < 2**bits``) when
    ``real`` allows it; ``shift`` is in ``0..max_shift``. Rounding is to nearest, ties up,
    computed exactly on the float's rational value.

    Raises
    ------
    ValueError
        ``real`` is not a positive finite number, or too large for a ``bits``-bit multiplier
        with shift 0, or so small that it rounds to 0 at ``max_shift``.
    """
    if isinstance(real, bool) or not isinstance(real, (int, float, np.floating, np.integer)):
        raise TypeError(f"real must be a number, not {real!r}")
    real = float(real)
    if not (math.isfinite(real) and real > 0):
        raise ValueError(f"real must be a positive finite number, not {real!r}")
    exact = Fraction(real)
    _, exp = math.frexp(real)            # real = f * 2**exp, 0.5 <= f < 1
    shift = bits - exp

    def nearest(s):
        scaled = exact * (1 << s) if s >= 0 else exact / (1 << -s)
        return math.floor(scaled + Fraction(1, 2))

    if shift > max_shift:
        shift = max_shift
    if shift < 0:
        shift = 0
    m = nearest(shift)
    if m == 1 << bits:                   # f rounded up to 1.0
        m >>= 1
        shift -= 1
        if shift < 0:
            raise ValueError(f"real {real!r} needs a multiplier of more than {bits} bits")
    if m >= 1 << bits:
        raise ValueError(f"real {real!r} needs a multiplier of more than {bits} bits")
    if m == 0:
        raise ValueError(f"real {real!r} is below 2**-{max_shift + 1}: the multiplier would be 0")
    return int(m), int(shift)


# Convolution as GEMM -------------------------------------------------------------------------

def im2col(x, kh, kw):
    """Patches of ``x`` (B, H, W, C) for a valid ``kh`` x ``kw`` convolution, stride 1.

    Returns (B * Ho * Wo, kh * kw * C), rows in (b, y, x) order, columns in (dy, dx, c) order,
    ``Ho = H - kh + 1``, ``Wo = W - kw + 1``. ``patches @ W.reshape(kh * kw * C, Cout)`` is the
    convolution (cross-correlation, as in every deep-learning framework) in (B, Ho, Wo, Cout).
    """
    x = np.asarray(x)
    if x.ndim != 4:
        raise ValueError(f"x must be (B, H, W, C), not shape {x.shape}")
    B, H, W, C = x.shape
    ho, wo = H - kh + 1, W - kw + 1
    if ho < 1 or wo < 1:
        raise ValueError(f"a {kh}x{kw} kernel does not fit a {H}x{W} image")
    cols = np.empty((B, ho, wo, kh, kw, C), dtype=x.dtype)
    for dy in range(kh):
        for dx in range(kw):
            cols[:, :, :, dy, dx, :] = x[:, dy:dy + ho, dx:dx + wo, :]
    return cols.reshape(B * ho * wo, kh * kw * C)


def conv2d_direct(x, w):
    """Valid stride-1 cross-correlation by loops: x (B, H, W, C), w (kh, kw, C, Cout) ->
    (B, Ho, Wo, Cout). Slow on purpose: the check for :func:`im2col`."""
    B, H, W, C = x.shape
    kh, kw, _, cout = w.shape
    out = np.zeros((B, H - kh + 1, W - kw + 1, cout), dtype=np.result_type(x, w))
    for b in range(B):
        for y in range(H - kh + 1):
            for xx in range(W - kw + 1):
                for o in range(cout):
                    acc = 0
                    for dy in range(kh):
                        for dx in range(kw):
                            for c in range(C):
                                acc += x[b, y + dy, xx + dx, c] * w[dy, dx, c, o]
                    out[b, y, xx, o] = acc
    return out


# Data and float training ---------------------------------------------------------------------

def load_data(seed, test_size=0.25):
    """Digits split (stratified, ``seed``): ``(x_train, y_train, x_test, y_test)``, images
    (n, 8, 8, 1) in 0..1."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    digits = load_digits()
    x = (digits.images / 16.0).reshape(-1, *IMAGE_SHAPE)
    x_tr, x_te, y_tr, y_te = train_test_split(x, digits.target, test_size=test_size,
                                              random_state=seed, stratify=digits.target)
    return x_tr, y_tr, x_te, y_te


@dataclass
class FloatNet:
    """Float parameters: ``layers`` = list of dicts with ``kind`` (``conv``/``dense``), ``w``
    (K, N) (a convolution's kernel flattened in im2col order), ``b`` (N,), ``relu``, and for a
    convolution ``kernel`` (kh, kw)."""
    layers: list = field(default_factory=list)

    def forward(self, x, *, keep=False):
        """Logits for images ``x`` (B, 8, 8, 1); with ``keep``, also every layer's input and
        output (for backpropagation and calibration)."""
        trace = []
        a = x
        for layer in self.layers:
            inp = layer_input(layer, a)
            z = inp @ layer["w"] + layer["b"]
            out = np.maximum(z, 0) if layer["relu"] else z
            trace.append((inp, z))
            a = layer_output(layer, out, len(x))
        return (a, trace) if keep else a


def _init_net(rng, channels=8, hidden=(64, 32), classes=10):
    kh = kw = 3
    ho, wo = IMAGE_SHAPE[0] - kh + 1, IMAGE_SHAPE[1] - kw + 1
    dims = [(kh * kw * IMAGE_SHAPE[2], channels), (ho * wo * channels, hidden[0])]
    dims += list(zip(hidden, (*hidden[1:], classes)))
    layers = []
    for i, (k, n) in enumerate(dims):
        layer = {"kind": "conv" if i == 0 else "dense", "relu": i < len(dims) - 1,
                 "w": rng.normal(0, math.sqrt(2 / k), size=(k, n)), "b": np.zeros(n)}
        if i == 0:
            layer.update(kernel=(kh, kw), out_hw=(ho, wo))
        layers.append(layer)
    return FloatNet(layers)


def train(x, y, seed, *, epochs=30, batch=32, lr=3e-3, weight_decay=1e-4, progress=None):
    """Train :class:`FloatNet` with Adam on softmax cross-entropy; deterministic for ``seed``.

    ``progress``: an optional callable(epoch, loss) after each epoch.
    """
    try:   # one BLAS thread: the same result and no oversubscription on a shared machine
        from threadpoolctl import threadpool_limits
        with threadpool_limits(1):
            return _train(x, y, seed, epochs, batch, lr, weight_decay, progress)
    except ImportError:
        return _train(x, y, seed, epochs, batch, lr, weight_decay, progress)


def _train(x, y, seed, epochs, batch, lr, weight_decay, progress):
    rng = np.random.default_rng(seed)
    net = _init_net(rng)
    params = [(layer, key) for layer in net.layers for key in ("w", "b")]
    m = [np.zeros_like(layer[key]) for layer, key in params]
    v = [np.zeros_like(layer[key]) for layer, key in params]
    beta1, beta2, eps, step = 0.9, 0.999, 1e-8, 0
    onehot = np.eye(10)[y]
    for epoch in range(epochs):
        order = rng.permutation(len(x))
        total = 0.0
        for start in range(0, len(x), batch):
            idx = order[start:start + batch]
            logits, trace = net.forward(x[idx], keep=True)
            p = np.exp(logits - logits.max(axis=1, keepdims=True))
            p /= p.sum(axis=1, keepdims=True)
            total += -np.log(p[np.arange(len(idx)), y[idx]] + 1e-12).sum()
            grad = (p - onehot[idx]) / len(idx)          # dLoss/dlogits
            grads = []
            for layer, (inp, z) in zip(reversed(net.layers), reversed(trace)):
                g = grad.reshape(z.shape)
                if layer["relu"]:
                    g = g * (z > 0)
                grads.append((inp.T @ g + weight_decay * layer["w"], g.sum(axis=0)))
                grad = g @ layer["w"].T
                if layer["kind"] == "conv":
                    break                                 # no gradient for the input
            grads = [g for pair in reversed(grads) for g in pair]
            step += 1
            for i, ((layer, key), g) in enumerate(zip(params, grads)):
                m[i] = beta1 * m[i] + (1 - beta1) * g
                v[i] = beta2 * v[i] + (1 - beta2) * g * g
                mhat = m[i] / (1 - beta1 ** step)
                vhat = v[i] / (1 - beta2 ** step)
                layer[key] = layer[key] - lr * mhat / (np.sqrt(vhat) + eps)
        if progress:
            progress(epoch, total / len(x))
    return net


# Quantization --------------------------------------------------------------------------------

@dataclass
class QLayer:
    """One quantized layer = one engine GEMM.

    Members
    -------
    name, kind : str
    w : int64 (K, N)       int8 weights
    bias : int64 (N,)      int32 bias at the accumulator's scale, the input's zero point folded
                           in
    relu : bool
    requant : Requant or None (raw int32 output): per-channel multipliers and shifts, the
                           output zero point
    scales : dict          ``s_in``, ``s_w`` (per channel), ``s_out`` (None for raw output),
                           ``real`` factors (per channel), ``z_in``, ``z_out``
    kernel, out_hw : tuple or None (convolution only)
    """
    name: str
    kind: str
    w: np.ndarray
    bias: np.ndarray
    relu: bool
    requant: object
    scales: dict
    kernel: tuple = None
    out_hw: tuple = None

    def __getitem__(self, key):           # so layer_input/layer_output take both kinds
        return getattr(self, key)


def quantize_tensor(x, scale, lo=-128, hi=INT8_MAX, zero_point=0):
    """``clip(round(x / scale) + zero_point, lo, hi)``; ``scale`` may be per last axis."""
    return np.clip(np.round(np.asarray(x) / scale) + zero_point, lo, hi).astype(np.int64)


def quantize_input(x, s_input):
    """The network's int8 input for images ``x`` (pixels 0..1)."""
    return quantize_tensor(x, s_input, zero_point=ACTIVATION_ZERO_POINT)


def _activation_scale(values):
    """The scale of non-negative activations whose range maps onto all of int8."""
    return max(float(np.max(values)), 1e-12) / (INT8_MAX - ACTIVATION_ZERO_POINT)


def quantize_network(net, x_calib):
    """Quantize ``net`` (see the module docstring); ``x_calib`` (training images) sets the
    activation scales. Returns ``(layers, s_input)``; :func:`quantize_input` makes the int8
    input."""
    _, trace = net.forward(x_calib, keep=True)
    s_in = s_input = _activation_scale(x_calib)
    layers = []
    for i, (layer, (_inp, z)) in enumerate(zip(net.layers, trace)):
        w = np.asarray(layer["w"])
        # Per output channel; a channel with (near) zero weights keeps a scale its bias fits
        # at (|q_b| <= 2**30) and one at most 2**20 below the tensor's.
        s_w = np.maximum.reduce([np.abs(w).max(axis=0) / INT8_MAX,
                                 np.abs(layer["b"]) / (s_in * 2.0 ** 30),
                                 np.full(w.shape[1], np.abs(w).max() * 2.0 ** -20 / INT8_MAX)])
        q_w = quantize_tensor(w, s_w, -INT8_MAX, INT8_MAX)
        q_b = np.round(layer["b"] / (s_in * s_w)).astype(np.int64) \
            - ACTIVATION_ZERO_POINT * q_w.sum(axis=0)
        if np.abs(q_b).max(initial=0) >= 1 << 31:
            raise ValueError(f"layer {i}: bias does not fit 32 bits")
        last = i == len(net.layers) - 1
        if last:
            requant, s_out, real = None, None, None
        else:
            s_out = _activation_scale(np.maximum(z, 0))
            real = s_in * s_w / s_out
            multipliers, shifts = zip(*(quantize_multiplier(r) for r in real))
            requant = Requant(multipliers, shifts, zero_point=ACTIVATION_ZERO_POINT)
        name = f"conv{i}" if layer["kind"] == "conv" else f"fc{i}"
        layers.append(QLayer(name=name, kind=layer["kind"], w=q_w, bias=q_b,
                             relu=layer["relu"], requant=requant,
                             scales={"s_in": s_in, "s_w": s_w.tolist(), "s_out": s_out,
                                     "real": None if real is None else real.tolist(),
                                     "z_in": ACTIVATION_ZERO_POINT,
                                     "z_out": None if last else ACTIVATION_ZERO_POINT},
                             kernel=layer.get("kernel"), out_hw=layer.get("out_hw")))
        s_in = s_out
    return layers, s_input


# Layer glue (host side, shared by the reference and the engine bench) -------------------------

def layer_input(layer, a):
    """The GEMM's A matrix for activations ``a``: im2col for a convolution (``a`` in
    (B, H, W, C)), a flatten for a dense layer."""
    if layer["kind"] == "conv":
        return im2col(a, *layer["kernel"])
    return np.asarray(a).reshape(len(a), -1)


def layer_output(layer, c, batch):
    """The GEMM's result rows back to activations: (B, Ho, Wo, N) for a convolution."""
    if layer["kind"] == "conv":
        return np.asarray(c).reshape(batch, *layer["out_hw"], -1)
    return c


def conv_weights(layer):
    """A convolution layer's weights as :meth:`MXEDriver.conv2d
    <mxe.sim.driver.MXEDriver.conv2d>` takes them, ``(Cout, KH, KW, C)``: the im2col matrix
    ``(KH * KW * C, Cout)`` has its rows in (dy, dx, c) order, the order of the driver's
    patches (:func:`mxe.sim.conv.patches`), so this is a transpose and a reshape."""
    kh, kw = layer["kernel"]
    w = np.asarray(layer["w"])
    return w.T.reshape(w.shape[1], kh, kw, w.shape[0] // (kh * kw))


def gemm_ref(a, w, config, *, bias=None, relu=False, requant=None):
    """The int8 golden model of one engine GEMM (any N): :func:`mxe.sim.model.matmul`, then
    :func:`mxe.sim.model.postprocess_columns`, the same model the engine is verified against.
    Computed without the engine."""
    return postprocess_columns(matmul(a, w, config), config, bias=bias, relu=relu,
                               requant=requant)


def reference_forward(layers, x_q, config):
    """Every layer's output (int64 GEMM result matrices) of the int8 network on ``x_q``
    (B, 8, 8, 1) int8 images; the last is the int32 logits."""
    outs, a = [], x_q
    for layer in layers:
        c = gemm_ref(layer_input(layer, a), layer.w, config, bias=layer.bias, relu=layer.relu,
                     requant=layer.requant)
        outs.append(c)
        a = layer_output(layer, c, len(x_q))
    return outs


async def run_network(drv, layers, x_q, *, batch=32, done=None):
    """The network on an engine through ``drv`` (an :class:`~mxe.sim.driver.MXEDriver` on any
    transport), batch by batch, each layer's input the engine's own output of the layer before:
    a dense layer one :meth:`~mxe.sim.driver.MXEDriver.gemm`, a convolution one
    :meth:`~mxe.sim.driver.MXEDriver.conv2d` (convolution descriptors where the engine has the
    convolution unit, else the host's im2col lowering: one GEMM).

    Returns ``(outputs, stats)``: every layer's outputs (int64, all samples; a convolution's as
    the im2col GEMM's ``(B * Ho * Wo, Cout)`` rows) and per layer ``name``, ``run_as``
    (``"GEMM"``, or ``"descriptor"`` where the convolution unit ran it), ``gemms``,
    ``descriptors``, ``macs``, ``shapes`` (the GEMM's, or the im2col GEMM's a descriptor
    computes), ``schedule``, ``commands`` and the summed ``counters``. ``done(samples)`` is
    called after every batch.
    """
    from mxe.sim.conv_model import ConvPlan
    outputs = [[] for _ in layers]
    stats = [{"name": layer.name, "run_as": "GEMM", "gemms": 0, "descriptors": 0, "macs": 0,
              "shapes": [], "counters": {}} for layer in layers]
    for start in range(0, len(x_q), batch):
        a = x_q[start:start + batch]
        n = len(a)
        for i, layer in enumerate(layers):
            K, N = layer.w.shape
            if layer.kind == "conv":
                y, counters = await drv.conv2d(np.asarray(a), conv_weights(layer),
                                               bias=layer.bias, relu=layer.relu,
                                               requant=layer.requant)
                C = y.reshape(-1, N)
            else:
                C, counters = await drv.gemm(layer_input(layer, a), layer.w, bias=layer.bias,
                                             relu=layer.relu, requant=layer.requant)
            plan = drv.last_plan
            st = stats[i]
            if isinstance(plan, ConvPlan):
                st["run_as"] = "descriptor"
                st["descriptors"] += plan.descriptors
                st["schedule"] = {"descriptor": "CONV_A/B/C, one per image",
                                  "descriptors": plan.descriptors}
            else:
                st["gemms"] += 1   # the demo's convolution has one group: one GEMM
                st["schedule"] = {k: v for k, v in plan.schedule.items()
                                  if isinstance(v, (int, str))}
            M = C.shape[0]
            st["macs"] += M * K * N
            st["shapes"].append([M, K, N])
            st["commands"] = st.get("commands", 0) + len(plan.commands)
            for name, value in counters.items():
                st["counters"][name] = st["counters"].get(name, 0) + int(value)
            outputs[i].append(np.asarray(C, dtype=np.int64))
            a = layer_output(layer, C, n)
        if done:
            done(start + n)
    return [np.concatenate(o) for o in outputs], stats


def compare(engine, reference, names):
    """Layer outputs of the engine against the reference, bit for bit.

    Returns ``(exact, checks)``: ``checks`` holds per layer ``layer``, ``values``,
    ``mismatches`` (``None`` if the shapes differ) and, on a difference, ``first`` (where, and
    both values). Only the reference's first rows are used when the engine ran fewer samples.
    """
    exact, checks = True, []
    for name, got, want in zip(names, engine, reference, strict=True):
        got, want = np.asarray(got), np.asarray(want)[:len(got)]
        check = {"layer": name, "values": int(want.size), "mismatches": None}
        if got.shape != want.shape:
            check["first"] = f"engine shape {got.shape}, reference shape {want.shape}"
        else:
            diff = np.argwhere(got != want)
            check["mismatches"] = int(len(diff))
            if len(diff):
                at = tuple(int(v) for v in diff[0])
                check["first"] = f"first at {at}: engine {got[at]}, reference {want[at]}"
        exact &= "first" not in check
        checks.append(check)
    return exact, checks


def accuracy(logits, y):
    return float(np.mean(np.argmax(logits, axis=1) == np.asarray(y))) if len(y) else float("nan")


# Exchange with the bench ---------------------------------------------------------------------

def save_network(path, layers, x_q):
    """The quantized network and the int8 inputs in one ``.npz`` for :mod:`mxe.sim.tb_demo`."""
    arrays = {"x": x_q, "count": np.array(len(layers))}
    for i, layer in enumerate(layers):
        arrays[f"w{i}"] = layer.w
        arrays[f"b{i}"] = layer.bias
        rq = layer.requant
        meta = [layer.kind == "conv", layer.relu, rq is not None, rq.zero_point if rq else 0,
                *(layer.kernel or (0, 0)), *(layer.out_hw or (0, 0))]
        arrays[f"m{i}"] = np.array(meta, dtype=np.int64)
        if rq is not None:
            arrays[f"q{i}"] = np.array([rq.multiplier, rq.shift], dtype=np.int64)
        arrays[f"n{i}"] = np.array(layer.name)
    np.savez(path, **arrays)


def load_network(path):
    """``(layers, x_q)`` as written by :func:`save_network`."""
    with np.load(path) as f:
        layers = []
        for i in range(int(f["count"])):
            conv, relu, has_rq, zero_point, kh, kw, ho, wo = (int(v) for v in f[f"m{i}"])
            requant = None
            if has_rq:
                multipliers, shifts = f[f"q{i}"].tolist()
                requant = Requant(multipliers, shifts, zero_point=zero_point)
            layers.append(QLayer(name=str(f[f"n{i}"]), kind="conv" if conv else "dense",
                                 w=f[f"w{i}"], bias=f[f"b{i}"], relu=bool(relu),
                                 requant=requant, scales={},
                                 kernel=(kh, kw) if conv else None,
                                 out_hw=(ho, wo) if conv else None))
        return layers, f["x"]
