"""The GEMM unit: expands a GEMM descriptor into LOAD / MATMUL / STORE sub-commands.

A descriptor (``GEMM_A``, ``GEMM_B``, ``GEMM_C``, see :data:`mxe.hw.isa.FIELDS`) describes
``C = post(A @ B)`` for any ``M, K, N`` (1..65535) with memory offsets and row strides of A, B, C
and an optional bias. The unit sits between the command queue and the controller: ordinary
commands pass through; ``GEMM_A`` and ``GEMM_B`` are taken from the queue and kept; ``GEMM_C``
starts the expansion, during which the unit, not the queue, feeds the controller. The
controller checks, dispatches and counts the sub-commands like pushed ones, so its dependency
tracking and the overlap of load, compute and store apply unchanged.

Tiling (computed at start, mirrored exactly by :func:`mxe.sim.gemm_model.expand`)
-----------------------------------------------------------------------------------------------
Set-up, from ``GEMM_C`` to the first sub-command: ``kt`` and ``nt`` by a shift and a mask when
``rows`` and ``cols`` are powers of two (else 18 cycles each on a sequential divider), ``cap``
on the divider in ``log2(spad_depth) + 1`` cycles, ``mt`` and ``mc`` (18 cycles each) only if
M takes more than one chunk, then a shift-add multiplier for as many cycles as ``mc`` or ``kr``
has bits: 27 to 29 cycles on the presets with one M chunk, 64 to 69 with several (Amaranth
simulation, 33x17x9 to 512x64x64 on ``small`` and ``default``).

``kr = min(rows, K)`` weight rows per K tile, ``kt = ceil(K / kr)``; ``nc = min(cols, N)``,
``nt = ceil(N / nc)``. Loop order ``mn``: M chunks outside, N tiles inside, K tiles innermost.

* **A panels, double-buffered.** An M chunk's ``kt`` activation tiles (``mc`` rows each) stay in
  one of two panels of ``kt * mc`` scratchpad rows while all N tiles use them. The next chunk's
  panel is prefetched into the other panel during the current chunk: one tile after every
  ``nt``-th MATMUL, so prefetch loads are spread over the chunk. Each A element is read once.
* **B strips, a ring.** A B strip is ``B[0:K, n0:n0+nc]`` (``kt * kr`` scratchpad rows), loaded
  with one LOAD per output tile into a ring of two places (if they leave the A panels at least
  ``min(M, rows)`` rows a tile). Strips load one output tile ahead: the first tile's strip
  before its first MATMUL, the next tile's after the first tile's last MATMUL, and from then on
  the strip of tile ``p + 1`` right after the first MATMUL of tile ``p``, so a whole tile's
  compute hides each load. That load goes to the place of tile ``p - 1`` and waits (in the
  controller) until tile ``p - 1``'s MATMULs have read their weights, while tile ``p``'s first
  MATMUL streams; a third place would only shrink the A panels. With one N tile (``nt = 1``)
  the strip is all of B: it is loaded once and stays. If no two strips fit, B goes by single
  ``kr x nc`` tiles in a ring of eight, one LOAD per MATMUL, issued up to :data:`TILES_AHEAD`
  MATMULs ahead (as many LOADs as the load unit runs at once). B is read once per M chunk
  (``mt * K * N`` elements), or once in all when ``nt = 1``.
* **Chunk size.** ``cap = min(M, acc_depth / 2, (spad_depth - B rows) // (2 * kt))``, then
  ``mt = ceil(M / cap)`` and ``mc = ceil(M / mt)`` (balanced chunks).
* **Accumulator, two places.** Output tile ``p`` accumulates in rows ``(p % 2) * mc``; the first
  K tile overwrites, the others add. Its STORE is issued right after the next tile's first MATMUL
  (and that MATMUL's strip load), so it waits for the tile's last results while the array
  keeps computing, and drains while the next tile computes.
* **Bias and per-column requantization.** With a bias and ``nt > 1``, the bias row is reloaded
  before every output tile, after the previous tile's STORE (the controller holds a LOAD into
  the post-processor while a STORE runs); with ``per_channel``, so are the tile's multipliers
  and shifts (one LOAD of two rows, after the bias's).

* **Chaining** (``GEMM_A.after_stores``: A may be an earlier descriptor's C, still being
  stored). The first A LOAD carries ``LOAD.after_stores``: the controller dispatches it only
  when every STORE before it has its last write response. Dispatch is in order, so every later
  command, every other A LOAD among them, comes after it: one LOAD with the bit suffices (on the
  prefetches it would also wait for this descriptor's own STOREs). With whole strips the first
  strip's LOAD goes first (state ``EARLY_B``), ahead of the bias LOADs, which wait for a running
  STORE anyway, so the weights stream while the previous descriptor's STOREs drain. Otherwise
  the stream is the one without the bit.

Memory traffic: reads ``M*K + mt*K*N`` operand elements (``M*K + K*N`` when ``nt = 1``; plus
``mt*N`` or ``N`` bias values), writes ``M*N`` outputs once. The minimum is ``mt = 1``, reached
when A fits in the panels.

A descriptor is refused at ``GEMM_C`` by expanding to one command the controller refuses:
a MATMUL with ``m = 0`` for a zero dimension (BAD_DIM); a MATMUL past the scratchpad's end when
neither way of keeping B leaves room (BAD_ADDR): two strips need their ``2 * kt * kr`` rows
below ``spad_depth`` and a chunk ``cap`` (above) of at least ``min(M, rows)``, single tiles
``8 * kr`` rows and a chunk of at least one row (:data:`mxe.hw.isa.LIMITS_DOC`).

Members
-------
i_cmd : In(stream.Signature(128))
    The command queue's head.
o_cmd : Out(stream.Signature(128))
    To the controller: the head, or the sub-commands while a GEMM expands. Valid and payload
    come from registers, and a command is put there whenever the register is free or being
    taken: no adder of the expansion reaches the consumer, and a command can leave every cycle.
enable : In(1)
    The controller runs and has no error: only then are GEMM commands taken from the queue.
busy : Out(1)
    A GEMM is being set up or expanded, or a command waits on ``o_cmd``.
"""

from amaranth import Const, Module, Mux, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from .array import signals
from .config import REQUANT_ELEM_BYTES
from .isa import COMMAND_BITS, Opcode, command_layout
from .load_unit import LOADS_IN_FLIGHT
from .seqmath import Divider, division_states, pow2_tiles


__all__ = ["GemmUnit", "STRIP_CHOICES", "TILES_AHEAD"]

#: Row counts of the schedule before it is known to fit (``kt * kr``, the rows B takes; a
#: scratchpad holds at most 2**20 rows).
_ROW_WIDTH = 24
#: The divider's width: ``K + kr - 1`` (the widest numerator, with ``M + cap - 1`` and
#: ``M + mt - 1``) needs 17 bits, the chunk cap's ``spad_depth - rows_b`` log2(spad_depth).
_DIV_BITS = 17

#: How B lives in the scratchpad, tried in order: ``(places, whole)``. ``whole``: a place holds a
#: strip of all K rows of one N tile (one LOAD per output tile); otherwise one ``kr x nc`` tile
#: (one LOAD per MATMUL). Two strips are taken if the A panels can still hold ``min(M, rows)``
#: rows a tile; single tiles (eight places) when no two strips fit.
STRIP_CHOICES = ((2, True), (8, False))
#: With single B tiles, LOADs run this many MATMULs ahead: as many as the load unit holds.
TILES_AHEAD = LOADS_IN_FLIGHT


def _min(a, b):
    return Mux(a < b, a, b)


class GemmUnit(wiring.Component):
    __doc__ = __doc__.split("Members\n-------")[0].split("\n\n", 1)[0] + """

    See the module documentation for the tiling, its memory traffic and the refusals.

    Members
    -------""" + __doc__.split("Members\n-------")[1]

    i_cmd: In(stream.Signature(COMMAND_BITS))
    o_cmd: Out(stream.Signature(COMMAND_BITS))
    enable: In(1)
    busy: Out(1)

    def __init__(self, config):
        self._config = config
        super().__init__()

    def elaborate(self, platform):
        m = Module()
        c = self._config
        spad_bits = (c.spad_depth - 1).bit_length()      # spad_depth - rows_b fits
        # Register widths from the configuration, no wider than their values get once the
        # schedule fits: a scratchpad row of a running GEMM, or a count of them, is below
        # spad_depth (one bit more: a pointer moved past its last use never wraps onto a row
        # in use); a K tile's rows at most ``rows``, an N tile's columns at most ``cols``, an
        # M chunk's rows at most ``acc_depth / 2``.
        row_bits = spad_bits + 1
        k_bits, n_bits = c.rows.bit_length(), c.cols.bit_length()
        m_bits = (c.acc_depth // 2).bit_length()
        m.submodules.div = div = Divider(max(_DIV_BITS, spad_bits))
        # Power-of-two array sides (the presets') tile K and N with a shift and a mask; other
        # sides take the divider.
        rows_pow2 = c.rows & (c.rows - 1) == 0
        cols_pow2 = c.cols & (c.cols - 1) == 0
        eb_shift = c.elem_bytes.bit_length() - 1
        ab_shift = c.acc_elem_bytes.bit_length() - 1
        rb_shift = REQUANT_ELEM_BYTES.bit_length() - 1

        head = self.i_cmd.payload
        opcode = head[:4]
        ga = data.View(command_layout("GEMM_A"), head)
        gb = data.View(command_layout("GEMM_B"), head)
        gc = data.View(command_layout("GEMM_C"), head)

        # Descriptor registers.
        d_bias, d_relu, d_requant, d_pc = signals(1, "d_bias d_relu d_requant d_pc")
        d_after = Signal()                 # GEMM_A.after_stores: chained after earlier STOREs
        b_early = Signal()                 # the first B strip went out ahead (EARLY_B)
        M, K, N = signals(16, "M K N")
        bias_off, a_off, a_stride, b_off = signals(32, "bias_off a_off a_stride b_off")
        rq_base = Signal(32)     # the per-column multipliers: after the bias values, if any
        rq_stride = N << rb_shift                  # from a multiplier to its shift
        b_stride, c_off, c_stride = signals(32, "b_stride c_off c_stride")

        # Schedule.
        kt, nt, mt = signals(16, "kt nt mt")
        kr, nc, mc = (Signal(k_bits, name="kr"), Signal(n_bits, name="nc"),
                      Signal(m_bits, name="mc"))
        nt1, mt1 = signals(16, "nt1 mt1")  # nt - 1, mt - 1: no subtractor
        # kt - 2, nt - 2, mt - 2: ki + 1 == kt - 1 is ki == kt2, no adder
        kt2, nt2, mt2 = signals(16, "kt2 nt2 mt2")
        kt_one, nt_one, mt_one = signals(1, "kt_one nt_one mt_one")   # kt == 1, nt == 1, mt == 1
        # The last K tile's rows and the last N tile's columns (K - (kt - 1) * kr, N - nt1 * nc):
        # every other tile is whole (kr, nc), so a tile's size is a choice, not a subtraction.
        k_tail, n_tail = Signal(k_bits, name="k_tail"), Signal(n_bits, name="n_tail")
        ahead = Signal()                   # strips load one tile ahead (whole and nt != 1)
        cap = Signal(m_bits)
        one_chunk = Signal()               # cap == M, set with cap: no compare in front of MUL
        m_cap = Signal(m_bits)             # min(M, acc_depth / 2): the bound on cap known early
        m_rows = Signal(k_bits)            # min(M, rows): the smallest cap worth a strip
        krk = Signal(_ROW_WIDTH)           # kt * kr
        places = max(n for n, _ in STRIP_CHOICES)
        strips = Signal(range(places + 1))
        whole = Signal()
        strip_rows = Signal(row_bits)      # read only once the schedule fits
        panel = Signal(row_bits)           # kt * mc
        a_step, c_step, bk_step = signals(32, "a_step c_step bk_step")
        tiles = Signal()                   # B by single tiles (no two strips fit)
        rows_b = Signal(_ROW_WIDTH + places.bit_length())   # scratchpad rows B takes
        mc_sh, kr_sh = Signal(m_bits, name="mc_sh"), Signal(k_bits, name="kr_sh")
        kt_sh = Signal(row_bits)           # added to panel only while kt * mc's bits last
        as_sh, cs_sh, bs_sh = signals(32, "as_sh cs_sh bs_sh")

        # Loop state.
        mi, ni, ki = signals(16, "mi ni ki")
        # ki == 0 and ki == kt - 1, set with ki: no compare in front of the state register.
        ki_zero, ki_last = signals(1, "ki_zero ki_last")
        n0 = Signal(17)
        # The prefetch's rows left in A from its M chunk and columns left from its K tile.
        pf_mrem, pf_krem = signals(17, "pf_mrem pf_krem")
        a_moff, c_moff = signals(32, "a_moff c_moff")
        # Offsets and rows the commands carry, kept in registers as the loop moves so none goes
        # out through an adder (k0 is the K tile's first row, n0 the N tile's first column):
        # a_koff = a_moff + k0 elements (this A tile), a_next = a_moff + a_step (the next M
        # chunk), pf_off = a_next + the prefetch's k0 elements, bias_n = bias_off + n0 values,
        # b_n = b_off + n0 elements, w_row = cur_strip + k0 (this B tile's rows in its strip).
        a_koff, a_next, pf_off, bias_n, b_n = signals(32, "a_koff a_next pf_off bias_n b_n")
        rq_n = Signal(32)         # rq_base + n0 multipliers
        bias_sent = Signal()      # this tile's bias LOAD is out; its requant LOAD is next
        w_row = Signal(row_bits)
        panel_sel, acc_sel = signals(1, "panel_sel acc_sel")
        a_row = Signal(row_bits)
        b_slot = Signal(range(places))
        b_next = Signal(row_bits)          # the ring place the next B load goes to
        cur_strip = Signal(row_bits)
        next_strip = Signal(row_bits)      # the strip loaded ahead for the next output tile
        # Single B tiles: the load cursor runs up to TILES_AHEAD MATMULs ahead of the MATMULs.
        lmi, lni, lki = signals(16, "lmi lni lki")
        # lki == kt - 1, lni == nt1, lmi == mt1
        lk_last, ln_last, lm_last = signals(1, "lk_last ln_last lm_last")
        ln_base = Signal(32)               # b_off + the load cursor's n0 elements
        ln_next = Signal(32)               # ln_base + nc elements, set with it
        lb_off = Signal(32)                # that plus its K tile: the next tile's offset
        ldone = Signal()
        tiles_ahead = Signal(range(TILES_AHEAD + 1))
        m_slot = Signal(range(places))
        m_place = Signal(row_bits)         # the ring place of the next MATMUL's B tile
        pf_cnt = Signal(16)
        pf_last = Signal()                 # pf_cnt == nt1, set with pf_cnt
        pf_row = Signal(row_bits)
        pf_hit = Signal()
        first = Signal()
        pending = Signal()
        pend_acc, pend_m = Signal(m_bits, name="pend_acc"), Signal(m_bits, name="pend_m")
        pend_n = Signal(n_bits, name="pend_n")
        pend_off = Signal(32)

        rows_c, cols_c = c.rows, c.cols
        # The sizes the commands carry, in registers: this tile's (cur_*), the load cursor's
        # (l_*) and the prefetch's (pf_*). A K or N tile is whole but the last (``*_tail``),
        # chosen with the index flag that says so; an M chunk is min(mc, rows left), the
        # prefetch's a cycle behind pf_mrem (read only in PREFETCH, at least two cycles after
        # ADVANCE or INIT change it) and passed on to cur_m when the loop reaches that chunk.
        cur_m, pf_m = signals(m_bits, "cur_m pf_m")
        cur_k, pf_k, l_k = signals(k_bits, "cur_k pf_k l_k")
        cur_n, l_n = signals(n_bits, "cur_n l_n")
        m.d.sync += [pf_m.eq(_min(mc, pf_mrem)), pf_k.eq(_min(kr, pf_krem))]

        panel_base = Mux(panel_sel, panel, 0)
        other_base = Mux(panel_sel, 0, panel)
        acc_base = Mux(acc_sel, mc, 0)
        b_base = panel << 1
        ob_shift = Mux(d_requant, 0, ab_shift)
        # Loop-position flags and the strip loaded ahead, in registers a cycle behind mi, ni
        # and n0 (for timing): only INIT and ADVANCE change those, and PAIR always comes
        # between them and the first state that reads these.
        first_tile, n_last, m_last = signals(1, "first_tile n_last m_last")
        last_tile = m_last & n_last
        n_bytes = nc << eb_shift           # one N tile of B's elements, in bytes
        ahead_off, ahead_n = Signal(32), Signal(n_bits)
        m.d.sync += [
            first_tile.eq((mi == 0) & (ni == 0)),
            n_last.eq(ni == nt1),
            m_last.eq(mi == mt1),
            ahead_off.eq(Mux(n_last, b_off, b_n + n_bytes)),
            ahead_n.eq(Mux(ni == nt2, n_tail, nc)),       # the next tile's columns
        ]
        # ki == kt2 (the next K tile is the last), a cycle behind ki: only INIT and ADVANCE
        # change ki, and ADVANCE, which reads this, comes at least two cycles after either.
        ki_pen = Signal()
        m.d.sync += ki_pen.eq(ki == kt2)

        # The command put in the output register this cycle.
        out = Signal(COMMAND_BITS)
        out_valid = Signal()
        load = data.View(command_layout("LOAD"), out)
        mm = data.View(command_layout("MATMUL"), out)
        st = data.View(command_layout("STORE"), out)

        def emit_load(spad, offset, rows, elems, stride, to_bias=0, to_requant=0,
                      after_stores=0):
            m.d.comb += [
                load.opcode.eq(Opcode.LOAD), load.to_bias.eq(to_bias),
                load.to_requant.eq(to_requant), load.after_stores.eq(after_stores),
                load.spad_addr.eq(spad),
                load.mem_offset.eq(offset), load.rows.eq(rows), load.elems.eq(elems),
                load.stride.eq(stride), out_valid.eq(1),
            ]

        def emit_store():
            m.d.comb += [
                st.opcode.eq(Opcode.STORE), st.bias.eq(d_bias), st.relu.eq(d_relu),
                st.requant.eq(d_requant), st.acc_addr.eq(pend_acc), st.mem_offset.eq(pend_off),
                st.rows.eq(pend_m), st.elems.eq(pend_n), st.stride.eq(c_stride),
                out_valid.eq(1),
            ]

        def emit_matmul(act, weight, rows, k, acc, accumulate):
            m.d.comb += [
                mm.opcode.eq(Opcode.MATMUL), mm.accumulate.eq(accumulate), mm.act_addr.eq(act),
                mm.weight_addr.eq(weight), mm.m.eq(rows), mm.k.eq(k), mm.acc_addr.eq(acc),
                out_valid.eq(1),
            ]

        # The output register takes a command while it is free or being taken; with out_valid,
        # ``sent`` is that the command is taken this cycle.
        sent = ~self.o_cmd.valid | self.o_cmd.ready
        with m.If(sent):
            m.d.sync += [self.o_cmd.payload.eq(out), self.o_cmd.valid.eq(out_valid)]

        def after_matmul(state, prefetch=pf_hit & ~m_last):
            """Go from ``state`` to the next of the steps that follow a MATMUL and are due."""
            steps = [("STEP_M", None),
                     ("AHEAD", ahead & ~last_tile & Mux(first_tile, ki_last, ki_zero)),
                     ("STEP_S", ki_zero & pending),
                     ("PREFETCH", prefetch)]
            names = [name for name, _ in steps]
            chosen = False
            for name, due in steps[names.index(state) + 1:]:
                with (m.Elif if chosen else m.If)(due):
                    m.next = name
                chosen = True
            with m.Else():
                m.next = "ADVANCE"

        def ceil_divide(state, num, den, then, results):
            """States ``state`` and ``state_WAIT``: ``ceil(num / den)`` on the divider (``num + den
            - 1`` below 2**17: ``_DIV_BITS``), then the assignments ``results(quotient,
            remainder)`` and on to ``then``."""
            division_states(m, div, state, num + den - 1, den, _DIV_BITS, then, results)

        def chunks(q):
            return [mt.eq(q), mt1.eq(q - 1), mt2.eq(q - 2), mt_one.eq(q == 1)]

        def start_mul(mc_value):
            return [mc.eq(mc_value), panel.eq(0), a_step.eq(0), c_step.eq(0), bk_step.eq(0),
                    mc_sh.eq(mc_value), kr_sh.eq(kr), kt_sh.eq(kt), as_sh.eq(a_stride),
                    cs_sh.eq(c_stride), bs_sh.eq(b_stride)]

        def advance_ring():
            with m.If(b_slot == strips - 1):
                m.d.sync += [b_slot.eq(0), b_next.eq(b_base)]
            with m.Else():
                m.d.sync += [b_slot.eq(b_slot + 1), b_next.eq(b_next + strip_rows)]

        def load_first_strip(then, early=0):
            """The first output tile's strip of B (n0 = 0, k0 = 0) into the next ring place;
            ``early``: ahead of the bias and A LOADs (``EARLY_B``), so not again in STEP_B."""
            emit_load(b_next, b_off, K, cur_n, b_stride)
            with m.If(sent):
                m.d.sync += [cur_strip.eq(b_next), w_row.eq(b_next), b_early.eq(early)]
                advance_ring()
                m.next = then

        is_gemm = (opcode == Opcode.GEMM_A) | (opcode == Opcode.GEMM_B) | \
            (opcode == Opcode.GEMM_C)

        with m.FSM() as fsm:
            with m.State("IDLE"):
                m.d.comb += [
                    out_valid.eq(self.i_cmd.valid & ~is_gemm),
                    out.eq(head),
                    self.i_cmd.ready.eq(Mux(is_gemm, self.enable, sent)),
                ]
                with m.If(self.i_cmd.valid & is_gemm & self.enable):
                    with m.Switch(opcode):
                        with m.Case(Opcode.GEMM_A):
                            m.d.sync += [d_bias.eq(ga.bias), d_relu.eq(ga.relu),
                                         d_requant.eq(ga.requant), d_pc.eq(ga.per_channel),
                                         d_after.eq(ga.after_stores),
                                         M.eq(ga.m), K.eq(ga.k), N.eq(ga.n),
                                         bias_off.eq(ga.channel_offset)]
                        with m.Case(Opcode.GEMM_B):
                            m.d.sync += [a_off.eq(gb.a_offset), a_stride.eq(gb.a_stride),
                                         b_off.eq(gb.b_offset)]
                        with m.Case(Opcode.GEMM_C):
                            m.d.sync += [b_stride.eq(gc.b_stride), c_off.eq(gc.c_offset),
                                         c_stride.eq(gc.c_stride)]
                            m.next = "DIMS"
            with m.State("DIMS"):
                # The descriptor is in; its dimensions checked from registers.
                with m.If((M == 0) | (K == 0) | (N == 0)):
                    m.next = "BAD_DIM"
                with m.Else():
                    m.d.sync += [kr.eq(_min(rows_c, K)), nc.eq(_min(cols_c, N)),
                                 m_cap.eq(_min(M, c.acc_depth // 2)), m_rows.eq(_min(M, rows_c)),
                                 rq_base.eq(bias_off + Mux(d_bias, N << ab_shift, 0))]
                    if rows_pow2:
                        m.d.sync += pow2_tiles(K, rows_c, kt, k_tail)
                    if cols_pow2:
                        m.d.sync += pow2_tiles(N, cols_c, nt, n_tail)
                    m.next = "KT" if not rows_pow2 else "NT" if not cols_pow2 else "SHAPE"
            if not rows_pow2:
                ceil_divide("KT", K, kr, "NT" if not cols_pow2 else "SHAPE",
                            lambda q, r: [kt.eq(q), k_tail.eq(r + 1)])
            if not cols_pow2:
                ceil_divide("NT", N, nc, "SHAPE", lambda q, r: [nt.eq(q), n_tail.eq(r + 1)])
            with m.State("SHAPE"):
                # What the loop needs of kt and nt, in registers (no adder behind a compare).
                m.d.sync += [kt2.eq(kt - 2), kt_one.eq(kt == 1), krk.eq(K + kr - k_tail),
                             nt1.eq(nt - 1), nt2.eq(nt - 2), nt_one.eq(nt == 1), tiles.eq(0)]
                m.next = "TRY"
            with m.State("TRY"):
                # First whole strips, then (``tiles``) single tiles: STRIP_CHOICES. The rows they
                # take are registered here and checked in TRY_FIT (a product, then a compare).
                (strip_places, _), (tile_places, _) = STRIP_CHOICES
                m.d.sync += [rows_b.eq(Mux(tiles, kr * tile_places, krk * strip_places)),
                             strips.eq(Mux(tiles, tile_places, strip_places)), whole.eq(~tiles),
                             strip_rows.eq(Mux(tiles, kr, krk))]
                m.next = "TRY_FIT"
            with m.State("TRY_FIT"):
                with m.If(rows_b >= c.spad_depth):
                    with m.If(tiles):
                        m.next = "BAD_ADDR"
                    with m.Else():
                        m.d.sync += tiles.eq(1)
                        m.next = "TRY"
                with m.Else():
                    m.d.comb += div.begin(c.spad_depth - rows_b, kt << 1, spad_bits)
                    m.next = "TRY_WAIT"
            with m.State("TRY_WAIT"):
                with m.If(div.done):
                    m.d.sync += [cap.eq(_min(div.quotient, m_cap)),
                                 one_chunk.eq((div.quotient >= M) & (m_cap == M))]
                    m.next = "TRY_CAP"
            with m.State("TRY_CAP"):
                with m.If(one_chunk):
                    # cap = M: all of M in one chunk (mt = 1, mc = M), nothing to divide.
                    m.d.sync += [ahead.eq(~tiles & ~nt_one), *chunks(Const(1, 16)),
                                 *start_mul(M)]
                    m.next = "MUL"
                with m.Elif((cap >= m_rows) | (tiles & (cap != 0))):
                    m.d.sync += ahead.eq(~tiles & ~nt_one)
                    m.next = "MT"
                with m.Elif(tiles):
                    m.next = "BAD_ADDR"
                with m.Else():
                    m.d.sync += tiles.eq(1)
                    m.next = "TRY"
            ceil_divide("MT", M, cap, "MC", lambda q, r: chunks(q))
            ceil_divide("MC", M, mt, "MUL", lambda q, r: start_mul(q))
            with m.State("MUL"):
                # Shift-add over the bits of mc and kr: panel = kt * mc, a_step = mc * a_stride,
                # c_step = mc * c_stride, bk_step = kr * b_stride (offsets wrap at 32 bits).
                # The multiplicands shift left and the multipliers right, a bit a cycle, until
                # no multiplier bit is left: max(bits(mc), bits(kr)) cycles.
                with m.If(mc_sh[0]):
                    m.d.sync += [panel.eq(panel + kt_sh), a_step.eq(a_step + as_sh),
                                 c_step.eq(c_step + cs_sh)]
                with m.If(kr_sh[0]):
                    m.d.sync += bk_step.eq(bk_step + bs_sh)
                m.d.sync += [mc_sh.eq(mc_sh >> 1), kr_sh.eq(kr_sh >> 1),
                             kt_sh.eq(kt_sh << 1), as_sh.eq(as_sh << 1), cs_sh.eq(cs_sh << 1),
                             bs_sh.eq(bs_sh << 1)]
                with m.If((mc_sh[1:] == 0) & (kr_sh[1:] == 0)):
                    m.next = "INIT"
            with m.State("INIT"):
                a_second = a_off + a_step          # the second M chunk, and its prefetch
                m.d.sync += [
                    mi.eq(0), ni.eq(0), ki.eq(0), ki_zero.eq(1), ki_last.eq(kt_one), n0.eq(0),
                    # The first tile and chunk are whole (kr = K when kt = 1, and so on).
                    cur_m.eq(mc), cur_n.eq(nc), cur_k.eq(kr), l_k.eq(kr), l_n.eq(nc),
                    pf_mrem.eq(M - mc), pf_krem.eq(K),
                    a_moff.eq(a_off), c_moff.eq(c_off), a_koff.eq(a_off),
                    a_next.eq(a_second), pf_off.eq(a_second), bias_n.eq(bias_off),
                    rq_n.eq(rq_base), bias_sent.eq(0),
                    b_n.eq(b_off),
                    panel_sel.eq(0), acc_sel.eq(0), a_row.eq(0), b_slot.eq(0), b_next.eq(b_base),
                    pf_cnt.eq(0), pf_last.eq(nt_one), pf_row.eq(panel), first.eq(1),
                    pending.eq(0),
                    lmi.eq(0), lni.eq(0), lki.eq(0), ln_base.eq(b_off), lb_off.eq(b_off),
                    lk_last.eq(kt_one), ln_last.eq(nt_one), lm_last.eq(mt_one),
                    ln_next.eq(b_off + n_bytes),
                    ldone.eq(0), tiles_ahead.eq(0), m_slot.eq(0), m_place.eq(b_base),
                    b_early.eq(0),
                ]
                with m.If(d_after & whole):
                    m.next = "EARLY_B"
                with m.Else():
                    m.next = "PAIR"
            with m.State("EARLY_B"):
                # A chained GEMM: the first strip of B goes ahead of the bias LOADs (which wait
                # for a running STORE) and of A's first LOAD (which waits for every earlier
                # STORE: after_stores), so it streams while the previous GEMM's STOREs drain.
                load_first_strip("PAIR", early=1)
            with m.State("PAIR"):
                with m.If((d_bias | d_pc) & (~nt_one | first)):
                    with m.If(pending):
                        emit_store()
                        with m.If(sent):
                            m.d.sync += pending.eq(0)
                    with m.Elif(d_bias & ~bias_sent):
                        emit_load(0, bias_n, 1, cur_n, 0, to_bias=1)
                        with m.If(sent):
                            m.d.sync += bias_sent.eq(d_pc)
                            with m.If(~d_pc):
                                m.d.sync += first.eq(0)
                                m.next = "STEP_A"
                    with m.Else():
                        emit_load(0, rq_n, 2, cur_n, rq_stride, to_requant=1)
                        with m.If(sent):
                            m.d.sync += [first.eq(0), bias_sent.eq(0)]
                            m.next = "STEP_A"
                with m.Else():
                    m.d.sync += first.eq(0)
                    m.next = "STEP_A"
            with m.State("STEP_A"):
                with m.If(first_tile):
                    # Only the first A LOAD of a chained GEMM waits for the earlier STOREs:
                    # dispatch is in order, so every later command, the other A LOADs and the
                    # next M chunks' prefetches included, is dispatched after it, hence after
                    # those STOREs finished. (Putting the bit on the prefetches would make them
                    # wait for this GEMM's own STOREs too.)
                    emit_load(a_row, a_koff, cur_m, cur_k, a_stride,
                              after_stores=d_after & ki_zero)
                    with m.If(sent):
                        m.next = "STEP_B"
                with m.Else():
                    m.next = "STEP_B"
            with m.State("STEP_B"):
                with m.If(whole & first_tile & ki_zero & ~b_early):
                    load_first_strip("STEP_M")
                with m.Elif(~whole & ~ldone & (tiles_ahead != TILES_AHEAD)):
                    # The next single tile, up to TILES_AHEAD MATMULs ahead; then again.
                    emit_load(b_next, lb_off, l_k, l_n, b_stride)
                    with m.If(sent):
                        advance_ring()
                        m.d.sync += tiles_ahead.eq(tiles_ahead + 1)
                        with m.If(~lk_last):
                            m.d.sync += [lki.eq(lki + 1), lk_last.eq(lki == kt2),
                                         l_k.eq(Mux(lki == kt2, k_tail, kr)),
                                         lb_off.eq(lb_off + bk_step)]
                        with m.Else():
                            m.d.sync += [lki.eq(0), lk_last.eq(kt_one), l_k.eq(kr),
                                         lb_off.eq(ln_base)]
                            with m.If(~ln_last):
                                m.d.sync += [lni.eq(lni + 1), ln_last.eq(lni == nt2),
                                             ln_base.eq(ln_next),
                                             ln_next.eq(ln_next + n_bytes),
                                             lb_off.eq(ln_next),
                                             l_n.eq(Mux(lni == nt2, n_tail, nc))]
                            with m.Else():
                                m.d.sync += [lni.eq(0), ln_last.eq(nt_one), ln_base.eq(b_off),
                                             lb_off.eq(b_off),
                                             ln_next.eq(b_off + n_bytes),
                                             l_n.eq(nc), lmi.eq(lmi + 1),
                                             lm_last.eq(lmi == mt2)]
                                with m.If(lm_last):
                                    m.d.sync += ldone.eq(1)
                with m.Else():
                    m.next = "STEP_M"
            with m.State("STEP_M"):
                emit_matmul(a_row, Mux(whole, w_row, m_place), cur_m, cur_k,
                            acc_base, ~ki_zero)
                with m.If(sent & ~whole):
                    m.d.sync += tiles_ahead.eq(tiles_ahead - 1)
                    with m.If(m_slot == strips - 1):
                        m.d.sync += [m_slot.eq(0), m_place.eq(b_base)]
                    with m.Else():
                        m.d.sync += [m_slot.eq(m_slot + 1), m_place.eq(m_place + strip_rows)]
                with m.If(sent):
                    m.d.sync += [pf_hit.eq(pf_last),
                                 pf_cnt.eq(Mux(pf_last, 0, pf_cnt + 1)),
                                 pf_last.eq(Mux(pf_last, nt_one, pf_cnt == nt2))]
                    after_matmul("STEP_M", prefetch=pf_last & ~m_last)
            with m.State("AHEAD"):
                # The next output tile's strip, while this tile computes.
                emit_load(b_next, ahead_off, K, ahead_n, b_stride)
                with m.If(sent):
                    m.d.sync += next_strip.eq(b_next)
                    advance_ring()
                    after_matmul("AHEAD")
            with m.State("STEP_S"):
                # The previous tile's STORE, behind this tile's first MATMUL: it waits for the
                # previous tile's last results while that MATMUL keeps the array busy.
                emit_store()
                with m.If(sent):
                    m.d.sync += pending.eq(0)
                    after_matmul("STEP_S")
            with m.State("PREFETCH"):
                emit_load(pf_row, pf_off, pf_m, pf_k, a_stride)
                with m.If(sent):
                    m.next = "ADVANCE"
            with m.State("ADVANCE"):
                with m.If(pf_hit):
                    m.d.sync += [pf_row.eq(pf_row + mc), pf_off.eq(pf_off + (kr << eb_shift)),
                                 pf_krem.eq(pf_krem - kr)]
                with m.If(~ki_last):
                    m.d.sync += [ki.eq(ki + 1), ki_zero.eq(0), ki_last.eq(ki_pen),
                                 cur_k.eq(Mux(ki_pen, k_tail, kr)), a_row.eq(a_row + mc),
                                 a_koff.eq(a_koff + (kr << eb_shift)), w_row.eq(w_row + kr)]
                    with m.If(first_tile):
                        m.next = "STEP_A"
                    with m.Elif(~whole):
                        m.next = "STEP_B"
                    with m.Else():
                        m.next = "STEP_M"
                with m.Else():
                    strip = Mux(ahead, next_strip, cur_strip)     # the next output tile's
                    m.d.sync += [
                        pending.eq(1), pend_acc.eq(acc_base),
                        pend_off.eq(c_moff + (n0 << ob_shift)), pend_m.eq(cur_m),
                        pend_n.eq(cur_n), acc_sel.eq(~acc_sel),
                        cur_strip.eq(strip), w_row.eq(strip),
                        ki.eq(0), ki_zero.eq(1), ki_last.eq(kt_one), cur_k.eq(kr),
                        a_koff.eq(a_moff),
                    ]
                    with m.If(~n_last):
                        m.d.sync += [ni.eq(ni + 1), n0.eq(n0 + nc), cur_n.eq(ahead_n),
                                     a_row.eq(panel_base),
                                     bias_n.eq(bias_n + (nc << ab_shift)),
                                     rq_n.eq(rq_n + (nc << rb_shift)),
                                     b_n.eq(b_n + n_bytes)]
                        m.next = "PAIR"
                    with m.Else():
                        m.d.sync += [ni.eq(0), n0.eq(0), cur_n.eq(nc), bias_n.eq(bias_off),
                                     rq_n.eq(rq_base),
                                     b_n.eq(b_off)]
                        with m.If(~m_last):
                            a_after = a_next + a_step
                            m.d.sync += [
                                mi.eq(mi + 1), cur_m.eq(pf_m), pf_mrem.eq(pf_mrem - mc),
                                a_moff.eq(a_next), a_koff.eq(a_next), a_next.eq(a_after),
                                c_moff.eq(c_moff + c_step), panel_sel.eq(~panel_sel),
                                a_row.eq(other_base), pf_cnt.eq(0), pf_last.eq(nt_one),
                                pf_off.eq(a_after), pf_krem.eq(K), pf_row.eq(panel_base),
                            ]
                            m.next = "PAIR"
                        with m.Else():
                            m.next = "FINAL"
            with m.State("FINAL"):
                emit_store()
                with m.If(sent):
                    m.d.sync += pending.eq(0)
                    m.next = "IDLE"
            with m.State("BAD_DIM"):
                # Refused by the controller (m = 0); held until a soft reset.
                emit_matmul(0, 0, 0, 1, 0, 0)
                with m.If(sent):
                    m.next = "IDLE"
            with m.State("BAD_ADDR"):
                emit_matmul(c.spad_depth, 0, 1, 1, 0, 0)
                with m.If(sent):
                    m.next = "IDLE"
        m.d.comb += self.busy.eq(~fsm.ongoing("IDLE") | self.o_cmd.valid)
        return m
