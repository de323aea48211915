"""CSR block: the cocotb bench (sim/tb_csr.py) on Verilator and Icarus, the register table's
consistency, and the Markdown generator against the table."""

import os
import re

import pytest

from mxe.hw.config import EngineConfig
from mxe.hw.csr import CSRBlock
from mxe.hw.regmap import (ADDR_WIDTH, CAPABILITIES, CONFIG_REGISTERS, CORE_COUNTERS, COUNTERS,
                           ID_VALUE, OFFSETS, REGISTERS, REGMAP, Field, Register, ports,
                           register_map_markdown)
from mxe.sim.runner import run_bench, simulator_missing
from mxe.sim.tb_csr import csr_bench_top

from engine_benches import sim_cases


# Every feature of CAPABILITIES present and missing once, in configurations that tell the bits
# apart.
CONFIGS = [EngineConfig.preset("tiny"),
           EngineConfig.preset("small", cmd_queue_depth=4, gemm_unit=False),
           EngineConfig.preset("tiny", perf_counters=False)]


@pytest.fixture
def fresh_build(tmp_path, monkeypatch):
    """A build directory of this test's own. run_bench reuses a finished build by its stamp,
    but then cocotb's runner.test() fails in a process that did not build it (the runner has
    no sources; see the report), so every bench here builds afresh (Icarus: about a second)."""
    monkeypatch.setenv("MXE_BUILD_DIR", str(tmp_path))


# Every configuration on Icarus (a build takes a second); on Verilator behind slow (20 s a
# build for this bench alone; every engine bench runs the register block on Verilator).
@pytest.mark.parametrize("sim, config", sim_cases(
    CONFIGS, ident=lambda sim, config: f"{sim}-{config.key()}",
    slow=lambda sim, config: sim == "verilator"), indirect=["sim"])
def test_csr_bench(sim, config, fresh_build):
    seed = int(os.environ.get("MXE_SEED", 7))
    print(f"seed {seed} (set MXE_SEED={seed} to reproduce)")
    run_bench(sim=sim, name="mxe_csr_bench", make_component=csr_bench_top, config=config,
              test_module="mxe.sim.tb_csr", seed=seed, params={"pause": 0.3})


def test_csr_bench_no_pauses(fresh_build):
    sim = "icarus" if simulator_missing("icarus") is None else "verilator"
    run_bench(sim=sim, name="mxe_csr_bench", make_component=csr_bench_top,
              config=CONFIGS[0], test_module="mxe.sim.tb_csr", seed=3, params={"pause": 0})


def test_table_is_consistent():
    offsets = [reg.offset for reg in REGISTERS]
    assert len(set(offsets)) == len(offsets)
    assert all(o % 4 == 0 and o < 1 << ADDR_WIDTH for o in offsets)
    assert ID_VALUE >> 8 == int.from_bytes(b"MXE", "big")
    # Every required register is there.
    for name in ["ID", "CTRL", "STATUS", "ERR_CMD_INDEX", "ERR_ADDR_LO", "ERR_ADDR_HI",
                 "CAPABILITIES", "CMD_W0", "CMD_W1", "CMD_W2", "CMD_W3", "CMD_LEVEL", "WIN_BASE_LO",
                 "WIN_BASE_HI", "WIN_LIMIT_LO", "WIN_LIMIT_HI",
                 *(reg for reg, _ in CONFIG_REGISTERS),
                 *(f"{c}_{half}" for c, _, _ in COUNTERS for half in ("LO", "HI"))]:
        assert name in OFFSETS, name
    assert REGMAP["STATUS"]["fields"]["error"]["width"] == 4
    assert REGMAP["STATUS"]["fields"]["done"]["access"] == "W1C"
    # The ports the brief names, with their directions and widths.
    p = ports()
    assert p["status_busy"][:2] == ("in", 1)
    assert p["ctrl_start"][:2] == ("out", 1)
    assert p["win_base"][:2] == ("out", 64)
    assert p["err_addr"][:2] == ("in", 64)
    assert all(p[port][:2] == ("in", 64) for _, port, _ in COUNTERS)
    # CAPABILITIES: a bit per feature, named as the configuration parameter; the counters but
    # CYCLES belong to perf_counters and lose their ports without it.
    caps = REGMAP["CAPABILITIES"]["fields"]
    assert [(name, caps[name]["lsb"], caps[name]["width"]) for name in caps] == \
        [(name, bit, 1) for bit, (name, _doc) in enumerate(CAPABILITIES)]
    assert all(isinstance(getattr(EngineConfig(), name), bool) for name in caps)
    lean = EngineConfig.preset("tiny", perf_counters=False, gemm_unit=False)
    assert set(p) - set(ports(config=lean)) == \
        {port for name, port, _ in COUNTERS if name not in CORE_COUNTERS}
    assert ports(config=EngineConfig.preset("tiny")) == p


def test_table_rejects_bad_entries():
    with pytest.raises(ValueError, match="overlaps"):
        Register("X", 0, "RW", [Field("a", 4, 0, ""), Field("b", 4, 3, "")])
    with pytest.raises(ValueError, match="offset"):
        Register("X", 2, "RW", [])
    with pytest.raises(ValueError, match="access"):
        Register("X", 0, "XX", [])
    with pytest.raises(ValueError, match="fit 32 bits"):
        Field("a", 8, 28, "")


def test_component_ports_follow_table():
    block = CSRBlock(EngineConfig.preset("tiny"))
    members = block.signature.members
    for name, (direction, width, _access, _doc) in ports().items():
        assert members[name].flow.value.lower() == direction, name
        assert len(getattr(block, name)) == width, name
    block._MustUse__silence = True  # inspected, not built
    lean = CSRBlock(EngineConfig.preset("tiny", perf_counters=False))
    assert "cycles" in lean.signature.members and "busy_cycles" not in lean.signature.members
    lean._MustUse__silence = True
    with pytest.raises(ValueError, match="addr_width"):
        CSRBlock(EngineConfig.preset("tiny"), addr_width=6)
    with pytest.raises(TypeError, match="config"):
        CSRBlock("tiny")


def _md_rows(text, header):
    lines = text[text.index(header):].splitlines()[2:]
    rows = []
    for line in lines:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip("|").split("|")])
    return rows


def test_markdown_against_table():
    config = EngineConfig.preset("small")
    text = register_map_markdown(config)
    regs = _md_rows(text, "| Offset |")
    assert [(int(r[0], 16), r[1], r[2]) for r in regs] == \
        [(reg.offset, reg.name, reg.access) for reg in REGISTERS]
    fields = _md_rows(text, "| Register | Field |")
    expected = [(reg.name, f.name) for reg in REGISTERS for f in reg.fields]
    assert [(r[0], r[1]) for r in fields] == expected
    for row in fields:
        reg = next(r for r in REGISTERS if r.name == row[0])
        f = next(f for f in reg.fields if f.name == row[1])
        hi, _, lo = row[2].partition(":")
        assert int(lo or hi) == f.lsb and int(hi) == f.lsb + f.width - 1, row
        if reg.access_of(f) == "CONST":
            assert int(row[4], 16) == f.value(config), row
    # Registers of a feature say that they read 0 without it.
    for reg in regs:
        feature = REGMAP[reg[1]]["feature"]
        assert (f"(reads 0 without `{feature}`)" in reg[3]) == (feature is not None), reg
    # The configuration values appear for CFG_ registers.
    cfg_rows = {r[0]: int(r[4], 16) for r in fields if r[0].startswith("CFG_")}
    for reg, attr in CONFIG_REGISTERS:
        assert cfg_rows[reg] == int(getattr(config, attr))


def test_regmap_command(tmp_path, capsys):
    from mxe.cli import main
    assert main(["regmap", "--preset", "tiny"]) == 0
    out = capsys.readouterr().out
    assert out == register_map_markdown(EngineConfig.preset("tiny"))
    target = tmp_path / "regmap.md"
    assert main(["regmap", "--preset", "small", "-o", str(target)]) == 0
    assert target.read_text() == register_map_markdown(EngineConfig.preset("small"))
    assert re.search(r"\| 0x02C \| CMD_W3 \| PUSH \|", target.read_text())
