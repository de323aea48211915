"""Quantized GEMMs as the specs state them, lowered exactly onto the engine.

ONNX (QLinearMatMul, MatMulInteger) and TFLite describe an int8 GEMM with float scales and
zero points::

    y = clamp(round((A - a_zero_point) @ (B - b_zero_point) * scale) + y_zero_point, lo, hi)

with ``scale = a_scale * b_scale / y_scale`` per tensor or per output column. The engine computes
``clamp(round((A' @ B' + bias') * multiplier / 2**shift) + zero_point, lo, hi)`` on signed 8-bit
operands. :func:`lower` turns the first into the second without changing a single result:

- **uint8 operands** become int8 by ``x - 128`` (the XOR 0x80 of the byte), their zero points
  likewise, which leaves every difference ``x - zero_point`` unchanged: exact always.
- **The activation zero point** (per tensor) goes into the bias: ``(A - za) @ B' = A @ B' -
  za * colsum(B')``, one value per output column.
- **The weight zero point** (per tensor or per column) cannot go there: its term
  ``rowsum(A) * zb`` differs in every row and column. ``B - zb`` is taken as it is, a value in
  -255..255, and split into two or three int8 parts whose sum it is, with A repeated along K for
  each part, so the array adds the parts up itself. A weight zero point (or a per-row activation
  zero point, split the same way) thus costs the MATMULs twice or three times their K; none
  costs nothing. The cheaper alternative in hardware, a per-row correction in the
  post-processor, would take a multiplier per column and a second input stream; weight zero
  points are rare (TFLite's int8 weights are symmetric, and so are ONNX Runtime's by default),
  so the engine leaves them to this transformation.
- **Scales** become a multiplier and a shift with exactly the scale's value
  (:func:`multiplier_shift`): a float32 or float16 scale has at most 24 significant bits, so
  ``multiplier / 2**shift`` is the scale itself, and with rounding half to even the engine's
  result is ``rint(acc * scale) + y_zero_point`` clamped, computed exactly: what the ONNX
  reference computes, whenever its float64 product ``acc * scale`` is itself exact (``|acc| <
  2**29`` for float32 scales). A scale the engine cannot hold exactly is refused, with why.
"""

from dataclasses import dataclass

import numpy as np

from mxe.hw.postproc import OUTPUT_TYPES
from mxe.sim.model import MULTIPLIER_RANGE, SHIFT_RANGE, Requant, wrap


__all__ = ["Quantization", "QuantizedGemm", "multiplier_shift", "onnx_scale", "lower",
           "OPERAND_TYPES"]

#: The operand types a quantized GEMM takes, and what :func:`lower` subtracts to make each int8.
OPERAND_TYPES = {"int8": 0, "uint8": 128}


def multiplier_shift(scale):
    """``(multiplier, shift)`` with ``multiplier / 2**shift`` exactly equal to ``scale`` (a
    Python or numpy float; float16 and float32 values are taken exactly).

    Raises
    ------
    ValueError
        ``scale`` is not finite, needs more significant bits than the engine's multiplier has,
        or a shift beyond the engine's; the message says which.
    """
    value = float(scale)
    if not np.isfinite(value):
        raise ValueError(f"scale must be a finite number, not {scale!r}")
    num, den = value.as_integer_ratio()       # den is a power of two
    shift = den.bit_length() - 1
    if not MULTIPLIER_RANGE[0] <= num <= MULTIPLIER_RANGE[1]:
        raise ValueError(f"scale {scale!r} has {abs(num).bit_length()} significant bits; the "
                         f"engine's multiplier holds {MULTIPLIER_RANGE[1].bit_length()} "
                         f"(a float32 or float16 scale always fits)")
    if shift > SHIFT_RANGE[1]:
        raise ValueError(f"scale {scale!r} is {num}/2**{shift}; the engine shifts by "
                         f"{SHIFT_RANGE[1]} at most")
    return num, shift


def onnx_scale(a_scale, b_scale, y_scale):
    """``a_scale * b_scale / y_scale`` as ONNX's reference computes it: in the scales' own
    floating-point type, the product rounded before the division. A scale per output column
    (``b_scale`` of N values) gives N values."""
    a, b, y = (np.asarray(v) for v in (a_scale, b_scale, y_scale))
    return (a * b) / y


@dataclass(frozen=True)
class Quantization:
    """The quantization of a GEMM, as ONNX and TFLite state it.

    Parameters
    ----------
    a_type, b_type : "int8" or "uint8"
        The operands' types (:data:`OPERAND_TYPES`).
    a_zero_point : int or array (M,)
        Per tensor, or per row of A (which costs K, see :mod:`mxe.sim.quant`).
    b_zero_point : int or array (N,)
        Per tensor or per output column.
    scale : None, float or array (N,)
        ``a_scale * b_scale / y_scale`` (see :func:`onnx_scale`), per tensor or per column;
        ``None`` gives the raw 32-bit accumulators (MatMulInteger), with no output zero point
        or clamp.
    y_zero_point : int
        Output zero point, in the output type's range.
    out_type : "int8" or "uint8"
    clamp : (int, int) or None
        A range inside the output type (a fused ReLU or ReLU6); ``None`` is the whole type.
    round_even : bool
        Round half to even (ONNX); otherwise half away from zero.
    """
    a_type: str = "int8"
    b_type: str = "int8"
    a_zero_point: object = 0
    b_zero_point: object = 0
    scale: object = None
    y_zero_point: int = 0
    out_type: str = "int8"
    clamp: tuple | None = None
    round_even: bool = True

    def __post_init__(self):
        for name in ("a_type", "b_type"):
            if getattr(self, name) not in OPERAND_TYPES:
                raise ValueError(f"{name} must be one of {', '.join(OPERAND_TYPES)}, not "
                                 f"{getattr(self, name)!r}")
        if self.out_type not in OUTPUT_TYPES:
            raise ValueError(f"out_type must be one of {', '.join(OUTPUT_TYPES)}, not "
                             f"{self.out_type!r}")
        lo, hi = OUTPUT_TYPES[self.out_type]
        if self.scale is None and (self.y_zero_point or self.clamp is not None):
            raise ValueError("y_zero_point and clamp need a scale (no scale: raw 32-bit "
                             "outputs)")
        if not lo <= self.y_zero_point <= hi:
            raise ValueError(f"y_zero_point must be in {lo}..{hi} ({self.out_type}), not "
                             f"{self.y_zero_point}")
        if self.clamp is not None and not lo <= self.clamp[0] <= self.clamp[1] <= hi:
            raise ValueError(f"clamp must be a range inside {lo}..{hi} ({self.out_type}), not "
                             f"{self.clamp}")

    def requant(self, N):
        """The engine's :class:`~mxe.sim.model.Requant` for ``N`` output columns, or ``None``
        (raw outputs)."""
        if self.scale is None:
            return None
        scale = np.asarray(self.scale)
        if scale.ndim == 0:
            multiplier, shift = multiplier_shift(scale)
        elif scale.shape == (N,):
            multiplier, shift = zip(*(multiplier_shift(s) for s in scale))
        else:
            raise ValueError(f"scale must be a number or {N} values (one per column), not "
                             f"shape {scale.shape}")
        return Requant(multiplier, shift, zero_point=self.y_zero_point,
                       clamp=self.clamp or OUTPUT_TYPES[self.out_type],
                       round_even=self.round_even)


@dataclass
class QuantizedGemm:
    """What :func:`lower` returns: an engine GEMM ``postprocess(A @ B + bias)``."""
    A: np.ndarray           # int8 values, (M, parts * K)
    B: np.ndarray           # int8 values, (parts * K, N)
    bias: np.ndarray        # (N,), in the accumulator's range
    requant: Requant | None
    parts: int              # how many times K the MATMULs run (1, 2, 3, 4, 6 or 9)
    out_dtype: type         # the result's numpy type


def _to_int8(name, values, kind):
    """``values`` of operand type ``kind`` as int64 int8 values (``x - 128`` for uint8)."""
    values = np.asarray(values)
    if not np.issubdtype(values.dtype, np.integer):
        raise TypeError(f"{name} must be an integer array, not {values.dtype}")
    lo, hi = (0, 255) if kind == "uint8" else (-128, 127)
    if values.size and (values.min() < lo or values.max() > hi):
        raise ValueError(f"{name} must hold {kind} values ({lo}..{hi}), found "
                         f"{values.min()}..{values.max()}")
    return values.astype(np.int64) - OPERAND_TYPES[kind]


def _int8_parts(values):
    """int8 arrays whose sum is ``values`` (in -256..255): one, two or three of them."""
    if values.size == 0 or (values.min() >= -128 and values.max() <= 127):
        return [values]
    if values.min() >= -256 and values.max() <= 254:
        first = values >> 1                     # floor: -128..127
        return [first, values - first]          # ceil: -128..127
    first = values // 3                         # -85..85
    second = (values - first) // 2
    return [first, second, values - first - second]


def lower(A, B, quant, config, *, bias=None):
    """The engine GEMM equal to the quantized GEMM ``A @ B`` under ``quant`` (see the module's
    description).

    Parameters
    ----------
    A : integer array (M, K), B : integer array (K, N)
        Values of ``quant.a_type`` and ``quant.b_type``.
    quant : Quantization
    config : EngineConfig
        A signed engine with 8-bit operands.
    bias : integer array (N,), optional
        int32 bias, added to the accumulators (ONNX's QLinearConv bias, TFLite's).

    Returns
    -------
    QuantizedGemm

    Raises
    ------
    TypeError, ValueError
        Naming the argument.
    """
    if not isinstance(quant, Quantization):
        raise TypeError(f"quant must be a Quantization, not {quant!r}")
    if not config.signed or config.input_width != 8:
        raise ValueError(f"quantized GEMMs need a signed engine with 8-bit operands, not "
                         f"{'signed' if config.signed else 'unsigned'} "
                         f"{config.input_width}-bit")
    A = _to_int8("A", A, quant.a_type)
    B = _to_int8("B", B, quant.b_type)
    if A.ndim != 2 or B.ndim != 2 or A.shape[1] != B.shape[0]:
        raise ValueError(f"A and B must be (M, K) and (K, N), not {A.shape} and {B.shape}")
    M, N = A.shape[0], B.shape[1]
    za = _to_int8("a_zero_point", quant.a_zero_point, quant.a_type)
    zb = _to_int8("b_zero_point", quant.b_zero_point, quant.b_type)
    if za.shape not in ((), (M,)):
        raise ValueError(f"a_zero_point must be a number or {M} values (one per row of A), "
                         f"not shape {za.shape}")
    if zb.shape not in ((), (N,)):
        raise ValueError(f"b_zero_point must be a number or {N} values (one per column of B), "
                         f"not shape {zb.shape}")
    b_parts = _int8_parts(B - zb)
    # A per-tensor activation zero point goes into the bias; a per-row one is split like B.
    a_parts = [A] if za.ndim == 0 else _int8_parts(A - za[:, None])
    total = np.zeros(N, dtype=np.int64) if bias is None else np.asarray(bias, dtype=np.int64)
    if total.shape != (N,):
        raise ValueError(f"bias must have shape ({N},), not {total.shape}")
    if za.ndim == 0:
        total = total - int(za) * (B - zb).sum(axis=0)
    A_eng = np.concatenate([a for a in a_parts for _ in b_parts], axis=1)
    B_eng = np.concatenate([b for _ in a_parts for b in b_parts], axis=0)
    requant = quant.requant(N)
    out_dtype = np.int32 if requant is None else np.dtype(quant.out_type).type
    return QuantizedGemm(A=A_eng, B=B_eng, bias=wrap(total, config.acc_width, True),
                         requant=requant, parts=len(a_parts) * len(b_parts),
                         out_dtype=out_dtype)
