"""Command-line flags for :class:`~mxe.hw.config.EngineConfig`: ``--preset`` and one flag per
field, generated from the dataclass so a new parameter gets its flag without editing this file."""

import argparse
import dataclasses

from mxe.hw.config import PRESETS, EngineConfig


__all__ = ["CommandError", "SWITCHES", "parse_bool", "add_config_arguments",
           "config_from_args"]


class CommandError(Exception):
    """A user error: ``mxe`` prints it as one line and exits with status 2, no traceback."""


#: The EngineConfig parameters that are switches (true/false on the command line).
SWITCHES = frozenset(field.name for field in dataclasses.fields(EngineConfig)
                     if field.type in (bool, "bool"))


def parse_bool(text):
    lowered = text.lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, not {text!r}")


def add_config_arguments(parser, *, default_preset="default"):
    group = parser.add_argument_group("engine configuration",
                                      "start from --preset, then override single parameters")
    group.add_argument("--preset", choices=sorted(PRESETS), default=default_preset,
                       help=f"named configuration (default: {default_preset})")
    group.add_argument("--config", metavar="JSON",
                       help="start from a configuration JSON file (as written by mxe generate)")
    for field in dataclasses.fields(EngineConfig):
        flag = "--" + field.name.replace("_", "-")
        kind = parse_bool if field.name in SWITCHES else (
            int if field.type in (int, "int") else str)
        group.add_argument(flag, dest=f"cfg_{field.name}", type=kind, metavar=field.name.upper(),
                           help=f"(preset value if omitted; default preset: {field.default})")


def config_from_args(args):
    """The EngineConfig the flags describe; a bad value raises CommandError naming it."""
    changes = {field.name: getattr(args, f"cfg_{field.name}")
               for field in dataclasses.fields(EngineConfig)
               if getattr(args, f"cfg_{field.name}") is not None}
    try:
        if args.config:
            with open(args.config) as f:
                base = EngineConfig.from_json(f.read())
        else:
            base = PRESETS[args.preset]
        return base.replace(**changes)
    except (TypeError, ValueError, OSError) as exc:
        raise CommandError(str(exc)) from None
