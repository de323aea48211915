"""The processing element: one weight-stationary multiply-accumulate cell of the systolic array."""

from amaranth import Mux, Module, Shape, Signal, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out


__all__ = ["ProcessingElement", "operand_shape", "acc_shape", "act_layout", "weight_layout"]


def operand_shape(config):
    return signed(config.input_width) if config.signed else unsigned(config.input_width)


def acc_shape(config):
    return signed(config.acc_width) if config.signed else unsigned(config.acc_width)


def tag_width(config):
    """Bits of the row tag that steers a weight to its PE (at least one, so the signal exists)."""
    return max(1, (config.rows - 1).bit_length())


def act_layout(config):
    """What moves east from PE to PE: an activation and the weight bank it multiplies with."""
    return data.StructLayout({"data": operand_shape(config), "bank": 1})


def weight_layout(config):
    """What moves south from PE to PE while a weight tile loads.

    ``tag`` names the array row the weight belongs to; the PE of that row keeps it in shadow
    register ``bank``.
    """
    return data.StructLayout({
        "valid": 1,
        "bank": 1,
        "tag": tag_width(config),
        "data": operand_shape(config),
    })


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
    i_psum : In(acc_shape)
        Partial sum from the north neighbour (zero at the top row).
    o_psum : Out(acc_shape)
        ``i_psum + o_act.data * weight[o_act.bank]``, wrapping at ``acc_width``.

    Latency: the product of an activation seen on ``o_act`` in cycle ``t`` is registered in
    ``t + 1`` and added to the ``i_psum`` of cycle ``t + 1``, which appears on ``o_psum`` in
    ``t + 2``. Separate multiply and add stages keep the DSP and the accumulate carry chain in
    different cycles.
    """

    def __init__(self, config, *, row):
        if not isinstance(row, int) or not 0 <= row < config.rows:
            raise ValueError(f"row must be in 0..{config.rows - 1}, not {row!r}")
        self._config = config
        self._row = row
        super().__init__({
            "i_act": In(act_layout(config)),
            "o_act": Out(act_layout(config)),
            "i_w": In(weight_layout(config)),
            "o_w": Out(weight_layout(config)),
            "i_psum": In(acc_shape(config)),
            "o_psum": Out(acc_shape(config)),
        })

    def elaborate(self, platform):
        m = Module()
        config = self._config

        weights = [Signal(operand_shape(config), name=f"w{bank}") for bank in range(2)]
        with m.If(self.i_w.valid & (self.i_w.tag == self._row)):
            with m.If(self.i_w.bank):
                m.d.sync += weights[1].eq(self.i_w.data)
            with m.Else():
                m.d.sync += weights[0].eq(self.i_w.data)

        m.d.sync += [
            self.o_w.eq(self.i_w),
            self.o_act.eq(self.i_act),
        ]

        weight = Mux(self.o_act.bank, weights[1], weights[0])
        product = Signal(Shape(config.product_width, config.signed))
        m.d.sync += product.eq(self.o_act.data * weight)
        m.d.sync += self.o_psum.eq(self.i_psum + product)
        return m
