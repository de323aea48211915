"""cocotb bench of ``mxe bench --network``: one of :data:`mxe.sim.networks.NETWORKS` on the
engine RTL, layer by layer.

It builds the network from its name and seed (:func:`mxe.sim.networks.build`), runs it with
:func:`mxe.sim.networks.run_on_engine` and leaves every layer's output in ``network.npz`` and
the per-layer counters in ``network.json`` in the test directory. It computes no reference: the
caller checks the outputs against :func:`mxe.sim.networks.reference`.

Parameters (``MXE_PARAMS``): ``network``, ``seed`` (the network's values), ``latency`` (memory
latency in cycles, default 16).
"""

import json
import time

import cocotb
import numpy as np

from mxe.sim import networks
from mxe.sim.runner import bench_params
from mxe.sim.tb_bench import BenchTB, fast_models


@cocotb.test()
async def test_network(dut):
    params = bench_params()
    fast_models(True)
    tb = BenchTB(dut, latency=params.get("latency", 16))
    await tb.reset()
    net = networks.build(params["network"], tb.config, params["seed"])

    def done(i):
        tb.log.info("layer %d of %d (%s) done", i + 1, len(net.layers), net.layers[i].name)

    start = time.monotonic()
    outputs, stats = await networks.run_on_engine(tb.drv, net, done=done)
    np.savez("network.npz", **outputs)
    with open("network.json", "w") as f:
        json.dump({"layers": stats, "seconds": time.monotonic() - start}, f)
