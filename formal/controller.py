"""Proof harness of :class:`mxe.hw.controller.Controller`'s dispatch: no two running commands
with overlapping buffer ranges where one writes."""

from amaranth import Cat, Signal
from amaranth.asserts import AnySeq
from amaranth.hdl import Assert, Assume
from amaranth.lib import data

from mxe.hw.accumulator import acc_addr_width
from mxe.hw.controller import Controller
from mxe.hw.exec_unit import exec_slots
from mxe.hw.isa import COMMAND_BITS, Opcode, command_layout
from mxe.hw.load_unit import LOADS_IN_FLIGHT
from mxe.hw.scratchpad import spad_addr_width
from .checkers import BlockProof


__all__ = ["ControllerProof"]


def _disjoint(lo_a, hi_a, lo_b, hi_b):
    """The row ranges ``[lo_a, hi_a)`` and ``[lo_b, hi_b)`` share no row (the harness's own
    words for it, not the gateware's ``ranges_overlap``, so a mistake there shows)."""
    return (hi_a <= lo_b) | (hi_b <= lo_a)


class ControllerProof(BlockProof):
    """The controller between a command queue that offers anything at all and three units that
    keep their documented contracts, and otherwise finish their commands whenever they like.

    The units are models in the harness, each holding the buffer ranges of the commands it
    runs, taken from the command words as they were queued (the ISA's field table):

    * the load unit runs up to :data:`~mxe.hw.load_unit.LOADS_IN_FLIGHT` LOADs and reports
      them done in order, one at a time, any cycle after it took them; it takes a LOAD when it
      likes, with room for it (it may take one in the cycle it reports its oldest done), and
      its ready falls only when it takes one; busy while it holds a LOAD;
    * the execute unit holds up to ``exec_slots(config)`` MATMULs; each finishes reading the
      scratchpad any cycle after it was taken, then finishes (its last accumulator row
      written) any cycle later, in any order; ready while a slot is free; busy while one
      is held. It answers the hazard questions as documented: a bit per slot, registered,
      about the ranges asked and the slots held a cycle before;
    * the store unit runs one STORE at a time, ready while idle, busy from the cycle after it
      took a STORE until the cycle it reports it done, any cycle it likes.

    Units report errors (any code) with their done entries, and start and soft reset pulse
    whenever they like, so refusals, stops after errors and flushes are covered.

    Parameters
    ----------
    config : EngineConfig
    dut : callable
        Builds the controller from ``config`` (:class:`Controller`, or a variant for the tests
        that show the proof can fail).
    """

    def __init__(self, config, *, dut=Controller):
        super().__init__(config, dut=dut)

    def check(self, m, dut, checking):
        config = self._config
        spad_bits = spad_addr_width(config) + 1
        acc_bits = acc_addr_width(config) + 1
        slots = exec_slots(config)

        # The queue and CTRL: anything at all. Not even the stream rule is assumed of the
        # queue: a soft reset flushes it, and the controller takes a command at the handshake.
        m.d.comb += [
            dut.i_cmd.valid.eq(AnySeq(1)),
            dut.i_cmd.payload.eq(AnySeq(COMMAND_BITS)),
            dut.win_base.eq(AnySeq(len(dut.win_base))),
            dut.start.eq(AnySeq(1)),
            dut.soft_reset.eq(AnySeq(1)),
        ]

        # The head command, as queued: the last command taken from the queue. A dispatch is of
        # the head.
        head = Signal(COMMAND_BITS)
        with m.If(dut.i_cmd.valid & dut.i_cmd.ready):
            m.d.sync += head.eq(dut.i_cmd.payload)
        load = data.View(command_layout("LOAD"), head)
        matmul = data.View(command_layout("MATMUL"), head)
        store = data.View(command_layout("STORE"), head)
        load_fire = dut.o_load.valid & dut.o_load.ready
        exec_fire = dut.o_exec.valid & dut.o_exec.ready
        store_fire = dut.o_store.valid & dut.o_store.ready

        def end(lo, length, name):
            sig = Signal(max(len(lo), len(length)) + 1, name=name)
            m.d.comb += sig.eq(lo + length)
            return sig

        load_end = end(load.spad_addr, load.rows, "h_load_end")
        act_end = end(matmul.act_addr, matmul.m, "h_act_end")
        weight_end = end(matmul.weight_addr, matmul.k, "h_weight_end")
        acc_end = end(matmul.acc_addr, matmul.m, "h_acc_end")
        store_end = end(store.acc_addr, store.rows, "h_store_end")
        load_post = load.to_bias | load.to_requant
        with m.If(checking):
            # What is dispatched passed the checks (LIMITS_DOC): its opcode, and ranges inside
            # the buffers, which the dependency compares rely on (they use an address and one
            # bit more).
            m.d.comb += [
                Assert(~load_fire | (head[:4] == Opcode.LOAD),
                       "controller: a LOAD goes to the load unit"),
                Assert(~exec_fire | (head[:4] == Opcode.MATMUL),
                       "controller: a MATMUL goes to the execute unit"),
                Assert(~store_fire | (head[:4] == Opcode.STORE),
                       "controller: a STORE goes to the store unit"),
                Assert(~load_fire | load_post | (load_end <= config.spad_depth),
                       "controller: a LOAD dispatched writes rows inside the scratchpad "
                       "(spad_addr + rows > spad_depth: BAD_ADDR)"),
                Assert(~exec_fire | ((act_end <= config.spad_depth)
                                     & (weight_end <= config.spad_depth)
                                     & (acc_end <= config.acc_depth)),
                       "controller: a MATMUL dispatched has its ranges inside the buffers "
                       "(act_addr + m, weight_addr + k > spad_depth or acc_addr + m > "
                       "acc_depth: BAD_ADDR)"),
                Assert(~store_fire | (store_end <= config.acc_depth),
                       "controller: a STORE dispatched reads rows inside the accumulator "
                       "(acc_addr + rows > acc_depth: BAD_ADDR)"),
            ]

        # The load unit: LOADs in order, oldest first.
        lif = LOADS_IN_FLIGHT
        load_entry = data.StructLayout({"lo": spad_bits, "hi": spad_bits, "bias": 1,
                                        "requant": 1})
        loads = [Signal(load_entry, name=f"m_load{i}") for i in range(lif)]
        loads_held = Signal(range(lif + 1))
        load_done = Signal()
        m.d.comb += [
            load_done.eq(AnySeq(1) & (loads_held != 0)),
            dut.i_load_done.valid.eq(load_done),
            dut.i_load_done.payload.error.eq(AnySeq(4)),
            dut.i_load_done.payload.addr.eq(AnySeq(len(dut.i_load_done.payload.addr))),
            dut.load_busy.eq(loads_held != 0),
            dut.o_load.ready.eq(AnySeq(1)),
        ]
        m.d.sync += loads_held.eq(loads_held + load_fire - load_done)
        new_load = Signal(load_entry)
        m.d.comb += [new_load.lo.eq(load.spad_addr), new_load.hi.eq(load_end),
                     new_load.bias.eq(load.to_bias), new_load.requant.eq(load.to_requant)]
        for i in range(lif):
            after = loads[i + 1] if i + 1 < lif else 0
            with m.If(load_fire & (loads_held - load_done == i)):
                m.d.sync += loads[i].eq(new_load)
            with m.Elif(load_done):
                m.d.sync += loads[i].eq(after)
        # Room for the LOAD taken (the one reported done this cycle has left); ready falls only
        # when the unit takes a LOAD.
        was_ready = Signal(reset_less=True)
        was_taken = Signal(reset_less=True)
        m.d.sync += [was_ready.eq(dut.o_load.ready), was_taken.eq(load_fire)]
        m.d.comb += [
            Assume(~dut.o_load.ready | (loads_held - load_done < lif)),
            Assume(~(~dut.o_load.ready & was_ready & ~was_taken) | ~checking),
        ]

        # The execute unit: slots, the lowest free one taken.
        slot_layout = data.StructLayout({
            "act_lo": spad_bits, "act_hi": spad_bits, "w_lo": spad_bits, "w_hi": spad_bits,
            "acc_lo": acc_bits, "acc_hi": acc_bits})
        table = [Signal(slot_layout, name=f"m_slot{j}") for j in range(slots)]
        held = Signal(slots)          # slot holds a MATMUL
        reading = Signal(slots)       # and it has not finished reading the scratchpad
        free = [~held[j] & Cat(held[:j]).all() for j in range(slots)]
        m.d.comb += [dut.o_exec.ready.eq(~held.all()), dut.exec_busy.eq(held.any())]
        spad_hits, acc_hits = [], []
        for j, slot in enumerate(table):
            with m.If(exec_fire & free[j]):
                m.d.sync += [
                    slot.act_lo.eq(matmul.act_addr), slot.act_hi.eq(act_end),
                    slot.w_lo.eq(matmul.weight_addr), slot.w_hi.eq(weight_end),
                    slot.acc_lo.eq(matmul.acc_addr), slot.acc_hi.eq(acc_end),
                    held[j].eq(1), reading[j].eq(1),
                ]
            with m.Elif(held[j] & reading[j]):
                with m.If(AnySeq(1)):
                    m.d.sync += reading[j].eq(0)
            with m.Elif(held[j]):
                with m.If(AnySeq(1)):
                    m.d.sync += held[j].eq(0)
            # "spad_conflict (a MATMUL that has not finished reading the scratchpad reads a row
            # in [q_spad_lo, q_spad_hi)) and acc_conflict (a MATMUL in flight writes an
            # accumulator row in [q_acc_lo, q_acc_hi))", registered.
            spad_hits.append(held[j] & reading[j] & ~(
                _disjoint(slot.act_lo, slot.act_hi, dut.q_spad_lo, dut.q_spad_hi)
                & _disjoint(slot.w_lo, slot.w_hi, dut.q_spad_lo, dut.q_spad_hi)))
            acc_hits.append(held[j] & ~_disjoint(slot.acc_lo, slot.acc_hi,
                                                 dut.q_acc_lo, dut.q_acc_hi))
        m.d.sync += [dut.spad_conflict.eq(Cat(*spad_hits)),
                     dut.acc_conflict.eq(Cat(*acc_hits))]

        # The store unit: one STORE.
        storing = Signal()
        st = data.StructLayout({"lo": acc_bits, "hi": acc_bits, "bias": 1, "columns": 1})
        running_store = Signal(st)
        store_done = Signal()
        m.d.comb += [
            dut.o_store.ready.eq(~storing),
            dut.store_busy.eq(storing),
            store_done.eq(storing & AnySeq(1)),
            dut.i_store_done.valid.eq(store_done),
            dut.i_store_done.payload.error.eq(AnySeq(4)),
            dut.i_store_done.payload.addr.eq(AnySeq(len(dut.i_store_done.payload.addr))),
        ]
        with m.If(store_fire):
            m.d.sync += [
                storing.eq(1),
                running_store.lo.eq(store.acc_addr), running_store.hi.eq(store_end),
                running_store.bias.eq(store.bias),
                # The per-column multipliers and shifts are read with requant under a CONFIG
                # with per_channel (the CONFIG in effect travels with the STORE).
                running_store.columns.eq(store.requant & dut.o_store.payload.quant.per_channel),
            ]
        with m.Elif(store_done):
            m.d.sync += storing.eq(0)

        # The property: no two running commands with overlapping buffer ranges where one
        # writes. Commands of one unit are left out: each unit runs its own in order.
        with m.If(checking):
            for i, ld in enumerate(loads):
                running = loads_held > i
                spad = ~ld.bias & ~ld.requant
                for j, slot in enumerate(table):
                    clash = ~(_disjoint(ld.lo, ld.hi, slot.act_lo, slot.act_hi)
                              & _disjoint(ld.lo, ld.hi, slot.w_lo, slot.w_hi))
                    m.d.comb += Assert(
                        ~(running & spad & held[j] & reading[j] & clash),
                        "controller: no running LOAD writes a scratchpad row that a MATMUL "
                        "still reads (a LOAD waits while a MATMUL that has not finished "
                        "reading the scratchpad reads a row it writes; a MATMUL waits while "
                        "a running LOAD writes a scratchpad row it reads)")
                m.d.comb += Assert(
                    ~(running & storing & ((ld.bias & running_store.bias)
                                           | (ld.requant & running_store.columns))),
                    "controller: no LOAD into the post-processor runs with a STORE that "
                    "reads what it writes (a STORE with bias or per-column requantization "
                    "waits while a LOAD into the post-processor runs)")
            for j, slot in enumerate(table):
                m.d.comb += Assert(
                    ~(held[j] & storing & ~_disjoint(slot.acc_lo, slot.acc_hi,
                                                     running_store.lo, running_store.hi)),
                    "controller: no running STORE reads an accumulator row that a MATMUL in "
                    "flight writes (a MATMUL waits while the running STORE reads an "
                    "accumulator row it writes; a STORE waits while a MATMUL in flight "
                    "writes an accumulator row it reads)")
            m.d.comb += [
                Assert(~(load_fire & load_post & storing),
                       "controller: a LOAD into the post-processor waits while a STORE runs"),
                # The store unit runs STOREs one at a time, so "no STORE running" is "every
                # STORE dispatched before has finished".
                Assert(~(load_fire & load.after_stores & storing),
                       "controller: a LOAD with after_stores waits while a STORE runs (every "
                       "STORE dispatched before it has finished)"),
                Assert(~dut.done | ~(dut.load_busy | dut.exec_busy | dut.store_busy),
                       "controller: done only with every unit idle (a FENCE waits until every "
                       "unit is idle, then raises done; after an error the running commands "
                       "finish, then done is raised)"),
            ]
