"""Engine configurations and the bench runner shared by the end-to-end engine tests, and the
simulator parameters of benches that run some configurations on one simulator by default."""

import pytest

from mxe.hw.boards.catalog import BOARDS
from mxe.hw.config import EngineConfig
from mxe.hw.generate import TOPS
from mxe.sim.runner import SIMULATORS, run_bench, simulator_missing

CONFIGS = {
    # 4x4, 32-bit bus, 8-entry queue: many tiles and queue-full waits for small shapes.
    "tiny": EngineConfig.preset("tiny"),
    # 8x8, 64-bit bus.
    "small": EngineConfig.preset("small", spad_depth=512, acc_depth=128),
    # Not square, unsigned 12-bit operands (2-byte elements), 40-bit accumulators (8 bytes).
    "odd": EngineConfig.preset("tiny", rows=4, cols=6, input_width=12, signed=False,
                               acc_width=40, spad_depth=256, acc_depth=64, axi_data_width=64),
    # The lean preset: tiny without the features a user may leave out (no GEMM unit, only the
    # CYCLES counter, no unaligned DMA), with one requantization lane shared by its four
    # columns and the shallow pipeline of a slow clock.
    "lean": EngineConfig.preset("lean"),
    # The iCEBreaker's engine: lean, requantizing with the serial multiplier (no DSP), the
    # accumulator with one read port.
    "lean-serial": BOARDS["icebreaker"].config,
}


#: For configurations used by a test or two: each builds in seconds on Icarus and in a minute
#: or more on Verilator, whose runs are behind slow.
ICARUS_FIRST = ["icarus", pytest.param("verilator", marks=pytest.mark.slow)]


def sim_cases(items, *, ident, slow):
    """pytest parameters ``(sim, item)``: every item on every simulator, with the ID
    ``ident(sim, item)``, behind the ``slow`` marker where ``slow(sim, item)``."""
    return [pytest.param(sim, item, id=ident(sim, item),
                         marks=[pytest.mark.slow] if slow(sim, item) else [])
            for item in items for sim in SIMULATORS]


def run_engine(sim, name, module, testcase, seed, **params):
    """Run ``testcase`` of the cocotb module ``module`` on the engine built with config
    ``CONFIGS[name]``; the parameters reach the bench as MXE_PARAMS. Returns the run's
    directory (its build directory, with the Verilog simulated, is two levels up). Skips the
    test if ``sim`` is not installed."""
    if simulator_missing(sim):
        pytest.skip(simulator_missing(sim))
    return run_bench(sim=sim, name="mxe_engine", make_component=TOPS["engine"][0],
                     config=CONFIGS[name], test_module=module, testcase=testcase, seed=seed,
                     params=params)
