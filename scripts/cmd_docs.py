"""``mxe docs``: regenerate the documentation sections that come from the hardware's own tables.

The command table, the refusal rules, the error codes and the register map in
docs/programming.md (or any Markdown file named on the command line) sit between
``<!-- generated: NAME -->`` and ``<!-- end generated -->`` markers and are produced from
:mod:`mxe.hw.isa` and :mod:`mxe.hw.regmap`, the definitions the gateware is built from.
``--check`` (run by the test suite) fails when a file is out of date.
"""

import re
from pathlib import Path

from mxe.config_args import CommandError
from mxe.hw.isa import LIMITS_DOC, ErrorCode, command_table_markdown
from mxe.hw.regmap import register_map_markdown

NAME = "docs"
HELP = ("regenerate (or --check) the documentation sections generated from the command and "
        "register tables (default: docs/programming.md)")

#: The files that hold generated sections, relative to the repository root.
DEFAULT_FILES = ("docs/programming.md",)

_SECTION = re.compile(r"(<!-- generated: (\w+) -->\n)(.*?)(<!-- end generated -->)", re.S)
#: Sphinx cross-reference roles in the docstrings the tables are built from.
_ROLE = re.compile(r":(?:class|data|func|mod|attr|meth):`~?([^`]+)`")


def sections():
    """Section name -> generated Markdown."""
    errors = ["| code | name | meaning |", "|---|---|---|"]
    for code in ErrorCode:
        errors.append(f"| {code.value} | {code.name} | {_markdown(_member_doc(code))} |")
    return {
        "commands": command_table_markdown() + "\n\n" + LIMITS_DOC,
        "errors": "\n".join(errors),
        "regmap": _embedded(register_map_markdown()),
    }


def _markdown(doc):
    """A docstring's reST spellings as Markdown: ``x`` and :class:`x` become `x`."""
    doc = doc.replace(":data:`LIMITS_DOC`", "the refusal rules under the command table")
    doc = doc.replace(":class:`Opcode`", "the command table's opcodes")
    doc = _ROLE.sub(lambda m: f"`{m.group(1).rsplit('.', 1)[-1]}`", doc)
    return doc.replace("``", "`")


def _embedded(text):
    """``mxe regmap``'s page as a section of a longer page: without its title, its headings
    one level down."""
    lines = text.splitlines()
    if lines and lines[0].startswith("# "):
        lines = lines[1:]
        while lines and not lines[0].strip():
            lines = lines[1:]
    body = "\n".join("#" + line if line.startswith("## ") else line for line in lines)
    return body + "\n" if text.endswith("\n") else body


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
    parser.add_argument("files", nargs="*", metavar="FILE", default=list(DEFAULT_FILES),
                        help="Markdown files with generated sections (default: %(default)s)")
    parser.add_argument("--check", action="store_true",
                        help="do not write; exit 1 if a file is out of date")


def run(args):
    paths = [Path(name) for name in args.files]
    for path in paths:
        if not path.exists():
            raise CommandError(f"{path} does not exist")
    stale = 0
    for path in paths:
        text = path.read_text()
        new = render(text)
        if args.check:
            if new != text:
                print(f"{path} is out of date: run mxe docs {path}")
                stale += 1
            else:
                print(f"{path} is up to date")
        elif new != text:
            path.write_text(new)
            print(f"{path} updated")
        else:
            print(f"{path} is up to date")
    return 1 if stale else 0
