"""UARTBone: LiteX's UART-to-bus bridge protocol, as an AXI4-Lite manager.

A host reaches the engine's registers and the board's memory over the board's USB-UART with the
same frames as LiteX's ``UARTBone`` (``litex/soc/cores/uart.py``, ``Stream2Wishbone``), so
``litex_server --uart`` and LiteX's ``RemoteClient`` work against an MXE board too. A frame is::

    command (1 byte)  length (1 byte, in 32-bit words)  word address (4 bytes, big-endian)
    then, for a write, ``length`` data words (4 bytes each, big-endian)

and a read is answered with ``length`` words, big-endian. Commands, as in LiteX's
``litex/tools/remote/comm_uart.py``:

==== ========================================================
0x01 write, the address going up by one word per word
0x02 read, the address going up by one word per word
0x03 write, every word to the same address (a FIFO port)
0x04 read, every word from the same address
==== ========================================================

A length of 0 moves 256 words: LiteX ends a frame when its 8-bit word counter equals
``length - 1``, which its generated Verilog evaluates in 8 bits (0 - 1 = 255). LiteX's own host
never sends 0 (it writes at most 8 words a frame and reads 1..255).
"""

from amaranth import Cat, Const, Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from .axi import axilite_signature
from .uart import UARTRx, UARTTx, _check_divisor


__all__ = ["UARTBone", "CMD_WRITE", "CMD_READ", "CMD_WRITE_FIXED", "CMD_READ_FIXED"]

CMD_WRITE = 0x01
CMD_READ = 0x02
CMD_WRITE_FIXED = 0x03
CMD_READ_FIXED = 0x04


class UARTBone(wiring.Component):
    """The UARTBone bridge: frames from ``rx`` become AXI4-Lite transactions on ``bus``.

    One bus transaction at a time: the UART is the bottleneck (a word is 40 bit times, 680 cycles
    at 3 Mbaud on 50 MHz). A write word is handed to the bus as its fourth byte arrives, and the
    next word's bytes are received while it completes; AW and W are raised together and held
    until each is taken. A read waits for the last write's response, then reads one word at a
    time: the word is handed to the transmitter's shift register, and the next word's read runs
    while the previous word is on the line, so a read's answer leaves without gaps.

    Errors, resynchronization and where this differs from LiteX:

    * A write answered SLVERR or DECERR is dropped; a read so answered sends 0 for that word,
      so a read always answers exactly ``length`` words. Both pulse ``bus_error``.
    * A command byte other than 0x01..0x04 is dropped and the next byte is a command again.
      (LiteX takes the five header bytes that follow as well before dropping the frame; a host
      that resynchronizes by sending a byte it knows is not a command needs ours.)
    * A frame cut off part-way (a lost byte, a host killed mid-frame) is abandoned after
      ``timeout_cycles`` cycles with no byte arriving, and ``timeout`` pulses; the words of a
      write handed to the bus before then stay written. LiteX abandons any frame not finished
      100 ms after its command byte, bus waits and answer included; ours times only the gaps
      between received bytes, so a long frame at a slow baud rate is never cut.
    * A framing error (a stop bit read low) drops the frame being received and every byte after
      it until the line has been quiet for ``timeout_cycles`` cycles; then ``timeout`` pulses.
      LiteX's PHY drops just the bad byte and its bridge carries on, one byte short: the frame
      then takes a byte of the next one, and the rest of the next frame is parsed as commands
      (data words that happen to hold 0x01 become writes to arbitrary addresses). A framing
      error also usually means the receiver took a data bit for a start bit, so the bytes after
      it are wrong too. Waiting for silence, which a host's retry after its own timeout gives,
      avoids both.
    * The host must wait for a read's answer before sending the next frame (LiteX's host does):
      bytes arriving while a read is being answered are not taken, and all but one are lost.
      Writes may be sent back to back.
    * There is no bus timeout: AXI does not let a manager withdraw a request, so a subordinate
      that never answers hangs the bridge, as it would any AXI manager.

    Parameters
    ----------
    divisor : int
        Clocks per UART bit, at least 4; :func:`mxe.hw.uart.uart_divisor` computes and checks it
        for a real link (17 for 3 Mbaud at 50 MHz).
    timeout_cycles : int
        Cycles without a received byte after which a part-received frame is abandoned; at least
        two characters' time (``20 * divisor``). LiteX's 100 ms (``clk_freq // 10``) is a good
        value for a board: longer than a USB-UART's packet gaps, shorter than a host's patience.

    Members
    -------
    rx : In(1)
        The serial line from the host, idle high. Asynchronous (synchronized inside).
    tx : Out(1)
        The serial line to the host, idle high, from a flip-flop.
    bus : Out(axilite_signature(addr_width=32, data_width=32))
        The AXI4-Lite manager. Byte address = word address * 4 (the word address's top two bits
        are dropped), ``wstrb`` all ones, ``awprot``/``arprot`` 0. Valid signals and payloads
        come from registers and hold until taken; ``bready`` and ``rready`` are high while a
        response is awaited.
    timeout : Out(1)
        One-cycle pulse: the bytes received since the last complete frame were discarded after
        ``timeout_cycles`` quiet cycles (a cut-off frame, or the bytes after a framing error).
    bus_error : Out(1)
        One-cycle pulse: the bus answered a read or a write with SLVERR or DECERR.

    Raises
    ------
    TypeError
        If ``divisor`` or ``timeout_cycles`` is not an integer.
    ValueError
        If ``divisor`` is less than 4, or ``timeout_cycles`` less than ``20 * divisor``.
    """

    rx: In(1, init=1)
    tx: Out(1, init=1)
    bus: Out(axilite_signature(addr_width=32, data_width=32))
    timeout: Out(1)
    bus_error: Out(1)

    def __init__(self, *, divisor, timeout_cycles):
        try:
            _check_divisor(divisor)
            if not isinstance(timeout_cycles, int) or isinstance(timeout_cycles, bool):
                raise TypeError(f"timeout_cycles must be an integer, not {timeout_cycles!r}")
            if timeout_cycles < 20 * divisor:
                raise ValueError(f"timeout_cycles must be at least two characters' time "
                                 f"(20 * divisor = {20 * divisor}), not {timeout_cycles}")
        except (TypeError, ValueError):
            self._MustUse__silence = True
            raise
        self._divisor = divisor
        self._timeout_cycles = timeout_cycles
        super().__init__()

    @property
    def divisor(self):
        return self._divisor

    @property
    def timeout_cycles(self):
        return self._timeout_cycles

    def elaborate(self, platform):
        m = Module()
        bus = self.bus

        m.submodules.uart_rx = urx = UARTRx(self._divisor)
        m.submodules.uart_tx = utx = UARTTx(self._divisor)
        m.d.comb += [urx.rx.eq(self.rx), self.tx.eq(utx.tx)]

        byte = urx.o.payload
        got = urx.o.valid & urx.o.ready

        is_write = Signal()
        incr = Signal()
        count = Signal(8)               # words left in the frame; 0 means 256
        last = count == 1
        addr = Signal(32)               # word address
        nbytes = Signal(2)              # bytes of the address or data word received
        data = Signal(24)               # the first three bytes of a data word
        m.d.sync += [self.timeout.eq(0), self.bus_error.eq(0)]

        # Write channels: one write in flight, its address and data in the port registers.
        wr_busy = Signal()
        m.d.comb += [bus.wstrb.eq(0b1111), bus.awprot.eq(0), bus.arprot.eq(0)]
        m.d.comb += bus.bready.eq(wr_busy)
        with m.If(bus.awvalid & bus.awready):
            m.d.sync += bus.awvalid.eq(0)
        with m.If(bus.wvalid & bus.wready):
            m.d.sync += bus.wvalid.eq(0)
        with m.If(bus.bvalid & bus.bready):
            m.d.sync += wr_busy.eq(0)
            with m.If(bus.bresp[1]):
                m.d.sync += self.bus_error.eq(1)

        # Read channels and the answer: a read word waits in rd_word until the transmitter's
        # shift register is empty, so the next word's read overlaps the previous word's bytes.
        r_wait = Signal()
        rd_word = Signal(32)
        rd_full = Signal()
        tx_word = Signal(32)
        tx_left = Signal(range(5))
        # addr only moves on the R handshake, after AR is taken: araddr holds while valid.
        m.d.comb += [bus.araddr.eq(Cat(Const(0, 2), addr[:30])), bus.rready.eq(r_wait)]
        with m.If(bus.arvalid & bus.arready):
            m.d.sync += [bus.arvalid.eq(0), r_wait.eq(1)]
        m.d.comb += [utx.i.valid.eq(tx_left != 0), utx.i.payload.eq(tx_word[24:])]
        with m.If(utx.i.valid & utx.i.ready):
            m.d.sync += [tx_word.eq(Cat(Const(0, 8), tx_word[:24])), tx_left.eq(tx_left - 1)]
        with m.If((tx_left == 0) & rd_full):
            m.d.sync += [tx_word.eq(rd_word), tx_left.eq(4), rd_full.eq(0)]
        r_done = bus.rvalid & bus.rready
        with m.If(r_done):
            m.d.sync += [
                r_wait.eq(0),
                rd_word.eq(Mux(bus.rresp[1], 0, bus.rdata)),
                rd_full.eq(1),
                addr.eq(addr + incr),
                count.eq(count - 1),
            ]
            with m.If(bus.rresp[1]):
                m.d.sync += self.bus_error.eq(1)

        # Silence: cycles in the middle of a frame (or of a drain) with no byte waiting and no
        # character ending in error.
        silence = Signal(range(self._timeout_cycles))
        quiet = Signal()
        expired = quiet & (silence == self._timeout_cycles - 1)
        m.d.sync += silence.eq(Mux(quiet & ~expired, silence + 1, 0))

        def receiving(*, ready=1):
            # In a state waiting for frame bytes: count silence, abandon the frame when it has
            # lasted too long, drain after a framing error. Called last in the state, so these
            # transitions win over the state's own.
            m.d.comb += [urx.o.ready.eq(ready), quiet.eq(~urx.o.valid & ~urx.error)]
            with m.If(expired):
                m.d.sync += self.timeout.eq(1)
                m.next = "CMD"
            with m.If(urx.error):
                m.next = "DRAIN"

        with m.FSM():
            with m.State("CMD"):
                m.d.comb += urx.o.ready.eq(1)
                with m.If(got):
                    with m.Switch(byte):
                        with m.Case(CMD_WRITE, CMD_WRITE_FIXED):
                            m.d.sync += [is_write.eq(1), incr.eq(byte == CMD_WRITE)]
                            m.next = "LENGTH"
                        with m.Case(CMD_READ, CMD_READ_FIXED):
                            m.d.sync += [is_write.eq(0), incr.eq(byte == CMD_READ)]
                            m.next = "LENGTH"
                        # Anything else is dropped: the next byte is a command again.
                with m.If(urx.error):
                    m.next = "DRAIN"

            with m.State("LENGTH"):
                with m.If(got):
                    m.d.sync += [count.eq(byte), nbytes.eq(0)]
                    m.next = "ADDR"
                receiving()

            with m.State("ADDR"):
                with m.If(got):
                    m.d.sync += [addr.eq(Cat(byte, addr[:24])), nbytes.eq(nbytes + 1)]
                    with m.If(nbytes == 3):
                        with m.If(is_write):
                            m.next = "DATA"
                        with m.Else():
                            m.next = "READ"
                receiving()

            with m.State("DATA"):
                with m.If(got):
                    m.d.sync += [data.eq(Cat(byte, data[:16])), nbytes.eq(nbytes + 1)]
                    with m.If(nbytes == 3):
                        m.d.sync += [
                            bus.awaddr.eq(Cat(Const(0, 2), addr[:30])),
                            bus.wdata.eq(Cat(byte, data)),
                            bus.awvalid.eq(1),
                            bus.wvalid.eq(1),
                            wr_busy.eq(1),
                            addr.eq(addr + incr),
                            count.eq(count - 1),
                        ]
                        with m.If(last):
                            m.next = "CMD"
                # A word's last byte waits (in the receiver) while the previous write is still
                # on the bus; that wait is not silence, as the byte is there.
                receiving(ready=~((nbytes == 3) & wr_busy))

            with m.State("READ"):
                # Reads follow the last write's response: AXI does not order AR after AW.
                with m.If(~bus.arvalid & ~r_wait & ~rd_full & ~wr_busy):
                    m.d.sync += bus.arvalid.eq(1)
                with m.If(r_done & last):
                    m.next = "CMD"

            with m.State("DRAIN"):
                receiving()
        return m
