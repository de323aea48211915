"""``mxe soak`` (sim/tb_soak.py): a random stream of GEMMs, refused commands, window and bus
errors and soft resets on the engine RTL, the memory checked against the model after every step.

Reproduce a failure with the seed printed by the test: ``MXE_SEED=<seed> pytest ... -k ...``.
"""

import re
import shlex

import pytest

from mxe import cmd_soak
from mxe.cli import main


def _soak(capsys, *args):
    status = main(["soak", *map(str, args)])
    return status, capsys.readouterr().out


@pytest.mark.parametrize("preset", ["tiny", "lean"])
def test_soak_runs_clean(preset, seed, capsys):
    """A short soak (Verilator): every kind of step, memory equal to the model. On lean too:
    no GEMM unit, bus-aligned layouts only, the shallow pipeline."""
    status, out = _soak(capsys, "--preset", preset, "--steps", 100, "--seed", seed)
    assert status == 0, out
    assert "clean: the memory equalled the model after every step" in out
    counts = dict(re.findall(r"(\w+) (\d+)(?:,|$)", out.splitlines()[-2].split(": ", 1)[1]))
    assert sum(map(int, counts.values())) == 100 and all(int(n) > 0 for n in counts.values()), \
        out


def test_soak_reports_a_fault_and_replays_it(seed, capsys, monkeypatch):
    """A byte changed behind the engine's back (the bench's ``inject``) stops the soak at that
    step with a one-line reproduction; running that line fails the same way at the same step."""
    real = cmd_soak.run_bench

    def with_fault(**kwargs):
        kwargs["params"] = {**kwargs["params"], "inject": 7}
        return real(**kwargs)

    monkeypatch.setattr(cmd_soak, "run_bench", with_fault)
    status, out = _soak(capsys, "--preset", "tiny", "--minutes", 5, "--seed", seed)
    assert status == 1, out
    failure = next(line for line in out.splitlines() if line.startswith("FAILED"))
    assert failure.startswith("FAILED at step 7 (") and "memory differs from the model at 1 " \
        "bytes" in failure, out
    repro = next(line for line in out.splitlines() if line.startswith("reproduce: "))
    argv = shlex.split(repro[len("reproduce: "):])
    assert argv[:2] == ["mxe", "soak"] and argv[-2:] == ["--steps", "8"], repro
    status, again = _soak(capsys, *argv[2:])
    assert status == 1 and failure in again.splitlines(), again


def test_soak_argument_errors(capsys):
    assert main(["soak", "--minutes", "0"]) == 2
    assert "minutes must be positive, not 0.0" in capsys.readouterr().err
    assert main(["soak", "--steps", "0"]) == 2
    assert "steps must be at least 1, not 0" in capsys.readouterr().err


@pytest.mark.slow
def test_soak_small_long(seed, capsys):
    """3000 steps on small (about ten minutes on Verilator)."""
    status, out = _soak(capsys, "--preset", "small", "--steps", 3000, "--seed", seed)
    assert status == 0 and "clean" in out, out
