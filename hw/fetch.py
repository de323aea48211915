"""Reading a synchronous-RAM buffer as a stream, without back-pressure on the RAM."""

from amaranth import Cat, Module, Signal, Value
from amaranth.lib import data, stream, wiring
from amaranth.lib.fifo import SyncFIFO
from amaranth.lib.wiring import In, Out

from .scratchpad import ReadPortSignature


__all__ = ["RowFetcher"]


class RowFetcher(wiring.Component):
    """Reads buffer rows on request into a small FIFO and offers them as a stream.

    A request is accepted only when the FIFO is sure to have room for its row, so the buffer's
    fixed one-cycle read latency never needs back-pressure; with ``depth >= 3`` a row per cycle
    is sustained.

    Parameters
    ----------
    addr_width : int
    row_layout : data layout of one row
    tag_width : int
        Bits that travel with each row (e.g. a ``last`` flag).
    depth : int
        FIFO entries.

    Members
    -------
    read : Out(ReadPortSignature(addr_width, row_layout))
        To the buffer (data one cycle after ``en``). ``en`` is always high: the fetcher keeps
        only the rows it requested, so no enable net depends on the handshake (it would fan out
        over the block RAMs' output registers).
    i_req : In(stream.Signature(StructLayout({"addr", "tag"})))
        Row to read and its tag.
    o_row : Out(stream.Signature(StructLayout({"row", "tag"})))
        Rows in request order; the first one two cycles after its request at the earliest.
    """

    def __init__(self, addr_width, row_layout, *, tag_width, depth=4):
        if depth < 3:
            raise ValueError(f"depth must be at least 3 to sustain a row per cycle, not {depth}")
        self._row_layout = row_layout
        self._tag_width = tag_width
        self._depth = depth
        super().__init__({
            "read": Out(ReadPortSignature(addr_width, row_layout)),
            "i_req": In(stream.Signature(data.StructLayout({"addr": addr_width,
                                                            "tag": tag_width}))),
            "o_row": Out(stream.Signature(data.StructLayout({"row": row_layout,
                                                             "tag": tag_width}))),
        })

    def elaborate(self, platform):
        m = Module()
        row_bits = data.Layout.cast(self._row_layout).size
        m.submodules.fifo = fifo = SyncFIFO(width=row_bits + self._tag_width, depth=self._depth)
        in_flight = Signal()
        tag = Signal(self._tag_width)
        fire = self.i_req.valid & self.i_req.ready
        # Free FIFO entries not yet promised to a request (depth - level - in_flight), in a
        # register so ready is one LUT from flip-flops.
        credits = Signal(range(self._depth + 1), init=self._depth)
        taken = fifo.r_en & fifo.r_rdy
        m.d.sync += credits.eq(credits - fire + taken)
        m.d.comb += [
            self.i_req.ready.eq(credits != 0),
            self.read.addr.eq(self.i_req.payload.addr),
            self.read.en.eq(1),
            fifo.w_en.eq(in_flight),
            fifo.w_data.eq(Cat(Value.cast(self.read.data), tag)),
            self.o_row.valid.eq(fifo.r_rdy),
            self.o_row.payload.eq(fifo.r_data),
            fifo.r_en.eq(self.o_row.ready),
        ]
        m.d.sync += in_flight.eq(fire)
        with m.If(fire):
            m.d.sync += tag.eq(self.i_req.payload.tag)
        return m
