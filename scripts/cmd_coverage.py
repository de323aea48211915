"""``mxe coverage``: line, branch and toggle coverage of the gateware by the Verilator benches
run with ``MXE_COVERAGE=1``, per ``hw/`` file and per block, and the lines never reached."""

from pathlib import Path

import mxe.hw

from mxe.config_args import CommandError
from mxe.sim.coverage import COUNTS_FILE, KEYS_FILE, collect, summarize
from mxe.sim.runner import build_root

NAME = "coverage"
HELP = ("report Verilator line, branch and toggle coverage of the gateware from the benches "
        "run with MXE_COVERAGE=1 (e.g. MXE_COVERAGE=1 pytest -n auto -k verilator)")

_KINDS = ("line", "branch", "toggle")


def add_arguments(parser):
    parser.add_argument("--blocks", action="store_true",
                        help="a row per block of the engine instead of per hw/ file")
    parser.add_argument("--clear", action="store_true",
                        help="forget the coverage collected so far, and stop")
    parser.add_argument("-o", "--output", default="out/coverage", metavar="DIR",
                        help="where coverage.md and holes.md go (default: %(default)s)")


def _cell(entry):
    hit, total = entry
    return f"{100 * hit / total:.1f}% ({hit}/{total})" if total else "-"


def _table(rows, title):
    lines = [f"| {title} | lines | branches | toggles |", "|---|---:|---:|---:|"]
    totals = {kind: [0, 0] for kind in _KINDS}
    for name, kinds in sorted(rows.items()):
        lines.append(f"| {name} | " + " | ".join(_cell(kinds.get(kind, (0, 0)))
                                                for kind in _KINDS) + " |")
        for kind in _KINDS:
            hit, total = kinds.get(kind, (0, 0))
            totals[kind][0] += hit
            totals[kind][1] += total
    lines.append("| **all** | " + " | ".join(_cell(totals[kind]) for kind in _KINDS) + " |")
    return lines


def run(args):
    root = build_root()
    builds = sorted((root / "sim").glob(f"*-cov/{KEYS_FILE}"))
    if args.clear:
        for keys in builds:
            keys.unlink()
            (keys.parent / COUNTS_FILE).unlink(missing_ok=True)
        print(f"cleared the coverage of {len(builds)} builds under {root / 'sim'}")
        return 0
    if not builds:
        raise CommandError(f"no coverage under {root / 'sim'}: run benches with "
                           f"MXE_COVERAGE=1 first (e.g. MXE_COVERAGE=1 pytest -k verilator)")
    # Source locations are named from the folder that holds hw/ (the source tree, or the
    # installed package).
    points = collect(root, Path(mxe.hw.__file__).resolve().parent.parent)
    blocks, files, holes = summarize(points)
    rows = blocks if args.blocks else {name: kinds for name, kinds in files.items()
                                       if name.startswith("hw/") or "/" not in name}
    table = _table(rows, "block" if args.blocks else "file")
    print(f"Coverage of {len(builds)} Verilator builds "
          f"({', '.join(b.parent.name.removesuffix('-cov') for b in builds[:3])}"
          f"{', ...' if len(builds) > 3 else ''}):\n")
    print("\n".join(table))
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    (out / "coverage.md").write_text("\n".join(
        ["# Coverage of the gateware", "", *_table(files, "file"), "",
         *_table(blocks, "block"), ""]))
    lines = ["# Line and branch points never reached", "",
             "Grouped by the gateware line they come from (the condition of an `if`, the "
             "expression of a `case`, or the block's file); per point: the build, the Verilog "
             "line and the kind.", ""]
    for source, found in sorted(holes.items()):
        build, point = found[0]
        lines.append(f"- `{source}`: {len(found)} point(s); the first: {point.kind} "
                     f"{point.what} at line {point.line} of {build.removesuffix('-cov')}: "
                     f"`{point.text}`")
    (out / "holes.md").write_text("\n".join(lines) + "\n")
    print(f"\nwritten: {out / 'coverage.md'}, {out / 'holes.md'} "
          f"({sum(len(v) for v in holes.values())} line and branch points never reached)")
    return 0


