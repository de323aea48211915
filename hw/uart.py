"""An 8N1 UART receiver and transmitter with a fixed number of clocks per bit."""

from amaranth import Cat, Const, Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.cdc import FFSynchronizer
from amaranth.lib.wiring import In, Out


__all__ = ["MIN_DIVISOR", "MIN_LINK_DIVISOR", "MAX_BAUD_ERROR", "UARTRx", "UARTTx", "uart_divisor"]

#: The fewest clocks per bit the receiver's logic works with (mid-bit sampling needs a
#: half-bit count of at least 2 cycles, and the start-bit check one sample before it).
MIN_DIVISOR = 4

#: The fewest clocks per bit :func:`uart_divisor` accepts for a link to a real serial port. With
#: D clocks per bit, detecting the start edge costs up to 1/D bit of the half-bit sampling margin
#: before any baud-rate error; at D = 4 that is a quarter of a bit gone, leaving no room for the
#: other end's clock error (a PC's USB-UART), so the helper wants at least 8.
MIN_LINK_DIVISOR = 8

#: The largest rounding error of the baud rate :func:`uart_divisor` accepts, as a fraction.
MAX_BAUD_ERROR = 0.02


def _check_divisor(divisor):
    if not isinstance(divisor, int) or isinstance(divisor, bool):
        raise TypeError(f"divisor must be an integer, not {divisor!r}")
    if divisor < MIN_DIVISOR:
        raise ValueError(f"divisor must be at least {MIN_DIVISOR} clocks per bit, not {divisor}")


def uart_divisor(clk_freq, baud):
    """Clocks per bit for ``baud`` on a ``clk_freq`` clock.

    The receiver samples each bit at the middle of its own bit time, counted from the start edge,
    so the last bit it samples (the stop bit, 9.5 bit times after the edge) drifts by 9.5 times
    the rate error: 0.19 bit at 2 %. Seeing the edge on a clock edge adds up to 1/D bit. For
    3 Mbaud on 50 MHz, D = 17 (2.94 Mbaud, -1.96 %): the stop bit is sampled 161 to 162 cycles
    after the start edge, 0.16 to 0.22 bit after its centre (158.3 cycles), so 0.28 bit is left
    for the host's own clock error (about 3 %; an FTDI bridge's 3 Mbaud is exact). Our
    transmitter's bits are 1.96 % long, within what a 16x-oversampling receiver takes (about
    4 %). ``tests/test_uartbone.py`` runs this case bit for bit.

    Parameters
    ----------
    clk_freq : int or float
        The clock of the UART, in Hz.
    baud : int or float
        The bit rate, in bits per second.

    Returns
    -------
    int
        ``round(clk_freq / baud)``, for ``UARTRx``, ``UARTTx`` and ``UARTBone``.

    Raises
    ------
    TypeError
        If either argument is not a number.
    ValueError
        If either is not positive, if the rounded rate is more than 2 % off ``baud``, or if it
        leaves fewer than 8 clocks per bit.
    """
    for name, value in (("clk_freq", clk_freq), ("baud", baud)):
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise TypeError(f"{name} must be a number, not {value!r}")
        if not value > 0:
            raise ValueError(f"{name} must be positive, not {value!r}")
    divisor = round(clk_freq / baud)
    if divisor < MIN_LINK_DIVISOR:
        raise ValueError(f"baud {baud} leaves {clk_freq / baud:.2f} clocks per bit at "
                         f"clk_freq {clk_freq}; a link needs at least {MIN_LINK_DIVISOR}")
    error = (clk_freq / divisor - baud) / baud
    if abs(error) > MAX_BAUD_ERROR:
        raise ValueError(f"baud {baud} is {error:+.1%} off at clk_freq {clk_freq} "
                         f"({divisor} clocks per bit); at most {MAX_BAUD_ERROR:.0%} is allowed")
    return divisor


class _UARTComponent(wiring.Component):
    """What the receiver and the transmitter share: a checked ``divisor`` (clocks per bit)."""

    def __init__(self, divisor):
        try:
            _check_divisor(divisor)
        except (TypeError, ValueError):
            self._MustUse__silence = True     # a refused component is not a forgotten one
            raise
        self._divisor = divisor
        super().__init__()

    @property
    def divisor(self):
        return self._divisor


class UARTRx(_UARTComponent):
    """8N1 receiver: start bit, eight data bits least significant first, one stop bit.

    The pin goes through two flip-flops, then a falling edge starts a character. The start bit is
    checked half a bit later (a shorter low pulse is a glitch and ignored), and each further bit
    is sampled a whole bit after the one before. A character whose stop bit reads low is dropped
    and reported on ``error``; the receiver then waits for the line to go high before it looks for
    the next start edge, so a held-low line (a break, an unplugged cable) produces no bytes.

    Parameters
    ----------
    divisor : int
        Clocks per bit, at least 4 (see :func:`uart_divisor`).

    Members
    -------
    rx : In(1)
        The serial line, idle high. Asynchronous to the clock.
    o : Out(stream.Signature(8))
        Received bytes, from a register: valid until taken. The next character is assembled
        meanwhile; if it completes before this one is taken it is dropped and ``overrun`` pulses.
        ``o.valid`` rises about 3 cycles after the middle of the stop bit (2 of them in the
        synchronizer).
    error : Out(1)
        One-cycle pulse: a character was dropped because its stop bit was low (a framing error).
    overrun : Out(1)
        One-cycle pulse: a character was dropped because ``o`` still held the previous one.

    Raises
    ------
    TypeError
        If ``divisor`` is not an integer.
    ValueError
        If ``divisor`` is less than 4.
    """

    rx: In(1, init=1)
    o: Out(stream.Signature(8))
    error: Out(1)
    overrun: Out(1)

    def elaborate(self, platform):
        m = Module()
        divisor = self._divisor

        line = Signal(init=1)
        m.submodules.sync = FFSynchronizer(self.rx, line, init=1)
        line_prev = Signal(init=1)
        m.d.sync += line_prev.eq(line)

        timer = Signal(range(divisor))
        bit = Signal(range(10))         # 0 start, 1..8 data, 9 stop
        shift = Signal(8)

        m.d.sync += [self.error.eq(0), self.overrun.eq(0)]
        with m.If(self.o.valid & self.o.ready):
            m.d.sync += self.o.valid.eq(0)

        with m.FSM():
            with m.State("IDLE"):
                with m.If(line_prev & ~line):
                    # The edge was seen this cycle: the middle of the start bit is half a bit on.
                    m.d.sync += [timer.eq(divisor // 2 - 1), bit.eq(0)]
                    m.next = "BITS"
            with m.State("BITS"):
                m.d.sync += timer.eq(timer - 1)
                with m.If(timer == 0):
                    m.d.sync += [timer.eq(divisor - 1), bit.eq(bit + 1)]
                    with m.If(bit == 0):
                        with m.If(line):
                            m.next = "IDLE"
                    with m.Elif(bit == 9):
                        with m.If(~line):
                            m.d.sync += self.error.eq(1)
                        with m.Elif(self.o.valid & ~self.o.ready):
                            m.d.sync += self.overrun.eq(1)
                        with m.Else():
                            m.d.sync += [self.o.payload.eq(shift), self.o.valid.eq(1)]
                        # Back to looking for an edge from the middle of the stop bit, so a
                        # sender slightly faster than us still has its next start edge seen.
                        m.next = "IDLE"
                    with m.Else():
                        m.d.sync += shift.eq(Cat(shift[1:], line))
        return m


class UARTTx(_UARTComponent):
    """8N1 transmitter: start bit, eight data bits least significant first, one stop bit.

    A byte is taken in the last cycle of the previous character's stop bit (or at once when idle),
    so back-to-back bytes leave with no gap: exactly ``10 * divisor`` cycles per byte.

    Parameters
    ----------
    divisor : int
        Clocks per bit, at least 4 (see :func:`uart_divisor`).

    Members
    -------
    i : In(stream.Signature(8))
        Bytes to send. ``i.ready`` comes from registers only. The start bit begins on ``tx`` the
        cycle after the transfer.
    tx : Out(1)
        The serial line, idle high, from a flip-flop.
    busy : Out(1)
        A character is on the line.

    Raises
    ------
    TypeError
        If ``divisor`` is not an integer.
    ValueError
        If ``divisor`` is less than 4.
    """

    i: In(stream.Signature(8))
    tx: Out(1, init=1)
    busy: Out(1)

    def elaborate(self, platform):
        m = Module()
        divisor = self._divisor

        timer = Signal(range(divisor))
        left = Signal(range(10))        # bits still to put on the line after the current one
        shift = Signal(9)               # data bits then the stop bit
        bit_done = timer == 0

        m.d.comb += self.i.ready.eq(~self.busy | (bit_done & (left == 0)))
        with m.If(self.busy):
            m.d.sync += timer.eq(timer - 1)
            with m.If(bit_done):
                m.d.sync += timer.eq(divisor - 1)
                with m.If(left == 0):
                    m.d.sync += self.busy.eq(0)
                with m.Else():
                    m.d.sync += [
                        self.tx.eq(shift[0]),
                        shift.eq(shift[1:]),
                        left.eq(left - 1),
                    ]
        with m.If(self.i.valid & self.i.ready):
            m.d.sync += [
                self.tx.eq(0),
                shift.eq(Cat(self.i.payload, Const(1, 1))),
                left.eq(9),
                timer.eq(divisor - 1),
                self.busy.eq(1),
            ]
        return m
