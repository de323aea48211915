"""The answers of the programming guide (``docs/programming.md``), checked on the engine RTL.

Every test drives the engine as the guide tells a driver to: registers and fields by name (the
generated register table, :mod:`mxe.hw.regmap`), commands from the generated command table
(:mod:`mxe.sim.commands`), memory written and read as a host does, ``STATUS.done`` seen through
``irq`` or by polling. Nothing inside the engine is probed; to time what the guide bounds, the
bench watches only the engine's ports (``irq``, ``busy`` and both buses). Run through
``tests/test_guide.py``; parameters (``MXE_PARAMS``, JSON): ``pause`` and ``latency`` as in
:mod:`mxe.sim.tb_engine`, ``trials`` (random trials of ``test_latency``, default 12).
"""

from collections import defaultdict

import cocotb
import numpy as np
from cocotb.triggers import ClockCycles, FallingEdge, First, RisingEdge, Timer

from mxe.hw.dma import check_latency
from mxe.hw.isa import ErrorCode
from mxe.hw.postproc import postproc_latency
from mxe.hw.regmap import ID_MAGIC, OFFSETS, REGMAP
from mxe.sim import commands as cmds
from mxe.sim.gemm_model import schedule
from mxe.sim.model import Requant, matmul, postprocess_columns, random_operands
from mxe.sim.tb_engine import CLOCK_NS, WINDOW, setup


# The guide's numbers (docs/programming.md), each asserted below. Cycles; a write's cycle is
# the first in which its response (BVALID) is valid. Where the GEMM unit's two registers lengthen
# the command path: {with the GEMM unit: ..., without: ...}.
#: Commands that leave the queue before CTRL.start.
HELD_OUTSIDE_QUEUE = {True: 4, False: 1}
#: CTRL.start to irq, a FENCE pushed before the start.
START_TO_DONE = 3
#: CTRL.start to irq, k >= 1 CONFIGs and then a FENCE pushed before the start:
#: CONFIGS_THEN_DONE + DISPATCH_CYCLES * k (the controller takes a command every
#: DISPATCH_CYCLES cycles at most).
DISPATCH_CYCLES = 3
CONFIGS_THEN_DONE = 3
#: CMD_W3 to irq, a FENCE pushed to a running engine with nothing else to do.
PUSH_TO_DONE = {True: 7, False: 5}
#: CMD_W3 to irq, a command that is refused, pushed the same way.
PUSH_TO_REFUSED = {True: 9, False: 7}
#: CMD_W3 to the first ARVALID of a LOAD pushed the same way, less check_latency(config, rows).
PUSH_TO_AR = {True: 9, False: 7}
#: CTRL.start to the first ARVALID (AWVALID) of a LOAD (STORE) pushed before the start, less
#: check_latency(config, rows).
START_TO_AR = 5
#: CTRL.start to the first WVALID of a STORE pushed before the start, less postproc_latency.
START_TO_W = 9
#: Cycles an engine built without deep_pipeline takes off those to the first ARVALID or
#: AWVALID (the burst generator's skid buffer), and off those to the first WVALID (the engine's
#: write-data and the W channel's skid buffers, the register on the accumulator's read data, the
#: store unit's row register): it has none of them.
AX_SKIDS, W_REGISTERS = 1, 4
#: CTRL.soft_reset to STATUS.busy = 0, the engine idle.
SOFT_RESET_IDLE = 3
#: At most, from the last write response (B) of a STORE to irq, a FENCE queued behind it.
STORE_B_TO_DONE = 6
#: At most, from the last read beat (R) of a LOAD to irq, a FENCE queued behind it.
LOAD_R_TO_DONE = 13
#: A GEMM descriptor queued before CTRL.start: start to irq when GEMM_C refuses it for a zero
#: dimension; for the buffers, GEMM_REFUSED_ADDR plus its set-up to the layout tests
#: (:func:`shape_cycles`) and the tests (:func:`layout_cycles`, see descriptor_tests); start to
#: the first ARVALID of an accepted descriptor, GEMM_FIRST_READ plus the same, the tiling's
#: products (:func:`tiling_cycles`) and check_latency of that LOAD's rows.
GEMM_REFUSED_DIM = 14
GEMM_REFUSED_ADDR = 13
GEMM_FIRST_READ = 14
#: One division of the set-up's tiling (17 quotient bits), its start included.
DIVISION_CYCLES = 19


def shape_cycles(config):
    """GEMM_C's set-up before its first layout test: 2 cycles, and a division for each side of
    the array that is not a power of two (the tiles of K over the rows, of N over the columns;
    a shift and a mask otherwise)."""
    sides = (config.rows, config.cols)
    return 2 + DIVISION_CYCLES * sum(side & (side - 1) != 0 for side in sides)


def layout_cycles(config, tests):
    """GEMM_C's cycles for the layout tests ``tests`` (:func:`descriptor_tests`): 2 for a test
    that B's rows fail; a test they pass divides the scratchpad rows left by the A panels,
    a quotient bit a cycle for the bits of ``spad_depth - 1``, 4 cycles more."""
    passed = (config.spad_depth - 1).bit_length() + 4
    return sum(2 if t == "b" else passed for t in tests)


def tiling_cycles(config, M, K, N):
    """GEMM_C's cycles after its last layout test, for an accepted descriptor: the products of
    the chunk rows ``mc`` and ``kr``, a cycle per bit of the wider (at least one), and a cycle
    to start the loop; with more than one chunk of M, two divisions before (the chunks and
    their balanced size)."""
    s, _ = schedule(config, M, K, N)
    bits = max(s.mc.bit_length(), s.kr.bit_length(), 1)
    return bits + 1 + (2 * DIVISION_CYCLES if s.mt > 1 else 0)


def field(reg, name, word):
    """Field ``name`` of register ``reg`` from the register's ``word``."""
    f = REGMAP[reg]["fields"][name]
    return (word >> f["lsb"]) & ((1 << f["width"]) - 1)


def word(reg, **values):
    """A word of register ``reg`` with the given fields."""
    out = 0
    for name, value in values.items():
        f = REGMAP[reg]["fields"][name]
        out |= (int(value) & ((1 << f["width"]) - 1)) << f["lsb"]
    return out


def le(values, nbytes):
    """Integers as packed little-endian two's complement values of ``nbytes`` bytes."""
    mask = (1 << (8 * nbytes)) - 1
    return b"".join((int(v) & mask).to_bytes(nbytes, "little") for v in values)


class Watch:
    """A cycle counter and the cycles of events on the engine's ports.

    Signals are sampled at the falling edge (a handshake seen there completes at the next
    rising edge). Events: ``axil_b`` (a register write's response becomes valid), ``irq`` and
    ``busy`` (rising), ``idle`` (``busy`` falling), ``arvalid``, ``awvalid``, ``wvalid``
    (rising), ``ar``, ``aw``, ``w``, ``r``, ``b`` (AXI4 handshakes on ``m_axi``).
    """

    def __init__(self, dut):
        self.dut = dut
        self.cycle = 0
        self.events = defaultdict(list)
        cocotb.start_soon(self._run())

    async def _run(self):
        dut = self.dut
        rises = {"s_axil_bvalid": "axil_b", "irq": "irq", "busy": "busy",
                 "m_axi_arvalid": "arvalid", "m_axi_awvalid": "awvalid",
                 "m_axi_wvalid": "wvalid"}
        last = dict.fromkeys(rises, 0)

        def v(name):
            return int(getattr(dut, name).value)

        while True:
            await FallingEdge(dut.clk)
            self.cycle += 1
            c = self.cycle
            for name, event in rises.items():
                now = v(name)
                if now and not last[name]:
                    self.events[event].append(c)
                if name == "busy" and last[name] and not now:
                    self.events["idle"].append(c)
                last[name] = now
            for ch, valid, ready in (("ar", "arvalid", "arready"), ("aw", "awvalid", "awready"),
                                     ("w", "wvalid", "wready"), ("r", "rvalid", "rready"),
                                     ("b", "bvalid", "bready")):
                if v(f"m_axi_{valid}") and v(f"m_axi_{ready}"):
                    self.events[ch].append(c)

    def last(self, name):
        return self.events[name][-1]

    def after(self, name, cycle):
        """The first event ``name`` at or after ``cycle``."""
        return next(c for c in self.events[name] if c >= cycle)


class Host:
    """A driver doing what the guide says, by register and field name. ``irq``: wait for
    STATUS.done on the irq output (else by polling STATUS)."""

    def __init__(self, tb):
        self.tb = tb
        self.dut = tb.dut
        self.log = tb.log
        self.t = tb.drv.transport
        self.irq = True
        self.depth = None
        self.gemm_unit = None

    async def read(self, reg):
        return await self.t.read_reg(OFFSETS[reg])

    async def write(self, reg, value):
        await self.t.write_reg(OFFSETS[reg], value)

    async def read64(self, name):
        lo = await self.read(f"{name}_LO")      # captures _HI
        return await self.read(f"{name}_HI") << 32 | lo

    async def status(self):
        w = await self.read("STATUS")
        return {name: field("STATUS", name, w) for name in REGMAP["STATUS"]["fields"]}

    async def discover(self):
        ident = await self.read("ID")
        assert field("ID", "magic", ident) == ID_MAGIC, f"ID {ident:#x}"
        caps = await self.read("CAPABILITIES")
        self.gemm_unit = bool(field("CAPABILITIES", "gemm_unit", caps))
        self.depth = await self.read("CFG_CMD_QUEUE_DEPTH")
        return field("ID", "version", ident)

    async def set_window(self, base, limit):
        for name, value in (("WIN_BASE", base), ("WIN_LIMIT", limit)):
            await self.write(f"{name}_LO", value & 0xFFFF_FFFF)
            await self.write(f"{name}_HI", value >> 32)

    async def soft_reset(self):
        """CTRL.soft_reset (irq_enable written as wanted: it shares the register), then poll
        STATUS.busy until it reads 0. Returns the polls taken."""
        await self.write("CTRL", word("CTRL", soft_reset=1, irq_enable=self.irq))
        polls = 0
        while True:
            polls += 1
            if not (await self.status())["busy"]:
                return polls
            assert polls < 10_000, "soft reset does not finish"

    async def clear_done(self):
        await self.write("STATUS", word("STATUS", done=1, cmd_overflow=1))

    async def push_one(self, command):
        """CMD_W0..CMD_W2, then CMD_W3, which pushes."""
        for i, w in enumerate(cmds.to_words(command)):
            await self.write(f"CMD_W{i}", w)

    async def push(self, commands):
        """Never more than CFG_CMD_QUEUE_DEPTH - CMD_LEVEL commands between two reads of
        CMD_LEVEL; stops if the engine stopped on an error (it will not drain)."""
        room = 0
        for command in commands:
            while room == 0:
                room = self.depth - await self.read("CMD_LEVEL")
                if room == 0:
                    if (await self.status())["error"]:
                        return
                    await ClockCycles(self.dut.clk, 8)
            await self.push_one(command)
            room -= 1

    async def start(self):
        await self.write("CTRL", word("CTRL", start=1, irq_enable=self.irq))

    async def wait_done(self, timeout=200_000, *, clear=True):
        """Wait for STATUS.done (irq, or polling), clear it (W1C); the status as read."""
        waited = 0
        while True:
            st = await self.status()
            if st["done"]:
                break
            assert waited < timeout, f"no STATUS.done in {timeout} cycles: {st}"
            if self.irq and not self.dut.irq.value:
                await First(RisingEdge(self.dut.irq), Timer(1000 * CLOCK_NS, unit="ns"))
                waited += 1000
            else:
                await ClockCycles(self.dut.clk, 16)
                waited += 16
        if clear:
            await self.write("STATUS", word("STATUS", done=1))
        return st

    async def error(self):
        """(STATUS.error, ERR_CMD_INDEX, ERR_ADDR)."""
        st = await self.status()
        return (ErrorCode(st["error"]), await self.read("ERR_CMD_INDEX"),
                await self.read64("ERR_ADDR"))

    async def run(self, commands):
        """Soft reset, start, push (a FENCE last), wait for done: the guide's sequence."""
        await self.soft_reset()
        await self.clear_done()
        await self.start()
        await self.push(commands)
        await self.wait_done()
        return await self.error()


async def guide_setup(dut, **kwargs):
    tb = await setup(dut, **kwargs)
    host = Host(tb)
    await host.discover()
    await host.set_window(*WINDOW)
    await host.soft_reset()
    await host.clear_done()
    return tb, host


def put(tb, offset, data):
    """Bytes at a window offset of the memory."""
    tb.ram.write(WINDOW[0] + offset, bytes(data))


def get(tb, offset, length):
    return bytes(tb.ram.read(WINDOW[0] + offset, length))


def descriptor_tests(config, M, K):
    """GEMM_C's tests of its two scratchpad layouts for an ``M x K`` descriptor (N plays no
    part), by the guide's rule, in the order it makes them: per layout tried, ``"fits"``,
    ``"b"`` (B's rows do not fit: it fails its first test) or ``"a"`` (they fit, A's panels do
    not: it fails its second). Layout 2 is tried only when layout 1 does not fit."""
    c = config
    kr = min(c.rows, K)
    kt = -(-K // kr)
    tests = []
    # Layout 1: two strips of B (kt * kr rows each), A's chunk at least min(M, rows) rows.
    # Layout 2: eight single tiles of B (kr rows each), A's chunk at least one row.
    for b_rows, chunk in ((2 * kt * kr, min(M, c.rows)), (8 * kr, 1)):
        if b_rows >= c.spad_depth:
            tests.append("b")
        elif min(M, c.acc_depth // 2, (c.spad_depth - b_rows) // (2 * kt)) >= chunk:
            tests.append("fits")
            break
        else:
            tests.append("a")
    return tests


def descriptor_refusal(config, M, K, N):
    """What GEMM_C answers for a descriptor of ``M x K x N``, by the guide's rule: ``BAD_DIM``,
    ``BAD_ADDR`` or ``OK``."""
    if 0 in (M, K, N):
        return ErrorCode.BAD_DIM
    return ErrorCode.OK if descriptor_tests(config, M, K)[-1] == "fits" else ErrorCode.BAD_ADDR


# Tests ----------------------------------------------------------------------------------------

@cocotb.test()
async def test_soft_reset(dut):
    """Soft reset: finished when STATUS.busy reads 0; clears STATUS.error, ERR_CMD_INDEX,
    ERR_ADDR, the counters and the queue (and the GEMM_A/B of a descriptor); keeps STATUS.done,
    STATUS.cmd_overflow, CTRL.irq_enable, the window, CONFIG, the bias row, the per-column
    multipliers and shifts and the buffers. Commands running when it is written finish."""
    tb, host = await guide_setup(dut)
    watch = Watch(dut)
    c = tb.config
    n, ab = c.rows, c.acc_elem_bytes
    rng = tb.rng
    # Layout (window offsets).
    off_a, off_b, off_raw, off_bias, off_rq = 0x100, 0x200, 0x300, 0x401, 0x503
    off_out, off_canary, off_flight = 0x600, 0x700, 0x800
    A = random_operands(rng, (n, n), c)
    B = random_operands(rng, (n, c.cols), c)
    put(tb, off_a, le(A.ravel(), 1))
    put(tb, off_b, le(B.ravel(), 1))
    bias = rng.integers(-1 << 20, 1 << 20, size=c.cols)
    mult = rng.integers(1 << 10, 1 << 22, size=c.cols)
    shift = rng.integers(12, 30, size=c.cols)
    put(tb, off_bias, le(bias, ab))
    put(tb, off_rq, le(mult, 4) + le(shift, 4))
    zp, clamp = int(rng.integers(-50, 50)), (-100, 110)
    setup_stream = [
        cmds.load(0, off_a, n, n, n), cmds.load(n, off_b, n, c.cols, c.cols),
        cmds.matmul(0, n, n, n, 0), cmds.store(0, off_raw, n, c.cols, c.cols * ab),
        cmds.load(0, off_bias, 1, c.cols, 0, to_bias=True),
        cmds.load(0, off_rq, 2, c.cols, 4 * c.cols, to_requant=True),
        cmds.config(0, 0, zero_point=zp, clamp=clamp, round_even=True, per_channel=True),
        cmds.fence(),
    ]
    assert await host.run(setup_stream) == (ErrorCode.OK, 0, 0)
    raw = np.frombuffer(get(tb, off_raw, n * c.cols * ab), "<i4").reshape(n, c.cols)
    assert (raw == matmul(A, B, c)).all()

    # An error (ERR_CMD_INDEX counts on from the last stream), then commands that sit in the
    # stopped engine's queue, one more than fit (STATUS.cmd_overflow).
    bad_off = WINDOW[1] - WINDOW[0] - 2
    await host.push([cmds.load(0, bad_off, 1, 4, 0), cmds.fence()])
    await host.wait_done(clear=False)
    assert await host.error() == (ErrorCode.DMA_WINDOW, len(setup_stream),
                                  WINDOW[0] + bad_off)
    canary = get(tb, off_canary, 16)
    for _ in range(host.depth + HELD_OUTSIDE_QUEUE[host.gemm_unit] + 1):
        await host.push_one(cmds.store(0, off_canary, 1, c.cols, 0))
    st = await host.status()
    assert st["cmd_overflow"] and st["queue_full"] and st["done"], st
    assert await host.read("CMD_LEVEL") == host.depth
    # After an error CTRL.start does nothing: the queued STOREs stay.
    await host.start()
    await ClockCycles(dut.clk, 200)
    assert await host.read("CMD_LEVEL") == host.depth and get(tb, off_canary, 16) == canary
    before = {name: await host.read64(name) for name in ("CYCLES", "DMA_RD_BYTES")}
    assert before["DMA_RD_BYTES"] > 0, before

    reset_at = watch.cycle
    polls = await host.soft_reset()
    st = await host.status()
    tb.log.info("soft reset finished after %d polls: %s", polls, st)
    assert st["busy"] == 0 and st["error"] == 0 and st["queue_empty"] and not st["queue_full"]
    assert st["done"] and st["cmd_overflow"], "soft reset cleared STATUS.done or cmd_overflow"
    assert dut.irq.value == 1, "irq follows STATUS.done with CTRL.irq_enable"
    assert field("CTRL", "irq_enable", await host.read("CTRL")) == 1
    assert await host.read("ERR_CMD_INDEX") == 0 and await host.read64("ERR_ADDR") == 0
    assert await host.read("CMD_LEVEL") == 0
    assert await host.read64("WIN_BASE") == WINDOW[0]
    assert await host.read64("WIN_LIMIT") == WINDOW[1]
    staged = cmds.to_words(cmds.store(0, off_canary, 1, c.cols, 0))
    assert [await host.read(f"CMD_W{i}") for i in range(3)] == staged[:3]
    after = {name: await host.read64(name) for name in
             ("CYCLES", "BUSY_CYCLES", "MAC_ACTIVE_CYCLES", "DMA_RD_BYTES", "DMA_WR_BYTES")}
    assert after["CYCLES"] < watch.cycle - reset_at < before["CYCLES"], (after, before)
    assert after["BUSY_CYCLES"] == 0, after
    assert after["MAC_ACTIVE_CYCLES"] == after["DMA_RD_BYTES"] == after["DMA_WR_BYTES"] == 0
    await host.clear_done()
    st = await host.status()
    assert not st["done"] and not st["cmd_overflow"] and dut.irq.value == 0

    # CONFIG, the bias row, the per-column table and the accumulator survived: a STORE with
    # bias and per-column requantization after the reset uses them. The queued STOREs never ran.
    await host.start()
    await host.push([cmds.store(0, off_out, n, c.cols, c.cols, bias=True, requant=True),
                     cmds.fence()])
    await host.wait_done()
    assert (await host.error())[0] == ErrorCode.OK
    want = postprocess_columns(raw, c, bias=bias, requant=Requant(
        mult.tolist(), shift.tolist(), zero_point=zp, clamp=clamp, round_even=True))
    got = np.frombuffer(get(tb, off_out, n * c.cols), np.int8).reshape(n, c.cols)
    assert (got == want).all(), f"after the soft reset:\n{got}\nwant\n{want}"
    assert get(tb, off_canary, 16) == canary, "a STORE queued before the soft reset ran"
    # ERR_CMD_INDEX counts from the soft reset: those two commands, then the bad one.
    await host.push([cmds.matmul(0, 0, 0, 1, 0), cmds.fence()])
    await host.wait_done()
    assert await host.error() == (ErrorCode.BAD_DIM, 2, 0)

    # Work in flight, the memory answering slowly: a STORE and a LOAD, or a GEMM descriptor
    # being expanded. The soft reset waits for what runs (busy reads 1); the STORE writes all
    # its rows; once busy reads 0 the engine makes no more bus transfers. Commands pushed
    # meanwhile are dropped (STATUS.cmd_overflow): the refused MATMUL never reaches the engine.
    off_gemm = 0x4000
    workloads = {
        "STORE and LOAD": [cmds.store(0, off_flight, n, c.cols, c.cols * ab),
                           cmds.load(2 * n, off_a, 64, n, 0), cmds.fence()],
        "GEMM descriptor": [cmds.encode("GEMM_A", m=40, k=40, n=40),
                            cmds.encode("GEMM_B", a_offset=off_gemm, a_stride=40,
                                        b_offset=off_gemm + 0x800),
                            cmds.encode("GEMM_C", b_stride=40, c_offset=off_gemm + 0x1000,
                                        c_stride=160),
                            cmds.fence()],
    }
    for what, stream in workloads.items():
        await host.soft_reset()
        await host.clear_done()
        tb.ram.latency = 400
        put(tb, off_flight, bytes(n * c.cols * ab))
        seen = len(watch.events["ar"]) + len(watch.events["aw"])
        await host.start()
        await host.push(stream)
        while len(watch.events["ar"]) + len(watch.events["aw"]) == seen:
            await ClockCycles(dut.clk, 1)
        await host.write("CTRL", word("CTRL", soft_reset=1, irq_enable=1))
        assert (await host.status())["busy"] == 1, f"{what}: busy does not show the reset"
        await host.push_one(cmds.matmul(0, 0, 0, 1, 0))
        await host.push_one(cmds.fence())
        polls = 1
        while (await host.status())["busy"]:
            polls += 1
        idle_at = watch.cycle
        tb.log.info("%s: the soft reset took %d polls", what, polls)
        assert polls > 10, f"{what}: the soft reset did not wait for the memory"
        if what == "STORE and LOAD":
            assert get(tb, off_flight, n * c.cols * ab) == raw.astype("<i4").tobytes(), \
                "the STORE running at the soft reset did not finish"
        tb.ram.latency = 4
        await ClockCycles(dut.clk, 1000)
        late = {ch: [x for x in watch.events[ch] if x >= idle_at]
                for ch in ("ar", "aw", "w", "r", "b")}
        assert not any(late.values()), f"{what}: bus transfers after busy read 0: {late}"
        st = await host.status()
        assert st["cmd_overflow"] and not st["done"], st
        assert await host.read("CMD_LEVEL") == 0
        await host.clear_done()
        await host.start()
        await host.push([cmds.fence()])
        await host.wait_done()
        assert await host.error() == (ErrorCode.OK, 0, 0), what

    # The GEMM unit forgets a GEMM_A and GEMM_B it has taken: GEMM_C alone is then M = 0.
    desc = [cmds.encode("GEMM_A", m=1, k=1, n=1),
            cmds.encode("GEMM_B", a_offset=off_a, a_stride=1, b_offset=off_b),
            cmds.encode("GEMM_C", b_stride=1, c_offset=off_out, c_stride=4)]
    for reset_between in (False, True):
        await host.soft_reset()
        await host.clear_done()
        await host.start()
        await host.push(desc[:2])
        while await host.read("CMD_LEVEL") or (await host.status())["busy"]:
            pass
        if reset_between:
            await host.soft_reset()
            await host.start()
        put(tb, off_out, bytes(4))
        await host.push([desc[2], cmds.fence()])
        await host.wait_done()
        if reset_between:
            assert await host.error() == (ErrorCode.BAD_DIM, 0, 0)
        else:
            assert await host.error() == (ErrorCode.OK, 0, 0)
            got = int.from_bytes(get(tb, off_out, 4), "little", signed=True)
            assert got == int(A[0, 0]) * int(B[0, 0]), got

    # CTRL.irq_enable is a bit of the register that start and soft_reset are written to: a
    # write without it clears it.
    assert field("CTRL", "irq_enable", await host.read("CTRL")) == 1
    await host.write("CTRL", word("CTRL", start=1))
    assert field("CTRL", "irq_enable", await host.read("CTRL")) == 0


@cocotb.test()
async def test_channel_layout(dut):
    """The per-column values of a GEMM descriptor at GEMM_A.channel_offset: N bias values of
    acc_elem_bytes, then N int32 multipliers and N int32 shifts (low 6 bits used); packed, any
    alignment; without a bias the multipliers start at channel_offset."""
    tb, host = await guide_setup(dut)
    c = tb.config
    rng = tb.rng
    M, K, N = 5, 6, 3 * c.cols - 1             # three N tiles: each reads its slice
    ab = c.acc_elem_bytes
    off_a, off_b, off_c, off_ch = 0x100, 0x200, 0x400, 0x1003
    for bias_on, per_channel in ((True, True), (False, True), (True, False)):
        A = random_operands(rng, (M, K), c, extremes=0.1)
        B = random_operands(rng, (K, N), c, extremes=0.1)
        put(tb, off_a, le(A.ravel(), 1))
        put(tb, off_b, le(B.ravel(), 1))
        bias = rng.integers(-(1 << 31), 1 << 31, size=N) if bias_on else None
        mult = rng.integers(-(1 << 31), 1 << 31, size=N)
        shift = rng.integers(20, 40, size=N)
        junk = rng.integers(0, 1 << 25, size=N) << 6     # bits above the six used
        table = (le(bias, ab) if bias_on else b"") + \
            (le(mult, 4) + le(shift + junk, 4) if per_channel else b"")
        put(tb, off_ch, table + bytes(rng.integers(0, 256, size=64, dtype=np.uint8)))
        zp, relu = int(rng.integers(-60, 60)), bool(rng.integers(2))
        requant = per_channel
        stream = [cmds.config(0, 0, zero_point=zp, round_even=True, per_channel=True)] \
            if requant else []
        out_bytes = 1 if requant else ab
        stream += [cmds.encode("GEMM_A", m=M, k=K, n=N, bias=bias_on, relu=relu,
                               requant=requant, per_channel=per_channel,
                               channel_offset=off_ch),
                   cmds.encode("GEMM_B", a_offset=off_a, a_stride=K, b_offset=off_b),
                   cmds.encode("GEMM_C", b_stride=N, c_offset=off_c, c_stride=N * out_bytes),
                   cmds.fence()]
        assert await host.run(stream) == (ErrorCode.OK, 0, 0)
        q = Requant(mult.tolist(), shift.tolist(), zero_point=zp, round_even=True) \
            if requant else None
        want = postprocess_columns(matmul(A, B, c), c, bias=bias, relu=relu, requant=q)
        dtype = np.int8 if requant else "<i4"
        got = np.frombuffer(get(tb, off_c, M * N * out_bytes), dtype).reshape(M, N)
        assert (got == want).all(), f"bias {bias_on} per_channel {per_channel}:\n{got}\n{want}"
        tb.log.info("channel table: bias %s, per_channel %s, %d bytes at offset %#x: right",
                    bias_on, per_channel, len(table), off_ch)


@cocotb.test()
async def test_descriptor_refusals(dut):
    """GEMM_C refuses with BAD_DIM for a zero dimension and with BAD_ADDR where the guide's
    rule (:func:`descriptor_refusal`) says, on both sides of the largest K it accepts (the
    largest GEMM of the test runs, bit-exact); ERR_CMD_INDEX counts the commands before the
    descriptor, ERR_ADDR is 0, nothing is written."""
    tb, host = await guide_setup(dut)
    c = tb.config
    off_a, off_b, off_c = 0x100, 0x1000, 0x2000
    # The largest K the rule accepts for M = 2 (on this engine it does not depend on M or N).
    k_max = max(k for k in range(1, 4 * c.spad_depth)
                if descriptor_refusal(c, 2, k, 2) == ErrorCode.OK)
    assert descriptor_refusal(c, 2, k_max + 1, 2) == ErrorCode.BAD_ADDR
    tb.log.info("largest K the rule accepts: %d", k_max)
    cases = [(0, 3, 3), (3, 0, 3), (3, 3, 0), (1, k_max + 1, 1), (2, k_max + 1, 2),
             (2, k_max, 2)]
    for M, K, N in cases:
        want = descriptor_refusal(c, M, K, N)
        A = random_operands(tb.rng, (M, K), c)
        B = random_operands(tb.rng, (K, N), c)
        put(tb, off_a, le(A.ravel(), 1))
        put(tb, off_b, le(B.ravel(), 1))
        put(tb, off_c, bytes(64))
        stream = [cmds.load(0, off_a, 1, 1, 0),
                  cmds.encode("GEMM_A", m=M, k=K, n=N, channel_offset=0),
                  cmds.encode("GEMM_B", a_offset=off_a, a_stride=max(K, 1), b_offset=off_b),
                  cmds.encode("GEMM_C", b_stride=max(N, 1), c_offset=off_c, c_stride=4 * N),
                  cmds.fence()]
        got = await host.run(stream)
        tb.log.info("GEMM %dx%dx%d: %s (rule: %s)", M, K, N, got[0].name, want.name)
        if want == ErrorCode.OK:
            assert got == (ErrorCode.OK, 0, 0), got
            C = np.frombuffer(get(tb, off_c, 4 * M * N), "<i4").reshape(M, N)
            assert (C == matmul(A, B, c)).all()
        else:
            assert got == (want, 1, 0), got
            assert get(tb, off_c, 64) == bytes(64), "a refused descriptor wrote memory"


@cocotb.test()
async def test_err_addr(dut):
    """ERR_ADDR: for DMA_WINDOW, WIN_BASE + mem_offset of the refused LOAD or STORE (wrapping
    at CFG_AXI_ADDR_WIDTH bits); for a read error, the bus-aligned address of the first failing
    beat (bytes before an unaligned row's first byte, in its first beat, are read too, even
    outside the window); for a write error, the address of the failing burst."""
    tb, host = await guide_setup(dut, pause=0.2)
    host.irq = False                   # wait for STATUS.done by polling
    c = tb.config
    bb = c.axi_bytes
    base = WINDOW[0]
    assert base % bb == 0
    # A per-column requant row (cols int32 values) spans several beats, unaligned five.
    assert c.cols * 4 > 2 * bb
    good = cmds.load(0, 0x40, 1, 1, 0)
    aw_mask = (1 << c.axi_addr_width) - 1
    cases = [
        # (what, limit, command, error regions, decerr, code, ERR_ADDR)
        ("LOAD leaves the window", base + 0x2000, cmds.load(0, 0x1F83, 3, 4, 0x40), [],
         False, ErrorCode.DMA_WINDOW, base + 0x1F83),
        ("STORE leaves the window", base + 0x2000,
         cmds.store(0, 0x1FF1, 2, c.cols, 0x10), [], False, ErrorCode.DMA_WINDOW,
         base + 0x1FF1),
        ("offset wraps below WIN_BASE", WINDOW[1], cmds.load(0, 0xFFFF_FFF0, 1, 4, 0), [],
         False, ErrorCode.DMA_WINDOW, (base + 0xFFFF_FFF0) & aw_mask),
        ("SLVERR in a burst's third beat, row 1", WINDOW[1],
         cmds.load(0, 0x301, 2, c.cols, 0x25, to_requant=True),
         [(base + 0x326 + 8, base + 0x326 + 9)], False, ErrorCode.DMA_SLVERR,
         (base + 0x326 + 8) // bb * bb),
        ("DECERR in the same place", WINDOW[1],
         cmds.load(0, 0x301, 2, c.cols, 0x25, to_requant=True),
         [(base + 0x326 + 8, base + 0x326 + 9)], True, ErrorCode.DMA_DECERR,
         (base + 0x326 + 8) // bb * bb),
        ("SLVERR on a write: the burst", WINDOW[1],
         cmds.store(0, 0x402, 2, c.cols, 0x20),
         [(base + 0x422 + 9, base + 0x422 + 10)], False, ErrorCode.DMA_SLVERR,
         (base + 0x422) // bb * bb),
    ]
    for what, limit, bad, regions, decerr, code, addr in cases:
        await host.set_window(base, limit)
        tb.ram.error_regions, tb.ram.decerr = regions, decerr
        got = await host.run([good, bad, cmds.fence()])
        tb.log.info("%s: %s, ERR_CMD_INDEX %d, ERR_ADDR %#x", what, got[0].name, got[1], got[2])
        assert got == (code, 1, addr), f"{what}: {got[0].name} {got[1]} {got[2]:#x}, want " \
            f"{code.name} 1 {addr:#x}"
    # A window base that is not beat-aligned: a LOAD from offset 0 reads the beat around it,
    # so a failing byte below WIN_BASE fails the LOAD, and ERR_ADDR lies below WIN_BASE.
    await host.set_window(base + 1, WINDOW[1])
    tb.ram.error_regions, tb.ram.decerr = [(base, base + 1)], False
    got = await host.run([cmds.load(0, 0, 1, 4, 0), cmds.fence()])
    assert got == (ErrorCode.DMA_SLVERR, 0, base), got
    tb.ram.error_regions = []
    await host.set_window(*WINDOW)
    assert await host.run([good, cmds.fence()]) == (ErrorCode.OK, 0, 0)


@cocotb.test()
async def test_queue(dut):
    """Before CTRL.start, plain commands leave the queue into the pipeline behind it
    (HELD_OUTSIDE_QUEUE of them), a GEMM_A stays at the queue's head; CMD_LEVEL and
    STATUS.queue_full/queue_empty follow the queue alone; CFG_CMD_QUEUE_DEPTH - CMD_LEVEL
    pushes never overflow, one more does."""
    tb, host = await guide_setup(dut)
    host.irq = False                   # wait for STATUS.done by polling
    held = HELD_OUTSIDE_QUEUE[host.gemm_unit]
    depth = host.depth
    filler = cmds.config(1, 0)
    for pushed in range(1, depth + held + 1):
        await host.push_one(filler)
        st = await host.status()
        level = await host.read("CMD_LEVEL")
        assert level == max(0, pushed - held), (pushed, level)
        assert st["queue_empty"] == (level == 0) and st["queue_full"] == (level == depth), st
        assert not st["cmd_overflow"] and not st["busy"], st
    await host.push_one(filler)
    st = await host.status()
    assert st["cmd_overflow"] and await host.read("CMD_LEVEL") == depth, st
    # The room rule, from any fill: push CFG_CMD_QUEUE_DEPTH - CMD_LEVEL, then it is full.
    for first in (0, 1, held, held + 3):
        await host.soft_reset()
        await host.clear_done()
        for _ in range(first):
            await host.push_one(filler)
        room = depth - await host.read("CMD_LEVEL")
        for _ in range(room):
            await host.push_one(filler)
        st = await host.status()
        assert not st["cmd_overflow"], f"{first} then {room} pushes overflowed"
        if first >= held:
            assert st["queue_full"], st
    # After CTRL.start everything runs: the queue and the pipeline drain.
    await host.start()
    await host.push([cmds.fence()])
    await host.wait_done()
    assert (await host.error())[0] == ErrorCode.OK
    assert await host.read("CMD_LEVEL") == 0
    if host.gemm_unit:
        # GEMM_A/B/C are taken only while the engine runs: from a GEMM_A on, all stay queued.
        await host.soft_reset()
        await host.clear_done()
        stream = [filler, filler, cmds.encode("GEMM_A", m=1, k=1, n=1)] + [filler] * 4
        for pushed, command in enumerate(stream, 1):
            await host.push_one(command)
        assert await host.read("CMD_LEVEL") == len(stream) - 2


@cocotb.test()
async def test_latency(dut):
    """The guide's cycle counts: from a register write (the first cycle of its response) to
    irq, to STATUS.busy falling, to the first request on the memory bus; from the last memory
    response of a LOAD or STORE to irq, under random sizes, alignments, memory latencies and
    back-pressure (``MXE_PARAMS`` ``trials``, default 12)."""
    tb, host = await guide_setup(dut, pause=0, latency=4)
    watch = Watch(dut)
    c = tb.config
    unit = host.gemm_unit
    measured = {}

    async def fresh():
        await host.soft_reset()
        await host.clear_done()

    async def queued_then_start(commands):
        """Push ``commands`` (a FENCE last), let them settle into the registers in front of
        the dispatch, then CTRL.start; the start's cycle."""
        await fresh()
        for command in commands:
            await host.push_one(command)
        await ClockCycles(dut.clk, 20)
        await host.start()
        t0 = watch.last("axil_b")
        await host.wait_done()
        return t0

    async def pushed(command):
        """Push ``command`` to the running, idle engine, then a FENCE; the push's cycle."""
        await ClockCycles(dut.clk, 20)
        await host.push_one(command)
        t0 = watch.last("axil_b")
        if cmds.decode(command)[0] != "FENCE":
            await host.push_one(cmds.fence())
        await host.wait_done()
        return t0

    ax_skids, w_registers = (0, 0) if c.deep_pipeline else (AX_SKIDS, W_REGISTERS)

    def check(name, got, want):
        measured[name] = got
        assert got == want, f"{name}: {got} cycles, the guide says {want}"

    t0 = await queued_then_start([cmds.fence()])
    check("start to done", watch.last("irq") - t0, START_TO_DONE)
    for k in (1, 4, host.depth + HELD_OUTSIDE_QUEUE[unit] - 1):     # all fit before the start
        t0 = await queued_then_start([cmds.config(1, 0)] * k + [cmds.fence()])
        check(f"start to done, {k} CONFIGs first", watch.last("irq") - t0,
              CONFIGS_THEN_DONE + DISPATCH_CYCLES * k)
    t0 = await pushed(cmds.fence())
    check("push to done", watch.last("irq") - t0, PUSH_TO_DONE[unit])
    t0 = await pushed(cmds.matmul(0, 0, 0, 1, 0))
    check("push to refused", watch.last("irq") - t0, PUSH_TO_REFUSED[unit])
    await fresh()
    await host.start()
    t0 = await pushed(cmds.load(0, 0, 3, 4, 4))
    check("push to AR", watch.after("arvalid", t0) - t0,
          PUSH_TO_AR[unit] - ax_skids + check_latency(c, 3))
    await fresh()
    await ClockCycles(dut.clk, 20)
    await host.write("CTRL", word("CTRL", soft_reset=1, irq_enable=1))
    t0 = watch.last("axil_b")
    await ClockCycles(dut.clk, 20)
    check("soft reset", watch.after("idle", t0) - t0, SOFT_RESET_IDLE)
    # A queued LOAD or STORE: its first request follows CTRL.start after the DMA's check,
    # check_latency(c, rows); a STORE's first data beat after the post-processor.
    for rows in (1, 4, 5, 17, 200):
        t0 = await queued_then_start([cmds.load(0, 0, rows, 4, 4), cmds.fence()])
        check(f"start to AR, {rows} rows", watch.after("arvalid", t0) - t0,
              START_TO_AR - ax_skids + check_latency(c, rows))
        rows = min(rows, 16)
        t0 = await queued_then_start([cmds.store(0, 0x100, rows, c.cols, 16), cmds.fence()])
        check(f"start to AW, {rows} rows", watch.after("awvalid", t0) - t0,
              START_TO_AR - ax_skids + check_latency(c, rows))
        check("start to W", watch.after("wvalid", t0) - t0,
              START_TO_W - w_registers + postproc_latency(c) + c.postproc_passes - 1)
    if unit:
        # GEMM_C's set-up: a refusal, or the first read of an accepted descriptor. The K at
        # which the rule refuses (M = N = 1); a K whose two strips fit but leave less than
        # rows rows for A's panels, so that single tiles are tried after the division.
        k_bad = next(k for k in range(1, 1 << 16)
                     if descriptor_refusal(c, 1, k, 1) == ErrorCode.BAD_ADDR)
        r = c.rows
        k_late = next(k for k in range(r, 1 << 16, r)
                      if descriptor_tests(c, r, k) == ["a", "fits"])
        for name, (M, K, N) in (("zero dimension", (0, 1, 1)), ("buffers", (1, k_bad, 1)),
                                ("layout 1", (1, 1, 1)), ("layout 2", (1, k_bad - 1, 1)),
                                ("layout 2 after a division", (r, k_late, 1))):
            t0 = await queued_then_start([
                cmds.encode("GEMM_A", m=M, k=K, n=N),
                cmds.encode("GEMM_B", a_offset=0, a_stride=K, b_offset=0x10000),
                cmds.encode("GEMM_C", b_stride=N, c_offset=0x40000, c_stride=4 * N),
                cmds.fence()])
            code = descriptor_refusal(c, M, K, N)
            assert (await host.error())[0] == code, (name, M, K, N)
            if code == ErrorCode.BAD_DIM:
                want = GEMM_REFUSED_DIM
            elif code == ErrorCode.BAD_ADDR:
                want = GEMM_REFUSED_ADDR + shape_cycles(c) \
                    + layout_cycles(c, descriptor_tests(c, M, K))
            else:   # its first LOAD: A's first tile, a chunk of M (the unit's model's mc)
                want = GEMM_FIRST_READ + shape_cycles(c) \
                    + layout_cycles(c, descriptor_tests(c, M, K)) + tiling_cycles(c, M, K, N) \
                    + check_latency(c, schedule(c, M, K, N)[0].mc)
            end = watch.after("arvalid", t0) if code == ErrorCode.OK else watch.last("irq")
            check(f"GEMM {M}x{K}x{N} ({name}, tests {descriptor_tests(c, M, K)})", end - t0,
                  want)
    # From the memory's last answer to irq, with random back-pressure and latency.
    tb.set_backpressure(0.3)
    worst = {"store": 0, "load": 0}
    best = {"store": 1 << 30, "load": 1 << 30}
    rng = tb.rng
    lane0 = c.dma_alignment                          # where an engine's DMA may start a row

    def on_lane0(offset, stride):
        return offset - offset % lane0, stride + -stride % lane0

    for trial in range(tb.params.get("trials", 12)):
        rows = int(rng.integers(1, 20))
        tb.ram.latency = int(rng.integers(0, 30))
        elems = int(rng.integers(1, c.cols + 1))
        requant = bool(rng.integers(2))
        row_bytes = elems * (1 if requant else c.acc_elem_bytes)
        offset, stride = on_lane0(int(rng.integers(0x100, 0x140)),
                                  row_bytes + int(rng.integers(0, 10)))
        await queued_then_start([cmds.store(0, offset, rows, elems, stride, requant=requant),
                                 cmds.fence()])
        gap = watch.last("irq") - watch.last("b")
        worst["store"], best["store"] = max(worst["store"], gap), min(best["store"], gap)
        elems = int(rng.integers(1, c.spad_row_elems + 1))
        offset, stride = on_lane0(int(rng.integers(0, 0x40)),
                                  elems * c.elem_bytes + int(rng.integers(0, 10)))
        await queued_then_start([cmds.load(0, offset, rows, elems, stride), cmds.fence()])
        gap = watch.last("irq") - watch.last("r")
        worst["load"], best["load"] = max(worst["load"], gap), min(best["load"], gap)
    measured["last B to done"] = (best["store"], worst["store"])
    measured["last R to done"] = (best["load"], worst["load"])
    tb.log.info("measured: %s", measured)
    assert worst["store"] <= STORE_B_TO_DONE and worst["load"] <= LOAD_R_TO_DONE, worst
    assert min(best.values()) > 0, f"irq before the last memory response: {best}"


@cocotb.test()
async def test_refusal_paths(dut):
    """Every K up to 16 that GEMM_C refuses for the buffers (M = N = 1) is refused after
    GEMM_REFUSED_ADDR plus its set-up and layout tests: on a tiny scratchpad, layouts fail their
    first test or their second in every combination the configuration allows."""
    tb, host = await guide_setup(dut, pause=0)
    watch = Watch(dut)
    c = tb.config
    seen = set()
    for K in range(1, 17):
        if descriptor_refusal(c, 1, K, 1) != ErrorCode.BAD_ADDR:
            continue
        await host.soft_reset()
        await host.clear_done()
        for command in [cmds.encode("GEMM_A", m=1, k=K, n=1),
                        cmds.encode("GEMM_B", a_offset=0, a_stride=K, b_offset=0x100),
                        cmds.encode("GEMM_C", b_stride=1, c_offset=0x200, c_stride=4),
                        cmds.fence()]:
            await host.push_one(command)
        await host.start()
        t0 = watch.last("axil_b")
        await host.wait_done()
        assert await host.error() == (ErrorCode.BAD_ADDR, 0, 0)
        tests = descriptor_tests(c, 1, K)
        got = watch.last("irq") - t0
        tb.log.info("1x%dx1, tests %s: refused after %d cycles", K, tests, got)
        assert got == GEMM_REFUSED_ADDR + shape_cycles(c) + layout_cycles(c, tests), \
            (K, tests, got)
        seen.add(tuple(tests))
    assert seen, f"{c.key()} refuses no descriptor with K up to 16"
    tb.log.info("paths: %s", sorted(seen))
