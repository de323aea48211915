"""The load unit: LOAD commands, memory to scratchpad (or to the post-processor's bias row or
per-column requantization) through the DMA."""

from amaranth import Cat, Const, Module, Mux, Signal, Value
from amaranth.lib import data, stream, wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.wiring import In, Out

from .dma import DMAError, cmd_layout, engine_limits, done_layout, rd_data_layout
from .isa import ErrorCode
from .config import REQUANT_ELEM_BYTES
from .pe import acc_shape
from .postproc import column_requant_layout
from .scratchpad import spad_addr_width, spad_row_layout


__all__ = ["LoadUnit", "LOADS_IN_FLIGHT", "load_cmd_layout", "unit_done_layout",
           "dma_error_code"]


def load_cmd_layout(config):
    """A LOAD as the controller dispatches it: checked, so its rows fit the scratchpad (or are
    one or two, into the post-processor) and its elements a row."""
    return data.StructLayout({
        "addr": config.axi_addr_width,       # absolute byte address (WIN_BASE + offset)
        "stride": config.axi_addr_width,
        "rows": range(config.spad_depth + 1),
        "elems": range(config.spad_row_elems + 1),
        "spad_addr": spad_addr_width(config),
        "to_bias": 1,
        "to_requant": 1,
    })


def unit_done_layout(config):
    """What a unit reports when a command has finished: its error code and failing address."""
    return data.StructLayout({"error": ErrorCode, "addr": config.axi_addr_width})


def dma_error_code(m, dma_error):
    """The engine error code for a DMA error code."""
    code = Signal(ErrorCode)
    with m.Switch(dma_error):
        with m.Case(DMAError.OK):
            m.d.comb += code.eq(ErrorCode.OK)
        with m.Case(DMAError.SLVERR):
            m.d.comb += code.eq(ErrorCode.DMA_SLVERR)
        with m.Case(DMAError.DECERR):
            m.d.comb += code.eq(ErrorCode.DMA_DECERR)
        with m.Case(DMAError.WINDOW):
            m.d.comb += code.eq(ErrorCode.DMA_WINDOW)
        with m.Case(DMAError.UNALIGNED):
            m.d.comb += code.eq(ErrorCode.UNSUPPORTED)
        with m.Default():
            m.d.comb += code.eq(ErrorCode.BAD_DIM)
    return code


#: LOAD commands the load unit holds at once: issued to the DMA and not yet reported done. The
#: controller tracks the scratchpad range of each.
LOADS_IN_FLIGHT = 4


class LoadUnit(wiring.Component):
    """Executes LOAD commands, up to :data:`LOADS_IN_FLIGHT` at once: hands each to the DMA read
    engine as soon as it is accepted, so the next LOAD's bursts follow the current one's without
    a memory round trip in between, and turns the byte stream of each memory row into one
    scratchpad row (or the bias row, or the per-column multipliers or shifts).

    A memory row arrives lane-0 aligned in ``ceil(row_bytes / bus_bytes)`` beats; the unit
    collects a row in a row buffer and writes it in the cycle after its last beat: a
    scratchpad row with the write mask covering the first ``elems`` operands, or the first
    ``elems`` places of ``o_bias`` or ``o_requant``. Without ``config.deep_pipeline`` the row
    buffer holds only a scratchpad row: bias and requantization values go straight from each
    beat into their places (so a LOAD that fails part-way has changed those its beats carried,
    as it has written the scratchpad rows that arrived). Operands are ``elem_bytes`` wide in
    memory (the low ``input_width`` bits are kept); bias values ``acc_elem_bytes``; requant values
    :data:`~mxe.hw.config.REQUANT_ELEM_BYTES` (a shift's low 6 bits are kept). The DMA delivers
    the commands' data and done entries in order; a done entry ends its command's data (also
    after an error, when the rest of its data never comes).

    Members
    -------
    i_cmd : In(stream.Signature(load_cmd_layout))
        The next LOAD, already validated.
    o_done : Out(stream.Signature(unit_done_layout, always_ready=True))
        One transfer per command, in order, after its last scratchpad write, with the DMA's
        error.
    o_rd_cmd, i_rd_data, i_rd_done
        To and from the DMA read engine.
    o_spad_write : Out(stream.Signature(...))
        Scratchpad row writes (no back-pressure).
    o_bias : Out(ArrayLayout(acc_shape, cols))
        The bias row, for the post-processor.
    o_requant : Out(ArrayLayout(column_requant_layout, cols))
        The per-column multipliers and shifts, for the post-processor.
    busy : Out(1)
        A command is in progress.
    stall : Out(1)
        In progress and no data beat arrived this cycle (waiting for memory).
    """

    def __init__(self, config):
        self._config = config
        spad_write = data.StructLayout({
            "addr": spad_addr_width(config),
            "data": spad_row_layout(config),
            "mask": config.spad_row_elems,
        })
        super().__init__({
            "i_cmd": In(stream.Signature(load_cmd_layout(config))),
            "o_done": Out(stream.Signature(unit_done_layout(config), always_ready=True)),
            "o_rd_cmd": Out(stream.Signature(cmd_layout(config, engine_limits(config)))),
            "i_rd_data": In(stream.Signature(rd_data_layout(config))),
            "i_rd_done": In(stream.Signature(done_layout(config))),
            "o_spad_write": Out(stream.Signature(spad_write, always_ready=True)),
            "o_bias": Out(data.ArrayLayout(acc_shape(config), config.cols)),
            "o_requant": Out(data.ArrayLayout(column_requant_layout(), config.cols)),
            "busy": Out(1),
            "stall": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        config = self._config
        bus_bytes = config.axi_bytes
        eb, ab = config.elem_bytes, config.acc_elem_bytes
        rb = REQUANT_ELEM_BYTES
        beats_max = -(-max(config.spad_row_elems * eb, config.cols * max(ab, rb)) // bus_bytes)
        # The beats the row buffer holds: every kind of row's, or a scratchpad row's.
        buffer_beats = beats_max if config.deep_pipeline else \
            -(-(config.spad_row_elems * eb) // bus_bytes)

        # What the data side needs of each command issued to the DMA, in order.
        meta_layout = data.StructLayout({
            "spad_addr": spad_addr_width(config),
            "elems": range(config.spad_row_elems + 1),
            "to_bias": 1,
            "to_requant": 1,
        })
        m.submodules.meta = meta = SyncFIFOBuffered(width=meta_layout.size,
                                                    depth=LOADS_IN_FLIGHT)
        cur = data.View(meta_layout, meta.r_data)

        # Issue side: a command goes to the DMA in the cycle after it is accepted. A command
        # is taken only when the register to the DMA is empty, so ready comes from flip-flops
        # (no path from the DMA's ready to the controller); the controller dispatches every
        # other cycle at most, so this costs nothing.
        row_bytes = Signal(16)
        elems_in = self.i_cmd.payload.elems
        m.d.comb += row_bytes.eq(Mux(self.i_cmd.payload.to_bias,
                                     elems_in << (ab.bit_length() - 1),
                                     Mux(self.i_cmd.payload.to_requant,
                                         elems_in << (rb.bit_length() - 1),
                                         elems_in << (eb.bit_length() - 1))))
        accept = self.i_cmd.valid & self.i_cmd.ready
        entry = Signal(meta_layout)
        m.d.comb += [
            self.i_cmd.ready.eq(~self.o_rd_cmd.valid & meta.w_rdy),
            entry.spad_addr.eq(self.i_cmd.payload.spad_addr),
            entry.elems.eq(self.i_cmd.payload.elems),
            entry.to_bias.eq(self.i_cmd.payload.to_bias),
            entry.to_requant.eq(self.i_cmd.payload.to_requant),
            meta.w_en.eq(accept),
            meta.w_data.eq(entry),
        ]
        with m.If(self.o_rd_cmd.ready):
            m.d.sync += self.o_rd_cmd.valid.eq(0)
        with m.If(accept):
            m.d.sync += [
                self.o_rd_cmd.valid.eq(1),
                self.o_rd_cmd.payload.addr.eq(self.i_cmd.payload.addr),
                self.o_rd_cmd.payload.rows.eq(self.i_cmd.payload.rows),
                self.o_rd_cmd.payload.row_bytes.eq(row_bytes),
                self.o_rd_cmd.payload.stride.eq(self.i_cmd.payload.stride),
            ]

        # Data side: row assembly; each beat fills its slice of the row buffer.
        row = Signal(range(config.spad_depth + 1))
        beat = Signal(range(beats_max + 1))
        buffer = Signal(8 * buffer_beats * bus_bytes)
        m.d.comb += [self.i_rd_data.ready.eq(1), self.i_rd_done.ready.eq(1)]
        beat_in = self.i_rd_data.valid
        beat_data = self.i_rd_data.payload.data
        with m.If(beat_in):
            with m.Switch(beat):
                for b in range(buffer_beats):
                    with m.Case(b):
                        m.d.sync += buffer.word_select(b, 8 * bus_bytes).eq(beat_data)
            with m.If(self.i_rd_data.payload.row_last):
                m.d.sync += [beat.eq(0), row.eq(row + 1)]
            with m.Else():
                m.d.sync += beat.eq(beat + 1)

        # The row write, one cycle after the row's last beat, from registered copies (the
        # command's entry may already be gone).
        write_pending = Signal()
        write = Signal(meta_layout)
        m.d.sync += write_pending.eq(beat_in & self.i_rd_data.payload.row_last)
        # For a fast clock: the row written is a command's second (a requant LOAD's shifts).
        write_second = Signal(name="write_second") if config.deep_pipeline else None
        with m.If(beat_in & self.i_rd_data.payload.row_last):
            m.d.sync += [write.eq(cur), write.spad_addr.eq(cur.spad_addr + row)]
            if config.deep_pipeline:
                m.d.sync += write_second.eq(row == 1)
        elems = []
        for i in range(config.spad_row_elems):
            elems.append(buffer.word_select(i, 8 * eb)[:config.input_width])
        m.d.comb += [
            self.o_spad_write.payload.addr.eq(write.spad_addr),
            self.o_spad_write.payload.data.eq(Cat(*elems)),
            self.o_spad_write.payload.mask.eq(
                Cat(*(Const(i) < write.elems for i in range(config.spad_row_elems)))),
            self.o_spad_write.valid.eq(write_pending & ~write.to_bias & ~write.to_requant),
        ]

        if config.deep_pipeline:
            self._post_rows_from_buffer(m, buffer, write_pending, write, write_second)
        else:
            self._post_rows_from_beats(m, beat_in, beat_data, beat, row, cur)

        # A done entry ends the command; it is reported in the next cycle, when its last row
        # write (at most one cycle after its last beat) has happened.
        m.d.comb += meta.r_en.eq(self.i_rd_done.valid)
        m.d.sync += self.o_done.valid.eq(self.i_rd_done.valid)
        with m.If(self.i_rd_done.valid):
            m.d.sync += [
                self.o_done.payload.error.eq(dma_error_code(m, self.i_rd_done.payload.error)),
                self.o_done.payload.addr.eq(self.i_rd_done.payload.addr),
                row.eq(0),
                beat.eq(0),
            ]
        # A command's entry is queued from its acceptance until its done entry arrives; the
        # count is the queue's level, kept in a register of its own (no adder before busy).
        queued = Signal(range(LOADS_IN_FLIGHT + 1))
        m.d.sync += queued.eq(queued + accept - (meta.r_en & meta.r_rdy))
        m.d.comb += [
            self.busy.eq((queued != 0) | self.o_done.valid),
            self.stall.eq((queued != 0) & ~beat_in),
        ]
        return m

    def _post_rows_from_buffer(self, m, buffer, write_pending, write, write_second):
        """For a fast clock: the bias row or the per-column values from the row buffer, in the
        cycle after the row's last beat."""
        config = self._config
        ab, rb = config.acc_elem_bytes, REQUANT_ELEM_BYTES
        with m.If(write_pending & write.to_bias):
            for j in range(config.cols):
                with m.If(j < write.elems):
                    m.d.sync += self.o_bias[j].eq(buffer.word_select(j, 8 * ab)[:config.acc_width])
        # A requant LOAD's first row holds the multipliers, its second the shifts.
        with m.If(write_pending & write.to_requant):
            for j in range(config.cols):
                value = buffer.word_select(j, 8 * rb)
                with m.If(j < write.elems):
                    with m.If(write_second):
                        m.d.sync += self.o_requant[j].shift.eq(value)
                    with m.Else():
                        m.d.sync += self.o_requant[j].multiplier.eq(value)

    def _post_rows_from_beats(self, m, beat_in, beat_data, beat, row, cur):
        """For a slow clock: each beat's bias or requantization values straight into their
        places, for ``j < elems`` (value ``j`` is the low bits of the ``elem_bytes`` bytes from
        byte ``j * elem_bytes`` of the row); a value may span two beats."""
        config = self._config
        bus_bits = 8 * config.axi_bytes

        def from_beats(targets, elem_bytes, when):
            for j, target in enumerate(targets):
                lo, width = 8 * elem_bytes * j, len(target)
                for b in range(lo // bus_bits, (lo + width - 1) // bus_bits + 1):
                    start, stop = max(lo, b * bus_bits), min(lo + width, (b + 1) * bus_bits)
                    with m.If(when & (beat == b) & (j < cur.elems)):
                        m.d.sync += target[start - lo:stop - lo].eq(
                            beat_data[start - b * bus_bits:stop - b * bus_bits])

        from_beats([Value.cast(self.o_bias[j]) for j in range(config.cols)],
                   config.acc_elem_bytes, beat_in & cur.to_bias)
        # A requant LOAD's first row holds the multipliers, its second the shifts.
        from_beats([Value.cast(self.o_requant[j].multiplier) for j in range(config.cols)],
                   REQUANT_ELEM_BYTES, beat_in & cur.to_requant & (row == 0))
        from_beats([Value.cast(self.o_requant[j].shift) for j in range(config.cols)],
                   REQUANT_ELEM_BYTES, beat_in & cur.to_requant & (row == 1))
