"""One simulator process serving many inferences: :class:`EngineSession`.

The engine RTL runs under cocotb in a simulator process of its own (:mod:`mxe.sim.tb_run`).
A session starts it once (one build per configuration, cached by :func:`mxe.sim.runner.run_bench`)
and sends it requests over a Unix socket: a model (once), then inputs; the bench runs each
inference on the RTL through :class:`~mxe.sim.driver.MXEDriver` and answers with the outputs
and the per-layer report. While the bench waits for a request the simulation does not advance,
so the host may take its time between requests.
"""

import hashlib
import os
import shutil
import socket
import tempfile
import threading
from multiprocessing.connection import Connection

from mxe.hw.config import EngineConfig


__all__ = ["EngineSession", "EngineFailed"]


class EngineFailed(RuntimeError):
    """The simulator process failed or stopped answering; the message has its log."""


class EngineSession:
    """The engine RTL in a simulator, ready for inferences.

    Parameters
    ----------
    simulator : "verilator" or "icarus"
    config : EngineConfig, optional
        The engine (default: the ``small`` preset). It needs signed 8-bit operands and 32-bit
        accumulators (ONNX's int32).
    latency : int
        Memory latency in cycles of the bench's AXI memory.
    startup_timeout : float
        Seconds to wait for the simulator (its build included).

    Use as a context manager, or call :meth:`start` and :meth:`close`.
    """

    def __init__(self, simulator="verilator", config=None, *, latency=4, seed=0,
                 startup_timeout=3600.0):
        from mxe.sim.runner import SIMULATORS, simulator_missing
        if simulator not in SIMULATORS:
            raise ValueError(f"simulator must be one of {', '.join(SIMULATORS)}, not "
                             f"{simulator!r}")
        missing = simulator_missing(simulator)
        if missing:
            raise RuntimeError(f"cannot run {simulator}: {missing}")
        config = EngineConfig.preset("small") if config is None else config
        if not isinstance(config, EngineConfig):
            raise TypeError(f"config must be an EngineConfig, not {config!r}")
        if not config.signed or config.input_width != 8 or config.acc_width != 32:
            raise ValueError(f"config must have signed 8-bit operands and 32-bit accumulators "
                             f"for ONNX's int8 and int32, not {config.key()}")
        self.simulator = simulator
        self.config = config
        self.latency = latency
        self.seed = seed
        self.startup_timeout = startup_timeout
        self._conn = None
        self._thread = None
        self._failure = None
        self._dir = None
        self._models = set()
        self.run_dir = None

    # Life cycle.

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.close()

    def start(self):
        import time
        if self._conn is not None:
            return self
        self._dir = tempfile.mkdtemp(prefix="mxe-run-")
        address = os.path.join(self._dir, "socket")
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        server.bind(address)
        server.listen(1)
        server.settimeout(0.5)
        self._thread = threading.Thread(target=self._bench, args=(address,), daemon=True)
        self._thread.start()
        deadline = time.monotonic() + self.startup_timeout
        try:
            while True:
                try:
                    client, _ = server.accept()
                    break
                except socket.timeout:
                    if not self._thread.is_alive():
                        raise EngineFailed(f"the {self.simulator} bench stopped before it "
                                           f"connected: {self._failure}")
                    if time.monotonic() > deadline:
                        raise EngineFailed(f"the {self.simulator} bench did not connect in "
                                           f"{self.startup_timeout:.0f} s")
        finally:
            server.close()
        client.settimeout(None)
        self._conn = Connection(client.detach())
        kind, *rest = self._receive()
        if kind != "ready":
            raise EngineFailed(f"the bench said {kind!r} instead of ready")
        return self

    def _bench(self, address):
        from mxe.hw.generate import TOPS
        from mxe.sim.runner import run_bench
        make, top = TOPS["engine"]
        try:
            self.run_dir = run_bench(sim=self.simulator, name=top, make_component=make,
                                     config=self.config, test_module="mxe.sim.tb_run",
                                     testcase="test_serve", seed=self.seed,
                                     params={"address": address, "latency": self.latency})
        except BaseException as exc:       # noqa: BLE001 - reported through _failure
            self._failure = exc

    def _receive(self):
        while not self._conn.poll(0.5):
            if not self._thread.is_alive():
                raise EngineFailed(f"the {self.simulator} bench stopped: {self._failure}")
        try:
            return self._conn.recv()
        except EOFError:
            self._thread.join(5)
            raise EngineFailed(f"the {self.simulator} bench closed the connection: "
                               f"{self._failure}") from None

    def close(self):
        if self._conn is not None:
            try:
                self._conn.send(None)
            except OSError:
                pass
            self._conn.close()
            self._conn = None
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._dir:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None
        failure, self._failure = self._failure, None
        if failure is not None:
            raise EngineFailed(f"the {self.simulator} bench failed: {failure}")

    # Requests.

    def infer(self, model_bytes, feeds):
        """One inference of the serialized model on the RTL: ``(outputs, layer stats)``, the
        stats a list of :meth:`LayerStats.as_dict <mxe.sim.importer.execute.LayerStats>`
        dicts of this inference alone."""
        if self._conn is None:
            self.start()
        key = hashlib.sha256(model_bytes).hexdigest()
        payload = None if key in self._models else model_bytes
        self._conn.send(("infer", key, payload, feeds))
        kind, *rest = self._receive()
        if kind == "error":
            raise rest[1](rest[0]) if isinstance(rest[1], type) and \
                issubclass(rest[1], Exception) else EngineFailed(rest[0])
        self._models.add(key)
        outputs, layers = rest
        return outputs, layers
