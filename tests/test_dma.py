"""DMA: cocotb benches against cocotbext-axi's AxiRam on Verilator and Icarus, plus quick
Amaranth-level checks of the interface."""

import os

import pytest

from mxe.hw.config import EngineConfig
from mxe.hw.dma import DMA, DMAError
from mxe.sim.dma_runner import run_bench
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
    """SLVERR on reads and writes, window violations, zero dimensions; recovery."""
    _run(_sim(sim), name, "test_errors", SEED)


@pytest.mark.parametrize("sim", SIMULATORS)
def test_dma_back_to_back(sim):
    _run(_sim(sim), "small", "test_back_to_back", SEED)


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(2, 12))
@pytest.mark.parametrize("name", sorted(CONFIGS))
@pytest.mark.parametrize("testcase", ["test_random", "test_errors"])
def test_dma_sweep(testcase, name, seed):
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
