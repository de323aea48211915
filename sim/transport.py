"""How :class:`~mxe.sim.driver.MXEDriver` reaches an engine: the transports.

The driver plans, pushes commands and waits through a transport, so the same code runs a GEMM
on a simulated engine and on a board:

:class:`CocotbTransport`
    Inside a cocotb test: the registers through cocotbext-axi's ``AxiLiteMaster``, the memory
    through the ``AxiRam`` model on the engine's DMA port, time in the simulated clock's cycles.
:class:`UARTBoneTransport`
    On a PC: a serial port (pyserial; any URL it takes, ``/dev/ttyUSB0`` or
    ``socket://127.0.0.1:PORT`` for a simulated board) speaking LiteX's UARTBone protocol to the
    board's bridge, which reaches the registers at ``csr_base`` and the board memory; time is the
    engine's own ``CYCLES`` counter.

A transport has byte addresses for memory and register offsets from the register window; it
never sees commands or plans.
"""

import asyncio
import logging
import socket
import time

from mxe.hw.regmap import OFFSETS


__all__ = ["Transport", "CocotbTransport", "UARTBoneTransport", "LinkError",
           "UARTBONE_WRITE", "UARTBONE_READ", "UARTBONE_MAX_WORDS", "uartbone_frame"]


class LinkError(IOError):
    """The host link lost a frame and could not recover it."""


class Transport:
    """What the driver needs from a link to an engine (an interface; see the subclasses).

    Members
    -------
    has_irq : bool
        :meth:`wait_irq` sleeps until the engine's ``irq`` output rises (otherwise the driver
        polls ``STATUS``).
    """

    has_irq = False

    async def read_reg(self, offset):
        """The 32-bit register at byte ``offset`` of the register window."""
        raise NotImplementedError

    async def write_reg(self, offset, value):
        raise NotImplementedError

    async def write_regs(self, offset, values):
        """Write consecutive registers from byte ``offset``, in order."""
        for i, value in enumerate(values):
            await self.write_reg(offset + 4 * i, value)

    async def read_mem(self, address, length):
        """``length`` bytes of memory from byte ``address``."""
        raise NotImplementedError

    async def write_mem(self, address, data):
        raise NotImplementedError

    async def cycles(self):
        """Engine clock cycles since an arbitrary origin (for timeouts)."""
        raise NotImplementedError

    async def idle(self, cycles):
        """Let the engine run for about ``cycles`` cycles before the next poll."""
        raise NotImplementedError

    async def wait_irq(self, cycles):
        """Sleep until ``irq`` is high or ``cycles`` cycles passed."""
        await self.idle(cycles)


class CocotbTransport(Transport):
    """A simulated engine in a cocotb test.

    Parameters
    ----------
    axil : cocotbext.axi.AxiLiteMaster
        On the engine's ``s_axil_*`` port.
    ram : cocotbext.axi.AxiRam (or anything with ``read(addr, n)`` / ``write(addr, data)``)
        The memory on the engine's ``m_axi_*`` port.
    dut : cocotb handle
        Its ``clk`` times the waits; its ``irq`` output, if it has one, wakes :meth:`wait_irq`.
    clock_ns : float
        The clock period, to turn simulated time into cycles.
    """

    def __init__(self, axil, ram, dut, *, clock_ns=10):
        self.axil = axil
        self.ram = ram
        self.dut = dut
        self.clock_ns = clock_ns
        self.has_irq = dut is not None and hasattr(dut, "irq")

    async def read_reg(self, offset):
        from cocotbext.axi import AxiResp
        result = await self.axil.read(offset, 4)
        if result.resp != AxiResp.OKAY:
            raise RuntimeError(f"CSR read at {offset:#x} answered {result.resp}")
        return int.from_bytes(result.data, "little")

    async def write_reg(self, offset, value):
        from cocotbext.axi import AxiResp
        result = await self.axil.write(offset, int(value).to_bytes(4, "little"))
        if result.resp != AxiResp.OKAY:
            raise RuntimeError(f"CSR write at {offset:#x} answered {result.resp}")

    async def read_mem(self, address, length):
        return bytes(self.ram.read(address, length))

    async def write_mem(self, address, data):
        self.ram.write(address, bytes(data))

    async def cycles(self):
        from cocotb.utils import get_sim_time
        return int(get_sim_time("ns") // self.clock_ns)

    async def idle(self, cycles):
        from cocotb.triggers import ClockCycles
        await ClockCycles(self.dut.clk, max(1, int(cycles)))

    async def wait_irq(self, cycles):
        from cocotb.triggers import First, RisingEdge, Timer
        if not self.has_irq:
            return await self.idle(cycles)
        if not self.dut.irq.value:
            await First(RisingEdge(self.dut.irq),
                        Timer(max(1, int(cycles)) * self.clock_ns, unit="ns"))


# UARTBone, LiteX's UART bridge protocol: a command byte, a length in 32-bit words, a big-endian
# word address (byte address / 4), then for a write that many big-endian words (to consecutive
# word addresses). A read is answered with that many big-endian words.
UARTBONE_WRITE = 0x01
UARTBONE_READ = 0x02
UARTBONE_MAX_WORDS = 255


def uartbone_frame(command, address, words=None, *, count=None):
    """The bytes of one UARTBone frame: a write of ``words`` or a read of ``count`` words at
    byte ``address`` (a multiple of 4)."""
    if address % 4:
        raise ValueError(f"address must be a multiple of 4, not {address:#x}")
    n = len(words) if command == UARTBONE_WRITE else count
    if not 1 <= n <= UARTBONE_MAX_WORDS:
        raise ValueError(f"a frame carries 1..{UARTBONE_MAX_WORDS} words, not {n}")
    frame = bytes([command, n]) + (address >> 2).to_bytes(4, "big")
    if command == UARTBONE_WRITE:
        frame += b"".join(int(w).to_bytes(4, "big") for w in words)
    return frame


class UARTBoneTransport(Transport):
    """An engine on a board, through the UARTBone bridge of its board top.

    Parameters
    ----------
    port : str or serial.Serial
        A pyserial port name or URL (``/dev/ttyUSB0``, ``socket://127.0.0.1:4321``), or an open
        port.
    baud : int
        The link's baud rate (a ``socket://`` port ignores it; read timeouts still count the
        bytes in flight at this rate).
    csr_base : int
        Host address of the engine's register window (:data:`mxe.hw.boards.soc.CSR_BASE`).
    timeout : float
        Seconds to wait for a read's answer before the frame counts as lost, on top of the
        time the bytes still on their way to the board take at ``baud``.
    retries : int
        Lost reads tried again (after the bridge's own resynchronization time).
    resync_s : float
        Seconds of silence that make the bridge drop a cut-off frame.

    Members
    -------
    stats : dict
        ``bytes_out``, ``bytes_in``, ``frames``, ``retries`` and ``link_seconds`` (time spent in
        serial I/O), since construction or :meth:`reset_stats`.
    """

    def __init__(self, port, *, baud=3_000_000, csr_base=0, timeout=1.0,
                 retries=2, resync_s=0.25, log=None):
        import serial
        if isinstance(port, str):
            port = serial.serial_for_url(port, baudrate=baud, timeout=timeout)
        self.port = port
        # pyserial's socket:// port leaves Nagle's algorithm on: a frame written right after
        # another would wait for the simulated board's delayed ACK (tens of milliseconds).
        sock = getattr(port, "_socket", None)
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        # Bytes from before this program (a late answer to another's read) are not ours.
        port.reset_input_buffer()
        self.csr_base = csr_base
        self.baud = baud
        self.timeout = timeout
        self.retries = retries
        self.resync_s = resync_s
        self.log = log or logging.getLogger("mxe.link")
        self._cycles = self._last_low = 0
        self._unanswered = 0    # bytes sent since the last read's answer came back
        self.reset_stats()

    def reset_stats(self):
        self.stats = dict(bytes_out=0, bytes_in=0, frames=0, retries=0, link_seconds=0.0)

    def close(self):
        self.port.close()

    def _send(self, frame):
        t = time.monotonic()
        self.port.write(frame)
        self.port.flush()
        self.stats["bytes_out"] += len(frame)
        self.stats["frames"] += 1
        self._unanswered += len(frame)
        self.stats["link_seconds"] += time.monotonic() - t

    def _receive(self, length):
        t = time.monotonic()
        data = b""
        # The answer comes after every byte sent before it: a read behind a large write waits
        # for the write's bytes to cross the link (10 bits a byte).
        deadline = t + self.timeout + (self._unanswered + length) * 10 / self.baud
        while len(data) < length and time.monotonic() < deadline:
            data += self.port.read(length - len(data))
        self.stats["bytes_in"] += len(data)
        self.stats["link_seconds"] += time.monotonic() - t
        if len(data) == length:
            self._unanswered = 0
        return data

    def _drain(self):
        """Throw away whatever arrives until the line has been quiet for ``resync_s``: a late
        answer must not be taken for the next read's."""
        timeout, self.port.timeout = self.port.timeout, self.resync_s
        try:
            while self.port.read(4096):
                pass
        finally:
            self.port.timeout = timeout
        self._unanswered = 0

    def write_words(self, address, words):
        """Write 32-bit ``words`` from byte ``address`` (frames of at most 255 words)."""
        for i in range(0, len(words), UARTBONE_MAX_WORDS):
            chunk = words[i:i + UARTBONE_MAX_WORDS]
            self._send(uartbone_frame(UARTBONE_WRITE, address + 4 * i, chunk))

    def read_words(self, address, count):
        """``count`` 32-bit words from byte ``address``; a lost answer is asked for again."""
        words = []
        for i in range(0, count, UARTBONE_MAX_WORDS):
            n = min(UARTBONE_MAX_WORDS, count - i)
            frame = uartbone_frame(UARTBONE_READ, address + 4 * i, count=n)
            for attempt in range(self.retries + 1):
                self._send(frame)
                data = self._receive(4 * n)
                if len(data) == 4 * n:
                    break
                # A byte was lost on the way in or out: wait until the bridge has dropped
                # whatever it holds and nothing more arrives, and ask again (reads have no side
                # effects on memory or on the registers the driver reads).
                self.stats["retries"] += 1
                self.log.warning("read of %d words at %#x: %d of %d bytes arrived; retrying",
                                 n, address + 4 * i, len(data), 4 * n)
                self._drain()
            else:
                raise LinkError(f"no answer to a read of {n} words at {address + 4 * i:#x} "
                                f"after {self.retries + 1} tries")
            words += [int.from_bytes(data[4 * j:4 * j + 4], "big") for j in range(n)]
        return words

    async def read_reg(self, offset):
        return self.read_words(self.csr_base + offset, 1)[0]

    async def write_reg(self, offset, value):
        self.write_words(self.csr_base + offset, [int(value) & 0xFFFF_FFFF])

    async def write_regs(self, offset, values):
        # One frame: the bridge writes consecutive words in order.
        self.write_words(self.csr_base + offset, [int(v) & 0xFFFF_FFFF for v in values])

    async def read_mem(self, address, length):
        first, end = address & ~3, (address + length + 3) & ~3
        words = self.read_words(first, (end - first) // 4)
        data = b"".join(w.to_bytes(4, "little") for w in words)
        return data[address - first:address - first + length]

    async def write_mem(self, address, data):
        data = bytes(data)
        first, end = address & ~3, (address + len(data) + 3) & ~3
        # Words only partly written keep their other bytes: read them first.
        buf = bytearray(end - first)
        if address != first:
            buf[0:4] = await self.read_mem(first, 4)
        if end != address + len(data) and not (end - 4 == first and address != first):
            buf[-4:] = await self.read_mem(end - 4, 4)
        buf[address - first:address - first + len(data)] = data
        self.write_words(first, [int.from_bytes(buf[i:i + 4], "little")
                                 for i in range(0, len(buf), 4)])

    async def cycles(self):
        # The engine's own cycle counter: right on a board and on a simulated one (which runs
        # far slower than the wall clock). A soft reset clears it: a smaller reading then counts
        # from zero (a real wrap of the low word takes over a minute between two polls).
        low = await self.read_reg(OFFSETS["CYCLES_LO"])
        self._cycles += low - self._last_low if low >= self._last_low else low
        self._last_low = low
        return self._cycles

    async def idle(self, cycles):
        # Every poll is a round trip over the link, far longer than the engine needs per step.
        await asyncio.sleep(0)
