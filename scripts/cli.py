"""The ``mxe`` command.

Each sub-command lives in a module ``mxe/cmd_<name>.py`` (``scripts/cmd_<name>.py`` in the
source tree) that defines ``NAME``, ``HELP``, ``add_arguments(parser)`` and ``run(args) -> int``.
They are found here by name, so adding a command touches no other file.
"""

import argparse
import importlib
import os
import pkgutil
import sys
from pathlib import Path

from mxe.config_args import CommandError


def _commands():
    here = Path(__file__).parent
    for info in sorted(pkgutil.iter_modules([str(here)]), key=lambda i: i.name):
        if info.name.startswith("cmd_"):
            yield importlib.import_module(f"{__package__}.{info.name}")


def build_parser():
    """The ``mxe`` argument parser with every sub-command, without running anything (the docs
    tests parse each command the documentation shows with it)."""
    parser = argparse.ArgumentParser(
        prog="mxe", description="MXE matrix engine: generate, simulate, synthesize, benchmark.")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in _commands():
        sub = subparsers.add_parser(module.NAME, help=module.HELP, description=module.HELP)
        module.add_arguments(sub)
        sub.set_defaults(run=module.run)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        return args.run(args) or 0
    except CommandError as exc:
        print(f"mxe {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (`mxe board list | head`): not an error of the command. Point
        # stdout at nothing so the interpreter's final flush does not complain again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
