"""Random quantized GEMM cases with the answer of ONNX's reference implementation
(``onnx.reference.ReferenceEvaluator``), shared by the model tests and the engine benches.

Each case is a one-node ONNX model (QLinearMatMul, MatMulInteger or QLinearConv) built with
``onnx.helper``,
random inputs, the :class:`~mxe.sim.quant.Quantization` that states the same GEMM for the
engine, and what the reference computes for it: an oracle independent of MXE's own models.
"""

from dataclasses import dataclass

import numpy as np

from mxe.sim.quant import OPERAND_TYPES, Quantization, onnx_scale


__all__ = ["OnnxCase", "ConvCase", "qlinear_matmul_case", "matmul_integer_case",
           "qlinear_conv_case", "im2col_nchw", "OPSET"]

#: The ONNX opset of the models (QLinearMatMul with int8 and uint8 in any combination).
OPSET = 21

_RANGES = {"int8": (-128, 127), "uint8": (0, 255)}


@dataclass
class OnnxCase:
    A: np.ndarray
    B: np.ndarray
    quant: Quantization
    want: np.ndarray          # the ONNX reference's output
    model: object             # the onnx ModelProto


def _tensor_type(kind):
    from onnx import TensorProto
    return {"int8": TensorProto.INT8, "uint8": TensorProto.UINT8}[kind]


def _run(node, inputs, constants, out_type):
    """The reference's output of a one-node model; ``inputs`` are graph inputs, ``constants``
    initializers (name -> array)."""
    from onnx import helper, numpy_helper
    from onnx.reference import ReferenceEvaluator
    graph = helper.make_graph(
        [node], "mxe_case",
        [helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(v.dtype), v.shape)
         for name, v in inputs.items()],
        [helper.make_tensor_value_info("y", out_type, None)],
        initializer=[numpy_helper.from_array(np.asarray(v), name)
                     for name, v in constants.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    return ReferenceEvaluator(model).run(None, inputs)[0], model


def _operand(rng, kind, shape):
    lo, hi = _RANGES[kind]
    return rng.integers(lo, hi, size=shape, endpoint=True).astype(np.dtype(kind))


def _zero_point(rng, kind, size, extreme):
    lo, hi = _RANGES[kind]
    values = rng.choice([lo, hi], size=size) if extreme else \
        rng.integers(lo, hi, size=size, endpoint=True)
    return np.asarray(values).astype(np.dtype(kind))


def qlinear_matmul_case(rng, a_type, b_type, *, shape, per_column=False,
                        extreme_zero_points=False, out_type=None):
    """QLinearMatMul ``(M, K) x (K, N)`` with random scales (per output column if
    ``per_column``) and zero points on every input and the output; ``extreme_zero_points``
    puts them at the ends of their ranges and makes the scale a power of two (many exact
    ties)."""
    M, K, N = (int(v) for v in shape)
    out_type = out_type or ("uint8", "int8")[rng.integers(2)]
    a, b = _operand(rng, a_type, (M, K)), _operand(rng, b_type, (K, N))
    size = (N,) if per_column else ()
    za = _zero_point(rng, a_type, (), extreme_zero_points)
    zb = _zero_point(rng, b_type, size, extreme_zero_points)
    zy = _zero_point(rng, out_type, (), extreme_zero_points)
    if extreme_zero_points:
        a_scale = np.float32(2.0 ** -int(rng.integers(3, 9)))
        b_scale = (2.0 ** -rng.integers(3, 9, size=size)).astype(np.float32)
        y_scale = np.float32(a_scale * np.float32(2.0 ** -5) * 2.0 ** int(rng.integers(1, 8)))
    else:
        a_scale = np.float32(2.0 ** rng.uniform(-8, -2))
        b_scale = (2.0 ** rng.uniform(-8, -2, size=size)).astype(np.float32)
        y_scale = np.float32(a_scale * np.mean(b_scale) * K * 40 * rng.uniform(0.2, 3))
    constants = {"a_scale": np.asarray(a_scale), "a_zero_point": za,
                 "b_scale": np.asarray(b_scale), "b_zero_point": zb,
                 "y_scale": np.asarray(y_scale), "y_zero_point": zy}
    from onnx import helper
    node = helper.make_node("QLinearMatMul", ["a", "a_scale", "a_zero_point", "b", "b_scale",
                                              "b_zero_point", "y_scale", "y_zero_point"], ["y"])
    want, model = _run(node, {"a": a, "b": b}, constants, _tensor_type(out_type))
    quant = Quantization(a_type, b_type, a_zero_point=int(za),
                         b_zero_point=zb.astype(np.int64) if per_column else int(zb),
                         scale=onnx_scale(a_scale, b_scale, y_scale),
                         y_zero_point=int(zy), out_type=out_type, round_even=True)
    return OnnxCase(a, b, quant, want, model)


def matmul_integer_case(rng, *, shape, per_column=False, a_type=None, b_type=None):
    """MatMulInteger ``(M, K) x (K, N)`` with zero points on both inputs (B's per column if
    ``per_column``): int32 outputs."""
    M, K, N = (int(v) for v in shape)
    kinds = list(OPERAND_TYPES)
    a_type = a_type or kinds[rng.integers(2)]
    b_type = b_type or kinds[rng.integers(2)]
    a, b = _operand(rng, a_type, (M, K)), _operand(rng, b_type, (K, N))
    za = _zero_point(rng, a_type, (), False)
    zb = _zero_point(rng, b_type, (N,) if per_column else (), False)
    from onnx import TensorProto, helper
    node = helper.make_node("MatMulInteger", ["a", "b", "a_zero_point", "b_zero_point"], ["y"])
    want, model = _run(node, {"a": a, "b": b}, {"a_zero_point": za, "b_zero_point": zb},
                       TensorProto.INT32)
    quant = Quantization(a_type, b_type, a_zero_point=int(za),
                         b_zero_point=zb.astype(np.int64) if per_column else int(zb))
    return OnnxCase(a, b, quant, want, model)


def im2col_nchw(x, kernel, *, strides=(1, 1), pads=(0, 0, 0, 0), dilations=(1, 1),
                pad_value=0):
    """Patches of ``x`` (N, C, H, W) for a convolution: ``(N * Ho * Wo, C * kh * kw)``, rows
    in (n, y, x) order, columns in (c, dy, dx) order (the order of ONNX's weights
    ``(Cout, C, kh, kw)`` flattened). ``pads`` is ONNX's (top, left, bottom, right), filled with
    ``pad_value``."""
    x = np.asarray(x)
    N, C, H, W = x.shape
    kh, kw = kernel
    (sy, sx), (dy, dx) = strides, dilations
    top, left, bottom, right = pads
    padded = np.full((N, C, H + top + bottom, W + left + right), pad_value, dtype=x.dtype)
    padded[:, :, top:top + H, left:left + W] = x
    ho = (H + top + bottom - dy * (kh - 1) - 1) // sy + 1
    wo = (W + left + right - dx * (kw - 1) - 1) // sx + 1
    cols = np.empty((N, ho, wo, C, kh, kw), dtype=x.dtype)
    for i in range(kh):
        for j in range(kw):
            window = padded[:, :, i * dy:i * dy + sy * (ho - 1) + 1:sy,
                            j * dx:j * dx + sx * (wo - 1) + 1:sx]
            cols[:, :, :, :, i, j] = window.transpose(0, 2, 3, 1)
    return cols.reshape(N * ho * wo, C * kh * kw), (ho, wo)


@dataclass
class ConvCase:
    x: np.ndarray             # (N, C, H, W)
    w: np.ndarray             # (Cout, C, kh, kw)
    bias: np.ndarray          # (Cout,) int32
    geometry: dict            # kernel, strides, pads, dilations
    quant: Quantization       # of the lowered GEMM (patches @ weights)
    want: np.ndarray          # the ONNX reference's output (N, Cout, Ho, Wo)
    model: object

    def lowered(self):
        """``(A, B)`` of the GEMM: the patches (padded with the input's zero point, so the
        padding is a real zero) and the weights as ``(C * kh * kw, Cout)``."""
        A, _ = im2col_nchw(self.x, self.geometry["kernel"], strides=self.geometry["strides"],
                           pads=self.geometry["pads"], dilations=self.geometry["dilations"],
                           pad_value=self.quant.a_zero_point)
        return A, self.w.reshape(len(self.w), -1).T

    def result(self, gemm_out):
        """The GEMM's ``(N * Ho * Wo, Cout)`` result as the convolution's (N, Cout, Ho, Wo)."""
        N, _cout, ho, wo = self.want.shape
        return np.asarray(gemm_out).reshape(N, ho, wo, -1).transpose(0, 3, 1, 2)


def qlinear_conv_case(rng, x_type, *, shape, kernel, strides=(1, 1), pads=(0, 0, 0, 0),
                      dilations=(1, 1), per_channel=True, symmetric_weights=False):
    """QLinearConv of an ``(N, C, H, W)`` input of ``x_type`` with int8 weights (per output
    channel scales and zero points if ``per_channel``; zero points 0 if ``symmetric_weights``,
    as TFLite quantizes weights), an int32 bias and zero points on the input and the output;
    lowered to a GEMM by :meth:`ConvCase.lowered`."""
    N, C, H, W, cout = (int(v) for v in shape)
    out_type = ("uint8", "int8")[rng.integers(2)]
    x = _operand(rng, x_type, (N, C, H, W))
    w = _operand(rng, "int8", (cout, C, *kernel))
    size = (cout,) if per_channel else ()
    zx = _zero_point(rng, x_type, (), False)
    zw = _zero_point(rng, "int8", size, False)
    if symmetric_weights:
        zw = np.zeros_like(zw)
    zy = _zero_point(rng, out_type, (), False)
    x_scale = np.float32(2.0 ** rng.uniform(-8, -2))
    w_scale = (2.0 ** rng.uniform(-8, -2, size=size)).astype(np.float32)
    K = C * kernel[0] * kernel[1]
    y_scale = np.float32(x_scale * np.mean(w_scale) * K * 40 * rng.uniform(0.2, 3))
    bias = rng.integers(-5000, 5000, size=cout).astype(np.int32)
    constants = {"x_scale": np.asarray(x_scale), "x_zero_point": zx,
                 "w_scale": np.asarray(w_scale), "w_zero_point": zw,
                 "y_scale": np.asarray(y_scale), "y_zero_point": zy, "w": w, "B": bias}
    from onnx import helper
    geometry = {"kernel": tuple(kernel), "strides": tuple(strides), "pads": tuple(pads),
                "dilations": tuple(dilations)}
    node = helper.make_node("QLinearConv", ["x", "x_scale", "x_zero_point", "w", "w_scale",
                                            "w_zero_point", "y_scale", "y_zero_point", "B"],
                            ["y"], kernel_shape=list(kernel), strides=list(strides),
                            pads=list(pads), dilations=list(dilations))
    want, model = _run(node, {"x": x}, constants, _tensor_type(out_type))
    quant = Quantization(x_type, "int8", a_zero_point=int(zx),
                         b_zero_point=zw.astype(np.int64) if per_channel else int(zw),
                         scale=onnx_scale(x_scale, w_scale, y_scale), y_zero_point=int(zy),
                         out_type=out_type, round_even=True)
    return ConvCase(x, w, bias.astype(np.int64), geometry, quant, want, model)
