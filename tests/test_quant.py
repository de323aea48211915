"""Quantized GEMMs (mxe.sim.quant): the lowering onto the engine, run through the golden model,
against ONNX's own reference implementation (onnx.reference.ReferenceEvaluator) of
QLinearMatMul and MatMulInteger; exact scale conversion; refusals. The same cases run on the
engine RTL in tests/test_engine.py (test_engine_onnx).

Seeds: the ``seed`` fixture (tests/conftest.py), printed by every random test.
"""

import numpy as np
import pytest

from mxe.hw.config import EngineConfig
from mxe.sim import model
from mxe.sim.onnx_cases import matmul_integer_case, qlinear_conv_case, qlinear_matmul_case
from mxe.sim.quant import Quantization, lower, multiplier_shift


CONFIG = EngineConfig.preset("tiny")


def engine_golden(A, B, quant, bias=None, config=CONFIG):
    """What the engine computes for the lowered GEMM: the golden model, column by column."""
    low = lower(A, B, quant, config, bias=bias)
    acc = model.matmul(low.A, low.B, config)
    acc = model.wrap(acc + low.bias, config.acc_width, True)
    if low.requant is None:
        return acc.astype(low.out_dtype), low
    return model.requantize(acc, low.requant, config).astype(low.out_dtype), low


def test_multiplier_shift_is_exact():
    for scale in (np.float32(0.0123), np.float16(0.37), np.float32(2.0 ** -40), 0.5, 3.0,
                  np.float32(1e-7), np.float32(12345.678)):
        m, s = multiplier_shift(scale)
        assert m / 2 ** s == float(scale) and 0 <= s <= 63 and abs(m) < 2 ** 31
    assert multiplier_shift(0.0) == (0, 0)
    with pytest.raises(ValueError, match="significant bits"):
        multiplier_shift(1 / 3)                    # a float64 with 53 significant bits
    with pytest.raises(ValueError, match="shifts by 63 at most"):
        multiplier_shift(np.float32(2.0 ** -70))
    with pytest.raises(ValueError, match="finite"):
        multiplier_shift(float("nan"))


@pytest.mark.parametrize("a_type,b_type", [("uint8", "uint8"), ("int8", "int8"),
                                           ("uint8", "int8"), ("int8", "uint8")])
@pytest.mark.parametrize("per_column", [False, True], ids=["per-tensor", "per-column"])
def test_qlinear_matmul_matches_onnx_reference(a_type, b_type, per_column, seed):
    rng = np.random.default_rng(seed)
    for trial in range(12):
        case = qlinear_matmul_case(rng, a_type, b_type, per_column=per_column,
                                   shape=tuple(rng.integers(1, 20, size=3)),
                                   extreme_zero_points=trial % 3 == 0)
        got, low = engine_golden(case.A, case.B, case.quant)
        assert got.dtype == case.want.dtype
        assert np.array_equal(got, case.want), (trial, case.quant, low.parts,
                                                np.argwhere(got != case.want)[:5])


@pytest.mark.parametrize("per_column", [False, True], ids=["per-tensor", "per-column"])
def test_matmul_integer_matches_onnx_reference(per_column, seed):
    rng = np.random.default_rng(seed + 1)
    for trial in range(12):
        case = matmul_integer_case(rng, per_column=per_column,
                                   shape=tuple(rng.integers(1, 20, size=3)))
        got, _low = engine_golden(case.A, case.B, case.quant)
        assert np.array_equal(got, case.want), (trial, np.argwhere(got != case.want)[:5])


def test_zero_point_costs():
    """A per-tensor activation zero point costs nothing (the bias); a weight zero point two or
    three times K, a per-row activation zero point as much again."""
    A = np.full((2, 3), 200, dtype=np.uint8)
    B = np.full((3, 4), 255, dtype=np.uint8)
    parts = {}
    for name, q in {
        "symmetric": Quantization("uint8", "uint8", a_zero_point=7, b_zero_point=128),
        "uint8 B, zero point 0, no 255": Quantization("uint8", "uint8", b_zero_point=0),
        "B - zb up to 254": Quantization("int8", "int8", b_zero_point=-127),
        "B - zb = 255": Quantization("int8", "int8", b_zero_point=-128),
        "per-row A": Quantization("int8", "int8", a_zero_point=np.array([-128, 5]),
                                  b_zero_point=-127),
    }.items():
        a = A.astype(np.int64) - 128 if q.a_type == "int8" else A
        b = B.astype(np.int64) - 128 if q.b_type == "int8" else B
        if name == "uint8 B, zero point 0, no 255":
            b = np.full((3, 4), 127, dtype=np.uint8)
        if name == "B - zb = 255":
            b = np.full((3, 4), 127)
        low = lower(a, b, q, CONFIG)
        parts[name] = low.parts
        want = (a.astype(np.int64) - np.asarray(q.a_zero_point).reshape(-1, 1)
                if np.ndim(q.a_zero_point) else a.astype(np.int64) - q.a_zero_point) \
            @ (b.astype(np.int64) - q.b_zero_point)
        assert np.array_equal(low.A @ low.B + low.bias, want), name
        assert low.A.min() >= -128 and low.A.max() <= 127 and low.B.min() >= -128 \
            and low.B.max() <= 127, name
    assert parts == {"symmetric": 1, "uint8 B, zero point 0, no 255": 1,
                     "B - zb up to 254": 2, "B - zb = 255": 3, "per-row A": 4}


def test_quantization_refusals():
    with pytest.raises(ValueError, match="a_type must be one of int8, uint8"):
        Quantization("int16")
    with pytest.raises(ValueError, match="y_zero_point must be in 0..255"):
        Quantization(scale=0.5, out_type="uint8", y_zero_point=-1)
    with pytest.raises(ValueError, match="clamp must be a range inside -128..127"):
        Quantization(scale=0.5, clamp=(0, 200))
    with pytest.raises(ValueError, match="need a scale"):
        Quantization(y_zero_point=3)
    a = np.zeros((2, 2), dtype=np.int64)
    with pytest.raises(ValueError, match="A must hold uint8 values"):
        lower(a - 1, a, Quantization("uint8"), CONFIG)
    with pytest.raises(ValueError, match="b_zero_point must be a number or 2 values"):
        lower(a, a, Quantization(b_zero_point=np.zeros(3, dtype=np.int64)), CONFIG)
    with pytest.raises(ValueError, match="scale must be a number or 2 values"):
        lower(a, a, Quantization(scale=np.ones(3, dtype=np.float32)), CONFIG)
    with pytest.raises(ValueError, match="signed engine with 8-bit operands"):
        lower(a, a, Quantization(), EngineConfig(rows=4, cols=4, signed=False))


@pytest.mark.parametrize("x_type", ["uint8", "int8"])
def test_qlinear_conv_via_im2col_matches_onnx_reference(x_type, seed):
    """QLinearConv lowered to a GEMM on the host (im2col with the padding filled with the input's
    zero point), per-channel weight scales and zero points, a bias, strides, padding and
    dilation: equal to ONNX's reference."""
    rng = np.random.default_rng(seed)
    geometries = [dict(kernel=(3, 3)), dict(kernel=(3, 3), pads=(1, 1, 1, 1)),
                  dict(kernel=(2, 3), strides=(2, 1), pads=(0, 1, 1, 0)),
                  dict(kernel=(3, 3), dilations=(2, 2), pads=(2, 2, 2, 2)),
                  dict(kernel=(1, 1), per_channel=False)]
    for g in geometries:
        case = qlinear_conv_case(rng, x_type, shape=(2, 3, 7, 6, 5), **g)
        A, B = case.lowered()
        got, _low = engine_golden(A, B, case.quant, bias=case.bias)
        assert np.array_equal(case.result(got), case.want), g
