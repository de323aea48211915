"""cocotb bench of the DMA (:class:`mxe.hw.dma.DMA`) against cocotbext-axi's ``AxiRam``.

Run through :func:`mxe.sim.runner.run_bench` with the DMA itself as top level (its AXI port is
``axi__*``, its streams ``i_rd_cmd__valid`` / ``__payload`` etc.; payloads are packed here from the
same ``data.StructLayout`` the gateware uses). Parameters (``MXE_PARAMS``, JSON):

``commands``
    Number of random commands of ``test_random`` (reads and writes run concurrently).
``pause``
    Probability of a pause cycle on each of the five AXI channels and on every stream port.
``latency``
    Memory latency in cycles (``[lo, hi]``: drawn per test); see :class:`LatencyRam`.
``errors``
    Fraction of commands aimed at a region whose accesses answer SLVERR.
``decerr``
    Answer DECERR instead of SLVERR in ``test_errors`` (random when absent).
``bad``
    Fraction of commands that leave the window or have a zero dimension.
``direction, nbytes, repeat, out``
    For ``test_bench``: a throughput run of ``repeat`` back-to-back transfers of ``nbytes``;
    the result is written as JSON to ``out``.

Checks: read data against the memory contents byte by byte (realigned, with ``bytes``,
``row_last``, ``last``); after all writes, the whole memory against a model (so every guard byte
around every destination is checked); the done entries' error codes and addresses; the exact
sequence of AR and AW bursts against an independent model of the splitting (no burst crosses
4 KiB or exceeds ``max_burst_len``, also checked directly on the bus); at most
``max_outstanding_reads`` reads in flight; nothing issued for refused commands.
"""

import json
import logging
from collections import deque

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import FallingEdge, ReadOnly, RisingEdge
from cocotb.utils import get_sim_time
from cocotbext.axi import AxiBus, AxiRam, AxiResp

from mxe.hw.dma import DMAError, cmd_layout
from mxe.sim.runner import bench_config, bench_params, bench_seed, bus_channels

BOUNDARY = 4096
CLOCK_NS = 10
#: Codes of commands the DMA refuses before any access.
REFUSED = (DMAError.WINDOW, DMAError.BAD_CMD, DMAError.UNALIGNED)


def pack_fields(layout, **values):
    word = 0
    for name, field in layout:
        word |= (int(values[name]) & ((1 << field.width) - 1)) << field.offset
    return word


# Models of the DMA's contract -------------------------------------------------------------

def split_bursts(addr, rows, row_bytes, stride, bus_bytes, max_len):
    """The bursts (aligned address, beats) the DMA issues for a command, in order: each row's
    bus beats, greedily cut at ``max_len`` beats and at 4 KiB boundaries."""
    bursts = []
    for r in range(rows):
        start = addr + r * stride
        beat = start // bus_bytes * bus_bytes
        end = (start + row_bytes - 1) // bus_bytes * bus_bytes + bus_bytes
        while beat < end:
            n = min(max_len, (end - beat) // bus_bytes,
                    (BOUNDARY - beat % BOUNDARY) // bus_bytes)
            bursts.append((beat, n))
            beat += n * bus_bytes
    return bursts


def row_beats(row, bus_bytes):
    """A row's bytes as lane-0 aligned beats: list of (bytes, valid count)."""
    return [(row[i:i + bus_bytes], min(bus_bytes, len(row) - i))
            for i in range(0, len(row), bus_bytes)]


def _bit(handle):
    """A 1-bit output as bool, X counting as low.

    Icarus does not run Yosys' ``always @*`` blocks at time zero, so a combinational output
    whose inputs keep their initial values (an idle FSM) reads X until they first change.
    """
    value = handle.value
    return bool(value) if value.is_resolvable else False


def overlaps(lo, hi, region):
    return region is not None and lo < region[1] and region[0] < hi


class LatencyRam(AxiRam):
    """``AxiRam`` whose read data and write responses come ``latency`` cycles late.

    Every R beat and B response is stamped when the model produces it (an AR's beats as soon as
    the AR is taken, a B after the burst's last W beat) and released into the real channel no
    earlier than ``latency`` clock cycles later. Bursts still pipeline: several ARs in flight
    see the latency once each, as from a memory with a fixed access time. Accesses overlapping
    ``error_regions`` (``[lo, hi)`` pairs, changeable at any time) fail: the model answers SLVERR,
    turned into DECERR on the way out when ``decerr`` is set.
    """

    def __init__(self, bus, clock, reset, *, size, latency=0):
        super().__init__(bus, clock, reset, size=size)
        self.clock = clock
        self.latency = latency
        self.error_regions = []
        self.decerr = False
        for iface, name in ((self.read_if, "r_channel"), (self.write_if, "b_channel")):
            real = getattr(iface, name)
            setattr(iface, name, _DelayedChannel(real, self))
        ram = self

        read_orig, write_orig = self.read_if._read, self.write_if._write

        async def _read(address, length):
            if any(overlaps(address, address + length, r) for r in ram.error_regions):
                raise IOError(f"read error at {address:#x}")
            return await read_orig(address, length)

        async def _write(address, data):
            if any(overlaps(address, address + len(data), r) for r in ram.error_regions):
                raise IOError(f"write error at {address:#x}")
            return await write_orig(address, data)

        self.read_if._read = _read
        self.write_if._write = _write


class _DelayedChannel:
    """Stands in for an R or B source channel of ``AxiRam``; see :class:`LatencyRam`."""

    def __init__(self, real, ram):
        self._real = real
        self._ram = ram
        self._queue = deque()
        self._task = None

    def __getattr__(self, name):
        return getattr(self._real, name)

    async def send(self, obj):
        for name in ("rresp", "bresp"):
            if self._ram.decerr and int(getattr(obj, name, 0)) == AxiResp.SLVERR:
                setattr(obj, name, AxiResp.DECERR)
        if not self._ram.latency:
            await self._real.send(obj)
            return
        self._queue.append((get_sim_time("ns") + self._ram.latency * CLOCK_NS, obj))
        if self._task is None or self._task.done():
            self._task = cocotb.start_soon(self._release())

    async def _release(self):
        while self._queue:
            due, obj = self._queue[0]
            while get_sim_time("ns") < due:
                await RisingEdge(self._ram.clock)
            self._queue.popleft()
            await self._real.send(obj)


# The bench --------------------------------------------------------------------------------

class DmaTB:
    """Drives the DMA's command and data streams, consumes its outputs and watches the bus.

    All stream ports are driven and sampled once per cycle in :meth:`_tick`, at the falling edge
    (the DUT and the AXI model change only at rising edges, so what is seen then is what the
    next rising edge samples).
    """

    def __init__(self, dut, config, rng, *, latency=0, pause=0.0, mem_size=1 << 17):
        self.dut = dut
        self.config = config
        self.rng = rng
        self.pause = pause
        self.bus_bytes = config.axi_bytes
        self.log = logging.getLogger("cocotb.tb")
        for name in ("cocotb.axi", "cocotbext.axi"):
            logging.getLogger(name).setLevel(logging.WARNING)
        cocotb.start_soon(Clock(dut.clk, CLOCK_NS, unit="ns").start())
        self.ram = LatencyRam(AxiBus.from_prefix(dut, "axi_"), dut.clk, dut.rst, size=mem_size,
                              latency=latency)
        for name in list(logging.root.manager.loggerDict):
            if name.startswith("cocotb.") and ".axi" in name:
                logging.getLogger(name).setLevel(logging.WARNING)
        self.cmd_layout = cmd_layout(config)
        self.rd_cmds = deque()      # payload ints to send
        self.wr_cmds = deque()
        self.wr_data = deque()      # ints
        self.rd_beats = []          # (data bytes, nbytes, row_last, last)
        self.rd_done = []           # (error, addr)
        self.wr_done = []
        self.ar_bursts = []         # (addr, beats, cycle)
        self.aw_bursts = []
        self.max_reads_in_flight = 0
        self.cycle = 0
        self.violations = []
        self.fields = {}
        self._reads_in_flight = 0

    def set_backpressure(self, probability):
        """Random pauses on all five AXI channels of the memory model."""
        rng = np.random.default_rng(self.rng.integers(1 << 31))

        def gen():
            while True:
                yield bool(rng.random() < probability)

        for channel in bus_channels(self.ram):
            channel.set_pause_generator(gen() if probability else None)

    async def reset(self, *, window=(0, 0)):
        dut = self.dut
        dut.rst.value = 1
        for port in ("i_rd_cmd", "i_wr_cmd", "i_wr_data"):
            getattr(dut, f"{port}__valid").value = 0
        for port in ("o_rd_data", "o_rd_done", "o_wr_done"):
            getattr(dut, f"{port}__ready").value = 0
        self.set_window(*window)
        # Icarus does not run Yosys' ``always @*`` blocks at time zero, and a state that stays
        # at its initial value never wakes them: outputs decoded from it would read X. Move the
        # state registers during reset so those blocks run once; reset puts them back.
        for name, value in (("rd_idle", 0), ("rd_run", 1), ("wr_fsm_state", 1)):
            getattr(dut, name).value = value
        for _ in range(4):
            await RisingEdge(dut.clk)
        dut.rst.value = 0
        cocotb.start_soon(self._tick())

    def set_window(self, base, limit):
        self.dut.window_base.value = base
        self.dut.window_limit.value = limit

    def command(self, addr, rows, row_bytes, stride):
        return pack_fields(self.cmd_layout, addr=addr, rows=rows, row_bytes=row_bytes,
                           stride=stride)

    def _go(self):
        return not self.pause or self.rng.random() >= self.pause

    async def _tick(self):
        dut = self.dut
        b = self.bus_bytes
        pending = {"i_rd_cmd": None, "i_wr_cmd": None, "i_wr_data": None}
        sources = {"i_rd_cmd": self.rd_cmds, "i_wr_cmd": self.wr_cmds, "i_wr_data": self.wr_data}
        while True:
            await FallingEdge(dut.clk)
            self.cycle += 1
            for port, queue in sources.items():
                # valid never waits for ready, payload holds until the transfer
                if pending[port] is None and queue and self._go():
                    pending[port] = queue.popleft()
                valid = getattr(dut, f"{port}__valid")
                valid.value = pending[port] is not None
                if pending[port] is not None:
                    getattr(dut, f"{port}__payload").value = pending[port]
            readies = {port: self._go() for port in ("o_rd_data", "o_rd_done", "o_wr_done")}
            for port, ready in readies.items():
                getattr(dut, f"{port}__ready").value = ready
            await ReadOnly()
            for port in sources:
                if pending[port] is not None and _bit(getattr(dut, f"{port}__ready")):
                    pending[port] = None
            if readies["o_rd_data"] and _bit(dut.o_rd_data__valid):
                word = dut.o_rd_data__payload.value.to_unsigned()
                data = (word & ((1 << (8 * b)) - 1)).to_bytes(b, "little")
                nbytes_w = b.bit_length()
                nbytes = (word >> (8 * b)) & ((1 << nbytes_w) - 1)
                row_last = (word >> (8 * b + nbytes_w)) & 1
                last = (word >> (8 * b + nbytes_w + 1)) & 1
                self.rd_beats.append((data, nbytes, row_last, last))
            for port, store in (("o_rd_done", self.rd_done), ("o_wr_done", self.wr_done)):
                if readies[port] and _bit(getattr(dut, f"{port}__valid")):
                    word = getattr(dut, f"{port}__payload").value.to_unsigned()
                    store.append((DMAError(word & 7), word >> 3))
            # bus monitor
            if _bit(dut.axi__arvalid) and _bit(dut.axi__arready):
                self._burst(self.ar_bursts, dut.axi__araddr, dut.axi__arlen, "AR")
                self._reads_in_flight += 1
                self.max_reads_in_flight = max(self.max_reads_in_flight, self._reads_in_flight)
            if _bit(dut.axi__rvalid) and _bit(dut.axi__rready) and _bit(dut.axi__rlast):
                self._reads_in_flight -= 1
            if _bit(dut.axi__awvalid) and _bit(dut.axi__awready):
                self._burst(self.aw_bursts, dut.axi__awaddr, dut.axi__awlen, "AW")

    def _burst(self, store, addr_sig, len_sig, name):
        addr = addr_sig.value.to_unsigned()
        beats = len_sig.value.to_unsigned() + 1
        store.append((addr, beats, self.cycle))
        nbytes = beats * self.bus_bytes
        if addr % BOUNDARY + nbytes > BOUNDARY:
            self.violations.append(f"{name} burst {addr:#x}+{nbytes} crosses 4 KiB")
        if beats > self.config.max_burst_len:
            self.violations.append(f"{name} burst of {beats} beats > max_burst_len")
        if addr % self.bus_bytes:
            self.violations.append(f"{name} burst {addr:#x} not aligned to the bus")

    async def wait_for(self, condition, timeout_cycles, what):
        start = self.cycle
        while not condition():
            await RisingEdge(self.dut.clk)
            assert self.cycle - start < timeout_cycles, f"timeout waiting for {what}"


# Random transfers -------------------------------------------------------------------------

class Transfer:
    def __init__(self, kind, addr, rows, row_bytes, stride, expect=DMAError.OK):
        self.kind, self.addr, self.rows, self.row_bytes, self.stride = \
            kind, addr, rows, row_bytes, stride
        self.expect = expect
        self.error_addr = None    # expected failing address
        self.fail_burst = None    # index of the first failing burst

    @property
    def end(self):
        if not self.rows:
            return self.addr
        return self.addr + (self.rows - 1) * self.stride + self.row_bytes

    def __repr__(self):
        return (f"{self.kind}(addr={self.addr:#x}, rows={self.rows}, row_bytes={self.row_bytes}, "
                f"stride={self.stride}, expect={self.expect.name})")


def random_shape(rng, bus_bytes, max_bytes):
    """A random 2-D shape: small, medium or long rows; any alignment."""
    kind = rng.random()
    if kind < 0.4:
        row_bytes = int(rng.integers(1, 3 * bus_bytes))
        rows = int(rng.integers(1, 9))
    elif kind < 0.8:
        row_bytes = int(rng.integers(1, 300))
        rows = int(rng.integers(1, 5))
    else:
        row_bytes = int(rng.integers(1000, 5000))
        rows = int(rng.integers(1, 3))
    row_bytes = min(row_bytes, max_bytes)
    return rows, row_bytes


def plan(rng, config, count, region, *, errors, bad, kind, error_region, window):
    """Random transfers of ``kind`` inside ``region`` (``[lo, hi)``)."""
    b = config.axi_bytes
    lo, hi = region
    transfers = []
    for _ in range(count):
        rows, row_bytes = random_shape(rng, b, (hi - lo) // 2)
        gap = int(rng.integers(0, 2 * b + 1)) if rng.random() < 0.7 else int(rng.integers(0, 700))
        stride = row_bytes + gap
        if kind == "rd" and rng.random() < 0.15:
            stride = int(rng.integers(0, row_bytes + 1))   # overlapping rows are fine to read
        span = (rows - 1) * stride + row_bytes
        while span > hi - lo:
            rows = max(1, rows // 2)
            stride = min(stride, (hi - lo - row_bytes) // max(1, rows - 1)) if rows > 1 else stride
            span = (rows - 1) * stride + row_bytes
        # Without unaligned DMA, rows on the bus's lane 0: the stride (over more than one row)
        # and the address.
        lane0 = config.dma_alignment
        if rows > 1:
            stride -= stride % lane0
            span = (rows - 1) * stride + row_bytes
        addr = lane0 * int(rng.integers(-(-lo // lane0), (hi - span) // lane0 + 1))
        t = Transfer(kind, addr, rows, row_bytes, stride)
        u = rng.random()
        if u < bad:
            choice = rng.integers(4 if config.unaligned_dma else 6)
            if not config.unaligned_dma and not any(
                    x.expect == DMAError.UNALIGNED for x in transfers):
                choice = 4 + rng.integers(2)      # at least one misaligned command each plan
            if choice == 0:
                t.rows = 0
                t.expect = DMAError.BAD_CMD
            elif choice == 1:
                t.row_bytes = 0
                t.expect = DMAError.BAD_CMD
            elif choice == 2:
                t.addr = window[1] - span + int(rng.integers(1, 64))   # runs past the window's end
                t.addr += -t.addr % lane0
                t.expect = DMAError.WINDOW
            elif choice == 3:
                t.addr = window[0] - int(rng.integers(1, 64))  # starts below the window
                t.addr -= t.addr % lane0
                t.expect = DMAError.WINDOW
            elif choice == 4 or rows == 1:
                t.addr += int(rng.integers(1, b))              # off the bus's lane 0
                t.expect = DMAError.UNALIGNED
            else:
                t.stride += int(rng.integers(1, b))            # rows off lane 0
                t.expect = DMAError.UNALIGNED
        elif u < bad + errors and error_region is not None:
            # aim at the error region
            elo, ehi = error_region
            t.addr = max(lo, min(hi - span, int(rng.integers(elo - span + 1, ehi))))
            t.addr -= t.addr % lane0
            t.addr += lane0 if t.addr < lo else 0
        transfers.append(t)
    return transfers


def expected_error(t, config, error_region, code=DMAError.SLVERR):
    """Set ``t.expect``, ``t.error_addr`` and ``t.fail_burst`` for a transfer that touches
    ``error_region`` (the first failing beat for reads, the first failing burst for writes)."""
    if t.expect != DMAError.OK or error_region is None:
        return
    b = config.axi_bytes
    index = 0
    for r in range(t.rows):
        r0 = t.addr + r * t.stride
        r1 = r0 + t.row_bytes
        # a row's bursts carry only that row's bytes (bursts never span rows)
        for addr, beats in split_bursts(r0, 1, t.row_bytes, 0, b, config.max_burst_len):
            for k in range(beats):
                beat = addr + k * b
                if t.kind == "rd":
                    hit = overlaps(beat, beat + b, error_region)
                else:   # only strobed bytes are written, and so can fail
                    hit = overlaps(max(beat, r0), min(beat + b, r1), error_region)
                if hit:
                    t.expect = code
                    t.error_addr = beat if t.kind == "rd" else addr
                    t.fail_burst = index
                    return
            index += 1


def check_bursts(bus, transfers, config, slack):
    """The bus bursts are, command after command, the model's bursts: all of them for completed
    commands, none for refused ones, and a prefix reaching at most ``slack`` bursts beyond the
    failing one for aborted ones."""
    b = config.axi_bytes
    pos = 0
    for t in transfers:
        if t.expect in REFUSED:
            continue
        model = split_bursts(t.addr, t.rows, t.row_bytes, t.stride, b, config.max_burst_len)
        if t.expect == DMAError.OK:
            got = [(a, n) for a, n, _ in bus[pos:pos + len(model)]]
            assert got == model, f"{t}: bursts {got[:8]} != model {model[:8]}"
            pos += len(model)
        else:
            n = 0
            while n < len(model) and pos + n < len(bus) and bus[pos + n][:2] == model[n]:
                n += 1
            assert n > t.fail_burst, f"{t}: only {n} bursts issued, failing one is {t.fail_burst}"
            assert n <= t.fail_burst + 1 + slack, \
                f"{t}: {n} bursts issued after the failing burst {t.fail_burst} (slack {slack})"
            pos += n
    assert pos == len(bus), f"{len(bus) - pos} unexpected bursts on the bus: {bus[pos:pos + 4]}"


async def run_transfers(tb, rd, wr, config, mem_before, error_region, timeout):
    b = config.axi_bytes
    for t in rd:
        tb.rd_cmds.append(tb.command(t.addr, t.rows, t.row_bytes, t.stride))
    wr_rows = []
    for t in wr:
        tb.wr_cmds.append(tb.command(t.addr, t.rows, t.row_bytes, t.stride))
        rows = [bytes(tb.rng.integers(0, 256, size=t.row_bytes, dtype=np.uint8))
                for _ in range(t.rows if t.row_bytes else 0)]
        wr_rows.append(rows)
        for row in rows:
            for chunk, _n in row_beats(row, b):
                # lanes above the row's end carry junk the DMA must not write
                junk = bytes(tb.rng.integers(0, 256, size=b - len(chunk), dtype=np.uint8))
                tb.wr_data.append(int.from_bytes(chunk + junk, "little"))
    await tb.wait_for(lambda: len(tb.rd_done) == len(rd) and len(tb.wr_done) == len(wr)
                      and not tb.wr_data, timeout, "all done entries")
    for _ in range(20):   # nothing else may come out
        await RisingEdge(tb.dut.clk)
    return wr_rows


def check_reads(tb, rd, mem, config):
    b = config.axi_bytes
    beats = list(tb.rd_beats)
    pos = 0
    assert len(tb.rd_done) == len(rd), f"{len(tb.rd_done)} read done entries for {len(rd)}"
    for t, (err, addr) in zip(rd, tb.rd_done):
        assert err == t.expect, f"{t}: done error {err.name}, expected {t.expect.name}"
        want_addr = t.error_addr if t.error_addr is not None else t.addr
        assert addr == want_addr, f"{t}: done addr {addr:#x}, expected {want_addr:#x}"
        if t.expect in REFUSED:
            continue
        expected = []
        for r in range(t.rows):
            start = t.addr + r * t.stride
            row = mem[start:start + t.row_bytes]
            chunks = row_beats(row, b)
            for i, (chunk, n) in enumerate(chunks):
                expected.append((chunk, n, i == len(chunks) - 1,
                                 i == len(chunks) - 1 and r == t.rows - 1))
        if t.error_addr is not None:
            # a prefix of the data (the beats before the failing one), never the last beat
            n = 0
            while n < len(expected) and pos + n < len(beats) and _beat_eq(beats[pos + n],
                                                                          expected[n]):
                n += 1
            assert n < len(expected), f"{t}: aborted read delivered all its data"
            pos += n
            continue
        for i, exp in enumerate(expected):
            assert pos < len(beats), f"{t}: only {i} of {len(expected)} beats delivered"
            got = beats[pos]
            assert _beat_eq(got, exp), (f"{t}: beat {i}: got {got[0][:got[1]].hex()} "
                                        f"n={got[1]} row_last={got[2]} last={got[3]}, expected "
                                        f"{exp[0].hex()} n={exp[1]} {exp[2]} {exp[3]}")
            pos += 1
    assert pos == len(beats), f"{len(beats) - pos} extra read beats"


def _beat_eq(got, exp):
    data, n, row_last, last = got
    return n == exp[1] and data[:n] == exp[0][:n] and bool(row_last) == exp[2] \
        and bool(last) == exp[3]


def check_writes(tb, wr, wr_rows, model, mem_now, config):
    """``model`` is the memory before the writes; after them, every byte of memory must hold
    the last completed write's data or its old value. Bytes inside an aborted write's rows may
    also hold that write's data (it may have been written before the error came back)."""
    assert len(tb.wr_done) == len(wr), f"{len(tb.wr_done)} write done entries for {len(wr)}"
    expected = np.frombuffer(bytes(model), dtype=np.uint8).copy()
    allowed = {}   # address -> further values allowed by aborted writes
    for t, rows, (err, addr) in zip(wr, wr_rows, tb.wr_done):
        assert err == t.expect, f"{t}: done error {err.name}, expected {t.expect.name}"
        want_addr = t.error_addr if t.error_addr is not None else t.addr
        assert addr == want_addr, f"{t}: done addr {addr:#x}, expected {want_addr:#x}"
        if t.expect in REFUSED:
            continue
        for r, row in enumerate(rows):
            start = t.addr + r * t.stride
            if t.expect == DMAError.OK:
                expected[start:start + len(row)] = np.frombuffer(row, dtype=np.uint8)
                for a in range(start, start + len(row)):
                    allowed.pop(a, None)
            else:
                for a, v in enumerate(row, start):
                    allowed.setdefault(a, set()).add(v)
    got = np.frombuffer(bytes(mem_now), dtype=np.uint8)
    wrong = [int(a) for a in np.flatnonzero(got != expected)
             if int(got[a]) not in allowed.get(int(a), ())]
    if wrong:
        a = wrong[0]
        near = [t for t in wr if t.addr - 64 <= a < t.end + 64]
        raise AssertionError(f"{len(wrong)} memory bytes wrong, first at {a:#x}: "
                             f"{got[a]:#x} != {expected[a]:#x}; transfers near: {near}")


async def random_run(dut, *, commands, pause, latency, errors, bad, decerr=None):
    config = bench_config()
    seed = bench_seed()
    rng = np.random.default_rng(seed)
    lat = int(rng.integers(latency[0], latency[1] + 1))
    tb = DmaTB(dut, config, rng, latency=lat, pause=pause)
    tb.log.info("seed %d config %s latency %d pause %.2f", seed, config.key(), lat, pause)
    mem_size = 1 << 17
    window = (0x1000, mem_size - 0x1000)
    init = bytes(rng.integers(0, 256, size=mem_size, dtype=np.uint8))
    tb.ram.write(0, init)
    half = (window[0] + window[1]) // 2
    rd_region, wr_region = (window[0], half), (half, window[1])
    err_rd = err_wr = None
    if errors:
        def region(lo, hi):
            start = int(rng.integers(lo + 0x800, hi - 0x1000))
            return (start, start + int(rng.integers(1, 300)))
        err_rd, err_wr = region(*rd_region), region(*wr_region)
    await tb.reset(window=window)
    tb.set_backpressure(pause)
    rd = plan(rng, config, commands, rd_region, errors=errors, bad=bad, kind="rd",
              error_region=err_rd, window=window)
    wr = plan(rng, config, commands, wr_region, errors=errors, bad=bad, kind="wr",
              error_region=err_wr, window=window)
    tb.ram.decerr = bool(errors) and (rng.random() < 0.5 if decerr is None else decerr)
    code = DMAError.DECERR if tb.ram.decerr else DMAError.SLVERR
    for t in rd:
        expected_error(t, config, err_rd, code)
    for t in wr:
        expected_error(t, config, err_wr, code)
    tb.ram.error_regions = [r for r in (err_rd, err_wr) if r]
    total = sum(t.rows * t.row_bytes for t in rd + wr if t.expect not in REFUSED)
    timeout = 2000 + total * (4 + lat) // config.axi_bytes * (3 if pause else 1)
    timeout = int(timeout / max(0.05, 1 - pause) ** 2)
    wr_rows = await run_transfers(tb, rd, wr, config, init, err_rd, timeout)
    mem_now = tb.ram.read(0, mem_size)
    assert not tb.violations, tb.violations[:5]
    assert tb.max_reads_in_flight <= config.max_outstanding_reads, tb.max_reads_in_flight
    check_reads(tb, rd, init, config)
    check_writes(tb, wr, wr_rows, init, mem_now, config)
    check_bursts(tb.ar_bursts, rd, config, slack=config.max_outstanding_reads + 1)
    check_bursts(tb.aw_bursts, wr, config, slack=config.max_outstanding_reads + 5)
    # refused commands put nothing on the bus, so every burst is inside the window
    for addr, beats, _ in tb.ar_bursts + tb.aw_bursts:
        assert window[0] // config.axi_bytes * config.axi_bytes <= addr and \
            addr + beats * config.axi_bytes <= window[1], f"burst {addr:#x} outside the window"
    counts = {e.name: sum(t.expect == e for t in rd + wr) for e in DMAError}
    tb.log.info("checked %d reads, %d writes, %d bytes; outcomes %s; max reads in flight %d",
                len(rd), len(wr), total, counts, tb.max_reads_in_flight)
    bytes_read = sum(n for _, n, _, _ in tb.rd_beats)
    assert dut.bytes_read.value.to_unsigned() == bytes_read % (1 << 32)
    ok_written = sum(t.rows * t.row_bytes for t in wr if t.expect == DMAError.OK)
    written = dut.bytes_written.value.to_unsigned()
    if not any(t.error_addr is not None for t in wr):
        assert written == ok_written, f"bytes_written {written} != {ok_written}"
    else:
        assert written >= ok_written
    await RisingEdge(dut.clk)
    assert not _bit(dut.rd_busy) and not _bit(dut.wr_busy), "engines still busy when idle"
    return counts


@cocotb.test()
async def test_random(dut):
    """Random transfers, both engines at once, random pauses everywhere and random latency."""
    p = bench_params()
    await random_run(dut, commands=p.get("commands", 24), pause=p.get("pause", 0.3),
                     latency=p.get("latency", [0, 20]), errors=0.0, bad=0.0)


@cocotb.test()
async def test_errors(dut):
    """Slave errors, window violations, zero dimensions and (without unaligned DMA) misaligned
    commands mixed with good transfers; every transfer after a failure must work."""
    p = bench_params()
    counts = await random_run(dut, commands=p.get("commands", 24), pause=p.get("pause", 0.2),
                              latency=p.get("latency", [0, 20]), errors=0.3, bad=0.25,
                              decerr=p.get("decerr"))
    assert counts["SLVERR"] + counts["DECERR"] and counts["WINDOW"] and counts["BAD_CMD"] \
        and counts["OK"], counts
    assert bool(counts["UNALIGNED"]) == (not bench_config().unaligned_dma), counts


@cocotb.test()
async def test_read_error_edges(dut):
    """Reads that fail on their very last beat (the row's and the command's end in the cycle
    the failure is seen; rows aligned or not, with or without a flush), on their first row's
    last or on their first, each followed by a good read: done entries, data, bursts and
    recovery checked."""
    config = bench_config()
    b = config.axi_bytes
    seed = bench_seed()
    rng = np.random.default_rng(seed)
    tb = DmaTB(dut, config, rng, latency=int(rng.integers(0, 6)), pause=0.0)
    tb.log.info("seed %d config %s", seed, config.key())
    mem_size = 1 << 17
    init = bytes(rng.integers(0, 256, size=mem_size, dtype=np.uint8))
    tb.ram.write(0, init)
    await tb.reset(window=(0, mem_size))
    rd, regions = [], []
    base = 0x1000
    for i in range(24):
        # rows a bus beat or more apart, so no two rows share a beat
        rows, row_bytes = int(rng.integers(1, 4)), int(rng.integers(1, 3 * b))
        stride = row_bytes + int(rng.integers(b, 3 * b))
        for failing in (True, False):
            t = Transfer("rd", base + int(rng.integers(0, b)), rows, row_bytes, stride)
            if failing:
                beats = [addr + k * b for addr, n in split_bursts(
                    t.addr, rows, row_bytes, stride, b, config.max_burst_len) for k in range(n)]
                first_row = [beat for beat in beats if beat < t.addr + row_bytes]
                fail = (beats[-1], first_row[-1], beats[-1], beats[0])[i % 4]
                regions.append((fail, fail + 1))
                expected_error(t, config, regions[-1])
                assert t.error_addr == fail
            rd.append(t)
            base = (t.end + 2 * b) // b * b
    assert base < mem_size
    tb.ram.error_regions = regions
    await run_transfers(tb, rd, [], config, init, None, 20000)
    assert not tb.violations, tb.violations[:5]
    check_reads(tb, rd, init, config)
    check_bursts(tb.ar_bursts, rd, config, slack=config.max_outstanding_reads + 1)
    await RisingEdge(dut.clk)
    assert not _bit(dut.rd_busy), "read engine still busy when idle"


@cocotb.test()
async def test_back_to_back(dut):
    """Streams always ready, no pauses: many short and long transfers back to back."""
    p = bench_params()
    await random_run(dut, commands=p.get("commands", 24) * 2, pause=0.0, latency=[0, 4],
                     errors=0.0, bad=0.0)


@cocotb.test()
async def test_bench(dut):
    """Throughput of ``repeat`` back-to-back transfers of ``nbytes`` (no pauses)."""
    config = bench_config()
    p = bench_params()
    b = config.axi_bytes
    direction, nbytes, repeat, latency = p["direction"], p["nbytes"], p.get("repeat", 4), \
        p["latency"]
    rng = np.random.default_rng(bench_seed())
    mem_size = 1 << 18
    tb = DmaTB(dut, config, rng, latency=latency, pause=0.0, mem_size=mem_size)
    tb.ram.write(0, bytes(rng.integers(0, 256, size=mem_size, dtype=np.uint8)))
    await tb.reset(window=(0, mem_size))
    row_bytes = min(nbytes, 32768)
    rows = nbytes // row_bytes
    transfers = [Transfer(direction, 0x1000 + i * (nbytes + 0x1000), rows, row_bytes, row_bytes)
                 for i in range(repeat)]
    await FallingEdge(dut.clk)
    start = tb.cycle
    rd = transfers if direction == "rd" else []
    wr = transfers if direction == "wr" else []
    await run_transfers(tb, rd, wr, config, None, None, 100 * nbytes * repeat // b + 10000)
    done_cycle = tb.cycle - 20
    cycles = done_cycle - start
    if rd:
        check_reads(tb, rd, tb.ram.read(0, mem_size), config)
    payload = nbytes * repeat
    result = {"direction": direction, "nbytes": nbytes, "repeat": repeat, "latency": latency,
              "data_width": config.axi_data_width, "cycles": cycles,
              "efficiency": payload / (b * cycles)}
    tb.log.info("bench %s", result)
    out = p.get("out")
    if out:
        with open(out, "w") as f:
            json.dump(result, f)
