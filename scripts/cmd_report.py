"""``mxe report``: read synthesis reports back and print them side by side."""

import json
from pathlib import Path

from mxe.config_args import CommandError
from mxe.synth.flow import REPORT_VERSION, device_label, markdown_report, multiplier_label

NAME = "report"
HELP = "print synthesis reports (JSON from mxe synth or mxe sweep) side by side"


def add_arguments(parser):
    parser.add_argument("files", nargs="+", metavar="FILE",
                        help="report JSON files (or a sweep.json, or directories of reports)")
    parser.add_argument("--markdown", action="store_true",
                        help="print the full Markdown page of each report instead")


def load_reports(paths):
    """Reports from files, sweep files (lists) or directories; CommandError for bad input."""
    reports = []
    for name in paths:
        path = Path(name)
        files = sorted(path.glob("*.json")) if path.is_dir() else [path]
        if not files:
            raise CommandError(f"FILE {name}: a directory without report JSON files")
        for file in files:
            try:
                data = json.loads(file.read_text())
            except OSError as exc:
                raise CommandError(f"FILE {file}: {exc.strerror}") from None
            except json.JSONDecodeError as exc:
                raise CommandError(f"FILE {file}: not JSON ({exc.msg}, line {exc.lineno})") \
                    from None
            items = data if isinstance(data, list) else [data]
            for item in items:
                if not isinstance(item, dict) or item.get("mxe_report") != REPORT_VERSION:
                    raise CommandError(f"FILE {file}: not an MXE synthesis report (version "
                                       f"{REPORT_VERSION})")
                reports.append(item)
    return reports


#: Rows of the side-by-side view: (label, function of a report).
ROWS = [
    ("top", lambda r: r["top"]),
    ("array", lambda r: f"{r['config']['rows']}x{r['config']['cols']}"),
    ("operands", lambda r: f"{'s' if r['config']['signed'] else 'u'}"
                           f"{r['config']['input_width']}"),
    ("multiplier", multiplier_label),
    ("family", lambda r: r["family"]),
    ("device", device_label),
    ("LUTs", lambda r: r["resources"]["lut_equiv"]),
    ("FFs", lambda r: r["resources"]["ff"]),
    ("carry cells", lambda r: r["resources"]["carry"]),
    ("DSPs", lambda r: r["resources"]["dsp"]),
    ("BRAMs", lambda r: r["resources"]["bram"]),
    ("LUT RAM", lambda r: r["resources"]["lutram"]),
    ("LUTs/MAC", lambda r: round(r["resources"]["lut_equiv"] / r["macs"], 1)),
    ("fits", lambda r: "yes" if r["fit"]["fits"] else "NO"),
    ("Fmax MHz", lambda r: (r.get("pnr") or {}).get("fmax_mhz")),
    ("target MHz", lambda r: (r.get("pnr") or {}).get("target_mhz")),
    ("synth+pnr s", lambda r: r["runtime_s"]["total_s"]),
]


def _cell(value):
    if value is None:
        return "-"
    if isinstance(value, float) and value == int(value):
        return str(int(value))
    return str(value)


def side_by_side(reports):
    """Text table: one column per report, one row per quantity; then the notes."""
    columns = [[_cell(fn(r)) for _, fn in ROWS] for r in reports]
    label_w = max(len(label) for label, _ in ROWS)
    widths = [max(len(v) for v in col) for col in columns]
    lines = []
    for i, (label, _) in enumerate(ROWS):
        lines.append(f"{label:<{label_w}}  " + "  ".join(
            f"{col[i]:>{w}}" for col, w in zip(columns, widths)))
    for n, r in enumerate(reports, 1):
        notes = [r["fit"]["summary"]]
        if r.get("pnr"):
            notes.append(f"critical path: {r['pnr']['limited_by']}")
        notes += r.get("warnings", [])
        lines.append(f"[{n}] {r['config_key']} on {r['device']}: " + "; ".join(notes))
    return "\n".join(lines)


def run(args):
    reports = load_reports(args.files)
    if args.markdown:
        print("\n\n".join(markdown_report(r) for r in reports))
    else:
        print(side_by_side(reports))
    return 0
