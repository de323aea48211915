"""cocotb bench of ``mxe demo``: the quantized digits network on the engine RTL.

The host side (:mod:`mxe.scripts.cmd_demo` / ``tests/test_demo.py``) trains and quantizes the
network and writes it with :func:`mxe.sim.demo.save_network`; this bench runs it batch by batch
with :func:`mxe.sim.demo.run_network`: every dense layer one :meth:`MXEDriver.gemm
<mxe.sim.driver.MXEDriver.gemm>`, the convolution one :meth:`MXEDriver.conv2d
<mxe.sim.driver.MXEDriver.conv2d>` (convolution descriptors on an engine with the convolution
unit, else one GEMM of its patches); bias, ReLU and requantization in the engine's
post-processor, each layer's input the engine's own output of the layer before. It computes no
reference: the caller compares the outputs with the int8 golden model it computed itself.

Parameters (``MXE_PARAMS``, JSON): ``network`` (path of the ``.npz``), ``batch`` (samples per
GEMM), ``progress`` (optional path: the number of samples done is written there after every
batch), ``pause`` (probability of a pause cycle on every AXI channel, default 0), ``latency``
(memory latency, default 4). Results go to ``demo.npz`` (every layer's outputs ``out<i>``) and
``demo.json`` (per-layer counter sums, GEMM shapes, how each layer ran) in the test directory.
"""

import json
import os
import time

import cocotb
import numpy as np

from mxe.sim.demo import load_network, run_network
from mxe.sim.tb_engine import setup


@cocotb.test()
async def test_demo(dut):
    """Every sample of the network file through the engine, batch by batch."""
    from mxe.sim.runner import bench_params
    params = bench_params()
    tb = await setup(dut, pause=params.get("pause", 0.0), latency=params.get("latency", 4))
    layers, x_q = load_network(params["network"])
    batch = int(params.get("batch", 32))
    progress = params.get("progress")
    c = tb.config
    t0 = time.monotonic()

    def done(samples):
        if progress:
            tmp = f"{progress}.tmp"
            with open(tmp, "w") as f:
                f.write(str(samples))
            os.replace(tmp, progress)
        tb.log.info("%d samples done", samples)

    outputs, stats = await run_network(tb.drv, layers, x_q, batch=batch, done=done)
    np.savez("demo.npz", **{f"out{i}": o for i, o in enumerate(outputs)})
    with open("demo.json", "w") as f:
        json.dump({"layers": stats, "batch": batch, "samples": int(len(x_q)),
                   "config": c.to_dict(), "seed": tb.seed,
                   "sim_seconds": time.monotonic() - t0}, f)
