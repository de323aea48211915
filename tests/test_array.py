"""The systolic array in Verilator and Icarus against the golden and cycle models."""

import pytest

from mxe.hw.array import SystolicArray
from mxe.hw.config import EngineConfig
from mxe.sim.runner import run_bench

from engine_benches import sim_cases

CONFIGS = [
    EngineConfig(rows=1, cols=1),
    EngineConfig(rows=2, cols=2),
    EngineConfig(rows=4, cols=4),
    EngineConfig(rows=4, cols=8),
    EngineConfig(rows=8, cols=4),
    EngineConfig(rows=1, cols=8),
    EngineConfig(rows=8, cols=1),
    EngineConfig(rows=8, cols=8),
    EngineConfig(rows=16, cols=16),
    EngineConfig(rows=4, cols=4, signed=False),
    # Narrow operands and an accumulator that wraps within one tile (8 * 8 * 64 > 2**8).
    EngineConfig(rows=8, cols=4, input_width=4, acc_width=8),
    EngineConfig(rows=4, cols=4, input_width=16, acc_width=48, signed=False),
    # int8 with a 16-bit accumulator: -128 * -128 summed over K wraps.
    EngineConfig(rows=4, cols=4, acc_width=16),
    # One multiply stage (no deep_pipeline), in both kinds of PE: 8 DSP, 8 LUT.
    EngineConfig(rows=4, cols=4, deep_pipeline=False, multiplier="auto", dsp_budget=8),
]


#: Every shape and width runs on Icarus in the default suite (its builds take seconds) but
#: 16x16 (25 s there); on Verilator behind slow (a build takes 20 s to a minute for this bench
#: alone, four minutes for 16x16; every engine bench runs an array on Verilator).
ICARUS_SLOW = {EngineConfig(rows=16, cols=16).key()}


def _slow(sim, config):
    return sim == "verilator" or config.key() in ICARUS_SLOW


@pytest.mark.parametrize("sim, config", sim_cases(
    CONFIGS, ident=lambda sim, config: f"{sim}-{config.key()}", slow=_slow), indirect=["sim"])
def test_array(sim, config, seed):
    """Random tiles with random gaps, back-to-back tiles of every length, and a GEMM with long K
    (a chain of weight tiles, 30% extreme operands): every output bit-exact, cycles exact."""
    params = {
        "gap": 0.3,
        "tiles": 6,
        "m": 2 * config.rows + 3,
        "k": 8 * config.rows,
        "n": 2 * config.cols,
        "extremes": 0.3,
    }
    run_bench(sim=sim, name="mxe_array", make_component=SystolicArray, config=config,
              test_module="mxe.sim.tb_array", seed=seed, params=params)


#: The arrays of the boards' engines as the synthesis flow maps them, DSP PEs (with their
#: registers and adders as Yosys infers them) beside LUT PEs, on both pipelines. Yosys 0.70's
#: ice40_dsp has mapped PEs into netlists that compute wrong sums (see hw/pe.py).
GATE_CASES = [
    # iCEBreaker: 16 PEs in 8 SB_MAC16s, two 8x8 products each (mxe.synth.dsp_pair).
    pytest.param("ice40", EngineConfig.preset("lean"), id="ice40-lean-icebreaker"),
    # 8 shallow DSP PEs beside 8 LUT PEs: the case Yosys's ice40_dsp mapped wrongly.
    pytest.param("ice40", EngineConfig.preset("lean", multiplier="auto", dsp_budget=8),
                 id="ice40-lean-auto8"),
    pytest.param("ice40", EngineConfig.preset("tiny"), id="ice40-tiny"),
    pytest.param("ecp5", EngineConfig.preset("lean"), id="ecp5-lean"),
    pytest.param("ecp5", EngineConfig.preset("tiny"), id="ecp5-tiny"),
]


@pytest.mark.slow
@pytest.mark.parametrize("family, config", GATE_CASES)
def test_array_gates(family, config, seed):
    """The array's netlist from the synthesis flow (Yosys's cells replaced by their models) on
    the array bench: every output bit-exact, cycles exact, as the gateware itself. Slow: the
    five take about 3 minutes."""
    params = {"gap": 0.3, "tiles": 4, "m": 2 * config.rows + 3, "k": 8 * config.rows,
              "n": 2 * config.cols, "extremes": 0.3}
    run_bench(sim="verilator", name="mxe_array", make_component=SystolicArray, config=config,
              test_module="mxe.sim.tb_array", seed=seed, params=params, gates=family)
