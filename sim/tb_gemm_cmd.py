"""End-to-end cocotb bench of the hardware GEMM command (``GEMM_A/B/C``, :mod:`mxe.hw.gemm_unit`).

The engine runs whole GEMMs from one descriptor each. Every result is checked against the numpy
model, the whole memory image against the command-level model running the same descriptor
(:mod:`mxe.sim.engine_model` expands it with :mod:`mxe.sim.gemm_model`), the counters against the
expansion, and the cycles against :func:`predicted_cycles`. Parameters (``MXE_PARAMS``):
``shapes`` (``[[M, K, N], ...]``), ``random`` (``[count, max_dim]``), ``pause``, ``latency``,
``cycle_shapes`` (shapes whose cycles are checked, run with no pauses).
"""

import cocotb
import numpy as np

from mxe.hw.isa import ErrorCode
from mxe.hw.array import array_latency
from mxe.hw.gemm_unit import TILES_AHEAD
from mxe.hw.postproc import postproc_latency
from mxe.sim import commands as cmds
from mxe.sim.driver import MXEError, pack_operands, plan_gemm, unpack_result
from mxe.sim.engine_model import EngineModel
from mxe.sim.gemm_model import descriptor, expand_fields, schedule, traffic
from mxe.sim.model import Requant
from mxe.sim.tb_engine import WINDOW, check_image, expected_result, random_options, setup


__all__ = ["gemm_descriptor", "predicted_cycles"]


def predicted_cycles(config, M, K, N, *, latency=16):
    """Busy cycles expected of a descriptor GEMM without bias, as ``(estimate, low, high)``.

    A model of the expansion (:func:`mxe.sim.gemm_model.expand_fields`) on the engine, with the
    driver's layout (rows start on a bus beat). A memory round trip takes ``rt = latency + 6``
    cycles; the DMA keeps ``max_outstanding_reads`` one-row bursts in flight, so a row of ``b``
    beats costs ``max(b, rt / max_outstanding_reads)`` cycles, and the load unit pipelines its
    LOADs (one round trip in all, plus 4 cycles a LOAD). A MATMUL costs ``max(m, rows)``
    cycles (weights load behind the previous activations). With whole strips the first MATMUL
    waits for the first loads and the second tile for the second strip (it loads after the
    first tile), and a strip loads only after the previous tile has started (so strips set the
    pace when a tile's compute is shorter than a strip's load); with single B tiles a MATMUL
    costs at least a LOAD's round trip (``rt + rows + 10``) shared by the
    :data:`~mxe.hw.gemm_unit.TILES_AHEAD` LOADs in flight.
    The estimate is the largest of compute (with those waits), loads and stores, plus the
    set-up (150 cycles), the array's and the post-processor's latencies and the last STORE.
    ``low`` is what no schedule beats: the larger of the array's work and the bus beats of the
    expansion's traffic.

    Measured on the regression's shapes (latency 16): busy / estimate is 1.00..1.29, largest
    for the smallest shapes (1x64x64 on ``tiny``, latency-bound: every command passes the
    controller's three steps);
    :func:`test_gemm_cmd_cycles` checks ``max(low, 0.95 * estimate) <= busy <= 1.3 *
    estimate``.
    """
    c = config
    s, error = schedule(c, M, K, N)
    assert error is None
    L = plan_gemm(c, M, K, N).layout      # the layout the benches use
    fields = dict(m=M, k=K, n=N, bias=0, relu=0, requant=0, per_channel=0, channel_offset=0,
                  a_offset=L["a"].offset, a_stride=L["a"].stride, b_offset=L["b"].offset,
                  b_stride=L["b"].stride, c_offset=L["c"].offset, c_stride=L["c"].stride)
    rt = latency + 6
    per_row = rt / c.max_outstanding_reads
    tile_load = (rt + c.rows + 10) / TILES_AHEAD + 1   # a single B tile's LOAD, pipelined
    work = compute = loads = stores = last_store = 0
    first = None
    for command in expand_fields(c, fields):
        name, f = cmds.decode(command)
        if name == "MATMUL":
            work += max(f["m"], c.rows)
            compute += max(f["m"], c.rows, 0 if s.whole else tile_load)
            if first is None:
                first = loads + rt
        else:
            nbytes = c.elem_bytes if name == "LOAD" else c.acc_elem_bytes
            beats = -(-f["elems"] * nbytes // c.axi_bytes)
            t = f["rows"] * max(beats, per_row) + 4
            if name == "LOAD":
                loads += t
            else:
                stores += t
                last_store = t
    strips = 0
    if s.whole and s.nt > 1:
        first += rt + K * max(1, per_row)
        # A strip loads only once the tile before its own has started: when the tiles compute
        # faster than strips load, the strips set the pace.
        strips = s.mt * s.nt * (rt + 10 + K * max(1, per_row))
    rd, wr = traffic(c, M, K, N)
    low = max(work, -(-rd // c.axi_bytes), -(-wr // c.axi_bytes))
    estimate = int(max(compute + first, loads + rt, stores, strips + first) + 150
                   + array_latency(c) + postproc_latency(c) + last_store + rt)
    return estimate, low, int(1.3 * estimate)


async def gemm_descriptor(tb, A, B, bias=None, relu=False, requant=None, *, check=True):
    """One GEMM through the hardware descriptor on :class:`EngineTB` ``tb``; on an engine
    without the GEMM unit, through the driver's command stream instead
    (:meth:`mxe.sim.driver.MXEDriver.gemm_commands`).

    Returns ``(C, counters)``; with ``check``, the memory image is compared with the model (and
    the counters with the model's, where the engine has them)."""
    c = tb.config
    drv = tb.drv
    M, K = A.shape
    N = B.shape[1]
    plan = plan_gemm(c, M, K, N, bias=bias is not None, relu=relu, requant=requant)
    win = drv.window[0]
    for offset, data in pack_operands(plan, A, B, bias).items():
        tb.ram.write(win + offset, data)
    commands = drv.gemm_commands(plan, descriptor=True)
    model_mem = None
    if check:
        model_mem = tb.image()
        model = EngineModel(c, model_mem, *drv.window)
        outcome = model.run(commands)
        assert outcome.ok, outcome
    before = await drv.counters()
    # A stream's timeout is the driver's own, per FENCE.
    timeout = (20 * predicted_cycles(c, M, K, N)[2] + 100_000
               if commands is not plan.commands else None)
    await drv.run(commands, timeout_cycles=timeout)
    after = await drv.counters()
    counters = {k: (after[k] - before[k]) % (1 << 64) for k in after}
    region = plan.layout["c"]
    C = unpack_result(plan, tb.ram.read(win + region.offset, region.nbytes))
    if check:
        check_image(tb.image(), model_mem, plan, win)
    if check and drv.config.perf_counters:
        assert counters["DMA_RD_BYTES"] == model.counters["dma_rd_bytes"], counters
        assert counters["DMA_WR_BYTES"] == model.counters["dma_wr_bytes"], counters
        assert counters["MAC_ACTIVE_CYCLES"] == model.counters["mac_active"], counters
    return C, counters


@cocotb.test()
async def test_gemm_cmd(dut):
    """Descriptor GEMMs of given and random shapes with random options, against the model."""
    tb = await setup(dut)
    c = tb.config
    shapes = [tuple(s) for s in tb.params.get("shapes", [[5, 7, 6]])]
    count, top = tb.params.get("random", [2, 40])
    shapes += [tuple(int(x) for x in tb.rng.integers(1, top + 1, size=3)) for _ in range(count)]
    # One more with a bias and per-column requantization over several N tiles: the table of
    # multipliers and shifts follows the bias values, and is reloaded with every N tile.
    shapes.append((c.rows + 2, 2 * c.rows + 1, 2 * c.cols + 3))
    for i, (M, K, N) in enumerate(shapes):
        A, B = tb.operands(M, K, N)
        bias, relu, requant = random_options(tb.rng, c, N)
        if i == len(shapes) - 1:
            bias = tb.rng.integers(-1000 if c.signed else 0, 1000, size=N)
            requant = Requant(tb.rng.integers(1, 1 << 20, size=N).tolist(),
                              tb.rng.integers(10, 24, size=N).tolist(), zero_point=7,
                              round_even=True)
        tb.drv.use_irq = i % 2 == 0
        C, counters = await gemm_descriptor(tb, A, B, bias, relu, requant)
        want = expected_result(c, A, B, bias, relu, requant)
        bad = np.argwhere(C != want)
        assert not bad.size, f"{M}x{K}x{N}: {len(bad)} wrong results, first at {bad[0]}"
        tb.log.info("descriptor GEMM %dx%dx%d bias=%s relu=%s requant=%s: %d busy cycles, "
                    "schedule %s", M, K, N, bias is not None, relu, requant,
                    counters["BUSY_CYCLES"], schedule(c, M, K, N)[0])


@cocotb.test()
async def test_gemm_cmd_cycles(dut):
    """Busy cycles of descriptor GEMMs (no pauses, memory latency 16) within
    :func:`predicted_cycles`."""
    tb = await setup(dut, pause=0.0, latency=16)
    c = tb.config
    bad = []
    for M, K, N in tb.params.get("cycle_shapes", [[4 * c.rows, 4 * c.rows, 4 * c.cols]]):
        A, B = tb.operands(M, K, N)
        _C, counters = await gemm_descriptor(tb, A, B)
        estimate, low, high = predicted_cycles(c, M, K, N)
        busy = counters["BUSY_CYCLES"]
        tb.log.info("cycles %dx%dx%d: busy %d, estimate %d (%.2f), lower bound %d, limit %d",
                    M, K, N, busy, estimate, busy / estimate, low, high)
        if not max(low, 0.95 * estimate) <= busy <= high:
            bad.append(f"{M}x{K}x{N}: {busy} busy cycles, expected "
                       f"{max(low, int(0.95 * estimate))}..{high}")
    assert not bad, "; ".join(bad)


@cocotb.test()
async def test_gemm_cmd_refused(dut):
    """Zero dimensions (BAD_DIM) and a K no scratchpad holds (BAD_ADDR): STATUS.error,
    ERR_CMD_INDEX as the model counts, nothing written; a good descriptor after a soft reset."""
    tb = await setup(dut)
    c = tb.config
    big_k = 65535
    cases = [((0, 3, 3), ErrorCode.BAD_DIM), ((3, 3, 0), ErrorCode.BAD_DIM)]
    if schedule(c, 2, big_k, 2)[1] == ErrorCode.BAD_ADDR:
        cases.append(((2, big_k, 2), ErrorCode.BAD_ADDR))
    for (M, K, N), code in cases:
        await tb.drv.soft_reset()
        good = plan_gemm(c, 3, 3, 3)
        prefix = [cmds.load(0, 0, 1, 1, 0)]
        commands = prefix + descriptor(M, K, N, a_offset=0, a_stride=1, b_offset=0,
                                       b_stride=1, c_offset=0x800, c_stride=4) + \
            [cmds.store(0, 0x900, 1, 1, 0), cmds.fence()]
        model_mem = tb.image()
        model = EngineModel(c, model_mem, *tb.drv.window)
        outcome = model.run(commands)
        assert outcome.error == code and outcome.index == len(prefix), outcome
        try:
            await tb.drv.run(commands)
        except MXEError as exc:
            assert exc.code == code, f"{M}x{K}x{N}: {exc.code.name}, expected {code.name}"
            assert exc.index == outcome.index, f"ERR_CMD_INDEX {exc.index}, " \
                f"expected {outcome.index}"
        else:
            raise AssertionError(f"{M}x{K}x{N}: no error; expected {code.name}")
        check_image(tb.image(), model_mem, good, WINDOW[0])
        st = await tb.drv.status()
        assert not st["busy"], "busy after a refused descriptor"
    await tb.drv.soft_reset()
    A, B = tb.operands(c.rows + 3, 2 * c.rows + 1, c.cols + 2)
    C, _counters = await gemm_descriptor(tb, A, B)
    assert (C == expected_result(c, A, B, None, False, None)).all()
