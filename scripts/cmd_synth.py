"""``mxe synth``: synthesize an MXE block for an FPGA family; write a JSON and Markdown report."""

import json
from pathlib import Path

from mxe.config_args import CommandError, add_config_arguments, config_from_args
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
                             "go to DIR/work-<family>-<config>")
    parser.add_argument("--no-breakdown", action="store_true",
                        help="skip the hierarchical run that gives the per-block breakdown")


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
                       help="ECP5: leave multiplier registers in the fabric (as Yosys maps them)")
    group.add_argument("--seed", type=int, default=1, help="nextpnr seed (default: 1)")
    group.add_argument("--router", default="router1", choices=ROUTERS,
                       help="nextpnr router: router1 gives the better Fmax, router2 finishes "
                            "big designs (a whole engine) much sooner (default: %(default)s)")


def options_from_args(args, family, *, breakdown):
    try:
        return SynthOptions(family, device=args.device, speed=args.speed, freq_mhz=args.freq,
                            pnr=args.pnr, breakdown=breakdown, dsp_pack=not args.no_dsp_pack,
                            seed=args.seed, router=args.router, place_only=args.place_only)
    except ValueError as exc:
        raise CommandError(str(exc)) from None


def report_stem(report):
    return f"{report['top']}-{report['family']}-{report['config_key']}"


def write_report(report, out):
    """Write ``<stem>.json`` and ``<stem>.md`` into ``out``; return the JSON path."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    stem = report_stem(report)
    (out / f"{stem}.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / f"{stem}.md").write_text(markdown_report(report))
    return out / f"{stem}.json"


def run(args):
    config = config_from_args(args)
    top = args.top or default_top()
    if top not in TOPS:
        raise CommandError(f"--top must be one of {', '.join(sorted(TOPS))}, not {top!r}")
    opts = options_from_args(args, args.family, breakdown=not args.no_breakdown)
    workdir = Path(args.output) / f"work-{top}-{opts.family.name}-{config.key()}"
    try:
        report = synthesize(config, opts, workdir, top=top)
    except SynthError as exc:
        raise CommandError(str(exc)) from None
    path = write_report(report, args.output)
    print(markdown_report(report))
    print(f"report: {path} and {path.with_suffix('.md')}")
    return 0
