"""Pieces every harness uses: the reset assumption, the handshake rule of a valid/ready channel
and a tracked-token scoreboard.

The scoreboard is the usual way to prove a channel in order, each item exactly once, without
bounding the run: follow one item, chosen freely as it goes in (so the proof holds for every
item), count the items ahead of it as they leave, and check that the item offered when none is
left ahead is the tracked one. As the choice and the payloads are free, that covers loss (the
item after it would come out in its place), duplication, reordering and corruption. The
harnesses also check the channel's level against the scoreboard's count.
"""

from amaranth import Module, ResetSignal, Signal
from amaranth.asserts import AnySeq, Initial
from amaranth.hdl import Assert, Assume
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out


__all__ = ["assume_reset", "BlockProof", "HandshakeRule", "Scoreboard"]


def assume_reset(m):
    """Reset high in the first cycle and never again; returns a signal high from the second
    cycle on (assertions are checked past reset)."""
    m.d.comb += Assume(ResetSignal() == Initial())
    return ~Initial()


class BlockProof(wiring.Component):
    """A harness around one block built from an engine configuration: the block is
    ``dut(config)`` (the gateware, or a variant for the tests that show the proof can fail),
    reset as :func:`assume_reset` says; a subclass drives it and states its properties in
    :meth:`check`."""

    def __init__(self, config, *, dut):
        self._config = config
        self._dut = dut
        super().__init__({})

    def check(self, m, dut, checking):
        """Add the block's environment and properties to ``m``; ``checking`` is high past
        reset."""
        raise NotImplementedError

    def elaborate(self, platform):
        m = Module()
        checking = assume_reset(m)
        m.submodules.dut = dut = self._dut(self._config)
        self.check(m, dut, checking)
        return m


class HandshakeRule(wiring.Component):
    """The valid/ready rule of AMBA AXI (IHI0022, A3.2.1), checked on one channel.

    "Once VALID is asserted it must remain asserted until the handshake occurs", and the source
    keeps its information stable until the transfer: the same rule the Amaranth stream
    convention sets for a producer. Asserted on a channel the design drives, assumed on one the
    environment drives.

    Parameters
    ----------
    width : int
        Payload bits.
    name : str
        Channel name, in the property messages.
    assume : bool
        Assume the rule (the environment's side) instead of asserting it.

    Members
    -------
    valid, ready : In(1)
    payload : In(width)
    """

    def __init__(self, width, *, name, assume=False):
        self._name = name
        self._assume = bool(assume)
        super().__init__({"valid": In(1), "ready": In(1), "payload": In(width)})

    def elaborate(self, platform):
        m = Module()
        check = Assume if self._assume else Assert
        # The last cycle's values; reset_less, so the reset cycle is compared with the next.
        was_pending = Signal(reset_less=True)
        was_payload = Signal.like(self.payload, reset_less=True)
        m.d.sync += [
            was_pending.eq(self.valid & ~self.ready),
            was_payload.eq(self.payload),
        ]
        with m.If(~Initial() & was_pending):
            m.d.comb += [
                check(self.valid, f"{self._name}: valid held until the handshake "
                                  f"(AXI A3.2.1)"),
                check(self.payload == was_payload, f"{self._name}: payload stable until the "
                                                   f"handshake (AXI A3.2.1)"),
            ]
        return m


class Scoreboard(wiring.Component):
    """Checks that a channel gives out the items it was given, in order, each once.

    One item at a time is tracked, chosen freely as it goes in (so the proof covers every
    item): its payload is kept, with the number of items ahead of it, and when that number
    reaches 0 the item offered must be the tracked one. Items leave the cycle after they go in
    at the earliest.

    Parameters
    ----------
    width : int
        Item bits.
    capacity : int
        Most items the channel may hold.
    name : str
        In the property messages.
    spec : str
        The sentence of the channel's documentation the order property checks.

    Members
    -------
    i_fire : In(1)
        An item goes in (``i_data``).
    i_data : In(width)
    o_valid : In(1)
        An item is offered (``o_data``), to be checked.
    o_fire : In(1)
        The offered item is taken.
    o_data : In(width)
    check : In(1)
        Assert the properties (past reset).
    level : Out(range(capacity + 2))
        Items in and not yet out.
    """

    def __init__(self, width, *, capacity, name, spec):
        self._capacity = capacity
        self._name = name
        self._spec = spec
        super().__init__({
            "i_fire": In(1), "i_data": In(width),
            "o_valid": In(1), "o_fire": In(1), "o_data": In(width),
            "check": In(1),
            "level": Out(range(capacity + 2)),
        })

    def elaborate(self, platform):
        m = Module()
        capacity = self._capacity
        # Counted up to capacity + 1, which the bound below refuses.
        with m.If(self.i_fire & ~self.o_fire & (self.level <= capacity)):
            m.d.sync += self.level.eq(self.level + 1)
        with m.Elif(self.o_fire & ~self.i_fire & (self.level != 0)):
            m.d.sync += self.level.eq(self.level - 1)

        tracked = Signal()
        item = Signal.like(self.i_data)
        ahead = Signal(range(capacity + 1))
        with m.If(tracked & self.o_fire):
            with m.If(ahead == 0):
                m.d.sync += tracked.eq(0)
            with m.Else():
                m.d.sync += ahead.eq(ahead - 1)
        with m.If(~tracked & self.i_fire & AnySeq(1)):
            m.d.sync += [
                tracked.eq(1),
                item.eq(self.i_data),
                ahead.eq(self.level - self.o_fire),
            ]
        with m.If(self.check):
            m.d.comb += Assert(self.level <= capacity, f"{self._name}: at most {capacity} items "
                                                       f"held")
            with m.If(self.o_valid):
                m.d.comb += Assert(self.level != 0, f"{self._name}: no item out that did not go "
                                                    f"in, none twice ({self._spec})")
                with m.If(tracked & (ahead == 0)):
                    m.d.comb += Assert(self.o_data == item, f"{self._name}: each item out is the "
                                                            f"next one in ({self._spec})")
        return m
