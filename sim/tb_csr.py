"""cocotb bench of the CSR block (:class:`mxe.hw.csr.CSRBlock`) behind cocotbext-axi's
AxiLiteMaster, with random pauses on all five channels.

Run through :func:`mxe.sim.runner.run_bench` with :func:`csr_bench_top` as the component; it
receives its configuration and seed from the environment. Parameters (``MXE_PARAMS``, JSON):

``pause``
    Probability of a pause cycle on every AXI channel (default 0.3; 0 disables pauses).
"""

import logging
import random

import cocotb
from amaranth import Module
from amaranth.lib import wiring
from cocotb.clock import Clock
from cocotb.triggers import Combine, FallingEdge, ReadOnly, RisingEdge, with_timeout
from cocotbext.axi import AxiLiteBus, AxiLiteMaster, AxiResp

from mxe.hw.axi import axilite_signature, connect_flat, flat_members
from mxe.hw.csr import CSRBlock
from mxe.hw.regmap import (CAPABILITIES, COUNTERS, CONFIG_REGISTERS, ID_VALUE, OFFSETS, REGMAP,
                           REGISTERS, ports, present_counters)
from mxe.sim.runner import bench_config, bench_params, bench_seed, bus_channels


class CSRBenchTop(wiring.Component):
    """The CSR block with its bus as flat ``s_axil_*`` ports (cocotbext-axi's naming); every
    other port passes through under its own name."""

    def __init__(self, config):
        self._csr = CSRBlock(config)
        members = flat_members(axilite_signature(addr_width=self._csr.addr_width), "s_axil",
                               flipped=True)
        for name, member in self._csr.signature.members.items():
            if name != "bus":
                members[name] = member
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        m.submodules.csr = csr = self._csr
        connect_flat(m, self, "s_axil", csr.bus)
        for name, member in csr.signature.members.items():
            if name == "bus":
                continue
            if name == "o_cmd":
                wiring.connect(m, wiring.flipped(self.o_cmd), csr.o_cmd)
            elif member.flow == wiring.Flow.Out:
                m.d.comb += getattr(self, name).eq(getattr(csr, name))
            else:
                m.d.comb += getattr(csr, name).eq(getattr(self, name))
        return m


def csr_bench_top(config):
    return CSRBenchTop(config)


IN_PORTS = ["status_busy", "status_done", "status_queue_empty", "status_queue_full",
            "status_error", "err_cmd_index", "err_addr", "cmd_level",
            *(port for _, port, _ in COUNTERS)]


def port_value(handle):
    """A port's current value as an unsigned integer."""
    v = handle.value
    return v.to_unsigned() if hasattr(v, "to_unsigned") else int(v)


def field(reg, name, word):
    f = REGMAP[reg]["fields"][name]
    return (word >> f["lsb"]) & ((1 << f["width"]) - 1)


class CSRTB:
    """AxiLiteMaster on the bus, a model command queue on ``o_cmd``, pulse monitors on the W1P
    ports."""

    def __init__(self, dut, config, seed, *, pause):
        self.dut = dut
        self.config = config
        self.rng = random.Random(seed)
        self.log = logging.getLogger("cocotb.tb")
        self.log.info("seed %d, config %s, pause %s", seed, config.key(), pause)
        cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
        self.axil = AxiLiteMaster(AxiLiteBus.from_prefix(dut, "s_axil"), dut.clk, dut.rst)
        logging.getLogger(f"cocotb.{dut._name}.s_axil").setLevel(logging.WARNING)
        self.queue = []          # the model command queue
        self.queue_depth = config.cmd_queue_depth
        self.pulses = {"ctrl_start": [], "ctrl_soft_reset": []}
        self.cycle = 0
        if pause:
            self.set_backpressure(lambda: self._pauses(pause))

    def _pauses(self, probability):
        rng = random.Random(self.rng.random())
        while True:
            yield rng.random() < probability

    def set_backpressure(self, generator):
        for channel in bus_channels(self.axil):
            channel.set_pause_generator(generator() if generator else None)

    async def reset(self):
        dut = self.dut
        for name in IN_PORTS:
            if name in ports(config=self.config):
                getattr(dut, name).value = 0
        dut.o_cmd__ready.value = 0
        dut.rst.value = 1
        for _ in range(3):
            await RisingEdge(dut.clk)
        dut.rst.value = 0
        cocotb.start_soon(self._monitor())

    async def _monitor(self):
        """Every cycle: the command queue model (ready while not full) and the W1P pulses,
        sampled between rising edges, where the block's registered outputs are stable."""
        dut = self.dut
        while True:
            await FallingEdge(dut.clk)
            ready = len(self.queue) < self.queue_depth
            dut.o_cmd__ready.value = int(ready)
            dut.cmd_level.value = len(self.queue)
            dut.status_queue_empty.value = int(not self.queue)
            dut.status_queue_full.value = int(not ready)
            await ReadOnly()
            self.cycle += 1
            if ready and port_value(dut.o_cmd__valid):
                self.queue.append(port_value(dut.o_cmd__payload))
            for name, seen in self.pulses.items():
                if port_value(getattr(dut, name)):
                    seen.append(self.cycle)

    async def read(self, offset, *, resp=AxiResp.OKAY):
        result = await self.axil.read(offset, 4)
        assert result.resp == resp, f"read {offset:#x}: resp {result.resp}, expected {resp}"
        return int.from_bytes(result.data, "little")

    async def write(self, offset, value, *, resp=AxiResp.OKAY):
        result = await self.axil.write(offset, value.to_bytes(4, "little"))
        assert result.resp == resp, f"write {offset:#x}: resp {result.resp}, expected {resp}"

    async def cycles(self, n):
        for _ in range(n):
            await RisingEdge(self.dut.clk)


async def setup(dut):
    config = bench_config()
    params = bench_params()
    tb = CSRTB(dut, config, bench_seed(), pause=params.get("pause", 0.3))
    await tb.reset()
    return tb


@cocotb.test()
async def test_id_and_config(dut):
    """ID and every configuration register against the EngineConfig."""
    tb = await setup(dut)
    assert await tb.read(OFFSETS["ID"]) == ID_VALUE == 0x4D584504
    for reg, attr in CONFIG_REGISTERS:
        got = await tb.read(OFFSETS[reg])
        assert got == int(getattr(tb.config, attr)), f"{reg}: {got}, config.{attr} = " \
            f"{getattr(tb.config, attr)}"
    # Every mapped register answers OKAY; writes to read-only registers change nothing.
    for reg in REGISTERS:
        await tb.read(reg.offset)
    await tb.write(OFFSETS["CFG_ROWS"], 0xFFFF)
    assert await tb.read(OFFSETS["CFG_ROWS"]) == tb.config.rows


@cocotb.test()
async def test_capabilities(dut):
    """CAPABILITIES has one bit per feature, as configured, and 0 in the reserved bits; the
    registers of a missing feature read 0 with OKAY and ignore writes."""
    tb = await setup(dut)
    word = await tb.read(OFFSETS["CAPABILITIES"])
    for name, _doc in CAPABILITIES:
        assert field("CAPABILITIES", name, word) == int(getattr(tb.config, name)), \
            f"CAPABILITIES.{name}: {word:#x}, config.{name} = {getattr(tb.config, name)}"
    assert word >> len(CAPABILITIES) == 0, f"reserved bits set: {word:#x}"
    await tb.write(OFFSETS["CAPABILITIES"], 0xFFFFFFFF)
    assert await tb.read(OFFSETS["CAPABILITIES"]) == word
    absent = [reg for reg in REGISTERS if not reg.present(tb.config)]
    assert bool(absent) == (not tb.config.perf_counters)
    for reg in absent:
        await tb.write(reg.offset, 0xFFFFFFFF)
        assert await tb.read(reg.offset) == 0, f"{reg.name} of a missing feature reads non-zero"


@cocotb.test()
async def test_rw_registers(dut):
    """RW registers read back and drive their ports; byte strobes merge."""
    tb = await setup(dut)
    rng = tb.rng
    for _ in range(6):
        base, limit = rng.getrandbits(64), rng.getrandbits(64)
        for name, value in (("WIN_BASE", base), ("WIN_LIMIT", limit)):
            await tb.write(OFFSETS[f"{name}_LO"], value & 0xFFFFFFFF)
            await tb.write(OFFSETS[f"{name}_HI"], value >> 32)
        assert await tb.read(OFFSETS["WIN_BASE_LO"]) == base & 0xFFFFFFFF
        assert await tb.read(OFFSETS["WIN_BASE_HI"]) == base >> 32
        assert await tb.read(OFFSETS["WIN_LIMIT_LO"]) == limit & 0xFFFFFFFF
        assert await tb.read(OFFSETS["WIN_LIMIT_HI"]) == limit >> 32
        assert port_value(dut.win_base) == base
        assert port_value(dut.win_limit) == limit
    # One byte written (wstrb = 0b0100): only that byte changes.
    before = await tb.read(OFFSETS["WIN_BASE_LO"])
    result = await tb.axil.write(OFFSETS["WIN_BASE_LO"] + 2, b"\xA5")
    assert result.resp == AxiResp.OKAY
    want = (before & ~0x00FF0000) | 0x00A50000
    assert await tb.read(OFFSETS["WIN_BASE_LO"]) == want
    # The staging words are RW too.
    for i in range(3):
        value = rng.getrandbits(32)
        await tb.write(OFFSETS[f"CMD_W{i}"], value)
        assert await tb.read(OFFSETS[f"CMD_W{i}"]) == value
    # irq_enable: RW bit of CTRL.
    await tb.write(OFFSETS["CTRL"], 1 << REGMAP["CTRL"]["fields"]["irq_enable"]["lsb"])
    assert field("CTRL", "irq_enable", await tb.read(OFFSETS["CTRL"])) == 1
    assert port_value(dut.ctrl_irq_enable) == 1
    await tb.write(OFFSETS["CTRL"], 0)
    assert port_value(dut.ctrl_irq_enable) == 0


@cocotb.test()
async def test_writes_in_flight(dut):
    """Writes issued without waiting for each response (the master keeps several in flight,
    the next write's address and data arrive while a response waits for BREADY): every write
    gets its own OKAY and lands, in order."""
    tb = await setup(dut)
    rng = tb.rng
    names = ["WIN_BASE_LO", "WIN_BASE_HI", "WIN_LIMIT_LO", "WIN_LIMIT_HI",
             "CMD_W0", "CMD_W1", "CMD_W2"]
    for _ in range(4):
        writes = [(name, rng.getrandbits(32)) for name in rng.choices(names, k=24)]
        tasks = [cocotb.start_soon(tb.write(OFFSETS[name], value)) for name, value in writes]
        # a lost response would leave its write waiting for ever
        await with_timeout(Combine(*tasks), 400 * len(writes), "ns")
        final = dict(writes)    # the last write to each register wins
        for name, value in final.items():
            assert await tb.read(OFFSETS[name]) == value, name


@cocotb.test()
async def test_w1p_pulses(dut):
    """start and soft_reset: exactly one one-cycle pulse per write of 1, none for 0."""
    tb = await setup(dut)
    start = 1 << REGMAP["CTRL"]["fields"]["start"]["lsb"]
    soft = 1 << REGMAP["CTRL"]["fields"]["soft_reset"]["lsb"]
    expected = {"ctrl_start": 0, "ctrl_soft_reset": 0}
    for _ in range(12):
        value = tb.rng.choice([0, start, soft, start | soft])
        await tb.write(OFFSETS["CTRL"], value)
        expected["ctrl_start"] += bool(value & start)
        expected["ctrl_soft_reset"] += bool(value & soft)
        assert field("CTRL", "start", await tb.read(OFFSETS["CTRL"])) == 0  # reads as 0
    await tb.cycles(4)
    for name, count in expected.items():
        seen = tb.pulses[name]
        assert len(seen) == count, f"{name}: {len(seen)} pulse cycles, expected {count}"
        assert all(b - a > 1 for a, b in zip(seen, seen[1:])), f"{name}: pulse longer than 1"


@cocotb.test()
async def test_w1c_done_and_irq(dut):
    """STATUS.done is sticky, cleared by writing 1; irq follows it when enabled."""
    tb = await setup(dut)
    done_bit = 1 << REGMAP["STATUS"]["fields"]["done"]["lsb"]
    assert field("STATUS", "done", await tb.read(OFFSETS["STATUS"])) == 0
    await tb.write(OFFSETS["CTRL"], 1 << REGMAP["CTRL"]["fields"]["irq_enable"]["lsb"])
    await RisingEdge(dut.clk)
    dut.status_done.value = 1
    await RisingEdge(dut.clk)
    dut.status_done.value = 0
    await tb.cycles(2)
    assert port_value(dut.irq) == 1
    for _ in range(2):  # sticky
        assert field("STATUS", "done", await tb.read(OFFSETS["STATUS"])) == 1
    await tb.write(OFFSETS["STATUS"], 0)  # writing 0 does not clear
    assert field("STATUS", "done", await tb.read(OFFSETS["STATUS"])) == 1
    await tb.write(OFFSETS["STATUS"], done_bit)
    assert field("STATUS", "done", await tb.read(OFFSETS["STATUS"])) == 0
    assert port_value(dut.irq) == 0
    # RO fields of STATUS and the error registers follow their ports.
    dut.status_busy.value = 1
    dut.status_error.value = 0xA
    dut.err_cmd_index.value = 0x12345678
    dut.err_addr.value = 0x89ABCDEF_01234567
    await tb.cycles(1)
    status = await tb.read(OFFSETS["STATUS"])
    assert field("STATUS", "busy", status) == 1 and field("STATUS", "error", status) == 0xA
    assert await tb.read(OFFSETS["ERR_CMD_INDEX"]) == 0x12345678
    assert await tb.read(OFFSETS["ERR_ADDR_LO"]) == 0x01234567
    assert await tb.read(OFFSETS["ERR_ADDR_HI"]) == 0x89ABCDEF


@cocotb.test()
async def test_counter_snapshots(dut):
    """A LO then HI read is one consistent 64-bit value even when the low word wraps between
    the two reads."""
    tb = await setup(dut)
    # Low words that wrap every few cycles, so the high word changes between most LO and HI
    # reads: a block without the snapshot would return pairs the counter never held.
    counters = present_counters(tb.config)
    steps = {port: tb.rng.choice([(1 << 28) + 1, (1 << 29) + 3, (1 << 27) + 7, (1 << 30) + 5])
             for _, port, _ in counters}
    # One counter's low word wraps every four cycles, less than a LO and HI read take: some
    # read straddles a carry whatever the seed draws for the others.
    steps[tb.rng.choice(sorted(steps))] = (1 << 30) + 5
    starts = {port: tb.rng.getrandbits(63) for _, port, _ in counters}
    history = {port: [] for port in steps}

    async def count():
        values = dict(starts)
        while True:
            for port, value in values.items():
                getattr(dut, port).value = value
                history[port].append(value)
                values[port] = (value + steps[port]) % 2 ** 64
            await RisingEdge(dut.clk)

    counter_task = cocotb.start_soon(count())
    await RisingEdge(dut.clk)
    wraps = 0
    for _ in range(3 if len(counters) > 1 else 12):
        for name, port, _ in counters:
            lo = await tb.read(OFFSETS[f"{name}_LO"])
            hi = await tb.read(OFFSETS[f"{name}_HI"])
            pair = hi << 32 | lo
            assert pair in history[port], f"{name}: {pair:#x} is not a value the counter had"
            wraps += (pair >> 32) != (history[port][-1] >> 32)
    counter_task.cancel()
    assert wraps > 0, "no read straddled a carry into the high word; the test proved nothing"


@cocotb.test()
async def test_command_push(dut):
    """Commands reach o_cmd intact; a push to a full queue is dropped and sets cmd_overflow."""
    tb = await setup(dut)
    depth = tb.queue_depth
    overflow_bit = 1 << REGMAP["STATUS"]["fields"]["cmd_overflow"]["lsb"]
    sent = []
    for _ in range(depth + 2):
        words = [tb.rng.getrandbits(32) for _ in range(4)]
        for i, word in enumerate(words):
            await tb.write(OFFSETS[f"CMD_W{i}"], word)
        sent.append(sum(w << (32 * i) for i, w in enumerate(words)))
        await tb.cycles(2)
    assert len(tb.queue) == depth, f"{len(tb.queue)} commands in the queue, expected {depth}"
    assert tb.queue == sent[:depth], "commands differ from what was written"
    assert await tb.read(OFFSETS["CMD_LEVEL"]) == depth
    status = await tb.read(OFFSETS["STATUS"])
    assert field("STATUS", "cmd_overflow", status) == 1
    assert field("STATUS", "queue_full", status) == 1
    # Drain, clear the overflow, push again.
    tb.queue.clear()
    await tb.write(OFFSETS["STATUS"], overflow_bit)
    status = await tb.read(OFFSETS["STATUS"])
    assert field("STATUS", "cmd_overflow", status) == 0
    assert field("STATUS", "queue_empty", status) == 1
    for i in range(4):
        await tb.write(OFFSETS[f"CMD_W{i}"], 0x1000 + i)
    await tb.cycles(2)
    assert tb.queue == [sum((0x1000 + i) << (32 * i) for i in range(4))]
    assert field("STATUS", "cmd_overflow", await tb.read(OFFSETS["STATUS"])) == 0


@cocotb.test()
async def test_unmapped_slverr(dut):
    """Unmapped addresses answer SLVERR on reads (data 0) and writes, with no side effects."""
    tb = await setup(dut)
    mapped = set(OFFSETS.values())
    top = 1 << len(tb.dut.s_axil_awaddr)
    candidates = [0x018, 0x034, 0x03C, 0x050, 0x078, 0x0B0, 0x140, top - 4]
    candidates += [tb.rng.randrange(0, top, 4) for _ in range(8)]
    unmapped = [a for a in candidates if a not in mapped]
    assert len(unmapped) >= 8
    await tb.write(OFFSETS["WIN_BASE_LO"], 0x5A5A5A5A)
    for address in unmapped:
        assert await tb.read(address, resp=AxiResp.SLVERR) == 0
        await tb.write(address, 0xFFFFFFFF, resp=AxiResp.SLVERR)
    assert await tb.read(OFFSETS["WIN_BASE_LO"]) == 0x5A5A5A5A
    assert tb.pulses["ctrl_start"] == [] and tb.queue == []
    # Mixed, concurrent traffic: reads and writes in flight together keep their responses.
    tasks = [cocotb.start_soon(tb.read(a, resp=AxiResp.SLVERR)) for a in unmapped[:4]]
    tasks += [cocotb.start_soon(tb.read(OFFSETS["ID"]))]
    tasks += [cocotb.start_soon(tb.write(OFFSETS["WIN_LIMIT_HI"], 0x1234))]
    for task in tasks:
        await task
    assert tasks[4].result() == ID_VALUE
    assert await tb.read(OFFSETS["WIN_LIMIT_HI"]) == 0x1234
