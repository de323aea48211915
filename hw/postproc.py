"""The post-processor on the store path: per-column bias, ReLU and requantization to int8."""

from amaranth import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.wiring import In, Out

from .config import DSP_CHUNK_WIDTH, REQUANT_MULTIPLIER_WIDTH
from .pe import acc_shape
from .skid import SkidBuffer


__all__ = ["PostProcessor", "postproc_cfg_layout", "postproc_row_layout", "postproc_latency",
           "CHUNK_WIDTH", "MULTIPLIER_WIDTH", "SHIFT_WIDTH"]


#: Width of the multiplier operand (a signed TFLite-style fixed-point multiplier).
MULTIPLIER_WIDTH = REQUANT_MULTIPLIER_WIDTH
#: Width of the shift amount (0..63).
SHIFT_WIDTH = 6
#: Partial products are formed from 17-bit unsigned low chunks and a signed top chunk of at most
#: 18 bits, so every partial product fits one 18x18 signed DSP multiplier (ECP5 MULT18X18D,
#: iCE40 SB_MAC16 in 16x16 mode does not, Xilinx DSP48 does):
#: :attr:`EngineConfig.postproc_multipliers` of them.
CHUNK_WIDTH = DSP_CHUNK_WIDTH


def postproc_cfg_layout():
    """Settings of one store: held stable by the user while rows of that store are in flight."""
    return data.StructLayout({
        "bias_en": 1,
        "relu": 1,
        "requant": 1,
        "multiplier": signed(MULTIPLIER_WIDTH),
        "shift": unsigned(SHIFT_WIDTH),
    })


def postproc_row_layout(config):
    """One accumulator row and its end-of-tile flag (the layout of ``i_data`` and ``o_data``)."""
    return data.StructLayout({
        "data": data.ArrayLayout(acc_shape(config), config.cols),
        "last": 1,
    })


def _chunks(value, width, is_signed):
    """``value`` (``width`` bits) cut into :data:`CHUNK_WIDTH`-bit pieces, low first.

    Low pieces are unsigned; the top piece keeps the signedness, so that
    ``value == sum(piece << (CHUNK_WIDTH * i))``.
    """
    pieces = []
    for lsb in range(0, width, CHUNK_WIDTH):
        piece = value[lsb:min(lsb + CHUNK_WIDTH, width)]
        if lsb + CHUNK_WIDTH >= width and is_signed:
            piece = piece.as_signed()
        pieces.append(piece)
    return pieces


def _weighted_sum(pair, base):
    """The sum of one or two ``(value, weight)`` terms, in units of ``2**base`` (the smaller
    weight). The low bits of the lower term below the other's weight pass by the adder, so its
    carry chain is only as long as the bits that overlap."""
    if len(pair) == 1:
        return pair[0][0]
    (lo, w_lo), (hi, w_hi) = sorted(pair, key=lambda term: term[1])
    k = w_hi - w_lo
    if k == 0 or len(lo) < k:
        return lo + (hi << k)
    high = (lo >> k) + hi
    total = Cat(lo[:k], high)
    return total.as_signed() if high.shape().signed else total


def _thermometer(value, width):
    """``Cat(value > i for i in range(width))`` for an unsigned ``value``, without a compare per
    bit (Yosys maps each compare to a carry chain): ``value > 8p + q`` is ``value // 8 > p``,
    or ``value // 8 == p`` and ``value % 8 > q``, one LUT a bit on top of a few shared ones."""
    high, low = value[3:], value[:3]
    bits = []
    for i in range(width):
        p, q = divmod(i, 8)
        above = (high > p) if p < 1 << len(high) else Const(0, 1)
        same = (high == p) if p < 1 << len(high) else Const(0, 1)
        bits.append(above | (same & (low > q)))
    return Cat(*bits)


def _tree_levels(terms):
    levels = 0
    while terms > 1:
        terms = (terms + 1) // 2
        levels += 1
    return levels


#: Cycles from a row written into the output FIFO to the row offered on ``o_data``: two through
#: the FIFO, one through the skid buffer behind it.
_FIFO_LATENCY = 3


def _stages(config):
    return 6 + _tree_levels(config.postproc_multipliers // config.cols)


def postproc_latency(config):
    """Cycles from a row accepted on ``i_data`` to the same row offered on ``o_data``.

    One cycle each for the bias add, the ReLU, the partial products, every level of the
    partial-product adder tree, the two steps that pick and round the shifted product's low
    bits and the saturation, then three through the output FIFO and skid buffer. With a 32-bit
    accumulator (4 partial products, 2 tree levels) the latency is 11; with 64 bits (8 products)
    it is 12.
    """
    return _stages(config) + _FIFO_LATENCY


class PostProcessor(wiring.Component):
    """Bias, ReLU and requantization of accumulator rows, one row per cycle, pipelined.

    For every element ``x`` of a row (``cols`` values of ``acc_width`` bits, signed iff
    ``config.signed``):

    1. ``x = wrap(x + bias[c])`` if ``cfg.bias_en`` (wrapping at ``acc_width``);
    2. ``x = max(x, 0)`` if ``cfg.relu`` (no effect on an unsigned configuration);
    3. if ``cfg.requant``:
       ``y = sat(round_half_away(x * multiplier / 2**shift))``, where ``x * multiplier`` is the
       exact product (``acc_width + 33`` bits), the division rounds half away from zero
       (``shift == 0``: no rounding), and ``sat`` clamps to ``[-128, 127]`` for a signed
       configuration or to ``[0, 255]`` for an unsigned one (a negative product saturates
       to 0). Otherwise ``y = x``.

    ``y`` leaves in an element of the accumulator's shape (``signed(acc_width)`` for a signed
    engine), so raw and requantized rows share one output layout; a requantized element is the
    int8 (uint8) value, sign-extended (zero-extended). :func:`mxe.sim.model.postprocess` is the
    bit-exact golden model.

    Pipeline (latency :func:`postproc_latency`, 11 cycles for a 32-bit accumulator): bias add |
    ReLU | partial products | adder tree, one register per level | the product's bytes from
    ``shift`` on, with the rounding and saturation flags | the rounded low bits | saturation |
    output FIFO (two cycles) | skid buffer. The 32x32 multiply is cut into 17-bit chunk
    products (four 18x18 multipliers per column for ``acc_width`` 32, eight for 64). The
    product is never rounded or shifted as a whole: the rounding needs only the bit below the
    result and whether the bits under that are zero, the saturation whether the bits above the
    result's ten low bits are all sign bits (both masked tests against masks made from the
    shift), and the output only those ten bits, picked by two 8:1 choices. Without ``requant``
    the same path runs with multiplier 1 and shift 0 and the raw value rides along to the end,
    so the latency is the same in every mode.

    Flow control: the pipeline never stalls (no enable reaches its registers, which spread over
    the DSP columns); rows leave it into an output FIFO with room for every row in flight, and
    ``i_data.ready`` (a register) is high while a credit for a FIFO place is left. A skid buffer
    after the FIFO keeps ``o_data.ready`` away from the FIFO's pointers and the credits. With
    ``o_data.ready`` high it takes a row every cycle.

    Parameters
    ----------
    config : EngineConfig
        ``cols``, ``acc_width`` and ``signed`` are used.

    Members
    -------
    cfg : In(postproc_cfg_layout())
        ``bias_en``, ``relu``, ``requant``, ``multiplier`` (signed 32-bit) and ``shift``
        (0..63). Must be held stable while rows of a store are in the pipeline.
    bias : In(ArrayLayout(acc_shape, cols))
        Per-column bias; held stable like ``cfg``.
    i_data : In(stream.Signature(postproc_row_layout(config)))
        Accumulator rows with an end-of-tile ``last`` flag.
    o_data : Out(stream.Signature(postproc_row_layout(config)))
        Processed rows, in order, with their ``last`` flag.
    """

    def __init__(self, config):
        from .config import EngineConfig
        if not isinstance(config, EngineConfig):
            self._MustUse__silence = True  # not built, so no "created but never used" warning
            raise TypeError(f"config must be an EngineConfig, not {config!r}")
        self._config = config
        super().__init__({
            "cfg": In(postproc_cfg_layout()),
            "bias": In(data.ArrayLayout(acc_shape(config), config.cols)),
            "i_data": In(stream.Signature(postproc_row_layout(config))),
            "o_data": Out(stream.Signature(postproc_row_layout(config))),
        })

    @property
    def config(self):
        return self._config

    @property
    def latency(self):
        return postproc_latency(self._config)

    def elaborate(self, platform):
        m = Module()
        config = self._config
        cols, acc_width, is_signed = config.cols, config.acc_width, config.signed
        acc = acc_shape(config)

        # The exact product.
        prod_shape = signed(acc_width + MULTIPLIER_WIDTH + (0 if is_signed else 1))

        # The output FIFO and its credits: FIFO places not yet promised to a row.
        stages = _stages(config)
        depth = stages + _FIFO_LATENCY + 2    # credits return in time for a row a cycle
        row_layout = postproc_row_layout(config)
        m.submodules.fifo = fifo = SyncFIFOBuffered(width=row_layout.size, depth=depth)
        credits = Signal(range(depth + 1), init=depth)
        taken = self.i_data.valid & self.i_data.ready
        m.d.sync += credits.eq(credits - taken + (fifo.r_en & fifo.r_rdy))
        m.submodules.skid = skid = SkidBuffer(row_layout)
        m.d.comb += [
            self.i_data.ready.eq(credits != 0),
            skid.i.valid.eq(fifo.r_rdy),
            skid.i.payload.eq(fifo.r_data),
            fifo.r_en.eq(skid.i.ready),
        ]
        wiring.connect(m, skid=skid.o, postproc=wiring.flipped(self.o_data))

        def stage(name, values, last_prev, valid_prev):
            """Register ``values`` (a list, one per column) with the row's valid and last."""
            regs = []
            for c, value in enumerate(values):
                reg = Signal(value.shape(), name=f"{name}_{c}")
                regs.append(reg)
            valid = Signal(name=f"{name}_valid")
            last = Signal(name=f"{name}_last")
            m.d.sync += [reg.eq(value) for reg, value in zip(regs, values)]
            m.d.sync += [valid.eq(valid_prev), last.eq(last_prev)]
            return regs, last, valid

        # Values derived from the settings, in registers: the settings are static while a
        # store's rows are in the pipeline, and a row needs the multiplier (two register steps)
        # two cycles after it enters at the earliest, the shift and its masks later.
        multiplier = Signal(signed(MULTIPLIER_WIDTH))
        shift = Signal(SHIFT_WIDTH)
        m.d.sync += [
            multiplier.eq(Mux(self.cfg.requant, self.cfg.multiplier, 1)),
            shift.eq(Mux(self.cfg.requant, self.cfg.shift, 0)),
        ]

        # Stage 1: bias add, wrapping at acc_width.
        in_row = self.i_data.payload.data
        biased = [Signal(acc, name=f"bias_sum_{c}") for c in range(cols)]
        for c in range(cols):
            m.d.comb += biased[c].eq(Mux(self.cfg.bias_en, in_row[c] + self.bias[c], in_row[c]))
        x, last, valid = stage("s1_biased", biased, self.i_data.payload.last, taken)

        # Stage 2: ReLU.
        relu = []
        for c in range(cols):
            relu_x = Signal(acc, name=f"relu_{c}")
            if is_signed:
                m.d.comb += relu_x.eq(Mux(self.cfg.relu & (x[c] < 0), 0, x[c]))
            else:
                m.d.comb += relu_x.eq(x[c])
            relu.append(relu_x)
        relu, last, valid = stage("s2_relu", relu, last, valid)

        # Stage 3: partial products, one small multiplier each, fed straight from registers
        # (which move into the DSP blocks, like the product registers).
        # A plain copy of the multiplier register: the register itself takes its constant (1)
        # by synchronous set and reset, which a DSP's input register cannot absorb.
        mult_copy = Signal.like(multiplier)
        m.d.sync += mult_copy.eq(multiplier)
        mult_chunks = _chunks(mult_copy, MULTIPLIER_WIDTH, True)
        products, weights = [], []  # per column: list of products; shared: their bit offsets
        for c in range(cols):
            row_products = []
            for i, xc in enumerate(_chunks(relu[c], acc_width, is_signed)):
                for j, mc in enumerate(mult_chunks):
                    row_products.append(xc * mc)
                    if c == 0:
                        weights.append(CHUNK_WIDTH * (i + j))
            products.append(row_products)
        n_terms = len(weights)
        flat, last, valid = stage("s3_pp", [p for row in products for p in row], last, valid)
        terms = [[(flat[c * n_terms + t], weights[t]) for t in range(n_terms)]
                 for c in range(cols)]

        # Adder tree, one register per level. Sums are kept modulo 2**prod_shape.width, which
        # loses nothing: the final product fits that width.
        level = 0
        while len(terms[0]) > 1:
            level += 1
            new_terms = []
            for c in range(cols):
                row_terms = terms[c]
                row_new = []
                for k in range(0, len(row_terms), 2):
                    pair = row_terms[k:k + 2]
                    base = min(w for _, w in pair)
                    row_new.append((_weighted_sum(pair, base), base))
                new_terms.append(row_new)
            per_col = len(new_terms[0])
            values = []
            for c in range(cols):
                for total, base in new_terms[c]:
                    width = max(prod_shape.width - base, 1)
                    values.append(total.as_signed()[:width].as_signed())
            regs, last, valid = stage(f"s{3 + level}_sum", values, last, valid)
            terms = [[(regs[c * per_col + k], new_terms[c][k][1]) for k in range(per_col)]
                     for c in range(cols)]
        # Rounding, shift and saturation without a wide adder or a wide shifter. With the
        # product doubled (p2 = 2p, so that shift 0 needs no case of its own), t = p2 >> shift
        # is p / 2**(shift - 1) rounded down, and round_half_away(p / 2**shift) is
        # (t + c) >> 1 with c = 1, except c = 0 for a negative p whose bits below
        # 2**(shift - 1) are all zero (a negative tie, or exact). Only t's low ten bits are
        # formed; if the bits of p2 from shift + 9 up are not all sign bits, |t| >= 512 and the
        # result saturates whatever it is.
        width = prod_shape.width + 1                 # p2, signed
        below = _thermometer(shift, width - 1)       # below[i] = shift > i
        low_mask = Signal(width - 1)                 # bits of p2 below shift (c)
        high_mask = Signal(width - 1)                # bits of p2 from shift + 9 up (outside)
        m.d.sync += [
            low_mask.eq(below),
            high_mask.eq(Cat(Const(0, 9), ~below)[:width - 1]),
        ]
        windows, flags, raws = [], [], []
        for c in range(cols):
            value, base = terms[c][0]
            p2 = Signal(signed(width), name=f"product2_{c}")
            m.d.comb += p2.eq(value << (base + 1))
            sign = p2[-1]
            window = Signal(17, name=f"window_{c}")  # p2's bits 8 * (shift // 8) up
            m.d.comb += window.eq(p2 >> Cat(Const(0, 3), shift[3:]))
            not_sign = p2[:-1] ^ sign.replicate(width - 1)
            carry_in = ~sign | (p2[:-1] & low_mask).any()
            outside = (not_sign & high_mask).any()
            windows.append(window)
            flags.append(Cat(carry_in, outside, sign))
            raws.append(p2[1:acc_width + 1])
        regs, last, valid = stage("s_window", windows + flags + raws, last, valid)
        windows, flags, raws = regs[:cols], regs[cols:2 * cols], regs[2 * cols:]

        # t's low ten bits, and the rounded value (t + c) >> 1 in ten bits.
        rounded = []
        for c in range(cols):
            t = Signal(signed(10), name=f"t_{c}")
            m.d.comb += t.eq(windows[c] >> shift[:3])
            y = Signal(signed(10), name=f"rounded_{c}")
            m.d.comb += y.eq((t + flags[c][0]) >> 1)
            rounded.append(y)
        regs, last, valid = stage("s_rounded", rounded + flags + raws, last, valid)
        rounded, flags, raws = regs[:cols], regs[cols:2 * cols], regs[2 * cols:]

        # Saturation (requant) or the raw value (exact: the biased accumulator itself).
        lo, hi = (-128, 127) if is_signed else (0, 255)
        out_bits = 7 if is_signed else 8
        result = Signal(row_layout)
        for c in range(cols):
            _, outside, sign = flags[c]
            y = rounded[c]
            upper = y[out_bits:-1]          # y > hi or y < lo: these bits are not all sign bits
            over = Mux(outside, ~sign, ~y[-1] & upper.any())
            under = Mux(outside, sign, y[-1] & (~upper.all() if is_signed else 1))
            saturated = Mux(over, hi, Mux(under, lo, y[:8].as_signed() if is_signed else y[:8]))
            m.d.sync += result.data[c].eq(Mux(self.cfg.requant, saturated, raws[c]))
        result_valid = Signal()
        m.d.sync += [result.last.eq(last), result_valid.eq(valid)]
        m.d.comb += [fifo.w_data.eq(result), fifo.w_en.eq(result_valid)]
        return m
