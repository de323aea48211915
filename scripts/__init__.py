"""MXE: the ``mxe`` command (one ``cmd_*`` module per sub-command) and the Python API.

``mxe.run(model, inputs, engine="verilator")`` runs an ONNX model with its quantized linear
layers on the engine (see :func:`mxe.sim.importer.api.run` and ``docs/onnx.md``).
"""

__all__ = ["run"]


def run(model, inputs, engine="verilator", **kwargs):
    """An ONNX model on the engine: :func:`mxe.sim.importer.api.run` (imported on first use, so
    that the ``mxe`` command does not load ONNX for every sub-command)."""
    from mxe.sim.importer.api import run as run_model
    return run_model(model, inputs, engine, **kwargs)
