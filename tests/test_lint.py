"""``verilator --lint-only -Wall`` on the Verilog MXE generates: the engine of every preset, the
engine without its optional features, the bare array, and the SoC of the board tops (the part
without vendor primitives). The only waivers are those of hw/lint.vlt, each with its reason."""

import os
import subprocess
from pathlib import Path

import pytest

import mxe.hw
from mxe.hw.array import SystolicArray
from mxe.hw.boards.catalog import BOARDS
from mxe.hw.config import EngineConfig
from mxe.hw.ram import AXIRam
from mxe.hw.generate import TOPS, to_verilog
from mxe.sim.runner import simulator_missing, verilator_root

#: The lint waivers, shipped beside the gateware.
LINT_CONFIG = Path(mxe.hw.__file__).parent / "lint.vlt"


def lint(component, name, tmp_path):
    missing = simulator_missing("verilator")
    if missing:
        pytest.skip(missing)
    source = tmp_path / f"{name}.v"
    source.write_text(to_verilog(component, name=name))
    verilator = Path(verilator_root()) / "bin" / "verilator"
    env = dict(os.environ, VERILATOR_ROOT=str(verilator_root()))
    result = subprocess.run([str(verilator), "--lint-only", "-Wall", str(LINT_CONFIG),
                             "--top-module", name, str(source)],
                            capture_output=True, text=True, env=env, timeout=900)
    assert result.returncode == 0 and "%Warning" not in result.stderr, result.stderr[-5000:]


ENGINES = {
    "tiny": EngineConfig.preset("tiny"),
    "small": EngineConfig.preset("small"),
    "lean": EngineConfig.preset("lean"),
    "lean-serial": BOARDS["icebreaker"].config,
    "odd": EngineConfig(rows=3, cols=5, input_width=12, signed=False, acc_width=40,
                        axi_data_width=64),
}


@pytest.mark.parametrize("name", ENGINES)
def test_engine_lints_clean(name, tmp_path):
    lint(TOPS["engine"][0](ENGINES[name]), "mxe_engine", tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("preset", ["default", "large"])
def test_big_engine_lints_clean(preset, tmp_path):
    """The 16x16 and 32x32 engines: the same gateware as small's at a size whose lint takes
    half a minute and more."""
    lint(TOPS["engine"][0](EngineConfig.preset(preset)), "mxe_engine", tmp_path)


@pytest.mark.parametrize("config", [EngineConfig(rows=4, cols=8), EngineConfig(rows=1, cols=1),
                                    EngineConfig(rows=3, cols=5, multiplier="lut")],
                         ids=lambda c: c.key())
def test_array_lints_clean(config, tmp_path):
    lint(SystolicArray(config), "mxe_array", tmp_path)


@pytest.mark.parametrize("board", [pytest.param("ulx3s-85f", marks=pytest.mark.slow),
                                   "ulx3s-25f"])
def test_board_soc_lints_clean(board, tmp_path):
    """The board top's SoC: the engine, the memory, the UART and its UARTBone bridge."""
    b = BOARDS[board]
    lint(b.top_class(b).soc, "mxe_board_soc", tmp_path)


def test_single_port_ram_lints_clean(tmp_path):
    """The iCEBreaker's memory, single-ported for the UP5K's SPRAM (its SoC's other parts are
    the ULX3S's and the lean engine's)."""
    lint(AXIRam(size=4096, data_width=32, addr_width=32, id_width=4, single_port=True),
         "mxe_ram", tmp_path)


def test_lint_catches_a_real_warning(tmp_path):
    """The waivers do not hide everything: a constant compare is still reported."""
    from amaranth import Module
    from amaranth.lib import wiring
    from amaranth.lib.wiring import In, Out

    class Bad(wiring.Component):
        a: In(3)
        y: Out(1)

        def elaborate(self, platform):
            m = Module()
            m.d.comb += self.y.eq(self.a > 7)
            return m

    with pytest.raises(AssertionError, match="CMPCONST"):
        lint(Bad(), "bad", tmp_path)
