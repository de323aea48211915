"""ONNX models on the engine: :func:`import_model` maps a model's quantized linear layers onto
the engine and everything else onto the host; :func:`execute` runs the result (see
``docs/onnx.md``)."""

from mxe.sim.importer.execute import GoldenEngine, execute
from mxe.sim.importer.program import (ENGINE_OPERATORS, EngineLayer, HostLayer, Program,
                                      UnsupportedOperator, import_model)

__all__ = ["import_model", "execute", "Program", "EngineLayer", "HostLayer", "GoldenEngine",
           "UnsupportedOperator", "ENGINE_OPERATORS"]
