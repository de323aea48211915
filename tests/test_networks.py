"""``mxe bench --network``: the MLPerf Tiny networks' shapes, the reference, the table, and a
network on the engine RTL."""

import json

import numpy as np
import pytest

from mxe.cli import main
from mxe.cmd_bench import network_rows
from mxe.hw.config import EngineConfig
from mxe.sim import networks
from mxe.sim.conv import patches
from mxe.sim.runner import simulator_missing

#: Multiply-accumulates per inference as the MLPerf Tiny paper gives them (Banbury et al.,
#: "MLPerf Tiny Benchmark", NeurIPS 2021, table 1), to the precision it gives them.
PUBLISHED_MACS = {"ae": 0.264e6, "ds_cnn": 2.7e6, "mobilenet": 7.6e6, "resnet8": 12.5e6}


def _total_macs(net, values):
    total, previous = 0, "input"
    for layer in net.layers:
        x = values[(layer.inputs or (previous,))[0]]
        if layer.op in networks.ENGINE_OPS:
            if layer.op == "dense":
                x = x.reshape(x.shape[0], -1)
            total += net.macs(layer, x, values[layer.name])
        previous = layer.name
    return total


@pytest.mark.parametrize("name", [
    "ae", "ds_cnn",
    # the reference's direct loops take 10 s and more for these
    pytest.param("mobilenet", marks=pytest.mark.slow),
    pytest.param("resnet8", marks=pytest.mark.slow)])
def test_network_shapes_match_the_published_macs(name):
    config = EngineConfig.preset("small")
    net = networks.build(name, config, seed=3)
    values = net.reference
    assert _total_macs(net, values) == pytest.approx(PUBLISHED_MACS[name], rel=0.03)
    # Calibrated: every requantized layer's output uses its range and is not all zero.
    for layer in net.layers:
        if layer.op in networks.ENGINE_OPS and not layer.raw:
            y = values[layer.name]
            assert 50 <= np.abs(y).max() <= 127 and np.count_nonzero(y), layer.name


def test_reference_conv_layer_equals_a_gemm_of_its_patches():
    """The reference's convolution (direct loops) against a GEMM of the im2col patches: the
    same accumulators before post-processing."""
    config = EngineConfig.preset("small")
    net = networks.build("ds_cnn", config, seed=5)
    layer = net.layers[0]                 # 10x4, stride 2, padding 4/5 by 1/1
    x = net.reference["input"]
    w = net.params[layer.name]["w"]
    geometry = net.geometry(layer, x.shape[3])
    assert geometry.pads == (4, 1, 5, 1)
    acc, shape = networks._accumulate(net, layer, x, config)
    gemm = patches(x, geometry) @ w.reshape(w.shape[0], -1).T
    assert shape == (1, 25, 5, 64) and np.array_equal(acc, gemm)


def test_build_refuses_what_it_cannot_do():
    with pytest.raises(ValueError, match="network must be one of"):
        networks.build("vgg", EngineConfig.preset("tiny"), 1)
    with pytest.raises(ValueError, match="signed engine with input_width 8"):
        networks.build("ae", EngineConfig.preset("tiny", signed=False), 1)


def test_rows_flag_a_wrong_output():
    config = EngineConfig.preset("tiny")
    net = networks.build("ae", config, seed=2)
    want = net.reference
    outputs = {name: value.copy() for name, value in want.items()}
    layers = [{"name": layer.name, "where": "engine", "shape": "", "macs": 100,
               "in_bytes": 1, "w_bytes": 1, "out_bytes": 1,
               "counters": {"BUSY_CYCLES": 10, "DMA_RD_BYTES": 2, "DMA_WR_BYTES": 1}}
              for layer in net.layers]
    rows = network_rows("tiny", config, {"layers": layers, "outputs": outputs}, want)
    assert all(row["exact"] for row in rows)
    assert rows[-1]["cycles"] == 10 * len(layers) and rows[-1]["bytes_ratio"] == 1.0
    outputs["fc5"][0, 3] += 1
    rows = network_rows("tiny", config, {"layers": layers, "outputs": outputs}, want)
    assert [row["layer"] for row in rows if not row["exact"]] == ["fc5", "total"]


def test_bench_network_bad_arguments(tmp_path, capsys):
    assert main(["bench", "--synth-report", str(tmp_path / "r.json"), "--presets", "tiny",
                 "-o", str(tmp_path)]) != 0
    assert "--synth-report goes with --network" in capsys.readouterr().err
    report = tmp_path / "r.json"
    report.write_text(json.dumps({"config_key": "other", "pnr": {"fmax_mhz": 50.0}}))
    assert main(["bench", "--network", "ae", "--presets", "tiny", "--synth-report",
                 str(report), "-o", str(tmp_path)]) != 0
    assert "is for none of the presets run (tiny)" in capsys.readouterr().err
    # The lean preset has no performance counters: one line saying how to add them.
    assert main(["bench", "--presets", "lean", "-o", str(tmp_path)]) != 0
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "lean is built without here: add --set perf_counters=true" in err


@pytest.mark.skipif(bool(simulator_missing("verilator")), reason="needs Verilator")
def test_bench_network_on_the_engine(tmp_path, capsys):
    """The autoencoder on the tiny engine: every layer bit-exact; the table and the latency
    at the Fmax of a synthesis report."""
    config = EngineConfig.preset("tiny")
    report = tmp_path / "synth.json"
    report.write_text(json.dumps({"config_key": config.key(), "family": "ecp5",
                                  "device": "LFE5U-25F", "pnr": {"fmax_mhz": 50.0}}))
    assert main(["bench", "--network", "ae", "--presets", "tiny", "--seed", "4",
                 "--synth-report", str(report), "-o", str(tmp_path), "-j", "1"]) == 0
    out = capsys.readouterr().out
    print(out)
    rows = (tmp_path / "network.csv").read_text().splitlines()
    assert len(rows) == 1 + 10 + 1 and rows[-1].startswith("tiny,total")
    assert "| tiny | **total** |" in out and "**NO**" not in out
    (total,) = [line for line in out.splitlines() if "engine cycles per inference" in line]
    assert total.startswith("tiny: ") and "at 50 MHz (ecp5 LFE5U-25F)" in total
    assert "inferences/s" in total
