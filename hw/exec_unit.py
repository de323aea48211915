"""The execute unit: MATMUL commands, scratchpad through the systolic array into the accumulator."""

from amaranth import Cat, Const, Module, Mux, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from .accumulator import acc_addr_width, acc_row_layout
from .array import SystolicArray, array_latency, wrapping_increment
from .fetch import RowFetcher
from .pe import operand_shape
from .scratchpad import ReadPortSignature, spad_addr_width, spad_read_latency, spad_row_layout


__all__ = ["ExecUnit", "matmul_cmd_layout", "exec_slots", "ranges_overlap"]


def ranges_overlap(lo_a, hi_a, lo_b, hi_b):
    """Whether the row ranges ``[lo_a, hi_a)`` and ``[lo_b, hi_b)`` share a row."""
    return (lo_a < hi_b) & (lo_b < hi_a)


def matmul_cmd_layout(config):
    """A MATMUL as the controller dispatches it: checked, so its rows fit the accumulator
    (``m`` at most ``acc_depth``)."""
    return data.StructLayout({
        "act_addr": spad_addr_width(config),
        "weight_addr": spad_addr_width(config),
        "acc_addr": acc_addr_width(config),
        "m": range(config.acc_depth + 1),
        "k": range(config.rows + 1),
        "accumulate": 1,
    })


def exec_slots(config):
    """MATMULs the execute unit keeps in flight: ``config.exec_slots``, or by default one
    loading weights, one streaming, and enough to cover the array's latency with one-row tiles
    (at most 8: each slot costs comparators)."""
    return config.exec_slots or min(8, 3 + -(-array_latency(config) // config.rows))


class ExecUnit(wiring.Component):
    """Runs MATMUL commands through the systolic array, several in flight.

    Each accepted MATMUL takes a slot. Three pointers walk the slots in order: the weight feeder
    reads the ``rows`` weight rows of a slot (rows ``>= k`` become zero) into the array's weight
    port, the activation feeder streams its ``m`` activation rows (the last one marked), and the
    accumulator writer sends each result row to ``acc_addr + r``, overwriting or accumulating.
    A slot is freed when its last result row is written. Because the array double-buffers
    weights, the next MATMUL's weights load while the current one streams: back-to-back MATMULs
    keep the array busy every cycle when ``m >= rows``.

    The unit answers the dispatcher's hazard questions about the slots it holds:
    ``spad_conflict`` (a MATMUL that has not finished reading the scratchpad reads a row in
    ``[q_spad_lo, q_spad_hi)``) and ``acc_conflict`` (a MATMUL in flight writes an accumulator
    row in ``[q_acc_lo, q_acc_hi)``).

    Members
    -------
    i_cmd : In(stream.Signature(matmul_cmd_layout))
        A validated MATMUL; ready while a slot is free.
    read_act, read_weight : Out(ReadPortSignature)
        Scratchpad read ports.
    o_acc_write : Out(stream.Signature(..., always_ready=True))
        Accumulator row writes.
    q_spad_lo, q_spad_hi, q_acc_lo, q_acc_hi : In
        Ranges the dispatcher asks about (``hi`` exclusive).
    spad_conflict, acc_conflict : Out(exec_slots(config))
        The answers, one bit per slot (any bit set: a conflict), registered: about the ranges
        asked and the slots held a cycle before (the register sits here, beside the
        comparators, and the route to the dispatcher follows it; the dispatcher ORs the bits,
        so no OR tree sits between the comparators and the register).
    busy : Out(1)
        A MATMUL is in flight.
    mac_active : Out(1)
        An activation row enters the array this cycle (``rows * cols`` MACs of work).
    """

    def __init__(self, config):
        self._config = config
        aw, cw = spad_addr_width(config), acc_addr_width(config)
        super().__init__({
            "i_cmd": In(stream.Signature(matmul_cmd_layout(config))),
            "read_act": Out(ReadPortSignature(aw, spad_row_layout(config))),
            "read_weight": Out(ReadPortSignature(aw, spad_row_layout(config))),
            "o_acc_write": Out(stream.Signature(data.StructLayout({
                "addr": cw, "data": acc_row_layout(config), "accumulate": 1,
            }), always_ready=True)),
            "q_spad_lo": In(aw + 1), "q_spad_hi": In(aw + 1),
            "q_acc_lo": In(cw + 1), "q_acc_hi": In(cw + 1),
            "spad_conflict": Out(exec_slots(config)),
            "acc_conflict": Out(exec_slots(config)),
            "busy": Out(1),
            "mac_active": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        config = self._config
        rows, cols = config.rows, config.cols
        slots = exec_slots(config)

        m.submodules.array = array = SystolicArray(config)
        aw, cw = spad_addr_width(config), acc_addr_width(config)
        row_layout = spad_row_layout(config)
        latency = spad_read_latency(config)
        m.submodules.weight_fetch = weight_fetch = RowFetcher(aw, row_layout, tag_width=1,
                                                              latency=latency)
        m.submodules.act_fetch = act_fetch = RowFetcher(aw, row_layout, tag_width=1,
                                                        latency=latency)
        wiring.connect(m, weight_fetch=weight_fetch.read, unit=wiring.flipped(self.read_weight))
        wiring.connect(m, act_fetch=act_fetch.read, unit=wiring.flipped(self.read_act))

        table = Signal(data.ArrayLayout(matmul_cmd_layout(config), slots))
        m_width = acc_addr_width(config)
        m_last = Signal(data.ArrayLayout(m_width, slots))  # m - 1 of each slot, set on accept
        # The ends of each slot's ranges, added on accept: no adder before the hazard answers.
        # A dispatched MATMUL passed the controller's checks, so they fit an address plus one.
        spad_end, acc_end = spad_addr_width(config) + 1, acc_addr_width(config) + 1
        ends = Signal(data.ArrayLayout(data.StructLayout({
            "act": spad_end, "weight": spad_end, "acc": acc_end}), slots))
        valid = Signal(slots)        # slot holds a MATMUL
        weights_done = Signal(slots)  # its weight rows have all been requested
        acts_done = Signal(slots)     # its activation rows have all been requested
        alloc = Signal(range(slots))
        w_ptr = Signal(range(slots))
        a_ptr = Signal(range(slots))
        out_ptr = Signal(range(slots))

        # Accept a command into the next slot. The free slot takes the payload every cycle,
        # whether or not a command is offered (a slot that is not valid is read by nothing), so
        # the dispatcher's valid reaches only the slot's valid flag and the allocation pointer.
        m.d.comb += self.i_cmd.ready.eq(~valid.bit_select(alloc, 1))
        with m.If(self.i_cmd.ready):
            m.d.sync += [
                table[alloc].eq(self.i_cmd.payload),
                m_last[alloc].eq(self.i_cmd.payload.m - 1),
                ends[alloc].act.eq(self.i_cmd.payload.act_addr + self.i_cmd.payload.m),
                ends[alloc].weight.eq(self.i_cmd.payload.weight_addr + self.i_cmd.payload.k),
                ends[alloc].acc.eq(self.i_cmd.payload.acc_addr + self.i_cmd.payload.m),
            ]
        with m.If(self.i_cmd.valid & self.i_cmd.ready):
            m.d.sync += [
                valid.bit_select(alloc, 1).eq(1),
                alloc.eq(wrapping_increment(alloc, slots)),
            ]
        # A free slot's progress flags are cleared while it is free (the feeders set them only
        # on slots that hold a MATMUL).
        for i in range(slots):
            with m.If(~valid[i]):
                m.d.sync += [weights_done[i].eq(0), acts_done[i].eq(0)]

        def cursor(ptr, advance, fresh, fields, name):
            """Registers with ``fields`` (name: (shape, value of slot i)) of the slot at ``ptr``,
            so no slot multiplexer or adder sits in front of the buffer ports. They load as
            ``advance`` moves ``ptr`` on, or once the slot is filled; ``loaded`` says they
            describe it. ``fresh(i)``: slot i holds a MATMUL this cursor has not yet done (not
            an old one waiting to be freed). A loaded slot stays fresh until ``advance``: the
            cursor's own ``advance`` ends its work on the slot, and the slot is freed only
            after its results, which come after all its rows were requested. So ``loaded``
            alone says there is work, with no slot multiplexer behind it."""
            nxt = wrapping_increment(ptr, slots)
            regs = {key: Signal(shape, name=f"{name}_{key}") for key, (shape, _) in fields.items()}
            loaded = Signal(name=f"{name}_loaded")
            with m.If(advance):
                m.d.sync += [regs[key].eq(value(nxt)) for key, (_, value) in fields.items()]
                m.d.sync += [loaded.eq(fresh(nxt)), ptr.eq(nxt)]
            with m.Elif(~loaded & fresh(ptr)):
                m.d.sync += [regs[key].eq(value(ptr)) for key, (_, value) in fields.items()]
                m.d.sync += loaded.eq(1)
            return regs, loaded

        # Weight feeder: rows 0..rows-1 of the slot at w_ptr.
        w_row = Signal(range(rows))
        w_fire = weight_fetch.i_req.valid & weight_fetch.i_req.ready
        w_last = w_fire & (w_row == rows - 1)
        w_cur, w_loaded = cursor(
            w_ptr, w_last, lambda i: valid.bit_select(i, 1) & ~weights_done.bit_select(i, 1),
            {"addr": (aw, lambda i: table[i].weight_addr),
             "k": (range(rows + 1), lambda i: table[i].k)}, "w_cur")
        m.d.comb += [
            weight_fetch.i_req.valid.eq(w_loaded),
            weight_fetch.i_req.payload.addr.eq(w_cur["addr"]),
            weight_fetch.i_req.payload.tag.eq(w_row >= w_cur["k"]),  # zero this row
        ]
        with m.If(w_fire):
            m.d.sync += w_row.eq(wrapping_increment(w_row, rows))
            with m.If(w_last):
                m.d.sync += weights_done.bit_select(w_ptr, 1).eq(1)
            with m.Else():
                m.d.sync += w_cur["addr"].eq(w_cur["addr"] + 1)

        # Activation feeder: rows 0..m-1 of the slot at a_ptr.
        a_fire = act_fetch.i_req.valid & act_fetch.i_req.ready
        a_done = Signal()   # the slot's last activation row is requested
        a_cur, a_loaded = cursor(
            a_ptr, a_done, lambda i: valid.bit_select(i, 1) & ~acts_done.bit_select(i, 1),
            {"addr": (aw, lambda i: table[i].act_addr),
             "left": (m_width, lambda i: m_last[i])}, "a_cur")
        a_last = a_cur["left"] == 0
        m.d.comb += a_done.eq(a_fire & a_last)
        m.d.comb += [
            act_fetch.i_req.valid.eq(a_loaded),
            act_fetch.i_req.payload.addr.eq(a_cur["addr"]),
            act_fetch.i_req.payload.tag.eq(a_last),
        ]
        with m.If(a_fire):
            with m.If(a_last):
                m.d.sync += acts_done.bit_select(a_ptr, 1).eq(1)
            with m.Else():
                m.d.sync += [a_cur["addr"].eq(a_cur["addr"] + 1),
                             a_cur["left"].eq(a_cur["left"] - 1)]

        # Fetched rows into the array.
        operand = operand_shape(config)
        w_row_data = weight_fetch.o_row.payload.row
        m.d.comb += [
            array.i_weight.valid.eq(weight_fetch.o_row.valid),
            weight_fetch.o_row.ready.eq(array.i_weight.ready),
            array.i_act.valid.eq(act_fetch.o_row.valid),
            act_fetch.o_row.ready.eq(array.i_act.ready),
            array.i_act.payload.last.eq(act_fetch.o_row.payload.tag),
            self.mac_active.eq(array.i_act.valid & array.i_act.ready),
        ]
        for j in range(cols):
            m.d.comb += array.i_weight.payload[j].eq(
                Mux(weight_fetch.o_row.payload.tag, Const(0, operand), w_row_data[j]))
        for i in range(rows):
            m.d.comb += array.i_act.payload.data[i].eq(act_fetch.o_row.payload.row[i])

        # Accumulator writer: result rows of the slot at out_ptr.
        # The cursor is loaded long before the slot's first result row: the array takes the
        # slot's activations only after the cursors above have loaded it.
        out_done = array.o_out.valid & array.o_out.payload.last
        out_cur, _ = cursor(
            out_ptr, out_done, lambda i: valid.bit_select(i, 1),
            {"addr": (cw, lambda i: table[i].acc_addr),
             "accumulate": (1, lambda i: table[i].accumulate)}, "out_cur")
        m.d.comb += [
            self.o_acc_write.valid.eq(array.o_out.valid),
            self.o_acc_write.payload.addr.eq(out_cur["addr"]),
            self.o_acc_write.payload.data.eq(array.o_out.payload.data),
            self.o_acc_write.payload.accumulate.eq(out_cur["accumulate"]),
        ]
        with m.If(out_done):
            m.d.sync += valid.bit_select(out_ptr, 1).eq(0)
        with m.Elif(array.o_out.valid):
            m.d.sync += out_cur["addr"].eq(out_cur["addr"] + 1)

        # Hazard answers.
        spad_hits, acc_hits = [], []
        for s in range(slots):
            slot = table[s]
            reading = valid[s] & ~(weights_done[s] & acts_done[s])
            spad_hits.append(reading & (
                ranges_overlap(slot.act_addr, ends[s].act, self.q_spad_lo, self.q_spad_hi)
                | ranges_overlap(slot.weight_addr, ends[s].weight,
                                 self.q_spad_lo, self.q_spad_hi)))
            acc_hits.append(valid[s] & ranges_overlap(
                slot.acc_addr, ends[s].acc, self.q_acc_lo, self.q_acc_hi))
        m.d.sync += [
            self.spad_conflict.eq(Cat(*spad_hits)),
            self.acc_conflict.eq(Cat(*acc_hits)),
        ]
        m.d.comb += self.busy.eq(valid.any())
        return m
