"""One GEMM through the whole engine, for ``mxe gemm``: the result checked against the golden
model and the engine's counters left in ``gemm.json``.

Parameters (``MXE_PARAMS``): ``m``, ``k``, ``n``; ``latency`` (memory latency in cycles,
default 16); ``pause`` (probability of a pause cycle on every bus channel, default 0).
"""

import cocotb

from mxe.sim.tb_array import write_result
from mxe.sim.tb_engine import EngineTB


@cocotb.test()
async def test_one_gemm(dut):
    tb = EngineTB(dut, pause=tb_param("pause", 0.0), latency=tb_param("latency", 16))
    await tb.reset()
    m, k, n = (tb.params[name] for name in ("m", "k", "n"))
    # gemm_checked asserts the result, the whole memory image and the counters.
    _c, counters, plan = await tb.gemm_checked(m, k, n, options=(None, False, None))
    write_result("gemm", m=m, k=k, n=n, counters=counters, schedule=str(plan.schedule),
                 mismatches=0, results=m * n)


def tb_param(name, default):
    from mxe.sim.runner import bench_params
    return bench_params().get(name, default)
