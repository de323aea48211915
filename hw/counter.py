"""An event counter whose carry chain is cut in two: wide counters without a long adder."""

from amaranth import Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out


__all__ = ["EventCounter"]


class EventCounter(wiring.Component):
    """Counts the cycles in which ``event`` is high; ``clear`` sets it to zero.

    The low ``split`` bits and the high bits are two counters. The high half steps when an event
    finds the low half all ones, which a register knows a cycle ahead, so no carry chain is
    longer than the longer half and ``count`` is exact in every cycle.

    Parameters
    ----------
    width : int
        Bits of ``count``.
    split : int
        Bits of the low half, ``0 < split < width``.

    Members
    -------
    event : In(1)
    clear : In(1)
        Takes priority over ``event``.
    count : Out(width)
        Events counted before this cycle (wrapping at ``2**width``).
    """

    def __init__(self, width=64, split=32):
        if not isinstance(width, int) or width < 2:
            self._MustUse__silence = True  # not built, so no "created but never used" warning
            raise ValueError(f"width must be an integer of at least 2, not {width!r}")
        if not isinstance(split, int) or not 0 < split < width:
            self._MustUse__silence = True
            raise ValueError(f"split must be an integer from 1 to {width - 1}, not {split!r}")
        self._split = split
        super().__init__({"event": In(1), "clear": In(1), "count": Out(width)})

    def elaborate(self, platform):
        m = Module()
        split = self._split
        low = self.count[:split]
        high = self.count[split:]
        low_full = Signal()   # low is all ones: the next event carries into high
        with m.If(self.clear):
            m.d.sync += [self.count.eq(0), low_full.eq(0)]
        with m.Elif(self.event):
            m.d.sync += [low.eq(low + 1), low_full.eq(low == (1 << split) - 2)]
            with m.If(low_full):
                m.d.sync += high.eq(high + 1)
        return m
