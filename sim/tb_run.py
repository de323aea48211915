"""cocotb bench of ``mxe run``: ONNX models on the engine RTL, served over a socket.

:class:`mxe.sim.importer.session.EngineSession` starts this bench through
:func:`mxe.sim.runner.run_bench` and listens on a Unix socket (``MXE_PARAMS``: ``address``,
``latency``). The bench connects, says ``("ready", config)``, then answers requests until it
receives ``None``:

``("infer", key, model_bytes or None, feeds)``
    Import the model (sent once per key), run one inference with the engine layers on the RTL
    through :class:`~mxe.sim.driver.MXEDriver` and the host layers in numpy; answer
    ``("ok", outputs, layers)`` (layers: the per-layer report of this inference) or
    ``("error", message, exception type)``.

The bench computes no reference: the host compares with ONNX Runtime and ``onnx.reference``.
"""

import socket
import traceback
from multiprocessing.connection import Connection

import cocotb

from mxe.sim.tb_engine import setup


@cocotb.test()
async def test_serve(dut):
    """Serve inferences until the host says stop."""
    from mxe.sim.importer import execute, import_model
    from mxe.sim.runner import bench_params
    import onnx

    params = bench_params()
    tb = await setup(dut, pause=0.0, latency=params.get("latency", 4))
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(params["address"])
    conn = Connection(sock.detach())
    conn.send(("ready", tb.config.to_json()))
    programs = {}
    served = 0
    while True:
        try:
            request = conn.recv()       # the simulation waits here: no time passes
        except EOFError:
            break
        if request is None:
            break
        _kind, key, model_bytes, feeds = request
        try:
            if model_bytes is not None:
                programs[key] = import_model(onnx.load_from_string(model_bytes))
            stats = {}
            outputs, stats = await execute(programs[key], feeds, tb.drv, stats)
            conn.send(("ok", outputs, [s.as_dict(tb.config) for s in stats.values()]))
            served += 1
        except Exception as exc:        # noqa: BLE001 - the host raises it
            tb.log.error("request failed: %s", traceback.format_exc())
            message = str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
            conn.send(("error", message, type(exc) if type(exc).__module__ in (
                "builtins", "mxe.sim.importer.program") else None))
            # The engine may be stopped on an error: a soft reset gets it going again.
            await tb.drv.soft_reset()
            await tb.drv.set_window(*tb.drv.window)
    conn.close()
    tb.log.info("served %d inferences", served)
