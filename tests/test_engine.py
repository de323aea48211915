"""The whole engine end to end: cocotb bench (sim/tb_engine.py) with the Python driver, on
Verilator and Icarus. Every result against the numpy model, every memory image against the
command-level model, counters against the plan and the cycle model.

Reproduce a failure with the seed printed by the test: ``MXE_SEED=<seed> pytest ... -k ...``.
"""

import pytest

from engine_benches import CONFIGS, ICARUS_FIRST, run_engine


def _run(sim, name, testcase, seed, **params):
    run_engine(sim, name, "mxe.sim.tb_engine", testcase, seed, **params)


@pytest.mark.parametrize("name", ["tiny", "lean"])
def test_engine_discover(sim, name, seed):
    """Configuration and CAPABILITIES read back, with every feature and with none."""
    _run(sim, name, "test_discover", seed)


def test_benches_simulate_what_mxe_generate_writes(sim, seed, tmp_path, monkeypatch):
    """The benches simulate the Verilog exactly as ``mxe generate`` writes it, on both
    simulators (no patching for one of them): a user's own bench sees what ours do. The run
    (a GEMM through cocotbext-axi from the first cycle after reset) passing on
    Icarus is the check that nothing comes out of reset as X there."""
    from mxe.cli import main
    monkeypatch.delenv("MXE_COVERAGE", raising=False)   # coverage builds keep src attributes
    assert main(["generate", "--preset", "tiny", "-o", str(tmp_path)]) == 0
    written = (tmp_path / "mxe_engine.v").read_text()
    run_dir = run_engine(sim, "tiny", "mxe.sim.tb_engine", "test_gemm",
                         seed, shapes=[[5, 7, 6]], random=[0, 1])
    simulated = (run_dir.parent.parent / "mxe_engine.v").read_text()
    assert simulated == written


def test_engine_unsupported(sim, seed):
    """GEMM_A/B/C refused with UNSUPPORTED on an engine without the GEMM unit; GEMMs right after
    a soft reset."""
    _run(sim, "lean", "test_unsupported", seed)


def test_engine_lean_gemm(sim, seed):
    """GEMMs through the driver on an engine without the GEMM unit and without counters (asked
    for as descriptors: the driver falls back to the command stream), bit-exact."""
    shapes = [[1, 1, 1], [5, 7, 6], [13, 3, 9]]
    _run(sim, "lean", "test_gemm", seed, shapes=shapes, random=[1, 30], descriptor=True)


@pytest.mark.parametrize("name", ["tiny", "small"])
def test_engine_gemm(sim, name, seed):
    """A few shapes that are not multiples of the array, plus random ones."""
    shapes = [[1, 1, 1], [5, 7, 6], [13, 3, 9]]
    if sim == "verilator":
        shapes.append([37, 21, 19])
    _run(sim, name, "test_gemm", seed, shapes=shapes,
         random=[2 if sim == "verilator" else 1, 30])


@pytest.mark.parametrize("odd_sim", ICARUS_FIRST)
def test_engine_gemm_odd(odd_sim, seed):
    """rows != cols, unsigned 12-bit operands, 40-bit accumulators."""
    _run(odd_sim, "odd", "test_gemm", seed, shapes=[[7, 9, 13], [1, 5, 2]], random=[2, 30])


@pytest.mark.parametrize("name", ["tiny", "lean"])
def test_engine_output_kinds(sim, name, seed):
    _run(sim, name, "test_output_kinds", seed)


@pytest.mark.parametrize("serial_sim", ICARUS_FIRST)
def test_engine_store_beside_matmul(serial_sim, seed):
    """The iCEBreaker's engine (one accumulator read port): a STORE beside accumulating
    MATMULs, the memory as the command-level model says."""
    _run(serial_sim, "lean-serial", "test_store_beside_matmul", seed)


@pytest.mark.parametrize("serial_sim", ICARUS_FIRST)
def test_engine_output_kinds_serial(serial_sim, seed):
    """Every output kind through the serial requantization multiplier (the iCEBreaker's
    engine), with bias and ReLU (their combinations are the post-processor's own, tested
    beside it; a requantized row takes 132 cycles here)."""
    _run(serial_sim, "lean-serial", "test_output_kinds", seed, bias_relu_off=False)


def test_engine_onnx(seed):
    """Quantized GEMMs (QLinearMatMul, MatMulInteger, QLinearConv) equal to ONNX's reference
    implementation on the engine RTL, per-tensor and per-column, zero points everywhere
    (Verilator; Icarus below, slow)."""
    _run("verilator", "tiny", "test_onnx", seed)


@pytest.mark.slow
def test_engine_onnx_icarus(seed):
    _run("icarus", "tiny", "test_onnx", seed, count=4)


def test_engine_error_index(sim, seed):
    """ERR_CMD_INDEX counts from the last soft reset, across streams, as documented."""
    _run(sim, "tiny", "test_error_index_across_streams", seed)


@pytest.mark.parametrize("name", ["tiny"])
def test_engine_bad_commands(sim, name, seed):
    _run(sim, name, "test_bad_commands", seed)


@pytest.mark.parametrize("name", ["tiny"])
def test_engine_dma_error(sim, name, seed):
    _run(sim, name, "test_dma_error", seed)


@pytest.mark.parametrize("name", ["tiny"])
def test_engine_window(sim, name, seed):
    _run(sim, name, "test_window", seed)


@pytest.mark.parametrize("name", ["tiny"])
def test_engine_soft_reset(sim, name, seed):
    _run(sim, name, "test_soft_reset_mid_gemm", seed)


@pytest.mark.parametrize("variant", ["slverr", "window"])
def test_engine_error_order(variant, seed):
    """ERR_CMD_INDEX names the oldest failing command. Timing-dependent: a younger LOAD's
    window refusal was once seen reported instead of an older STORE's (see the report)."""
    _run("verilator", "tiny", "test_error_order", seed, variant=variant)


def test_engine_chain(sim, seed):
    """Three GEMM descriptors pushed back to back, each layer's A the previous layer's
    requantized C in memory, chained with GEMM_A after_stores: bit-exact, memory image equal
    to the model's."""
    _run(sim, "tiny", "test_chain", seed, chain={"m": 20, "widths": [12, 9, 7, 5]})


@pytest.mark.slow
def test_engine_chain_small(seed):
    """Three 64x64x64 layers chained on small, with a slow write channel and long memory
    latency (Verilator)."""
    _run("verilator", "small", "test_chain", seed, latency=32,
         chain={"m": 64, "widths": [64, 64, 64, 64], "w_pause": 0.5})


@pytest.mark.parametrize("after_stores", [False, True])
def test_engine_chain_hazard(after_stores, seed):
    """The hazard is real: layers of one tile each (the last STORE of a layer writes all of the
    next layer's A) with a slow write channel. Without after_stores a layer reads its input
    before the previous layer wrote it, and its results are wrong; with it, the same chain is
    bit-exact (Verilator)."""
    _run("verilator", "small", "test_chain", seed, pause=0.0, latency=32,
         chain={"m": 64, "widths": [8, 8, 8, 8], "w_pause": 0.5,
                "after_stores": after_stores, "stale": not after_stores})


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_engine_gemm_large(name, seed):
    """Shapes up to 300 in every dimension (Verilator)."""
    _run("verilator", name, "test_gemm", seed,
         shapes=[[300, 300, 300], [257, 31, 129], [3, 300, 5], [300, 1, 300]], random=[3, 300])


@pytest.mark.slow
@pytest.mark.parametrize("name", ["small", "odd"])
@pytest.mark.parametrize("testcase", ["test_output_kinds", "test_bad_commands",
                                      "test_dma_error", "test_window",
                                      "test_soft_reset_mid_gemm"])
def test_engine_sweep(name, testcase, seed):
    _run("verilator", name, testcase, seed)


def test_engine_conv(seed):
    """Convolutions through MXEDriver.conv2d: groups, depthwise, padding, strides, dilation
    (Verilator; Icarus below, slow)."""
    _run("verilator", "tiny", "test_conv", seed)


@pytest.mark.slow
def test_engine_conv_icarus(seed):
    _run("icarus", "tiny", "test_conv", seed)


@pytest.mark.slow
@pytest.mark.parametrize("board_name", ["icebreaker"])
def test_engine_gates(board_name, seed):
    """The engine of a board as the synthesis flow maps it for the board's family (Yosys's
    cells replaced by their models), DSP PEs and the post-processor's DSP multipliers with
    them: every output kind bit-exact, as on the gateware. Slow: Verilator takes many minutes
    to build the netlist. (ECP5 engines use DP16KD block RAMs, of which Yosys has no model.)"""
    from mxe.hw.boards.catalog import board as find_board
    from mxe.hw.generate import TOPS
    from mxe.sim.runner import run_bench
    board = find_board(board_name)
    run_bench(sim="verilator", name="mxe_engine", make_component=TOPS["engine"][0],
              config=board.config, test_module="mxe.sim.tb_engine", testcase="test_output_kinds",
              seed=seed, gates=board.family)
