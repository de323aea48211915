"""Host implementations of the ``com.microsoft`` operators ONNX Runtime's quantizer writes in
the QOperator format, which ``onnx.reference`` does not have.

They follow the contrib operator documentation of ONNX Runtime (dequantize the inputs, compute
in float32, quantize the result: round half to even, saturate). ONNX Runtime's own kernels use
lookup tables and fixed-point shortcuts, so their outputs may differ by one in rare places; the
run's agreement with ONNX Runtime counts such differences.
"""

import numpy as np
from onnx.reference.op_run import OpRun


__all__ = ["HOST_OPS"]


def _dequantize(x, scale, zero):
    zero = 0 if zero is None else zero.astype(np.int32)
    return (x.astype(np.int32) - zero).astype(np.float32) * np.float32(scale)


def _quantize(v, scale, zero, dtype):
    zero_value = 0 if zero is None else int(np.asarray(zero).reshape(()))
    info = np.iinfo(dtype)
    q = np.rint(v / np.float32(scale)) + zero_value
    return np.clip(q, info.min, info.max).astype(dtype)


def _out_dtype(zero, fallback):
    return fallback if zero is None else np.asarray(zero).dtype


class QLinearAdd(OpRun):
    op_domain = "com.microsoft"

    def _run(self, a, a_scale, a_zero_point, b, b_scale, b_zero_point, c_scale,
             c_zero_point=None):
        v = _dequantize(a, a_scale, a_zero_point) + _dequantize(b, b_scale, b_zero_point)
        return (_quantize(v, c_scale, c_zero_point, _out_dtype(c_zero_point, a.dtype)),)


class QLinearMul(OpRun):
    op_domain = "com.microsoft"

    def _run(self, a, a_scale, a_zero_point, b, b_scale, b_zero_point, c_scale,
             c_zero_point=None):
        v = _dequantize(a, a_scale, a_zero_point) * _dequantize(b, b_scale, b_zero_point)
        return (_quantize(v, c_scale, c_zero_point, _out_dtype(c_zero_point, a.dtype)),)


class QLinearGlobalAveragePool(OpRun):
    op_domain = "com.microsoft"

    def _run(self, x, x_scale, x_zero_point, y_scale, y_zero_point=None, channels_last=None):
        channels_last = channels_last or 0
        axes = tuple(range(1, x.ndim - 1)) if channels_last else tuple(range(2, x.ndim))
        v = _dequantize(x, x_scale, x_zero_point).mean(axis=axes, keepdims=True,
                                                       dtype=np.float32)
        return (_quantize(v, y_scale, y_zero_point, _out_dtype(y_zero_point, x.dtype)),)


class QLinearSoftmax(OpRun):
    op_domain = "com.microsoft"

    def _run(self, x, x_scale, x_zero_point, y_scale, y_zero_point=None, axis=None,
             opset=None):
        axis = -1 if axis is None else axis
        v = _dequantize(x, x_scale, x_zero_point)
        e = np.exp(v - v.max(axis=axis, keepdims=True))
        v = (e / e.sum(axis=axis, keepdims=True)).astype(np.float32)
        return (_quantize(v, y_scale, y_zero_point, _out_dtype(y_zero_point, x.dtype)),)


class QGemm(OpRun):
    """``Y = (A - za) @ (B - zb) + C`` (C an int32 bias in units of ``a_scale * b_scale``),
    requantized with ``a_scale * b_scale / y_scale`` as ONNX's reference requantizes
    QLinearMatMul (``rint`` of the float64 product, saturated); without ``y_scale``, the float
    ``alpha * a_scale * b_scale * Y``."""
    op_domain = "com.microsoft"

    def _run(self, a, a_scale, a_zero_point, b, b_scale, b_zero_point, c=None, y_scale=None,
             y_zero_point=None, alpha=None, transA=None, transB=None):
        A = a.astype(np.int64) - np.asarray(a_zero_point).astype(np.int64)
        if transA:
            A = A.T
        zb = np.asarray(b_zero_point).astype(np.int64)
        B = b.astype(np.int64)
        B = (B.T if transB else B) - (zb.reshape(1, -1) if zb.size > 1 else zb)
        acc = A @ B
        if c is not None:
            acc = acc + c.astype(np.int64)
        alpha = 1.0 if alpha is None else alpha
        if y_scale is None:
            return ((np.float32(alpha) * (a_scale * b_scale)).astype(np.float32)
                    * acc.astype(np.float32),)
        scale = np.float32(alpha) * (a_scale * b_scale) / y_scale
        zero = 0 if y_zero_point is None else int(np.asarray(y_zero_point).reshape(()))
        dtype = _out_dtype(y_zero_point, np.dtype(np.uint8))
        info = np.iinfo(dtype)
        return (np.clip(np.rint(acc * scale.astype(np.float64) + zero), info.min,
                        info.max).astype(dtype),)


#: The operators the host adds to ``onnx.reference``'s.
HOST_OPS = [QLinearAdd, QLinearMul, QLinearGlobalAveragePool, QLinearSoftmax, QGemm]
