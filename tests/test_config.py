import json
import subprocess
import sys

import pytest

from mxe.hw.config import PRESETS, EngineConfig


def test_presets():
    assert [(PRESETS[p].rows, PRESETS[p].cols) for p in ("lean", "tiny", "small", "default",
                                                          "large")] \
        == [(4, 4), (4, 4), (8, 8), (16, 16), (32, 32)]
    # lean is tiny without the features a user may leave out, and one requantization lane.
    assert PRESETS["lean"] == PRESETS["tiny"].replace(
        multiplier="dsp", dsp_budget=0, gemm_unit=False, perf_counters=False, postproc_lanes=1,
        unaligned_dma=False, deep_pipeline=False)
    assert EngineConfig.preset("small", rows=4).rows == 4


def test_json_round_trip():
    config = EngineConfig(rows=4, cols=8, signed=False, input_width=6, acc_width=20)
    assert EngineConfig.from_json(config.to_json()) == config
    assert json.loads(config.to_json())["cols"] == 8


@pytest.mark.parametrize("changes, error, words", [
    ({"rows": 0}, ValueError, "rows must be in 1..64"),
    ({"cols": 65}, ValueError, "cols must be in 1..64"),
    ({"rows": 2.0}, TypeError, "rows must be an integer"),
    ({"rows": True}, TypeError, "rows must be an integer"),
    ({"input_width": 3}, ValueError, "input_width must be in 4..16"),
    ({"input_width": 16, "acc_width": 31}, ValueError, "acc_width must be in 32..64"),
    ({"signed": 1}, TypeError, "signed must be a bool"),
    ({"dataflow": "xyz"}, ValueError, "dataflow must be one of 'ws'"),
    ({"dataflow": "os"}, ValueError, "not implemented"),
    ({"spad_depth": 1000}, ValueError, "spad_depth must be a power of two"),
    ({"spad_depth": 64, "spad_banks": 8}, ValueError, "spad_banks"),
    ({"axi_data_width": 48}, ValueError, "axi_data_width must be one of 32, 64, 128, 256"),
    ({"max_burst_len": 257}, ValueError, "max_burst_len must be in 1..256"),
    ({"multiplier": "fpga"}, ValueError, "multiplier must be one of"),
    ({"gemm_unit": 0}, TypeError, "gemm_unit must be a bool"),
    ({"gemm_unit": "no"}, TypeError, "gemm_unit must be a bool"),
    ({"perf_counters": 1}, TypeError, "perf_counters must be a bool"),
    ({"perf_counters": None}, TypeError, "perf_counters must be a bool"),
    ({"cols": 6, "postproc_lanes": 4}, ValueError,
     r"postproc_lanes must be 0 \(every column\) or a divisor of cols 6 \(1, 2, 3, 6\), not 4"),
    ({"postproc_lanes": -1}, ValueError, "postproc_lanes must be in 0..64"),
    ({"acc_read_ports": 3}, ValueError, "acc_read_ports must be in 1..2, not 3"),
    ({"exec_slots": 2}, ValueError,
     r"exec_slots must be 0 \(enough for one-row tiles\) or 3..8, not 2"),
    ({"exec_slots": 9}, ValueError, "exec_slots must be in 0..8, not 9"),
    ({"acc_read_ports": True}, TypeError, "acc_read_ports must be an integer, not True"),
    ({"unaligned_dma": 0}, TypeError, "unaligned_dma must be a bool"),
    ({"rows": 4, "cols": 4, "axi_data_width": 64, "unaligned_dma": False}, ValueError,
     r"unaligned_dma=False needs rows x element bytes and cols to be multiples of the bus's 8 "
     r"bytes \(axi_data_width 64\), not rows 4 x 1 and cols 4"),
])
def test_validation_names_parameter(changes, error, words):
    with pytest.raises(error, match=words):
        EngineConfig(**changes)


def test_postproc_lanes():
    """Lanes divide the post-processor's multipliers; 0 is a lane per column."""
    full = EngineConfig.preset("tiny")
    shared = full.replace(postproc_lanes=1)
    assert (full.lanes, full.postproc_passes) == (4, 1)
    assert (shared.lanes, shared.postproc_passes) == (1, 4)
    assert full.postproc_multipliers == 4 * shared.postproc_multipliers == 16
    assert full.replace(postproc_lanes=4).postproc_multipliers == 16


def test_features_default_in():
    """Features a user may leave out are in unless asked; leaving them out keys the build and
    survives JSON."""
    config = EngineConfig()
    assert config.gemm_unit is True and config.perf_counters is True
    assert config.unaligned_dma is True
    assert all(p.gemm_unit and p.perf_counters and p.unaligned_dma and p.deep_pipeline
               for name, p in PRESETS.items() if name != "lean")
    # Every preset can leave unaligned DMA out: its tiles start on the bus.
    for p in PRESETS.values():
        assert not p.replace(unaligned_dma=False).unaligned_dma
    lean = EngineConfig.preset("tiny", gemm_unit=False, perf_counters=False)
    assert lean.key() != PRESETS["tiny"].key() and "gemm_unitFalse" in lean.key()
    assert EngineConfig.from_json(lean.to_json()) == lean
    # A configuration written before the features existed reads with them in.
    old = {k: v for k, v in PRESETS["tiny"].to_dict().items()
           if k not in ("gemm_unit", "perf_counters", "unaligned_dma")}
    assert EngineConfig.from_dict(old) == PRESETS["tiny"]


def test_dir_key_names_a_directory(tmp_path):
    """Many parameters set make a key longer than a file name may be; the directory name
    stays short and still tells two such engines apart."""
    many = EngineConfig.preset("lean", serial_requant=True, acc_read_ports=1,
                               axi_addr_width=21, exec_slots=4, max_outstanding_reads=4)
    assert len(f"work-engine-ice40-{many.key()}") > 255
    names = {c.dir_key() for c in (many, many.replace(max_outstanding_reads=2))}
    assert len(names) == 2 and all(len(n) <= 100 for n in names)
    for name in names:
        (tmp_path / f"work-engine-ice40-{name}").mkdir()
    assert PRESETS["tiny"].dir_key() == PRESETS["tiny"].key()
    # mxe synth's report files are named by the key in the report.
    from mxe.cmd_synth import report_stem
    stem = report_stem({"top": "engine", "family": "ice40", "config_key": many.key()})
    (tmp_path / f"{stem}.json").write_text("{}")


def test_unknown_json_key():
    with pytest.raises(ValueError, match="unknown configuration parameter.*bogus"):
        EngineConfig.from_dict({"rows": 4, "bogus": 1})


def test_preset_name():
    with pytest.raises(ValueError, match="preset must be one of"):
        EngineConfig.preset("huge")


def _mxe(*args, cwd):
    return subprocess.run([sys.executable, "-m", "mxe.cli", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("args, parameter", [
    (["--rows", "0"], "rows"),
    (["--input-width", "3"], "input_width"),
    (["--dataflow", "xyz"], "dataflow"),
])
def test_generate_bad_parameter_is_one_line(tmp_path, args, parameter):
    result = _mxe("generate", *args, "-o", str(tmp_path), cwd=tmp_path)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert parameter in lines[0] and "Traceback" not in result.stderr
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("top, module", [(None, "mxe_engine"), ("array", "mxe_array")])
def test_generate_writes_verilog_and_config(tmp_path, top, module):
    args = ["--top", top] if top else []
    result = _mxe("generate", "--preset", "tiny", "--cols", "8", *args, "-o", str(tmp_path),
                  cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    config = EngineConfig.from_json((tmp_path / f"{module}.json").read_text())
    assert (config.rows, config.cols) == (4, 8)
    assert f"module {module}(" in (tmp_path / f"{module}.v").read_text()


def test_generate_lean_engine(tmp_path):
    """The feature flags reach the configuration and the Verilog (no GEMM unit, one counter)."""
    result = _mxe("generate", "--preset", "tiny", "--gemm-unit", "false", "--perf-counters",
                  "no", "-o", str(tmp_path), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    config = EngineConfig.from_json((tmp_path / "mxe_engine.json").read_text())
    assert config == EngineConfig.preset("tiny", gemm_unit=False, perf_counters=False)
    verilog = (tmp_path / "mxe_engine.v").read_text()
    assert "gemm" not in verilog and "count_cycles" in verilog
    assert "count_busy_cycles" not in verilog


@pytest.mark.parametrize("command", ["bench", "demo"])
def test_counter_reports_need_perf_counters(tmp_path, command):
    """mxe bench and mxe demo report the counters: an engine without them is refused, in one
    line naming the parameter, before anything is built."""
    engine = (["--presets", "tiny", "--set", "perf_counters=false"] if command == "bench" else
              ["--preset", "tiny", "--perf-counters", "false"])
    result = _mxe(command, *engine, "-o", str(tmp_path / "out"), cwd=tmp_path)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "reports the engine's performance counters" in lines[0] \
        and "perf_counters" in lines[0], result.stderr
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_board_timing_line_without_perf_counters():
    from mxe.board_host import _timing

    class Link:
        stats = {"link_seconds": 0.5, "bytes_out": 10, "bytes_in": 20}

    full = _timing(Link, 1.0, {"CYCLES": 900, "BUSY_CYCLES": 500}, 50e6)
    assert "engine busy 500 cycles = 0.010 ms at 50 MHz" in full and "900 cycles" in full
    lean = _timing(Link, 1.0, {"CYCLES": 900}, 50e6)
    assert "not counted (built without perf_counters)" in lean and "900 cycles" in lean
