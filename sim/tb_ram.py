"""cocotb bench of the on-chip memory (:class:`mxe.hw.ram.AXIRam`): cocotbext-axi's AxiMaster on
its AXI4 port and AxiLiteMaster on its host port, checked against a bytearray model.

Run through :func:`mxe.sim.runner.run_bench` with :func:`ram_bench_top` as the component (the
memory's data, address and ID widths are the EngineConfig's ``axi_*``). Parameters
(``MXE_PARAMS``, JSON):

``size``, ``base``
    The memory's size and base address; they must match what :func:`ram_bench_top` was built
    with (default :data:`BENCH_SIZE` bytes at :data:`BENCH_BASE`, which sits off a 4 KiB
    boundary so that an AXI burst can straddle its start).
``pause``
    Probability of a pause cycle on every channel of both masters (default 0.3).
``ops``
    Operations per worker in ``test_random_traffic`` (default 40).
``out``
    File the throughput measurements of ``test_throughput`` are written to as JSON (default
    ``ram_throughput.json`` in the test directory).
``single_port``
    The memory was built single-ported (``ram_bench_top(..., single_port=True)``): it starts
    with zeros rather than :func:`init_pattern`, and its reads and writes take turns.
"""

import json
import logging
import random

import cocotb
from amaranth import Module
from amaranth.lib import wiring
from cocotb.clock import Clock
from cocotb.triggers import Combine, FallingEdge, ReadOnly, RisingEdge, with_timeout
from cocotbext.axi import (AxiBurstType, AxiBus, AxiLiteBus, AxiLiteMaster, AxiMaster,
                           AxiResp)

from mxe.hw.axi import axi4_signature, axilite_signature, connect_flat, flat_members
from mxe.hw.ram import HOST_ADDR_WIDTH, AXIRam
from mxe.sim.runner import bench_config, bench_params, bench_seed, bus_channels


__all__ = ["RamBenchTop", "ram_bench_top", "init_pattern", "BENCH_SIZE", "BENCH_BASE"]

#: The bench memory: 2 KiB at an address that is a multiple of 2 KiB but not of 4 KiB.
BENCH_SIZE = 2048
BENCH_BASE = 0x1000_0800
CLOCK_NS = 10

_model = None


def init_pattern(size):
    """The bench memory's initial contents: ``size`` bytes, the same on both sides."""
    return random.Random(size).randbytes(size)


class RamBenchTop(wiring.Component):
    """An :class:`AXIRam` with its ports flat: ``s_axi_*`` (AXI4) and ``s_axil_*`` (host),
    cocotbext-axi's naming."""

    def __init__(self, ram):
        self._ram = ram
        members = flat_members(axi4_signature(addr_width=ram.addr_width,
                                              data_width=ram.data_width,
                                              id_width=ram.id_width), "s_axi", flipped=True)
        members.update(flat_members(axilite_signature(addr_width=HOST_ADDR_WIDTH), "s_axil",
                                    flipped=True))
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        m.submodules.ram = ram = self._ram
        connect_flat(m, self, "s_axi", ram.axi)
        connect_flat(m, self, "s_axil", ram.host)
        return m


def ram_bench_top(config, *, size=BENCH_SIZE, base=BENCH_BASE, single_port=False):
    """The bench's top level for ``config``'s AXI widths."""
    return RamBenchTop(AXIRam(size=size, data_width=config.axi_data_width,
                              addr_width=config.axi_addr_width, id_width=config.axi_id_width,
                              base=base, init=None if single_port else init_pattern(size),
                              single_port=single_port))


class RamTB:
    """Both masters, the model, and a monitor of the handshakes on the AXI4 port."""

    def __init__(self, dut, config, seed, *, size, base, pause, single_port):
        self.dut = dut
        self.rng = random.Random(seed)
        self.log = logging.getLogger("cocotb.tb")
        self.log.info("seed %d, %d-bit data, %d bytes at %#x, pause %s", seed,
                      config.axi_data_width, size, base, pause)
        self.size, self.base = size, base
        self.single_port = single_port
        self.lanes = config.axi_data_width // 8
        # The memory keeps its contents across the module's tests (reset does not clear it),
        # so the model does too. A single-ported one has no initial contents: zeros in
        # simulation.
        global _model
        if _model is None:
            _model = bytearray(size) if single_port else bytearray(init_pattern(size))
        self.model = _model
        cocotb.start_soon(Clock(dut.clk, CLOCK_NS, unit="ns").start())
        self.axi = AxiMaster(AxiBus.from_prefix(dut, "s_axi"), dut.clk, dut.rst)
        self.axil = AxiLiteMaster(AxiLiteBus.from_prefix(dut, "s_axil"), dut.clk, dut.rst)
        for name in ("s_axi", "s_axil"):
            logging.getLogger(f"cocotb.{dut._name}.{name}").setLevel(logging.WARNING)
        self.cycle = 0
        self.beats = {"ar": [], "r": [], "aw": [], "w": [], "b": []}   # cycles of handshakes
        self.r_resps = []       # rresp of every R beat, in order
        self.set_backpressure((lambda: self._pauses(pause)) if pause else None)

    def _pauses(self, probability):
        rng = random.Random(self.rng.random())
        while True:
            yield rng.random() < probability

    def set_backpressure(self, generator):
        for channel in bus_channels(self.axi, self.axil):
            channel.set_pause_generator(generator() if generator else None)

    async def reset(self):
        dut = self.dut
        dut.rst.value = 1
        for _ in range(3):
            await RisingEdge(dut.clk)
        dut.rst.value = 0
        await RisingEdge(dut.clk)
        cocotb.start_soon(self._monitor())

    async def _monitor(self):
        """Handshakes sampled between rising edges, where every signal is stable."""
        dut = self.dut
        while True:
            await FallingEdge(dut.clk)
            await ReadOnly()
            self.cycle += 1
            for channel in self.beats:
                valid = getattr(dut, f"s_axi_{channel}valid").value
                ready = getattr(dut, f"s_axi_{channel}ready").value
                if valid.is_resolvable and ready.is_resolvable and int(valid) and int(ready):
                    self.beats[channel].append(self.cycle)
                    if channel == "r":
                        self.r_resps.append(int(dut.s_axi_rresp.value))

    # Addresses and the model.

    def in_range(self, addr):
        return self.base <= addr < self.base + self.size

    def expect(self, addr, length):
        """What a read of ``length`` bytes at ``addr`` returns: the model, zeros outside."""
        return bytes(self.model[a - self.base] if self.in_range(a) else 0
                     for a in range(addr, addr + length))

    def apply(self, addr, data):
        for i, byte in enumerate(data):
            if self.in_range(addr + i):
                self.model[addr + i - self.base] = byte

    # Accesses, checked.

    async def axi_write(self, addr, data, *, resp=AxiResp.OKAY, **kwargs):
        result = await self.axi.write(addr, data, **kwargs)
        assert result.resp == resp, f"AXI write {addr:#x}+{len(data)}: {result.resp}, " \
            f"expected {resp}"
        if resp != AxiResp.SLVERR:
            self.apply(addr, data)

    async def axi_read(self, addr, length, *, resp=AxiResp.OKAY, **kwargs):
        result = await self.axi.read(addr, length, **kwargs)
        assert result.resp == resp, f"AXI read {addr:#x}+{length}: {result.resp}, " \
            f"expected {resp}"
        if resp != AxiResp.SLVERR:
            want = self.expect(addr, length)
            assert result.data == want, f"AXI read {addr:#x}+{length}: data differs at byte " \
                f"{next(i for i, (a, b) in enumerate(zip(result.data, want)) if a != b)}"
        return result.data

    async def host_write(self, addr, data, *, resp=AxiResp.OKAY):
        result = await self.axil.write(addr, data)
        assert result.resp == resp, f"host write {addr:#x}+{len(data)}: {result.resp}, " \
            f"expected {resp}"
        self.apply(addr, data)

    async def host_read(self, addr, length, *, resp=AxiResp.OKAY):
        result = await self.axil.read(addr, length)
        assert result.resp == resp, f"host read {addr:#x}+{length}: {result.resp}, " \
            f"expected {resp}"
        want = self.expect(addr, length)
        assert result.data == want, f"host read {addr:#x}+{length}: {result.data.hex()}, " \
            f"expected {want.hex()}"
        return result.data

    async def check_all(self):
        """The whole memory through both ports."""
        await self.axi_read(self.base, self.size)
        for _ in range(8):
            addr = self.base + self.rng.randrange(0, self.size - 8)
            await self.host_read(addr, self.rng.randint(1, 8))


async def setup(dut, *, pause=None):
    params = bench_params()
    tb = RamTB(dut, bench_config(), bench_seed(), size=params.get("size", BENCH_SIZE),
               base=params.get("base", BENCH_BASE),
               pause=params.get("pause", 0.3) if pause is None else pause,
               single_port=params.get("single_port", False))
    await tb.reset()
    return tb


@cocotb.test()
async def test_random_traffic(dut):
    """Workers on both masters at once, each owning a slice of the memory: random writes (bursts
    of random lengths, unaligned ends giving partial strobes) through either port, read back
    through either port; another worker reads a slice nobody writes. Then everything."""
    tb = await setup(dut)
    ops = bench_params().get("ops", 40)
    workers = 4
    span = tb.size // (workers + 1)

    async def worker(index, rng):
        lo = tb.base + index * span
        for _ in range(ops):
            start = lo + rng.randrange(span)
            length = rng.randint(1, lo + span - start)
            data = rng.randbytes(length)
            if rng.random() < 0.7:
                await tb.axi_write(start, data, awid=rng.randrange(1 << len(dut.s_axi_awid)))
            else:
                length = min(length, 12)
                await tb.host_write(start, data[:length])
            r_start = lo + rng.randrange(span)
            r_len = rng.randint(1, lo + span - r_start)
            if rng.random() < 0.7:
                await tb.axi_read(r_start, r_len, arid=rng.randrange(1 << len(dut.s_axi_arid)))
            else:
                await tb.host_read(r_start, min(r_len, 12))

    async def reader(rng):
        lo = tb.base + workers * span
        for _ in range(ops):
            start = lo + rng.randrange(tb.size - workers * span)
            length = rng.randint(1, tb.base + tb.size - start)
            await tb.axi_read(start, length)

    tasks = [cocotb.start_soon(worker(i, random.Random(tb.rng.random()))) for i in range(workers)]
    tasks.append(cocotb.start_soon(reader(random.Random(tb.rng.random()))))
    await with_timeout(Combine(*tasks), 4000 * ops * CLOCK_NS, "ns")
    assert len(tb.beats["ar"]) > ops and len(tb.beats["aw"]) > ops
    await tb.check_all()
    # The point of the test: reads and writes were in flight at the same time (on a
    # single-ported memory too, where their accesses take turns).
    overlap = set(tb.beats["r"]) & set(tb.beats["w"])
    tb.log.info("%d R and %d W beats, %d cycles with both", len(tb.beats["r"]),
                len(tb.beats["w"]), len(overlap))
    assert overlap, "no cycle moved a read and a write beat together"


@cocotb.test()
async def test_errors(dut):
    """DECERR outside the memory, per beat on a burst straddling its start; no aliasing;
    SLVERR for narrow and FIXED bursts; DECERR on the host port."""
    tb = await setup(dut)
    base, size, lanes = tb.base, tb.size, tb.lanes
    outside = [base - 64, base + size, base + size + 256, base ^ (1 << 28), 0,
               (1 << len(dut.s_axi_araddr)) - 64]
    if base >= size:
        outside.append(base - size)     # where the memory would alias
    for addr in outside:
        data = tb.rng.randbytes(64)
        await tb.axi_write(addr, data, resp=AxiResp.DECERR)
        await tb.axi_read(addr, 64, resp=AxiResp.DECERR)
    for addr in outside[:5]:
        await tb.host_write(addr, tb.rng.randbytes(4), resp=AxiResp.DECERR)
        await tb.host_read(addr, 4, resp=AxiResp.DECERR)
    await tb.check_all()     # nothing written: no alias

    # A burst across the start: each beat answers for itself.
    if base % 4096:
        before = 4 * lanes
        tb.r_resps.clear()
        await tb.axi_read(base - before, 2 * before, resp=AxiResp.DECERR)
        assert tb.r_resps == [AxiResp.DECERR] * 4 + [AxiResp.OKAY] * 4, tb.r_resps
        await tb.axi_write(base - before + 3, tb.rng.randbytes(2 * before - 6),
                           resp=AxiResp.DECERR)
        await tb.check_all()

    # Unsupported bursts answer SLVERR and touch nothing.
    narrow = (lanes - 1).bit_length() - 1
    await tb.axi_write(base + 64, tb.rng.randbytes(32), size=narrow, resp=AxiResp.SLVERR)
    await tb.axi_read(base + 64, 32, size=narrow, resp=AxiResp.SLVERR)
    await tb.axi_write(base + 64, tb.rng.randbytes(lanes), burst=AxiBurstType.FIXED,
                       resp=AxiResp.SLVERR)
    await tb.axi_read(base + 64, 4 * lanes, burst=AxiBurstType.FIXED, resp=AxiResp.SLVERR)
    await tb.check_all()


@cocotb.test()
async def test_throughput(dut):
    """Cycles per beat with no pauses: a 256-beat read, a 256-beat write, both at once (a
    beat a cycle each, or between them on a single-ported memory), and sixteen 16-beat bursts
    (the engine's) each way at once."""
    tb = await setup(dut, pause=0)
    lanes = tb.lanes
    results = {}

    def span(channel, first):
        cycles = tb.beats[channel][first:]
        return cycles[-1] - cycles[0] + 1, len(cycles)

    async def measure(name, reads, writes):
        marks = {c: len(tb.beats[c]) for c in tb.beats}
        ar = len(tb.beats["ar"])
        tasks = [cocotb.start_soon(tb.axi_read(tb.base + a, n)) for a, n in reads]
        tasks += [cocotb.start_soon(tb.axi_write(tb.base + a, tb.rng.randbytes(n)))
                  for a, n in writes]
        await Combine(*tasks)
        entry = {}
        for channel, jobs in (("r", reads), ("w", writes)):
            if jobs:
                cycles, beats = span(channel, marks[channel])
                assert beats == sum(n for _, n in jobs) // lanes
                entry[channel] = {"beats": beats, "cycles": cycles,
                                  "cycles_per_beat": cycles / beats}
        if reads:
            entry["first_read_latency"] = tb.beats["r"][marks["r"]] - tb.beats["ar"][ar]
        if reads and writes:
            # Both channels' beats over the cycles from the first to the last of either.
            both = tb.beats["r"][marks["r"]:] + tb.beats["w"][marks["w"]:]
            entry["beats_per_cycle"] = len(both) / (max(both) - min(both) + 1)
        results[name] = entry
        tb.log.info("%s: %s", name, entry)
        return entry

    burst = 256 * lanes
    e = await measure("read_256", [(0, min(burst, tb.size))], [])
    assert e["r"]["cycles_per_beat"] == 1
    e = await measure("write_256", [], [(0, min(burst, tb.size))])
    assert e["w"]["cycles_per_beat"] == 1
    half = tb.size // 2
    e = await measure("read_write_256", [(0, min(burst, half))], [(half, min(burst, half))])
    if tb.single_port:      # the two bursts share the memory's one port
        assert e["beats_per_cycle"] > 0.9, e
    else:
        assert e["r"]["cycles_per_beat"] == 1 and e["w"]["cycles_per_beat"] == 1
    # Bursts of the engine's length, issued back to back by concurrent commands.
    n16 = min(16, tb.size // (32 * lanes))
    e = await measure("read_write_16x16",
                      [(i * 16 * lanes, 16 * lanes) for i in range(n16)],
                      [(half + i * 16 * lanes, 16 * lanes) for i in range(n16)])
    tb.log.info("16-beat bursts: %.3f (R) and %.3f (W) cycles per beat",
                e["r"]["cycles_per_beat"], e["w"]["cycles_per_beat"])
    await tb.check_all()
    out = bench_params().get("out", "ram_throughput.json")
    with open(out, "w") as f:
        json.dump(results, f, indent=2)
