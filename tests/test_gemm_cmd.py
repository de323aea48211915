"""The hardware GEMM command end to end (sim/tb_gemm_cmd.py): descriptor GEMMs on the whole
engine, on Verilator and Icarus, against the numpy model and the command-level model's memory
image; cycles against the schedule's prediction; refused descriptors.

Reproduce a failure with the seed printed by the test: ``MXE_SEED=<seed> pytest ... -k ...``.
"""

import pytest

from engine_benches import ICARUS_FIRST, run_engine


def _run(sim, name, testcase, seed, **params):
    run_engine(sim, name, "mxe.sim.tb_gemm_cmd", testcase, seed, **params)


@pytest.mark.parametrize("name", ["tiny", "small"])
def test_gemm_cmd(sim, name, seed):
    """Shapes that are not multiples of the array, several M chunks, plus random ones."""
    shapes = [[1, 1, 1], [5, 7, 6], [13, 3, 9]]
    if sim == "verilator":
        shapes += [[37, 21, 19], [70, 9, 11]]
    _run(sim, name, "test_gemm_cmd", seed, shapes=shapes,
         random=[2 if sim == "verilator" else 1, 30])


@pytest.mark.parametrize("odd_sim", ICARUS_FIRST)
def test_gemm_cmd_odd(odd_sim, seed):
    """rows != cols, 2-byte operands, 8-byte accumulators."""
    _run(odd_sim, "odd", "test_gemm_cmd", seed, shapes=[[7, 9, 13], [30, 20, 3]],
         random=[2, 30])


@pytest.mark.parametrize("name", ["tiny", "small"])
def test_gemm_cmd_cycles(name, seed):
    """Measured cycles within the prediction for the schedule (Verilator)."""
    _run("verilator", name, "test_gemm_cmd_cycles", seed,
         cycle_shapes=[[32, 32, 32], [64, 24, 40], [1, 64, 64]])


@pytest.mark.parametrize("name", ["tiny"])
def test_gemm_cmd_refused(sim, name, seed):
    _run(sim, name, "test_gemm_cmd_refused", seed)
