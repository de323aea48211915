"""``mxe demo``: the quantization math (pure Python) and the demo on the engine RTL.

The unit tests check :mod:`mxe.sim.demo` against independent computations: exact rationals for
the multiplier/shift decomposition, a direct convolution loop for im2col, plain integer
arithmetic for the int8 pipeline. The end-to-end test runs ``mxe demo`` on a few held-out images
with the ``tiny`` preset on Verilator and checks the engine's outputs against the int8
reference it recomputes itself.

Reproduce a failure with the seed printed by the test: ``MXE_SEED=<seed> pytest ... -k ...``.
"""

import json
import math
from fractions import Fraction

import numpy as np
import pytest

from mxe.hw.config import EngineConfig
from mxe.sim import demo


# Multiplier and shift ------------------------------------------------------------------------

def _check_decomposition(real, m, s):
    exact = Fraction(real)
    assert isinstance(m, int) and isinstance(s, int)
    assert 0 <= s <= 63 and 0 < m < 1 << 31
    got = Fraction(m, 1 << s)
    # Nearest at this shift: no neighbour is closer, the error is at most half a step.
    assert abs(got - exact) <= Fraction(1, 1 << (s + 1)), (real, m, s)
    assert abs(got - exact) <= abs(Fraction(m + 1, 1 << s) - exact)
    assert abs(got - exact) <= abs(Fraction(m - 1, 1 << s) - exact)
    if s < 63:
        # Full precision: 31 significant bits, relative error below 2**-31.
        assert 1 << 30 <= m < 1 << 31, (real, m, s)
        assert abs(got - exact) / exact <= Fraction(1, 1 << 31)


def test_quantize_multiplier_random(seed):
    rng = np.random.default_rng(seed)
    for real in 2.0 ** rng.uniform(-45, 25, size=2000):
        _check_decomposition(float(real), *demo.quantize_multiplier(float(real)))


@pytest.mark.parametrize("real", [0.5, 1.0, 0.25, 2.0 ** -32, 2.0 ** -30, 3.0, 1 - 2.0 ** -40,
                                  0.5 - 2.0 ** -45, 2.0 ** 30, 2.0 ** -50, 2.0 ** -63])
def test_quantize_multiplier_edges(real):
    m, s = demo.quantize_multiplier(real)
    _check_decomposition(real, m, s)
    if real == 0.5:
        assert (m, s) == (1 << 30, 31)
    if real == 1 - 2.0 ** -40:
        # Rounds up to 1.0: the carry out of 31 bits halves the multiplier.
        assert (m, s) == (1 << 30, 30)


@pytest.mark.parametrize("real", [0.0, -0.5, float("nan"), float("inf"), 2.0 ** 31,
                                  2.0 ** -70])
def test_quantize_multiplier_refuses(real):
    with pytest.raises(ValueError, match="real"):
        demo.quantize_multiplier(real)


def test_quantize_multiplier_type():
    with pytest.raises(TypeError, match="real"):
        demo.quantize_multiplier("0.5")


def test_requantization_follows_the_real_scale(seed):
    """The engine's requantization with the decomposed (multiplier, shift) is the real scale
    rounded to nearest, except on exact ties of the rounding it cannot see."""
    from mxe.sim.model import requantize
    rng = np.random.default_rng(seed)
    config = EngineConfig.preset("tiny")
    for real in 2.0 ** rng.uniform(-20, -1, size=20):
        m, s = demo.quantize_multiplier(float(real))
        acc = rng.integers(-(1 << 20), 1 << 20, size=200)
        acc = acc[np.abs(acc * real) < 127]            # not saturated
        got = requantize(acc, (m, s), config)
        assert np.all(np.abs(got - acc * real) <= 0.5 + np.abs(acc) * real * 2.0 ** -30), real


# im2col --------------------------------------------------------------------------------------

@pytest.mark.parametrize("shape,kernel", [((2, 8, 8, 1), (3, 3)), ((3, 5, 7, 2), (2, 3)),
                                          ((1, 4, 4, 3), (4, 4)), ((2, 6, 5, 1), (1, 1))])
def test_im2col_is_convolution(seed, shape, kernel):
    rng = np.random.default_rng(seed)
    x = rng.integers(-128, 128, size=shape)
    cout = 4
    w = rng.integers(-128, 128, size=(*kernel, shape[3], cout))
    want = demo.conv2d_direct(x, w)
    got = demo.im2col(x, *kernel) @ w.reshape(-1, cout)
    assert got.shape == (want.size // cout, cout)
    np.testing.assert_array_equal(got.reshape(want.shape), want)


def test_im2col_refuses():
    with pytest.raises(ValueError, match="does not fit"):
        demo.im2col(np.zeros((1, 2, 2, 1)), 3, 3)
    with pytest.raises(ValueError, match="B, H, W, C"):
        demo.im2col(np.zeros((2, 2)), 1, 1)


# The int8 pipeline ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def small_net():
    """A briefly trained network (a few epochs: the math, not the accuracy, is under test)."""
    x_tr, y_tr, x_te, y_te = demo.load_data(3)
    net = demo.train(x_tr, y_tr, 3, epochs=4)
    layers, s_in = demo.quantize_network(net, x_tr)
    return net, layers, s_in, x_tr, x_te, y_te


def _round_half_away(num, shift):
    if shift == 0:
        return num
    half = 1 << (shift - 1)
    return (num + half) >> shift if num >= 0 else -((-num + half) >> shift)


def test_reference_pipeline_by_hand(small_net):
    """reference_forward equals plain integer arithmetic, layer by layer."""
    _net, layers, s_in, _x_tr, x_te, _y = small_net
    config = EngineConfig.preset("small")
    x_q = demo.quantize_input(x_te[:6], s_in)
    outs = demo.reference_forward(layers, x_q, config)
    a = x_q
    for layer, out in zip(layers, outs):
        A = demo.layer_input(layer, a).tolist()
        W = layer.w.tolist()
        want = []
        for row in A:
            vals = []
            for n in range(len(W[0])):
                v = sum(r * W[k][n] for k, r in enumerate(row)) + int(layer.bias[n])
                if layer.relu:
                    v = max(v, 0)
                if layer.requant:
                    rq = layer.requant
                    m, s = rq.multiplier[n], rq.shift[n]
                    v = min(max(_round_half_away(v * m, s) + rq.zero_point, -128), 127)
                vals.append(v)
            want.append(vals)
        np.testing.assert_array_equal(out, np.array(want), err_msg=layer.name)
        a = demo.layer_output(layer, out, len(x_q))
    assert outs[0].shape == (6 * 36, 8) and outs[-1].shape == (6, 10)


def test_quantized_network_tracks_float(small_net):
    """Dequantized int8 activations stay close to the float network's; int8 weights and biases
    are in range."""
    net, layers, s_in, _x_tr, x_te, _y = small_net
    config = EngineConfig.preset("tiny")
    x_q = demo.quantize_input(x_te[:50], s_in)
    outs = demo.reference_forward(layers, x_q, config)
    _, trace = net.forward(x_te[:50], keep=True)
    for layer, out, (_inp, z) in zip(layers, outs, trace):
        assert np.abs(layer.w).max() <= 127 and np.abs(layer.bias).max() < 1 << 31
        real = np.maximum(z, 0) if layer.relu else z
        if layer.requant:
            deq = (out - layer.scales["z_out"]) * layer.scales["s_out"]
            assert np.all((out >= -128) & (out <= 127)), layer.name
            assert layer.requant.per_column and layer.requant.zero_point == -128
            assert len(set(layer.requant.multiplier)) > 1, "per-channel scales all equal"
        else:
            deq = out * layer.scales["s_in"] * np.array(layer.scales["s_w"])
        err = np.abs(deq - real).max() / np.abs(real).max()
        assert err < 0.1, (layer.name, err)


def test_network_file_round_trip(small_net, tmp_path):
    _net, layers, s_in, _x_tr, x_te, _y = small_net
    x_q = demo.quantize_input(x_te[:5], s_in)
    demo.save_network(tmp_path / "n.npz", layers, x_q)
    back, x_back = demo.load_network(tmp_path / "n.npz")
    np.testing.assert_array_equal(x_back, x_q)
    config = EngineConfig.preset("tiny")
    for a, b in zip(demo.reference_forward(layers, x_q, config),
                    demo.reference_forward(back, x_back, config)):
        np.testing.assert_array_equal(a, b)
    assert [l.name for l in back] == [l.name for l in layers]


def test_compare_finds_a_flipped_value(seed):
    rng = np.random.default_rng(seed)
    ref = [rng.integers(-128, 128, size=(12, 8)), rng.integers(-1000, 1000, size=(3, 10))]
    engine = [ref[0][:3].copy(), ref[1].copy()]     # fewer samples than the reference
    exact, checks = demo.compare(engine, ref, ["a", "b"])
    assert exact and [c["mismatches"] for c in checks] == [0, 0]
    where = (int(rng.integers(3)), int(rng.integers(10)))
    engine[1][where] += 1
    exact, checks = demo.compare(engine, ref, ["a", "b"])
    assert not exact and checks[1]["mismatches"] == 1 and str(where) in checks[1]["first"]
    exact, checks = demo.compare([engine[0][:, :7], ref[1]], ref, ["a", "b"])
    assert not exact and checks[0]["mismatches"] is None


def test_synth_reportread_fmax(tmp_path):
    from mxe.cmd_demo import read_fmax
    from mxe.config_args import CommandError
    config = EngineConfig.preset("small")
    path = tmp_path / "r.json"
    path.write_text(json.dumps({"pnr": {"fmax_mhz": 42.5}, "config_key": config.key(),
                                "family": "ecp5", "device": "LFE5U-85F"}))
    fmax, where, note = read_fmax(path, config)
    assert fmax == 42.5 and "ecp5" in where and note is None
    assert read_fmax(path, EngineConfig.preset("tiny"))[2] is not None
    path.write_text(json.dumps({"pnr": None}))
    with pytest.raises(CommandError, match="Fmax"):
        read_fmax(path, config)


# The demo on the engine RTL ------------------------------------------------------------------

def test_demo_on_engine(seed, tmp_path, capsys):
    """``mxe demo`` with the tiny preset on Verilator: exit 0, every layer bit-exact with the
    int8 reference recomputed here, engine accuracy equal to the reference's on those images."""
    from mxe.cli import main
    from mxe.sim.runner import simulator_missing
    if simulator_missing("verilator"):
        pytest.skip(simulator_missing("verilator"))
    samples, batch = 6, 4           # a last batch of 2: a ragged M
    status = main(["demo", "--preset", "tiny", "--samples", str(samples), "--batch", str(batch),
                   "--seed", str(seed), "--epochs", "8", "-o", str(tmp_path)])
    text = capsys.readouterr().out
    assert status == 0, text
    summary = json.loads((tmp_path / "demo.json").read_text())
    assert summary["bit_exact"] is True and summary["samples"] == samples

    # Recompute the reference independently of the command and compare with the raw outputs.
    config = EngineConfig.preset("tiny")
    layers, x_q = demo.load_network(tmp_path / "network.npz")
    ref = demo.reference_forward(layers, x_q, config)
    run_dir = summary["run_dir"]
    with np.load(f"{run_dir}/demo.npz") as f:
        engine = [f[f"out{i}"] for i in range(len(layers))]
    for layer, got, want in zip(layers, engine, ref):
        np.testing.assert_array_equal(got, want, err_msg=layer.name)
    labels = np.array(summary["labels"])
    ref_acc = demo.accuracy(ref[-1], labels)
    assert summary["accuracy"]["engine"] == pytest.approx(ref_acc)
    assert summary["predictions"] == np.argmax(engine[-1], axis=1).tolist()

    # Counters: every layer did its MACs in a plausible number of cycles.
    rows, cols = config.rows, config.cols
    for row in summary["layers"]:
        assert row["gemms"] == math.ceil(samples / batch)
        assert row["cycles"] >= row["busy_cycles"] >= row["mac_active_cycles"] > 0
        assert row["macs"] <= rows * cols * row["mac_active_cycles"], row
        assert 0 < row["utilization"] <= row["utilization_busy"] <= 1
    assert (tmp_path / "demo.png").stat().st_size > 1000
    assert "bit-exact: YES" in text and f"seed {seed}" in text


def test_conv_weights_lower_to_the_im2col_gemm(small_net):
    """The convolution through ``MXEDriver.conv2d`` without the convolution unit is the GEMM the
    demo ran before: one group, the same patches and weights (so the same plan and cycles)."""
    from mxe.sim.conv import ConvGeometry, lower_groups
    _net, layers, s_in, _x_tr, x_te, _y = small_net
    conv = layers[0]
    x_q = demo.quantize_input(x_te[:3], s_in)
    w = demo.conv_weights(conv)
    assert w.shape == (8, 3, 3, 1)
    gemms = lower_groups(x_q, w, ConvGeometry.of(conv.kernel), pack=8)
    assert len(gemms) == 1
    A, B, cols = gemms[0]
    np.testing.assert_array_equal(A, demo.im2col(x_q, *conv.kernel))
    np.testing.assert_array_equal(B, conv.w)
    assert cols == slice(0, 8)


def test_demo_with_conv_unit(seed, tmp_path, capsys):
    """``mxe demo --conv-unit true`` (tiny preset, Verilator: the engine build of
    ``tests/test_conv_unit.py``'s bench, shared): the convolution runs as convolution
    descriptors, one per image, and every layer is bit-exact with the int8 reference
    recomputed here."""
    from mxe.cli import main
    from mxe.sim.runner import simulator_missing
    if simulator_missing("verilator"):
        pytest.skip(simulator_missing("verilator"))
    samples, batch = 5, 3           # a last batch of 2
    status = main(["demo", "--preset", "tiny", "--conv-unit", "true", "--samples",
                   str(samples), "--batch", str(batch), "--seed", str(seed), "--epochs", "4",
                   "-o", str(tmp_path)])
    text = capsys.readouterr().out
    assert status == 0, text
    summary = json.loads((tmp_path / "demo.json").read_text())
    assert summary["bit_exact"] is True and summary["config"]["conv_unit"] is True
    config = EngineConfig.preset("tiny", conv_unit=True)
    assert summary["config_key"] == config.key()
    layers, x_q = demo.load_network(tmp_path / "network.npz")
    ref = demo.reference_forward(layers, x_q, config)
    with np.load(f"{summary['run_dir']}/demo.npz") as f:
        engine = [f[f"out{i}"] for i in range(len(layers))]
    for layer, got, want in zip(layers, engine, ref):
        np.testing.assert_array_equal(got, want, err_msg=layer.name)
    conv, *dense = summary["layers"]
    assert conv["run_as"] == "descriptor" and conv["descriptors"] == samples
    assert conv["gemms"] == 0 and conv["gemm_first_batch"] == [batch * 36, 9, 8]
    assert conv["macs"] <= config.rows * config.cols * conv["mac_active_cycles"]
    for row in dense:
        assert row["run_as"] == "GEMM" and row["gemms"] == math.ceil(samples / batch)
    assert "convolution descriptors (CONV_A/B/C, one per image)" in text
