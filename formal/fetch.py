"""Proof harness of :class:`mxe.hw.fetch.RowFetcher`."""

from amaranth import Cat, Module, Signal, Value, unsigned
from amaranth.asserts import AnySeq
from amaranth.hdl import Assert
from amaranth.lib import data, wiring

from mxe.hw.fetch import RowFetcher
from .checkers import HandshakeRule, Scoreboard, assume_reset


__all__ = ["RowFetcherProof"]


class RowFetcherProof(wiring.Component):
    """A row fetcher in front of a buffer that returns anything at all, with a requester and a
    consumer that do anything at all.

    The buffer is modelled by its read latency only: ``read.data`` is free in every cycle, and
    the row of a request is whatever the buffer returns ``latency`` cycles after it. That covers
    every buffer content (and buffers whose content changes), so the proof does not depend on
    one. The scoreboard's item is that row with the request's tag.

    Parameters
    ----------
    latency, register, depth :
        As :class:`RowFetcher`'s (the engine's: ``latency=3`` for the scratchpad fetchers,
        ``latency=1, register=True`` for the store unit's, ``depth`` by default; without the
        deep pipeline the store unit's has no register and, with a post-processor lane for
        several columns, fewer entries).
    row_width, tag_width, addr_width : int
        Small, as the fetcher does not look at rows or tags (one row bit and one tag bit are
        enough to tell a row or tag from another one).
    dut : callable
        Builds the fetcher with :class:`RowFetcher`'s arguments (or a variant for the tests
        that show the proof can fail).
    """

    def __init__(self, *, latency, register=False, depth=None, row_width=1, tag_width=1,
                 addr_width=2, dut=RowFetcher):
        self._latency = latency
        self._register = bool(register)
        self._depth = depth
        self._row_width = row_width
        self._tag_width = tag_width
        self._addr_width = addr_width
        self._dut = dut
        super().__init__({})

    def elaborate(self, platform):
        m = Module()
        checking = assume_reset(m)
        stages = self._latency + self._register
        depth = self._depth if self._depth is not None else stages + 2
        row_layout = data.ArrayLayout(unsigned(1), self._row_width)
        m.submodules.dut = dut = self._dut(self._addr_width, row_layout,
                                           tag_width=self._tag_width, latency=self._latency,
                                           register=self._register, depth=self._depth)
        m.d.comb += [
            dut.i_req.valid.eq(AnySeq(1)),
            dut.i_req.payload.eq(AnySeq(self._addr_width + self._tag_width)),
            dut.o_row.ready.eq(AnySeq(1)),
            dut.read.data.eq(AnySeq(self._row_width)),
        ]
        fire = dut.i_req.valid & dut.i_req.ready
        taken = dut.o_row.valid & dut.o_row.ready

        # Requests on their way through the buffer: fired[k] / tags[k] k + 1 cycles ago.
        fired = [Signal(name=f"fired{k + 1}") for k in range(stages)]
        tags = [Signal(self._tag_width, name=f"tag{k + 1}") for k in range(stages)]
        m.d.sync += [
            fired[0].eq(fire),
            tags[0].eq(dut.i_req.payload.tag),
            [dst.eq(src) for dst, src in zip(fired[1:], fired)],
            [dst.eq(src) for dst, src in zip(tags[1:], tags)],
        ]
        # The row of the request fired[latency - 1] marks, as the fetcher's FIFO receives it.
        row = Value.cast(dut.read.data)
        if self._register:
            row_r = Signal.like(row, name="row_r")
            m.d.sync += row_r.eq(row)
            row = row_r
        in_flight = sum(fired)

        # "o_row: Rows in request order": each returned row once, with its tag.
        m.submodules.board = board = Scoreboard(
            self._row_width + self._tag_width, capacity=depth, name="fetch",
            spec="RowFetcher o_row: rows in request order")
        m.d.comb += [
            board.i_fire.eq(fired[-1]),
            board.i_data.eq(Cat(row, tags[-1])),
            board.o_valid.eq(dut.o_row.valid),
            board.o_fire.eq(taken),
            board.o_data.eq(dut.o_row.payload),
            board.check.eq(checking),
        ]
        m.submodules.o_rule = o_rule = HandshakeRule(self._row_width + self._tag_width,
                                                     name="fetch o_row")
        m.d.comb += [
            o_rule.valid.eq(dut.o_row.valid),
            o_rule.ready.eq(dut.o_row.ready),
            o_rule.payload.eq(dut.o_row.payload),
        ]
        # A consumer that has taken every row offered since reset.
        always_ready = Signal(init=1)
        with m.If(~dut.o_row.ready):
            m.d.sync += always_ready.eq(0)

        with m.If(checking):
            m.d.comb += [
                # "read: To the buffer ... en is always high", reading the requested row.
                Assert(dut.read.en, "fetch: read.en always high"),
                Assert(dut.read.addr == dut.i_req.payload.addr,
                       "fetch: the buffer reads the requested address"),
                # "A request is accepted only when the FIFO is sure to have room for its row":
                # rows held and rows on their way never exceed the FIFO, so none is lost.
                Assert(board.level + in_flight <= depth,
                       "fetch: a request is accepted only with room for its row"),
                # ... and whenever there is room, so the fetcher does not stall needlessly.
                Assert(dut.i_req.ready == (board.level + in_flight < depth),
                       "fetch: i_req.ready whenever a FIFO entry is free"),
                # "the first one latency + register + 1 cycles after its request": a row is
                # offered as soon as it is in the FIFO.
                Assert(dut.o_row.valid == (board.level != 0),
                       "fetch: o_row.valid latency + register + 1 cycles after the request"),
            ]
            if depth >= stages + 2:
                # "depth >= latency + register + 2 sustains a row per cycle": a consumer that
                # is always ready never stalls the requester.
                m.d.comb += Assert(~always_ready | dut.i_req.ready,
                                   "fetch: a row per cycle with an always-ready consumer")
        return m
