"""Convolution (sim/conv.py): the direct-loop reference against ONNX's ConvInteger, its lowering
to GEMMs (patches, groups, depthwise) against the reference over the geometry space, and the
refusal of bad geometry. The engine runs them in tests/test_engine.py (test_conv)."""

import random

import numpy as np
import pytest

from mxe.sim.conv import ConvGeometry, conv2d_reference, lower_groups


def _onnx_conv_integer(x, w, g, pad_value):
    """ONNX's reference ConvInteger on NHWC x and (Cout, KH, KW, Cg) w, as NHWC."""
    from onnx import TensorProto, helper
    from onnx.reference import ReferenceEvaluator
    xn = np.ascontiguousarray(x.transpose(0, 3, 1, 2)).astype(np.uint8)
    wn = np.ascontiguousarray(w.transpose(0, 3, 1, 2)).astype(np.int8)
    node = helper.make_node("ConvInteger", ["x", "w", "xz"], ["y"],
                            kernel_shape=list(g.kernel), strides=list(g.stride),
                            pads=list(g.pads), dilations=list(g.dilation), group=g.groups)
    graph = helper.make_graph(
        [node], "conv",
        [helper.make_tensor_value_info("x", TensorProto.UINT8, None),
         helper.make_tensor_value_info("w", TensorProto.INT8, None),
         helper.make_tensor_value_info("xz", TensorProto.UINT8, None)],
        [helper.make_tensor_value_info("y", TensorProto.INT32, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    (y,) = ReferenceEvaluator(model).run(None, {"x": xn, "w": wn,
                                                "xz": np.array(pad_value, np.uint8)})
    return y.transpose(0, 2, 3, 1).astype(np.int64)


def _random_case(rng):
    groups = rng.choice([1, 1, 2, 3, "depthwise"])
    cg = rng.randint(1, 3)
    C = cg * (groups if groups != "depthwise" else rng.randint(1, 4))
    groups = C if groups == "depthwise" else groups
    cout = groups * rng.randint(1, 3)
    kh, kw = rng.randint(1, 7), rng.randint(1, 7)
    dilation = (rng.randint(1, 2), rng.randint(1, 2))
    pads = tuple(rng.randint(0, 3) for _ in range(4))
    stride = (rng.randint(1, 4), rng.randint(1, 4))
    H = max(1, dilation[0] * (kh - 1) + 1 - pads[0] - pads[2]) + rng.randint(0, 6)
    W = max(1, dilation[1] * (kw - 1) + 1 - pads[1] - pads[3]) + rng.randint(0, 6)
    g = ConvGeometry((kh, kw), stride, pads, dilation, groups)
    x = np.array([[[[rng.randint(0, 255) for _ in range(C)] for _ in range(W)]
                   for _ in range(H)] for _ in range(rng.randint(1, 2))])
    w = np.array([[[[rng.randint(-128, 127) for _ in range(C // groups)] for _ in range(kw)]
                   for _ in range(kh)] for _ in range(cout)])
    return x, w, g


def test_reference_equals_onnx_conv_integer(seed):
    rng = random.Random(seed)
    for trial in range(25):
        x, w, g = _random_case(rng)
        zero = rng.randint(0, 255)
        got = conv2d_reference(x - zero, w, g, pad_value=0)
        want = _onnx_conv_integer(x, w, g, zero)
        assert np.array_equal(got, want), f"seed {seed} trial {trial}: {g}, x {x.shape}"


def test_lowering_equals_reference(seed):
    """Every group's GEMM of patches and weights, over kernels 1x1..7x7 (KH != KW too), strides
    1..4, dilation 1 and 2, padding on each side, groups and depthwise."""
    rng = random.Random(seed)
    for trial in range(200):
        x, w, g = _random_case(rng)
        pad_value = rng.randint(-5, 5)
        want = conv2d_reference(x, w, g, pad_value=pad_value)
        got = np.zeros_like(want).reshape(-1, w.shape[0])
        gemms = lower_groups(x, w, g, pad_value=pad_value)
        assert len(gemms) == g.groups
        for A, B, cols in gemms:
            got[:, cols] = A @ B
        assert np.array_equal(got.reshape(want.shape), want), \
            f"seed {seed} trial {trial}: {g}, x {x.shape}, w {w.shape}"


def test_packed_groups_equal_reference(seed):
    """Groups packed into block-diagonal GEMMs: the same outputs, with the weights' zero point
    between the blocks taken out as the engine's quantized GEMM takes it out."""
    rng = random.Random(seed)
    for trial in range(100):
        x, w, g = _random_case(rng)
        pack = rng.randint(1, 5)
        zero = np.array([rng.randint(-3, 3) for _ in range(w.shape[0])])
        want = conv2d_reference(x, w - zero[:, None, None, None], g)
        got = np.zeros_like(want).reshape(-1, w.shape[0])
        gemms = lower_groups(x, w, g, pack=pack, fill=zero)
        assert len(gemms) == -(-g.groups // pack)
        for A, B, cols in gemms:
            got[:, cols] = A @ (B - zero[cols])
        assert np.array_equal(got.reshape(want.shape), want), \
            f"seed {seed} trial {trial}: {g}, pack {pack}"
    with pytest.raises(ValueError, match="pack must be a positive integer, not 0"):
        lower_groups(x, w, g, pack=0)


def test_padding_edges():
    """Ones in, a ones kernel: each output counts the real pixels its window covers, so every
    padded edge shows."""
    x = np.ones((1, 4, 5, 1), dtype=np.int64)
    w = np.ones((1, 3, 3, 1), dtype=np.int64)
    g = ConvGeometry.of(3, padding=(1, 2, 0, 1))
    y = conv2d_reference(x, w, g)[0, :, :, 0]
    # Rows: 1 padded on top (2, 3, 3 real rows per window); columns: 2 padded on the left and 1
    # on the right (1, 2, 3, 3, 3, 2 real columns).
    assert y.tolist() == [[2, 4, 6, 6, 6, 4], [3, 6, 9, 9, 9, 6], [3, 6, 9, 9, 9, 6]]


@pytest.mark.parametrize("kwargs, words", [
    (dict(kernel=3, padding=0), "kernel's height (3 with dilation 1) is larger than the padded "
                                "input's (2)"),
    (dict(kernel=(1, 3), dilation=2), "kernel's width (5 with dilation 2)"),
    (dict(kernel=1, stride=0), "stride must be at least 1"),
    (dict(kernel=0), "kernel must be at least 1"),
    (dict(kernel=1, padding=-1), "pads must not be negative"),
    (dict(kernel=1, padding=(1, 2, 3)), "padding must be an integer"),
])
def test_geometry_refusals(kwargs, words):
    with pytest.raises(ValueError, match=words.replace("(", r"\(").replace(")", r"\)")):
        ConvGeometry.of(**kwargs).output_size(2, 3)


def test_channel_refusals():
    x, w = np.zeros((1, 3, 3, 4)), np.zeros((6, 1, 1, 2))
    with pytest.raises(ValueError, match="groups 3 must divide"):
        lower_groups(x, np.zeros((6, 1, 1, 1)), ConvGeometry.of(1, groups=3))
    with pytest.raises(ValueError, match="must have 4"):
        lower_groups(x, w, ConvGeometry.of(1))
