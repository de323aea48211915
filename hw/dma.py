"""The DMA: an AXI4 master with independent read and write engines for 2-D strided transfers."""

from dataclasses import dataclass

from amaranth import Cat, Const, Module, Mux, Signal, signed
from amaranth.lib import data, enum, stream, wiring
from amaranth.lib.fifo import SyncFIFO, SyncFIFOBuffered
from amaranth.lib.wiring import In, Out

from .axi import BURST_INCR, RESP_DECERR, RESP_OKAY, axi4_signature
from .config import REQUANT_ELEM_BYTES, EngineConfig
from .skid import SkidBuffer


__all__ = ["DMA", "DMAError", "DMALimits", "FULL_LIMITS", "engine_limits", "check_latency",
           "ROWS_WIDTH", "ROW_BYTES_WIDTH", "cmd_layout",
           "rd_data_layout", "wr_data_layout", "done_layout", "COUNTER_WIDTH"]

#: Width of the ``rows`` field of a command (up to 65535 rows).
ROWS_WIDTH = 16
#: Width of the ``row_bytes`` field of a command (up to 65535 bytes per row).
ROW_BYTES_WIDTH = 16
#: Width of the performance counters (they wrap around).
COUNTER_WIDTH = 32
#: Bursts may not cross this boundary (AXI4).
BOUNDARY = 4096
#: Bits of the command tag that tells a read command's bursts from the next command's.
_TAG_BITS = 3


@dataclass(frozen=True)
class DMALimits:
    """Widths of a command's ``rows`` and ``row_bytes``, and with them of every count the DMA
    keeps. ``row_bytes`` must also hold a whole burst's bytes (``max_burst_len * bus_bytes``):
    the burst arithmetic works in it."""
    rows: int = ROWS_WIDTH
    row_bytes: int = ROW_BYTES_WIDTH


#: The standalone DMA's limits: up to 65535 rows of up to 65535 bytes.
FULL_LIMITS = DMALimits()


def engine_limits(config):
    """The limits of an engine's DMA: its commands come from LOAD and STORE, whose rows fit the
    scratchpad or the accumulator and whose row is one buffer row (operands, accumulators or
    requantization values)."""
    rows = max(config.spad_depth, config.acc_depth)
    row_bytes = max(config.spad_row_elems * config.elem_bytes,
                    config.cols * max(config.acc_elem_bytes, REQUANT_ELEM_BYTES))
    return DMALimits(rows=rows.bit_length(),
                     row_bytes=max(row_bytes, config.max_burst_len * config.axi_bytes)
                     .bit_length())


class DMAError(enum.Enum, shape=3):
    """Completion code of a DMA command (``error`` of a done entry)."""
    #: Finished; every byte transferred.
    OK = 0
    #: A subordinate answered SLVERR; the transfer was aborted.
    SLVERR = 1
    #: A subordinate answered DECERR; the transfer was aborted.
    DECERR = 2
    #: The transfer's extent leaves the window [window_base, window_limit); nothing was issued.
    WINDOW = 3
    #: ``rows`` or ``row_bytes`` is zero; nothing was issued.
    BAD_CMD = 4
    #: The DMA was built without unaligned transfers (``config.unaligned_dma``) and ``addr``
    #: or, over more than one row, ``stride`` is not a multiple of the bus width in bytes;
    #: nothing was issued.
    UNALIGNED = 5


def cmd_layout(config, limits=FULL_LIMITS):
    """A 2-D transfer: ``rows`` rows of ``row_bytes`` bytes, row ``r`` at ``addr + r * stride``."""
    return data.StructLayout({
        "addr": config.axi_addr_width,
        "rows": limits.rows,
        "row_bytes": limits.row_bytes,
        "stride": config.axi_addr_width,
    })


def rd_data_layout(config):
    return data.StructLayout({
        "data": config.axi_data_width,
        "bytes": (config.axi_bytes).bit_length(),
        "row_last": 1,
        "last": 1,
    })


def wr_data_layout(config):
    return data.StructLayout({"data": config.axi_data_width})


def done_layout(config):
    return data.StructLayout({"error": DMAError, "addr": config.axi_addr_width})


def _log2(n):
    return n.bit_length() - 1


def _in_beats(config, row_bytes):
    """Beats of ``row_bytes`` bytes packed from byte lane 0."""
    s = _log2(config.axi_bytes)
    return (row_bytes + config.axi_bytes - 1) >> s


def _geometry_layout(config, limits):
    """What every row of a command shares, worked out once by the checker: ``in_beats`` (beats
    of a row packed from lane 0), ``in_one`` (that is one) and ``tail`` (``(row_bytes - 1) mod
    bus_bytes``, the last packed byte's lane)."""
    return data.StructLayout({"in_beats": limits.row_bytes, "in_one": 1,
                              "tail": _log2(config.axi_bytes)})


def _row_start(config, addr, geometry):
    """How a row from ``addr`` lies on the bus, from its command's ``geometry``
    (:func:`_geometry_layout`) with no adder wider than the lane offset in front of a compare.

    Returns
    -------
    dict
        ``off`` (its first byte's lane), ``last_lane`` (its last byte's lane), ``beats``
        (aligned bus beats it touches), ``one`` (that is one) and ``fits`` (it touches no more
        beats than it packs into: a row that starts off lane 0 then ends with one output beat
        more than it reads).
    """
    s = _log2(config.axi_bytes)
    if not config.unaligned_dma:          # every row starts on lane 0
        return {"off": Const(0, s), "last_lane": geometry.tail, "beats": geometry.in_beats,
                "one": geometry.in_one, "fits": Const(1, 1)}
    off = addr[:s]
    end = off + geometry.tail
    wraps = end[s]                        # the row spills into one more bus beat
    return {"off": off, "last_lane": end[:s], "beats": geometry.in_beats + wraps,
            "one": geometry.in_one & ~wraps, "fits": ~wraps}


def _burst_row_layout(config, limits):
    """The burst generator's registers for a row (see :func:`_burst_row`)."""
    s = _log2(config.axi_bytes)
    return data.StructLayout({
        "beat_addr": config.axi_addr_width,
        "left1": limits.row_bytes + 1,
        "over1": signed(limits.row_bytes + 2),
        "bnd1": _log2(BOUNDARY) - s,
    })


def _row_tails(config, row_bytes):
    """``row_bytes - 1`` and ``row_bytes - 1 - max_burst_len * bus_bytes``: what
    :func:`_burst_row` adds to a row's lane offset, kept in registers per command."""
    return {"tail": row_bytes - 1,
            "tail_over": (row_bytes - 1 - config.max_burst_len * config.axi_bytes).as_signed()}


def _tails_layout(limits):
    return data.StructLayout({"tail": limits.row_bytes,
                              "tail_over": signed(limits.row_bytes + 2)})


def _burst_row(config, addr, tails):
    """The burst generator's registers for a row from ``addr`` (``tails``: its command's
    :func:`_row_tails`): its first beat's address; beats left - 1, beats left - max_burst_len - 1
    (negative: the rest fits one burst), and beats to the next 4 KiB boundary - 1. Each one
    adder from registers: ``ceil((off + row_bytes) / b) - 1 = (off + row_bytes - 1) >> s``."""
    b = config.axi_bytes
    s = _log2(b)
    off = Cat(addr[:s] if config.unaligned_dma else Const(0, s), Const(0, 1))
    return {
        "beat_addr": Cat(Const(0, s), addr[s:]),
        "left1": (off + tails.tail) >> s,
        "over1": (off + tails.tail_over) >> s,
        "bnd1": ~addr[s:_log2(BOUNDARY)],
    }


def check_latency(config, rows):
    """Cycles from a command's acceptance to its checked result on the checker's output, for a
    command of ``rows`` rows: accept, one step per two bits of ``rows - 1`` up to its highest
    one (none for one row or none), compare. 2 for one row, 3 up to 4 rows, 4 up to 16, 10 at
    most. The next command is taken the cycle after, so back to back the checker takes a
    command every ``check_latency(config, rows)`` cycles. Without ``config.deep_pipeline`` the
    compare has no register of its own: the result is offered a cycle sooner (1 for one row,
    9 at most), and the next command is taken the cycle after this one is handed on."""
    return (2 if config.deep_pipeline else 1) + (max(rows - 1, 0).bit_length() + 1) // 2


class _Checker(wiring.Component):
    """Checks a command before anything is issued: rows and row_bytes non-zero, ``addr`` and
    (over more than one row) ``stride`` on the bus's lane 0 if the DMA is built without
    unaligned transfers, and the whole extent ``[addr, addr + (rows - 1) * stride + row_bytes)``
    inside ``[base, limit)``.

    A sequential shift-add over the bits of ``rows - 1``, two a cycle, with no multiplier
    (:func:`check_latency` cycles a command, 2 to 10, 1 to 9 without the deep pipeline): accept
    (``addr + row_bytes``, ``rows - 1``, ``in_beats``; ``window_limit`` is sampled here,
    ``window_base`` at the compare); then, while bits of ``rows - 1`` remain, each step adds the
    stride shifted to the place of the lowest remaining bit to one sum if that bit is set, and twice
    it to a second sum if the next bit is (two adders side by side, each from registers), and
    ``in_beats`` the same way to two beat counts; it stops as soon as the remaining bits are zero, a
    flag register telling it so. Then the compare, into the output register, which holds the result
    while the next command is checked (without ``config.deep_pipeline`` the result is offered from
    the command's registers, which hold it until it is taken): the two sums added (the second starts
    at ``-limit - 1``, so their sum's sign says whether the end is beyond the limit) and the two
    beat counts added. It runs while the engine still works on the previous command. It also works
    out what the command's rows share (``geometry``, :func:`_geometry_layout`; ``tails``,
    :func:`_row_tails`), the burst generator's registers for the first row (``row0``,
    :func:`_burst_row`) and the second row's address (``second``), so the generator starts a command
    from registers and sets up every row with one adder per register, and counts the command's input
    beats (``beats``, ``rows * ceil(row_bytes / bus_bytes)``, 0 for no rows) for the write engine.
    """

    def __init__(self, config, limits=FULL_LIMITS):
        self._config = config
        self._limits = limits
        super().__init__({
            "window_base": In(config.axi_addr_width),
            "window_limit": In(config.axi_addr_width),
            "i_cmd": In(stream.Signature(cmd_layout(config, limits))),
            "o_cmd": Out(stream.Signature(data.StructLayout({
                "cmd": cmd_layout(config, limits), "error": DMAError,
                "geometry": _geometry_layout(config, limits),
                "row0": _burst_row_layout(config, limits), "second": config.axi_addr_width,
                "tails": _tails_layout(limits),
                "beats": limits.rows + limits.row_bytes}))),  # input beats of the command
            "busy": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        aw = self._config.axi_addr_width
        # beats < 2**rows * 2**(row_bytes - s) (the limits' widths): in_beats is below
        # 2**(row_bytes - s) with s = log2(bus_bytes)
        limits = self._limits
        beats_width = limits.rows + limits.row_bytes - _log2(self._config.axi_bytes)
        # The command being checked (``full``) and, in an output register of its own, the
        # command checked before it: the next command is taken while that one waits.
        cmd = Signal(cmd_layout(self._config, limits))
        full = Signal()
        rows_m1 = Signal(limits.rows)          # the bits of rows - 1 still to add, shifted down
        last = Signal()                       # rows_m1 == 0: compare
        # The stride and in_beats at the place of rows_m1's bit 0; the stride's top bit is
        # sticky (set once it reaches 2**aw).
        stride = Signal(aw + 1)
        in_beats = Signal(beats_width)
        # Two sums, one for the even and one for the odd bits of rows - 1: a step adds two bits
        # with two adders side by side, and the compare adds the sums. ``even`` starts at
        # addr + row_bytes, ``odd`` at -limit - 1, so the end is beyond the limit when
        # even + odd >= 0. ``over`` is sticky: an end at 2**aw or beyond, or an odd sum past
        # the limit on its own, is outside whatever follows (no sum is wider than aw + 2 bits).
        even = Signal(aw)
        odd = Signal(signed(aw + 1))
        over = Signal()
        beats_even = Signal(beats_width)
        beats_odd = Signal(beats_width)
        geometry = Signal(_geometry_layout(self._config, limits))  # in_beats from accepting
        tails = Signal(_tails_layout(limits))
        out = Signal.like(self.o_cmd.payload)
        out_valid = Signal()

        def shifted(value, n):
            """``value << n`` at its width, its top bit sticky."""
            return Cat(Const(0, n), value[:aw - n], value[aw - n:].any())

        m.d.comb += [
            self.i_cmd.ready.eq(~full),
            self.busy.eq(full | out_valid),
            self.o_cmd.valid.eq(out_valid),
            self.o_cmd.payload.eq(out),
        ]
        if self._config.deep_pipeline:
            with m.If(self.o_cmd.valid & self.o_cmd.ready):
                m.d.sync += out_valid.eq(0)
        with m.If(self.i_cmd.valid & self.i_cmd.ready):
            payload = self.i_cmd.payload
            row_tails = _row_tails(self._config, payload.row_bytes)
            packed = _in_beats(self._config, payload.row_bytes)
            end = payload.addr + payload.row_bytes
            m.d.sync += [
                cmd.eq(payload), full.eq(1),
                rows_m1.eq(payload.rows - 1),
                last.eq(payload.rows[1:] == 0),   # no steps for one row, nor for none
                stride.eq(payload.stride),
                in_beats.eq(packed),
                even.eq(end[:aw]),
                odd.eq(Cat(~self.window_limit, Const(1, 1))),
                over.eq(end[aw]),
                beats_even.eq(Mux(payload.rows == 0, 0, packed)),
                beats_odd.eq(0),
                geometry.in_beats.eq(packed),
                geometry.tail.eq(row_tails["tail"]),      # its low bits: the last lane
                *(tails[name].eq(value) for name, value in row_tails.items()),
            ]
        with m.Elif(full & ~last):
            m.d.sync += [
                rows_m1.eq(rows_m1[2:]),
                last.eq(rows_m1[2:] == 0),
                stride.eq(shifted(stride, 2)),
                in_beats.eq(in_beats << 2),
            ]
            with m.If(rows_m1[0]):
                total = even + stride[:aw]
                m.d.sync += [even.eq(total[:aw]), beats_even.eq(beats_even + in_beats)]
                with m.If(total[aw] | stride[aw]):
                    m.d.sync += over.eq(1)
            with m.If(rows_m1[1]):
                twice = shifted(stride, 1)
                total = odd + twice[:aw]
                m.d.sync += [odd.eq(total), beats_odd.eq(beats_odd + (in_beats << 1))]
                with m.If(~total[-1] | twice[aw]):
                    m.d.sync += over.eq(1)
        # The compare, and everything the command hands on.
        bad = (cmd.rows == 0) | (cmd.row_bytes == 0)
        beyond = ~(even + odd)[-1]                # end - limit - 1 >= 0
        outside = (cmd.addr < self.window_base) | over | beyond
        s = _log2(self._config.axi_bytes)
        unaligned = Const(0, 1) if self._config.unaligned_dma else \
            cmd.addr[:s].any() | (cmd.rows[1:].any() & cmd.stride[:s].any())
        result = [
            out.cmd.eq(cmd),
            out.error.eq(Mux(bad, DMAError.BAD_CMD,
                             Mux(unaligned, DMAError.UNALIGNED,
                                 Mux(outside, DMAError.WINDOW, DMAError.OK)))),
            out.geometry.eq(geometry),
            out.geometry.in_one.eq(geometry.in_beats == 1),
            out.beats.eq(beats_even + beats_odd),
            out.second.eq(cmd.addr + cmd.stride),
            out.tails.eq(tails),
            *(out.row0[name].eq(value) for name, value in _burst_row(
                self._config, cmd.addr, tails).items()),
        ]
        if self._config.deep_pipeline:
            # Straight into the output register once it is free (else the command waits).
            with m.Elif(full & (~out_valid | self.o_cmd.ready)):
                m.d.sync += [full.eq(0), out_valid.eq(1), *result]
        else:
            # For a slow clock the result is offered from the command's registers once the
            # steps are done, and the command is held until it is taken.
            m.d.comb += [out_valid.eq(full & last), *result]
            with m.If(self.o_cmd.valid & self.o_cmd.ready):
                m.d.sync += full.eq(0)
        return m


class _BurstGenerator(wiring.Component):
    """Cuts a checked 2-D command into aligned INCR bursts: each row's beats, at most
    ``max_burst_len`` per burst, never across a 4 KiB boundary, one burst per cycle.

    ``o_burst`` comes from a skid buffer (the address channel's register and one more): ``len``
    is AxLEN (beats - 1). The generator works out a burst whenever the skid buffer has room, so
    the address channel's ready (and the tracking FIFO's room behind it) reaches only the skid
    buffer's registers, not the row registers' enables. Without ``config.deep_pipeline`` the
    skid buffer is a plain connection: a burst goes out in the cycle it is worked out, and the
    ready reaches the row registers. ``abort`` stops the current command (bursts already in the
    skid buffer, at most two, are still handed over). ``busy_tag`` tells whether bursts of
    command ``tag`` may still come.

    A command comes with its first row worked out (``row0``, from the checker's registers) and
    its second row's address, so every row's arithmetic (:func:`_burst_row`) starts from
    registers, one adder each, and no choice between command and next row sits in front of an
    adder.
    """

    def __init__(self, config, limits=FULL_LIMITS):
        self._config = config
        self._limits = limits
        super().__init__({
            "i_cmd": In(stream.Signature(data.StructLayout({
                "cmd": cmd_layout(config, limits), "tag": _TAG_BITS,
                "row0": _burst_row_layout(config, limits), "tails": _tails_layout(limits),
                "second": config.axi_addr_width}))),
            "o_burst": Out(stream.Signature(data.StructLayout({
                "addr": config.axi_addr_width, "len": 8, "tag": _TAG_BITS}))),
            "abort": In(1),
            "tag": Out(_TAG_BITS),
            "generating": Out(1),
            "query_tag": In(_TAG_BITS),
            "busy_tag": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        config = self._config
        aw = config.axi_addr_width
        b = config.axi_bytes
        s = _log2(b)
        page_bits = _log2(BOUNDARY)
        max_len = config.max_burst_len
        active = Signal()
        tag = Signal(_TAG_BITS)
        rows_left = Signal(self._limits.rows)
        final_row = Signal()               # rows_left == 1
        next_row = Signal(aw)
        stride = Signal(aw)
        tails = Signal(_tails_layout(self._limits))
        # The position in the current row, with what the next burst's length needs kept in
        # registers (for timing: one short compare decides a burst, no adder follows it).
        row = Signal(_burst_row_layout(config, self._limits))
        beat_addr, left1, over1, bnd1 = row.beat_addr, row.left1, row.over1, row.bnd1
        len_bits = max(max_len - 1, 1).bit_length()

        def minus_to_bnd(value):
            """``value - (bnd1 + 1)``, as one adder: ``value + ~bnd1`` at ``value``'s width. Only
            when the boundary comes first: then ``bnd1`` < ``capped1`` < ``max_len``, which
            fits ``value``'s width however narrow the limits."""
            width = len(value)
            bnd = bnd1[:width] if len(bnd1) > width else Cat(bnd1, Const(0, width - len(bnd1)))
            return (value + ~bnd)[:width]

        m.submodules.skid = skid = SkidBuffer(self.o_burst.payload.shape(),
                                               registered=config.deep_pipeline)
        wiring.connect(m, skid=skid.o, gen=wiring.flipped(self.o_burst))
        burst = skid.i.payload
        last_tag = Signal(_TAG_BITS)        # the tag of the burst taken last
        m.d.comb += [
            self.i_cmd.ready.eq(~active),
            self.tag.eq(tag),
            self.generating.eq(active),
            # Bursts queue in order: the skid register (level 2) holds the one taken last.
            self.busy_tag.eq((active & (tag == self.query_tag))
                             | (skid.o.valid & (skid.o.payload.tag == self.query_tag))
                             | ((skid.level == 2) & (last_tag == self.query_tag))),
        ]

        # The burst: min(beats left, max_len, beats to the boundary) beats.
        fits = over1 < 0                     # beats left <= max_len
        capped1 = Mux(fits, left1[:len_bits], max_len - 1)
        at_bnd = bnd1 < capped1              # the boundary comes first
        row_done = fits & ~at_bnd

        m.d.comb += [
            skid.i.valid.eq(active & ~self.abort),
            burst.addr.eq(beat_addr),
            burst.len.eq(Mux(at_bnd, bnd1, capped1)),
            burst.tag.eq(tag),
        ]
        with m.If(active & self.abort):
            m.d.sync += active.eq(0)
        with m.Elif(active & skid.i.ready):
            m.d.sync += last_tag.eq(tag)
            with m.If(row_done):
                with m.If(final_row):
                    m.d.sync += active.eq(0)
                with m.Else():
                    m.d.sync += [
                        *(row[name].eq(value) for name, value in _burst_row(
                            config, next_row, tails).items()),
                        next_row.eq(next_row + stride),
                        rows_left.eq(rows_left - 1),
                        final_row.eq(rows_left == 2),
                    ]
            with m.Elif(at_bnd):
                # On to the boundary: a new 4 KiB page.
                m.d.sync += [
                    beat_addr.eq(Cat(Const(0, page_bits), beat_addr[page_bits:] + 1)),
                    left1.eq(minus_to_bnd(left1)),
                    over1.eq(minus_to_bnd(over1)),
                    bnd1.eq((BOUNDARY >> s) - 1),
                ]
            with m.Else():
                # A full burst of max_len beats (bnd1 wraps to a whole page at the boundary).
                m.d.sync += [
                    beat_addr.eq(beat_addr + max_len * b),
                    left1.eq(left1 - max_len),
                    over1.eq(over1 - max_len),
                    bnd1.eq(bnd1 - max_len),
                ]
        with m.If(self.i_cmd.valid & self.i_cmd.ready):
            cmd = self.i_cmd.payload.cmd
            m.d.sync += [
                active.eq(1),
                row.eq(self.i_cmd.payload.row0),
                tag.eq(self.i_cmd.payload.tag),
                rows_left.eq(cmd.rows),
                final_row.eq(cmd.rows == 1),
                next_row.eq(self.i_cmd.payload.second),
                stride.eq(cmd.stride),
                tails.eq(self.i_cmd.payload.tails),
            ]
        return m


def _in_flight_fifo(width, limit):
    """A FIFO of the bursts in flight, ``limit`` at most (the room flag counts them). Its output
    is a register. It holds at least three: ``SyncFIFOBuffered(depth=2)`` refuses a write the
    cycle after a write into its empty self, with a place free (docs/verification.md,
    Findings), and the room flag, worked out from the level, would not see it."""
    return SyncFIFOBuffered(width=width, depth=max(limit, 3))


def _room_next(fifo, limit, write):
    """Whether ``fifo`` holds fewer than ``limit`` entries next cycle, from its level now and
    ``write`` (it is written this cycle), not counting a read: for a registered room flag."""
    return Mux(write, fifo.w_level < limit - 1, fifo.w_level < limit)


def _drive_address_channel(m, axi, prefix, burst, config, *, fifos):
    """Drive the AR or AW channel from a burst generator; the handshake writes each of the
    tracking ``fifos`` (a dict: FIFO to the entries it may hold), and valid waits for room in
    all of them. The room is a register (a cycle
    late about a read of a FIFO), so the handshake into the generator's skid buffer starts from
    flip-flops and AxREADY only. Valid cannot fall before the handshake: only the handshake
    fills the FIFOs."""
    fire = Signal(name=f"{prefix}_fire")
    room = Signal(name=f"{prefix}_room", init=1)
    m.d.sync += room.eq(Cat(*(_room_next(fifo, limit, fire)
                               for fifo, limit in fifos.items())).all())
    m.d.comb += [
        getattr(axi, f"{prefix}valid").eq(burst.valid & room),
        getattr(axi, f"{prefix}addr").eq(burst.payload.addr),
        getattr(axi, f"{prefix}len").eq(burst.payload.len),
        getattr(axi, f"{prefix}size").eq(_log2(config.axi_bytes)),
        getattr(axi, f"{prefix}burst").eq(BURST_INCR),
        getattr(axi, f"{prefix}id").eq(0),
        getattr(axi, f"{prefix}lock").eq(0),
        getattr(axi, f"{prefix}cache").eq(0b0011),  # normal, non-cacheable, bufferable
        getattr(axi, f"{prefix}prot").eq(0),
        burst.ready.eq(getattr(axi, f"{prefix}ready") & room),
        fire.eq(burst.valid & burst.ready),
    ]
    return fire


def _resp_error(resp):
    return Mux(resp == RESP_DECERR, DMAError.DECERR, DMAError.SLVERR)


class DMA(wiring.Component):
    """AXI4 master DMA with independent read and write engines.

    A command moves ``rows`` rows of ``row_bytes`` bytes; row ``r`` starts at byte address
    ``addr + r * stride``. Any byte alignment of ``addr`` and ``stride`` is allowed. Each row is
    cut into INCR bursts of full-width beats (AxSIZE = bus width) of at most ``max_burst_len``
    beats that never cross a 4 KiB boundary; all transactions use ID 0, so responses come back
    in order. Up to ``max_outstanding_reads`` read bursts and as many write bursts are in
    flight. Both engines start the next command's bursts while the previous command's read data
    or write responses are still on their way, so back-to-back commands keep the bus busy.

    Before anything is issued, each command is checked: ``rows == 0`` or ``row_bytes == 0`` is
    refused with ``BAD_CMD``; without ``config.unaligned_dma``, an ``addr`` or (over more than
    one row) a ``stride`` that is not a multiple of the bus width in bytes is refused with
    ``UNALIGNED`` (such a DMA has no byte shifters: rows start on lane 0); an extent
    ``[addr, addr + (rows - 1) * stride + row_bytes)`` not inside ``[window_base,
    window_limit)`` is refused with ``WINDOW``. A refused command touches no memory and still
    produces its done entry (in order).

    Read data is realigned: the first beat of every row on ``o_rd_data`` carries row byte 0 in
    byte lane 0; a row takes ``ceil(row_bytes / bus_bytes)`` beats and only its last beat may
    be partial (``bytes`` < bus bytes; the lanes above are undefined). Write data is given the
    same way on ``i_wr_data`` (lane-0 aligned, ``ceil(row_bytes / bus_bytes)`` beats per row, the
    lanes above ``row_bytes`` in the last beat ignored); the DMA shifts it to the address
    alignment and sets WSTRB for partial first and last beats.

    Errors: a read or write response other than OKAY aborts the command. No new bursts are
    issued; read data still in flight is drained and not forwarded (the beats already delivered
    stay delivered, the command's ``last`` beat never comes: the consumer must take the done
    entry as the end of the command); write bursts already issued get their remaining W beats
    with WSTRB = 0, and the rest of the command's ``i_wr_data`` beats are accepted and dropped,
    so every write command consumes exactly ``rows * ceil(row_bytes / bus_bytes)`` beats, also
    when it is refused with ``WINDOW``. The done entry carries the error code and the
    beat-aligned address of the first failing beat (reads) or burst (writes); for OK and for
    refused commands it carries the command's ``addr``. The engine then takes the next command.

    Parameters
    ----------
    config : EngineConfig
        ``axi_data_width``, ``axi_addr_width``, ``axi_id_width``, ``max_burst_len``,
        ``max_outstanding_reads``, ``unaligned_dma`` and ``deep_pipeline`` are used.
    limits : DMALimits
        Widths of ``rows`` and ``row_bytes`` (:data:`FULL_LIMITS`: 16 bits each). An engine's
        DMA takes :func:`engine_limits`: its LOADs and STOREs move a buffer's rows, no more.

    Members
    -------
    axi : Out(axi4_signature(addr_width, data_width, id_width))
        The AXI4 manager port.
    window_base, window_limit : In(axi_addr_width)
        Allowed byte range ``[window_base, window_limit)``, sampled when a command is checked.
    i_rd_cmd : In(stream.Signature(cmd_layout))
        Read commands ``{addr, rows, row_bytes, stride}`` (rows and row_bytes 16 bits).
    o_rd_data : Out(stream.Signature(StructLayout({"data", "bytes", "row_last", "last"})))
        Read data, in order and realigned. ``bytes`` counts the valid bytes of the beat (from
        lane 0), ``row_last`` marks a row's last beat, ``last`` the command's last beat.
    o_rd_done : Out(stream.Signature(StructLayout({"error": DMAError, "addr"})))
        One entry per read command, in order, after all its data has left ``o_rd_data``.
    i_wr_cmd : In(stream.Signature(cmd_layout))
        Write commands.
    i_wr_data : In(stream.Signature(StructLayout({"data"})))
        Write data, lane-0 aligned, ``ceil(row_bytes / bus_bytes)`` beats per row.
    o_wr_done : Out(stream.Signature(StructLayout({"error": DMAError, "addr"})))
        One entry per write command, after its last write response.
    rd_busy, wr_busy : Out(1)
        The engine holds a command.
    bytes_read, bytes_written : Out(32)
        Payload bytes delivered on ``o_rd_data`` / written with WSTRB set (wrapping counters).

    Latency: a command is checked in :func:`check_latency` cycles (2 for one row, one more per two
    bits of ``rows - 1``, 10 at most; one less without the deep pipeline), mostly while the engine
    still works on the command before it; the first AR/AW follows one cycle later. Read data passes
    a skid buffer (``rready`` comes from a register) and a 4-entry buffer (``o_rd_data`` is
    registered and never combinationally depends on the AXI R channel). W beats leave through a skid
    buffer: ``wvalid``, ``wdata``, ``wstrb`` and ``wlast`` come from registers and ``wready``
    reaches only the buffer's registers; ``i_wr_data.ready`` depends on the buffer's registered
    ready (each W beat takes at most one input beat, shifted through one carry register).

    Without ``config.deep_pipeline`` (a slow clock) the three skid buffers are plain
    connections: the first AR/AW comes in the cycle its burst is worked out, ``rready`` and
    ``i_wr_data.ready`` follow the consumer's ready and ``wready`` in the same cycle, and a W
    beat goes on the bus in the cycle it is made. AXI's rule holds all the same: no valid
    depends on its own channel's ready.
    """

    def __init__(self, config, limits=FULL_LIMITS):
        if not isinstance(config, EngineConfig):
            raise TypeError(f"config must be an EngineConfig, not {config!r}")
        burst_bytes = config.max_burst_len * config.axi_bytes
        if limits.rows < 1 or limits.rows > ROWS_WIDTH or limits.row_bytes > ROW_BYTES_WIDTH \
                or burst_bytes.bit_length() > limits.row_bytes:
            raise ValueError(f"limits must be 1..{ROWS_WIDTH} row bits and up to "
                             f"{ROW_BYTES_WIDTH} row-byte bits holding a burst's "
                             f"{burst_bytes} bytes, not {limits}")
        self._config = config
        self._limits = limits
        aw = config.axi_addr_width
        super().__init__({
            "axi": Out(axi4_signature(addr_width=aw, data_width=config.axi_data_width,
                                      id_width=config.axi_id_width)),
            "window_base": In(aw),
            "window_limit": In(aw),
            "i_rd_cmd": In(stream.Signature(cmd_layout(config, limits))),
            "o_rd_data": Out(stream.Signature(rd_data_layout(config))),
            "o_rd_done": Out(stream.Signature(done_layout(config))),
            "i_wr_cmd": In(stream.Signature(cmd_layout(config, limits))),
            "i_wr_data": In(stream.Signature(wr_data_layout(config))),
            "o_wr_done": Out(stream.Signature(done_layout(config))),
            "rd_busy": Out(1),
            "wr_busy": Out(1),
            "bytes_read": Out(COUNTER_WIDTH),
            "bytes_written": Out(COUNTER_WIDTH),
        })

    @property
    def config(self):
        return self._config

    def elaborate(self, platform):
        m = Module()
        self._elaborate_read(m)
        self._elaborate_write(m)
        return m

    # Read engine ---------------------------------------------------------------------------

    def _elaborate_read(self, m):
        config = self._config
        aw = config.axi_addr_width
        dw = config.axi_data_width
        b = config.axi_bytes
        s = _log2(b)
        axi = self.axi

        limits = self._limits
        m.submodules.rd_check = check = _Checker(config, limits)
        m.submodules.rd_gen = gen = _BurstGenerator(config, limits)
        # The data side's row registers (besides the counts and addresses).
        row_layout = data.StructLayout({
            "off": s,                          # byte offset of the row in its first beat
            "mem_left": limits.row_bytes + 1,  # bus beats left in the row
            "last_beat": 1,                    # mem_left == 1, kept with it: no compare
            "flush": 1,                        # one more output beat than input beats
        })

        def row_registers(addr, geometry):
            row = _row_start(config, addr, geometry)
            return {"off": row["off"], "mem_left": row["beats"], "last_beat": row["one"],
                    "flush": (row["off"] != 0) & row["fits"]}

        desc_layout = data.StructLayout({"cmd": cmd_layout(config, limits), "error": DMAError,
                                         "tag": _TAG_BITS,
                                         "geometry": _geometry_layout(config, limits),
                                         "second": aw, "row0": row_layout})
        # Commands handed from the address side to the data side (in order, with refusals),
        # with their first row worked out: the data side copies it into its row registers, and
        # works out only later rows (from registers, the adders never behind a choice between
        # the two). The output is a register, filled while the data side works on the command
        # before.
        m.submodules.rd_desc = desc = SyncFIFOBuffered(width=desc_layout.size, depth=2)
        # Tags of the bursts in flight: its size is the outstanding-read limit. Its output is a
        # register, so DRAIN's tag compare starts from a flip-flop. A tag written at an AR
        # handshake is out two cycles later, and a burst's last beat cannot be taken sooner:
        # its first comes a cycle after the handshake at the earliest, then passes the R skid.
        m.submodules.rd_flight = flight = _in_flight_fifo(_TAG_BITS, config.max_outstanding_reads)
        # The realigned beats leave through a register and then this FIFO (the byte shift and
        # the FIFO's LUT RAM are a cycle apart). A beat is let into the register only with a
        # FIFO entry promised to it (``out_credits``), so the register always empties. The FIFO
        # has no output register (the register in front of it takes that cycle): a beat is on
        # ``o_rd_data`` two cycles after it is taken from the R skid buffer.
        out_depth = 4
        m.submodules.rd_out = out = SyncFIFO(width=rd_data_layout(config).size, depth=out_depth)

        wiring.connect(m, check=wiring.flipped(self.i_rd_cmd), dma=check.i_cmd)
        m.d.comb += [
            check.window_base.eq(self.window_base),
            check.window_limit.eq(self.window_limit),
        ]

        # Address side: take a checked command when the generator is free and the data side
        # has room for its descriptor.
        next_tag = Signal(_TAG_BITS)
        checked = check.o_cmd
        take = checked.valid & desc.w_rdy & gen.i_cmd.ready
        desc_in = Signal(desc_layout)
        m.d.comb += [
            checked.ready.eq(desc.w_rdy & gen.i_cmd.ready),
            desc_in.cmd.eq(checked.payload.cmd),
            desc_in.error.eq(checked.payload.error),
            desc_in.tag.eq(next_tag),
            desc_in.geometry.eq(checked.payload.geometry),
            desc_in.second.eq(checked.payload.second),
            *(desc_in.row0[name].eq(value) for name, value in row_registers(
                checked.payload.cmd.addr, checked.payload.geometry).items()),
            desc.w_data.eq(desc_in),
            desc.w_en.eq(take),
            gen.i_cmd.valid.eq(take & (checked.payload.error == DMAError.OK)),
            gen.i_cmd.payload.cmd.eq(checked.payload.cmd),
            gen.i_cmd.payload.row0.eq(checked.payload.row0),
            gen.i_cmd.payload.second.eq(checked.payload.second),
            gen.i_cmd.payload.tails.eq(checked.payload.tails),
            gen.i_cmd.payload.tag.eq(next_tag),
        ]
        with m.If(take):
            m.d.sync += next_tag.eq(next_tag + 1)

        ar_fire = _drive_address_channel(m, axi, "ar", gen.o_burst, config,
                                     fifos={flight: config.max_outstanding_reads})
        m.d.comb += [flight.w_en.eq(ar_fire), flight.w_data.eq(gen.o_burst.payload.tag)]

        # Data side.
        # The R channel passes a skid buffer, so rready comes from a register and no path runs
        # from the AXI port through the realignment into the output FIFO.
        m.submodules.r_skid = r_skid = SkidBuffer(data.StructLayout({
            "data": dw, "resp": 2, "last": 1}), registered=config.deep_pipeline)
        m.d.comb += [
            r_skid.i.valid.eq(axi.rvalid),
            r_skid.i.payload.data.eq(axi.rdata),
            r_skid.i.payload.resp.eq(axi.rresp),
            r_skid.i.payload.last.eq(axi.rlast),
            axi.rready.eq(r_skid.i.ready),
        ]
        r_beat = r_skid.o.payload
        r_fire = r_skid.o.valid & r_skid.o.ready
        m.d.comb += flight.r_en.eq(r_fire & r_beat.last)

        cur = Signal(desc_layout)           # the command being received
        rows_left = Signal(limits.rows)
        last_row = Signal()                 # rows_left == 1, kept with it
        next_row = Signal(aw)
        row = Signal(row_layout)
        off, mem_left, last_beat, flush = row.off, row.mem_left, row.last_beat, row.flush
        out_left = Signal(limits.row_bytes + 1)
        # A beat goes to the output unless it is the first of a row that starts off lane 0
        # (its bytes wait for the next beat).
        produces = Signal()
        beat_addr = Signal(aw)
        prev = Signal(dw)
        err = Signal(DMAError)
        err_addr = Signal(aw)

        def start_row(addr, row_bytes, registers):
            """Set up the row at ``addr``, its row registers' values given."""
            return [
                *(row[name].eq(value) for name, value in registers.items()),
                produces.eq(addr[:s] == 0 if config.unaligned_dma else 1),
                out_left.eq(row_bytes),
                beat_addr.eq(Cat(Const(0, s), addr[s:])),
            ]

        def shifted(hi):
            return Cat(prev, hi).bit_select(off << 3, dw)

        out_data = Signal(rd_data_layout(config))
        out_en = Signal()                   # out_data goes into the output register
        out_reg = Signal(rd_data_layout(config))
        out_reg_valid = Signal()
        out_credits = Signal(range(out_depth + 1), init=out_depth)
        credits_next = Signal.like(out_credits)
        # Whether the FIFO has an entry for one more beat, and whether every beat let in has
        # left, as registers from the next credit count: the beat handshake and the enables
        # behind it start from flip-flops.
        out_room = Signal(init=1)
        out_idle = Signal(init=1)
        m.d.comb += credits_next.eq(out_credits - out_en + (out.r_rdy & out.r_en))
        m.d.sync += [
            out_reg.eq(out_data),
            out_reg_valid.eq(out_en),
            out_credits.eq(credits_next),
            out_room.eq(credits_next != 0),
            out_idle.eq(credits_next == out_depth),
        ]
        m.d.comb += [
            out.w_data.eq(out_reg),
            out.w_en.eq(out_reg_valid),
            out_data.bytes.eq(Mux(out_left < b, out_left, b)),
            out_data.row_last.eq(out_left <= b),
            out_data.last.eq((out_left <= b) & (rows_left == 1)),
            self.o_rd_data.valid.eq(out.r_rdy),
            self.o_rd_data.payload.eq(out.r_data),
            out.r_en.eq(self.o_rd_data.ready),
            gen.query_tag.eq(cur.tag),
            self.o_rd_done.payload.error.eq(err),
            self.o_rd_done.payload.addr.eq(Mux(err == DMAError.OK, cur.cmd.addr, err_addr)),
        ]

        # The byte counter counts a beat a cycle after it leaves (its byte count in a register).
        out_bytes = Signal.like(self.o_rd_data.payload.bytes)
        m.d.sync += [
            out_bytes.eq(Mux(self.o_rd_data.valid & self.o_rd_data.ready,
                             self.o_rd_data.payload.bytes, 0)),
            self.bytes_read.eq(self.bytes_read + out_bytes),
        ]

        # The state, a flip-flop per state (one hot), so no enable behind it decodes a state
        # register: IDLE (take a descriptor), RUN (receive beats), FLUSH (a row's last bytes
        # without a beat), DRAIN (swallow a failed command's beats), WAIT_OUT (until every
        # beat has left), DONE (hand the done entry).
        in_idle, in_run, in_flush, in_drain, in_wait, in_done = (
            Signal(name=f"rd_{name}", init=name == "idle")
            for name in ("idle", "run", "flush", "drain", "wait_out", "done"))

        def goto(here, there):
            m.d.sync += [here.eq(0), there.eq(1)]

        def row_end(here):
            with m.If(last_row):
                goto(here, in_wait)
            with m.Else():
                m.d.sync += [rows_left.eq(rows_left - 1), last_row.eq(rows_left == 2),
                             next_row.eq(next_row + cur.cmd.stride),
                             *start_row(next_row, cur.cmd.row_bytes,
                                        row_registers(next_row, cur.geometry))]
                goto(here, in_run)

        m.d.comb += [desc.r_en.eq(in_idle), self.o_rd_done.valid.eq(in_done)]
        m.d.sync += gen.abort.eq(0)         # set in DRAIN
        with m.If(in_idle & desc.r_rdy):
            new = data.View(desc_layout, desc.r_data)
            m.d.sync += [
                cur.eq(new), err.eq(new.error), err_addr.eq(new.cmd.addr),
                rows_left.eq(new.cmd.rows),
                last_row.eq(new.cmd.rows == 1),
                next_row.eq(new.second),
                *start_row(new.cmd.addr, new.cmd.row_bytes, {
                    name: new.row0[name] for name in row_layout.members}),
            ]
            m.d.sync += [in_idle.eq(0), in_run.eq(new.error == DMAError.OK),
                         in_done.eq(new.error != DMAError.OK)]

        with m.If(in_run):
            # The beat taken here, spelt out (not r_fire, which DRAIN's readiness joins).
            room = ~produces | out_room
            m.d.comb += [
                r_skid.o.ready.eq(room),
                out_data.data.eq(Mux(off == 0, r_beat.data, shifted(r_beat.data))
                                 if config.unaligned_dma else r_beat.data),
            ]
            # The row's registers move on every beat taken, a failing one too (the command then
            # ends in DRAIN, and the next one sets them afresh): the response code stays out of
            # their enables, only the output write and the state look at it.
            with m.If(r_skid.o.valid & room):
                m.d.comb += out_en.eq(produces & (r_beat.resp == RESP_OKAY))
                m.d.sync += [
                    prev.eq(r_beat.data),
                    produces.eq(1),
                    beat_addr.eq(beat_addr + b),
                    mem_left.eq(mem_left - 1),
                    last_beat.eq(mem_left == 2),
                ]
                with m.If(produces):
                    m.d.sync += out_left.eq(out_left - b)
                with m.If(last_beat & ~flush):
                    row_end(in_run)
                with m.If(r_beat.resp != RESP_OKAY):
                    m.d.sync += [err.eq(_resp_error(r_beat.resp)), err_addr.eq(beat_addr),
                                 in_run.eq(0), in_wait.eq(0), in_drain.eq(1)]
                with m.Elif(last_beat & flush):
                    goto(in_run, in_flush)

        # FLUSH (only a row that starts off lane 0 gets there).
        with m.If(in_flush if config.unaligned_dma else Const(0, 1)):
            m.d.comb += [
                out_data.data.eq(shifted(Const(0, dw))),
                out_en.eq(out_room),
            ]
            with m.If(out_room):
                row_end(in_flush)

        with m.If(in_drain):
            # Swallow the rest of this command's bursts; stop the generator if it is still on
            # this command. The next command's beats stay on the bus.
            mine = flight.r_rdy & (flight.r_data == cur.tag)
            m.d.comb += r_skid.o.ready.eq(mine)
            # The generator's abort comes from a register: a cycle late, which at most lets one
            # more burst of this command out (swallowed here like the others). Not if the
            # generator takes a new command meanwhile: this one's bursts are all out.
            m.d.sync += gen.abort.eq((gen.tag == cur.tag) & ~(gen.i_cmd.valid & gen.i_cmd.ready))
            # Done when no burst of this command can come: none left in the generator, and the
            # in-flight FIFO empty or showing a later command's burst. A tag reaches the FIFO's
            # output two cycles after its AR handshake; in between only the level counts it.
            later = flight.r_rdy & (flight.r_data != cur.tag)
            with m.If(~gen.busy_tag & (later | (flight.level == 0))):
                goto(in_drain, in_wait)

        with m.If(in_wait & out_idle):
            goto(in_wait, in_done)

        with m.If(in_done & self.o_rd_done.ready):
            goto(in_done, in_idle)

        m.d.comb += self.rd_busy.eq(check.busy | checked.valid | gen.generating
                                    | gen.o_burst.valid | desc.r_rdy | (flight.level != 0)
                                    | ~in_idle | ~out_idle)

    # Write engine --------------------------------------------------------------------------

    def _elaborate_write(self, m):
        config = self._config
        aw = config.axi_addr_width
        dw = config.axi_data_width
        b = config.axi_bytes
        s = _log2(b)
        axi = self.axi
        all_lanes = (1 << b) - 1

        limits = self._limits
        m.submodules.wr_check = check = _Checker(config, limits)
        m.submodules.wr_gen = gen = _BurstGenerator(config, limits)
        # Lengths of the bursts whose AW went out and whose W beats are still to send (read
        # from a register: the beat count is compared with it for WLAST).
        m.submodules.wr_bursts = bursts = SyncFIFOBuffered(width=8, depth=4)
        # Bursts waiting for their write response: address and command tag, read from a
        # register (a burst's response follows its last W beat, long after its AW).
        flight_layout = data.StructLayout({"addr": aw, "tag": _TAG_BITS})
        m.submodules.wr_flight = flight = _in_flight_fifo(flight_layout.size,
                                                          config.max_outstanding_reads)
        # Commands whose data has all been sent (or dropped), waiting for their last response.
        retire_layout = data.StructLayout({"addr": aw, "error": DMAError, "tag": _TAG_BITS})
        m.submodules.wr_retire = retire = SyncFIFO(width=retire_layout.size, depth=2)

        wiring.connect(m, check=wiring.flipped(self.i_wr_cmd), dma=check.i_cmd)
        m.d.comb += [
            check.window_base.eq(self.window_base),
            check.window_limit.eq(self.window_limit),
        ]

        aw_fire = _drive_address_channel(m, axi, "aw", gen.o_burst, config,
                                         fifos={bursts: bursts.depth,
                                                flight: config.max_outstanding_reads})
        flight_in = Signal(flight_layout)
        m.d.comb += [
            bursts.w_en.eq(aw_fire), bursts.w_data.eq(gen.o_burst.payload.len),
            flight_in.addr.eq(gen.o_burst.payload.addr),
            flight_in.tag.eq(gen.o_burst.payload.tag),
            flight.w_en.eq(aw_fire), flight.w_data.eq(flight_in),
        ]

        cmd = Signal(cmd_layout(config, limits))
        geometry = Signal(_geometry_layout(config, limits))
        tag = Signal(_TAG_BITS)         # the command on the W side
        next_tag = Signal(_TAG_BITS)
        abort = Signal()
        rows_left = Signal(limits.rows)
        next_row = Signal(aw)
        off = Signal(s)
        in_left = Signal(limits.row_bytes + 1)    # input beats left in the row
        mem_left = Signal(limits.row_bytes + 1)   # bus beats left in the row
        # in_left != 0, mem_left == 1 and rows_left == 1, kept in registers as the counts move:
        # no compare in front of the handshake and the row's enables.
        needs_in, mem_last, rows_last = Signal(), Signal(), Signal()
        first = Signal()
        mask_first = Signal(b)
        mask_last = Signal(b)
        remaining = Signal(limits.rows + limits.row_bytes + 1)  # input beats left in the command
        drained = Signal()                       # remaining == 0, set with it
        carry = Signal(dw)
        w_beat = Signal(8)
        refused = Signal(DMAError)

        def load_row():
            """Set up the row at ``next_row``, from registers only (the first row too: see
            ``START``)."""
            row = _row_start(config, next_row, geometry)
            return [
                off.eq(row["off"]),
                in_left.eq(geometry.in_beats),
                needs_in.eq(1),
                mem_left.eq(row["beats"]),
                mem_last.eq(row["one"]),
                first.eq(1),
                mask_first.eq((Const(all_lanes, b) << row["off"])[:b]),
                mask_last.eq((Const(all_lanes, b) >> (Const(b - 1, s) - row["last_lane"])[:s])[:b]),
                next_row.eq(next_row + cmd.stride),
            ]

        # Response side: retires commands in order. Responses are taken only for the command
        # being retired (the oldest), so its error state is the only one kept.
        b_tag = Signal(_TAG_BITS)
        b_err = Signal(DMAError)
        b_err_addr = Signal(aw)
        head = data.View(flight_layout, flight.r_data)
        b_fire = axi.bvalid & axi.bready
        m.d.comb += [
            axi.bready.eq(flight.r_rdy & (head.tag == b_tag)),
            flight.r_en.eq(b_fire),
            gen.query_tag.eq(b_tag),
        ]
        w_active = Signal()
        with m.If(b_fire & (axi.bresp != RESP_OKAY) & (b_err == DMAError.OK)):
            m.d.sync += [b_err.eq(_resp_error(axi.bresp)), b_err_addr.eq(head.addr)]
            with m.If(w_active & (tag == b_tag)):
                m.d.sync += abort.eq(1)    # stop the W side if it is still on this command
        m.d.comb += gen.abort.eq(abort)

        rec = data.View(retire_layout, retire.r_data)
        retirable = retire.r_rdy & ~(flight.r_rdy & (head.tag == b_tag)) & ~gen.busy_tag
        error = Mux(rec.error != DMAError.OK, rec.error, b_err)
        m.d.comb += [
            self.o_wr_done.valid.eq(retirable),
            self.o_wr_done.payload.error.eq(error),
            self.o_wr_done.payload.addr.eq(Mux((rec.error == DMAError.OK)
                                               & (b_err != DMAError.OK), b_err_addr, rec.addr)),
            retire.r_en.eq(self.o_wr_done.valid & self.o_wr_done.ready),
        ]
        with m.If(retire.r_en):
            m.d.sync += [b_tag.eq(b_tag + 1), b_err.eq(DMAError.OK)]

        # The W channel's skid buffer: the beats are made on its input (``w``), whose ready is a
        # register, so ``wready`` reaches no logic of the row, the counters or i_wr_data.
        m.submodules.w_skid = w_skid = SkidBuffer(data.StructLayout({
            "data": dw, "strb": b, "last": 1}), registered=config.deep_pipeline)
        w = w_skid.i
        m.d.comb += [
            axi.wvalid.eq(w_skid.o.valid),
            axi.wdata.eq(w_skid.o.payload.data),
            axi.wstrb.eq(w_skid.o.payload.strb),
            axi.wlast.eq(w_skid.o.payload.last),
            w_skid.o.ready.eq(axi.wready),
        ]
        w_fire = w.valid & w.ready
        wlast = w_beat == bursts.r_data
        retire_in = Signal(retire_layout)
        m.d.comb += [
            w.payload.last.eq(wlast),
            bursts.r_en.eq(w_fire & wlast),
            retire_in.addr.eq(cmd.addr),
            retire_in.error.eq(refused),
            retire_in.tag.eq(tag),
            retire.w_data.eq(retire_in),
        ]
        with m.If(w_fire):
            m.d.sync += w_beat.eq(Mux(wlast, 0, w_beat + 1))
        # The byte counter counts a beat two cycles after it goes on the bus: its strobes, then
        # their count, each in a register.
        strb_sent = Signal(b)
        beat_bytes = Signal(range(config.axi_bytes + 1))
        m.d.sync += [strb_sent.eq(Mux(axi.wvalid & axi.wready, axi.wstrb, 0)),
                     beat_bytes.eq(sum(strb_sent)),
                     self.bytes_written.eq(self.bytes_written + beat_bytes)]

        def take(room):
            """Take the next checked command (its retire entry needs ``room``) and start it,
            or drop its data if it was refused."""
            checked = check.o_cmd
            go = checked.valid & gen.i_cmd.ready & room
            m.d.comb += checked.ready.eq(gen.i_cmd.ready & room)
            c = checked.payload.cmd
            with m.If(go):
                m.d.sync += [
                    cmd.eq(c),
                    geometry.eq(checked.payload.geometry),
                    tag.eq(next_tag),
                    next_tag.eq(next_tag + 1),
                    refused.eq(checked.payload.error),
                    abort.eq(0),
                    rows_left.eq(c.rows),
                    rows_last.eq(c.rows == 1),
                    next_row.eq(c.addr),
                    remaining.eq(checked.payload.beats),
                    drained.eq(checked.payload.beats == 0),
                ]
                with m.If(checked.payload.error == DMAError.OK):
                    m.d.comb += [
                        gen.i_cmd.valid.eq(1),
                        gen.i_cmd.payload.cmd.eq(c),
                        gen.i_cmd.payload.row0.eq(checked.payload.row0),
                        gen.i_cmd.payload.second.eq(checked.payload.second),
                        gen.i_cmd.payload.tails.eq(checked.payload.tails),
                        gen.i_cmd.payload.tag.eq(next_tag),
                    ]
                    m.next = "START"
                with m.Else():
                    m.next = "DROP"    # a refused command's data is still consumed
            return go

        with m.FSM(name="wr_fsm") as fsm:
            with m.State("IDLE"):
                take(retire.w_rdy)

            with m.State("START"):
                # No W beat can go before its burst's length is out of ``bursts``, two cycles
                # after its AW, which goes a cycle after the command is taken: this cycle is not
                # on the data's way.
                m.d.comb += w_active.eq(1)
                m.d.sync += load_row()
                with m.If(abort):
                    m.next = "ABORT_W"
                with m.Else():
                    m.next = "RUN"

            with m.State("RUN"):
                m.d.comb += w_active.eq(1)
                strb = Signal(b)
                m.d.comb += [
                    strb.eq(Mux(first, mask_first, all_lanes) & Mux(mem_last, mask_last,
                                                                    all_lanes)),
                    w.valid.eq(bursts.r_rdy & (~needs_in | self.i_wr_data.valid)),
                    w.payload.strb.eq(strb),
                    w.payload.data.eq(Cat(carry, self.i_wr_data.payload.data)
                                      .bit_select((Const(b, s + 1) - off)[:s + 1] << 3, dw)
                                      if config.unaligned_dma else self.i_wr_data.payload.data),
                    self.i_wr_data.ready.eq(bursts.r_rdy & needs_in & w.ready),
                ]
                with m.If(w_fire):
                    m.d.sync += [first.eq(0), mem_left.eq(mem_left - 1),
                                 mem_last.eq(mem_left == 2)]
                    with m.If(needs_in):
                        m.d.sync += [
                            carry.eq(self.i_wr_data.payload.data),
                            in_left.eq(in_left - 1),
                            needs_in.eq(in_left != 1),
                            remaining.eq(remaining - 1),
                            drained.eq(remaining == 1),
                        ]
                    with m.If(mem_last):
                        with m.If(rows_last):
                            m.next = "RETIRE"
                        with m.Else():
                            m.d.sync += [rows_left.eq(rows_left - 1),
                                         rows_last.eq(rows_left == 2), *load_row()]
                with m.If(abort):
                    m.next = "ABORT_W"

            with m.State("ABORT_W"):
                # Bursts already announced on AW get their beats, with no byte enabled.
                m.d.comb += [w.valid.eq(bursts.r_rdy), w.payload.strb.eq(0)]
                with m.If((bursts.level == 0) & ~gen.generating & ~gen.o_burst.valid):
                    m.next = "DROP"

            with m.State("DROP"):
                m.d.comb += self.i_wr_data.ready.eq(~drained)
                with m.If(self.i_wr_data.valid & ~drained):
                    m.d.sync += [remaining.eq(remaining - 1), drained.eq(remaining == 1)]
                with m.If(drained):
                    m.next = "RETIRE"

            with m.State("RETIRE"):
                # Hand the command to the response side and take the next one in the same cycle
                # if there is room for its retire entry too.
                m.d.comb += retire.w_en.eq(1)
                with m.If(~take(retire.level == 0)):
                    m.next = "IDLE"

        m.d.comb += self.wr_busy.eq(check.busy | check.o_cmd.valid | ~fsm.ongoing("IDLE")
                                    | retire.r_rdy | (flight.level != 0))
