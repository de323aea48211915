"""The controller: decodes and checks commands, tracks dependencies, dispatches to the units."""

from amaranth import Cat, Module, Mux, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from .accumulator import ACC_WRITE_LATENCY_MAX, acc_addr_width
from .array import signals, wrapping_increment
from .exec_unit import exec_slots, matmul_cmd_layout, ranges_overlap
from .isa import COMMAND_BITS, ErrorCode, Opcode, command_layout, unsupported
from .load_unit import LOADS_IN_FLIGHT, load_cmd_layout, unit_done_layout
from .scratchpad import spad_addr_width
from .postproc import OUTPUT_TYPES, requant_layout
from .store_unit import store_cmd_layout


# A STORE that waited on a MATMUL issues its first accumulator read 4 cycles after the execute
# unit freed the MATMUL's slot with its last row write: the execute unit's answer register,
# this unit's evaluation and go registers, the store unit's active register. The accumulator
# shows a write to reads issued acc_write_latency(config) cycles after it, so that may not exceed
# 4 (a 1x1x1 GEMM on the small preset in tests/test_engine.py reads a stale sum if it does).
assert ACC_WRITE_LATENCY_MAX <= 4, "the STORE-after-MATMUL hazard needs re-arguing"


__all__ = ["Controller"]


class Controller(wiring.Component):
    """In-order dispatch of commands to the load, execute and store units.

    Commands are taken from the queue in order while the engine runs. Each is checked
    (opcode, buffer ranges, dimensions; see :data:`mxe.hw.isa.LIMITS_DOC`; a command that needs
    a feature the configuration leaves out, :data:`mxe.hw.isa.REQUIRES`, is refused with
    ``UNSUPPORTED``) and dispatched to its unit as soon as that unit can take it and no command
    still running conflicts with it:

    * a LOAD waits while a MATMUL that has not finished reading the scratchpad reads a row it
      writes (or, for a LOAD into the post-processor's bias or per-column requantization,
      while a STORE runs); a LOAD with ``after_stores`` waits while a STORE runs: the store
      unit runs one STORE at a time and is busy until the DMA has taken its last write
      response (``o_wr_done`` comes after the last BRESP), so every STORE dispatched before
      the LOAD has then written memory, and the LOAD's reads see it (AXI orders no read
      after a write; the other checks see only the buffers);
    * a MATMUL waits while a running LOAD (the load unit runs up to
      :data:`~mxe.hw.load_unit.LOADS_IN_FLIGHT`, tracked here with their ranges) writes a
      scratchpad row it reads, or the running STORE reads an accumulator row it writes;
    * a STORE waits while a MATMUL in flight writes an accumulator row it reads (or, with bias
      or per-column requantization, while a LOAD into the post-processor runs);
    * a FENCE waits until every unit is idle, then raises ``done``.

    Since dispatch is in order, every older command is either finished or running in a unit,
    so these checks are all the dependency tracking needed; independent work (the next tile's
    loads, the previous tile's store) overlaps the array's compute.

    The first refused command or DMA error stops dispatch: the running commands finish, then
    ``done`` is raised and the engine stops running with ``error``, ``err_index`` (the command's
    index since the last soft reset) and ``err_addr`` (the failing memory address of a DMA
    error) held until a soft reset. A soft reset flushes the queue, lets the units finish what
    they run, and clears the error.

    Members
    -------
    i_cmd : In(stream.Signature(128))
        Command queue head.
    win_base : In(axi_addr_width)
        Added to the memory offsets of LOAD and STORE.
    start, soft_reset : In(1)
        One-cycle pulses from CTRL.
    o_load, o_exec, o_store : Out(stream.Signature(...))
        Dispatched commands.
    i_load_done, i_store_done : In(stream.Signature(unit_done_layout, always_ready=True))
        Unit completions with their DMA error.
    load_busy, exec_busy, store_busy : In(1)
    q_spad_lo, q_spad_hi, q_acc_lo, q_acc_hi : Out
        Ranges asked of the execute unit (the head's fields read as a LOAD's and as a STORE's,
        whatever its opcode); ``spad_conflict``, ``acc_conflict`` : In(exec_slots) answers, a
        bit per execute slot, from registers a cycle after the question (step 1 below).
    flush : Out(1)
        Empty the command queue (during a soft reset).
    cleared : Out(1)
        One-cycle pulse when a soft reset has finished (the units idle): clear the counters.
    running, busy, done : Out(1)
        ``done`` is a one-cycle pulse (FENCE reached, or stopped on an error).
    error : Out(ErrorCode)
    err_index : Out(32)
    err_addr : Out(axi_addr_width)
    stall_dep : Out(1)
        The head command waits for a unit or a dependency this cycle (its last evaluation
        found it blocked).
    """

    def __init__(self, config):
        self._config = config
        aw = config.axi_addr_width
        spad_aw, acc_aw = spad_addr_width(config), acc_addr_width(config)
        super().__init__({
            "i_cmd": In(stream.Signature(COMMAND_BITS)),
            "win_base": In(aw),
            "start": In(1),
            "soft_reset": In(1),
            "o_load": Out(stream.Signature(load_cmd_layout(config))),
            "o_exec": Out(stream.Signature(matmul_cmd_layout(config))),
            "o_store": Out(stream.Signature(store_cmd_layout(config))),
            "i_load_done": In(stream.Signature(unit_done_layout(config), always_ready=True)),
            "i_store_done": In(stream.Signature(unit_done_layout(config), always_ready=True)),
            "load_busy": In(1),
            "exec_busy": In(1),
            "store_busy": In(1),
            "q_spad_lo": Out(spad_aw + 1), "q_spad_hi": Out(spad_aw + 1),
            "q_acc_lo": Out(acc_aw + 1), "q_acc_hi": Out(acc_aw + 1),
            "spad_conflict": In(exec_slots(config)),
            "acc_conflict": In(exec_slots(config)),
            "flush": Out(1),
            "cleared": Out(1),
            "running": Out(1),
            "busy": Out(1),
            "done": Out(1),
            "error": Out(ErrorCode),
            "err_index": Out(32),
            "err_addr": Out(aw),
            "stall_dep": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        config = self._config
        # The head command sits in a register; each command takes three steps there: its checks
        # and the comparisons of its ranges with running work are registered (prepared), they
        # are combined into go / refused (evaluated), then it is dispatched. Nothing else is
        # dispatched meanwhile, so running work can only finish: a dependency found a cycle or
        # two late is still there, or the head waits one evaluation more. No path runs from the
        # comparisons to the dispatch, the queue or the units' command registers.
        head = Signal(COMMAND_BITS)
        head_valid = Signal()
        prepared = Signal()        # the registered checks and comparisons describe the head
        evaluated = Signal()       # refused and the go flags below describe the head
        refused = Signal(ErrorCode)
        # The head may go to its unit (unit ready, no conflict, checks passed), per opcode.
        go_load, go_exec, go_store, go_config, go_fence = signals(
            1, "go_load go_exec go_store go_config go_fence")
        load = data.View(command_layout("LOAD"), head)
        matmul = data.View(command_layout("MATMUL"), head)
        store = data.View(command_layout("STORE"), head)
        conf = data.View(command_layout("CONFIG"), head)
        load_post = load.to_bias | load.to_requant   # a LOAD into the post-processor
        opcode = head[:4]  # raw bits: an invalid opcode is a value too
        # The ends of the head's buffer ranges, added while the head is loaded (25 bits: the
        # sum of two fields never wraps), so no adder sits in front of the checks. Once a
        # command passes its checks, its ranges fit in buffer addresses plus one bit: the
        # dependency compares use only those bits.
        load_end, act_end, weight_end, acc_end, store_end = signals(
            25, "load_end act_end weight_end acc_end store_end")
        spad_bits, acc_bits = spad_addr_width(config) + 1, acc_addr_width(config) + 1
        nxt = self.i_cmd.payload
        nxt_load = data.View(command_layout("LOAD"), nxt)
        nxt_matmul = data.View(command_layout("MATMUL"), nxt)
        nxt_store = data.View(command_layout("STORE"), nxt)

        index = Signal(32)           # index of the head command since the last soft reset
        flushing = Signal()
        stopping = Signal()          # an error was seen: finish running work, then stop
        # CONFIG's requantization parameters, with the clamp range resolved.
        quant = Signal(requant_layout())
        # What the load unit runs: a ring of LOADs in dispatch order; the oldest finishes first.
        # One entry more than the unit holds: the unit may take a LOAD in the cycle its oldest
        # one is reported done, before that entry is freed here.
        ring = LOADS_IN_FLIGHT + 1
        loads = Signal(data.ArrayLayout(data.StructLayout({
            "lo": spad_bits, "hi": spad_bits, "post": 1, "index": 32}), ring))
        loads_valid = Signal(ring)
        load_put = Signal(range(ring))
        load_take = Signal(range(ring))
        load_index = loads[load_take].index      # the oldest running LOAD
        # A LOAD into the post-processor (bias or per-column requantization) is running.
        post_loading = Cat(*(loads_valid[i] & loads[i].post for i in range(ring))).any()
        with m.If(self.i_load_done.valid):
            m.d.sync += [loads_valid.bit_select(load_take, 1).eq(0),
                         load_take.eq(wrapping_increment(load_take, ring))]
        # What the store unit runs (valid while it is busy).
        store_index = Signal(32)
        store_lo, store_hi = signals(acc_bits, "store_lo store_hi")

        units_busy = self.load_busy | self.exec_busy | self.store_busy
        active = self.running & ~stopping & ~flushing

        # Checks of the head command, in two halves: its fields (BAD_DIM, BAD_OPCODE) as it is
        # loaded, into ``field_refuse``; its range ends (BAD_ADDR) in step 1 below.
        elems_max = config.spad_row_elems

        def field_checks(cmd):
            """The refusal a command's fields alone call for (``OK`` if none)."""
            code = Signal(ErrorCode)
            ld = data.View(command_layout("LOAD"), cmd)
            mm = data.View(command_layout("MATMUL"), cmd)
            st = data.View(command_layout("STORE"), cmd)
            cf = data.View(command_layout("CONFIG"), cmd)
            to_spad = ~ld.to_bias & ~ld.to_requant
            bad_dim = {
                Opcode.LOAD: ((ld.rows == 0) | (ld.elems == 0)
                              | (to_spad & (ld.elems > elems_max))
                              | (~to_spad & (ld.elems > config.cols))
                              | (ld.to_bias & ((ld.rows != 1) | ld.to_requant))
                              | (ld.to_requant & (ld.rows != 2))),
                Opcode.MATMUL: (mm.m == 0) | (mm.k == 0) | (mm.k > config.rows),
                Opcode.STORE: (st.rows == 0) | (st.elems == 0) | (st.elems > config.cols),
                Opcode.CONFIG: (cf.shift > 63) | (cf.clamp & ~Cat(
                    (lo <= cf.clamp_min) & (cf.clamp_min <= cf.clamp_max) & (cf.clamp_max <= hi)
                    for lo, hi in OUTPUT_TYPES.values()).any()),
                Opcode.FENCE: 0,
            }
            with m.Switch(cmd[:4]):
                for op, bad in bad_dim.items():
                    with m.Case(op):
                        m.d.comb += code.eq(Mux(bad, ErrorCode.BAD_DIM, ErrorCode.OK))
                # With the GEMM unit, GEMM_A/B/C never get here (the unit takes them).
                for name in unsupported(config):
                    with m.Case(Opcode[name]):
                        m.d.comb += code.eq(ErrorCode.UNSUPPORTED)
                with m.Default():
                    m.d.comb += code.eq(ErrorCode.BAD_OPCODE)
            return code

        field_refuse = Signal(ErrorCode)
        refuse = Signal(ErrorCode)
        bad_addr = Signal()
        with m.Switch(opcode):
            with m.Case(Opcode.LOAD):
                m.d.comb += bad_addr.eq(~load_post & (load_end > config.spad_depth))
            with m.Case(Opcode.MATMUL):
                m.d.comb += bad_addr.eq((act_end > config.spad_depth)
                                        | (weight_end > config.spad_depth)
                                        | (acc_end > config.acc_depth))
            with m.Case(Opcode.STORE):
                m.d.comb += bad_addr.eq(store_end > config.acc_depth)
        m.d.comb += refuse.eq(Mux(field_refuse != ErrorCode.OK, field_refuse,
                                  Mux(bad_addr, ErrorCode.BAD_ADDR, ErrorCode.OK)))

        # Unit payloads, built from the head.
        m.d.comb += [
            self.o_load.payload.addr.eq(self.win_base + load.mem_offset),
            self.o_load.payload.stride.eq(load.stride),
            self.o_load.payload.rows.eq(load.rows),
            self.o_load.payload.elems.eq(load.elems),
            self.o_load.payload.spad_addr.eq(load.spad_addr),
            self.o_load.payload.to_bias.eq(load.to_bias),
            self.o_load.payload.to_requant.eq(load.to_requant),
            self.o_exec.payload.act_addr.eq(matmul.act_addr),
            self.o_exec.payload.weight_addr.eq(matmul.weight_addr),
            self.o_exec.payload.acc_addr.eq(matmul.acc_addr),
            self.o_exec.payload.m.eq(matmul.m),
            self.o_exec.payload.k.eq(matmul.k),
            self.o_exec.payload.accumulate.eq(matmul.accumulate),
            self.o_store.payload.addr.eq(self.win_base + store.mem_offset),
            self.o_store.payload.stride.eq(store.stride),
            self.o_store.payload.rows.eq(store.rows),
            self.o_store.payload.elems.eq(store.elems),
            self.o_store.payload.acc_addr.eq(store.acc_addr),
            self.o_store.payload.bias.eq(store.bias),
            self.o_store.payload.relu.eq(store.relu),
            self.o_store.payload.requant.eq(store.requant),
            self.o_store.payload.quant.eq(quant),
        ]

        # Dependency questions to the execute unit, for the head command read as a LOAD and as a
        # STORE whatever it is (the answers are used only for those): straight from registers.
        m.d.comb += [
            self.q_spad_lo.eq(load.spad_addr),
            self.q_spad_hi.eq(load_end),
            self.q_acc_lo.eq(store.acc_addr),
            self.q_acc_hi.eq(store_end),
        ]

        # Step 1, every cycle: the checks and the range comparisons with running work, into
        # registers. Entries of the load ring that are not valid may hold anything (the head).
        load_hits = Signal(ring)
        store_hit = Signal()
        # The execute unit's answers come registered (its register is this step's, beside its
        # comparators), a bit per slot.
        spad_hit, acc_hit = self.spad_conflict.any(), self.acc_conflict.any()
        refuse_r = Signal(ErrorCode)
        m.d.sync += [
            load_hits.eq(Cat(*(
                ranges_overlap(matmul.act_addr[:spad_bits], act_end[:spad_bits],
                               loads[i].lo, loads[i].hi)
                | ranges_overlap(matmul.weight_addr[:spad_bits], weight_end[:spad_bits],
                                 loads[i].lo, loads[i].hi)
                for i in range(ring)))),
            store_hit.eq(ranges_overlap(matmul.acc_addr[:acc_bits], acc_end[:acc_bits],
                                        store_lo, store_hi)),
            refuse_r.eq(refuse),
        ]

        # Dependencies of the head on running work, from those registers and the units' state.
        blocked = Signal()
        with m.Switch(opcode):
            with m.Case(Opcode.LOAD):
                # A STORE dispatched the cycle before is busy by the time this LOAD is
                # evaluated (it is loaded, prepared, then evaluated: two cycles at least).
                m.d.comb += blocked.eq((spad_hit & ~load_post)
                                       | ((load_post | load.after_stores) & self.store_busy))
            with m.Case(Opcode.MATMUL):
                load_hit = (load_hits & loads_valid
                            & ~Cat(*(loads[i].post for i in range(ring)))).any()
                m.d.comb += blocked.eq(load_hit | (self.store_busy & store_hit))
            with m.Case(Opcode.STORE):
                store_post = store.bias | (store.requant & quant.per_channel)
                m.d.comb += blocked.eq(acc_hit | (store_post & post_loading))
            with m.Case(Opcode.FENCE):
                m.d.comb += blocked.eq(units_busy)

        # Step 2: evaluate. The head's unit must be ready too: a unit's ready only falls when it
        # takes a command, and only the controller gives it one, so a unit ready now is still
        # ready at dispatch, and the dispatch (and the queue's refill behind it) depends on
        # registers only. A head that waits, on running work or on its unit, is evaluated again.
        dep_wait = Signal()        # the last evaluation found the head waiting on running work
        # One of the go flags, in a register cleared with ``evaluated``: pop is one gate.
        go_any = Signal()
        with m.If(head_valid & prepared & ~evaluated & active):
            checks_pass = refuse_r == ErrorCode.OK
            may_go = ~blocked & checks_pass
            go = []
            for unit, ready, flag in ((Opcode.LOAD, self.o_load.ready, go_load),
                                      (Opcode.MATMUL, self.o_exec.ready, go_exec),
                                      (Opcode.STORE, self.o_store.ready, go_store),
                                      (Opcode.CONFIG, 1, go_config),
                                      (Opcode.FENCE, 1, go_fence)):
                go.append(may_go & (opcode == unit) & ready)
                m.d.sync += flag.eq(go[-1])
            m.d.sync += [
                evaluated.eq(1), refused.eq(refuse_r),
                dep_wait.eq(blocked & checks_pass),
                go_any.eq(Cat(*go).any()),
            ]

        # Step 3: refuse, dispatch, or evaluate again.
        pop = Signal()
        decided = head_valid & evaluated & active
        with m.If(decided):
            with m.If(refused != ErrorCode.OK):
                m.d.sync += [
                    stopping.eq(1),
                    self.error.eq(refused),
                    self.err_index.eq(index),
                    self.err_addr.eq(0),
                ]
            with m.Elif(~go_any):
                m.d.sync += evaluated.eq(0)
        m.d.comb += [
            self.o_load.valid.eq(decided & go_load),
            self.o_exec.valid.eq(decided & go_exec),
            self.o_store.valid.eq(decided & go_store),
            self.done.eq(decided & go_fence),
            pop.eq(go_any & active),
        ]
        with m.If(decided & go_config):
            type_lo, type_hi = OUTPUT_TYPES["int8" if config.signed else "uint8"]
            m.d.sync += [
                quant.round_even.eq(conf.round_even),
                quant.per_channel.eq(conf.per_channel),
                quant.multiplier.eq(conf.multiplier),
                quant.shift.eq(conf.shift),
                quant.zero_point.eq(conf.zero_point),
                quant.clamp_min.eq(Mux(conf.clamp, conf.clamp_min, type_lo)),
                quant.clamp_max.eq(Mux(conf.clamp, conf.clamp_max, type_hi)),
            ]
        # What a dispatched LOAD or STORE runs is written ahead, from the head, into the free
        # ring entry and, while the store unit is idle, the store's registers: no enable from
        # the dispatch decision fans out over them.
        for i in range(ring):
            with m.If(~loads_valid[i] & (load_put == i)):
                m.d.sync += [
                    loads[i].lo.eq(load.spad_addr),
                    loads[i].hi.eq(load_end),
                    loads[i].post.eq(load_post),
                    loads[i].index.eq(index),
                ]
        with m.If(self.o_load.valid & self.o_load.ready):
            m.d.sync += [
                loads_valid.bit_select(load_put, 1).eq(1),
                load_put.eq(wrapping_increment(load_put, ring)),
            ]
        with m.If(~self.store_busy):
            m.d.sync += [
                store_lo.eq(store.acc_addr),
                store_hi.eq(store_end),
                store_index.eq(index),
            ]

        # The queue refills the head as it leaves.
        m.d.comb += [
            self.i_cmd.ready.eq((~head_valid | pop) & ~flushing),
            self.stall_dep.eq(head_valid & active & dep_wait),
        ]
        m.d.sync += prepared.eq(head_valid)
        with m.If(pop):
            m.d.sync += [index.eq(index + 1), head_valid.eq(0), evaluated.eq(0),
                         go_any.eq(0), dep_wait.eq(0)]
        with m.If(self.i_cmd.valid & self.i_cmd.ready):
            m.d.sync += [
                head.eq(nxt), head_valid.eq(1), evaluated.eq(0), go_any.eq(0), prepared.eq(0),
                field_refuse.eq(field_checks(nxt)),
                load_end.eq(nxt_load.spad_addr + nxt_load.rows),
                act_end.eq(nxt_matmul.act_addr + nxt_matmul.m),
                weight_end.eq(nxt_matmul.weight_addr + nxt_matmul.k),
                acc_end.eq(nxt_matmul.acc_addr + nxt_matmul.m),
                store_end.eq(nxt_store.acc_addr + nxt_store.rows),
            ]

        # DMA errors reported by the units. The error of the oldest failing command wins: a
        # unit may report after a younger command was refused, or both units in one cycle. In
        # three steps, for timing: dispatch stops and the cycle's reports are kept; a cycle
        # later the older of them is picked; a cycle after that it replaces the recorded error
        # if there is none or a younger one.
        failed = []        # per unit: (failed, index, code, addr) in registers
        for name, done, index_of in (("load", self.i_load_done, load_index),
                                     ("store", self.i_store_done, store_index)):
            fail, index_r = Signal(name=f"{name}_failed"), Signal(32, name=f"{name}_fail_index")
            code_r = Signal(ErrorCode, name=f"{name}_fail_code")
            addr_r = Signal.like(self.err_addr, name=f"{name}_fail_addr")
            failing = done.valid & (done.payload.error != ErrorCode.OK)
            m.d.sync += [fail.eq(failing), index_r.eq(index_of), code_r.eq(done.payload.error),
                         addr_r.eq(done.payload.addr)]
            failed.append((fail, index_r, code_r, addr_r))
            with m.If(failing):
                m.d.sync += stopping.eq(1)       # dispatch stops at once
        (load_failed, load_i, load_c, load_a), (store_failed, store_i, store_c, store_a) = failed
        unit_error = load_failed | store_failed
        pick_store = store_failed & (~load_failed | (store_i < load_i))
        reported = Signal()
        rep_index = Signal(32)
        rep_code = Signal(ErrorCode)
        rep_addr = Signal.like(self.err_addr)
        m.d.sync += reported.eq(unit_error)
        with m.If(unit_error):
            m.d.sync += [rep_index.eq(Mux(pick_store, store_i, load_i)),
                         rep_code.eq(Mux(pick_store, store_c, load_c)),
                         rep_addr.eq(Mux(pick_store, store_a, load_a))]
        reporting = unit_error | reported     # a report on its way to the error registers
        with m.If(reported & ((self.error == ErrorCode.OK) | (rep_index < self.err_index))):
            m.d.sync += [
                self.error.eq(rep_code),
                self.err_index.eq(rep_index),
                self.err_addr.eq(rep_addr),
            ]

        # Stopping and flushing wait for the units to go idle, told from registers (the units sit
        # far away): ``units_busy`` a cycle late, and each wait a cycle old, so a unit given a
        # command in the cycle the wait began (dispatch stops a cycle later) already counts.
        units_busy_r, stopping_r, flushing_r = signals(1, "units_busy_r stopping_r flushing_r")
        m.d.sync += [units_busy_r.eq(units_busy), stopping_r.eq(stopping),
                     flushing_r.eq(flushing)]

        # Stop after an error once the units are idle and the error is recorded.
        with m.If(stopping & stopping_r & self.running & ~units_busy_r & ~reporting):
            m.d.sync += self.running.eq(0)
            m.d.comb += self.done.eq(1)

        with m.If(self.start & ~flushing & ~stopping):
            m.d.sync += self.running.eq(1)

        # Soft reset: stop, flush the queue, wait for the units, clear the error state.
        with m.If(flushing):
            m.d.sync += [head_valid.eq(0), evaluated.eq(0), go_any.eq(0), dep_wait.eq(0)]
        with m.If(self.soft_reset):
            m.d.sync += [flushing.eq(1), self.running.eq(0)]
        with m.Elif(flushing & flushing_r & ~units_busy_r):
            m.d.comb += self.cleared.eq(1)
            m.d.sync += [
                flushing.eq(0),
                stopping.eq(0),
                reported.eq(0),
                self.error.eq(ErrorCode.OK),
                self.err_index.eq(0),
                self.err_addr.eq(0),
                index.eq(0),
            ]
        m.d.comb += [
            self.flush.eq(flushing),
            self.busy.eq(flushing | units_busy | reporting
                         | (self.running & ~stopping & (head_valid | self.i_cmd.valid))),
        ]
        return m
