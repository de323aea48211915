"""DMA: cocotb benches against cocotbext-axi's AxiRam on Verilator and Icarus, plus quick
Amaranth-level checks of the interface."""

import os

import pytest

from mxe.hw.config import EngineConfig
from mxe.hw.dma import DMA, DMAError
from mxe.sim.runner import run_bench
from mxe.sim.runner import SIMULATORS, simulator_missing

SEED = int(os.environ.get("MXE_SEED", "1"))

CONFIGS = {
    # 64-bit bus, 16-beat bursts, 4 reads in flight
    "small": EngineConfig.preset("small"),
    # 32-bit bus, short bursts, one read in flight: many bursts, many 4 KiB splits
    "narrow": EngineConfig.preset("tiny", max_burst_len=4, max_outstanding_reads=1),
    # 256-bit bus, 64-beat bursts (4 KiB splits bite), 64-bit addresses
    "wide": EngineConfig.preset("small", axi_data_width=256, max_burst_len=64,
                                max_outstanding_reads=8, axi_addr_width=64),
}


def _sim(sim):
    missing = simulator_missing(sim)
    if missing:
        pytest.skip(missing)
    return sim


def _run(sim, name, testcase, seed, **params):
    print(f"seed {seed} (MXE_SEED={seed} reproduces)")
    run_bench(sim=sim, name="mxe_dma", make_component=DMA, config=CONFIGS[name],
              test_module="mxe.sim.tb_dma", testcase=testcase, seed=seed, params=params)


@pytest.mark.parametrize("sim", SIMULATORS)
@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_dma_random(sim, name):
    """Random sizes, strides, alignments; random pauses on all AXI channels and streams;
    random memory latency; whole-memory check (guard bytes); bursts checked on the bus."""
    _run(_sim(sim), name, "test_random", SEED)


@pytest.mark.parametrize("sim", SIMULATORS)
@pytest.mark.parametrize("name", ["small", "narrow"])
def test_dma_errors(sim, name):
    """SLVERR (small) or DECERR (narrow) on reads and writes, window violations, zero
    dimensions; recovery."""
    _run(_sim(sim), name, "test_errors", SEED, decerr=name == "narrow")


@pytest.mark.parametrize("sim", SIMULATORS)
@pytest.mark.parametrize("name", ["small", "narrow"])
def test_dma_read_error_edges(sim, name):
    """A read failing on its last beat (or its first), then a good one, over and over."""
    _run(_sim(sim), name, "test_read_error_edges", SEED)


@pytest.mark.parametrize("sim", SIMULATORS)
def test_dma_back_to_back(sim):
    _run(_sim(sim), "small", "test_back_to_back", SEED)


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(2, 12))
@pytest.mark.parametrize("name", sorted(CONFIGS))
@pytest.mark.parametrize("testcase", ["test_random", "test_errors"])
def test_dma_sweep(testcase, name, seed, request):
    """Long random sweeps: only when selected with ``-m slow``."""
    if "slow" not in (request.config.getoption("markexpr") or "") \
            or "not slow" in request.config.getoption("markexpr"):
        pytest.skip("long sweep: run with -m slow")
    _run(_sim("verilator"), name, testcase, seed, commands=60)


def test_dma_ports():
    """The AXI port is named so that AxiBus.from_prefix(dut, "axi_") finds it."""
    from mxe.hw.generate import TOPS, to_verilog

    make, module = TOPS["dma"]
    text = to_verilog(make(CONFIGS["small"]), name=module)
    for name in ("axi__awaddr", "axi__wstrb", "axi__bresp", "axi__arlen", "axi__rlast",
                 "i_rd_cmd__payload", "o_rd_data__payload", "o_wr_done__valid"):
        assert f" {name};" in text, name
    assert DMAError.BAD_CMD.value == 4 and DMAError.OK.value == 0


@pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")
def test_dma_bad_config():
    with pytest.raises(TypeError, match="config"):
        DMA({"axi_data_width": 64})


def test_dma_window_check_boundaries():
    """The command check (Amaranth simulation): exact window edges, zero dimensions, extents
    that would wrap the address space, against a Python model of the rule."""
    import numpy as np
    from amaranth.sim import Simulator

    from mxe.hw.dma import _Checker

    config = CONFIGS["small"]
    dut = _Checker(config)
    rng = np.random.default_rng(SEED)
    base, limit = 0x1000, 0x9000
    cases = [
        (base, 1, 0x8000, 0),              # exactly the window
        (base, 2, 0x4000, 0x4000),         # two rows filling it exactly
        (base, 2, 0x4000, 0x4001),         # one byte too far
        (base - 1, 1, 1, 0),               # one byte below
        (limit - 1, 1, 1, 0),              # the last byte
        (limit, 1, 1, 0),                  # the limit itself
        (base, 0, 16, 16),                 # rows == 0
        (base, 4, 0, 16),                  # row_bytes == 0
        (0xFFFF_FF00, 2, 0x100, 0x100),    # would wrap the 32-bit address space
        (base, 0xFFFF, 1, 0xFFFF_FFFF),    # huge stride
        (base, 1, 0x100, 0x1_0000),        # a stride past 16 bits, one row: inside
        (base, 2, 1, 0x1_0000),            # the same stride, two rows: outside
        (base, 2, 1, 0x1_7FFF),            # one row beyond 0x8000
    ]
    for _ in range(40):
        rows = int(rng.integers(0, 6))
        row_bytes = int(rng.integers(0, 0x3000))
        stride = int(rng.integers(0, 0x3000))
        addr = int(rng.integers(0, 0xA000))
        cases.append((addr, rows, row_bytes, stride))

    def model(addr, rows, row_bytes, stride):
        if rows == 0 or row_bytes == 0:
            return DMAError.BAD_CMD
        end = addr + (rows - 1) * stride + row_bytes
        return DMAError.OK if base <= addr and end <= limit else DMAError.WINDOW

    async def tb(ctx):
        ctx.set(dut.window_base, base)
        ctx.set(dut.window_limit, limit)
        ctx.set(dut.o_cmd.ready, 1)
        for addr, rows, row_bytes, stride in cases:
            ctx.set(dut.i_cmd.valid, 1)
            ctx.set(dut.i_cmd.payload, {"addr": addr, "rows": rows, "row_bytes": row_bytes,
                                        "stride": stride})
            await ctx.tick().until(dut.i_cmd.ready)
            ctx.set(dut.i_cmd.valid, 0)
            error, = await ctx.tick().sample(dut.o_cmd.payload.error).until(dut.o_cmd.valid)
            want = model(addr, rows, row_bytes, stride)
            assert error == want, f"{(hex(addr), rows, row_bytes, stride)}: {error} != {want}"

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(tb)
    sim.run()
