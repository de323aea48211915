"""Proof harness of :class:`mxe.hw.skid.SkidBuffer`."""

from amaranth import Module
from amaranth.asserts import AnySeq
from amaranth.hdl import Assert
from amaranth.lib import wiring

from mxe.hw.skid import SkidBuffer
from .checkers import HandshakeRule, Scoreboard, assume_reset


__all__ = ["SkidBufferProof"]


class SkidBufferProof(wiring.Component):
    """A skid buffer between a producer and a consumer that do anything at all: ``i.valid``,
    ``i.payload`` and ``o.ready`` are free in every cycle (the producer need not even keep its
    own valid up).

    Parameters
    ----------
    width : int
        Payload bits (the buffer does not look at them; 4 give the scoreboard room to tell
        items apart).
    dut : callable
        Builds the buffer from its payload shape (:class:`SkidBuffer`; a variant for the tests
        that show the proof can fail).
    """

    def __init__(self, width=4, *, dut=SkidBuffer):
        self._width = width
        self._dut = dut
        super().__init__({})

    def elaborate(self, platform):
        m = Module()
        checking = assume_reset(m)
        m.submodules.dut = dut = self._dut(self._width)
        m.d.comb += [
            dut.i.valid.eq(AnySeq(1)),
            dut.i.payload.eq(AnySeq(self._width)),
            dut.o.ready.eq(AnySeq(1)),
        ]

        # "Two registered entries between a producer and a consumer": in order, each item once.
        m.submodules.board = board = Scoreboard(
            self._width, capacity=2, name="skid",
            spec="SkidBuffer: two registered entries between a producer and a consumer")
        m.d.comb += [
            board.i_fire.eq(dut.i.valid & dut.i.ready),
            board.i_data.eq(dut.i.payload),
            board.o_valid.eq(dut.o.valid),
            board.o_fire.eq(dut.o.valid & dut.o.ready),
            board.o_data.eq(dut.o.payload),
            board.check.eq(checking),
        ]
        # The consumer side keeps the stream rule (AXI A3.2.1, and the Amaranth stream rules
        # STYLE.md names): valid held until ready, payload stable.
        m.submodules.o_rule = o_rule = HandshakeRule(self._width, name="skid o")
        m.d.comb += [
            o_rule.valid.eq(dut.o.valid),
            o_rule.ready.eq(dut.o.ready),
            o_rule.payload.eq(dut.o.payload),
        ]
        with m.If(checking):
            m.d.comb += [
                # "level: Entries held."
                Assert(dut.level == board.level, "skid: level = entries held (Members: level)"),
                # An entry held is offered: none is kept back from the consumer.
                Assert(dut.o.valid == (board.level != 0), "skid: o.valid while an entry is "
                                                          "held"),
                # "a transfer per cycle": the producer is taken whenever an entry is free, so a
                # consumer that is always ready sees one item a cycle.
                Assert(dut.i.ready == (board.level < 2), "skid: i.ready while an entry is free "
                                                         "(a transfer per cycle)"),
            ]
        return m
