"""Small float CNNs built with ``onnx.helper`` and quantized by ONNX Runtime, for the importer
tests: convolutions (plain, strided, depthwise) with ReLU, a residual Add, max and global
average pooling, a Gemm and a Softmax."""

import numpy as np


def float_cnn(rng, *, size=8, channels=3, classes=5):
    """A float32 CNN with random weights: ``(1, channels, size, size)`` -> ``(1, classes)``."""
    from onnx import TensorProto, helper, numpy_helper

    def weight(name, *shape, scale=0.4):
        return numpy_helper.from_array((rng.standard_normal(shape) * scale)
                                       .astype(np.float32), name)

    inits = [weight("w1", 8, channels, 3, 3), weight("b1", 8, scale=0.1),
             weight("w2", 8, 1, 3, 3), weight("b2", 8, scale=0.1),
             weight("w3", 8, 8, 1, 1), weight("b3", 8, scale=0.1),
             weight("w4", classes, 8), weight("b4", classes, scale=0.1)]
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], kernel_shape=[3, 3],
                         pads=[1, 1, 1, 1], name="conv1"),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("MaxPool", ["r1"], ["p1"], kernel_shape=[2, 2], strides=[2, 2],
                         name="pool1"),
        helper.make_node("Conv", ["p1", "w2", "b2"], ["c2"], kernel_shape=[3, 3],
                         pads=[1, 1, 1, 1], group=8, name="dwconv2"),
        helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
        helper.make_node("Conv", ["r2", "w3", "b3"], ["c3"], kernel_shape=[1, 1],
                         name="pwconv3"),
        helper.make_node("Add", ["c3", "p1"], ["s3"], name="residual"),
        helper.make_node("GlobalAveragePool", ["s3"], ["g"], name="gap"),
        helper.make_node("Flatten", ["g"], ["f"], name="flatten"),
        helper.make_node("Gemm", ["f", "w4", "b4"], ["logits"], transB=1, name="fc"),
        helper.make_node("Softmax", ["logits"], ["y"], axis=1, name="softmax"),
    ]
    graph = helper.make_graph(
        nodes, "small_cnn",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, channels, size, size])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, classes])],
        initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    model.ir_version = 10
    return model


def quantized(model, rng, path, *, fmt, samples=16):
    """``model`` quantized by ``onnxruntime.quantization.quantize_static`` (``fmt``:
    ``"qop"`` or ``"qdq"``; int8 weights per channel, uint8 activations) on random
    calibration inputs; written to ``path`` and returned.

    The weights take 7 bits (``reduce_range``): with the whole int8 range, ONNX Runtime's
    uint8-by-int8 kernels on x86 saturate a 16-bit intermediate sum on some inputs, and it
    then differs from onnx.reference by up to 60 steps on the first convolution of
    :func:`float_cnn` (one random model in two failed the ONNX Runtime comparison of
    tests/test_onnx_import.py that way). MXE equals onnx.reference with either."""
    import onnx
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    source = path.with_name(path.stem + "_float.onnx")
    onnx.save(model, str(source))
    shape = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    feeds = iter([{"x": rng.standard_normal(shape).astype(np.float32)}
                  for _ in range(samples)])

    class Reader:
        def get_next(self):
            return next(feeds, None)

    quantize_static(str(source), str(path), Reader(),
                    quant_format=QuantFormat.QOperator if fmt == "qop" else QuantFormat.QDQ,
                    per_channel=True, activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QInt8, reduce_range=True)
    return onnx.load(str(path))
