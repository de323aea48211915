"""``mxe sweep``: synthesize many array sizes (and other parameters) across families in parallel;
write a CSV, a Markdown table and PNG plots of resources per MAC and Fmax against array size.

Every run is a job of :mod:`mxe.cluster`: on a local Dask cluster of the machine's cores, or on
an existing cluster (``--scheduler``). With ``--seeds N`` each configuration is placed and routed
N times, each seed a job of its own (Yosys runs again in each: a job stays self-contained, and
nextpnr is most of a routed run's time), and the tables give min, median and max Fmax.
"""

import csv
import itertools
import json
from pathlib import Path

from mxe.cluster import add_cluster_arguments, check_cluster_arguments, run_jobs, synth_job
from mxe.config_args import CommandError, add_config_arguments, config_from_args
from mxe.cmd_synth import (add_synth_arguments, options_from_args, seeds_from_args,
                           summarize_seeds, work_root, write_report)
from mxe.hw.generate import TOPS
from mxe.synth.flow import TABLE_COLUMNS, default_top, markdown_table

NAME = "sweep"
HELP = ("synthesize a range of array sizes across families (as Dask jobs: on this machine's "
        "cores or on a cluster with --scheduler); CSV, Markdown table and plots")

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

#: With ``--seeds``: what replaces ``fmax_mhz`` in the CSV and ``Fmax MHz`` in the table.
SEED_CSV_COLUMNS = [
    ("seeds", lambda r: len(r["pnr_seeds"]["seeds"])),
    ("fmax_min_mhz", lambda r: r["pnr_seeds"]["min"]),
    ("fmax_median_mhz", lambda r: r["pnr_seeds"]["median"]),
    ("fmax_max_mhz", lambda r: r["pnr_seeds"]["max"]),
]
SEED_TABLE_COLUMNS = [
    ("seeds", lambda r: len(r["pnr_seeds"]["seeds"])),
    ("Fmax min", lambda r: r["pnr_seeds"]["min"]),
    ("Fmax median", lambda r: r["pnr_seeds"]["median"]),
    ("Fmax max", lambda r: r["pnr_seeds"]["max"]),
]


def _with_seeds(columns, name, seed_columns):
    """``columns`` with the entry ``name`` replaced by ``seed_columns``."""
    i = [n for n, _ in columns].index(name)
    return columns[:i] + seed_columns + columns[i + 1:]


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
    parser.add_argument("-o", "--output", default="out/sweep", metavar="DIR",
                        help="output directory (default: %(default)s): sweep.csv, sweep.md, "
                             "sweep.png, sweep.json, reports/ and the tools' work/ (written here "
                             "by this machine, also when the jobs ran on a cluster)")
    add_cluster_arguments(parser, unit="run")


def write_csv(reports, path, columns=CSV_COLUMNS):
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow([name for name, _ in columns])
        for r in reports:
            writer.writerow([fn(r) for _, fn in columns])


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
        seeded = [r for r in rs if (r.get("pnr_seeds") or {}).get("median")]
        if seeded:
            # The median over the seeds, a bar from min to max.
            median = [r["pnr_seeds"]["median"] for r in seeded]
            spread = [[m - r["pnr_seeds"]["min"] for m, r in zip(median, seeded)],
                      [r["pnr_seeds"]["max"] - m for m, r in zip(median, seeded)]]
            ax_fmax.errorbar([r["macs"] for r in seeded], median, yerr=spread, fmt="o-",
                             capsize=4, label=f"{label} (median, min to max)")
            continue
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
    check_cluster_arguments(args)
    seeds = seeds_from_args(args)
    if args.device and len(families) > 1:
        raise CommandError("--device needs a single family in --families")

    out = Path(args.output)
    work = work_root(args, out / "work")
    suffix = (lambda seed: f"-seed{seed}") if len(seeds) > 1 else (lambda seed: "")
    jobs = []
    for fam, n, width, mult in itertools.product(families, sizes, widths, mults):
        try:
            config = base.replace(rows=n, cols=n, input_width=width, multiplier=mult)
        except (TypeError, ValueError) as exc:
            raise CommandError(str(exc)) from None
        for seed in seeds:
            opts = options_from_args(args, fam, breakdown=False, seed=seed)
            workdir = None if work is None else \
                str(work / f"{top}-{fam}-{config.dir_key()}{suffix(seed)}")
            tag = (f"{config.key()} on {opts.family.name}", seed)
            jobs.append((tag, {"config": config.to_dict(), "options": opts.to_dict(),
                               "top": top, "workdir": workdir}))

    runs, errors = {}, []
    for (name, seed), report, error in run_jobs(synth_job, jobs, workers=args.jobs,
                                                scheduler=args.scheduler, desc="mxe sweep",
                                                unit="run"):
        if report is not None:
            runs.setdefault(name, {})[seed] = report
            write_report(report, out / "reports", suffix=suffix(seed))
        else:
            errors.append(f"{name}{f' seed {seed}' if len(seeds) > 1 else ''}: {error}")
    if len(seeds) > 1:
        reports = [summarize_seeds(by_seed) for by_seed in runs.values()]
        for report in reports:
            write_report(report, out / "reports")
        csv_columns = _with_seeds(CSV_COLUMNS, "fmax_mhz", SEED_CSV_COLUMNS)
        table_columns = _with_seeds(TABLE_COLUMNS, "Fmax MHz", SEED_TABLE_COLUMNS)
    else:
        reports = [by_seed[seeds[0]] for by_seed in runs.values()]
        csv_columns, table_columns = CSV_COLUMNS, TABLE_COLUMNS
    reports.sort(key=lambda r: (r["family"], r["config"]["input_width"],
                                r["config"]["multiplier"], r["macs"]))
    out.mkdir(parents=True, exist_ok=True)
    write_csv(reports, out / "sweep.csv", csv_columns)
    table = markdown_table(reports, table_columns)
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
