"""The answers of the programming guide (docs/programming.md), checked on the engine RTL by
sim/tb_guide.py, which drives the engine only through the registers and commands the guide
names; and the guide's rule for refusing a GEMM descriptor against the GEMM unit's model.

Reproduce a failure with the seed printed by the test: ``MXE_SEED=<seed> pytest ... -k ...``.
"""

import random

import pytest

from engine_benches import run_engine
from mxe.hw.config import EngineConfig
from mxe.hw.generate import TOPS
from mxe.hw.isa import ErrorCode
from mxe.sim.gemm_model import schedule
from mxe.sim.runner import run_bench
from mxe.sim.tb_guide import descriptor_refusal


def _run(sim, name, testcase, seed, **params):
    run_engine(sim, name, "mxe.sim.tb_guide", testcase, seed, **params)


def test_guide_soft_reset(sim, seed):
    """Section "Soft reset": how its end shows, what it clears and what it keeps."""
    _run(sim, "tiny", "test_soft_reset", seed)


def test_guide_channel_layout(sim, seed):
    """Section "Per-column values of a GEMM descriptor": the layout at channel_offset."""
    _run(sim, "tiny", "test_channel_layout", seed)


def test_guide_descriptor_refusals(sim, seed):
    """Section "When GEMM_C refuses a descriptor": both sides of the BAD_ADDR boundary."""
    _run(sim, "tiny", "test_descriptor_refusals", seed)


def test_guide_err_addr(sim, seed):
    """Section "What ERR_ADDR holds"."""
    _run(sim, "tiny", "test_err_addr", seed)


def test_guide_queue(sim, seed):
    """Section "Room in the command queue", with the GEMM unit."""
    _run(sim, "tiny", "test_queue", seed)


def test_guide_queue_lean(seed):
    """The same without the GEMM unit (Verilator)."""
    _run("verilator", "lean", "test_queue", seed)


def test_guide_latency(sim, seed):
    """Section "Latency": every number of its table, on the tiny preset."""
    _run(sim, "tiny", "test_latency", seed)


@pytest.mark.parametrize("name", ["small", "odd", "lean"])
def test_guide_latency_configs(name, seed):
    """The table's numbers on the other bench configurations: an 8x8 array with a 64-bit bus,
    40-bit accumulators (a longer post-processor), no GEMM unit (Verilator; the odd
    configuration on Icarus, whose build takes seconds where Verilator's takes a minute)."""
    _run("icarus" if name == "odd" else "verilator", name, "test_latency", seed)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["tiny", "small", "odd", "lean"])
def test_guide_latency_worst(name, seed):
    """The worst cases of the table's "at most" rows, over 300 random trials each."""
    _run("verilator", name, "test_latency", seed, trials=300)


@pytest.mark.slow
@pytest.mark.parametrize("rows", [1, 2])
def test_guide_refusal_paths(rows, seed):
    """The set-up times of every way GEMM_C refuses for the buffers, on engines with the
    smallest scratchpad (16 rows): 1 row (both layouts fail their second test) and 2 rows (both
    fail their first, or layout 1 its second and layout 2 its first)."""
    config = EngineConfig.preset("tiny", rows=rows, cols=rows, spad_depth=16, spad_banks=1,
                                 acc_depth=16)
    run_bench(sim="verilator", name="mxe_engine", make_component=TOPS["engine"][0],
              config=config, test_module="mxe.sim.tb_guide", testcase="test_refusal_paths",
              seed=seed)


def test_refusal_rule_is_the_gemm_units(seed):
    """The guide's BAD_ADDR/BAD_DIM rule gives what the GEMM unit's model (which the gateware
    matches command for command, tests/test_gemm_unit.py) gives, over random configurations
    and shapes, including the corners where M or the accumulator decide."""
    rng = random.Random(seed)
    disagree = []
    refused = 0
    for _ in range(300):
        rows = rng.choice([1, 2, 4, 8, 16, 32, 64])
        config = EngineConfig(rows=rows, cols=rng.choice([1, 4, 8, 64]),
                              spad_depth=rng.choice([16, 32, 64, 128, 256, 512, 4096]),
                              spad_banks=1, acc_depth=rng.choice([16, 32, 256, 1024]))
        for _ in range(20):
            M, K, N = (rng.choice([0, 1, rng.randint(1, 80), rng.randint(1, 65535)])
                       for _ in range(3))
            _sched, error = schedule(config, M, K, N)
            want = error or ErrorCode.OK
            got = descriptor_refusal(config, M, K, N)
            refused += got == ErrorCode.BAD_ADDR
            if got != want:
                disagree.append((config.key(), M, K, N, got.name, want.name))
    assert not disagree, disagree[:5]
    assert refused > 100, "the sample hardly reaches the BAD_ADDR side"
    # A configuration where M alone decides: two strips of K = 16 rows leave 48 rows a panel.
    small = EngineConfig(rows=64, cols=4, spad_depth=128, spad_banks=1, acc_depth=256)
    assert descriptor_refusal(small, 48, 16, 5) == ErrorCode.OK
    assert descriptor_refusal(small, 49, 16, 5) == ErrorCode.BAD_ADDR
    assert schedule(small, 49, 16, 5)[1] == ErrorCode.BAD_ADDR
