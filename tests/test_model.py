"""The golden model against plain Python integer arithmetic."""

import numpy as np
import pytest

from mxe.hw.config import EngineConfig
from mxe.sim import model
from mxe.hw.array import array_latency
from mxe.sim.cycle_model import array_tile_cycles, lower_bound, naive_cycles


def wrap_int(value, width, signed):
    value %= 1 << width
    if signed and value >= 1 << (width - 1):
        value -= 1 << width
    return value


@pytest.mark.parametrize("config", [
    EngineConfig(),
    EngineConfig(signed=False),
    EngineConfig(input_width=8, acc_width=16),
    EngineConfig(input_width=16, acc_width=64),
    EngineConfig(input_width=16, acc_width=64, signed=False),
    EngineConfig(input_width=5, acc_width=11, signed=False),
], ids=lambda c: c.key())
def test_matmul_matches_python_integers(config, seed):
    rng = np.random.default_rng(seed)
    m, k, n = 5, 67, 4
    a = model.random_operands(rng, (m, k), config, extremes=0.3)
    b = model.random_operands(rng, (k, n), config, extremes=0.3)
    got = model.matmul(a, b, config)
    for i in range(m):
        for j in range(n):
            exact = sum(int(a[i, t]) * int(b[t, j]) for t in range(k))
            assert int(got[i, j]) == wrap_int(exact, config.acc_width, config.signed)


def test_extremes_wrap():
    config = EngineConfig(acc_width=16)
    a = np.full((1, 2), -128)
    b = np.full((2, 1), -128)
    # 2 * 16384 = 32768 wraps to -32768 in 16 bits.
    assert model.matmul(a, b, config)[0, 0] == -32768


def test_operand_range_checked():
    with pytest.raises(ValueError, match=r"a must hold values in -128..127"):
        model.matmul(np.array([[128]]), np.array([[1]]), EngineConfig())
    with pytest.raises(ValueError, match=r"b must hold values in 0..255"):
        model.matmul(np.array([[1]]), np.array([[-1]]), EngineConfig(signed=False))


def test_cycle_model_bounds():
    config = EngineConfig.preset("small")
    # Back-to-back tiles of M >= rows rows: one tile every M cycles, plus fill and drain.
    cycles = array_tile_cycles([64] * 64, config)
    assert lower_bound(64, 64, 64, config) <= cycles < naive_cycles(64, 64, 64, config)
    assert cycles == (config.rows - 1) + 64 * 64 + array_latency(config)
    # Short tiles are limited by the weight load: one tile every `rows` cycles.
    assert array_tile_cycles([2] * 10, config) - array_tile_cycles([2] * 9, config) == config.rows
