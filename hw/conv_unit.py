"""The convolution unit: expands a convolution descriptor into LOAD / MATMUL / STORE commands.

A descriptor (``CONV_A``, ``CONV_B``, ``CONV_C``, see :data:`mxe.hw.isa.FIELDS`) describes an
NHWC convolution: kernel 1..7 by 1..7, strides 1..4, dilations 1..2, padding 0..15 on each
side filled with the input's zero point (read from a row of it in memory), the weights as a
``(KH * KW * C) x N`` matrix (row ``(ky * KW + kx) * C + c``), and the bias, requantization and
ReLU options of the GEMM descriptor. Like the GEMM unit it sits between the command queue and
the controller: other commands pass through, ``CONV_A`` and ``CONV_B`` are kept, ``CONV_C``
starts the expansion. :func:`mxe.sim.conv_model.expand_fields` is the exact sub-command stream.

No lowered (im2col) matrix exists anywhere. The scratchpad holds a ring of padded input lines,
one slot per line, laid out so that the pixels one kernel tap multiplies for a whole output
line are consecutive scratchpad rows: a slot row is one pixel's block of ``rows`` channels,
ordered by channel block, column phase ``iw mod stride_w`` and ``iw // stride_w``. Then every
MATMUL is a plain one (``m = OW`` rows, one tap and channel block of weights) whose
``act_addr`` picks the tap. Each input line is loaded once per pass over the output channels
(one LOAD per channel block and column phase, ``stride_w * in_pitch`` bytes between its rows);
the padding columns of a slot are loaded from the zero-point row once, the padding lines are a
slot of their own. See the architecture page for the schedule and its traffic.

Set-up derives the sizes from ``CONV_C`` to the first sub-command, in a state machine of its
own (its states stay out of the expansion's next-state logic): ``ceil(C / rows)`` and
``ceil(N / cols)`` by a shift and a mask for power-of-two sides (else on a sequential divider),
the divisions by the strides by shifts for strides 1, 2 and 4 (a stride of 3 takes the divider,
a numerator bit a cycle), the products by strides and power-of-two sides by shifts and an adder,
and six products (eight for other sides) on a shift-add multiplier that stops when no multiplier
bit is left, each started as the one before is taken: 34 to 40 cycles on ``tiny``, ``small``
and ``default`` for strides 1, 2 and 4, 116 to 118 with a stride of 3 (Amaranth simulation,
3x3 on 8x8x8 -> 8 to 32x32x16 -> 16, 7x7 stride 2, 1x1 on 16x16x64 -> 64, 3x3 stride 3).

A descriptor is refused at ``CONV_C`` by expanding to one command the controller refuses: a
MATMUL with ``m = 0`` (BAD_DIM: a zero or out-of-range size, kernel, stride or dilation, or a
dilated kernel larger than the padded input) or one past the scratchpad (BAD_ADDR: the ring,
the padding slot and the weights do not fit the scratchpad, or two output lines the
accumulator).

Members
-------
i_cmd : In(stream.Signature(128))
    The command queue's head.
o_cmd : Out(stream.Signature(128))
    The head, or the sub-commands while a convolution expands; from registers, filled only
    when empty (one command per two cycles at most, the controller's dispatch rate).
enable : In(1)
    The controller runs and has no error: only then are CONV commands taken from the queue.
busy : Out(1)
    A convolution is being set up or expanded, or a command waits on ``o_cmd``.
"""

from amaranth import Module, Mux, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from .array import signals
from .config import REQUANT_ELEM_BYTES
from .isa import COMMAND_BITS, Opcode, command_layout
from .seqmath import Divider, Multiplier, division_states, pow2_tiles


__all__ = ["ConvUnit", "KERNEL_MAX", "STRIDE_MAX", "DILATION_MAX", "HOOK"]

KERNEL_MAX = 7
STRIDE_MAX = 4
DILATION_MAX = 2
#: A line's input prefetch and the last line's STORE follow its MATMUL of this index (or its last
#: if it has fewer): the MATMULs before them keep the array busy while the STORE waits for the
#: last line's results and the unit emits the LOADs.
HOOK = 2
#: Ring slots at most: ((KERNEL_MAX - 1) * DILATION_MAX + 1) + 2 * STRIDE_MAX.
_LINES_MAX = (KERNEL_MAX - 1) * DILATION_MAX + 1 + 2 * STRIDE_MAX
_SA = 24          # scratchpad row values (as the commands carry them)
#: Set-up numerators (``pl + W + pr`` and the like) are below 2**17.
_NUM_BITS = 17


def _times_small(x, k):
    """``x * k`` for a ``k`` of 1..7 (a kernel side): two adders, no multiplier."""
    return Mux(k[0], x, 0) + Mux(k[1], x << 1, 0) + Mux(k[2], x << 2, 0)


def _times_stride(x, k):
    """``x * k`` for a stride ``k`` of 1..4: one adder (for 3) and a choice of shifts."""
    return Mux(k == 3, x + (x << 1), Mux(k[2], x << 2, Mux(k[1], x << 1, x)))


def _divmod_pow2(x, d):
    """``divmod(x, d)`` for a ``d`` of 1, 2 or 4: a shift and a mask."""
    return (Mux(d[2], x >> 2, Mux(d[1], x >> 1, x)),
            Mux(d[2], x[:2], Mux(d[1], x[0], 0)))


def _min(a, b):
    return Mux(a < b, a, b)


class ConvUnit(wiring.Component):
    __doc__ = __doc__.split("Members\n-------")[0].split("\n\n", 1)[0] + """

    See the module documentation for the schedule and the refusals.

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
        # Power-of-two array sides (the presets') make ceil(C / rows), ceil(N / cols) and the
        # products by rows shifts and masks; other sides take the divider and multiplier.
        rows_pow2 = c.rows & (c.rows - 1) == 0
        cols_pow2 = c.cols & (c.cols - 1) == 0
        rows_log = c.rows.bit_length() - 1
        # The divider divides by a stride (3: 1, 2 and 4 are shifts), or by rows or cols.
        den_bits = max([3] + [side.bit_length() for side, pow2
                              in ((c.rows, rows_pow2), (c.cols, cols_pow2)) if not pow2])
        m.submodules.div = div = Divider(_NUM_BITS, den_width=den_bits)
        m.submodules.mul = mul = Multiplier(16, 32)
        eb_shift = c.elem_bytes.bit_length() - 1
        ab_shift = c.acc_elem_bytes.bit_length() - 1
        rb_shift = REQUANT_ELEM_BYTES.bit_length() - 1

        head = self.i_cmd.payload
        opcode = head[:4]
        ca = data.View(command_layout("CONV_A"), head)
        cbv = data.View(command_layout("CONV_B"), head)
        cc = data.View(command_layout("CONV_C"), head)

        # Descriptor registers.
        d_bias, d_relu, d_requant, d_pc = signals(1, "d_bias d_relu d_requant d_pc")
        kh, kw, sh, sw = signals(3, "kh kw sh sw")
        dh, dw = signals(2, "dh dw")
        H, W, C, N = signals(16, "H W C N")
        pt, pb, pl, pr = signals(4, "pt pb pl pr")
        ch_off, in_off, w_off, zp_off, out_off = signals(32, "ch_off in_off w_off zp_off "
                                                         "out_off")
        in_pitch, w_stride, out_pitch = signals(16, "in_pitch w_stride out_pitch")

        # Sizes.
        eh, ew = signals(5, "eh ew")
        hp, wp, h_end = signals(17, "hp wp h_end")
        # The numerators of OH - 1, OW - 1 and Q (hp - eh, wp - ew, wp + sw - 1).
        oh_num, ow_num, q_num = signals(_NUM_BITS, "oh_num ow_num q_num")
        OH, OW, cb, kc_last, nc, nt, n_tail, Q, qW, rW, pl_q, pl_p = signals(
            16, "OH OW cb kc_last nc nt n_tail Q qW rW pl_q pl_p")
        oh1, oh2, nt2, cb1, cb2, kw1, kh1 = signals(16, "oh1 oh2 nt2 cb1 cb2 kw1 kh1")
        sh1, sw1 = signals(2, "sh1 sw1")   # stride - 1: a phase's last value, no adder
        # divmod(dil_w, stride_w): a kernel column's step in column phase and position.
        dw_q, dw_p = signals(2, "dw_q dw_p")
        nt_one, cb_one = signals(1, "nt_one cb_one")
        lines = Signal(range(_LINES_MAX + 1))
        taps = Signal(6)
        # Scratchpad sizes: each is at most rows_used when the geometry fits, so 24 bits, and
        # ``big`` says that a product did not fit them (BAD_ADDR).
        cbq, S, LS, tcb, WP, cbkr, swQ, shS = signals(_SA, "cbq S LS tcb WP cbkr swQ shS")
        big = Signal()
        line_step, tap_step, out_line, sw_pitch = signals(32, "line_step tap_step out_line "
                                                         "sw_pitch")
        rq_base = Signal(32)
        zp_e = Signal(16)
        w_base = Signal(_SA)
        rows_used = Signal(_SA + 3)

        # Pass state (one pass per tile of output channels).
        ni = Signal(16)
        n_last, wplace_sel = signals(1, "n_last wplace_sel")
        bias_n, rq_n, w_n, out_n = signals(32, "bias_n rq_n w_n out_n")
        cur_n = Signal(16)
        wplace = Signal(_SA)
        tap = Signal(6)
        tap_last = Signal()
        w_tap_off = Signal(32)
        w_tap_spad = Signal(_SA)

        # Line loading cursor.
        ld_ih, ld_upto = signals(17, "ld_ih ld_upto")
        ld_ph = Signal(3)                       # ld_ih mod stride_h
        ld_slot = Signal(range(_LINES_MAX))
        ld_slot_base = Signal(_SA)
        ld_roff = Signal(32)                    # the line's first pixel in memory
        pf_mode = Signal()                      # loading ahead (then the STORE, then MATMULs)
        filled = Signal(_LINES_MAX)             # the slot's padding columns are loaded
        fill = Signal()
        ld_cbi = Signal(16)
        ld_cb_base = Signal(_SA)
        ld_cb_off = Signal(32)
        ld_kc = Signal(16)
        ld_x = Signal(3)
        ld_p = Signal(16)
        ld_q0 = Signal(16)
        ld_xoff = Signal(32)
        ld_nrows = Signal(16)
        ld_pbase, ld_real_row, ld_rpos = signals(_SA, "ld_pbase ld_real_row ld_rpos")
        ld_rest = Signal(17)

        # MATMUL cursor.
        oy = Signal(16)
        oy_last = Signal()
        ih_o = Signal(17)
        o_slot = Signal(range(_LINES_MAX))
        o_slot_base = Signal(_SA)
        acc_sel = Signal()
        out_line_off = Signal(32)
        ky, kx = signals(3, "ky kx")
        t_ih = Signal(17)
        t_slot = Signal(range(_LINES_MAX))
        t_slot_base = Signal(_SA)
        kxp = Signal(3)
        kxq = Signal(16)
        mm_cbi = Signal(16)
        mm_cb_off = Signal(_SA)
        mm_kc = Signal(16)
        w_row = Signal(_SA)
        act, act_row, act_col = signals(_SA, "act act_row act_col")
        first, mm_done = signals(1, "first mm_done")
        mm_i = Signal(range(HOOK + 2))          # the line's MATMUL index, up to HOOK + 1
        hook = Signal(range(HOOK + 1))          # min(HOOK, MATMULs a line - 1)
        # The cursor's last channel block, kernel column and row, in registers set with the
        # cursor (no compare between them and the state machine).
        cbi_last, kx_last, ky_last = signals(1, "cbi_last kx_last ky_last")
        # The STORE of the last output line, kept until the next line's MATMUL ``hook`` (of
        # this pass or the next), with what it needs of its pass.
        pending = Signal()
        pend_acc, pend_n = signals(16, "pend_acc pend_n")
        pend_off, pend_bias, pend_rq = signals(32, "pend_off pend_bias pend_rq")
        pend_pass = Signal()                    # its pass's parity
        bias_valid, bias_for = signals(1, "bias_valid bias_for")  # the post-processor holds
        bias_ret = Signal()                     # after the bias LOADs: 0 PF_STORE, 1 FINAL
        pass_slot = Signal(range(_LINES_MAX))   # the ring slot of the pass's padded line 0
        pass_slot_base = Signal(_SA)

        acc_base = Mux(acc_sel, OW, 0)
        ob_shift = Mux(d_requant, 0, ab_shift)

        def times_phase(p):
            """``p * Q`` for a column phase ``p`` (0..3)."""
            return Mux(p[0], Q, 0) + Mux(p[1], Q << 1, 0)

        # The command put in the output register this cycle.
        out = Signal(COMMAND_BITS)
        out_valid = Signal()
        load = data.View(command_layout("LOAD"), out)
        mm = data.View(command_layout("MATMUL"), out)
        st = data.View(command_layout("STORE"), out)

        def emit_load(spad, offset, rows, elems, stride, to_bias=0, to_requant=0):
            m.d.comb += [
                load.opcode.eq(Opcode.LOAD), load.to_bias.eq(to_bias),
                load.to_requant.eq(to_requant), load.spad_addr.eq(spad),
                load.mem_offset.eq(offset), load.rows.eq(rows), load.elems.eq(elems),
                load.stride.eq(stride), out_valid.eq(1),
            ]

        def emit_store():
            m.d.comb += [
                st.opcode.eq(Opcode.STORE), st.bias.eq(d_bias), st.relu.eq(d_relu),
                st.requant.eq(d_requant), st.acc_addr.eq(pend_acc), st.mem_offset.eq(pend_off),
                st.rows.eq(OW), st.elems.eq(pend_n), st.stride.eq(out_pitch),
                out_valid.eq(1),
            ]

        def emit_matmul(act_addr, weight, rows, k, acc, accumulate):
            m.d.comb += [
                mm.opcode.eq(Opcode.MATMUL), mm.accumulate.eq(accumulate),
                mm.act_addr.eq(act_addr), mm.weight_addr.eq(weight), mm.m.eq(rows), mm.k.eq(k),
                mm.acc_addr.eq(acc), out_valid.eq(1),
            ]

        # A command goes into the output register only when it is empty: no path from the
        # consumer's ready into the unit's state (for timing). One command per two cycles
        # at most, as fast as the controller dispatches.
        sent = ~self.o_cmd.valid
        with m.If(self.o_cmd.ready):
            m.d.sync += self.o_cmd.valid.eq(0)
        with m.If(sent):
            m.d.sync += [self.o_cmd.payload.eq(out), self.o_cmd.valid.eq(out_valid)]

        def multiply(state, steps, then):
            """States ``state`` and ``state_<i>``: the products ``steps`` (``(a, b,
            results(product))``) in turn on the multiplier, each started in the cycle the one
            before is taken, then on to ``then``."""
            def start(a, b):
                m.d.comb += [mul.start.eq(1), mul.a.eq(a), mul.b.eq(b)]
            with m.State(state):
                start(*steps[0][:2])
                m.next = f"{state}_0"
            for i, (_, _, results) in enumerate(steps):
                with m.State(f"{state}_{i}"):
                    with m.If(mul.done):
                        m.d.sync += results(mul.product)
                        if i + 1 < len(steps):
                            start(*steps[i + 1][:2])
                            m.next = f"{state}_{i + 1}"
                        else:
                            m.next = then

        def fits(value, reg):
            """``reg`` takes ``value``; ``big`` is set if ``value`` has more bits than it."""
            return [reg.eq(value), big.eq(big | (value[len(reg):] != 0))]

        def wrap_add(index, base, step, step_base):
            """Ring slot ``index`` (and its row ``base``) moved on by ``step`` slots
            (``step_base`` rows), modulo ``lines``."""
            over = index + step >= lines
            return [index.eq(Mux(over, index + step - lines, index + step)),
                    base.eq(Mux(over, base + step_base - LS, base + step_base))]

        setup_go, su_done, su_bad_dim, su_bad_addr = signals(
            1, "setup_go su_done su_bad_dim su_bad_addr")
        is_real = (ld_ih >= pt) & (ld_ih < h_end)
        is_conv = (opcode == Opcode.CONV_A) | (opcode == Opcode.CONV_B) | \
            (opcode == Opcode.CONV_C)

        with m.FSM() as fsm:
            with m.State("IDLE"):
                m.d.comb += [
                    out_valid.eq(self.i_cmd.valid & ~is_conv),
                    out.eq(head),
                    self.i_cmd.ready.eq(Mux(is_conv, self.enable, sent)),
                ]
                with m.If(self.i_cmd.valid & is_conv & self.enable):
                    with m.Switch(opcode):
                        with m.Case(Opcode.CONV_A):
                            m.d.sync += [d_bias.eq(ca.bias), d_relu.eq(ca.relu),
                                         d_requant.eq(ca.requant), d_pc.eq(ca.per_channel),
                                         kh.eq(ca.kh), kw.eq(ca.kw), sh.eq(ca.stride_h),
                                         sw.eq(ca.stride_w), dh.eq(ca.dil_h), dw.eq(ca.dil_w),
                                         H.eq(ca.h), W.eq(ca.w), C.eq(ca.c), N.eq(ca.n),
                                         ch_off.eq(ca.channel_offset)]
                        with m.Case(Opcode.CONV_B):
                            m.d.sync += [pt.eq(cbv.pad_top), pb.eq(cbv.pad_bottom),
                                         pl.eq(cbv.pad_left), pr.eq(cbv.pad_right),
                                         in_off.eq(cbv.in_offset), w_off.eq(cbv.w_offset),
                                         zp_off.eq(cbv.zp_offset)]
                        with m.Case(Opcode.CONV_C):
                            m.d.sync += [in_pitch.eq(cc.in_pitch), out_off.eq(cc.out_offset),
                                         w_stride.eq(cc.w_stride), out_pitch.eq(cc.out_pitch)]
                            m.d.comb += setup_go.eq(1)
                            m.next = "SETUP"
            with m.State("SETUP"):
                with m.If(su_done):
                    with m.If(su_bad_dim):
                        m.next = "BAD_DIM"
                    with m.Elif(su_bad_addr):
                        m.next = "BAD_ADDR"
                    with m.Else():
                        m.d.sync += [
                            ni.eq(0), n_last.eq(nt_one), wplace_sel.eq(0), wplace.eq(w_base),
                            bias_n.eq(ch_off), rq_n.eq(rq_base), w_n.eq(w_off),
                            out_n.eq(out_off), cur_n.eq(Mux(nt_one, n_tail, nc)), filled.eq(0),
                            ld_slot.eq(0), ld_slot_base.eq(0), acc_sel.eq(0), pending.eq(0),
                            bias_valid.eq(0),
                        ]
                        m.next = "ZP"
            with m.State("ZP"):
                # The slot of padding lines, all zero points, once per descriptor.
                with m.If((pt != 0) | (pb != 0)):
                    emit_load(LS, zp_off, S, zp_e, 0)
                    with m.If(sent):
                        m.next = "WINIT"
                with m.Else():
                    m.next = "WINIT"
            with m.State("WINIT"):
                m.d.sync += [tap.eq(0), tap_last.eq(taps == 1), w_tap_off.eq(w_n),
                             w_tap_spad.eq(wplace)]
                m.next = "WLOAD"
            with m.State("WLOAD"):
                # One tap's C weight rows of this pass's output channels.
                emit_load(w_tap_spad, w_tap_off, C, cur_n, w_stride)
                with m.If(sent):
                    m.d.sync += [tap.eq(tap + 1), tap_last.eq(tap + 2 == taps),
                                 w_tap_off.eq(w_tap_off + tap_step),
                                 w_tap_spad.eq(w_tap_spad + cbkr)]
                    with m.If(tap_last):
                        # The ring goes on from the last pass's lines.
                        m.d.sync += [ld_ih.eq(0), ld_ph.eq(0), ld_roff.eq(in_off),
                                     ld_upto.eq(eh), pf_mode.eq(0), pass_slot.eq(ld_slot),
                                     pass_slot_base.eq(ld_slot_base)]
                        m.next = "LINE"

            # Input lines up to ld_upto (exclusive), each loaded once.
            with m.State("LINE"):
                with m.If(ld_ih >= ld_upto):
                    with m.If(pf_mode):
                        m.next = "PF_STORE"
                    with m.Else():
                        m.next = "MM_INIT"
                with m.Elif(is_real & (ld_ph < eh)):
                    m.d.sync += [
                        fill.eq(((pl != 0) | (pr != 0)) & ~filled.bit_select(ld_slot, 1)),
                        filled.bit_select(ld_slot, 1).eq(1),
                        ld_cbi.eq(0), ld_cb_base.eq(ld_slot_base), ld_cb_off.eq(ld_roff),
                        ld_kc.eq(Mux(cb_one, kc_last, c.rows)),
                    ]
                    m.next = "XINIT"
                with m.Else():
                    m.next = "LNEXT"
            with m.State("LNEXT"):
                m.d.sync += [ld_ih.eq(ld_ih + 1), ld_ph.eq(Mux(ld_ph == sh1, 0, ld_ph + 1))]
                m.d.sync += wrap_add(ld_slot, ld_slot_base, 1, S)
                with m.If(is_real):
                    m.d.sync += ld_roff.eq(ld_roff + line_step)
                m.next = "LINE"
            with m.State("XINIT"):
                m.d.sync += [ld_x.eq(0), ld_p.eq(pl_p), ld_q0.eq(pl_q), ld_xoff.eq(ld_cb_off),
                             ld_nrows.eq(qW + (rW != 0))]
                m.next = "XPREP"
            with m.State("XPREP"):
                pbase = ld_cb_base + times_phase(ld_p)
                m.d.sync += [ld_pbase.eq(pbase), ld_real_row.eq(pbase + ld_q0),
                             ld_rpos.eq(pbase + ld_q0 + ld_nrows),
                             ld_rest.eq(Q - ld_q0 - ld_nrows)]
                m.next = "FILL_L"
            with m.State("FILL_L"):
                with m.If(fill & (ld_q0 != 0)):
                    emit_load(ld_pbase, zp_off, ld_q0, zp_e, 0)
                    with m.If(sent):
                        m.next = "REAL"
                with m.Else():
                    m.next = "REAL"
            with m.State("REAL"):
                with m.If(ld_nrows != 0):
                    emit_load(ld_real_row, ld_xoff, ld_nrows, ld_kc, sw_pitch)
                    with m.If(sent):
                        m.next = "FILL_R"
                with m.Else():
                    m.next = "FILL_R"
            with m.State("FILL_R"):
                with m.If(fill & (pr != 0) & (ld_rest != 0)):
                    emit_load(ld_rpos, zp_off, ld_rest, zp_e, 0)
                    with m.If(sent):
                        m.next = "XNEXT"
                with m.Else():
                    m.next = "XNEXT"
            with m.State("XNEXT"):
                with m.If(ld_x == sw1):
                    with m.If(ld_cbi == cb1):
                        m.next = "LNEXT"
                    with m.Else():
                        m.d.sync += [ld_cbi.eq(ld_cbi + 1), ld_cb_base.eq(ld_cb_base + swQ),
                                     ld_cb_off.eq(ld_cb_off + (c.rows << eb_shift)),
                                     ld_kc.eq(Mux(ld_cbi == cb2, kc_last, c.rows))]
                        m.next = "XINIT"
                with m.Else():
                    wrap = ld_p == sw1
                    m.d.sync += [ld_x.eq(ld_x + 1), ld_xoff.eq(ld_xoff + in_pitch),
                                 ld_nrows.eq(qW + (ld_x + 1 < rW)),
                                 ld_p.eq(Mux(wrap, 0, ld_p + 1)),
                                 ld_q0.eq(ld_q0 + wrap)]
                    m.next = "XPREP"

            # Output lines of this pass.
            with m.State("MM_INIT"):
                m.d.sync += [oy.eq(0), oy_last.eq(oh1 == 0), ih_o.eq(0), o_slot.eq(pass_slot),
                             o_slot_base.eq(pass_slot_base), out_line_off.eq(out_n)]
                m.next = "LINE_START"
            with m.State("LINE_START"):
                m.d.sync += [ky.eq(0), kx.eq(0), t_ih.eq(ih_o), t_slot.eq(o_slot),
                             t_slot_base.eq(o_slot_base), kxp.eq(0), kxq.eq(0), mm_cbi.eq(0),
                             mm_cb_off.eq(0), mm_kc.eq(Mux(cb_one, kc_last, c.rows)),
                             w_row.eq(wplace), first.eq(1), mm_done.eq(0), mm_i.eq(0),
                             cbi_last.eq(cb_one), kx_last.eq(kw1 == 0), ky_last.eq(kh1 == 0)]
                m.next = "MPREP"
            with m.State("MPREP"):
                # The activation address in two steps of two terms each (for timing).
                t_real = (t_ih >= pt) & (t_ih < h_end)
                m.d.sync += [act_row.eq(Mux(t_real, t_slot_base, LS) + mm_cb_off),
                             act_col.eq(times_phase(kxp) + kxq)]
                m.next = "MPREP2"
            with m.State("MPREP2"):
                m.d.sync += act.eq(act_row + act_col)
                m.next = "MEMIT"
            with m.State("MEMIT"):
                emit_matmul(act, w_row, OW, mm_kc, acc_base, ~first)
                with m.If(sent):
                    at_end = cbi_last & kx_last & ky_last
                    m.d.sync += [first.eq(0), w_row.eq(w_row + c.rows), mm_done.eq(at_end),
                                 mm_i.eq(Mux(mm_i == HOOK + 1, mm_i, mm_i + 1))]
                    with m.If(~cbi_last):
                        m.d.sync += [mm_cbi.eq(mm_cbi + 1), mm_cb_off.eq(mm_cb_off + swQ),
                                     mm_kc.eq(Mux(mm_cbi == cb2, kc_last, c.rows)),
                                     cbi_last.eq(mm_cbi == cb2)]
                    with m.Else():
                        m.d.sync += [mm_cbi.eq(0), mm_cb_off.eq(0),
                                     mm_kc.eq(Mux(cb_one, kc_last, c.rows)),
                                     cbi_last.eq(cb_one)]
                        with m.If(~kx_last):
                            # The next tap's column phase and position: dil_w further on.
                            p2 = kxp + dw_p
                            wrap = p2 >= sw
                            m.d.sync += [kx.eq(kx + 1), kxp.eq(Mux(wrap, p2 - sw, p2)),
                                         kxq.eq(kxq + dw_q + wrap), kx_last.eq(kx + 1 == kw1)]
                        with m.Else():
                            m.d.sync += [kx.eq(0), kxp.eq(0), kxq.eq(0), kx_last.eq(kw1 == 0)]
                            with m.If(~ky_last):
                                m.d.sync += [ky.eq(ky + 1), t_ih.eq(t_ih + dh),
                                             ky_last.eq(ky + 1 == kh1)]
                                m.d.sync += wrap_add(t_slot, t_slot_base, dh,
                                                     Mux(dh[1], S << 1, S))
                    with m.If(mm_i == hook):
                        # After the line's MATMUL ``hook``: the next line's input, then the
                        # last line's STORE.
                        with m.If(~oy_last):
                            m.d.sync += [ld_upto.eq(ih_o + sh + eh), pf_mode.eq(1)]
                            m.next = "LINE"
                        with m.Else():
                            m.next = "PF_STORE"
                    with m.Elif(at_end):
                        m.next = "LINE_END"
                    with m.Else():
                        m.next = "MPREP"
            # Whether the pending STORE's pass needs its bias and multipliers loaded first, a
            # cycle late (for timing): its inputs change in LINE_END and SB_RQ, and FINAL_W
            # and the emit states stand between those and the states that read it.
            need_bias = Signal()
            m.d.sync += need_bias.eq((d_bias | d_pc) & (~bias_valid | (bias_for != pend_pass)))
            with m.State("PF_STORE"):
                with m.If(pending & need_bias):
                    m.d.sync += bias_ret.eq(0)
                    m.next = "SB_BIAS"
                with m.Elif(pending):
                    m.next = "PF_EMIT"
                with m.Elif(mm_done):
                    m.next = "LINE_END"
                with m.Else():
                    m.next = "MPREP"
            with m.State("PF_EMIT"):
                emit_store()
                with m.If(sent):
                    m.d.sync += pending.eq(0)
                    with m.If(mm_done):
                        m.next = "LINE_END"
                    with m.Else():
                        m.next = "MPREP"
            with m.State("SB_BIAS"):
                # The bias and multipliers of the pending STORE's pass, before its first STORE.
                with m.If(d_bias):
                    emit_load(0, pend_bias, 1, pend_n, 0, to_bias=1)
                    with m.If(sent):
                        m.next = "SB_RQ"
                with m.Else():
                    m.next = "SB_RQ"
            with m.State("SB_RQ"):
                with m.If(d_pc):
                    emit_load(0, pend_rq, 2, pend_n, N << rb_shift, to_requant=1)
                with m.If(~d_pc | sent):
                    m.d.sync += [bias_valid.eq(1), bias_for.eq(pend_pass)]
                    with m.If(bias_ret):
                        m.next = "FINAL_EMIT"
                    with m.Else():
                        m.next = "PF_EMIT"
            with m.State("LINE_END"):
                m.d.sync += [pending.eq(1), pend_acc.eq(acc_base), pend_off.eq(out_line_off),
                             pend_n.eq(cur_n), pend_pass.eq(ni[0]), pend_bias.eq(bias_n),
                             pend_rq.eq(rq_n), acc_sel.eq(~acc_sel)]
                with m.If(oy_last & n_last):
                    m.next = "FINAL_W"
                with m.Elif(oy_last):
                    # The next pass: its weights into the other place, its lines after this
                    # pass's in the ring; this line's STORE goes out in its first line.
                    m.d.sync += [
                        ni.eq(ni + 1), n_last.eq(ni == nt2),
                        cur_n.eq(Mux(ni == nt2, n_tail, nc)),
                        bias_n.eq(bias_n + (nc << ab_shift)),
                        rq_n.eq(rq_n + (nc << rb_shift)),
                        w_n.eq(w_n + (nc << eb_shift)),
                        out_n.eq(out_n + (nc << ob_shift)),
                        wplace_sel.eq(~wplace_sel),
                        wplace.eq(Mux(wplace_sel, w_base, w_base + WP)),
                    ]
                    m.next = "WINIT"
                with m.Else():
                    m.d.sync += [oy.eq(oy + 1), oy_last.eq(oy == oh2), ih_o.eq(ih_o + sh),
                                 out_line_off.eq(out_line_off + out_line)]
                    m.d.sync += wrap_add(o_slot, o_slot_base, sh, shS)
                    m.next = "LINE_START"
            with m.State("FINAL_W"):
                m.next = "FINAL"
            with m.State("FINAL"):
                with m.If(need_bias):
                    m.d.sync += bias_ret.eq(1)
                    m.next = "SB_BIAS"
                with m.Else():
                    m.next = "FINAL_EMIT"
            with m.State("FINAL_EMIT"):
                emit_store()
                with m.If(sent):
                    m.d.sync += pending.eq(0)
                    m.next = "IDLE"
            with m.State("BAD_DIM"):
                emit_matmul(0, 0, 0, 1, 0, 0)
                with m.If(sent):
                    m.next = "IDLE"
            with m.State("BAD_ADDR"):
                emit_matmul(c.spad_depth, 0, 1, 1, 0, 0)
                with m.If(sent):
                    m.next = "IDLE"

        # The set-up, a machine of its own (for timing: its states do not widen the main
        # machine's next-state logic). It starts with CONV_C and ends with ``su_done`` (a
        # cycle), refusing with ``su_bad_dim`` or ``su_bad_addr``.
        m.d.sync += su_done.eq(0)
        with m.FSM(name="setup"):
            with m.State("IDLE"):
                with m.If(setup_go):
                    m.d.sync += [su_bad_dim.eq(0), su_bad_addr.eq(0), big.eq(0)]
                    m.next = "DIMS"
            with m.State("DIMS"):
                bad = ((H == 0) | (W == 0) | (C == 0) | (N == 0) | (kh == 0) | (kw == 0)
                       | (sh == 0) | (sh > STRIDE_MAX) | (sw == 0) | (sw > STRIDE_MAX)
                       | (dh == 0) | (dh > DILATION_MAX) | (dw == 0) | (dw > DILATION_MAX))
                with m.If(bad):
                    m.d.sync += [su_bad_dim.eq(1), su_done.eq(1)]
                    m.next = "IDLE"
                with m.Else():
                    m.d.sync += [
                        eh.eq(Mux(dh[1], (kh << 1) - 1, kh)), ew.eq(Mux(dw[1], (kw << 1) - 1, kw)),
                        hp.eq(pt + H + pb), wp.eq(pl + W + pr), h_end.eq(pt + H),
                        nc.eq(_min(c.cols, N)), zp_e.eq(_min(c.rows, C)),
                        # KH * KW by shift-add: a multiplier here would take a DSP block.
                        taps.eq(_times_small(kh, kw)),
                        kh1.eq(kh - 1),
                        dw_q.eq(Mux(sw == 1, dw, Mux((sw == 2) & dw[1], 1, 0))),
                        dw_p.eq(Mux(sw == 1, 0, Mux(sw == 2, dw[0], dw))),
                        kw1.eq(kw - 1), sh1.eq(sh - 1), sw1.eq(sw - 1),
                        sw_pitch.eq(_times_stride(in_pitch, sw)),
                        rq_base.eq(ch_off + Mux(d_bias, N << ab_shift, 0)),
                    ]
                    if rows_pow2:
                        m.d.sync += pow2_tiles(C, c.rows, cb, kc_last)
                    if cols_pow2:
                        m.d.sync += pow2_tiles(N, c.cols, nt, n_tail)
                    m.next = "CB" if not rows_pow2 else "NT" if not cols_pow2 else "SPAN"
            if not rows_pow2:
                division_states(m, div, "CB", C + c.rows - 1, c.rows, _NUM_BITS,
                                "NT" if not cols_pow2 else "SPAN",
                                lambda q, r: [cb.eq(q), kc_last.eq(r + 1)])
            if not cols_pow2:
                division_states(m, div, "NT", N + nc - 1, nc, _NUM_BITS, "SPAN",
                                lambda q, r: [nt.eq(q), n_tail.eq(r + 1)])
            with m.State("SPAN"):
                # What the loops need of cb and nt in registers (no adder behind a compare),
                # and the numerators of the divisions by the strides.
                m.d.sync += [cb1.eq(cb - 1), cb2.eq(cb - 2), cb_one.eq(cb == 1),
                             nt2.eq(nt - 2), nt_one.eq(nt == 1),
                             lines.eq(eh + (sh << 1)), oh_num.eq(hp - eh), ow_num.eq(wp - ew),
                             q_num.eq(wp + sw1)]
                if rows_pow2:
                    m.d.sync += fits(cb << rows_log, cbkr)
                with m.If((eh > hp) | (ew > wp)):
                    m.d.sync += [su_bad_dim.eq(1), su_done.eq(1)]
                    m.next = "IDLE"
                with m.Elif((sh == 3) | (sw == 3)):
                    m.next = "OH"
                with m.Else():
                    m.next = "STRIDES"

            def oh_results(q):
                return [OH.eq(q + 1), oh1.eq(q), oh2.eq(q - 1)]

            def sw_results(ow_q, q_q, w_qr, pl_qr):
                return [OW.eq(ow_q + 1), Q.eq(q_q), qW.eq(w_qr[0]), rW.eq(w_qr[1]),
                        pl_q.eq(pl_qr[0]), pl_p.eq(pl_qr[1])]

            with m.State("STRIDES"):
                # Strides 1, 2 and 4: the divisions are shifts and masks.
                m.d.sync += oh_results(_divmod_pow2(oh_num, sh)[0])
                m.d.sync += sw_results(_divmod_pow2(ow_num, sw)[0], _divmod_pow2(q_num, sw)[0],
                                       _divmod_pow2(W, sw), _divmod_pow2(pl, sw))
                m.next = "MUL"
            # A stride of 3: the divider, one numerator bit a cycle.
            division_states(m, div, "OH", oh_num, sh, _NUM_BITS, "OW", lambda q, r: oh_results(q))
            division_states(m, div, "OW", ow_num, sw, _NUM_BITS, "Q", lambda q, r: [OW.eq(q + 1)])
            division_states(m, div, "Q", q_num, sw, _NUM_BITS, "WS", lambda q, r: [Q.eq(q)])
            division_states(m, div, "WS", W, sw, 16, "PL", lambda q, r: [qW.eq(q), rW.eq(r)])
            division_states(m, div, "PL", pl, sw, 4, "MUL", lambda q, r: [pl_q.eq(q), pl_p.eq(r)])

            def cbq_results(p):
                # S = stride_w * cbq: a stride, so shifts and an adder here.
                return [*fits(p, cbq), *fits(_times_stride(p[:_SA], sw), S)]

            def tcb_results(p):
                return [*fits(p, tcb), *(fits(p << rows_log, WP) if rows_pow2 else [])]

            # The products, multipliers first (their bits cost cycles): the sizes the fit
            # depends on, then the memory steps (32 bits, they wrap).
            multiply("MUL", [
                (cb, Q, cbq_results),
                (taps, cb, tcb_results),
                (lines, S, lambda p: fits(p, LS)),
                *([] if rows_pow2 else [(c.rows, tcb, lambda p: fits(p, WP)),
                                        (c.rows, cb, lambda p: fits(p, cbkr))]),
                (W, in_pitch, lambda p: [line_step.eq(p)]),
                (C, w_stride, lambda p: [tap_step.eq(p)]),
                (OW, out_pitch, lambda p: [out_line.eq(p)]),
            ], "FIT")
            with m.State("FIT"):
                m.d.sync += [rows_used.eq(LS + S + Mux(nt_one, WP, WP << 1)),
                             w_base.eq(LS + S), hook.eq(Mux(tcb > HOOK, HOOK, tcb - 1)),
                             *fits(_times_stride(S, sh), shS), *fits(_times_stride(Q, sw), swQ)]
                m.next = "CHECK"
            with m.State("CHECK"):
                m.d.sync += [su_done.eq(1),
                             su_bad_addr.eq((rows_used > c.spad_depth) | big | (S > 0xFFFF)
                                            | ((OW << 1) > c.acc_depth))]
                m.next = "IDLE"
        m.d.comb += self.busy.eq(~fsm.ongoing("IDLE") | self.o_cmd.valid)
        return m
