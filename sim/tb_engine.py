"""End-to-end cocotb bench of the whole engine (``mxe_engine``) with the Python driver.

cocotbext-axi's ``AxiLiteMaster`` drives ``s_axil_*``; the memory on ``m_axi_*`` is an ``AxiRam``
(:class:`mxe.sim.tb_dma.LatencyRam`: latency and SLVERR regions), with random pauses on every
channel of both buses. GEMMs go through :class:`mxe.sim.driver.MXEDriver`; every result is
checked against the numpy model (``postprocess(matmul(A, B))``) and the whole memory image against
the command-level model (:mod:`mxe.sim.engine_model`) running the same command stream, so a
stray write anywhere fails. Run through :func:`mxe.sim.runner.run_bench`; parameters
(``MXE_PARAMS``, JSON):

``shapes``
    ``[[M, K, N], ...]`` for ``test_gemm`` (random options per shape).
``random``
    Extra random shapes for ``test_gemm``: ``[count, max_dim]``.
``pause``
    Probability of a pause cycle on every AXI and AXI-Lite channel (default 0.2).
``latency``
    Memory latency in cycles (default 4).
``descriptor``
    Ask the driver for the hardware GEMM descriptor (``MXEDriver.gemm(descriptor=True)``; an
    engine without the GEMM unit gets the command stream instead). Default false.
``chain``
    For ``test_chain``: ``{"m": M, "widths": [K, N1, N2, ...], "after_stores": true,
    "stale": false, "w_pause": 0.0, "compare": false}``. ``w_pause`` is the probability of a
    pause on the W channel alone (writes reach memory slowly); ``stale`` expects the hazard
    (without ``after_stores``); ``compare`` also runs the layers with a wait for done between
    them and writes both cycle counts to ``chain_measure.json``.
"""

import json

import logging
import random

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import RisingEdge
from cocotbext.axi import AxiBus, AxiLiteBus, AxiLiteMaster

from mxe.hw.isa import REQUIRES, ErrorCode
from mxe.hw.regmap import CAPABILITIES, CONFIG_REGISTERS, COUNTERS, REGISTERS
from mxe.sim import commands as cmds
from mxe.sim.cycle_model import lower_bound, naive_cycles
from mxe.sim.driver import (MXEDriver, MXEError, _align, chain_commands, chain_operands,
                            counter_names, descriptor_commands, pack_operands, plan_chain,
                            plan_gemm)
from mxe.sim.transport import CocotbTransport
from mxe.sim.engine_model import EngineModel, bad_commands, read_bursts
from mxe.sim.model import Requant, matmul, postprocess_columns, random_operands
from mxe.sim.runner import bench_config, bench_params, bench_seed, bus_channels
from mxe.sim.tb_dma import LatencyRam

CLOCK_NS = 10
MEM_SIZE = 1 << 20
#: The DMA window the benches use: not at address 0, not at the end of memory.
WINDOW = (0x1000, MEM_SIZE - 0x1000)


def expected_result(config, A, B, bias, relu, requant):
    """``postprocess(matmul(A, B))`` for any N."""
    return postprocess_columns(matmul(A, B, config), config, bias=bias, relu=relu,
                               requant=requant)


def random_options(rng, config, N):
    bias = None
    if rng.random() < 0.5:
        hi = min((1 << (config.acc_width - 1)) - 1, 1 << 20)
        lo = -hi if config.signed else 0
        bias = rng.integers(lo, hi, size=N, endpoint=True)
    relu = bool(rng.random() < 0.5)
    requant = None
    if rng.random() < 0.5:
        clamp = [None, (-128, 127), (0, 255), (-20, 90), (3, 200)][rng.integers(5)]
        per_column = rng.random() < 0.5   # a different multiplier and shift in every column
        size = N if per_column else None
        requant = Requant(rng.integers(1, 1 << 16, size=size).tolist(),
                          rng.integers(4, 20, size=size).tolist(),
                          zero_point=int(rng.integers(-256, 256)) if rng.random() < 0.5 else 0,
                          clamp=clamp, round_even=bool(rng.random() < 0.5))
    return bias, relu, requant


class EngineTB:
    """Clock, buses, memory, driver; reset; backpressure."""

    def __init__(self, dut, *, pause=None, latency=None):
        self.dut = dut
        self.config = bench_config()
        self.params = bench_params()
        self.seed = bench_seed()
        self.rng = np.random.default_rng(self.seed)
        self.log = logging.getLogger("cocotb.tb")
        self.log.info("seed %d, config %s", self.seed, self.config.key())
        cocotb.start_soon(Clock(dut.clk, CLOCK_NS, unit="ns").start())
        for name in (f"cocotb.{dut._name}.m_axi", f"cocotb.{dut._name}.s_axil"):
            logging.getLogger(name).setLevel(logging.WARNING)
        self.ram = LatencyRam(AxiBus.from_prefix(dut, "m_axi"), dut.clk, dut.rst, size=MEM_SIZE,
                              latency=self.params.get("latency", 4) if latency is None
                              else latency)
        self.axil = AxiLiteMaster(AxiLiteBus.from_prefix(dut, "s_axil"), dut.clk, dut.rst)
        for name in list(logging.root.manager.loggerDict):
            if name.startswith("cocotb.") and "axi" in name:
                logging.getLogger(name).setLevel(logging.WARNING)
        for name in ("cocotb.axi", "cocotbext.axi", f"cocotb.{dut._name}.m_axi",
                     f"cocotb.{dut._name}.s_axil"):
            logging.getLogger(name).setLevel(logging.WARNING)
        self.drv = MXEDriver(CocotbTransport(self.axil, self.ram, dut, clock_ns=CLOCK_NS),
                             window=WINDOW, log=self.log)
        pause = self.params.get("pause", 0.2) if pause is None else pause
        self.set_backpressure(pause)
        cocotb.start_soon(self._heartbeat(self.params.get("heartbeat", 50_000)))

    async def _heartbeat(self, cycles):
        """Log the bus handshakes now and then, so a hang shows where it is."""
        dut = self.dut
        names = ["m_axi_arvalid", "m_axi_arready", "m_axi_rvalid", "m_axi_rready",
                 "m_axi_awvalid", "m_axi_awready", "m_axi_wvalid", "m_axi_wready",
                 "m_axi_bvalid", "m_axi_bready", "s_axil_arvalid", "s_axil_arready",
                 "s_axil_rvalid", "s_axil_awvalid", "s_axil_awready", "s_axil_bvalid", "irq"]
        while True:
            for _ in range(cycles):
                await RisingEdge(dut.clk)
            self.log.info("heartbeat: %s", " ".join(
                f"{n[2:] if n.startswith('m_') else n}={getattr(dut, n).value}" for n in names))

    def set_backpressure(self, probability):
        seeds = random.Random(self.seed + 1)

        def gen():
            rng = random.Random(seeds.random())
            while True:
                yield rng.random() < probability

        for channel in bus_channels(self.ram, self.axil):
            channel.set_pause_generator(gen() if probability else None)

    async def reset(self):
        self.dut.rst.value = 1
        for _ in range(4):
            await RisingEdge(self.dut.clk)
        self.dut.rst.value = 0
        await RisingEdge(self.dut.clk)
        # Random memory contents everywhere: stray writes and reads of stale data show.
        self.ram.write(0, self.rng.integers(0, 256, size=MEM_SIZE, dtype=np.uint8).tobytes())
        await self.drv.discover()
        await self.drv.set_window(*WINDOW)

    def image(self):
        return bytearray(self.ram.read(0, MEM_SIZE))

    def operands(self, M, K, N):
        A = random_operands(self.rng, (M, K), self.config, extremes=0.05)
        B = random_operands(self.rng, (K, N), self.config, extremes=0.05)
        return A, B

    async def gemm_checked(self, M, K, N, *, options=None, what=""):
        """One GEMM through the driver; result, whole memory and counters checked."""
        c = self.config
        A, B = self.operands(M, K, N)
        bias, relu, requant = options if options is not None else \
            random_options(self.rng, c, N)
        plan = plan_gemm(c, M, K, N, bias=bias is not None, relu=relu, requant=requant)
        descriptor = self.params.get("descriptor", False)
        issued = self.drv.gemm_commands(plan, descriptor=descriptor)
        # The memory the engine must leave: the model runs the same commands on a copy.
        model_mem = self.image()
        for offset, data in pack_operands(plan, A, B, bias).items():
            model_mem[WINDOW[0] + offset:WINDOW[0] + offset + len(data)] = data
        model = EngineModel(c, model_mem, *WINDOW)
        outcome = model.run(issued)
        assert outcome.ok, outcome
        self.log.info("GEMM %s %dx%dx%d bias=%s relu=%s requant=%s: %s", what, M, K, N,
                      bias is not None, relu, requant,
                      plan.schedule if issued is plan.commands else "descriptor")
        start = cocotb.utils.get_sim_time("ns")
        C, counters = await self.drv.gemm(A, B, bias=bias, relu=relu, requant=requant,
                                          descriptor=descriptor)
        cycles = (cocotb.utils.get_sim_time("ns") - start) / CLOCK_NS
        assert self.drv.last_plan.commands == plan.commands, "driver planned differently"
        want = expected_result(c, A, B, bias, relu, requant)
        bad = np.argwhere(C != want)
        assert not bad.size, (f"{M}x{K}x{N}: {len(bad)} wrong results, first at {tuple(bad[0])}: "
                              f"got {C[tuple(bad[0])]}, want {want[tuple(bad[0])]} "
                              f"(schedule {plan.schedule})")
        check_image(self.image(), model_mem, plan, WINDOW[0])
        assert list(counters) == counter_names(c), f"counters read: {list(counters)}"
        if not c.perf_counters or issued is not plan.commands:
            # Only CYCLES, or a descriptor's own schedule: nothing to hold the plan to.
            self.log.info("  %d cycles (driver view %d)", counters["CYCLES"], cycles)
            return C, counters, plan
        check_counters(counters, plan, c, M, K, N)
        util = M * K * N / (c.macs * max(1, counters["BUSY_CYCLES"]))
        self.log.info("  %d cycles (driver view %d), busy %d, MAC-active %d, lower bound %d, "
                      "naive %d, utilization %.2f, stalls load %d store %d dep %d",
                      counters["CYCLES"], cycles, counters["BUSY_CYCLES"],
                      counters["MAC_ACTIVE_CYCLES"], lower_bound(M, K, N, c),
                      naive_cycles(M, K, N, c), util, counters["STALL_LOAD"],
                      counters["STALL_STORE"], counters["STALL_DEP"])
        return C, counters, plan


def check_image(got, want, plan, win_base):
    """The whole memory equals the model's; on a mismatch, name the region and command."""
    if got == want:
        return
    diff = np.flatnonzero(np.frombuffer(bytes(got), np.uint8) != np.frombuffer(bytes(want),
                                                                              np.uint8))
    first = int(diff[0])
    where = "outside every region"
    for name, region in plan.layout.items():
        if win_base + region.offset <= first < win_base + region.end:
            off = first - win_base - region.offset
            where = (f"region {name} row {off // region.stride} element "
                     f"{off % region.stride // region.elem_bytes}")
    culprit = ""
    for i, command in enumerate(plan.commands):
        name, f = cmds.decode(command)
        if name == "STORE":
            lo = win_base + f["mem_offset"]
            row_bytes = f["elems"] * plan.out_bytes
            if any(lo + r * f["stride"] <= first < lo + r * f["stride"] + row_bytes
                   for r in range(f["rows"])):
                culprit = f"; written by command {i}: {cmds.describe(command)}"
    raise AssertionError(f"memory differs from the model at {len(diff)} bytes, first at "
                         f"{first:#x} ({where}): got {got[first]:#04x}, want {want[first]:#04x}"
                         f"{culprit}")


def check_counters(counters, plan, config, M, K, N):
    st = plan.stats
    assert counters["MAC_ACTIVE_CYCLES"] == st["mac_active"], \
        f"MAC_ACTIVE_CYCLES {counters['MAC_ACTIVE_CYCLES']}, activation rows streamed " \
        f"{st['mac_active']}"
    assert counters["DMA_RD_BYTES"] == st["dma_rd_bytes"], \
        f"DMA_RD_BYTES {counters['DMA_RD_BYTES']}, the plan reads {st['dma_rd_bytes']}"
    assert counters["DMA_WR_BYTES"] == st["dma_wr_bytes"], \
        f"DMA_WR_BYTES {counters['DMA_WR_BYTES']}, the plan writes {st['dma_wr_bytes']}"
    assert counters["CYCLES"] >= counters["BUSY_CYCLES"] >= counters["MAC_ACTIVE_CYCLES"], \
        counters
    assert counters["MAC_ACTIVE_CYCLES"] >= lower_bound(M, K, N, config)
    for name in ("STALL_LOAD", "STALL_STORE", "STALL_DEP"):
        assert counters[name] <= counters["CYCLES"], (name, counters)


async def setup(dut, **kwargs):
    tb = EngineTB(dut, **kwargs)
    await tb.reset()
    return tb


# Tests ----------------------------------------------------------------------------------------

@cocotb.test()
async def test_discover(dut):
    """ID and configuration read back; the driver's description equals the built config."""
    tb = await setup(dut)
    got = tb.drv.config
    for _reg, attr in CONFIG_REGISTERS:
        assert getattr(got, attr) == getattr(tb.config, attr), attr
    # The features (CAPABILITIES) as built; the driver reads the counters the engine has, the
    # others read 0.
    for name, _doc in CAPABILITIES:
        assert getattr(got, name) is getattr(tb.config, name), name
    counters = await tb.drv.counters()
    assert list(counters) == [name for name, _port, _doc in COUNTERS
                              if tb.config.perf_counters or name == "CYCLES"]
    assert counters["CYCLES"] > 0
    for reg in REGISTERS:
        if not reg.present(tb.config):
            assert await tb.drv.read(reg.name) == 0, reg.name
    st = await tb.drv.status()
    assert st["busy"] == 0 and st["error"] == 0 and st["done"] == 0, st


@cocotb.test()
async def test_gemm(dut):
    """GEMMs of the given and random shapes, random options; irq and polling."""
    tb = await setup(dut)
    shapes = [tuple(s) for s in tb.params.get("shapes", [[5, 7, 6]])]
    count, top = tb.params.get("random", [2, 40])
    shapes += [tuple(int(x) for x in tb.rng.integers(1, top + 1, size=3)) for _ in range(count)]
    for i, (M, K, N) in enumerate(shapes):
        tb.drv.use_irq = i % 2 == 0
        await tb.gemm_checked(M, K, N, what=f"#{i} {'irq' if tb.drv.use_irq else 'poll'}")
        assert not tb.dut.irq.value, "irq still high after done was cleared"


@cocotb.test()
async def test_output_kinds(dut):
    """int8 and uint8 (requant, the second with a zero point and half-to-even rounding, a third
    with per-column multipliers and shifts) and raw accumulator outputs, with and without bias
    and ReLU, on one shape that spans several tiles in every direction. Parameter
    ``bias_relu_off`` (default true): false runs every output kind with bias and ReLU on only."""
    tb = await setup(dut)
    c = tb.config
    M, K, N = c.rows * 2 + 1, c.rows + 3, c.cols * 2 + 1
    settings = (False, True) if tb.params.get("bias_relu_off", True) else (True,)
    for bias_on in settings:
        for relu in settings:
            mult = int(tb.rng.integers(1, 1 << 20))
            per_column = Requant(tb.rng.integers(1, 1 << 20, size=N).tolist(),
                                 tb.rng.integers(10, 24, size=N).tolist(), zero_point=-5,
                                 clamp=(-128, 100))
            for requant in (None, (mult, 18),
                            Requant(mult, 18, zero_point=100, clamp=(0, 255), round_even=True),
                            per_column):
                bias = tb.rng.integers(-1000 if c.signed else 0, 1000, size=N) if bias_on \
                    else None
                await tb.gemm_checked(M, K, N, options=(bias, relu, requant),
                                      what=f"bias={bias_on} relu={relu} requant={requant}")


@cocotb.test()
async def test_onnx(dut):
    """Quantized GEMMs as ONNX states them, against ONNX's reference implementation: random
    QLinearMatMul cases (int8 and uint8 operands and outputs, zero points on every input and
    the output, per-tensor and per-column scales and weight zero points), MatMulInteger cases
    and QLinearConv cases (im2col on the host), through ``MXEDriver.gemm(quant=...)``; every
    other one as a GEMM descriptor."""
    from mxe.sim.onnx_cases import (matmul_integer_case, qlinear_conv_case,
                                    qlinear_matmul_case)
    tb = await setup(dut)
    c = tb.config
    top = tb.params.get("top", 3 * max(c.rows, c.cols))
    cases = []
    for i in range(tb.params.get("count", 8)):
        shape = tuple(int(v) for v in tb.rng.integers(1, top + 1, size=3))
        kinds = ("uint8", "int8")
        if i % 4 == 3:
            cases.append(matmul_integer_case(tb.rng, shape=shape, per_column=i % 8 == 7))
        else:
            cases.append(qlinear_matmul_case(tb.rng, kinds[i % 2], kinds[(i // 2) % 2],
                                             shape=shape, per_column=i % 3 != 0,
                                             extreme_zero_points=i % 5 == 4))
    convs = [qlinear_conv_case(tb.rng, "uint8", shape=(1, 3, 6, 5, 6), kernel=(3, 3),
                               pads=(1, 1, 1, 1)),
             qlinear_conv_case(tb.rng, "int8", shape=(2, 2, 6, 6, 3), kernel=(2, 3),
                               strides=(2, 1), dilations=(1, 2))]
    for i, case in enumerate(convs):
        g = case.geometry
        got, _counters = await tb.drv.conv2d(
            case.x.transpose(0, 2, 3, 1), case.w.transpose(0, 2, 3, 1), stride=g["strides"],
            padding=g["pads"], dilation=g["dilations"], bias=case.bias, quant=case.quant,
            descriptor=i % 2 == 0)
        got = got.transpose(0, 3, 1, 2)
        bad = np.argwhere(got != case.want)
        assert not bad.size, f"QLinearConv {case.geometry}: {len(bad)} differ from the ONNX " \
            f"reference"
        tb.log.info("QLinearConv %s %s: equal to the ONNX reference", case.x.shape, case.geometry)
    for i, case in enumerate(cases):
        got, _counters = await tb.drv.gemm(case.A, case.B, quant=case.quant,
                                           descriptor=i % 2 == 1)
        what = (f"case {i}: {case.model.graph.node[0].op_type} {case.A.shape}x{case.B.shape} "
                f"{case.quant}")
        assert got.dtype == case.want.dtype, f"{what}: {got.dtype}"
        bad = np.argwhere(got != case.want)
        assert not bad.size, f"{what}: {len(bad)} differ from the ONNX reference, first " \
            f"{tuple(bad[0])}: {got[tuple(bad[0])]} != {case.want[tuple(bad[0])]}"
        tb.log.info("%s: equal to the ONNX reference", what)


@cocotb.test()
async def test_conv(dut):
    """Convolutions through ``MXEDriver.conv2d`` (NHWC, the patches of each group as a GEMM),
    against the direct-loop reference followed by the post-processor's model: kernels square
    and not, strides, padding on each side, dilation, groups and depthwise, with random bias,
    ReLU and requantization (per tensor or per output channel)."""
    from mxe.sim.conv import ConvGeometry, conv2d_reference
    tb = await setup(dut)
    c = tb.config
    lo, hi = c.input_range
    # (N, H, W, C, Cout, kernel, stride, padding, dilation, groups)
    cases = [(1, 6, 5, 3, 5, (3, 3), 1, 1, 1, 1),
             (2, 7, 6, 4, 4, (2, 3), (2, 1), (0, 1, 2, 1), 1, 2),
             (1, 7, 7, 3, 3, (3, 3), 2, (1, 1), 2, 3),        # depthwise, dilated
             (1, 5, 9, 2, 2 * c.cols + 1, (1, 7), (1, 3), (0, 3, 0, 2), 1, 1)]
    for i, (N, H, W, C, cout, kernel, stride, padding, dilation, groups) in enumerate(cases):
        x = tb.rng.integers(lo, hi, size=(N, H, W, C), endpoint=True)
        w = tb.rng.integers(lo, hi, size=(cout, *kernel, C // groups), endpoint=True)
        bias, relu, requant = random_options(tb.rng, c, cout)
        geometry = ConvGeometry.of(kernel, stride=stride, padding=padding, dilation=dilation,
                                   groups=groups)
        acc = conv2d_reference(x, w, geometry)
        want = postprocess_columns(acc.reshape(-1, cout), c, bias=bias, relu=relu,
                                   requant=requant).reshape(acc.shape)
        got, _counters = await tb.drv.conv2d(x, w, stride=stride, padding=padding,
                                             dilation=dilation, groups=groups, bias=bias,
                                             relu=relu, requant=requant, descriptor=i % 2 == 1)
        bad = np.argwhere(got != want)
        assert not bad.size, f"conv {i} {geometry}: {len(bad)} wrong, first at " \
            f"{tuple(bad[0])}: got {got[tuple(bad[0])]}, want {want[tuple(bad[0])]}"
        tb.log.info("conv %s x %s, %s: bit-exact", x.shape, w.shape, geometry)


async def expect_error(tb, commands, model_mem, *, what):
    """Run ``commands`` (after a soft reset) and check the error, its index, and the memory
    against the model; then a correct GEMM."""
    c = tb.config
    model = EngineModel(c, model_mem, *tb.drv.window, error_regions=tb.ram.error_regions)
    outcome = model.run(commands)
    assert not outcome.ok, f"{what}: the model accepts the stream"
    try:
        await tb.drv.run(commands)
    except MXEError as exc:
        assert exc.code == outcome.error, f"{what}: STATUS.error {exc.code.name}, expected " \
            f"{outcome.error.name}"
        assert exc.index == outcome.index, f"{what}: ERR_CMD_INDEX {exc.index}, expected " \
            f"{outcome.index} ({cmds.describe(commands[outcome.index])})"
        if outcome.addr is not None:
            assert exc.addr == outcome.addr, f"{what}: ERR_ADDR {exc.addr:#x}, expected " \
                f"{outcome.addr:#x}"
    else:
        raise AssertionError(f"{what}: no error reported; expected {outcome.error.name} at "
                             f"command {outcome.index}")
    st = await tb.drv.status()
    assert st["error"] == outcome.error.value
    return outcome


@cocotb.test()
async def test_bad_commands(dut):
    """Every refusal of LIMITS_DOC: STATUS.error, ERR_CMD_INDEX, memory exactly as the model
    says (the commands before it ran, nothing after it), engine usable after a soft reset."""
    tb = await setup(dut)
    c = tb.config
    eb, ab = c.elem_bytes, c.acc_elem_bytes
    for n, (name, bad, code) in enumerate(bad_commands(c)):
        await tb.drv.soft_reset()
        # A prefix that does real work (load, multiply, store), the bad command, then a STORE
        # that would write memory if it ran.
        prefix = [cmds.load(0, 0, 2, c.spad_row_elems, c.spad_row_elems * eb),
                  cmds.matmul(0, 0, 2, 1, 0),
                  cmds.store(0, 0x800, 2, c.cols, c.cols * ab)][:int(tb.rng.integers(0, 4))]
        after = [cmds.store(0, 0x900, 1, c.cols, 0), cmds.load(4, 0, 1, 1, 0)]
        stream = [*prefix, bad, *after, cmds.fence()]
        model_mem = tb.image()
        outcome = await expect_error(tb, stream, model_mem, what=name)
        assert outcome.error == code and outcome.index == len(prefix)
        check_image(tb.image(), model_mem, plan_gemm(c, 1, 1, 1), tb.drv.window[0])
        st = await tb.drv.status()
        assert not st["busy"], f"{name}: busy after the error"
        if n % 6 == 0 or n == len(bad_commands(c)) - 1:
            await tb.drv.soft_reset()
            await tb.gemm_checked(*(int(x) for x in tb.rng.integers(1, 2 * c.rows + 2, size=3)),
                                  what=f"after {name}")
    await tb.drv.soft_reset()
    await tb.gemm_checked(c.rows + 1, c.rows + 1, c.cols + 1, what="after all bad commands")


@cocotb.test()
async def test_error_index_across_streams(dut):
    """ERR_CMD_INDEX counts every command pushed since the last soft reset, across streams
    (as its description says): after a stream of n commands that ended well, the k-th command
    of the next stream fails with index n + k; after a soft reset, with index k."""
    tb = await setup(dut)
    c = tb.config
    drv = tb.drv
    await drv.soft_reset()
    good = plan_gemm(c, c.rows + 1, c.rows, c.cols + 1).commands
    await drv.run(good)
    k = int(tb.rng.integers(0, 3))
    bad = [cmds.matmul(0, 0, 1, 1, 0)] * k + [cmds.matmul(0, 0, 0, 1, 0), cmds.fence()]
    for first, want in ((len(good), len(good) + k), (0, k)):
        try:
            await drv.run(bad)
        except MXEError as exc:     # its index is ERR_CMD_INDEX as read
            assert exc.code == ErrorCode.BAD_DIM and exc.index == want, \
                f"{exc}: ERR_CMD_INDEX {exc.index}, expected {want} ({first} commands before)"
        else:
            raise AssertionError("the zero-row MATMUL was not refused")
        await drv.soft_reset()
    await tb.gemm_checked(c.rows, c.rows, c.cols, what="after the errors")


@cocotb.test()
async def test_unsupported(dut):
    """On an engine without the GEMM unit, each of GEMM_A/B/C (and a whole descriptor) is
    refused with UNSUPPORTED at its own index, as the model says: nothing of it or after it
    runs, memory as the model leaves it. Without unaligned DMA, so are misaligned LOADs and
    STOREs (:func:`misaligned_transfers`). After a soft reset the engine runs GEMMs (issued as
    descriptors: the driver falls back to the command stream) bit-exactly."""
    tb = await setup(dut)
    c = tb.config
    assert not tb.drv.config.gemm_unit, "this test is for an engine without the GEMM unit"
    eb, ab = c.elem_bytes, c.acc_elem_bytes
    plan = plan_gemm(c, c.rows + 1, c.rows + 2, c.cols + 1)
    desc = descriptor_commands(plan)[:3]
    for i, command in enumerate(desc):
        name = cmds.decode(command)[0]
        assert not getattr(c, REQUIRES[name])
        for whole in (False, True):
            await tb.drv.soft_reset()
            prefix = [cmds.load(0, 0, 2, c.spad_row_elems, c.spad_row_elems * eb),
                      cmds.matmul(0, 0, 2, 1, 0),
                      cmds.store(0, 0x800, 2, c.cols, c.cols * ab)][:int(tb.rng.integers(0, 4))]
            # The command alone, or it and the rest of the descriptor.
            bad = desc[i:] if whole else [command]
            stream = [*prefix, *bad, cmds.store(0, 0x900, 1, c.cols, 0), cmds.fence()]
            model_mem = tb.image()
            outcome = await expect_error(tb, stream, model_mem, what=f"{name} (whole {whole})")
            assert outcome.error == ErrorCode.UNSUPPORTED and outcome.index == len(prefix)
            check_image(tb.image(), model_mem, plan, tb.drv.window[0])
            st = await tb.drv.status()
            assert not st["busy"], f"{name}: busy after the error"
    if not c.unaligned_dma:
        await misaligned_transfers(tb, plan)
    await tb.drv.soft_reset()
    tb.params["descriptor"] = True
    for M, K, N in ((c.rows + 3, 2 * c.rows + 1, c.cols + 2), (1, 1, 1)):
        await tb.gemm_checked(M, K, N, what="after UNSUPPORTED")


async def misaligned_transfers(tb, plan):
    """Without unaligned DMA: a LOAD or STORE off the bus's lane 0 (its address, or its
    stride over two rows) is refused with UNSUPPORTED at its index, ERR_ADDR its address, after
    a random prefix of real work; memory as the model leaves it, nothing after it runs; the
    same transfers on lane 0 run."""
    c = tb.config
    eb, ab, bus = c.elem_bytes, c.acc_elem_bytes, c.axi_bytes
    row = c.spad_row_elems * eb
    lane0 = -(-max(row, c.cols * ab) // bus) * bus    # a stride that keeps rows on lane 0
    for kind in ("load", "store"):
        for what in ("address", "stride"):
            off = int(tb.rng.integers(1, bus))
            base = 0x800 + (off if what == "address" else 0)
            stride = lane0 + (off if what == "stride" else 0)
            bad = cmds.load(0, base, 2, c.spad_row_elems, stride) if kind == "load" else \
                cmds.store(0, base, 2, c.cols, stride)
            await tb.drv.soft_reset()
            prefix = [cmds.load(0, 0, 2, c.spad_row_elems, lane0),
                      cmds.matmul(0, 0, 2, 1, 0),
                      cmds.store(0, 0xA00, 2, c.cols, lane0)][:int(tb.rng.integers(0, 4))]
            stream = [*prefix, bad, cmds.store(0, 0x900, 1, c.cols, 0), cmds.fence()]
            model_mem = tb.image()
            label = f"{kind} with its {what} {off} bytes off lane 0"
            outcome = await expect_error(tb, stream, model_mem, what=label)
            assert outcome.error == ErrorCode.UNSUPPORTED and outcome.index == len(prefix), label
            assert outcome.addr == tb.drv.window[0] + base, label
            check_image(tb.image(), model_mem, plan, tb.drv.window[0])
    # The same transfers on lane 0 run.
    await tb.drv.soft_reset()
    await tb.drv.run([cmds.load(0, 0x800, 2, c.spad_row_elems, lane0), cmds.matmul(0, 0, 2, 1, 0),
                      cmds.store(0, 0x800, 2, c.cols, lane0), cmds.fence()])


@cocotb.test()
async def test_dma_error(dut):
    """SLVERR on a read in the middle of a GEMM's operands: error code, the failing LOAD's
    index, ERR_ADDR; no operand byte changed; recovery after a soft reset."""
    tb = await setup(dut)
    c = tb.config
    M, K, N = 3 * c.rows + 1, 2 * c.rows + 1, 3 * c.cols + 2
    A, B = tb.operands(M, K, N)
    plan = plan_gemm(c, M, K, N)
    win = tb.drv.window[0]
    for offset, data in pack_operands(plan, A, B).items():
        tb.ram.write(win + offset, data)
    b = plan.layout["b"]
    lo = win + b.offset + b.nbytes // 2
    tb.ram.error_regions = [(lo, lo + 1)]
    model_mem = tb.image()
    outcome = await expect_error(tb, plan.commands, model_mem, what="SLVERR in B")
    assert outcome.error == ErrorCode.DMA_SLVERR
    f = cmds.decode(plan.commands[outcome.index])[1]
    assert outcome.addr == read_bursts(c, win + f["mem_offset"], f["rows"],
                                       f["elems"] * c.elem_bytes, f["stride"],
                                       tb.ram.error_regions)
    got = tb.image()
    c_region = plan.layout["c"]
    assert got[:win + c_region.offset] == model_mem[:win + c_region.offset], \
        "memory below the result region changed"
    assert got[win + c_region.end:] == model_mem[win + c_region.end:], \
        "memory above the result region changed"
    tb.ram.error_regions = []
    await tb.drv.soft_reset()
    await tb.gemm_checked(M, K, N, what="after SLVERR")


@cocotb.test()
async def test_window(dut):
    """A window that ends inside the operands (a LOAD fails) or inside the result (a STORE
    fails): DMA_WINDOW at the command the model names, memory as the model says."""
    tb = await setup(dut)
    c = tb.config
    M, K, N = 2 * c.rows + 1, c.rows + 2, 2 * c.cols + 1
    # The cut region goes last, so exactly the transfers of that region fail.
    for cut in ("b", "c"):
        await tb.drv.soft_reset()
        A, B = tb.operands(M, K, N)
        plan = plan_gemm(c, M, K, N, order=[r for r in ("a", "b", "bias", "c") if r != cut]
                         + [cut])
        base = WINDOW[0]
        for offset, data in pack_operands(plan, A, B).items():
            tb.ram.write(base + offset, data)
        region = plan.layout[cut]
        limit = base + region.offset + region.nbytes - int(tb.rng.integers(1, region.stride + 1))
        await tb.drv.set_window(base, limit)
        model_mem = tb.image()
        outcome = await expect_error(tb, plan.commands, model_mem, what=f"window cuts {cut}")
        assert outcome.error == ErrorCode.DMA_WINDOW
        check_image(tb.image(), model_mem, plan, base)
        await tb.drv.set_window(*WINDOW)
    await tb.drv.soft_reset()
    await tb.gemm_checked(M, K, N, what="after window errors")


@cocotb.test()
async def test_soft_reset_mid_gemm(dut):
    """Soft reset while a GEMM runs: busy clears, error 0, queue empty, counters restart, nothing
    written outside the result region; the next GEMM is right."""
    tb = await setup(dut)
    c = tb.config
    for trial in range(2):
        M, K, N = 4 * c.rows + 3, 3 * c.rows, 4 * c.cols + 1
        A, B = tb.operands(M, K, N)
        plan = plan_gemm(c, M, K, N)
        win = tb.drv.window[0]
        for offset, data in pack_operands(plan, A, B).items():
            tb.ram.write(win + offset, data)
        before = tb.image()
        await tb.drv.start()
        pusher = cocotb.start_soon(tb.drv.push(plan.commands))
        for _ in range(int(tb.rng.integers(50, 400)) * (trial + 1)):
            await RisingEdge(dut.clk)
        tb.drv.abort = True
        await pusher
        tb.drv.abort = False
        await tb.drv.soft_reset()
        st = await tb.drv.status()
        assert st["busy"] == 0 and st["error"] == 0 and st["queue_empty"] == 1, st
        assert await tb.drv.read("CMD_LEVEL") == 0
        # The counters restart at the soft reset (the work still in flight then may add a
        # little: at most one unit command each).
        counters = await tb.drv.counters()
        assert counters["CYCLES"] < 3000, f"CYCLES {counters['CYCLES']} not cleared"
        assert counters["DMA_RD_BYTES"] <= (2 * c.spad_row_elems * c.elem_bytes
                                            * plan.schedule["mc"]), counters
        assert counters["MAC_ACTIVE_CYCLES"] <= plan.schedule["mc"], counters
        after = tb.image()
        cr = plan.layout["c"]
        assert after[:win + cr.offset] == before[:win + cr.offset]
        assert after[win + cr.end:] == before[win + cr.end:]
        await tb.gemm_checked(int(tb.rng.integers(1, 3 * c.rows)), int(tb.rng.integers(1, 40)),
                              int(tb.rng.integers(1, 3 * c.cols)), what="after soft reset")


@cocotb.test()
async def test_error_order(dut):
    """Two failing commands in one stream: the first STORE fails its window check and a LOAD
    after it fails too (``MXE_PARAMS`` ``variant``: ``"slverr"``, the LOAD's memory answers
    SLVERR; ``"window"``, the LOAD leaves the window as well). ERR_CMD_INDEX must name the STORE
    (the first bad command in program order), whichever unit notices its error first."""
    tb = await setup(dut)
    c = tb.config
    variant = tb.params.get("variant", "slverr")
    M, K, N = 2 * c.rows + 1, c.rows + 2, 2 * c.cols + 1
    A, B = tb.operands(M, K, N)
    plan = plan_gemm(c, M, K, N, force=dict(mc=c.rows, order="mn"))
    base = WINDOW[0]
    for offset, data in pack_operands(plan, A, B).items():
        tb.ram.write(base + offset, data)
    decoded = [cmds.decode(x) for x in plan.commands]
    first_store = next(i for i, (name, _f) in enumerate(decoded) if name == "STORE")
    if variant == "window":
        # The window ends one byte before the end of the first LOAD after the first STORE
        # (and so before C): both fail, the LOAD right after the STORE in program order.
        limit = None
        for i in range(first_store + 1, len(decoded)):
            name, f = decoded[i]
            if name == "LOAD":
                end = base + f["mem_offset"] + f["stride"] * (f["rows"] - 1) + \
                    f["elems"] * c.elem_bytes
                probe = EngineModel(c, bytearray(MEM_SIZE), base, end - 1)
                if probe.run(plan.commands).index == first_store:
                    limit = end - 1
                    break
        assert limit is not None, "no window makes the STORE fail first"
    else:
        # The window ends inside C (the first STORE fails); a LOAD after it reads bytes no
        # earlier LOAD reads, and those answer SLVERR.
        cr = plan.layout["c"]
        limit = base + cr.offset + cr.stride // 2

        def extent(f):
            return (base + f["mem_offset"], f["rows"], f["elems"] * c.elem_bytes, f["stride"])

        for i in range(first_store + 1, len(decoded)):
            name, f = decoded[i]
            if name != "LOAD":
                continue
            lo = base + f["mem_offset"] + f["stride"] * (f["rows"] - 1)
            candidate = [(lo, lo + 1)]
            if not any(read_bursts(c, *extent(g), candidate) is not None
                       for n, g in decoded[:i] if n == "LOAD"):
                tb.ram.error_regions = candidate
                break
        assert tb.ram.error_regions, "no LOAD after the first STORE reads bytes of its own"
    await tb.drv.set_window(base, limit)
    model_mem = tb.image()
    model = EngineModel(c, bytearray(model_mem), base, limit,
                        error_regions=tb.ram.error_regions)
    later = [i for i, x in enumerate(plan.commands) if i > first_store
             and model.check(x) == ErrorCode.OK and cmds.decode(x)[0] == "LOAD"
             and EngineModel(c, bytearray(model_mem), base, limit,
                             error_regions=tb.ram.error_regions).step(x)[0] != ErrorCode.OK]
    assert later, "no LOAD after the first STORE fails: the test proves nothing"
    tb.log.info("first STORE %d fails; LOADs %s after it fail too", first_store, later[:4])
    outcome = await expect_error(tb, plan.commands, model_mem, what=f"STORE then LOAD fail "
                                 f"({variant})")
    assert outcome.error == ErrorCode.DMA_WINDOW and outcome.index == first_store
    tb.ram.error_regions = []
    await tb.drv.set_window(*WINDOW)
    await tb.drv.soft_reset()
    await tb.gemm_checked(M, K, N, what="after error order")


@cocotb.test()
async def test_store_beside_matmul(dut):
    """A STORE of one accumulator region while MATMULs write and accumulate into another (the
    controller runs them at once: no hazard between them), then a STORE of that region: the
    whole memory equals the command-level model's. On an engine whose accumulator has one read
    port (``acc_read_ports`` 1) the first STORE reads its rows in the gaps of the accumulating
    writes. Then twelve one-row MATMULs, more than the execute unit has slots, and their
    STORE."""
    tb = await setup(dut)
    c = tb.config
    m = 24
    a_stride = _align(c.rows * c.elem_bytes, c.axi_bytes)
    b_stride = _align(c.cols * c.elem_bytes, c.axi_bytes)
    c_stride = _align(c.cols * c.acc_elem_bytes, c.axi_bytes)
    a_off, b_off = 0, 0x1000
    c_off, d_off, e_off = 0x2000, 0x2000 + m * c_stride, 0x2000 + 2 * m * c_stride
    tiles = 12
    # The operands are the memory's random bytes.
    commands = [
        cmds.load(0, a_off, m, c.rows, a_stride),
        cmds.load(m, b_off, c.rows, c.cols, b_stride),
        cmds.matmul(0, m, m, c.rows, 0),
        cmds.store(0, c_off, m, c.cols, c_stride),
        cmds.matmul(0, m, m, c.rows, m),
        *[cmds.matmul(0, m, m, c.rows, m, accumulate=True)] * 4,
        cmds.store(m, d_off, m, c.cols, c_stride),
        *[cmds.matmul(i, m, 1, c.rows, 2 * m + i, accumulate=i % 2 == 1) for i in range(tiles)],
        cmds.store(2 * m, e_off, tiles, c.cols, c_stride),
        cmds.fence(),
    ]
    model_mem = tb.image()
    assert EngineModel(c, model_mem, *WINDOW).run(commands).ok
    await tb.drv.run(commands)
    got = tb.image()
    wrong = int(np.count_nonzero(np.frombuffer(bytes(got), np.uint8)
                                 != np.frombuffer(bytes(model_mem), np.uint8)))
    assert wrong == 0, f"{wrong} bytes differ from the model"


def chain_layers(rng, config, widths):
    """Random layers for :meth:`MXEDriver.gemm_chain`: weights, a bias on every other layer,
    ReLU on the first, a requantization that spreads int8 outputs (raw on the last)."""
    layers = []
    for i, (K, N) in enumerate(zip(widths, widths[1:])):
        B = random_operands(rng, (K, N), config, extremes=0.05)
        # A sum of K products of about 74 * 74 (uniform int8) spread: scale it to about 60.
        multiplier = max(1, int(60 * (1 << 20) / (5500 * np.sqrt(K))))
        last = i == len(widths) - 2
        layers.append({"B": B, "bias": rng.integers(-2000, 2000, size=N) if i % 2 else None,
                       "relu": i == 0, "requant": None if last else Requant(multiplier, 20)})
    return layers


@cocotb.test()
async def test_chain(dut):
    """Layers chained through memory (``MXEDriver.gemm_chain``): each layer's A is the previous
    layer's requantized C, the descriptors pushed back to back. With GEMM_A ``after_stores``
    every output is bit-exact against the numpy model and the memory image against the
    command-level model; without it (``stale``) a layer reads its input before the previous
    layer wrote it, which this bench shows by the wrong results it then expects."""
    tb = await setup(dut)
    c = tb.config
    p = {"m": 64, "widths": [64, 64, 64, 64], "after_stores": True, "stale": False,
         "w_pause": 0.0, "compare": False, **tb.params.get("chain", {})}
    if p["w_pause"]:
        gen_rng = random.Random(tb.seed + 2)
        tb.ram.write_if.w_channel.set_pause_generator(
            iter(lambda: gen_rng.random() < p["w_pause"], None))
    M, widths = p["m"], p["widths"]
    A = random_operands(tb.rng, (M, widths[0]), c, extremes=0.05)
    layers = chain_layers(tb.rng, c, widths)
    want, x = [], A
    for layer in layers:
        x = expected_result(c, x, layer["B"], layer["bias"], layer["relu"], layer["requant"])
        want.append(x)

    # The command-level model runs the same commands on a copy of the memory.
    plans = plan_chain(c, M, widths, requants=[layer["requant"] for layer in layers],
                       biases=[layer["bias"] is not None for layer in layers],
                       relus=[layer["relu"] for layer in layers])
    model_mem = tb.image()
    for offset, data in chain_operands(plans, A, layers).items():
        model_mem[WINDOW[0] + offset:WINDOW[0] + offset + len(data)] = data
    assert EngineModel(c, model_mem, *WINDOW).run(
        chain_commands(plans, after_stores=p["after_stores"])).ok

    outputs, counters = await tb.drv.gemm_chain(A, layers, after_stores=p["after_stores"])
    wrong = [int(np.count_nonzero(got != w)) for got, w in zip(outputs, want)]
    tb.log.info("chain M=%d widths %s after_stores=%s w_pause=%s: %d cycles, STALL_DEP %s; "
                "wrong results per layer %s", M, widths, p["after_stores"], p["w_pause"],
                counters["CYCLES"], counters.get("STALL_DEP"), wrong)
    if p["stale"]:
        # The first layer reads fresh operands; a later one read its input too early.
        assert wrong[0] == 0, wrong
        assert any(wrong[1:]), f"the hazard did not show: {wrong}"
        return
    assert not any(wrong), f"wrong results per layer: {wrong}"
    check_image(tb.image(), model_mem, plans[-1], WINDOW[0])
    if not p["compare"]:
        return
    waited, counters_w = await tb.drv.gemm_chain(A, layers, wait=True)
    assert all((got == w).all() for got, w in zip(waited, want))
    macs = M * sum(k * n for k, n in zip(widths, widths[1:]))
    bound = macs // c.macs
    table = ["| layers pushed | cycles | busy cycles | of bound |", "|---|---|---|---|"]
    for what, cnt in (("back to back, GEMM_A after_stores", counters),
                      ("one at a time, wait for done between", counters_w)):
        table.append(f"| {what} | {cnt['CYCLES']} | {cnt.get('BUSY_CYCLES', '-')} | "
                     f"{100 * bound / cnt['CYCLES']:.1f}% |")
    for line in table:
        tb.log.info(line)
    with open("chain_measure.json", "w") as f:
        json.dump({"m": M, "widths": widths, "bound": bound, "table": table,
                   "chained": counters, "waited": counters_w}, f)
