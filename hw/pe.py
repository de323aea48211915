"""The processing element: one weight-stationary multiply-accumulate cell of the systolic array."""

from amaranth import Cat, Mux, Module, Shape, Signal, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out


__all__ = ["ProcessingElement", "operand_shape", "acc_shape", "psum_shape", "act_layout",
           "weight_layout", "lut_multiply", "partial_products", "pe_uses_dsp", "psum_split",
           "add_with_carry"]


def operand_shape(config):
    return signed(config.input_width) if config.signed else unsigned(config.input_width)


def acc_shape(config):
    return signed(config.acc_width) if config.signed else unsigned(config.acc_width)


def psum_shape(config, row):
    """The partial sum leaving the PE of array row ``row``: wide enough for the sum of its
    ``row + 1`` products without overflow (``product_width + ceil(log2(row + 1))`` bits) and
    no wider than ``acc_width``, so sign-extending it (zero-extending when unsigned) gives the
    sum modulo ``2**acc_width``. A split accumulate (:func:`psum_split`) keeps at least one bit in
    its high half."""
    width = min(config.acc_width, config.product_width + row.bit_length())
    split = psum_split(config)
    if split < config.acc_width:
        width = max(width, split + 1)
    return signed(width) if config.signed else unsigned(width)


def tag_width(config):
    """Bits of the row tag that steers a weight to its PE (at least one, so the signal exists)."""
    return max(1, (config.rows - 1).bit_length())


def act_layout(config):
    """What moves east from PE to PE: an activation and the weight bank it multiplies with."""
    return data.StructLayout({"data": operand_shape(config), "bank": 1})


def weight_layout(config):
    """What moves south from PE to PE while a weight tile loads.

    ``tag`` names the array row the weight belongs to; the PE of that row keeps it in shadow
    register ``bank``. ``hit``: the weight is for the PE that receives the bus (``valid`` and
    ``tag`` equal to its row), decided a hop earlier, so a PE's write enable comes straight from
    a register.
    """
    return data.StructLayout({
        "valid": 1,
        "hit": 1,
        "bank": 1,
        "tag": tag_width(config),
        "data": operand_shape(config),
    })


def add_with_carry(a, b, carry):
    """``a + b + carry`` (``carry`` one bit) as one adder: the carry enters below the LSBs,
    ``(2a + carry) + (2b + carry) = 2 (a + b + carry)``, so synthesis builds a single carry chain
    and not a second adder for the carry."""
    return (Cat(carry, a) + Cat(carry, b))[1:]


def psum_split(config):
    """Bits of the low half of a partial sum: the PE adds it a cycle before the high half.
    Without ``deep_pipeline`` all of them: one adder, no high half."""
    return config.acc_width // 2 if config.deep_pipeline else config.acc_width


def pe_uses_dsp(config, row, col):
    """Whether the PE at (``row``, ``col``) multiplies in a DSP block.

    ``"dsp"``: all of them; ``"lut"``: none; ``"auto"``: the first ``dsp_budget`` PEs in
    row-major order, the rest in LUTs.
    """
    if config.multiplier == "dsp":
        return True
    if config.multiplier == "lut":
        return False
    return row * config.cols + col < config.dsp_budget


def _tree(terms):
    while len(terms) > 1:
        pairs = [terms[i] + terms[i + 1] for i in range(0, len(terms) - 1, 2)]
        if len(terms) % 2:
            pairs.append(terms[-1])
        terms = pairs
    return terms[0]


def partial_products(a, b, *, signed_operands):
    """The partial products ``b[i] ? a << i : 0`` of ``a * b``; their sum is the product.

    For two's complement operands the partial product of ``b``'s sign bit has weight
    ``-2**(width-1)`` and is negated.
    """
    width = len(b)
    terms = []
    for i in range(width):
        term = Mux(b[i], a, 0) << i
        if signed_operands and i == width - 1:
            term = -term
        terms.append(term)
    return terms


def lut_multiply(a, b, *, signed_operands):
    """``a * b`` as a shift-and-add tree, so that synthesis builds it from LUTs and carry chains.

    Yosys maps a ``*`` to a DSP block whenever the family has one, and no attribute on the
    Amaranth side stops it; a product written without ``*`` never reaches the DSP mapper. The
    PE pipelines the same partial products (:func:`partial_products`) over its stages; this
    one-expression form is for reference and tests.
    """
    return _tree(partial_products(a, b, signed_operands=signed_operands))


class ProcessingElement(wiring.Component):
    """One multiply-accumulate cell, weight-stationary, with a shadow weight register.

    The PE holds two weights (banks 0 and 1). A weight arriving from the north on ``i_w`` whose
    ``tag`` equals this PE's row is written into the bank it names; every weight is also passed
    south, registered. An activation arriving from the west on ``i_act`` is passed east,
    registered, and multiplied by the weight of the bank that travels with it, so a new weight
    tile takes effect exactly with the first activation that carries its bank: no broadcast
    control signal and no bubble between tiles.

    Parameters
    ----------
    config : EngineConfig
        Widths and signedness.
    row : int
        This PE's row in the array (matched against the weight tag).
    dsp : bool
        Multiply with ``*`` (mapped to a DSP block) or with :func:`lut_multiply` (LUTs).

    Members
    -------
    i_act : In(act_layout)
        Activation and bank from the west neighbour (or the input skew).
    o_act : Out(act_layout)
        ``i_act`` delayed one cycle, to the east neighbour.
    i_w : In(weight_layout)
        Weight bus from the north neighbour (or the weight skew).
    o_w : Out(weight_layout)
        ``i_w`` delayed one cycle, to the south neighbour.
    i_psum : In(psum_shape(config, max(row - 1, 0)))
        Partial sum from the north neighbour (zero at the top row), its high half (the bits
        above ``psum_split``) a cycle behind its low half.
    o_psum : Out(psum_shape(config, row))
        ``i_psum + o_act.data * weight[o_act.bank]``, wrapping at its width (the sum of
        ``row + 1`` products fits), its high half likewise a cycle behind.

    Latency: the product of an activation seen on ``o_act`` in cycle ``t`` is registered in
    ``t + 3`` (three multiply stages) and added to the low half of the ``i_psum`` of cycle
    ``t + 3``; the low half of the sum appears on ``o_psum`` in ``t + 4``, the high half (the
    ``i_psum`` high half of cycle ``t + 4`` plus the carry) in ``t + 5``. Every PE has the same
    latency whatever its multiplier, so DSP and LUT PEs mix freely (``multiplier="auto"``).
    Without ``config.deep_pipeline`` (for a slow clock) the product is registered in ``t + 1``
    (one multiply stage, from the activation and weight registers) and added to the whole
    ``i_psum`` of that cycle in one adder: the sum appears on ``o_psum`` in ``t + 2``.

    Timing: the multiplier's operand registers are loaded from plain registers (the activation
    register and ``w_sel``, the weight of the activation's bank selected one cycle early) and
    its result goes straight into a register, so a DSP block sees no logic on either side and
    its input and output registers are absorbed into it (see ``synth/dsp_pack.py``). The bank
    mux moves before ``w_sel``, with a bypass for a weight written in the same cycle. The
    accumulate is cut into two carry chains of half the width, a cycle apart, so it does not
    limit the clock of a fabric array. Datapath registers have no reset (their
    ``init`` value still holds after configuration), so they need no reset routing and pack
    freely.
    """

    def __init__(self, config, *, row, dsp=True):
        if not isinstance(row, int) or not 0 <= row < config.rows:
            raise ValueError(f"row must be in 0..{config.rows - 1}, not {row!r}")
        self._config = config
        self._row = row
        self._dsp = bool(dsp)
        super().__init__({
            "i_act": In(act_layout(config)),
            "o_act": Out(act_layout(config)),
            "i_w": In(weight_layout(config)),
            "o_w": Out(weight_layout(config)),
            "i_psum": In(psum_shape(config, max(row - 1, 0))),
            "o_psum": Out(psum_shape(config, row)),
        })

    def elaborate(self, platform):
        m = Module()
        config = self._config
        operand = operand_shape(config)
        out = psum_shape(config, self._row)     # the partial sum this PE hands south

        # East hop. The data register feeds the multiplier directly. The bank bits of all PEs on
        # one anti-diagonal are equal, as are the weight bus control bits: (* keep *) asks
        # synthesis not to merge them into one register broadcast across the array (the flow in
        # synth/ applies it to the flip-flops). The bottom row's weight bus goes nowhere.
        keep = {"keep": 1}
        act_data = Signal(operand, reset_less=True)
        act_bank = Signal(attrs=keep)
        m.d.sync += [act_data.eq(self.i_act.data), act_bank.eq(self.i_act.bank)]
        m.d.comb += [self.o_act.data.eq(act_data), self.o_act.bank.eq(act_bank)]

        # South hop of the weight bus.
        w_out = Signal(weight_layout(config), attrs=keep if self._row < config.rows - 1 else {})
        m.d.sync += [w_out.eq(self.i_w),
                     w_out.hit.eq(self.i_w.valid & (self.i_w.tag == self._row + 1))]
        m.d.comb += self.o_w.eq(w_out)

        weights = [Signal(operand, name=f"w{bank}", reset_less=True) for bank in range(2)]
        write = Signal()
        m.d.comb += write.eq(self.i_w.hit)
        with m.If(write):
            with m.If(self.i_w.bank):
                m.d.sync += weights[1].eq(self.i_w.data)
            with m.Else():
                m.d.sync += weights[0].eq(self.i_w.data)

        # The weight the activation now on i_act will multiply with next cycle: weights[bank]
        # as they will be then, so a weight written this cycle into that bank is bypassed.
        w_sel = Signal(operand, reset_less=True)
        bypass = write & (self.i_w.bank == self.i_act.bank)
        m.d.sync += w_sel.eq(Mux(bypass, self.i_w.data,
                                 Mux(self.i_act.bank, weights[1], weights[0])))

        # Three multiply stages and the accumulate stage, the same count for both multipliers.
        # DSP: operand registers and the product register, both absorbed into the DSP block
        # (fed by plain registers, so no logic sits in front of it), then a fabric copy of the
        # product: the long route out of the DSP column gets a cycle of its own and the
        # accumulate carry chain starts next to its adder. Then psum = i_psum + product.
        # LUTs (no ``*``, so no DSP): pairs of partial products (one carry chain each, the
        # AND gates folded into its LUTs), two sums of half of the pairs, their sum, then
        # psum = i_psum + product.
        product = Signal(Shape(config.product_width, config.signed), reset_less=True)
        if not config.deep_pipeline:
            # One multiply stage: the product of the two registers, registered (after the DSP
            # block, or after the partial products' adder tree). A DSP's product is asked for
            # wider than the product: at the product's width, Yosys's ice40_dsp (0.70) packs
            # its register and the sum into the SB_MAC16's accumulator, and the netlist's sums
            # are wrong (the gate-level array bench in tests/test_synth.py fails), or, in the
            # top row, where no sum follows, packs the product's and the sum's registers into
            # the block, which then cannot share it with another product (mxe.synth.dsp_pair).
            # ECP5's netlist is the same either way.
            if self._dsp:
                product = Signal(Shape(max(out.width, config.product_width + 1),
                                       config.signed), reset_less=True)
            m.d.sync += product.eq(act_data * w_sel if self._dsp else
                                   lut_multiply(act_data, w_sel, signed_operands=config.signed))
        elif self._dsp:
            a_reg = Signal(operand, reset_less=True)
            b_reg = Signal(operand, reset_less=True)
            # No adder follows the product directly (the accumulate is split in halves), so
            # Yosys's ice40_dsp would take the fabric copy as the DSP's second pipeline
            # register and still leave its flip-flop driving the same net (the netlist then
            # loses the product); keep on the net between them stops that.
            dsp_out = Signal(Shape(config.product_width, config.signed), reset_less=True,
                             attrs=keep)
            m.d.sync += [
                a_reg.eq(act_data), b_reg.eq(w_sel),
                dsp_out.eq(a_reg * b_reg),
                product.eq(dsp_out),
            ]
        else:
            # Two guard bits: partial sums of two's complement partial products can exceed the
            # range of the final product.
            inner = Shape(config.product_width + 2, config.signed)
            pps = partial_products(act_data, w_sel, signed_operands=config.signed)
            pairs = []
            for i in range(0, len(pps), 2):
                pair = Signal(inner, name=f"pp_pair{i // 2}", reset_less=True)
                m.d.sync += pair.eq(_tree(pps[i:i + 2]))
                pairs.append(pair)
            halves = []
            for k, group in enumerate((pairs[:(len(pairs) + 1) // 2],
                                       pairs[(len(pairs) + 1) // 2:])):
                half = Signal(inner, name=f"pp_half{k}", reset_less=True)
                m.d.sync += half.eq(_tree(group) if group else 0)
                halves.append(half)
            m.d.sync += product.eq(halves[0] + halves[1])
        # The accumulate, split: the low half of the sum in the cycle after the product, the high
        # half (with the low half's carry) a cycle later, so the carry chain is half as long.
        # Partial sums move south with the high half a cycle behind the low half. Each sum is
        # as wide as its row's products need (psum_shape), so the carry chains grow down the
        # array instead of being acc_width long in every PE.
        split = psum_split(config)
        wide = Signal(out)
        m.d.comb += wide.eq(product)
        if split == config.acc_width:
            total = Signal(out, reset_less=True)
            m.d.sync += total.eq(self.i_psum + wide)
            m.d.comb += self.o_psum.eq(total)
            return m
        # The high half of i_psum, extended to this PE's high half.
        high_in = Signal(out.width - split)
        m.d.comb += high_in.eq(self.i_psum[split:].as_signed() if config.signed
                               else self.i_psum[split:])
        low = Signal(split + 1, reset_less=True)          # with its carry out
        high_term = Signal(out.width - split, reset_less=True)
        high = Signal(out.width - split, reset_less=True)
        m.d.sync += [
            low.eq(self.i_psum[:split] + wide[:split]),
            high_term.eq(wide[split:]),
            high.eq(add_with_carry(high_in, high_term, low[split])),
        ]
        m.d.comb += self.o_psum.eq(Cat(low[:split], high))
        return m
