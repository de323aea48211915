"""The Dask job layer (:mod:`mxe.cluster`): a sweep on a two-worker cluster started here against
the same sweep run serially, scheduler errors, per-job failures, and the summary of nextpnr
seeds (the routed ``--seeds`` sweep and a two-preset bench behind ``-m slow``)."""

import csv
import json
import socket

import pytest

from mxe import cluster
from mxe.cli import main
from mxe.cmd_synth import report_stem, summarize_seeds

#: Sweep arguments that synthesize in seconds: 2x2 and 3x3 arrays on iCE40, no place and route.
SMALL_SWEEP = ["sweep", "--top", "array", "--sizes", "2,3", "--families", "ice40"]


@pytest.fixture(scope="module")
def scheduler():
    """The address of a LocalCluster of two worker processes, one thread each."""
    from distributed import LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None, memory_limit=0,
                      scheduler_kwargs={"dashboard_address": "127.0.0.1:0"}) as local:
        yield local.scheduler_address


def _without_times(report):
    """A report without what changes from run to run: run times and the work directory."""
    return {k: v for k, v in report.items() if k not in ("runtime_s", "workdir")}


def _csv_rows(path):
    with open(path, newline="") as f:
        return [{k: v for k, v in row.items() if k != "runtime_s"} for row in csv.DictReader(f)]


def test_sweep_on_a_cluster_matches_the_serial_sweep(tmp_path, scheduler):
    remote, serial = tmp_path / "remote", tmp_path / "serial"
    assert main([*SMALL_SWEEP, "--scheduler", scheduler, "-o", str(remote)]) == 0
    assert main([*SMALL_SWEEP, "-j", "1", "-o", str(serial)]) == 0

    got = json.loads((remote / "sweep.json").read_text())
    want = json.loads((serial / "sweep.json").read_text())
    assert [r["config"]["rows"] for r in got] == [2, 3]
    assert [_without_times(r) for r in got] == [_without_times(r) for r in want]
    assert _csv_rows(remote / "sweep.csv") == _csv_rows(serial / "sweep.csv")
    assert (remote / "sweep.md").read_text() == (serial / "sweep.md").read_text()
    names = sorted(p.name for p in (serial / "reports").iterdir())
    assert sorted(p.name for p in (remote / "reports").iterdir()) == names and len(names) == 4
    for name in names:
        if name.endswith(".json"):
            assert _without_times(json.loads((remote / "reports" / name).read_text())) == \
                _without_times(json.loads((serial / "reports" / name).read_text()))
    # On a cluster the work directories are temporary on the workers; locally, as before.
    assert all(r["workdir"] is None for r in got) and not (remote / "work").exists()
    assert all(r["workdir"].startswith(str(serial / "work")) for r in want)


def test_a_malformed_scheduler_address_is_one_line(capsys):
    assert main([*SMALL_SWEEP, "--scheduler", "nonsense"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("mxe sweep: error: --scheduler nonsense:") and "\n" not in err


def test_an_unreachable_scheduler_is_one_line(capsys, monkeypatch):
    monkeypatch.setattr(cluster, "CONNECT_TIMEOUT", "1s")
    with socket.socket() as s:   # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        address = f"tcp://127.0.0.1:{s.getsockname()[1]}"
    assert main(["bench", "--presets", "tiny,small", "--scheduler", address]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"mxe bench: error: cannot reach the Dask scheduler at {address}")
    assert "\n" not in err


def test_jobs_and_scheduler_conflict(capsys):
    assert main([*SMALL_SWEEP, "-j", "2", "--scheduler", "tcp://127.0.0.1:8786"]) == 2
    assert main([*SMALL_SWEEP, "--seeds", "2"]) == 2      # seeds are nextpnr's: needs --pnr
    err = capsys.readouterr().err
    assert "--jobs" in err and "--pnr" in err


def test_a_failed_job_is_reported_per_job(scheduler):
    from mxe.hw.config import PRESETS

    good = {"config": PRESETS["tiny"].replace(rows=2, cols=2).to_dict(), "top": "array",
            "options": {"family": "ice40", "breakdown": False}, "workdir": None}
    bad = dict(good, options={"family": "nosuch"})
    outcomes = {tag: (result, error) for tag, result, error in cluster.run_jobs(
        cluster.synth_job, [("good", good), ("bad", bad)], scheduler=scheduler, desc="test",
        unit="run")}
    assert outcomes["good"][0]["resources"]["ff"] > 0 and outcomes["good"][1] is None
    assert outcomes["bad"][0] is None and outcomes["bad"][1].startswith("ValueError: family")


def _routed(seed, fmax):
    return {"config_key": "2x2", "pnr": {"seed": seed, "fmax_mhz": fmax}}


def test_summarize_seeds_takes_the_median_run():
    summary = summarize_seeds({3: _routed(3, 210.0), 1: _routed(1, 190.0), 2: _routed(2, 250.0)})
    assert summary["pnr"]["seed"] == 3
    assert summary["pnr_seeds"] == {"seeds": [1, 2, 3], "fmax_mhz": [190.0, 250.0, 210.0],
                                    "min": 190.0, "median": 210.0, "max": 250.0}
    # An even count: the median is the mean of the middle two, the report the lower one's.
    summary = summarize_seeds({1: _routed(1, 200.0), 2: _routed(2, 100.0)})
    assert summary["pnr"]["seed"] == 2 and summary["pnr_seeds"]["median"] == 150.0
    # A run without Fmax (place and route skipped) does not count.
    unrouted = {"config_key": "2x2", "pnr": None}
    summary = summarize_seeds({1: unrouted, 2: unrouted})
    assert summary["pnr_seeds"]["fmax_mhz"] == [None, None]
    assert summary["pnr_seeds"]["median"] is None and summary["pnr"] is None


@pytest.mark.slow
def test_sweep_with_seeds(tmp_path):
    out = tmp_path / "sweep"
    assert main(["sweep", "--top", "array", "--sizes", "2", "--families", "ecp5", "--pnr",
                 "--seeds", "2", "-j", "2", "-o", str(out)]) == 0
    (row,) = list(csv.DictReader(open(out / "sweep.csv", newline="")))
    assert row["seeds"] == "2" and "fmax_mhz" not in row
    fmax = sorted(float(row[f"fmax_{k}_mhz"]) for k in ("min", "median", "max"))
    assert fmax[0] > 0 and fmax == [float(row["fmax_min_mhz"]), float(row["fmax_median_mhz"]),
                                    float(row["fmax_max_mhz"])]
    assert "Fmax median" in (out / "sweep.md").read_text()
    # The configuration's report (the median seed's, with the summary) and one per seed.
    key = json.loads((out / "sweep.json").read_text())[0]["config_key"]
    stem = report_stem({"top": "array", "family": "ecp5", "config_key": key})
    reports = {p.stem: json.loads(p.read_text()) for p in (out / "reports").glob("*.json")}
    assert sorted(reports) == [stem, f"{stem}-seed1", f"{stem}-seed2"]
    assert [reports[f"{stem}-seed{s}"]["pnr"]["seed"] for s in (1, 2)] == [1, 2]
    assert reports[stem]["pnr_seeds"]["seeds"] == [1, 2]


@pytest.mark.slow
def test_bench_on_two_workers_matches_one(tmp_path):
    args = ["bench", "--presets", "tiny,small", "--shapes", "8x8x8,33x17x9", "--seed", "5"]
    assert main([*args, "-j", "2", "-o", str(tmp_path / "two")]) == 0
    assert main([*args, "-j", "1", "-o", str(tmp_path / "one")]) == 0
    speed = ("sim_cycles_per_s", "wall_s")

    def rows(path):
        return [{k: v for k, v in row.items() if k not in speed}
                for row in csv.DictReader(open(path / "bench.csv", newline=""))]

    assert rows(tmp_path / "two") == rows(tmp_path / "one")
    assert [r["preset"] for r in rows(tmp_path / "one")] == ["tiny", "tiny", "small", "small"]
