"""The documentation's commands still work and its links still resolve.

Every command line in a fenced ``sh``/``console`` block of README.md and docs/**/*.md is checked:
``mxe ...`` parses with the real ``mxe`` argument parser (:func:`mxe.cli.build_parser`),
``python -m mxe.synth.depth ...`` with its own, and ``pytest ...`` names test files that exist
and selects at least one test from them. Console examples whose output is quick to reproduce are
run and their output compared. Every relative link points to a file that exists, and every
``#anchor`` to a heading of that file. README's test command is the one CI runs.
"""

import contextlib
import io
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from mxe.cli import build_parser

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("**/*.md"))]

#: Shell placeholders the docs use in commands, and a sample value that parses in their place.
PLACEHOLDERS = {
    "<config>": "4x4",
    "<seed>": "1",
    "<top>": "engine",
    "PORT": "4242",
    "HOST": "localhost",
    "BOARD": "ulx3s-85f",
    "NAME": "small",
}

#: Console examples run for real (fast, no simulator or synthesis): their output must match.
RUN_AND_COMPARE = {"mxe generate --rows 0", "mxe generate --preset small -o out/"}

_FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```", re.S | re.M)
_SHELL_LANGUAGES = {"sh", "console", "bash", "shell"}
_ENV = re.compile(r"^[A-Z_][A-Z0-9_]*=\S*$")


def _code_blocks(path):
    """(language, first line number, text) of each fenced block of a Markdown file."""
    text = path.read_text()
    for match in _FENCE.finditer(text):
        yield match.group(1), text.count("\n", 0, match.start(2)) + 1, match.group(2)


def _shell_commands():
    """(path, line, command line, output lines) for every command of a shell block."""
    found = []
    for path in DOCS:
        for language, first, body in _code_blocks(path):
            if language not in _SHELL_LANGUAGES:
                continue
            lines = body.splitlines()
            i = 0
            while i < len(lines):
                line, number = lines[i], first + i
                i += 1
                if language == "console":
                    if not line.startswith("$ "):
                        continue
                    line = line[2:]
                while line.endswith("\\") and i < len(lines):
                    line, i = line[:-1] + " " + lines[i].strip(), i + 1
                output = []
                if language == "console":
                    while i < len(lines) and not lines[i].startswith("$ "):
                        output.append(lines[i])
                        i += 1
                # `a && b`: each command on its own (README's set-up lines end in mxe, pytest).
                for segment in re.split(r"\s*(?:&&|;|\|)\s*", line.strip()):
                    if segment:
                        found.append((path, number, segment, output))
    return found


COMMANDS = _shell_commands()


def _argv(line):
    """The words of a command line after its environment assignments, placeholders replaced."""
    words = shlex.split(line, comments=True)
    while words and _ENV.match(words[0]):
        words.pop(0)
    if words and words[0].startswith(".venv/bin/"):     # the set-up commands' spelling
        words[0] = words[0].removeprefix(".venv/bin/")
    out = []
    for word in words:
        word = PLACEHOLDERS.get(word, word)
        for placeholder, sample in PLACEHOLDERS.items():
            if placeholder.startswith("<"):          # <name> may sit inside a path
                word = word.replace(placeholder, sample)
        out.append(word)
    return out


def _cases(program):
    cases = [(path, number, line, output) for path, number, line, output in COMMANDS
             if _argv(line)[:len(program)] == program]
    return pytest.mark.parametrize(
        "path, number, line, output", cases,
        ids=[f"{path.relative_to(ROOT)}:{number}" for path, number, *_ in cases])


def test_docs_show_commands():
    """The extraction works: the docs show many mxe commands, on every page that has blocks."""
    mxe = [c for c in COMMANDS if _argv(c[2])[:1] == ["mxe"]]
    assert len(mxe) >= 30, mxe
    assert {path.name for path, *_ in mxe} >= {"README.md", "synthesis.md", "boards.md"}


@_cases(["mxe"])
def test_mxe_command_parses(path, number, line, output):
    parser = build_parser()
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr):
        try:
            args = parser.parse_args(_argv(line)[1:])
        except SystemExit as exc:
            pytest.fail(f"{path.name}:{number}: `{line}` does not parse (exit {exc.code}):\n"
                        f"{stderr.getvalue()}")
    assert callable(args.run)


@_cases(["python", "-m", "mxe.synth.depth"])
def test_depth_command_parses(path, number, line, output):
    from mxe.synth import depth
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr):
        try:
            depth.main(_argv(line)[3:])
        except FileNotFoundError:
            pass    # parsed, then looked for the netlist of a synthesis run that is not here
        except SystemExit as exc:
            pytest.fail(f"{path.name}:{number}: `{line}` does not parse:\n{stderr.getvalue()}")


@_cases(["pytest"])
def test_pytest_command_selects_tests(path, number, line, output):
    args = _argv(line)[1:]
    files = [a for a in args if a.startswith("tests/")]
    for name in files:
        assert (ROOT / name.split("::")[0]).exists(), f"{path.name}:{number}: no {name}"
    if not files:
        # The whole suite (`pytest -n auto`, `pytest -m slow`): only its options are checked.
        known = {"-n", "-m", "-k", "-s", "-x", "-q", "-v"}
        flags = [a for a in args if a.startswith("-")]
        assert set(flags) <= known, f"{path.name}:{number}: unknown option in `{line}`"
        return
    # Collect only (nothing is built or simulated): exit 0 means at least one test selected.
    collect, rest = [], list(args)
    while rest:
        arg = rest.pop(0)
        if arg == "-n":             # xdist's workers: no use for collecting
            rest.pop(0)
        elif arg != "-s":
            collect.append(arg)
    result = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q",
                             "-p", "no:cacheprovider", *collect],
                            cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, (f"{path.name}:{number}: `{line}` selects no test:\n"
                                    f"{result.stdout[-2000:]}{result.stderr[-2000:]}")


@pytest.mark.parametrize("line", sorted(RUN_AND_COMPARE))
def test_console_example_output(line, tmp_path):
    shown = [(path, output) for path, _, command, output in COMMANDS if command == line]
    assert shown, f"no console example `{line}` in the docs"
    result = subprocess.run([sys.executable, "-m", "mxe.cli", *_argv(line)[1:]],
                            cwd=tmp_path, capture_output=True, text=True, timeout=300)
    got = (result.stdout + result.stderr).strip().splitlines()
    for path, output in shown:
        assert got == [o for o in output if o.strip()], f"{path.name}: `{line}` prints {got}"


def test_readme_gives_the_command_ci_runs():
    """.ci/run runs exactly the command README gives after "Run the tests"."""
    readme = (ROOT / "README.md").read_text()
    after = readme[readme.index("Run the tests"):]
    block = next(_FENCE.finditer(after)).group(2).strip()
    assert "\n" not in block
    ci = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert block in ci, f"README's test command `{block}` is not a line of .ci/run"


# -- links --

_LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")
_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")


def _prose(text):
    """The text outside fenced blocks and inline code."""
    text = _FENCE.sub(lambda m: "\n" * m.group(0).count("\n"), text)
    return re.sub(r"`[^`\n]*`", "", text)


def slug(heading):
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"<[^>]+>", "", heading).replace("`", "").strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path):
    """Every anchor of a Markdown file's headings (duplicates numbered as GitHub does)."""
    seen = {}
    result = set()
    for line in _FENCE.sub("", path.read_text()).splitlines():
        match = _HEADING.match(line)
        if match:
            base = slug(match.group(2))
            n = seen.get(base, 0)
            seen[base] = n + 1
            result.add(base if n == 0 else f"{base}-{n}")
    return result


def test_slug_matches_github():
    assert slug("Performance and `mxe bench`") == "performance-and-mxe-bench"
    assert slug("When GEMM_C refuses a descriptor") == "when-gemm_c-refuses-a-descriptor"
    assert slug("The whole engine, routed") == "the-whole-engine-routed"


def _links():
    for path in DOCS:
        for target in _LINK.findall(_prose(path.read_text())):
            if not re.match(r"^[a-z][a-z0-9+.-]*:", target):     # http:, https:, mailto:
                yield path, target


@pytest.mark.parametrize("path, target", list(_links()),
                         ids=lambda v: str(v.relative_to(ROOT)) if isinstance(v, Path) else v)
def test_relative_link_resolves(path, target):
    file, _, anchor = target.partition("#")
    dest = (path.parent / file).resolve() if file else path
    assert dest.exists(), f"{path.relative_to(ROOT)}: link to missing {target}"
    if anchor and dest.suffix == ".md":
        assert anchor in anchors(dest), (f"{path.relative_to(ROOT)}: no heading #{anchor} in "
                                         f"{dest.relative_to(ROOT)}")


# -- no commit hashes --

_HASH = re.compile(r"(?<![\w./-])(?=[0-9a-f]*[a-f])(?=[0-9a-f]*[0-9])[0-9a-f]{7,40}(?![\w/-])")


def test_no_commit_hashes():
    """User docs describe revisions in words: a hash means nothing to a reader of a release."""
    for path in DOCS:
        for number, line in enumerate(path.read_text().splitlines(), 1):
            assert not _HASH.search(line), f"{path.relative_to(ROOT)}:{number}: {line}"
    assert _HASH.search("on 6b6c33b, 6409 late") and _HASH.search("(a44d907)")
    assert not _HASH.search("0x4D5845 1073741824 deadline")
