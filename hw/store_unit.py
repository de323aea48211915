"""The store unit: STORE commands, accumulator through the post-processor to memory."""

from amaranth import Cat, Const, Module, Mux, Signal, Value
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from .accumulator import ACC_READ_LATENCY, acc_addr_width, acc_row_layout
from .dma import cmd_layout, engine_limits, done_layout, wr_data_layout
from .fetch import RowFetcher, fetch_depth
from .isa import ErrorCode
from .load_unit import dma_error_code, unit_done_layout
from .pe import acc_shape
from .postproc import PostProcessor, column_requant_layout, requant_layout
from .scratchpad import ReadPortSignature


__all__ = ["StoreUnit", "store_cmd_layout"]


def store_cmd_layout(config):
    """A STORE as the controller dispatches it: checked, so its rows fit the accumulator and
    its elements a row."""
    return data.StructLayout({
        "addr": config.axi_addr_width,       # absolute byte address (WIN_BASE + offset)
        "stride": config.axi_addr_width,
        "rows": range(config.acc_depth + 1),
        "elems": range(config.cols + 1),
        "acc_addr": acc_addr_width(config),
        "bias": 1,
        "relu": 1,
        "requant": 1,
        "quant": requant_layout(),
    })


class StoreUnit(wiring.Component):
    """Executes one STORE at a time: reads accumulator rows, post-processes them and writes them
    to memory through the DMA write engine.

    Rows are read ahead into a small FIFO, go through the :class:`PostProcessor` (bias, ReLU,
    requantization), are packed into bytes (1 byte per element when requantized, else
    ``acc_elem_bytes``) and leave as ``ceil(elems * bytes / bus_bytes)`` lane-0 aligned beats
    per row, so a row costs as many cycles as its beats. The unit finishes when every beat has
    been handed over and the DMA has reported the command done (with or without an error; after
    an error the DMA drops the remaining data, so the unit never hangs).

    Members
    -------
    i_cmd : In(stream.Signature(store_cmd_layout))
        A validated STORE.
    o_done : Out(stream.Signature(unit_done_layout, always_ready=True))
    read : Out(ReadPortSignature)
        Accumulator read port.
    read_free : In(1)
        With ``config.acc_read_ports`` 1 only: the accumulator serves ``read`` this cycle
        (:class:`~mxe.hw.accumulator.Accumulator`); a row is requested only then.
    bias : In(ArrayLayout(acc_shape, cols))
        Bias row (held stable by the dispatcher while a STORE runs).
    column_quant : In(ArrayLayout(column_requant_layout, cols))
        Per-column multipliers and shifts (held stable like the bias row).
    o_wr_cmd, o_wr_data, i_wr_done
        To and from the DMA write engine.
    busy : Out(1)
    stall : Out(1)
        A beat is offered and the DMA does not take it.
    """

    def __init__(self, config):
        self._config = config
        super().__init__({
            "i_cmd": In(stream.Signature(store_cmd_layout(config))),
            "o_done": Out(stream.Signature(unit_done_layout(config), always_ready=True)),
            "read": Out(ReadPortSignature(acc_addr_width(config), acc_row_layout(config))),
            **({"read_free": In(1)} if config.acc_read_ports == 1 else {}),
            "bias": In(data.ArrayLayout(acc_shape(config), config.cols)),
            "column_quant": In(data.ArrayLayout(column_requant_layout(), config.cols)),
            "o_wr_cmd": Out(stream.Signature(cmd_layout(config, engine_limits(config)))),
            "o_wr_data": Out(stream.Signature(wr_data_layout(config))),
            "i_wr_done": In(stream.Signature(done_layout(config))),
            "busy": Out(1),
            "stall": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        config = self._config
        bus_bytes = config.axi_bytes
        ab = config.acc_elem_bytes
        beats_max = -(-(config.cols * ab) // bus_bytes)

        # The accumulator's read data is registered before the FIFO for a fast clock only. The
        # post-processor takes a row postproc_passes cycles after it is offered at the soonest,
        # and the FIFO has just the entries that rate needs (in flip-flops on iCE40).
        register = config.deep_pipeline
        m.submodules.fetch = fetch = RowFetcher(
            acc_addr_width(config), acc_row_layout(config), tag_width=1,
            latency=ACC_READ_LATENCY, register=register,
            depth=fetch_depth(ACC_READ_LATENCY, register, config.postproc_passes))
        m.submodules.postproc = postproc = PostProcessor(config)
        wiring.connect(m, fetch=fetch.read, unit=wiring.flipped(self.read))

        cmd = Signal(store_cmd_layout(config))
        active = Signal()
        req_row = Signal(range(config.acc_depth + 1))
        rows_sent = Signal(range(config.acc_depth + 1))
        beats_per_row = Signal(range(beats_max + 1))
        dma_done = Signal()
        error = Signal(ErrorCode)
        error_addr = Signal(config.axi_addr_width)
        cmd_issued = Signal()

        # Command acceptance: one at a time.
        m.d.comb += self.i_cmd.ready.eq(~active)
        with m.If(self.i_cmd.valid & self.i_cmd.ready):
            payload = self.i_cmd.payload
            row_bytes = Mux(payload.requant, payload.elems, payload.elems << (ab.bit_length() - 1))
            m.d.sync += [
                cmd.eq(payload),
                active.eq(1),
                req_row.eq(0),
                rows_sent.eq(0),
                dma_done.eq(0),
                cmd_issued.eq(0),
                beats_per_row.eq((row_bytes + bus_bytes - 1) >> (bus_bytes.bit_length() - 1)),
                self.o_wr_cmd.payload.addr.eq(payload.addr),
                self.o_wr_cmd.payload.rows.eq(payload.rows),
                self.o_wr_cmd.payload.row_bytes.eq(row_bytes),
                self.o_wr_cmd.payload.stride.eq(payload.stride),
            ]

        m.d.comb += self.o_wr_cmd.valid.eq(active & ~cmd_issued)
        with m.If(self.o_wr_cmd.valid & self.o_wr_cmd.ready):
            m.d.sync += cmd_issued.eq(1)

        # Accumulator rows, read ahead (with a shared read port, in the cycles it is free).
        port_free = self.read_free if config.acc_read_ports == 1 else 1
        m.d.comb += [
            fetch.i_req.valid.eq(active & (req_row != cmd.rows) & port_free),
            fetch.i_req.payload.addr.eq(cmd.acc_addr + req_row),
            fetch.i_req.payload.tag.eq(req_row == cmd.rows - 1),
        ]
        with m.If(fetch.i_req.valid & fetch.i_req.ready):
            m.d.sync += req_row.eq(req_row + 1)

        # Post-processing.
        m.d.comb += [
            postproc.cfg.bias_en.eq(cmd.bias),
            postproc.cfg.relu.eq(cmd.relu),
            postproc.cfg.requant.eq(cmd.requant),
            postproc.cfg.quant.eq(cmd.quant),
            postproc.bias.eq(self.bias),
            postproc.column_quant.eq(self.column_quant),
            postproc.i_data.valid.eq(fetch.o_row.valid),
            postproc.i_data.payload.data.eq(fetch.o_row.payload.row),
            postproc.i_data.payload.last.eq(fetch.o_row.payload.tag),
            fetch.o_row.ready.eq(postproc.i_data.ready),
        ]

        # Packing into bytes and splitting into beats. For a fast clock the row is copied into
        # a register as it leaves the post-processor; for a slow clock the beats go straight
        # from the post-processor's output, which holds the row (stream rules) until its last
        # beat leaves.
        beat = Signal(range(beats_max))
        as_bytes = Cat(*(Value.cast(postproc.o_data.payload.data[j])[:8]
                         for j in range(config.cols)))
        as_words = Cat(*(_extend(postproc.o_data.payload.data[j], 8 * ab)
                         for j in range(config.cols)))
        beat_fire = self.o_wr_data.valid & self.o_wr_data.ready
        row_leaves = beat_fire & (beat == beats_per_row - 1)
        if config.deep_pipeline:
            packed = Signal(8 * beats_max * bus_bytes)
            have_row = Signal()
            taken, ready, valid = [have_row.eq(0)], ~have_row | row_leaves, have_row
        else:
            packed = Cat(Mux(cmd.requant, as_bytes, as_words),
                         Const(0, 8 * (beats_max * bus_bytes - config.cols * ab)))
            taken, ready, valid = [], row_leaves, postproc.o_data.valid
        m.d.comb += [
            postproc.o_data.ready.eq(ready),
            self.o_wr_data.valid.eq(valid),
            self.o_wr_data.payload.data.eq(packed.word_select(beat, 8 * bus_bytes)),
            self.stall.eq(self.o_wr_data.valid & ~self.o_wr_data.ready),
        ]
        with m.If(beat_fire):
            m.d.sync += beat.eq(beat + 1)
        with m.If(row_leaves):
            m.d.sync += [*taken, beat.eq(0), rows_sent.eq(rows_sent + 1)]
        if config.deep_pipeline:
            with m.If(postproc.o_data.valid & postproc.o_data.ready):
                m.d.sync += [
                    packed.eq(Mux(cmd.requant, as_bytes, as_words)),
                    have_row.eq(1),
                ]

        # Completion: every row handed over and the DMA done.
        m.d.comb += self.i_wr_done.ready.eq(active & ~dma_done)
        with m.If(self.i_wr_done.valid & self.i_wr_done.ready):
            m.d.sync += [
                dma_done.eq(1),
                error.eq(dma_error_code(m, self.i_wr_done.payload.error)),
                error_addr.eq(self.i_wr_done.payload.addr),
            ]
        finished = active & dma_done & (rows_sent == cmd.rows)
        m.d.comb += [
            self.o_done.valid.eq(finished),
            self.o_done.payload.error.eq(error),
            self.o_done.payload.addr.eq(error_addr),
            self.busy.eq(active),
        ]
        with m.If(finished):
            m.d.sync += active.eq(0)
        return m


def _extend(value, width):
    """``value`` sign- or zero-extended (by its shape) to ``width`` bits."""
    value = Value.cast(value)
    if len(value) >= width:
        return value[:width]
    fill = value[-1] if value.shape().signed else Const(0, 1)
    return Cat(value, fill.replicate(width - len(value)))
