"""On-chip memory: the cocotb bench (sim/tb_ram.py) on Verilator and Icarus, dual- and
single-ported, parameter checks, block-RAM inference on ECP5 and iCE40, and SPRAM on the iCE40
UP5K."""

import inspect
import json

import pytest

from mxe.hw.config import EngineConfig
from mxe.hw.ram import AXIRam
from mxe.sim.runner import run_bench
from mxe.sim.tb_ram import ram_bench_top

from engine_benches import ICARUS_FIRST, sim_cases


CONFIGS = {"64bit": EngineConfig.preset("small"), "32bit": EngineConfig.preset("tiny")}


@pytest.fixture
def fresh_build(tmp_path, monkeypatch):
    """A build directory of this test's own (see tests/test_csr.py: a reused build fails in a
    process that did not make it)."""
    monkeypatch.setenv("MXE_BUILD_DIR", str(tmp_path))


# On Verilator behind slow: a build takes 20 s for this bench alone, and the board benches run
# the memory on Verilator.
@pytest.mark.parametrize("sim, width", sim_cases(
    sorted(CONFIGS), ident=lambda sim, width: f"{sim}-{width}",
    slow=lambda sim, width: sim == "verilator"), indirect=["sim"])
def test_ram_bench(sim, width, seed, fresh_build):
    test_dir = run_bench(sim=sim, name="mxe_ram_bench", make_component=ram_bench_top,
                         config=CONFIGS[width], test_module="mxe.sim.tb_ram", seed=seed,
                         params={"pause": 0.3, "ops": 30})
    results = json.loads((test_dir / "ram_throughput.json").read_text())
    for name, entry in results.items():
        print(name, entry)
    # One beat a cycle on long bursts, and no gap between the engine's 16-beat bursts.
    assert results["read_256"]["r"]["cycles_per_beat"] == 1
    assert results["write_256"]["w"]["cycles_per_beat"] == 1
    assert results["read_write_16x16"]["r"]["cycles_per_beat"] == 1
    assert results["read_write_16x16"]["w"]["cycles_per_beat"] == 1


def _single_port_top(config):
    return ram_bench_top(config, single_port=True)


@pytest.mark.parametrize("sim", ICARUS_FIRST, indirect=True)
def test_ram_bench_single_port(sim, seed, fresh_build):
    """The single-ported memory (the iCEBreaker's SPRAM), 32-bit: the same traffic, errors and
    model; a beat a cycle on a read or a write alone, and between them when both run (Icarus
    by default, Verilator with ``-m slow``)."""
    test_dir = run_bench(sim=sim, name="mxe_ram_bench_single_port",
                         make_component=_single_port_top, config=CONFIGS["32bit"],
                         test_module="mxe.sim.tb_ram", seed=seed,
                         params={"pause": 0.3, "ops": 30, "single_port": True})
    results = json.loads((test_dir / "ram_throughput.json").read_text())
    for name, entry in results.items():
        print(name, entry)
    assert results["read_256"]["r"]["cycles_per_beat"] == 1
    assert results["write_256"]["w"]["cycles_per_beat"] == 1
    assert results["read_write_256"]["beats_per_cycle"] > 0.9
    # Reads and writes take turns: together no faster than one beat a cycle.
    assert results["read_write_16x16"]["beats_per_cycle"] <= 1


def test_parameters():
    ok = dict(size=4096, data_width=64, addr_width=32, id_width=4, base=0x1000_0000)
    ram = AXIRam(**ok)
    ram._MustUse__silence = True    # inspected, not built
    assert (ram.size, ram.depth, ram.base) == (4096, 512, 0x1000_0000)
    for key, value in [("size", 4096.0), ("id_width", True), ("base", "0")]:
        with pytest.raises(TypeError, match=key):
            AXIRam(**{**ok, key: value})
    with pytest.raises(TypeError, match="init"):
        AXIRam(**ok, init=[1, 2, 3])
    for key, value in [("size", 3000), ("size", 4), ("data_width", 48), ("data_width", 16),
                       ("addr_width", 8), ("id_width", 0), ("base", 0x800),
                       ("base", -4096), ("base", 0xFFFF_F000 + 4096)]:
        with pytest.raises(ValueError, match=key):
            AXIRam(**{**ok, key: value})
    with pytest.raises(ValueError, match="base \\+ size"):
        AXIRam(**{**ok, "addr_width": 16})
    with pytest.raises(ValueError, match="init"):
        AXIRam(**ok, init=bytes(4097))
    with pytest.raises(ValueError, match="init must be None with single_port"):
        AXIRam(**ok, init=bytes(16), single_port=True)
    with pytest.raises(TypeError, match="single_port"):
        AXIRam(**ok, single_port=1)
    params = inspect.signature(AXIRam).parameters.values()
    assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in params)


@pytest.mark.parametrize("family, data_width, bram, count", [
    ("ecp5", 64, "DP16KD", 4),            # 2048 x 9 each, 8 bits of 9 used
    ("ice40", 32, "SB_RAM40_4K", 16),     # 512 x 8 each (the tiny preset's bus)
])
def test_ram_maps_to_block_ram(family, data_width, bram, count):
    """8 KiB maps to block RAM exactly, and the flip-flops are the burst and output registers
    only (about 430): no memory bits or collision bypass in flip-flops."""
    from mxe.synth.check_bram import FAMILIES, synth_cells

    cells = synth_cells(AXIRam(size=8192, data_width=data_width, addr_width=32, id_width=4,
                               base=0x1000_0000), family, name="mxe_ram")
    print(cells)
    assert cells.get(bram) == count
    assert sum(n for cell, n in cells.items() if cell.startswith(FAMILIES[family][2])) < 500


def test_single_port_ram_maps_to_spram():
    """The iCEBreaker's 128 KiB of 32-bit words, single-ported: the UP5K's four SPRAMs, no
    block RAM, and flip-flops for the burst and output registers only."""
    from mxe.synth.check_bram import synth_cells

    cells = synth_cells(AXIRam(size=128 * 1024, data_width=32, addr_width=32, id_width=4,
                               base=0x1000_0000, single_port=True),
                        "ice40", name="mxe_ram", rtlil=True)
    print(cells)
    assert cells.get("SB_SPRAM256KA") == 4
    assert cells.get("SB_RAM40_4K", 0) == 0
    assert sum(n for cell, n in cells.items() if cell.startswith("SB_DFF")) < 500


@pytest.mark.slow
def test_ram_64k_maps_to_block_ram():
    """The board's 64 KiB of 64-bit words (``small`` on the ULX3S): 32 DP16KD on ECP5 (about a
    minute of Yosys)."""
    from mxe.synth.check_bram import synth_cells

    cells = synth_cells(AXIRam(size=65536, data_width=64, addr_width=32, id_width=4,
                               base=0x1000_0000), "ecp5", name="mxe_ram")
    print(cells)
    assert cells.get("DP16KD") == 32
    assert cells.get("TRELLIS_FF", 0) < 500
    assert cells.get("LUT4", 0) < 1000
