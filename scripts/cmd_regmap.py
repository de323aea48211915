"""``mxe regmap``: print the register map as Markdown, or write it to a file."""

from pathlib import Path

from mxe.config_args import CommandError, add_config_arguments, config_from_args
from mxe.hw.regmap import register_map_markdown

NAME = "regmap"
HELP = "print the CSR register map (Markdown), with the configuration values of a preset"


def add_arguments(parser):
    add_config_arguments(parser)
    parser.add_argument("-o", "--output", metavar="FILE",
                        help="write the Markdown to FILE instead of printing it")


def run(args):
    text = register_map_markdown(config_from_args(args))
    if args.output:
        try:
            Path(args.output).write_text(text)
        except OSError as exc:
            raise CommandError(f"cannot write {args.output}: {exc}") from None
        print(args.output)
    else:
        print(text, end="")
    return 0
