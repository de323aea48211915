"""Verilator line, branch and toggle coverage of the gateware, as the test benches reach it.

With ``MXE_COVERAGE=1`` the bench runner (:func:`mxe.sim.runner.run_bench`) builds Verilator
models with ``--coverage-line --coverage-toggle`` from Verilog that keeps Amaranth's source
locations, and folds each run's ``coverage.dat`` into its build directory (:func:`fold`): the
point names once, the hit counts summed over runs. :func:`collect` reads every coverage build,
:func:`summarize` gives per-block and per-file figures, and every point that was never hit,
mapped back to the line of ``hw/`` that made it where the Verilog says (the ``src`` attribute of
the condition's signal, or of the enclosing ``case`` expression).

Points Verilator counts but the gateware does not have are left out: the empty ``if`` that
Yosys puts at the top of every ``always @*`` block to run it once at time zero.
"""

import gzip
import hashlib
import json
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np


__all__ = ["fold", "collect", "summarize", "Point", "KEYS_FILE", "COUNTS_FILE"]

KEYS_FILE = "coverage-points.json.gz"
COUNTS_FILE = "coverage-counts.npy"

_SRC = re.compile(r'\(\* src = "([^"]+)" \*\)')
_DECL = re.compile(r"^\s*(?:input|output|inout|wire|reg)\b[^;]*?(\\\S+|\w+)\s*(?:=[^;]*)?;")
_ASSIGN = re.compile(r"^\s*assign\s+(\\\S+|\w+)\s")
_IF = re.compile(r"\bif \((\\\S+|\w+)\s*\)")
_CASE = re.compile(r"^\s*casez? \((\\\S+|\w+)")
_TRIGGER = "verilog_backend.cc"


def _parse_dat(path):
    """``(keys, counts)`` of a Verilator ``coverage.dat``: each point's description (without
    its file name) and its count."""
    keys, counts = [], []
    with open(path, encoding="latin-1") as f:
        for line in f:
            if not line.startswith("C '"):
                continue
            body, count = line[3:].rstrip("\n").rsplit("' ", 1)
            # The file is the build's Verilog, the same for every point of a build.
            keys.append("\x01".join(kv for kv in body.split("\x01") if kv and kv[0] != "f"))
            counts.append(int(count))
    return keys, np.array(counts, dtype=np.int64)


def fold(build_dir, dat_path):
    """Add a run's ``coverage.dat`` to the build's sums, and delete it (a run's file is tens
    of megabytes; the sums are one number per point)."""
    build_dir, dat_path = Path(build_dir), Path(dat_path)
    keys, counts = _parse_dat(dat_path)
    digest = hashlib.sha256("\n".join(keys).encode()).hexdigest()
    keys_path, counts_path = build_dir / KEYS_FILE, build_dir / COUNTS_FILE
    if keys_path.exists() and counts_path.exists():
        with gzip.open(keys_path, "rt") as f:
            stored = json.load(f)
        if stored["digest"] == digest:
            counts = counts + np.load(counts_path)
    with gzip.open(keys_path, "wt") as f:
        json.dump({"digest": digest, "keys": keys}, f)
    np.save(counts_path, counts)
    dat_path.unlink()


@dataclass(frozen=True)
class Point:
    """One coverage point: its kind (``line``, ``branch``, ``toggle``), block (Verilog module
    path below the top, e.g. ``dma.rd_gen``), Verilog line, what (Verilator's object name: the
    statement kind, or the toggled signal and edge), the gateware line it maps to, and the
    Verilog line's text."""
    kind: str
    block: str
    line: int
    what: str
    source: str
    text: str = ""


class _Verilog:
    """Source locations of a generated Verilog file: per line, the ``hw/`` line of the
    signal it tests (``if``) or of the ``case`` it belongs to."""

    def __init__(self, path, root):
        self.lines = Path(path).read_text().splitlines()
        self.root = root
        self.signal_src = {}          # (module, signal) -> "hw/file.py:line"
        self.module_file = {}         # module -> "hw/file.py", where its elaborate() is
        self.module_of = []           # per line: the module name
        module, pending = "", None
        for text in self.lines:
            if text.startswith("module "):
                module = text.split()[1].split("(")[0].lstrip("\\")
                if pending:
                    self.module_file[module] = pending.rpartition(":")[0]
            self.module_of.append(module)
            src = _SRC.search(text)
            if text.lstrip().startswith("(*"):         # attributes of the next line
                if src:
                    pending = self._local(src.group(1))
                continue
            decl = _DECL.match(text)
            if decl and pending:
                self.signal_src.setdefault((module, decl.group(1)), pending)
            assign = _ASSIGN.match(text)
            if assign and src:
                self.signal_src[(module, assign.group(1))] = self._local(src.group(1))
            pending = None

    def _local(self, location):
        """``/path/to/repo/hw/dma.py:12`` -> ``hw/dma.py:12``; other files (Amaranth's own) keep
        their file name only."""
        path, _, line = location.rpartition(":")
        path = Path(path)
        try:
            return f"{path.relative_to(self.root)}:{line}"
        except ValueError:
            return f"{path.name}:{line}"

    def source(self, line):
        """The gateware location of the statement at Verilog ``line`` (1-based): the ``hw/``
        line of its condition, else its block's file."""
        module = self.module_of[line - 1]
        found = self._condition_source(line - 1, module)
        return found if found.startswith("hw/") else self.module_file.get(module, "")

    def signal_source(self, module, signal):
        found = self.signal_src.get((module, "\\" + signal),
                                    self.signal_src.get((module, signal), ""))
        return found if found.startswith("hw/") else self.module_file.get(module, "")

    def _condition_source(self, index, module):
        inline = _SRC.search(self.lines[index])      # a ternary's own location
        if inline and not self.lines[index].lstrip().startswith("(*"):
            return self._local(inline.group(1))
        match = _IF.search(self.lines[index])
        if match is None:
            # A case item, or an else: the nearest if or case above at a lower indentation.
            indent = len(self.lines[index]) - len(self.lines[index].lstrip())
            for above in range(index - 1, max(index - 400, -1), -1):
                text = self.lines[above]
                if len(text) - len(text.lstrip()) >= indent:
                    continue
                match = _CASE.match(text) or _IF.search(text)
                if match:
                    break
                indent = len(text) - len(text.lstrip())
        if match is None:
            return ""
        return self.signal_src.get((module, match.group(1)), "")

    def is_trigger(self, line):
        return _TRIGGER in self.lines[line - 1]


def _fields(key):
    return dict(kv.split("\x02", 1) for kv in key.split("\x01"))


def _demangle(name):
    """Verilator's encoding of a Verilog identifier: ``__05F`` is ``_``, ``__024`` ``$`` ..."""
    return re.sub(r"__0([0-9a-fA-F]{2})", lambda m: chr(int(m.group(1), 16)), name)


def collect(build_root, root):
    """Every coverage point of every coverage build under ``build_root/sim``: a list of
    ``(build name, Point, count)``."""
    out = []
    for keys_path in sorted(Path(build_root, "sim").glob(f"*-cov/{KEYS_FILE}")):
        build = keys_path.parent
        with gzip.open(keys_path, "rt") as f:
            keys = json.load(f)["keys"]
        counts = np.load(build / COUNTS_FILE)
        verilog = next(build.glob("*.v"))
        text = _Verilog(verilog, root)
        top = verilog.stem
        for key, count in zip(keys, counts):
            kv = _fields(key)
            kind = kv["page"].split("/", 1)[0][2:]          # v_line -> line
            line = int(kv["l"])
            if kind != "toggle" and text.is_trigger(line):
                continue
            block = kv.get("h", top)
            block = block[len(top) + 1:] if block.startswith(top + ".") else "(top)"
            if kind == "toggle":
                signal = _demangle(kv["o"]).split("[")[0].split(":")[0]
                source = text.signal_source(kv["page"].split("/", 1)[1], signal)
                out.append((build.name, Point(kind, block, line, _demangle(kv["o"]), source),
                            int(count)))
            else:
                out.append((build.name, Point(kind, block, line, kv.get("o", ""),
                                              text.source(line),
                                              _SRC.sub("", text.lines[line - 1]).strip()[:80]),
                            int(count)))
    return out


def _block_name(block):
    """Blocks are named by their path with per-instance numbers dropped (``pe_3_2`` -> ``pe``),
    so that equal blocks of one build count together."""
    return ".".join(re.sub(r"(_\d+)+$", "", part) for part in block.split("."))


def summarize(points):
    """``(blocks, files, holes)``: per block, per ``hw/`` file and per kind, ``[hit, total]``
    over all builds; and the line and branch points never hit in any build, grouped by their
    gateware line (``{source: [(build, Point), ...]}``). A point counts as hit when a point of
    the same gateware line, kind and statement was hit in any build (another configuration of
    the same code)."""
    blocks = defaultdict(lambda: defaultdict(lambda: [0, 0]))
    files = defaultdict(lambda: defaultdict(lambda: [0, 0]))
    missed, reached = defaultdict(list), set()
    for build, point, count in points:
        for table, name in ((blocks, _block_name(point.block)),
                            (files, point.source.split(":")[0] or "(unmapped)")):
            entry = table[name][point.kind]
            entry[0] += count > 0
            entry[1] += 1
        if point.kind == "toggle":
            continue
        # Points of a block's file (no line of their own) are told apart by their Verilog line.
        key = (point.source or build, point.kind, point.what,
               None if ":" in point.source else (build, point.line))
        if count:
            reached.add(key)
        else:
            missed[key].append((build, point))
    holes = defaultdict(list)
    for key, found in missed.items():
        if key not in reached:
            source = key[0] if key[0] != found[0][0] else f"{key[0]}: Verilog line " \
                f"{found[0][1].line}"
            holes[source].extend(found)
    return blocks, files, holes
