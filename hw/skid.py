"""A skid buffer: a stream pipeline register that cuts the valid, payload and ready paths."""

from amaranth import Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out


__all__ = ["SkidBuffer"]


class SkidBuffer(wiring.Component):
    """Two registered entries between a producer and a consumer, a transfer per cycle.

    ``o.valid``, ``o.payload`` and ``i.ready`` all come straight from flip-flops, so no
    combinational path runs through the buffer in either direction: a timing cut between two
    blocks' handshakes. The second entry (the skid) catches the transfer of the cycle in which
    the consumer stalls, as ``i.ready`` only falls a cycle later.

    Parameters
    ----------
    shape : shape-castable
        The payload.
    registered : bool
        ``False`` builds a plain connection instead: the same stream, no register and no
        cycle, for an engine whose clock is slow enough not to need the cut (one built without
        ``deep_pipeline``). ``level`` is then 0.

    Members
    -------
    i : In(stream.Signature(shape))
    o : Out(stream.Signature(shape))
    level : Out(range(3))
        Entries held.
    """

    def __init__(self, shape, registered=True):
        self._registered = registered
        super().__init__({
            "i": In(stream.Signature(shape)),
            "o": Out(stream.Signature(shape)),
            "level": Out(range(3)),
        })

    def elaborate(self, platform):
        m = Module()
        if not self._registered:
            m.d.comb += [self.o.valid.eq(self.i.valid), self.o.payload.eq(self.i.payload),
                         self.i.ready.eq(self.o.ready)]
            return m
        # Named apart from the module (Verilator's VARHIDDEN, the instances being "skid").
        spare = Signal.like(self.o.payload, name="spare")
        skid_valid = Signal()
        taken = self.o.valid & self.o.ready
        given = self.i.valid & self.i.ready
        m.d.comb += [
            self.i.ready.eq(~skid_valid),
            self.level.eq(self.o.valid + skid_valid),
        ]
        # The skid register follows the input while it is empty, so its enable is its own
        # valid flag (a flip-flop) and not the consumer's ready.
        with m.If(~skid_valid):
            m.d.sync += spare.eq(self.i.payload)
        with m.If(taken | ~self.o.valid):
            # The output register is free: refill it from the skid, else from the input.
            with m.If(skid_valid):
                m.d.sync += [self.o.payload.eq(spare), skid_valid.eq(0)]
            with m.Else():
                m.d.sync += [self.o.payload.eq(self.i.payload), self.o.valid.eq(given)]
        with m.Elif(given):
            m.d.sync += skid_valid.eq(1)
        return m
