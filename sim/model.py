"""Bit-exact numpy golden model of MXE.

Every function takes the :class:`~mxe.hw.config.EngineConfig` the hardware was built from and
computes exactly what the hardware computes: operands in the configured width and signedness,
sums wrapping around at ``acc_width``.
"""

from dataclasses import dataclass, replace

import numpy as np

from mxe.hw.postproc import MULTIPLIER_WIDTH, OUTPUT_TYPES, OUTPUT_WIDTH, SHIFT_WIDTH


__all__ = ["wrap", "check_operands", "matmul", "random_operands"]


def wrap(values, width, signed):
    """``values`` reduced modulo ``2**width``, as two's complement if ``signed``.

    Works on int64 arrays for any width up to 64 (int64 arithmetic itself wraps modulo 2**64,
    which agrees with every narrower width). An unsigned 64-bit result comes back as uint64.
    """
    values = np.asarray(values, dtype=np.int64)
    if width == 64:
        return values if signed else values.view(np.uint64)
    mask = np.int64((1 << width) - 1)
    values = values & mask
    if signed:
        sign = np.int64(1 << (width - 1))
        values = (values ^ sign) - sign
    return values


def check_operands(name, values, config):
    """Raise ValueError unless every element of ``values`` fits the configured operand type."""
    values = np.asarray(values)
    if not np.issubdtype(values.dtype, np.integer):
        raise TypeError(f"{name} must be an integer array, not {values.dtype}")
    lo, hi = config.input_range
    if values.size and (values.min() < lo or values.max() > hi):
        raise ValueError(f"{name} must hold values in {lo}..{hi} "
                         f"({'signed' if config.signed else 'unsigned'} "
                         f"{config.input_width}-bit), found {values.min()}..{values.max()}")
    return values.astype(np.int64)


def matmul(a, b, config):
    """``a @ b`` as the engine's accumulators compute it: wrapping at ``acc_width``.

    Parameters
    ----------
    a : array (M, K)
    b : array (K, N)
    config : EngineConfig

    Returns
    -------
    int64 array (M, N) (uint64 for an unsigned 64-bit accumulator)
    """
    a = check_operands("a", a, config)
    b = check_operands("b", b, config)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[0]:
        raise ValueError(f"a and b must be (M, K) and (K, N) matrices, not {a.shape} and "
                         f"{b.shape}")
    # int64 matmul wraps modulo 2**64, so the result is right modulo 2**acc_width.
    return wrap(a @ b, config.acc_width, config.signed)


def random_operands(rng, shape, config, *, extremes=0.0):
    """Random operands of ``shape`` in the configured range.

    ``extremes`` is the fraction of elements set to the most negative (signed) or largest
    (unsigned) value, which makes the largest products and sums.
    """
    lo, hi = config.input_range
    values = rng.integers(lo, hi, size=shape, endpoint=True, dtype=np.int64)
    if extremes:
        worst = lo if config.signed else hi
        values[rng.random(shape) < extremes] = worst
    return values


# ------------------------------------------------------------------------------------------------
# Post-processor (bias, ReLU, requantization): golden model of hw/postproc.py.
# Appended by the post-processor / CSR owner; see PostProcessor for the pipeline.
# ------------------------------------------------------------------------------------------------

#: Range of the requantization multiplier (signed 32-bit), of the shift and of the output zero
#: point (signed 9-bit: an int8 or a uint8 zero point).
MULTIPLIER_RANGE = (-(1 << (MULTIPLIER_WIDTH - 1)), (1 << (MULTIPLIER_WIDTH - 1)) - 1)
SHIFT_RANGE = (0, (1 << SHIFT_WIDTH) - 1)
ZERO_POINT_RANGE = (-(1 << (OUTPUT_WIDTH - 1)), (1 << (OUTPUT_WIDTH - 1)) - 1)


def _check_int(name, value, lo, hi):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an integer, not {value!r}")
    if not lo <= int(value) <= hi:
        raise ValueError(f"{name} must be in {lo}..{hi}, not {value}")
    return int(value)


@dataclass(frozen=True)
class Requant:
    """How the post-processor requantizes: ``clamp(round(x * multiplier / 2**shift) +
    zero_point, *clamp)``.

    Parameters
    ----------
    multiplier : int or sequence of int
        Signed 32-bit; a sequence gives one per output column (per-channel requantization).
    shift : int or sequence of int
        0..63; per column like ``multiplier`` (if either is a sequence, both are, of one
        length).
    zero_point : int
        Output zero point, added after the rounding and before the clamp; -256..255.
    clamp : (int, int) or None
        ``(lo, hi)`` with ``lo <= hi``, both in -128..127 (int8 output) or both in 0..255
        (uint8 output); it also gives ReLU (``lo`` = the zero point) and ReLU6. ``None``: the
        range of the engine's own operand type (int8 on a signed engine, uint8 on an unsigned
        one).
    round_even : bool
        Round half to even, ties going to the even output (``rint(x * multiplier / 2**shift +
        zero_point)``, as ONNX computes it); otherwise half away from zero, then the zero point
        added (as TFLite's rounding shift).

    Raises
    ------
    TypeError, ValueError
        Naming the parameter and what is allowed.
    """
    multiplier: int
    shift: int
    zero_point: int = 0
    clamp: tuple | None = None
    round_even: bool = False

    def __post_init__(self):
        set_ = object.__setattr__
        per_column = [not isinstance(v, (int, np.integer, bool, np.bool_))
                      and np.ndim(v) == 1 for v in (self.multiplier, self.shift)]
        if any(per_column):
            if not all(per_column) or len(self.multiplier) != len(self.shift) \
                    or not len(self.multiplier):
                raise ValueError("multiplier and shift must both be integers, or both "
                                 "sequences of one non-zero length (one per column)")
            for name, values, limits in (("multiplier", self.multiplier, MULTIPLIER_RANGE),
                                         ("shift", self.shift, SHIFT_RANGE)):
                set_(self, name, tuple(_check_int(f"{name}[{i}]", v, *limits)
                                       for i, v in enumerate(values)))
        else:
            set_(self, "multiplier", _check_int("multiplier", self.multiplier,
                                                *MULTIPLIER_RANGE))
            set_(self, "shift", _check_int("shift", self.shift, *SHIFT_RANGE))
        set_(self, "zero_point", _check_int("zero_point", self.zero_point, *ZERO_POINT_RANGE))
        if not isinstance(self.round_even, (bool, np.bool_)):
            raise TypeError(f"round_even must be a bool, not {self.round_even!r}")
        if self.clamp is not None:
            if not isinstance(self.clamp, (tuple, list)) or len(self.clamp) != 2:
                raise TypeError(f"clamp must be None or a (lo, hi) pair, not {self.clamp!r}")
            lo, hi = (_check_int(f"clamp {end}", v, *ZERO_POINT_RANGE)
                      for end, v in zip(("lo", "hi"), self.clamp))
            if not any(t_lo <= lo <= hi <= t_hi for t_lo, t_hi in OUTPUT_TYPES.values()):
                raise ValueError(f"clamp must be a range lo <= hi inside int8's -128..127 or "
                                 f"uint8's 0..255, not {lo}..{hi}")
            set_(self, "clamp", (lo, hi))

    @property
    def per_column(self):
        """Whether the multiplier and shift are per column."""
        return isinstance(self.multiplier, tuple)

    def columns(self, start, count):
        """This requantization for output columns ``start .. start + count - 1`` (the same
        object when not per column)."""
        if not self.per_column:
            return self
        cut = slice(start, start + count)
        return replace(self, multiplier=self.multiplier[cut], shift=self.shift[cut])

    def bounds(self, config):
        """The clamp range on an engine built with ``config``."""
        if self.clamp is not None:
            return self.clamp
        return OUTPUT_TYPES["int8" if config.signed else "uint8"]

    @classmethod
    def of(cls, requant):
        """``requant`` as a :class:`Requant`: itself, or a ``(multiplier, shift)`` pair."""
        if isinstance(requant, cls):
            return requant
        if not isinstance(requant, (tuple, list)) or len(requant) != 2:
            raise TypeError(f"requant must be None, a Requant or a (multiplier, shift) pair, "
                            f"not {requant!r}")
        return cls(*requant)


def _acc_range(config):
    if config.signed:
        return -(1 << (config.acc_width - 1)), (1 << (config.acc_width - 1)) - 1
    return 0, (1 << config.acc_width) - 1


def _as_int_array(name, values, config):
    """``values`` as an object array of Python ints, checked against the accumulator range."""
    # Lists go through an object array: numpy would turn integers beyond int64 into floats.
    array = values if isinstance(values, np.ndarray) else np.array(values, dtype=object)
    if array.dtype == object:
        if not all(isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))
                   for v in array.flat):
            raise TypeError(f"{name} must hold integers only")
    elif not np.issubdtype(array.dtype, np.integer):
        raise TypeError(f"{name} must be an integer array, not {array.dtype}")
    ints = np.vectorize(int, otypes=[object])(array) if array.size else array.astype(object)
    lo, hi = _acc_range(config)
    if ints.size and (min(ints.flat) < lo or max(ints.flat) > hi):
        raise ValueError(f"{name} must hold {'signed' if config.signed else 'unsigned'} "
                         f"{config.acc_width}-bit values ({lo}..{hi}), found "
                         f"{min(ints.flat)}..{max(ints.flat)}")
    return ints


def _to_output(ints, width, signed):
    """Object array of ints (already in range) as int64, or uint64 for unsigned 64-bit."""
    if width == 64 and not signed:
        return np.array(ints, dtype=object).astype(np.uint64)
    return np.array(ints, dtype=object).astype(np.int64)


def requantize(values, requant, config):
    """``clamp(round(values * multiplier / 2**shift) + zero_point, lo, hi)``, as the
    post-processor does.

    The product is exact (no intermediate wrap); the division by ``2**shift`` rounds half away
    from zero, or half to even with ``round_even``, where a tie goes to the even output value
    (zero point included) (``shift == 0``: no rounding); the zero point is added to the
    rounded value; the clamp is :meth:`Requant.bounds`.

    Parameters
    ----------
    values : array of int
        Accumulator values (after bias and ReLU), in the configured accumulator range; with a
        per-column ``requant``, its last axis is the columns.
    requant : Requant or (multiplier, shift)
    config : EngineConfig

    Returns
    -------
    int64 array of the shape of ``values``

    Raises
    ------
    TypeError, ValueError
        Naming ``values`` or the parameter of ``requant``.
    """
    requant = Requant.of(requant)
    ints = _as_int_array("values", values, config)
    lo, hi = requant.bounds(config)
    columns = ints.shape[-1] if ints.ndim else 1
    if requant.per_column and len(requant.multiplier) != columns:
        raise ValueError(f"requant has {len(requant.multiplier)} per-column multipliers for "
                         f"{columns} columns")

    def one(x, column):
        multiplier, shift = requant.multiplier, requant.shift
        if requant.per_column:
            multiplier, shift = multiplier[column], shift[column]
        p = x * multiplier
        q = p >> shift                      # rounded down
        rest = p - (q << shift)             # 0 <= rest < 2**shift
        if shift:
            half = 1 << (shift - 1)
            if requant.round_even:      # a tie goes to the even output
                q += rest > half or (rest == half and (q + requant.zero_point) & 1)
            else:
                q += rest > half or (rest == half and p > 0)
        return min(max(q + requant.zero_point, lo), hi)

    column = np.broadcast_to(np.arange(columns), ints.shape) if ints.ndim else 0
    out = np.vectorize(one, otypes=[object])(ints, column) if ints.size else ints
    return np.array(out, dtype=object).astype(np.int64)


def postprocess(acc, config, *, bias=None, relu=False, requant=None):
    """Rows of accumulators through the post-processor: bias, ReLU, requantization.

    Parameters
    ----------
    acc : array (..., cols)
        Accumulator values in the configured range.
    config : EngineConfig
    bias : array (cols,), optional
        Per-column bias in the accumulator range; the sum wraps at ``acc_width``.
    relu : bool
        ``max(x, 0)`` after the bias (no effect on an unsigned configuration).
    requant : None, Requant or (multiplier, shift)
        Requantize with :func:`requantize`; ``None`` passes the ``acc_width`` values through.

    Returns
    -------
    int64 array of the shape of ``acc`` (uint64 for raw output of an unsigned 64-bit
    accumulator), bit-exact with :class:`mxe.hw.postproc.PostProcessor`.

    Raises
    ------
    TypeError, ValueError
        Naming ``acc``, ``bias``, ``relu``, ``requant`` or a parameter of it.
    """
    ints = _as_int_array("acc", acc, config)
    if ints.ndim < 1 or ints.shape[-1] != config.cols:
        raise ValueError(f"acc must have shape (..., {config.cols}) (cols), not {ints.shape}")
    if not isinstance(relu, (bool, np.bool_)):
        raise TypeError(f"relu must be a bool, not {relu!r}")
    if requant is not None:
        requant = Requant.of(requant)
    values = ints
    if bias is not None:
        b = _as_int_array("bias", bias, config)
        if b.shape != (config.cols,):
            raise ValueError(f"bias must have shape ({config.cols},) (cols), not {b.shape}")
        modulus = 1 << config.acc_width
        lo, _ = _acc_range(config)
        values = (values + b - lo) % modulus + lo
    if relu and config.signed:
        values = np.vectorize(lambda v: max(v, 0), otypes=[object])(values)
    if requant is not None:
        return requantize(values, requant, config)
    return _to_output(values, config.acc_width, config.signed)


def postprocess_columns(acc, config, *, bias=None, relu=False, requant=None):
    """:func:`postprocess` of a matrix of any number of columns ``N``, as the engine's N tiles
    take it through the post-processor: ``bias`` has ``N`` values, a per-column ``requant``
    ``N`` columns."""
    acc = np.asarray(acc)
    if acc.ndim != 2:
        raise ValueError(f"acc must be a matrix, not shape {acc.shape}")
    n, cols = acc.shape[1], config.cols
    pad = -n % cols
    acc = np.concatenate([acc, np.zeros((acc.shape[0], pad), dtype=acc.dtype)], axis=1)
    if bias is not None:
        bias = np.asarray(bias)
        bias = np.concatenate([bias, np.zeros(pad, dtype=bias.dtype)])
    if requant is not None:
        requant = Requant.of(requant)
        if requant.per_column:
            if len(requant.multiplier) != n:
                raise ValueError(f"requant has {len(requant.multiplier)} per-column "
                                 f"multipliers for {n} columns")
            requant = replace(requant, multiplier=requant.multiplier + (0,) * pad,
                              shift=requant.shift + (0,) * pad)
    parts = [postprocess(acc[:, t:t + cols], config, relu=relu,
                         bias=None if bias is None else bias[t:t + cols],
                         requant=None if requant is None else requant.columns(t, cols))
             for t in range(0, n + pad, cols)]
    return np.concatenate(parts, axis=1)[:, :n]


__all__ += ["MULTIPLIER_RANGE", "SHIFT_RANGE", "ZERO_POINT_RANGE", "OUTPUT_TYPES", "Requant",
            "requantize", "postprocess", "postprocess_columns"]
