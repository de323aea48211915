"""``mxe sweep``: synthesize many array sizes (and other parameters) across families in parallel;
write a CSV, a Markdown table and PNG plots of resources per MAC and Fmax against array size."""

import concurrent.futures
import csv
import itertools
import json
import os
from pathlib import Path

from mxe.config_args import CommandError, add_config_arguments, config_from_args
from mxe.cmd_synth import add_synth_arguments, options_from_args, write_report
from mxe.hw.generate import TOPS
from mxe.synth.flow import SynthError, default_top, markdown_table, synthesize

NAME = "sweep"
HELP = "synthesize a range of array sizes across families; CSV, Markdown table and plots"

#: CSV columns: (name, function of a report).
CSV_COLUMNS = [
    ("top", lambda r: r["top"]),
    ("family", lambda r: r["family"]),
    ("device", lambda r: r["device"]),
    ("rows", lambda r: r["config"]["rows"]),
    ("cols", lambda r: r["config"]["cols"]),
    ("macs", lambda r: r["macs"]),
    ("input_width", lambda r: r["config"]["input_width"]),
    ("multiplier", lambda r: r["config"]["multiplier"]),
    ("dsp_budget", lambda r: r["config"]["dsp_budget"]),
    ("luts", lambda r: r["resources"]["lut_equiv"]),
    ("ffs", lambda r: r["resources"]["ff"]),
    ("carry", lambda r: r["resources"]["carry"]),
    ("dsps", lambda r: r["resources"]["dsp"]),
    ("brams", lambda r: r["resources"]["bram"]),
    ("lutram", lambda r: r["resources"]["lutram"]),
    ("luts_per_mac", lambda r: round(r["resources"]["lut_equiv"] / r["macs"], 2)),
    ("ffs_per_mac", lambda r: round(r["resources"]["ff"] / r["macs"], 2)),
    ("fmax_mhz", lambda r: (r.get("pnr") or {}).get("fmax_mhz")),
    ("limited_by", lambda r: (r.get("pnr") or {}).get("limited_by")),
    ("fits", lambda r: r["fit"]["fits"]),
    ("fit_summary", lambda r: r["fit"]["summary"]),
    ("runtime_s", lambda r: r["runtime_s"]["total_s"]),
]


def _int_list(text, name):
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise CommandError(f"--{name} must be comma-separated integers, not {text!r}") from None
    if not values:
        raise CommandError(f"--{name} must name at least one value")
    return values


def add_arguments(parser):
    add_config_arguments(parser, default_preset="small")
    add_synth_arguments(parser, families=True)
    parser.add_argument("--sizes", default="4,8,12,16", metavar="LIST",
                        help="square array sizes N (NxN), comma-separated (default: %(default)s)")
    parser.add_argument("--input-widths", default=None, metavar="LIST",
                        help="operand widths to sweep too, comma-separated (default: the config's)")
    parser.add_argument("--multipliers", default=None, metavar="LIST",
                        help="multiplier kinds to sweep too: dsp,lut,auto (default: the config's)")
    parser.add_argument("--top", default=None, metavar="TOP",
                        help=f"block: {', '.join(sorted(TOPS))} (default: {default_top()})")
    parser.add_argument("-j", "--jobs", type=int, default=None,
                        help="parallel runs (default: the machine's cores)")
    parser.add_argument("-o", "--output", default="out/sweep", metavar="DIR",
                        help="output directory (default: %(default)s)")


def _one(job):
    config, opts, workdir, top = job
    try:
        return synthesize(config, opts, workdir, top=top), None
    except (SynthError, OSError) as exc:
        return None, f"{config.key()} on {opts.family.name}: {exc}"


def write_csv(reports, path):
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow([name for name, _ in CSV_COLUMNS])
        for r in reports:
            writer.writerow([fn(r) for _, fn in CSV_COLUMNS])


def plot(reports, path):
    """Two panels: LUTs, FFs and DSPs per MAC, and Fmax, against array size (MACs)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_res, ax_fmax) = plt.subplots(1, 2, figsize=(11, 4.2))
    groups = {}
    for r in reports:
        key = (r["family"], r["config"]["input_width"], r["config"]["multiplier"])
        groups.setdefault(key, []).append(r)
    for (fam, width, mult), rs in sorted(groups.items()):
        rs.sort(key=lambda r: r["macs"])
        macs = [r["macs"] for r in rs]
        label = f"{fam} int{width} {mult}"
        ax_res.plot(macs, [r["resources"]["lut_equiv"] / r["macs"] for r in rs], "o-",
                    label=f"{label} LUTs")
        ax_res.plot(macs, [r["resources"]["ff"] / r["macs"] for r in rs], "s--",
                    label=f"{label} FFs")
        ax_res.plot(macs, [r["resources"]["dsp"] / r["macs"] for r in rs], "^:",
                    label=f"{label} DSPs")
        timed = [(r["macs"], r["pnr"]["fmax_mhz"]) for r in rs
                 if r.get("pnr") and r["pnr"].get("fmax_mhz")]
        if timed:
            ax_fmax.plot(*zip(*timed), "o-", label=label)
    for ax in (ax_res, ax_fmax):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("MACs (rows x cols)")
        ax.grid(True, alpha=0.3)
    ax_res.set_yscale("log")
    ax_res.set_ylabel("resources per MAC")
    ax_res.set_title("Resources per MAC")
    ax_res.legend(fontsize=7)
    ax_fmax.set_ylabel("Fmax (MHz)")
    ax_fmax.set_title("Fmax (nextpnr)")
    if ax_fmax.lines:
        ax_fmax.legend(fontsize=7)
        ax_fmax.set_ylim(bottom=0)
    else:
        ax_fmax.text(0.5, 0.5, "no place and route\n(run with --pnr)", ha="center",
                     va="center", transform=ax_fmax.transAxes)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run(args):
    from tqdm import tqdm

    base = config_from_args(args)
    top = args.top or default_top()
    if top not in TOPS:
        raise CommandError(f"--top must be one of {', '.join(sorted(TOPS))}, not {top!r}")
    sizes = _int_list(args.sizes, "sizes")
    widths = _int_list(args.input_widths, "input-widths") if args.input_widths else \
        [base.input_width]
    mults = [m.strip() for m in args.multipliers.split(",")] if args.multipliers else \
        [base.multiplier]
    families = [f.strip() for f in args.families.split(",") if f.strip()]
    if args.jobs is not None and args.jobs < 1:
        raise CommandError(f"--jobs must be at least 1, not {args.jobs}")
    jobs_n = args.jobs or os.cpu_count() or 1
    if args.device and len(families) > 1:
        raise CommandError("--device needs a single family in --families")

    out = Path(args.output)
    jobs = []
    for fam, n, width, mult in itertools.product(families, sizes, widths, mults):
        opts = options_from_args(args, fam, breakdown=False)
        try:
            config = base.replace(rows=n, cols=n, input_width=width, multiplier=mult)
        except (TypeError, ValueError) as exc:
            raise CommandError(str(exc)) from None
        jobs.append((config, opts, out / "work" / f"{top}-{fam}-{config.key()}", top))

    reports, errors = [], []
    with concurrent.futures.ProcessPoolExecutor(max_workers=jobs_n) as pool:
        futures = [pool.submit(_one, job) for job in jobs]
        for future in tqdm(concurrent.futures.as_completed(futures), total=len(futures),
                           desc="mxe sweep", unit="run"):
            report, error = future.result()
            if report is not None:
                reports.append(report)
                write_report(report, out / "reports")
            else:
                errors.append(error)
    reports.sort(key=lambda r: (r["family"], r["config"]["input_width"],
                                r["config"]["multiplier"], r["macs"]))
    out.mkdir(parents=True, exist_ok=True)
    write_csv(reports, out / "sweep.csv")
    table = markdown_table(reports)
    (out / "sweep.md").write_text("# MXE sweep\n\n" + table)
    (out / "sweep.json").write_text(json.dumps(reports, indent=2) + "\n")
    if reports:
        plot(reports, out / "sweep.png")
    print(table)
    for r in reports:
        if not r["fit"]["fits"]:
            print(f"{r['config_key']} on {r['device']}: {r['fit']['summary']}")
    for error in errors:
        print(f"failed: {error}")
    print(f"wrote {out / 'sweep.csv'}, {out / 'sweep.md'}, {out / 'sweep.png'}, "
          f"reports in {out / 'reports'}")
    return 1 if errors else 0
