"""The board SoC: the engine, on-chip memory in place of DRAM, and a UART bridge for the host.

Every board top wraps this in its own clock, reset and pins (:mod:`mxe.hw.boards.catalog`). The
host's address map, here once (:func:`soc_memory_map`)::

    CSR_BASE = 0x0000_0000   4 KiB    the engine's registers (mxe.hw.regmap)
    MEM_BASE = 0x0010_0000   mem_size the board memory (1 MiB at most)

The engine's DMA sees the memory at the same addresses as the host, so the DMA window a driver
sets is ``[MEM_BASE, MEM_BASE + mem_size)`` and an operand's host address is its DMA address.
The DMA needs no more address bits than that window's limit (:func:`soc_addr_width`: 21 for
up to 512 KiB), which keeps its address arithmetic short on a small FPGA.
"""

from amaranth import Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from ..axi import RESP_DECERR, axilite_signature, connect_flat
from ..config import EngineConfig
from ..engine import Engine
from ..ram import AXIRam
from ..regmap import ADDR_WIDTH as CSR_ADDR_WIDTH
from ..uartbone import UARTBone


__all__ = ["BoardSoC", "HostDecoder", "soc_memory_map", "CSR_BASE", "CSR_SIZE", "MEM_BASE",
           "MEM_SIZE_MAX", "HOST_ADDR_WIDTH", "soc_addr_width"]

#: The engine's register window: 4 KiB of byte addresses.
CSR_BASE = 0x0000_0000
CSR_SIZE = 1 << CSR_ADDR_WIDTH
#: The board memory; its size is a power of two up to :data:`MEM_SIZE_MAX`, which is more than
#: the block RAM of any FPGA the boards carry.
MEM_BASE = 0x0010_0000
MEM_SIZE_MAX = MEM_BASE
#: The host bridge's byte addresses.
HOST_ADDR_WIDTH = 32


def _check_mem_size(mem_size):
    if not isinstance(mem_size, int) or isinstance(mem_size, bool):
        raise TypeError(f"mem_size must be an integer, not {mem_size!r}")
    if mem_size < 1024 or mem_size > MEM_SIZE_MAX or mem_size & (mem_size - 1):
        raise ValueError(f"mem_size must be a power of two from 1024 to {MEM_SIZE_MAX:#x} "
                         f"bytes, not {mem_size}")


def soc_addr_width(mem_size):
    """The fewest DMA address bits (``axi_addr_width``) that reach a board SoC's memory of
    ``mem_size`` bytes: those of its window's limit, ``MEM_BASE + mem_size`` (21 up to 512 KiB).

    Raises
    ------
    TypeError, ValueError
        If ``mem_size`` is not a power of two from 1 KiB to 1 MiB.
    """
    _check_mem_size(mem_size)
    return (MEM_BASE + mem_size).bit_length()


def soc_memory_map(mem_size):
    """The host's (and the DMA's) address map of a board SoC with ``mem_size`` bytes of memory.

    Returns
    -------
    dict
        ``{"csr": {"base": CSR_BASE, "size": 4096}, "mem": {"base": MEM_BASE, "size":
        mem_size}}``; every other address answers DECERR.

    Raises
    ------
    TypeError, ValueError
        If ``mem_size`` is not a power of two from 1 KiB to 1 MiB.
    """
    _check_mem_size(mem_size)
    return {"csr": {"base": CSR_BASE, "size": CSR_SIZE},
            "mem": {"base": MEM_BASE, "size": mem_size}}


class HostDecoder(wiring.Component):
    """Routes the host bridge's AXI4-Lite bus to the engine's registers or the memory.

    One read and one write at a time (the bridge issues one transaction at a time; the UART is
    the bottleneck). A write's address is decoded when AW arrives; AW and W then pass to that
    target (W waits for AW) and the target's response comes back. Addresses outside both
    windows answer DECERR here (reads return 0). The CSR target sees the low 12 address bits,
    the memory the whole address.

    Parameters
    ----------
    mem_size : int
        Bytes of the memory window at :data:`MEM_BASE`.

    Members
    -------
    bus : In(axilite_signature(addr_width=32, data_width=32))
        From the bridge.
    csr : Out(axilite_signature(addr_width=12, data_width=32))
        To the engine's ``s_axil_*``.
    mem : Out(axilite_signature(addr_width=32, data_width=32))
        To the memory's ``host`` port.
    """

    def __init__(self, mem_size):
        try:
            _check_mem_size(mem_size)
        except (TypeError, ValueError):
            self._MustUse__silence = True
            raise
        self._mem_size = mem_size
        super().__init__({
            "bus": In(axilite_signature(addr_width=HOST_ADDR_WIDTH)),
            "csr": Out(axilite_signature(addr_width=CSR_ADDR_WIDTH)),
            "mem": Out(axilite_signature(addr_width=HOST_ADDR_WIDTH)),
        })

    @property
    def mem_size(self):
        return self._mem_size

    def elaborate(self, platform):
        m = Module()
        bus, csr, mem = self.bus, self.csr, self.mem
        mem_bits = self._mem_size.bit_length() - 1

        def decode(addr):
            return (addr[CSR_ADDR_WIDTH:] == CSR_BASE >> CSR_ADDR_WIDTH,
                    addr[mem_bits:] == MEM_BASE >> mem_bits)

        m.d.comb += [
            csr.awaddr.eq(bus.awaddr[:CSR_ADDR_WIDTH]), mem.awaddr.eq(bus.awaddr),
            csr.araddr.eq(bus.araddr[:CSR_ADDR_WIDTH]), mem.araddr.eq(bus.araddr),
        ]
        for target in (csr, mem):
            m.d.comb += [target.awprot.eq(bus.awprot), target.wdata.eq(bus.wdata),
                         target.wstrb.eq(bus.wstrb), target.arprot.eq(bus.arprot)]

        # --- writes: decode on AW, then pass AW and W once each, then wait for B -------------
        w_busy = Signal()
        w_csr = Signal()
        w_mem = Signal()
        aw_sent = Signal()
        w_sent = Signal()
        err_b = Signal()                # the DECERR response of an unmapped write
        with m.If(~w_busy & bus.awvalid):
            is_csr, is_mem = decode(bus.awaddr)
            m.d.sync += [w_busy.eq(1), w_csr.eq(is_csr), w_mem.eq(is_mem), aw_sent.eq(0),
                         w_sent.eq(0)]
        w_none = ~w_csr & ~w_mem
        for target, sel in ((csr, w_csr), (mem, w_mem)):
            m.d.comb += [
                target.awvalid.eq(w_busy & sel & ~aw_sent & bus.awvalid),
                target.wvalid.eq(w_busy & sel & ~w_sent & bus.wvalid),
                target.bready.eq(w_busy & sel & bus.bready),
            ]
        m.d.comb += [
            bus.awready.eq(w_busy & ~aw_sent & Mux(w_csr, csr.awready,
                                                   Mux(w_mem, mem.awready, 1))),
            bus.wready.eq(w_busy & ~w_sent & Mux(w_csr, csr.wready,
                                                 Mux(w_mem, mem.wready, 1))),
            bus.bvalid.eq(w_busy & Mux(w_csr, csr.bvalid, Mux(w_mem, mem.bvalid, err_b))),
            bus.bresp.eq(Mux(w_csr, csr.bresp, Mux(w_mem, mem.bresp, RESP_DECERR))),
        ]
        with m.If(bus.awvalid & bus.awready):
            m.d.sync += aw_sent.eq(1)
        with m.If(bus.wvalid & bus.wready):
            m.d.sync += w_sent.eq(1)
        with m.If(w_busy & w_none & aw_sent & w_sent):
            m.d.sync += err_b.eq(1)
        with m.If(bus.bvalid & bus.bready):
            m.d.sync += [w_busy.eq(0), err_b.eq(0)]

        # --- reads: decode on AR, pass AR once, then wait for R ------------------------------
        r_busy = Signal()
        r_csr = Signal()
        r_mem = Signal()
        ar_sent = Signal()
        err_r = Signal()
        with m.If(~r_busy & bus.arvalid):
            is_csr, is_mem = decode(bus.araddr)
            m.d.sync += [r_busy.eq(1), r_csr.eq(is_csr), r_mem.eq(is_mem), ar_sent.eq(0)]
        r_none = ~r_csr & ~r_mem
        for target, sel in ((csr, r_csr), (mem, r_mem)):
            m.d.comb += [
                target.arvalid.eq(r_busy & sel & ~ar_sent & bus.arvalid),
                target.rready.eq(r_busy & sel & bus.rready),
            ]
        m.d.comb += [
            bus.arready.eq(r_busy & ~ar_sent & Mux(r_csr, csr.arready,
                                                   Mux(r_mem, mem.arready, 1))),
            bus.rvalid.eq(r_busy & Mux(r_csr, csr.rvalid, Mux(r_mem, mem.rvalid, err_r))),
            bus.rresp.eq(Mux(r_csr, csr.rresp, Mux(r_mem, mem.rresp, RESP_DECERR))),
            bus.rdata.eq(Mux(r_csr, csr.rdata, Mux(r_mem, mem.rdata, 0))),
        ]
        with m.If(bus.arvalid & bus.arready):
            m.d.sync += ar_sent.eq(1)
        with m.If(r_busy & r_none & ar_sent):
            m.d.sync += err_r.eq(1)
        with m.If(bus.rvalid & bus.rready):
            m.d.sync += [r_busy.eq(0), err_r.eq(0)]
        return m


class BoardSoC(wiring.Component):
    """The board-independent part of a board top: engine, memory, host bridge, status.

    The UARTBone bridge (:class:`mxe.hw.uartbone.UARTBone`, LiteX's frames) is the host's bus
    manager; :class:`HostDecoder` routes it to the engine's registers at :data:`CSR_BASE` and to
    the memory (:class:`mxe.hw.ram.AXIRam`, block RAM, or the UP5K's SPRAM with
    ``single_port_memory``) at :data:`MEM_BASE`. The engine's DMA
    reaches the same memory through its AXI4 port, at the same addresses.

    Parameters
    ----------
    config : EngineConfig
        The engine; its ``axi_*`` widths are the memory's AXI4 port's.
    mem_size : int
        Bytes of memory, a power of two from 1 KiB to 1 MiB (the board's block RAM: 64 KiB
        of 64-bit words is 32 DP16KD on an ECP5).
    divisor : int
        Clock cycles per UART bit (:func:`mxe.hw.uart.uart_divisor`).
    timeout_cycles : int
        Quiet cycles after which the bridge abandons a part-received frame.
    led_stretch : int
        Cycles ``led_error`` stays lit after a link timeout or a bus error (about 84 ms at
        50 MHz by default), so a one-cycle pulse can be seen.
    single_port_memory : bool
        Build the memory single-ported, for the iCE40 UP5K's SPRAM (``AXIRam``'s
        ``single_port``): up to 128 KiB, its contents undefined after power-up.

    Members
    -------
    uart_rx : In(1)
        Serial line from the host, idle high (asynchronous: synchronized inside).
    uart_tx : Out(1)
        Serial line to the host, idle high.
    led_busy : Out(1)
        The engine's ``STATUS.busy``.
    led_error : Out(1)
        The engine's ``STATUS.error`` is not 0, or the bridge saw a link timeout or a bus error
        (SLVERR/DECERR) in the last ``led_stretch`` cycles.
    irq : Out(1)
        The engine's interrupt (``CTRL.irq_enable & STATUS.done``).

    Raises
    ------
    TypeError
        If ``config`` is not an EngineConfig or a number is not an integer.
    ValueError
        If ``mem_size`` or ``led_stretch`` is out of range, or the engine's DMA addresses are
        too narrow for the memory (:func:`soc_addr_width`); ``divisor`` and
        ``timeout_cycles`` as :class:`~mxe.hw.uartbone.UARTBone` checks them.
    """

    uart_rx: In(1, init=1)
    uart_tx: Out(1, init=1)
    led_busy: Out(1)
    led_error: Out(1)
    irq: Out(1)

    def __init__(self, config, *, mem_size, divisor, timeout_cycles, led_stretch=1 << 22,
                 single_port_memory=False):
        try:
            if not isinstance(config, EngineConfig):
                raise TypeError(f"config must be an EngineConfig, not {config!r}")
            if config.axi_addr_width < soc_addr_width(mem_size):
                raise ValueError(f"config.axi_addr_width must be at least "
                                 f"{soc_addr_width(mem_size)} to reach {mem_size} bytes of "
                                 f"memory at {MEM_BASE:#x}, not {config.axi_addr_width}")
            if not isinstance(led_stretch, int) or isinstance(led_stretch, bool):
                raise TypeError(f"led_stretch must be an integer, not {led_stretch!r}")
            if led_stretch < 1:
                raise ValueError(f"led_stretch must be at least 1 cycle, not {led_stretch}")
            if not isinstance(single_port_memory, bool):
                raise TypeError(f"single_port_memory must be a bool, not "
                                f"{single_port_memory!r}")
            # Built here, so a bad divisor or timeout fails where it is given.
            self._bridge = UARTBone(divisor=divisor, timeout_cycles=timeout_cycles)
        except (TypeError, ValueError):
            self._MustUse__silence = True
            raise
        self._config = config
        self._mem_size = mem_size
        self._divisor = divisor
        self._timeout_cycles = timeout_cycles
        self._led_stretch = led_stretch
        self._single_port_memory = single_port_memory
        super().__init__()

    @property
    def config(self):
        return self._config

    @property
    def mem_size(self):
        return self._mem_size

    @property
    def divisor(self):
        return self._divisor

    @property
    def timeout_cycles(self):
        return self._timeout_cycles

    @property
    def led_stretch(self):
        return self._led_stretch

    @property
    def single_port_memory(self):
        return self._single_port_memory

    @property
    def memory_map(self):
        return soc_memory_map(self._mem_size)

    def elaborate(self, platform):
        m = Module()
        config = self._config

        m.submodules.engine = engine = Engine(config)
        m.submodules.ram = ram = AXIRam(size=self._mem_size, data_width=config.axi_data_width,
                                        addr_width=config.axi_addr_width,
                                        id_width=config.axi_id_width, base=MEM_BASE,
                                        single_port=self._single_port_memory)
        m.submodules.bridge = bridge = self._bridge
        m.submodules.decoder = decoder = HostDecoder(self._mem_size)

        m.d.comb += [bridge.rx.eq(self.uart_rx), self.uart_tx.eq(bridge.tx)]
        wiring.connect(m, bridge=bridge.bus, decoder=decoder.bus)
        wiring.connect(m, decoder=decoder.mem, ram=ram.host)
        connect_flat(m, engine, "s_axil", decoder.csr)
        connect_flat(m, engine, "m_axi", ram.axi)

        # A link pulse lights the error LED for led_stretch cycles.
        stretch = Signal(range(self._led_stretch + 1))
        with m.If(bridge.timeout | bridge.bus_error):
            m.d.sync += stretch.eq(self._led_stretch)
        with m.Elif(stretch != 0):
            m.d.sync += stretch.eq(stretch - 1)
        m.d.comb += [
            self.led_busy.eq(engine.busy),
            self.led_error.eq(engine.error | (stretch != 0)),
            self.irq.eq(engine.irq),
        ]
        return m
