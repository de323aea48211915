"""Coverage builds (``MXE_COVERAGE=1``) and ``mxe coverage``: a 1x1 array bench built with
Verilator coverage, its runs folded into the build's sums, reported per file and block."""

import gzip
import json
from pathlib import Path

import numpy as np

import mxe.hw
from mxe.cli import main
from mxe.hw.array import SystolicArray
from mxe.hw.config import EngineConfig
from mxe.sim.coverage import COUNTS_FILE, KEYS_FILE, collect, summarize
from mxe.sim.runner import run_bench


def _run_array(seed):
    config = EngineConfig(rows=1, cols=1)
    params = {"gap": 0.3, "tiles": 3, "m": 3, "k": 4, "n": 2, "extremes": 0.3}
    return run_bench(sim="verilator", name="mxe_array", make_component=SystolicArray,
                     config=config, test_module="mxe.sim.tb_array", seed=seed, params=params)


def test_coverage_build_fold_and_report(tmp_path, monkeypatch, capsys, seed):
    monkeypatch.setenv("MXE_BUILD_DIR", str(tmp_path))
    monkeypatch.setenv("MXE_COVERAGE", "1")
    run_dir = _run_array(seed)
    build = run_dir.parent.parent
    assert build.name.endswith("-cov")
    assert not (run_dir / "coverage.dat").exists(), "the run's file is folded and removed"
    assert '(* src = "' in (build / "mxe_array.v").read_text(), "coverage Verilog keeps src"
    first = np.load(build / COUNTS_FILE)
    with gzip.open(build / KEYS_FILE, "rt") as f:
        keys = json.load(f)["keys"]
    assert len(keys) == len(first) > 50 and first.sum() > 0

    # The same seed again: the simulation repeats, so every count doubles.
    _run_array(seed)
    assert np.array_equal(np.load(build / COUNTS_FILE), 2 * first)

    points = collect(tmp_path, Path(mxe.hw.__file__).resolve().parent.parent)
    blocks, files, holes = summarize(points)
    line_hit, line_total = files["hw/pe.py"]["line"]
    assert line_total > 0 and line_hit == line_total, files["hw/pe.py"]
    assert files["hw/pe.py"]["toggle"][0] > 0 and "pe" in blocks

    assert main(["coverage", "-o", str(tmp_path / "report")]) == 0
    out = capsys.readouterr().out
    assert "| hw/pe.py | 100.0% (" in out and "| **all** |" in out
    assert (tmp_path / "report" / "holes.md").read_text().startswith("# Line and branch")
    assert main(["coverage", "--clear"]) == 0
    assert not (build / COUNTS_FILE).exists()
    assert main(["coverage"]) == 2
    assert "no coverage under" in capsys.readouterr().err
