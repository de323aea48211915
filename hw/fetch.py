"""Reading a synchronous-RAM buffer as a stream, without back-pressure on the RAM."""

from amaranth import Cat, Module, Signal, Value, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from .array import wrapping_increment
from .scratchpad import ReadPortSignature


__all__ = ["RowFetcher", "fetch_depth"]


def fetch_depth(latency, register, interval):
    """The fewest FIFO entries with which a :class:`RowFetcher` keeps up with a consumer that
    takes each row ``interval`` cycles after it is first offered, at the soonest (1: a row a
    cycle). An entry is back ``latency + register + interval + 1`` cycles after its request,
    and ``interval`` cycles is a row's share of that: ``ceil((latency + register + interval +
    1) / interval)`` entries."""
    return -(-(latency + bool(register) + interval + 1) // interval)


class RowFetcher(wiring.Component):
    """Reads buffer rows on request into a small FIFO and offers them as a stream.

    A request is accepted only when the FIFO is sure to have room for its row, so the buffer's
    fixed read latency never needs back-pressure. A FIFO entry is promised at the request and
    given back the cycle after its row is taken, ``latency + register + 2`` cycles later at the
    earliest, so ``depth >= latency + register + 2`` sustains a row per cycle; a consumer that
    keeps each row for several cycles needs fewer entries (:func:`fetch_depth`).

    Parameters
    ----------
    addr_width : int
    row_layout : data layout of one row
    tag_width : int
        Bits that travel with each row (e.g. a ``last`` flag).
    latency : int
        The buffer's read latency: cycles from ``read.en`` to ``read.data`` (at least 1).
    register : bool
        Register ``read.data`` before the FIFO (a cycle more latency), so the FIFO's write data
        comes from a flip-flop and not from the buffer: for a block RAM read without an output
        register, whose clock-to-output leaves little of the cycle for the route to the FIFO.
    depth : int
        FIFO entries (by default ``latency + register + 2``, a row per cycle).

    Members
    -------
    read : Out(ReadPortSignature(addr_width, row_layout))
        To the buffer (data ``latency`` cycles after ``en``). ``en`` is always high: the fetcher
        keeps only the rows it requested, so no enable net depends on the handshake (it would
        fan out over the block RAMs' output registers).
    i_req : In(stream.Signature(StructLayout({"addr", "tag"})))
        Row to read and its tag.
    o_row : Out(stream.Signature(StructLayout({"row", "tag"})))
        Rows in request order; the first one ``latency + register + 1`` cycles after its
        request at the earliest.
    """

    def __init__(self, addr_width, row_layout, *, tag_width, latency, register=False,
                 depth=None):
        if not isinstance(latency, int) or latency < 1:
            raise ValueError(f"latency must be a positive integer, not {latency!r}")
        stages = latency + bool(register)
        if depth is None:
            depth = stages + 2
        if not isinstance(depth, int) or depth < 1:
            raise ValueError(f"depth must be a positive integer, not {depth!r}")
        self._row_layout = row_layout
        self._tag_width = tag_width
        self._register = bool(register)
        self._stages = stages
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
        depth = self._depth
        # The FIFO, in LUT RAM. A request is accepted only with an entry promised to it, so a
        # row arriving from the buffer is always written: the write enable is the last
        # in-flight flag itself (a flip-flop, fanning out over the RAM), and the fill level
        # follows from the flag, not from the RAM's write enable.
        m.submodules.storage = storage = Memory(shape=unsigned(row_bits + self._tag_width),
                                                depth=depth, init=[])
        w_port = storage.write_port()
        r_port = storage.read_port(domain="comb")
        w_ptr = Signal(range(depth))
        r_ptr = Signal(range(depth))
        level = Signal(range(depth + 1))
        # Requests on their way through the buffer (and the data register): valid and tag per
        # cycle.
        in_flight = [Signal(name=f"in_flight{i}") for i in range(self._stages)]
        tags = [Signal(self._tag_width, name=f"tag{i}") for i in range(self._stages)]
        row = Value.cast(self.read.data)
        if self._register:
            row_r = Signal(row_bits, name="row_r", reset_less=True)
            m.d.sync += row_r.eq(row)
            row = row_r
        fire = self.i_req.valid & self.i_req.ready
        write = in_flight[-1]
        taken = self.o_row.valid & self.o_row.ready
        # Free FIFO entries not yet promised to a request (depth - level - in_flight), in a
        # register so ready is one LUT from flip-flops.
        credits = Signal(range(depth + 1), init=depth)
        m.d.sync += [
            credits.eq(credits - fire + taken),
            level.eq(level + write - taken),
        ]
        with m.If(write):
            m.d.sync += w_ptr.eq(wrapping_increment(w_ptr, depth))
        with m.If(taken):
            m.d.sync += r_ptr.eq(wrapping_increment(r_ptr, depth))
        m.d.comb += [
            self.i_req.ready.eq(credits != 0),
            self.read.addr.eq(self.i_req.payload.addr),
            self.read.en.eq(1),
            w_port.addr.eq(w_ptr),
            w_port.data.eq(Cat(row, tags[-1])),
            w_port.en.eq(write),
            r_port.addr.eq(r_ptr),
            self.o_row.valid.eq(level != 0),
            self.o_row.payload.eq(r_port.data),
        ]
        m.d.sync += [
            in_flight[0].eq(fire),
            tags[0].eq(self.i_req.payload.tag),
            [dst.eq(src) for dst, src in zip(in_flight[1:], in_flight)],
            [dst.eq(src) for dst, src in zip(tags[1:], tags)],
        ]
        return m
