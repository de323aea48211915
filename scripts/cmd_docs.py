"""``mxe docs``: regenerate the README sections that come from the hardware's own tables.

The command table, the refusal rules, the error codes and the register map in README.md sit
between ``<!-- generated: NAME -->`` and ``<!-- end generated -->`` markers and are produced from
:mod:`mxe.hw.isa` and :mod:`mxe.hw.regmap`, the definitions the gateware is built from.
``--check`` (run by the test suite) fails when README.md is out of date.
"""

import re
from pathlib import Path

from mxe.config_args import CommandError
from mxe.hw.isa import LIMITS_DOC, ErrorCode, command_table_markdown
from mxe.hw.regmap import register_map_markdown

NAME = "docs"
HELP = "regenerate (or --check) the README sections generated from the command and register tables"

_SECTION = re.compile(r"(<!-- generated: (\w+) -->\n)(.*?)(<!-- end generated -->)", re.S)


def sections():
    """Section name -> generated Markdown."""
    errors = ["| code | name | meaning |", "|---|---|---|"]
    for code in ErrorCode:
        errors.append(f"| {code.value} | {code.name} | {_member_doc(code)} |")
    return {
        "commands": command_table_markdown() + "\n\n" + LIMITS_DOC,
        "errors": "\n".join(errors),
        "regmap": register_map_markdown(),
    }


def _member_doc(code):
    """The ``#:`` comment above an ErrorCode member, from the source of mxe.hw.isa."""
    import inspect
    from mxe.hw import isa
    lines = inspect.getsource(isa.ErrorCode).splitlines()
    for i, line in enumerate(lines):
        if line.strip().startswith(f"{code.name} ="):
            doc = []
            j = i - 1
            while j >= 0 and lines[j].strip().startswith("#:"):
                doc.insert(0, lines[j].strip()[2:].strip())
                j -= 1
            return " ".join(doc) or "no error"
    return ""


def render(text):
    generated = sections()
    unknown = []

    def replace(match):
        name = match.group(2)
        if name not in generated:
            unknown.append(name)
            return match.group(0)
        return f"{match.group(1)}{generated[name]}\n{match.group(4)}"

    result = _SECTION.sub(replace, text)
    if unknown:
        raise CommandError(f"unknown generated section(s): {', '.join(unknown)}")
    return result


def add_arguments(parser):
    parser.add_argument("readme", nargs="?", default="README.md", help="(default: %(default)s)")
    parser.add_argument("--check", action="store_true",
                        help="do not write; exit 1 if the file is out of date")


def run(args):
    path = Path(args.readme)
    if not path.exists():
        raise CommandError(f"{path} does not exist")
    text = path.read_text()
    new = render(text)
    if args.check:
        if new != text:
            print(f"{path} is out of date: run mxe docs {path}")
            return 1
        print(f"{path} is up to date")
        return 0
    path.write_text(new)
    print(f"{path} updated")
    return 0
