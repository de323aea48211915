"""``mxe export c``: the C headers and the portable C99 driver for firmware (docs/c-driver.md)."""

from mxe.c_export import export
from mxe.config_args import CommandError, add_config_arguments, config_from_args

NAME = "export"
HELP = ("write what firmware needs to drive the engine: `c` writes mxe_regs.h and mxe_cmds.h "
        "(generated from the gateware's tables) and the C99 driver mxe.h / mxe.c")


def add_arguments(parser):
    parser.add_argument("what", choices=("c",), help="what to export: c (headers and driver)")
    add_config_arguments(parser)
    parser.add_argument("-o", "--output", default="out/c", metavar="DIR",
                        help="output directory (default: %(default)s)")


def run(args):
    config = config_from_args(args)
    try:
        paths = export(config, args.output)
    except OSError as exc:
        raise CommandError(f"cannot write {args.output}: {exc}") from None
    for path in paths:
        print(path)
    return 0
