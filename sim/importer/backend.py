"""An ONNX backend (``onnx.backend.base.Backend``) that runs models with their quantized
linear layers on the engine: the shim through which ONNX's backend node tests run on the RTL
(``tests/test_onnx_backend.py``).

``MXEBackend.prepare(model, engine=...)`` imports the model; the representation's ``run(inputs)``
runs one inference on the engine (a running
:class:`~mxe.sim.importer.session.EngineSession`, ``"golden"``, or a simulator name) and
returns the outputs in the graph's order. ``rep.layers`` holds the last run's per-layer report.
"""

from onnx.backend.base import Backend, BackendRep


__all__ = ["MXEBackend", "MXEBackendRep"]


class MXEBackendRep(BackendRep):
    def __init__(self, model, engine, config):
        from mxe.sim.importer.program import import_model
        self.model = model
        self.program = import_model(model)
        self.engine = engine
        self.config = config
        self.layers = None

    def run(self, inputs, **kwargs):
        from mxe.sim.importer.api import run
        if isinstance(inputs, dict):
            feed = dict(inputs)
        else:
            inputs = list(inputs) if isinstance(inputs, (list, tuple)) else [inputs]
            if len(inputs) != len(self.program.inputs):
                raise ValueError(f"inputs: the model takes {len(self.program.inputs)}, "
                                 f"not {len(inputs)}")
            feed = dict(zip(self.program.inputs, inputs))
        result = run(self.model, [feed], engine=self.engine, config=self.config)
        self.layers = result.layers
        return tuple(result.outputs[0][name] for name in self.program.outputs)


class MXEBackend(Backend):
    """Set ``MXEBackend.engine`` (or pass ``engine=`` to :meth:`prepare`) to the engine to run
    on; the default is the numpy golden model."""
    engine = "golden"
    config = None

    @classmethod
    def prepare(cls, model, device="CPU", engine=None, config=None, **kwargs):
        super().prepare(model, device, **kwargs)
        return MXEBackendRep(model, engine or cls.engine, config or cls.config)

    @classmethod
    def run_model(cls, model, inputs, device="CPU", **kwargs):
        return cls.prepare(model, device, **kwargs).run(inputs)

    @classmethod
    def supports_device(cls, device):
        return device == "CPU"
