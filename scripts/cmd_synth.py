"""``mxe synth``: synthesize an MXE block for an FPGA family; write a JSON and Markdown report."""

import copy
import json
import statistics
from pathlib import Path

from mxe.cluster import add_cluster_arguments, check_cluster_arguments, run_jobs, synth_job
from mxe.config_args import CommandError, add_config_arguments, config_from_args
from mxe.hw.config import key_as_name
from mxe.hw.generate import TOPS
from mxe.synth.devices import FAMILIES
from mxe.synth.flow import (ROUTERS, SynthError, SynthOptions, default_top, markdown_report,
                             synthesize)

NAME = "synth"
HELP = "synthesize with Yosys (and place and route with nextpnr for Fmax); write a report"


def add_arguments(parser):
    add_config_arguments(parser)
    add_synth_arguments(parser)
    parser.add_argument("--top", default=None, metavar="TOP",
                        help=f"block to synthesize: {', '.join(sorted(TOPS))} "
                             f"(default: {default_top()})")
    parser.add_argument("-o", "--output", default="out/synth", metavar="DIR",
                        help="output directory (default: %(default)s); the tools' work files "
                             "go to DIR/work-<top>-<family>-<config>[-seed<S>]")
    parser.add_argument("--no-breakdown", action="store_true",
                        help="skip the hierarchical run that gives the per-block breakdown")
    add_cluster_arguments(parser, unit="seed of --seeds")


def add_synth_arguments(parser, *, families=False):
    """Flags shared by ``mxe synth`` and ``mxe sweep``."""
    group = parser.add_argument_group("synthesis")
    if families:
        group.add_argument("--families", default="ecp5", metavar="LIST",
                           help=f"comma-separated families from {', '.join(FAMILIES)} "
                                f"(default: %(default)s)")
    else:
        group.add_argument("--family", default="ecp5", metavar="FAMILY",
                           help=f"{', '.join(FAMILIES)} (default: %(default)s)")
    group.add_argument("--device", default=None,
                       help="part, e.g. LFE5U-85F, up5k, xc7a100t, GW1NR-9 (default per family: "
                            + ", ".join(f"{f.name} {f.default_device}"
                                        for f in FAMILIES.values()) + ")")
    group.add_argument("--speed", default=None, help="ECP5 speed grade 6, 7 or 8 (default 6)")
    group.add_argument("--freq", type=float, default=None, metavar="MHZ",
                       help="target clock for place and route (default per family: "
                            + ", ".join(f"{f.name} {f.default_freq_mhz:g}"
                                        for f in FAMILIES.values()) + ")")
    group.add_argument("--pnr", action="store_true",
                       help="place and route with nextpnr for Fmax (ecp5: out-of-context; "
                            "ice40: behind a pin wrapper)")
    group.add_argument("--place-only", action="store_true",
                       help="ecp5: place without routing (minutes for a whole engine, where "
                            "routing takes hours); Fmax is nextpnr's post-placement estimate "
                            "and the longest paths are ranked on the placement")
    group.add_argument("--no-dsp-pack", action="store_true",
                       help="ECP5: leave multiplier registers in the fabric (as Yosys maps "
                            "them); iCE40: leave each 8x8 product in an SB_MAC16 of its own")
    group.add_argument("--seed", type=int, default=1, help="nextpnr seed (default: 1)")
    group.add_argument("--seeds", type=int, default=1, metavar="N",
                       help="with --pnr: place and route each configuration with N nextpnr "
                            "seeds (--seed, --seed+1, ...) as separate jobs and report the "
                            "min, median and max Fmax; each seed's report is kept as "
                            "<report>-seed<S> (default: %(default)s)")
    group.add_argument("--router", default="router1", choices=ROUTERS,
                       help="nextpnr router: router1 gives the better Fmax, router2 finishes "
                            "big designs (a whole engine) much sooner (default: %(default)s)")
    group.add_argument("--work-dir", default=None, metavar="DIR",
                       help="where the tools' work directories go (default: in the output "
                            "directory; with --scheduler a temporary directory on the worker, "
                            "removed after a successful run: name a directory of a filesystem "
                            "the workers share, as an absolute path, to keep them)")


def options_from_args(args, family, *, breakdown, seed=None):
    """SynthOptions from the flags (``seed`` overrides ``--seed``); CommandError if bad."""
    try:
        return SynthOptions(family, device=args.device, speed=args.speed, freq_mhz=args.freq,
                            pnr=args.pnr, breakdown=breakdown, dsp_pack=not args.no_dsp_pack,
                            seed=args.seed if seed is None else seed, router=args.router,
                            place_only=args.place_only)
    except ValueError as exc:
        raise CommandError(str(exc)) from None


def seeds_from_args(args):
    """The nextpnr seeds ``--seed`` and ``--seeds`` ask for; CommandError if bad."""
    if args.seeds < 1:
        raise CommandError(f"--seeds must be at least 1, not {args.seeds}")
    if args.seeds > 1 and not (args.pnr or args.place_only):
        raise CommandError("--seeds are nextpnr seeds: add --pnr (or --place-only)")
    return [args.seed + i for i in range(args.seeds)]


def summarize_seeds(runs):
    """One report for a configuration placed and routed with several seeds.

    ``runs`` maps each seed to its report. The result is a copy of the report of the seed with
    the median Fmax (the lower of the two middle ones for an even count: a run that happened,
    with its own critical path) plus ``pnr_seeds``: ``seeds`` and ``fmax_mhz`` (one per seed, in
    seed order; ``None`` where a run has no Fmax), and the ``min``, ``median`` and ``max`` Fmax
    over the seeds that have one (``None`` if none has).
    """
    seeds = sorted(runs)
    fmax = [(runs[s].get("pnr") or {}).get("fmax_mhz") for s in seeds]
    values = sorted(f for f in fmax if f is not None)
    chosen = runs[seeds[0]]
    if values:
        middle = statistics.median_low(values)
        chosen = runs[next(s for s, f in zip(seeds, fmax) if f == middle)]
    summary = copy.deepcopy(chosen)
    summary["pnr_seeds"] = {
        "seeds": seeds,
        "fmax_mhz": fmax,
        "min": values[0] if values else None,
        "median": round(statistics.median(values), 2) if values else None,
        "max": values[-1] if values else None,
    }
    return summary


def report_stem(report):
    return f"{report['top']}-{report['family']}-{key_as_name(report['config_key'])}"


def write_report(report, out, *, suffix=""):
    """Write ``<stem><suffix>.json`` and ``.md`` into ``out``; return the JSON path."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    stem = report_stem(report) + suffix
    (out / f"{stem}.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / f"{stem}.md").write_text(markdown_report(report))
    return out / f"{stem}.json"


def run(args):
    config = config_from_args(args)
    top = args.top or default_top()
    if top not in TOPS:
        raise CommandError(f"--top must be one of {', '.join(sorted(TOPS))}, not {top!r}")
    seeds = seeds_from_args(args)
    check_cluster_arguments(args)
    opts = options_from_args(args, args.family, breakdown=not args.no_breakdown)
    work = work_root(args, args.output)
    name = f"work-{top}-{opts.family.name}-{config.dir_key()}"
    if len(seeds) == 1 and not args.scheduler:
        try:
            report = synthesize(config, opts, work / name, top=top)
        except SynthError as exc:
            raise CommandError(str(exc)) from None
        path = write_report(report, args.output)
        print(markdown_report(report))
        print(f"report: {path} and {path.with_suffix('.md')}")
        return 0

    # Several seeds, or a cluster: each seed is a job of mxe.cluster.
    suffix = (lambda seed: f"-seed{seed}") if len(seeds) > 1 else (lambda seed: "")
    breakdown = not args.no_breakdown
    jobs = [(seed, {"config": config.to_dict(), "top": top,
                    "options": options_from_args(args, args.family, breakdown=breakdown,
                                                 seed=seed).to_dict(),
                    "workdir": None if work is None else str(work / (name + suffix(seed)))})
            for seed in seeds]
    runs, errors = {}, []
    for seed, report, error in run_jobs(synth_job, jobs, workers=args.jobs,
                                        scheduler=args.scheduler, desc="mxe synth", unit="run"):
        if report is None:
            errors.append((seed, error))
        else:
            runs[seed] = report
            write_report(report, args.output, suffix=suffix(seed))
    if len(seeds) == 1 and errors:
        raise CommandError(errors[0][1])
    for seed, error in sorted(errors):
        print(f"failed: seed {seed}: {error}")
    if not runs:
        raise CommandError(f"all {len(seeds)} seeds failed")
    report = runs[seeds[0]] if len(seeds) == 1 else summarize_seeds(runs)
    path = write_report(report, args.output)
    print(markdown_report(report))
    print(f"report: {path} and {path.with_suffix('.md')}"
          + (f"; one per seed beside them ({report_stem(report)}-seed<S>)"
             if len(seeds) > 1 else ""))
    return 1 if errors else 0


def work_root(args, output):
    """The directory the work directories go into, or ``None`` for temporary ones on the
    workers (``--scheduler`` without ``--work-dir``)."""
    if args.work_dir:
        return Path(args.work_dir)
    return None if args.scheduler else Path(output)
