"""Proof harness of Amaranth's synchronous FIFOs as MXE instantiates them.

The engine uses :class:`amaranth.lib.fifo.SyncFIFOBuffered` (the command queue, the DMA's
descriptor and in-flight queues, the load unit's metadata, the post-processor's output) and
:class:`amaranth.lib.fifo.SyncFIFO` (the DMA's read-data and retire queues). The properties are
the sentences of Amaranth's ``FIFOInterface`` documentation.
"""

from amaranth import Module, Signal
from amaranth.asserts import AnySeq
from amaranth.hdl import Assert
from amaranth.lib import wiring
from amaranth.lib.fifo import SyncFIFOBuffered

from .checkers import HandshakeRule, Scoreboard, assume_reset


__all__ = ["FIFOProof"]


class FIFOProof(wiring.Component):
    """A FIFO with a writer and a reader that do anything at all (``w_en``, ``w_data`` and
    ``r_en`` free in every cycle).

    Parameters
    ----------
    depth : int
    width : int
        Entry bits (4 give the scoreboard room to tell entries apart).
    fifo : class
        :class:`SyncFIFOBuffered` or :class:`SyncFIFO` (or a variant that shows the proof can
        fail), built as ``fifo(width=, depth=)``.
    exact_w_rdy : bool
        Also assert that ``w_rdy`` is high whenever the queue has space, not only that it is
        low for a cycle at most. ``SyncFIFOBuffered(depth=2)`` does not keep that: the cycle
        after a write into its empty self, its one-entry inner queue is full while the entry
        moves on to the output register, and ``w_rdy`` is low with one place free.
    """

    def __init__(self, depth, *, width=4, fifo=SyncFIFOBuffered, exact_w_rdy=True):
        self._depth = depth
        self._width = width
        self._fifo = fifo
        self._exact_w_rdy = exact_w_rdy
        super().__init__({})

    def elaborate(self, platform):
        m = Module()
        depth = self._depth
        checking = assume_reset(m)
        m.submodules.dut = dut = self._fifo(width=self._width, depth=depth)
        m.d.comb += [
            dut.w_en.eq(AnySeq(1)),
            dut.w_data.eq(AnySeq(self._width)),
            dut.r_en.eq(AnySeq(1)),
        ]
        write = dut.w_en & dut.w_rdy
        read = dut.r_en & dut.r_rdy

        # "The data entry written first to the input interface is read first from the output
        # interface": in order, each entry once, none made up.
        m.submodules.board = board = Scoreboard(
            self._width, capacity=depth, name="fifo",
            spec="FIFOInterface: the entry written first is read first")
        m.d.comb += [
            board.i_fire.eq(write),
            board.i_data.eq(dut.w_data),
            board.o_valid.eq(dut.r_rdy),
            board.o_fire.eq(read),
            board.o_data.eq(dut.r_data),
            board.check.eq(checking),
        ]
        # "r_data: Valid if r_rdy is asserted"; an offered entry stays until it is read.
        m.submodules.r_rule = r_rule = HandshakeRule(self._width, name="fifo r")
        m.d.comb += [
            r_rule.valid.eq(dut.r_rdy),
            r_rule.ready.eq(dut.r_en),
            r_rule.payload.eq(dut.r_data),
        ]
        # Entries that stay in the queue for the next cycle, and whether it had room and was
        # refusing writes: neither an entry nor a free place waits more than a cycle (a
        # SyncFIFOBuffered moves an entry into its output register first).
        kept = Signal(range(depth + 1))
        was_refusing = Signal()
        m.d.sync += [
            kept.eq(board.level - read),
            was_refusing.eq((board.level < depth) & ~dut.w_rdy),
        ]
        with m.If(checking):
            m.d.comb += [
                # "level: Number of unread entries" (never more than depth: the scoreboard).
                Assert(dut.level == board.level, "fifo: level = number of unread entries"),
                # "w_rdy: Asserted if there is space in the queue".
                Assert(~dut.w_rdy | (board.level < depth), "fifo: w_rdy only with space in "
                                                           "the queue"),
                # "r_rdy: Asserted if there is an entry in the queue".
                Assert(~dut.r_rdy | (board.level != 0), "fifo: r_rdy only with an entry in "
                                                        "the queue"),
            ]
            with m.If(kept != 0):
                m.d.comb += Assert(dut.r_rdy, "fifo: an entry kept from the last cycle is "
                                              "offered (r_rdy)")
            if self._exact_w_rdy:
                # ... and whenever there is: what a writer that counts its entries relies on.
                m.d.comb += Assert(dut.w_rdy == (board.level < depth),
                                   "fifo: w_rdy whenever there is space in the queue")
            with m.If(was_refusing & (board.level < depth)):
                m.d.comb += Assert(dut.w_rdy, "fifo: with space in the queue, w_rdy is low "
                                              "for one cycle at most")
        return m
