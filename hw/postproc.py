"""The post-processor on the store path: per-column bias, ReLU, and requantization to int8 or
uint8 with a zero point, a clamp and a choice of rounding."""

from amaranth import Array, Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.wiring import In, Out

from .config import DSP_CHUNK_WIDTH, REQUANT_MULTIPLIER_WIDTH
from .pe import acc_shape
from .skid import SkidBuffer


__all__ = ["PostProcessor", "postproc_cfg_layout", "requant_layout", "column_requant_layout",
           "postproc_row_layout", "postproc_latency", "CHUNK_WIDTH", "MULTIPLIER_WIDTH",
           "SHIFT_WIDTH", "OUTPUT_WIDTH", "OUTPUT_TYPES"]


#: Width of the multiplier operand (a signed TFLite-style fixed-point multiplier).
MULTIPLIER_WIDTH = REQUANT_MULTIPLIER_WIDTH
#: Width of the shift amount (0..63).
SHIFT_WIDTH = 6
#: Width of the output zero point and the clamp bounds: signed, so that both int8 (-128..127)
#: and uint8 (0..255) values fit.
OUTPUT_WIDTH = 9
#: Partial products are formed from 17-bit unsigned low chunks and a signed top chunk of at most
#: 18 bits, so every partial product fits one 18x18 signed DSP multiplier (ECP5 MULT18X18D,
#: iCE40 SB_MAC16 in 16x16 mode does not, Xilinx DSP48 does):
#: :attr:`EngineConfig.postproc_multipliers` of them.
CHUNK_WIDTH = DSP_CHUNK_WIDTH
#: The types a requantized output may have, and their ranges: a clamp range lies in one of them.
OUTPUT_TYPES = {"int8": (-128, 127), "uint8": (0, 255)}


def requant_layout():
    """The requantization parameters a CONFIG sets, with the clamp range resolved (the
    controller puts the operand type's range in when CONFIG.clamp is 0)."""
    return data.StructLayout({
        "round_even": 1,
        "per_channel": 1,
        "multiplier": signed(MULTIPLIER_WIDTH),
        "shift": unsigned(SHIFT_WIDTH),
        "zero_point": signed(OUTPUT_WIDTH),
        "clamp_min": signed(OUTPUT_WIDTH),
        "clamp_max": signed(OUTPUT_WIDTH),
    })


def column_requant_layout():
    """One column's requantization multiplier and shift (LOAD with to_requant)."""
    return data.StructLayout({
        "multiplier": signed(MULTIPLIER_WIDTH),
        "shift": unsigned(SHIFT_WIDTH),
    })


def postproc_cfg_layout():
    """Settings of one store: held stable by the user while rows of that store are in flight."""
    return data.StructLayout({
        "bias_en": 1,
        "relu": 1,
        "requant": 1,
        "quant": requant_layout(),
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
    top = (1 << len(high)) - 1            # high's largest value
    bits = []
    for i in range(width):
        p, q = divmod(i, 8)
        # Compares that are constant (high > top, low > 7) are left out, not written.
        above = (high > p) if p < top else Const(0, 1)
        same = (high == p) if p <= top else Const(0, 1)
        bits.append(above | ((same & (low > q)) if q < 7 else Const(0, 1)))
    return Cat(*bits)


def _tree_levels(terms):
    levels = 0
    while terms > 1:
        terms = (terms + 1) // 2
        levels += 1
    return levels


def _fifo_latency(config):
    """Cycles from a row written into the output FIFO to the row offered on ``o_data``: two
    through the FIFO, and one through the skid buffer behind it if the engine has the deep
    pipeline's registers (``config.deep_pipeline``)."""
    return 3 if config.deep_pipeline else 2


#: Cycles a slice spends in the serial multiplier (``serial_requant``): one to load, one per
#: bit of the multiplier.
_SERIAL_CYCLES = MULTIPLIER_WIDTH + 1


def _stages(config, requant):
    if config.serial_requant:
        return 5 + (_SERIAL_CYCLES if requant else 1)
    return 6 + _tree_levels(config.postproc_multipliers // config.lanes)


def postproc_latency(config, requant=True):
    """Cycles from a row accepted on ``i_data`` to the same row offered on ``o_data``, for
    rows requantized or not (``requant``).

    One cycle each for the bias add, the ReLU, the partial products, every level of the
    partial-product adder tree, the two steps that pick and round the shifted product's low
    bits and the saturation, then three through the output FIFO and skid buffer. With a 32-bit
    accumulator (4 partial products, 2 tree levels) the latency is 11; with 64 bits (8 products)
    it is 12, in every mode. With fewer lanes than columns a row is accepted with its last pass
    (its earlier passes went in the cycles before), so the latency is the same. With
    ``serial_requant`` the multiply takes 33 cycles instead of the products and the tree, so a
    requantized row takes 41, and a row that is not requantized skips it and takes 9. Without
    ``deep_pipeline`` the skid buffer is left out: one cycle less in every case.
    """
    return _stages(config, requant) + _fifo_latency(config)


class PostProcessor(wiring.Component):
    """Bias, ReLU and requantization of accumulator rows, pipelined: a row per cycle, or with
    ``config.postproc_lanes`` below ``cols``, a row per ``cols / postproc_lanes`` cycles through
    that many lanes of multipliers.

    For every element ``x`` of a row (``cols`` values of ``acc_width`` bits, signed iff
    ``config.signed``):

    1. ``x = wrap(x + bias[c])`` if ``cfg.bias_en`` (wrapping at ``acc_width``);
    2. ``x = max(x, 0)`` if ``cfg.relu`` (no effect on an unsigned configuration);
    3. if ``cfg.requant``:
       ``y = clamp(round(x * multiplier / 2**shift) + zero_point, clamp_min, clamp_max)``,
       where ``x * multiplier`` is the exact product (``acc_width + 33`` bits) and the division
       rounds half away from zero (``shift == 0``: no rounding), or half to even with
       ``cfg.quant.round_even``, a tie going to the even *output* (``rint(x * multiplier /
       2**shift + zero_point)``, as ONNX computes it); ``multiplier`` and ``shift`` are
       CONFIG's, or the column's own with ``cfg.quant.per_channel``. Otherwise ``y = x``.

    ``y`` leaves in an element of the accumulator's shape (``signed(acc_width)`` for a signed
    engine), so raw and requantized rows share one output layout; a requantized element is the
    value in ``[clamp_min, clamp_max]`` (an int8 or a uint8 range, checked by the controller),
    whose low byte is stored. :func:`mxe.sim.model.postprocess` is the bit-exact golden model.

    Pipeline (latency :func:`postproc_latency`, 11 cycles for a 32-bit accumulator): bias add |
    ReLU | partial products | adder tree, one register per level | the product's bytes from
    ``shift`` on, with the rounding and saturation flags | the rounded low bits plus the zero
    point | the clamp | output FIFO (two cycles) | skid buffer. The 32x32 multiply is cut into
    17-bit chunk products (four 18x18 multipliers per column for ``acc_width`` 32, eight for
    64). The product is never rounded or shifted as a whole: the rounding needs only the bit
    below the result, the result's lowest bit (half to even) and whether the bits under them
    are zero; the result is needed only while it is within 512 of zero (beyond, it clamps
    whatever the zero point), which a masked test of the bits above its eleven low bits tells;
    and those eleven bits are picked by two 8:1 choices. The zero point is added in the
    rounding's own adder. Without ``requant`` the same path runs with multiplier 1 and shift 0
    and the raw value rides along to the end, so the latency is the same in every mode.

    Lanes: a row goes through the pipeline in ``postproc_passes`` slices of ``lanes`` columns,
    one a cycle, each with its pass number; the per-column bias, multiplier and shift are
    chosen by that number where each is used, and the slices of a row meet again in registers
    in front of the FIFO. ``i_data.ready`` rises with the row's last pass.

    Serial multiplier (``config.serial_requant``): the partial products and their tree give
    way to one adder per lane that takes a bit of the multiplier a cycle, and no DSP block. A
    requantized slice spends 33 cycles there, and the next one enters no sooner, so a row
    takes ``config.postproc_row_cycles``; a slice that is not requantized passes in one cycle,
    a row per pass as above.

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
        ``bias_en``, ``relu``, ``requant`` and ``quant`` (:func:`requant_layout`):
        ``round_even``, ``per_channel``, ``multiplier`` (signed 32-bit), ``shift`` (0..63),
        ``zero_point`` (signed 9-bit) and the clamp bounds (``clamp_min <= clamp_max``, both in
        -128..127 or both in 0..255). Must be held stable while rows of a store are in the
        pipeline.
    bias : In(ArrayLayout(acc_shape, cols))
        Per-column bias; held stable like ``cfg``.
    column_quant : In(ArrayLayout(column_requant_layout(), cols))
        Per-column multipliers and shifts, used instead of ``cfg.quant``'s with
        ``cfg.quant.per_channel``; held stable like ``cfg``.
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
            "column_quant": In(data.ArrayLayout(column_requant_layout(), config.cols)),
            "i_data": In(stream.Signature(postproc_row_layout(config))),
            "o_data": Out(stream.Signature(postproc_row_layout(config))),
        })

    @property
    def config(self):
        return self._config

    @property
    def latency(self):
        """Of a requantized row (:func:`postproc_latency`)."""
        return postproc_latency(self._config)

    def elaborate(self, platform):
        m = Module()
        config = self._config
        cols, acc_width, is_signed = config.cols, config.acc_width, config.signed
        lanes, passes = config.lanes, config.postproc_passes
        acc = acc_shape(config)

        # The exact product.
        prod_shape = signed(acc_width + MULTIPLIER_WIDTH + (0 if is_signed else 1))

        # The output FIFO and its credits: FIFO places not yet promised to a row. Credits
        # return in time for a row every `passes` cycles, the fastest rows come (the serial
        # multiplier's requantized rows are further apart). With several passes a row, a raw
        # row's words leave on the bus as fast as the passes make them, so the credits have a
        # cycle to spare for the bus's pauses.
        loop = _stages(config, requant=False) + _fifo_latency(config) + 2 + (passes > 1)
        depth = -(-loop // passes)
        row_layout = postproc_row_layout(config)
        m.submodules.fifo = fifo = SyncFIFOBuffered(width=row_layout.size, depth=depth)
        credits = Signal(range(depth + 1), init=depth)
        m.submodules.skid = skid = SkidBuffer(row_layout, registered=config.deep_pipeline)
        m.d.comb += [
            skid.i.valid.eq(fifo.r_rdy),
            skid.i.payload.eq(fifo.r_data),
            fifo.r_en.eq(skid.i.ready),
        ]
        wiring.connect(m, skid=skid.o, postproc=wiring.flipped(self.o_data))

        # A row goes through the pipeline as `passes` slices of `lanes` columns, one a cycle;
        # the pass number travels with its slice. The input row stays offered (stream rules)
        # until its last slice is taken, and takes its FIFO credit then.
        # With the serial multiplier, a requantized slice enters only when the one before it
        # has had its cycles there (`wait`).
        pass_in = Signal(range(passes), name="pass_in")
        last_pass = pass_in == passes - 1
        open_ = credits != 0
        if config.serial_requant:
            wait = Signal(range(_SERIAL_CYCLES), name="serial_wait")
            open_ &= wait == 0
        fed = self.i_data.valid & open_
        taken = fed & last_pass
        m.d.comb += self.i_data.ready.eq(open_ & last_pass)
        if config.serial_requant:
            with m.If(fed & self.cfg.requant):
                m.d.sync += wait.eq(_SERIAL_CYCLES - 1)
            with m.Elif(wait != 0):
                m.d.sync += wait.eq(wait - 1)
        m.d.sync += credits.eq(credits - taken + (fifo.r_en & fifo.r_rdy))
        if passes > 1:
            with m.If(fed):
                m.d.sync += pass_in.eq(Mux(last_pass, 0, pass_in + 1))

        def column(values, p, lane):
            """Of per-column ``values``, lane ``lane``'s in pass ``p`` (a signal)."""
            if passes == 1:
                return values[lane]
            return Array(values[q * lanes + lane] for q in range(passes))[p]

        def stage(name, values, last_prev, valid_prev, pass_prev):
            """Register ``values`` (a list, one per lane) with the slice's valid, last and pass
            number."""
            regs = []
            for c, value in enumerate(values):
                reg = Signal(value.shape(), name=f"{name}_{c}")
                regs.append(reg)
            valid = Signal(name=f"{name}_valid")
            last = Signal(name=f"{name}_last")
            pass_ = Signal.like(pass_in, name=f"{name}_pass")
            m.d.sync += [reg.eq(value) for reg, value in zip(regs, values)]
            m.d.sync += [valid.eq(valid_prev), last.eq(last_prev), pass_.eq(pass_prev)]
            return regs, last, valid, pass_

        # Values derived from the settings, in registers (the multiplier and shift of CONFIG, or
        # the column's own): the settings are static while a store's rows are in the pipeline.
        # A slice needs its multipliers (two register steps, one per lane, chosen by the pass
        # number it enters with) two cycles after it enters; its shifts (one register per
        # column) later, chosen by the pass number it carries then.
        quant = self.cfg.quant

        def setting(c, name, identity):
            own = getattr(self.column_quant[c], name)
            return Mux(self.cfg.requant,
                       Mux(quant.per_channel, own, getattr(quant, name)), identity)

        multiplier = [Signal(signed(MULTIPLIER_WIDTH), name=f"multiplier_{lane}")
                      for lane in range(lanes)]
        for lane in range(lanes):
            m.d.sync += multiplier[lane].eq(
                column([setting(c, "multiplier", 1) for c in range(cols)], pass_in, lane))
        shift_of_column = [Signal(SHIFT_WIDTH, name=f"shift_{c}") for c in range(cols)]
        m.d.sync += [shift_of_column[c].eq(setting(c, "shift", 0)) for c in range(cols)]

        # Stage 1: bias add, wrapping at acc_width.
        in_row = self.i_data.payload.data
        biased = [Signal(acc, name=f"bias_sum_{lane}") for lane in range(lanes)]
        for lane in range(lanes):
            x_in = column(list(in_row), pass_in, lane)
            bias = column(list(self.bias), pass_in, lane)
            m.d.comb += biased[lane].eq(Mux(self.cfg.bias_en, x_in + bias, x_in))
        x, last, valid, pass_ = stage("s1_biased", biased, self.i_data.payload.last, fed,
                                      pass_in)

        # Stage 2: ReLU.
        relu = []
        for lane in range(lanes):
            relu_x = Signal(acc, name=f"relu_{lane}")
            if is_signed:
                m.d.comb += relu_x.eq(Mux(self.cfg.relu & (x[lane] < 0), 0, x[lane]))
            else:
                m.d.comb += relu_x.eq(x[lane])
            relu.append(relu_x)
        relu, last, valid, pass_ = stage("s2_relu", relu, last, valid, pass_)

        # The product of each lane's value and multiplier.
        make_products = self._serial_products if config.serial_requant else \
            self._parallel_products
        terms, raw_values, last, valid, pass_, mask_pass = make_products(
            m, stage, relu, multiplier, last, valid, pass_)

        # Rounding, shift and saturation without a wide adder or a wide shifter. With the
        # product doubled (p2 = 2p, so that shift 0 needs no case of its own), t = p2 >> shift
        # is p / 2**(shift - 1) rounded down: p / 2**shift rounded down is t >> 1, t's lowest
        # bit is the half, and the bits of p2 below shift are the rest (sticky). Rounded is
        # (t + c) >> 1 with, half away from zero, c = 1 except for a negative p whose sticky
        # bits are zero (a negative tie, or exact), and, half to even, c = sticky | t[1], or
        # sticky | ~t[1] for an odd zero point (the tie goes to the even output).
        # Only t's low eleven bits are formed; if the bits of p2 from shift + 10 up are not all
        # sign bits, |t| >= 1024 and the result is beyond every clamp bound whatever the zero
        # point.
        width = prod_shape.width + 1                 # p2, signed
        windows, flags, raws = [], [], []
        for lane in range(lanes):
            # The bits of p2 below shift (sticky), and from shift + 10 up (outside).
            low_mask = Signal(width - 1, name=f"low_mask_{lane}")
            m.d.sync += low_mask.eq(_thermometer(column(shift_of_column, mask_pass, lane),
                                                 width - 1))   # bit i: shift > i
            high_mask = Cat(Const(0, 10), ~low_mask)[:width - 1]
            shift = column(shift_of_column, pass_, lane)
            value, base = terms[lane][0]
            p2 = Signal(signed(width), name=f"product2_{lane}")
            m.d.comb += p2.eq(value << (base + 1))
            sign = p2[-1]
            window = Signal(18, name=f"window_{lane}")  # p2's bits 8 * (shift // 8) up
            m.d.comb += window.eq(p2 >> Cat(Const(0, 3), shift[3:]))
            not_sign = p2[:-1] ^ sign.replicate(width - 1)
            sticky = (p2[:-1] & low_mask).any()
            outside = (not_sign & high_mask).any()
            windows.append(window)
            flags.append(Cat(sticky, outside, sign))
            raws.append(p2[1:acc_width + 1] if raw_values is None else raw_values[lane])
        regs, last, valid, pass_ = stage("s_window", windows + flags + raws, last, valid, pass_)
        windows, flags, raws = regs[:lanes], regs[lanes:2 * lanes], regs[2 * lanes:]

        # t's low eleven bits, and the rounded value plus the zero point,
        # (t + 2 * zero_point + c) >> 1, in one adder: c enters as the carry of a bit below.
        zero_point2 = Signal(signed(OUTPUT_WIDTH + 1))
        m.d.sync += zero_point2.eq(quant.zero_point << 1)
        shifted = []
        for lane in range(lanes):
            sticky, _outside, sign = flags[lane]
            t = Signal(signed(11), name=f"t_{lane}")
            m.d.comb += t.eq(windows[lane] >> column(shift_of_column, pass_, lane)[:3])
            carry = Mux(quant.round_even, sticky | (t[1] ^ quant.zero_point[0]), ~sign | sticky)
            total = Signal(signed(13), name=f"total_{lane}")
            m.d.comb += total.eq(Cat(carry, t).as_signed() + Cat(carry, zero_point2).as_signed())
            z = Signal(signed(11), name=f"shifted_{lane}")
            m.d.comb += z.eq(total >> 2)
            shifted.append(z)
        regs, last, valid, pass_ = stage("s_rounded", shifted + flags + raws, last, valid, pass_)
        shifted, flags, raws = regs[:lanes], regs[lanes:2 * lanes], regs[2 * lanes:]

        # The clamp (requant) or the raw value (exact: the biased accumulator itself).
        lo, hi = quant.clamp_min, quant.clamp_max
        result = [Signal(acc, name=f"result_{lane}") for lane in range(lanes)]
        for lane in range(lanes):
            _, outside, sign = flags[lane]
            z = shifted[lane]
            over = Mux(outside, ~sign, z > hi)
            under = Mux(outside, sign, z < lo)
            clamped = Mux(over, hi, Mux(under, lo, z[:OUTPUT_WIDTH].as_signed()))
            m.d.sync += result[lane].eq(Mux(self.cfg.requant, clamped, raws[lane]))
        result_valid, result_last = Signal(), Signal()
        result_pass = Signal.like(pass_in, name="result_pass")
        m.d.sync += [result_valid.eq(valid), result_last.eq(last), result_pass.eq(pass_)]

        # The row: the slices of the passes before the last wait in registers; the last pass's
        # slice joins them on its way into the FIFO.
        row = Signal(row_layout)
        for q in range(passes):
            for lane in range(lanes):
                if q == passes - 1:
                    m.d.comb += row.data[q * lanes + lane].eq(result[lane])
                else:
                    held = Signal(acc, name=f"held_{q}_{lane}")
                    with m.If(result_valid & (result_pass == q)):
                        m.d.sync += held.eq(result[lane])
                    m.d.comb += row.data[q * lanes + lane].eq(held)
        m.d.comb += [
            row.last.eq(result_last),
            fifo.w_data.eq(row),
            fifo.w_en.eq(result_valid & (result_pass == passes - 1)),
        ]
        return m

    def _parallel_products(self, m, stage, relu, multiplier, last, valid, pass_):
        """The products of the ReLU stage's values by their multipliers, a slice a cycle: the
        partial products of :data:`CHUNK_WIDTH`-bit pieces (one DSP multiplier each), summed
        by a tree. Returns, per lane, the product as ``(value, weight)``; ``None`` for the raw
        values (the product by 1 is the raw value); the slice's ``last``, ``valid`` and pass
        number; and the pass number of the slice entering the last stage, which chooses the
        shift masks a cycle ahead."""
        config = self._config
        acc_width, is_signed, lanes = config.acc_width, config.signed, config.lanes
        prod_shape = signed(acc_width + MULTIPLIER_WIDTH + (0 if is_signed else 1))
        # Stage 3: partial products, one small multiplier each, fed straight from registers
        # (which move into the DSP blocks, like the product registers).
        # Plain copies of the multiplier registers: those take their constant (1) by synchronous
        # set and reset, which a DSP's input register cannot absorb.
        products, weights = [], []  # per lane: list of products; shared: their bit offsets
        for lane in range(lanes):
            mult_copy = Signal.like(multiplier[lane], name=f"multiplier_copy_{lane}")
            m.d.sync += mult_copy.eq(multiplier[lane])
            mult_chunks = _chunks(mult_copy, MULTIPLIER_WIDTH, True)
            row_products = []
            for i, xc in enumerate(_chunks(relu[lane], acc_width, is_signed)):
                for j, mc in enumerate(mult_chunks):
                    row_products.append(xc * mc)
                    if lane == 0:
                        weights.append(CHUNK_WIDTH * (i + j))
            products.append(row_products)
        n_terms = len(weights)
        entering = pass_
        flat, last, valid, pass_ = stage("s3_pp", [p for row in products for p in row], last,
                                         valid, pass_)
        terms = [[(flat[lane * n_terms + t], weights[t]) for t in range(n_terms)]
                 for lane in range(lanes)]

        # Adder tree, one register per level. Sums are kept modulo 2**prod_shape.width, which
        # loses nothing: the final product fits that width.
        level = 0
        while len(terms[0]) > 1:
            level += 1
            new_terms = []
            for lane in range(lanes):
                row_terms = terms[lane]
                row_new = []
                for k in range(0, len(row_terms), 2):
                    pair = row_terms[k:k + 2]
                    base = min(w for _, w in pair)
                    row_new.append((_weighted_sum(pair, base), base))
                new_terms.append(row_new)
            per_lane = len(new_terms[0])
            values = []
            for lane in range(lanes):
                for total, base in new_terms[lane]:
                    width = max(prod_shape.width - base, 1)
                    values.append(total.as_signed()[:width].as_signed())
            entering = pass_
            regs, last, valid, pass_ = stage(f"s{3 + level}_sum", values, last, valid, pass_)
            terms = [[(regs[lane * per_lane + k], new_terms[lane][k][1]) for k in range(per_lane)]
                     for lane in range(lanes)]
        return terms, None, last, valid, pass_, entering

    def _serial_products(self, m, stage, relu, multiplier, last, valid, pass_):
        """The products of the ReLU stage's values by their multipliers, one multiplier bit a
        cycle (``serial_requant``): for each lane the product (an adder and three registers of
        about ``acc_width`` bits, no DSP), the raw value, and the slice's ``last``, ``valid``
        and pass number beside them, and the pass number to choose the shift masks by.

        A slice is taken in the cycle it is valid here. Requantized, its product is ready
        :data:`_SERIAL_CYCLES` cycles later (right-shift multiplication: the multiplicand added
        for every set bit of the multiplier, subtracted for its sign bit, the sum shifted
        right with the bit it loses shifted into the product's low half); the input lets the
        next slice in no sooner. Otherwise the slice passes in one cycle and its product,
        unused, is not formed."""
        config = self._config
        acc_width, lanes = config.acc_width, config.lanes
        requant = self.cfg.requant
        count = Signal(range(MULTIPLIER_WIDTH + 1), name="serial_count")
        with m.If(valid & requant):
            m.d.sync += count.eq(MULTIPLIER_WIDTH)
        with m.Elif(count != 0):
            m.d.sync += count.eq(count - 1)
        sign_step = count == 1
        held_last, held_pass = Signal(name="serial_last"), Signal.like(pass_, name="serial_pass")
        out_valid = Signal(name="serial_valid")
        with m.If(valid):
            m.d.sync += [held_last.eq(last), held_pass.eq(pass_)]
        m.d.sync += out_valid.eq(Mux(requant, sign_step, valid))

        terms, raws = [], []
        for lane in range(lanes):
            # Two register steps from the pass number, as for the parallel products.
            mult_copy = Signal.like(multiplier[lane], name=f"multiplier_copy_{lane}")
            m.d.sync += mult_copy.eq(multiplier[lane])
            x = Signal(signed(acc_width + 1), name=f"serial_x_{lane}")
            high = Signal(signed(acc_width + 1), name=f"serial_high_{lane}")
            low = Signal(MULTIPLIER_WIDTH, name=f"serial_low_{lane}")
            addend = Mux(low[0], x, 0)
            total = Signal(signed(acc_width + 2), name=f"serial_sum_{lane}")
            m.d.comb += total.eq(Mux(sign_step, high - addend, high + addend))
            with m.If(valid):
                m.d.sync += [x.eq(relu[lane]), high.eq(0), low.eq(mult_copy)]
            with m.Elif(count != 0):
                m.d.sync += [high.eq(total[1:]), low.eq(Cat(low[1:], total[0]))]
            product = Cat(low, high).as_signed()
            terms.append([(product, 0)])
            raws.append(x[:acc_width])
        return terms, raws, held_last, out_valid, held_pass, held_pass

