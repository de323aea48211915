"""A real network nobody here wrote, quantized by ONNX Runtime: PaddleOCR's text-line
orientation classifier (``ch_ppocr_mobile_v2.0_cls``, a MobileNetV3 with squeeze-and-excite
blocks and hard-swish, trained by PaddleOCR; two classes, upright and upside down), as the
``rapidocr_onnxruntime`` package on PyPI ships it in float32.

:func:`prepare` renders text lines with matplotlib (upright, and turned by 180 degrees: the
label), preprocesses them as RapidOCR does (48 x 192, ``(x / 255 - 0.5) / 0.5``), runs ONNX
Runtime's pre-processing (shape inference, Conv+BatchNormalization folding) and quantizes the
model with ``onnxruntime.quantization.quantize_static`` on calibration lines, in the QOperator
and the QDQ format, weights int8 per channel, activations uint8. Install the package without
its OCR dependencies (OpenCV and others; only the model file is used)::

    pip install --no-deps rapidocr_onnxruntime==1.3.24

Run ``python -m mxe.sim.importer.textline DIR [--lines N]`` to write ``cls_float.onnx``,
``cls_qop.onnx``, ``cls_qdq.onnx``, ``lines.npy`` (N test lines, N x 3 x 48 x 192 float32)
and ``labels.npy`` (1 where a line is upside down) to DIR.
"""

import importlib.util
import sys
from pathlib import Path

import numpy as np


__all__ = ["model_path", "render_lines", "prepare", "PACKAGE", "MODEL"]

PACKAGE = "rapidocr_onnxruntime"
MODEL = "models/ch_ppocr_mobile_v2.0_cls_infer.onnx"
HEIGHT, WIDTH = 48, 192

_WORDS = ("matrix engine systolic array weight stationary accumulator scratchpad quantized "
          "int8 requantize bias clamp tile stream kernel stride padding dilation channel "
          "onnx runtime reference verilator icarus cocotb amaranth yosys nextpnr ecp5 ice40 "
          "board uart memory burst fence command queue latency cycles utilization 0123456789 "
          "The quick brown fox jumps over the lazy dog").split()


def model_path():
    """The float model inside the installed package; ``None`` when it is not installed."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / MODEL
    return path if path.exists() else None


def render_lines(count, seed):
    """``count`` text lines as RapidOCR's classifier takes them, ``(count, 3, 48, 192)``
    float32 in [-1, 1], and the labels: every other line is turned by 180 degrees (label 1).

    Each line is drawn large, cropped to its ink, turned or not, then resized and padded as
    RapidOCR's ``TextClassifier.resize_norm_img`` does (height 48, the width by the aspect
    ratio up to 192, the rest zero after normalization)."""
    import matplotlib
    matplotlib.use("Agg")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from PIL import Image

    rng = np.random.default_rng(seed)
    lines, labels = [], []
    for i in range(count):
        text = " ".join(rng.choice(_WORDS, size=int(rng.integers(1, 4))))
        fig = Figure(figsize=(16, 1.2), dpi=50)
        canvas = FigureCanvasAgg(fig)
        fig.text(0.01, 0.5, text, fontsize=int(rng.integers(36, 44)), va="center",
                 family=["DejaVu Sans", "DejaVu Serif", "DejaVu Sans Mono"][i % 3],
                 color=str(rng.uniform(0, 0.3)))
        canvas.draw()
        image = np.asarray(canvas.buffer_rgba())[:, :, :3]
        ink = np.argwhere(image.min(axis=2) < 200)
        (top, left), (bottom, right) = ink.min(axis=0), ink.max(axis=0)
        margin = int(rng.integers(2, 6))
        image = image[max(0, top - margin):bottom + margin, max(0, left - margin):right + margin]
        flipped = i % 2 == 1
        if flipped:
            image = image[::-1, ::-1]
        h, w = image.shape[:2]
        width = min(WIDTH, int(np.ceil(HEIGHT * w / h)))
        resized = np.asarray(Image.fromarray(np.ascontiguousarray(image)).resize(
            (width, HEIGHT), Image.BILINEAR), dtype=np.float32)
        line = np.zeros((3, HEIGHT, WIDTH), dtype=np.float32)
        line[:, :, :width] = ((resized / 255.0 - 0.5) / 0.5).transpose(2, 0, 1)
        lines.append(line)
        labels.append(int(flipped))
    return np.stack(lines), np.array(labels)


class _Calibration:
    def __init__(self, lines, name):
        self.items = iter([{name: line[None]} for line in lines])

    def get_next(self):
        return next(self.items, None)


def prepare(directory, *, calibration=32, test=16, seed=0):
    """Write the float model (with a fixed batch of 1), its two quantized forms and test lines
    to ``directory``; returns a dict of the paths.

    Raises
    ------
    FileNotFoundError
        ``rapidocr_onnxruntime`` is not installed (the message says how to install it).
    """
    import onnx
    import onnx.version_converter
    from onnxruntime.quantization import (CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process

    source = model_path()
    if source is None:
        raise FileNotFoundError(f"the float model comes from the {PACKAGE} package: "
                                f"pip install --no-deps {PACKAGE}==1.3.24")
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    model = onnx.load(str(source))
    # A fixed input shape (the model leaves batch, height and width open).
    dims = model.graph.input[0].type.tensor_type.shape.dim
    for dim, value in zip(dims, (1, 3, HEIGHT, WIDTH)):
        dim.Clear()
        dim.dim_value = value
    # Opset 21: per-channel QuantizeLinear/DequantizeLinear need 13 or later, and onnx.reference
    # implements them from 19 on (the package's model is opset 11).
    model = onnx.version_converter.convert_version(model, 21)
    fixed = out / "cls_fixed.onnx"
    onnx.save(model, str(fixed))
    float_path = out / "cls_float.onnx"
    quant_pre_process(str(fixed), str(float_path), skip_symbolic_shape=True)
    fixed.unlink()
    name = model.graph.input[0].name
    calib, _ = render_lines(calibration, seed + 1000)
    lines, labels = render_lines(test, seed)
    paths = {"float": float_path}
    for fmt, suffix in ((QuantFormat.QOperator, "qop"), (QuantFormat.QDQ, "qdq")):
        path = out / f"cls_{suffix}.onnx"
        quantize_static(str(float_path), str(path), _Calibration(calib, name),
                        quant_format=fmt, per_channel=True, activation_type=QuantType.QUInt8,
                        weight_type=QuantType.QInt8, calibrate_method=CalibrationMethod.MinMax)
        paths[suffix] = path
    np.save(out / "lines.npy", lines)
    np.save(out / "labels.npy", labels)
    paths.update(lines=out / "lines.npy", labels=out / "labels.npy")
    return paths


def main(argv=None):
    import argparse
    parser = argparse.ArgumentParser(prog="python -m mxe.sim.importer.textline",
                                     description="quantize PaddleOCR's text-line classifier "
                                                 "and render test lines")
    parser.add_argument("directory")
    parser.add_argument("--lines", type=int, default=16,
                        help="test lines (the first N of the same sequence) (default: 16)")
    parser.add_argument("--calibration", type=int, default=32,
                        help="calibration lines (default: 32)")
    args = parser.parse_args(argv)
    if args.lines < 1 or args.calibration < 1:
        parser.error("--lines and --calibration must be at least 1")
    try:
        written = prepare(args.directory, calibration=args.calibration, test=args.lines)
    except FileNotFoundError as exc:
        sys.exit(f"error: {exc}")
    for kind, path in written.items():
        print(f"{kind:<7}{path}")


if __name__ == "__main__":
    main()
