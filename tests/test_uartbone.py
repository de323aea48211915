"""The UART (hw/uart.py) and the UARTBone bridge (hw/uartbone.py) in Amaranth's simulator.

A bit-level UART model in the testbench drives the bridge's ``rx`` pin and decodes its ``tx`` pin
(checking that a read's answer leaves without gaps); an AXI4-Lite subordinate model (a dict of
words, random ready and response delays on every channel, an address range answering SLVERR and
one answering DECERR) checks that payloads hold while valid waits and that reads never overtake
writes. Covered: random writes and reads (both address modes, lengths 1, 2, 255 and 0 = 256),
byte order and address increment, bus errors, unknown command bytes, frames cut off mid-way,
framing errors, a 3 Mbaud host against a 50 MHz receiver (17 clocks per bit, -1.96 %), and the
divisor helper's checks.

Reproduce a failure with the printed seed: ``MXE_SEED=<seed> pytest tests/test_uartbone.py``.
"""

import inspect
import random
from collections import deque

import pytest
from amaranth.sim import Simulator

from mxe.hw.axi import RESP_DECERR, RESP_OKAY, RESP_SLVERR
from mxe.hw.generate import to_verilog
from mxe.hw.uart import UARTRx, UARTTx, uart_divisor
from mxe.hw.uartbone import (CMD_READ, CMD_READ_FIXED, CMD_WRITE, CMD_WRITE_FIXED,
                             UARTBone)


DIVISOR = 4
TIMEOUT = 200                            # 5 characters at 4 clocks per bit
SLVERR_RANGE = range(0x8000_0000, 0x8000_1000)
DECERR_RANGE = range(0x8000_1000, 0x8000_2000)


def bits_of(byte, *, stop=1):
    return [0] + [(byte >> k) & 1 for k in range(8)] + [stop]


def resp_for(addr):
    if addr in SLVERR_RANGE:
        return RESP_SLVERR
    if addr in DECERR_RANGE:
        return RESP_DECERR
    return RESP_OKAY


def initial_word(addr):
    """What a word never written reads as: a function of its address, so reads check it."""
    return (addr * 2654435761 + 0x1234_5678) & 0xFFFF_FFFF


def frame(cmd, word_addr, *, length=None, words=()):
    """The bytes of a UARTBone frame; ``length`` defaults to ``len(words)``."""
    length = len(words) if length is None else length
    data = bytes([cmd, length]) + word_addr.to_bytes(4, "big")
    return data + b"".join(w.to_bytes(4, "big") for w in words)


class Bench:
    """A UARTBone with a host UART model on its pins and an AXI4-Lite memory on its bus.

    ``p_ready`` is the chance an AXI ready is high in a cycle; responses come after 0 to
    ``max_delay`` cycles (``b_delay`` overrides the write response's delay range).
    """

    def __init__(self, seed, *, divisor=DIVISOR, timeout_cycles=TIMEOUT, p_ready=0.6,
                 max_delay=5, b_delay=None):
        self.dut = UARTBone(divisor=divisor, timeout_cycles=timeout_cycles)
        self.divisor = divisor
        self.rng = random.Random(seed)
        self.bus_rng = random.Random(seed + 1)
        self.p_ready = p_ready
        self.max_delay = max_delay
        self.b_delay = b_delay or (0, max_delay)
        self.mem = {}                       # the AXI model's memory: byte address -> word
        self.expected = {}                  # what the host's frames should have left there
        self.received = []                  # (idle cycles before it or None, byte) from tx
        self.timeouts = 0
        self.bus_errors = 0
        self.expected_bus_errors = 0
        self.bus_busy = False

    # The host side.

    async def send(self, ctx, data, *, bad_stop=(), gap=(0, 0)):
        """Drive ``data`` onto rx; bytes whose index is in ``bad_stop`` get a low stop bit."""
        for index, byte in enumerate(data):
            for bit in bits_of(byte, stop=0 if index in bad_stop else 1):
                ctx.set(self.dut.rx, bit)
                await ctx.tick().repeat(self.divisor)
            ctx.set(self.dut.rx, 1)
            pause = self.rng.randint(*gap)
            if pause:
                await ctx.tick().repeat(pause)

    async def idle(self, ctx, cycles):
        """Idle ``cycles`` cycles (none for 0: Amaranth's repeat refuses a count of 0)."""
        if cycles:
            await ctx.tick().repeat(cycles)

    async def settle(self, ctx):
        """Wait until the last byte sent has been acted on and the bus is quiet."""
        await ctx.tick().repeat(2 * self.divisor + 8)
        quiet = 0
        while quiet < 4:
            await ctx.tick()
            quiet = 0 if self.bus_busy else quiet + 1

    async def answer(self, ctx, count):
        """The next ``count`` bytes from tx (fails if they take too long)."""
        first = len(self.received)
        limit = (count + 4) * 10 * self.divisor + 500
        for _ in range(0, limit, self.divisor):
            if len(self.received) >= first + count:
                break
            await ctx.tick().repeat(self.divisor)
        got = self.received[first:]
        assert len(got) == count, f"{len(got)} of {count} answer bytes arrived"
        return got

    def word_addrs(self, cmd, word_addr, n):
        step = 1 if cmd in (CMD_WRITE, CMD_READ) else 0
        return [((word_addr + step * k) * 4) & 0xFFFF_FFFF for k in range(n)]

    async def write(self, ctx, word_addr, words, *, cmd=CMD_WRITE, length=None, gap=(0, 3)):
        await self.send(ctx, frame(cmd, word_addr, length=length, words=words), gap=gap)
        for addr, word in zip(self.word_addrs(cmd, word_addr, len(words)), words):
            if resp_for(addr) == RESP_OKAY:
                self.expected[addr] = word
            else:
                self.expected_bus_errors += 1

    def expect_read(self, cmd, word_addr, n):
        words = []
        for addr in self.word_addrs(cmd, word_addr, n):
            if resp_for(addr) == RESP_OKAY:
                words.append(self.expected.get(addr, initial_word(addr)))
            else:
                self.expected_bus_errors += 1
                words.append(0)
        return words

    async def read(self, ctx, word_addr, n, *, cmd=CMD_READ, gap=(0, 3)):
        """Read ``n`` words (``n`` = 256 sends length 0) and check them against the model."""
        expect = self.expect_read(cmd, word_addr, n)
        await self.send(ctx, frame(cmd, word_addr, length=n & 0xFF), gap=gap)
        got = await self.answer(ctx, 4 * n)
        words = [int.from_bytes(bytes(b for _, b in got[4 * k:4 * k + 4]), "big")
                 for k in range(n)]
        assert words == expect, f"read of {n} words at word {word_addr:#x}"
        # The next word is read while the previous one is on the line: the answer leaves back
        # to back (a cycle between words at most).
        for index, (follows, _) in enumerate(got[1:], 1):
            assert follows == 0 or (follows == 1 and index % 4 == 0), \
                f"{follows} idle cycles before byte {index} of the answer"
        return words

    def check_memory(self):
        assert self.mem == self.expected
        assert self.bus_errors == self.expected_bus_errors

    # The board side.

    async def monitor(self, ctx):
        """Decode tx at the middle of each bit, noting for each character whether it started
        right after the previous one (UARTTx's exact bit times are checked in test_uart_tx)."""
        dut, divisor = self.dut, self.divisor

        async def ticks(count):
            # Not ctx.tick().repeat(): a background testbench is dropped wherever it waits when
            # the simulation ends, and repeat()'s generator complains when closed that way.
            for _ in range(count):
                await ctx.tick()

        follows = None                  # cycles between this character and the last, if 0 or 1
        while True:
            if follows is None:
                await ctx.negedge(dut.tx)
            # Here: just after the clock edge that started the start bit.
            await ticks(divisor // 2)
            bits = [ctx.get(dut.tx)]
            for _ in range(9):
                await ticks(divisor)
                bits.append(ctx.get(dut.tx))
            assert bits[0] == 0 and bits[9] == 1, f"tx character {len(self.received)}: {bits}"
            self.received.append((follows, sum(b << i for i, b in enumerate(bits[1:9]))))
            await ticks(divisor - divisor // 2)
            follows = None
            for idle in (0, 1):
                if not ctx.get(dut.tx):
                    follows = idle
                    break
                if not idle:
                    await ctx.tick()

    async def pulses(self, ctx):
        # Both are one-cycle pulses from registers: each is seen high in one change only.
        async for timeout, bus_error in ctx.changed(self.dut.timeout, self.dut.bus_error):
            self.timeouts += timeout
            self.bus_errors += bus_error

    async def axi(self, ctx):
        """AXI4-Lite subordinate over ``self.mem``, with random ready and response delays."""
        bus, rng = self.dut.bus, self.bus_rng
        aw, w, ar = deque(), deque(), deque()
        b = r = None                         # [cycles to wait, address(, data)]
        held = {}                            # channel -> payload of a valid not yet taken
        driven = {}

        def drive(signal, value):
            # Setting a signal costs a simulator step; most stay the same from cycle to cycle.
            if driven.get(signal.name) != value:
                ctx.set(signal, value)
                driven[signal.name] = value

        channels = [("aw", bus.awvalid, bus.awready, (bus.awaddr, bus.awprot)),
                    ("w", bus.wvalid, bus.wready, (bus.wdata, bus.wstrb)),
                    ("ar", bus.arvalid, bus.arready, (bus.araddr, bus.arprot))]
        while True:
            if b is None and aw and w:
                b = [rng.randint(*self.b_delay), aw.popleft(), w.popleft()]
            if r is None and ar:
                r = [rng.randint(0, self.max_delay), ar.popleft()]
            b_valid = b is not None and b[0] == 0
            r_valid = r is not None and r[0] == 0
            drive(bus.bvalid, b_valid)
            drive(bus.bresp, resp_for(b[1]) if b_valid else 0)
            drive(bus.rvalid, r_valid)
            if r_valid:
                addr = r[1]
                ok = resp_for(addr) == RESP_OKAY
                drive(bus.rdata, self.mem.get(addr, initial_word(addr)) if ok
                      else self.bus_rng.getrandbits(32))
                drive(bus.rresp, resp_for(addr))

            taken = {}
            for name, valid, ready, payload in channels:
                is_ready = rng.random() < self.p_ready
                drive(ready, is_ready)
                if not ctx.get(valid):
                    assert name not in held, f"{name}: valid dropped before ready"
                    continue
                values = tuple(ctx.get(signal) for signal in payload)
                if name in held:
                    assert values == held.pop(name), f"{name}: payload changed before ready"
                if is_ready:
                    taken[name] = values
                else:
                    held[name] = values
            writing = bool(aw or w or b is not None or "aw" in held or "w" in held
                           or "aw" in taken or "w" in taken)
            reading = bool(ar or r is not None or "ar" in held or "ar" in taken)
            rready = ctx.get(bus.rready)
            self.bus_busy = writing or reading or bool(rready)
            if "aw" in taken:
                addr, prot = taken["aw"]
                assert prot == 0 and addr % 4 == 0 and not reading
                aw.append(addr)
            if "w" in taken:
                data, strb = taken["w"]
                assert strb == 0b1111 and not reading
                w.append(data)
            if "ar" in taken:
                addr, prot = taken["ar"]
                assert prot == 0 and addr % 4 == 0
                assert not writing, "read overtook a write"
                ar.append(addr)
            if b_valid and ctx.get(bus.bready):
                if resp_for(b[1]) == RESP_OKAY:
                    self.mem[b[1]] = b[2]
                b = None
            elif b is not None and b[0]:
                b[0] -= 1
            if r_valid and rready:
                r = None
            elif r is not None and r[0]:
                r[0] -= 1
            if aw or w or ar or b or r or held or taken:
                await ctx.tick()
            else:
                # Nothing in flight: sleep until a valid rises (right after a clock edge, as
                # after a tick). The readies stay as drawn meanwhile, which AXI allows.
                self.bus_busy = False
                await ctx.changed(bus.awvalid, bus.wvalid, bus.arvalid)

    def run(self, testbench):
        sim = Simulator(self.dut)
        sim.add_clock(1e-8)
        sim.add_testbench(self.monitor, background=True)
        sim.add_testbench(self.pulses, background=True)
        sim.add_testbench(self.axi, background=True)

        async def main(ctx):
            ctx.set(self.dut.rx, 1)
            await ctx.tick().repeat(4)
            await testbench(ctx)

        sim.add_testbench(main)
        sim.run()


def random_word_addr(rng):
    region = rng.choice(["low", "low", "low", "top", "high", "error"])
    if region == "low":
        return rng.randrange(0x400)
    if region == "top":                  # the byte address wraps past 0xFFFF_FFFC
        return 0x3FFF_FFFF - rng.randrange(4)
    if region == "high":                 # word address bits 31:30 are not part of the bus address
        return rng.randrange(1 << 32)
    return (SLVERR_RANGE.start + DECERR_RANGE.stop) // 8 - 4 + rng.randrange(8)


@pytest.mark.parametrize("p_ready, max_delay", [(1.0, 0), (0.6, 5), (0.3, 12)])
def test_random_frames(seed, p_ready, max_delay):
    bench = Bench(seed, p_ready=p_ready, max_delay=max_delay)
    rng = random.Random(seed ^ 0x5A5A)

    async def testbench(ctx):
        for index in range(30):
            cmd = rng.choice([CMD_WRITE, CMD_WRITE, CMD_READ, CMD_READ, CMD_WRITE_FIXED,
                              CMD_READ_FIXED])
            n = [1, 2][index] if index < 2 else rng.choice([1, 2, rng.randint(3, 12)])
            word_addr = random_word_addr(rng)
            if cmd in (CMD_WRITE, CMD_WRITE_FIXED):
                words = [rng.getrandbits(32) for _ in range(n)]
                await bench.write(ctx, word_addr, words, cmd=cmd)
            else:
                await bench.read(ctx, word_addr, n, cmd=cmd)
            if rng.random() < 0.3:
                await bench.idle(ctx, rng.randrange(3 * TIMEOUT))
        await bench.settle(ctx)
        bench.check_memory()
        assert bench.timeouts == 0

    bench.run(testbench)


def test_byte_order_and_increment(seed):
    bench = Bench(seed)

    async def testbench(ctx):
        await bench.send(ctx, frame(CMD_WRITE, 0x40, words=[0x0102_0304, 0xA1B2_C3D4]))
        await bench.settle(ctx)
        assert bench.mem == {0x100: 0x0102_0304, 0x104: 0xA1B2_C3D4}
        await bench.send(ctx, frame(CMD_READ, 0x40, length=2))
        got = await bench.answer(ctx, 8)
        assert bytes(b for _, b in got) == bytes.fromhex("01020304a1b2c3d4")
        # The fixed-address commands stay on one word.
        await bench.send(ctx, frame(CMD_WRITE_FIXED, 0x80, words=[1, 2, 3]))
        await bench.settle(ctx)
        assert bench.mem[0x200] == 3 and 0x204 not in bench.mem
        await bench.send(ctx, frame(CMD_READ_FIXED, 0x80, length=2))
        got = await bench.answer(ctx, 8)
        assert bytes(b for _, b in got) == bytes.fromhex("0000000300000003")

    bench.run(testbench)


@pytest.mark.parametrize("write_length, read_length", [(255, 0), (0, 255)])
def test_longest_frames(seed, write_length, read_length):
    """255 words, and length 0, which moves 256 (as LiteX's bridge does)."""
    bench = Bench(seed, p_ready=0.7, max_delay=4)
    rng = random.Random(seed)

    async def testbench(ctx):
        base = rng.randrange(0x1000)
        count = write_length or 256
        await bench.write(ctx, base, [rng.getrandbits(32) for _ in range(count)],
                          length=write_length, gap=(0, 0))
        # Reading length 0 takes in one word never written; 255 leaves out the last written.
        await bench.read(ctx, base, read_length or 256, gap=(0, 0))
        await bench.settle(ctx)
        bench.check_memory()
        assert len(bench.mem) == count and bench.timeouts == 0

    bench.run(testbench)


def test_bus_errors(seed):
    bench = Bench(seed)
    first_bad = SLVERR_RANGE.start // 4

    async def testbench(ctx):
        # Two good words then two SLVERR words: the read still answers four words, zeros for
        # the failed ones.
        words = await bench.read(ctx, first_bad - 2, 4)
        assert words[2:] == [0, 0] and bench.expected_bus_errors == 2
        await bench.write(ctx, DECERR_RANGE.start // 4, [1, 2, 3])
        await bench.write(ctx, first_bad - 1, [0xAAAA_5555, 0xDEAD_BEEF])
        await bench.settle(ctx)
        assert bench.bus_errors == 2 + 3 + 1
        await bench.read(ctx, first_bad - 1, 1)
        await bench.settle(ctx)
        bench.check_memory()
        assert bench.mem == {(first_bad - 1) * 4: 0xAAAA_5555} and bench.timeouts == 0

    bench.run(testbench)


def test_write_waits_for_slow_bus(seed):
    """A write response slower than a word's bytes: the next word's last byte waits in the
    receiver (not counted as silence) and nothing is lost; a read waits for the write before it.
    (A bus slower than the line on average would overrun the receiver: a real one answers in a
    few cycles, a word takes 680.)"""
    bench = Bench(seed, p_ready=1.0, max_delay=0, b_delay=(170, 185))

    async def testbench(ctx):
        for word_addr in (0x10, 0x12, 0x14):
            words = [bench.rng.getrandbits(32) for _ in range(2)]
            await bench.write(ctx, word_addr, words, gap=(0, 0))
        await bench.settle(ctx)
        await bench.read(ctx, 0x10, 6)
        # A read frame right behind a write answered later than the read's header takes to
        # arrive: the read waits for the write's response (AXI does not order AR after AW).
        bench.b_delay = (300, 320)
        await bench.write(ctx, 0x11, [0x0BAD_F00D])
        await bench.read(ctx, 0x11, 1)
        await bench.settle(ctx)
        bench.check_memory()
        assert bench.timeouts == 0

    bench.run(testbench)


def test_unknown_command_bytes(seed):
    bench = Bench(seed)

    async def testbench(ctx):
        await bench.send(ctx, bytes([0x00, 0x05, 0xFF, 0x80, 0x10]))
        await bench.idle(ctx, 2 * TIMEOUT)          # idle between frames is not a timeout
        await bench.send(ctx, bytes([0x42]))
        await bench.write(ctx, 0x20, [0x1111_2222, 0x3333_4444])
        await bench.read(ctx, 0x20, 2)
        await bench.settle(ctx)
        bench.check_memory()
        assert bench.timeouts == 0 and not bench.received[8:]

    bench.run(testbench)


def test_cut_frames(seed):
    bench = Bench(seed)
    wait = TIMEOUT + 20 * DIVISOR

    async def testbench(ctx):
        # Cut in the address: nothing happens, and the frame is dropped after the timeout.
        await bench.send(ctx, frame(CMD_WRITE, 0x30, words=[5])[:4])
        await bench.idle(ctx, wait)
        assert bench.timeouts == 1 and not bench.mem
        await bench.write(ctx, 0x30, [0x600D_0001])
        await bench.read(ctx, 0x30, 1)
        # Cut in the data: the whole words before the cut are written, the rest is dropped.
        words = [0xC0DE_0000 + k for k in range(3)]
        await bench.send(ctx, frame(CMD_WRITE, 0x50, words=words)[:6 + 6])
        bench.expected[0x50 * 4] = words[0]
        await bench.idle(ctx, wait)
        assert bench.timeouts == 2
        await bench.read(ctx, 0x50, 3)
        # Cut after the command byte and after the length of a read: no answer.
        for cut in (1, 2):
            await bench.send(ctx, frame(CMD_READ, 0x50, length=2)[:cut])
            await bench.idle(ctx, wait)
        assert bench.timeouts == 4
        # A pause shorter than the timeout inside a frame does not cut it.
        data = frame(CMD_WRITE, 0x70, words=[0x7777_7777])
        await bench.send(ctx, data[:4])
        await bench.idle(ctx, TIMEOUT - 10 * DIVISOR - 20)
        await bench.send(ctx, data[4:])
        bench.expected[0x70 * 4] = 0x7777_7777
        await bench.read(ctx, 0x70, 1)
        await bench.settle(ctx)
        bench.check_memory()
        assert bench.timeouts == 4
        received = len(bench.received)
        assert received == 4 * (1 + 3 + 1)

    bench.run(testbench)


def test_framing_errors(seed):
    bench = Bench(seed)
    wait = TIMEOUT + 20 * DIVISOR

    async def testbench(ctx):
        # A bad stop bit in the second data word: the first word is written, the rest of the
        # frame is ignored (the line goes on as sent), and a frame after the silence works.
        words = [0xF00D_0000 + k for k in range(3)]
        data = frame(CMD_WRITE, 0x90, words=words)
        await bench.send(ctx, data, bad_stop={6 + 5})
        bench.expected[0x90 * 4] = words[0]
        await bench.idle(ctx, wait)
        assert bench.timeouts == 1
        await bench.read(ctx, 0x90, 3)
        # In a read's address: no answer.
        await bench.send(ctx, frame(CMD_READ, 0x90, length=3), bad_stop={3})
        await bench.idle(ctx, wait)
        assert bench.timeouts == 2 and len(bench.received) == 12
        # Between frames, a lone bad byte (a glitch on an idle line) costs only the silence.
        await bench.send(ctx, bytes([0x01]), bad_stop={0})
        await bench.idle(ctx, wait)
        assert bench.timeouts == 3
        await bench.write(ctx, 0x94, [0x1234_5678])
        await bench.read(ctx, 0x90, 5)
        await bench.settle(ctx)
        bench.check_memory()

    bench.run(testbench)


# The UART on its own.

def run_uart(divisor, testbench, *, tx=False):
    dut = UARTTx(divisor) if tx else UARTRx(divisor)
    sim = Simulator(dut)
    sim.add_clock(1e-8)

    async def bench(ctx):
        await testbench(ctx, dut)

    sim.add_testbench(bench)
    sim.run()


@pytest.mark.parametrize("divisor, bit_time", [
    (4, 4), (5, 5), (17, 17),
    (17, 50e6 / 3e6),          # a 3 Mbaud host on a 50 MHz receiver: 1.96 % slower bits here
    (17, 17 * 1.02),           # and a host 2 % slower than the receiver
])
def test_uart_rx(seed, divisor, bit_time):
    rng = random.Random(seed)
    sent = [rng.getrandbits(8) for _ in range(40)] + [0x00, 0xFF, 0x55, 0xAA]
    got, errors = [], []

    async def testbench(ctx, dut):
        ctx.set(dut.o.ready, 1)
        ctx.set(dut.rx, 1)
        await ctx.tick().repeat(3 + rng.randrange(divisor))
        # Bit edges at whole cycles nearest the host's own (fractional) bit time.
        line = []
        for byte in sent:
            for bit in bits_of(byte):
                line.append(bit)
            line.extend([1] * rng.choice([0, 0, 0, 2]))
        levels = []
        for k, bit in enumerate(line):
            levels += [bit] * (round((k + 1) * bit_time) - round(k * bit_time))
        for level in levels + [1] * 4 * divisor:
            ctx.set(dut.rx, level)
            await ctx.tick()
            if ctx.get(dut.o.valid):
                got.append(ctx.get(dut.o.payload))
            errors.append(ctx.get(dut.error) | ctx.get(dut.overrun))

    run_uart(divisor, testbench)
    assert got == sent
    assert not any(errors)


def test_uart_rx_errors():
    """A bad stop bit drops the byte and pulses error; a byte not taken in time is kept and the
    next one dropped with an overrun pulse; a short low glitch is no character."""
    divisor = 4

    async def testbench(ctx, dut):
        got, errors, overruns = [], 0, 0

        async def hold(level, cycles):
            nonlocal errors, overruns
            ctx.set(dut.rx, level)
            for _ in range(cycles):
                errors += ctx.get(dut.error)
                overruns += ctx.get(dut.overrun)
                if ctx.get(dut.o.valid) and ctx.get(dut.o.ready):
                    got.append(ctx.get(dut.o.payload))
                await ctx.tick()

        async def send(byte, *, stop=1, pause=0):
            for level in bits_of(byte, stop=stop) + [1] * pause:
                await hold(level, divisor)

        await hold(1, 4)
        ctx.set(dut.o.ready, 1)
        await send(0x5A, stop=0, pause=2)
        await send(0xC3, pause=1)
        assert (got, errors) == ([0xC3], 1)
        # A break (line held low) after the bad stop bit gives no further bytes or errors.
        await send(0x00, stop=0)
        await hold(0, 30 * divisor)
        await hold(1, divisor)          # the end of the break
        await send(0x81, pause=1)
        assert (got, errors) == ([0xC3, 0x81], 2)
        # A one-cycle low glitch on the idle line.
        await hold(0, 1)
        await hold(1, 20 * divisor)
        assert (got, errors) == ([0xC3, 0x81], 2)
        # Overrun: the first byte waits, the second is dropped.
        ctx.set(dut.o.ready, 0)
        await send(0x11)
        await send(0x22, pause=1)
        assert ctx.get(dut.o.valid) and ctx.get(dut.o.payload) == 0x11 and overruns == 1
        ctx.set(dut.o.ready, 1)
        await send(0x33, pause=1)
        assert got == [0xC3, 0x81, 0x11, 0x33] and (errors, overruns) == (2, 1)

    run_uart(divisor, testbench)


@pytest.mark.parametrize("divisor", [4, 7, 17])
def test_uart_tx(seed, divisor):
    """Bytes come out as 8N1 with exact bit times, back to back while i.valid stays high."""
    rng = random.Random(seed)
    sent = [rng.getrandbits(8) for _ in range(24)]

    async def testbench(ctx, dut):
        assert ctx.get(dut.tx) == 1
        levels, taken = [], []
        pending = list(sent)
        for cycle in range(len(sent) * 10 * divisor + 40 * divisor):
            # Valid comes up after a few cycles and then stays up until the last byte.
            if pending and (ctx.get(dut.i.valid) or rng.random() < 0.5 or cycle > 8):
                ctx.set(dut.i.valid, 1)
                ctx.set(dut.i.payload, pending[0])
            else:
                ctx.set(dut.i.valid, 0)
            if ctx.get(dut.i.valid) and ctx.get(dut.i.ready):
                taken.append(cycle)
                pending.pop(0)
            await ctx.tick()
            levels.append(ctx.get(dut.tx))
        assert not pending
        # Continuous valid: a byte every 10 bit times exactly.
        assert all(b - a == 10 * divisor for a, b in zip(taken[1:], taken[2:]))
        decoded, k = [], 0
        while k < len(levels):
            if levels[k]:
                k += 1
                continue
            bits = levels[k:k + 10 * divisor:divisor]
            assert all(levels[k + j] == bits[j // divisor] for j in range(10 * divisor))
            assert bits[9] == 1
            decoded.append(sum(b << i for i, b in enumerate(bits[1:9])))
            k += 10 * divisor
        assert decoded == sent

    run_uart(divisor, testbench, tx=True)


# Parameters.

def test_uart_divisor():
    assert uart_divisor(50e6, 3e6) == 17        # 2.94 Mbaud, -1.96 %
    assert uart_divisor(50_000_000, 115_200) == 434
    assert uart_divisor(12e6, 1e6) == 12
    # 4 clocks per bit, exact, but no room for the host's clock error.
    with pytest.raises(ValueError, match=r"^baud 3000000.0 leaves 4.00 clocks per bit"):
        uart_divisor(12e6, 3e6)
    with pytest.raises(ValueError, match=r"^baud 3000000 is \+4\.2% off"):
        uart_divisor(25_000_000, 3_000_000)
    with pytest.raises(TypeError, match=r"^baud must be a number"):
        uart_divisor(50e6, "3M")
    with pytest.raises(ValueError, match=r"^clk_freq must be positive"):
        uart_divisor(0, 9600)


@pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")
def test_parameters():
    with pytest.raises(ValueError, match=r"^divisor must be at least 4"):
        UARTRx(3)
    with pytest.raises(TypeError, match=r"^divisor must be an integer"):
        UARTTx(8.0)
    with pytest.raises(TypeError, match=r"^divisor must be an integer"):
        UARTBone(divisor=True, timeout_cycles=1000)
    with pytest.raises(ValueError, match=r"^timeout_cycles must be at least .* 160\), not 159"):
        UARTBone(divisor=8, timeout_cycles=159)
    with pytest.raises(TypeError, match=r"^timeout_cycles must be an integer"):
        UARTBone(divisor=8, timeout_cycles=1e6)
    parameters = inspect.signature(UARTBone).parameters.values()
    assert {p.kind for p in parameters} == {inspect.Parameter.KEYWORD_ONLY}


def test_verilog():
    bone = UARTBone(divisor=17, timeout_cycles=5_000_000)
    assert (bone.divisor, bone.timeout_cycles) == (17, 5_000_000)
    text = to_verilog(bone, name="mxe_uartbone")
    assert "module mxe_uartbone" in text
    for port in ("rx", "tx", "timeout", "bus_error", "bus__awaddr", "bus__rready"):
        assert f" {port};" in text or f" {port}," in text, port
