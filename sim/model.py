"""Bit-exact numpy golden model of MXE.

Every function takes the :class:`~mxe.hw.config.EngineConfig` the hardware was built from and
computes exactly what the hardware computes: operands in the configured width and signedness,
sums wrapping around at ``acc_width``.
"""

import numpy as np


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
