"""The board SoC (hw/boards/soc.py) in Amaranth's simulator, reached only through its UART pins
with LiteX's UARTBone frames: the engine's ID and a window register at CSR_BASE, memory words at
MEM_BASE (both 32-bit lanes of a 64-bit word), DECERR outside both windows (reads answer 0 and
light the error LED for ``led_stretch`` cycles); the address map; Verilog of the ULX3S SoC."""

import pytest
from amaranth.sim import Simulator

from mxe.hw.boards.soc import (CSR_BASE, CSR_SIZE, MEM_BASE, BoardSoC, HostDecoder,
                               soc_addr_width, soc_memory_map)
from mxe.hw.config import EngineConfig
from mxe.hw.generate import to_verilog
from mxe.hw.regmap import ID_VALUE, OFFSETS
from mxe.hw.uartbone import CMD_READ, CMD_WRITE


DIVISOR = 4
TIMEOUT = 200
STRETCH = 1000                          # longer than a read's 4-byte answer (160 cycles)
MEM_SIZE = 4096


def frame(cmd, addr, *, length=None, words=()):
    """A UARTBone frame for byte address ``addr``."""
    length = len(words) if length is None else length
    data = bytes([cmd, length]) + (addr >> 2).to_bytes(4, "big")
    return data + b"".join(w.to_bytes(4, "big") for w in words)


def run_soc(config, script):
    """Simulate a BoardSoC; ``script(link)`` is an async function of a :class:`Link`."""
    dut = BoardSoC(config, mem_size=MEM_SIZE, divisor=DIVISOR, timeout_cycles=TIMEOUT,
                   led_stretch=STRETCH)
    sim = Simulator(dut)
    sim.add_clock(1e-8)
    received = []

    async def receiver(ctx):
        while True:
            # Tick by tick rather than tick().until(): the simulation ends with this waiting,
            # and an abandoned until() complains when it is collected.
            await ctx.tick()
            if ctx.get(dut.uart_tx):
                continue
            await ctx.tick().repeat(DIVISOR // 2)       # the middle of the start bit
            assert ctx.get(dut.uart_tx) == 0, "start bit shorter than half a bit"
            byte = 0
            for k in range(8):
                await ctx.tick().repeat(DIVISOR)
                byte |= ctx.get(dut.uart_tx) << k
            await ctx.tick().repeat(DIVISOR)
            assert ctx.get(dut.uart_tx) == 1, "stop bit low"
            received.append(byte)

    class Link:
        def __init__(self, ctx):
            self.ctx = ctx
            self.dut = dut

        async def send(self, data):
            for byte in data:
                for bit in [0, *((byte >> k) & 1 for k in range(8)), 1]:
                    self.ctx.set(dut.uart_rx, bit)
                    await self.ctx.tick().repeat(DIVISOR)

        async def read(self, addr, length=1):
            received.clear()
            await self.send(frame(CMD_READ, addr, length=length))
            for _ in range(100 * DIVISOR * 10 * (length + 2)):
                if len(received) == 4 * length:
                    break
                await self.ctx.tick()
            assert len(received) == 4 * length, f"read {addr:#x}: {len(received)} bytes"
            data = bytes(received)
            return [int.from_bytes(data[i:i + 4], "big") for i in range(0, len(data), 4)]

        async def write(self, addr, words):
            await self.send(frame(CMD_WRITE, addr, words=words))
            await self.ctx.tick().repeat(20)            # the last word reaches the bus

    async def testbench(ctx):
        ctx.set(dut.uart_rx, 1)
        await ctx.tick().repeat(4 * DIVISOR)
        await script(Link(ctx))

    sim.add_testbench(receiver, background=True)
    sim.add_testbench(testbench)
    sim.run()


@pytest.mark.parametrize("preset", [pytest.param("small", marks=pytest.mark.slow), "tiny"])
def test_soc_over_uart(preset):
    # tiny with the fewest DMA address bits that reach the memory, as the iCEBreaker's engine.
    config = EngineConfig.preset(preset) if preset == "small" else \
        EngineConfig.preset(preset, axi_addr_width=soc_addr_width(MEM_SIZE))

    async def script(link):
        ctx, dut = link.ctx, link.dut
        ident, = await link.read(CSR_BASE + OFFSETS["ID"])
        assert ident == ID_VALUE and ident >> 8 == 0x4D5845, hex(ident)
        # A window register: a write reaches the engine's CSR block and reads back.
        await link.write(CSR_BASE + OFFSETS["WIN_BASE_LO"], [MEM_BASE + 0x40])
        assert await link.read(CSR_BASE + OFFSETS["WIN_BASE_LO"]) == [MEM_BASE + 0x40]
        # Memory: two neighbouring words (one 64-bit word's lanes on small), the last word,
        # and a word never written (the memory starts zeroed).
        words = [0x1122_3344, 0x5566_7788, 0x99AA_BBCC]
        await link.write(MEM_BASE + 8, words)
        await link.write(MEM_BASE + MEM_SIZE - 4, [0xDEAD_BEEF])
        assert await link.read(MEM_BASE + 8, 4) == words + [0]
        assert await link.read(MEM_BASE + 12) == [words[1]]
        assert await link.read(MEM_BASE + MEM_SIZE - 4) == [0xDEAD_BEEF]
        assert ctx.get(dut.led_error) == 0
        # Outside both windows: DECERR from the decoder, read as 0; the error LED lights for
        # led_stretch cycles.
        for addr in (MEM_BASE + MEM_SIZE, CSR_BASE + CSR_SIZE, 0x2000_0000, MEM_BASE - 4):
            assert await link.read(addr) == [0], hex(addr)
            assert ctx.get(dut.led_error) == 1
            await ctx.tick().repeat(STRETCH + 2)
            assert ctx.get(dut.led_error) == 0
        await link.write(MEM_BASE + MEM_SIZE, [0x1234_5678])      # no alias onto word 0
        assert ctx.get(dut.led_error) == 1
        assert await link.read(MEM_BASE) == [0]
        assert ctx.get(dut.led_busy) == 0 and ctx.get(dut.irq) == 0

    run_soc(config, script)


def test_memory_map():
    assert soc_memory_map(65536) == {"csr": {"base": 0, "size": 4096},
                                     "mem": {"base": 0x10_0000, "size": 65536}}
    assert (CSR_BASE, CSR_SIZE, MEM_BASE) == (0, 4096, 0x10_0000)
    # The DMA's address bits: the window's limit, MEM_BASE + mem_size, must fit them.
    assert [soc_addr_width(size) for size in (1024, 128 * 1024, 512 * 1024, 1 << 20)] == \
        [21, 21, 21, 22]
    for bad in (3000, 512, 2 << 20):
        with pytest.raises(ValueError, match="mem_size"):
            soc_memory_map(bad)
        with pytest.raises(ValueError, match="mem_size"):
            soc_addr_width(bad)
    with pytest.raises(TypeError, match="mem_size"):
        soc_memory_map(4096.0)
    # An engine whose DMA cannot reach the memory is refused, naming the width it needs.
    narrow = EngineConfig.preset("tiny", axi_addr_width=20)
    with pytest.raises(ValueError, match="axi_addr_width must be at least 21 .* not 20"):
        BoardSoC(narrow, mem_size=4096, divisor=17, timeout_cycles=1000)
    with pytest.raises(TypeError, match="config"):
        BoardSoC("small", mem_size=4096, divisor=17, timeout_cycles=1000)
    with pytest.raises(ValueError, match="timeout_cycles"):
        BoardSoC(EngineConfig.preset("tiny"), mem_size=4096, divisor=17, timeout_cycles=10)
    with pytest.raises(ValueError, match="led_stretch"):
        BoardSoC(EngineConfig.preset("tiny"), mem_size=4096, divisor=17, timeout_cycles=1000,
                 led_stretch=0)
    with pytest.raises(ValueError, match="mem_size"):
        HostDecoder(100)


def test_ulx3s_soc_verilog():
    """The ULX3S's SoC (small engine, 64 KiB, 3 Mbaud at 50 MHz) converts to Verilog with the
    board top's ports."""
    soc = BoardSoC(EngineConfig.preset("small"), mem_size=65536, divisor=17,
                   timeout_cycles=5_000_000)
    text = to_verilog(soc, name="mxe_board_soc")
    for port in ("input uart_rx", "output uart_tx", "output led_busy", "output led_error",
                 "output irq", "input clk", "input rst"):
        assert port in text, port
