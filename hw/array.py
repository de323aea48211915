"""The systolic array: a grid of weight-stationary PEs with input skew and output de-skew."""

from amaranth import Cat, Module, Mux, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from .pe import (ProcessingElement, acc_shape, act_layout, operand_shape, pe_uses_dsp,
                 psum_shape, psum_split, weight_layout)


__all__ = ["SystolicArray", "array_latency", "delayed", "signals", "wrapping_increment"]


def array_latency(config):
    """Cycles from an activation row accepted on ``i_act`` to its result row on ``o_out``.

    The input register and ``rows - 1`` cycles of input skew, ``cols - 1`` of de-skew, one
    register hop per PE east and south, the PE's activation register, three multiply stages and
    sum register, and a cycle at the bottom edge that realigns the low halves of the sums with
    their high halves (which the PEs add a cycle later). Without ``deep_pipeline``: one multiply
    stage, and sums added whole, so nothing to realign.
    """
    return config.rows + config.cols + (5 if config.deep_pipeline else 2)


def wrapping_increment(counter, modulus):
    """``counter + 1``, back to zero after ``modulus - 1``."""
    return Mux(counter == modulus - 1, 0, counter + 1)


def signals(shape, names):
    """One ``Signal(shape)`` per name in the space-separated ``names`` (a tuple assignment
    leaves signals unnamed, and unnamed registers are hard to find in timing reports)."""
    return [Signal(shape, name=name) for name in names.split()]


def delayed(m, value, cycles, *, name, attrs=None):
    """``value`` delayed by ``cycles`` registers (a shift register at the array's edge).
    ``attrs`` go on the registers (``{"keep": 1}``: synthesis does not merge them with equal
    registers elsewhere)."""
    for stage in range(cycles):
        reg = Signal.like(value, name=f"{name}_d{stage + 1}", attrs=attrs or {})
        m.d.sync += reg.eq(value)
        value = reg
    return value


class SystolicArray(wiring.Component):
    """A ``rows x cols`` weight-stationary systolic array with double-buffered weights.

    A weight tile is ``rows`` rows of ``cols`` weights, sent on ``i_weight`` one row per
    transfer, top row first. An activation tile is any number of rows of ``rows`` activations on
    ``i_act``, the last one marked ``last``; it is multiplied by the oldest weight tile not yet
    used. Each result row ``out[n] = sum_k act[k] * weight[k][n]`` (wrapping at ``acc_width``)
    comes out on ``o_out`` exactly :func:`array_latency` cycles after its activation row went in,
    with the activation row's ``last``.

    Values move one PE per cycle through registers: activations east, weights and partial sums
    south. The edges skew the inputs and de-skew the outputs, so the ports carry whole rows.
    Each PE has two weight banks; the bank travels with every activation, so the next weight tile
    loads while the current one computes and tiles follow each other without a bubble.

    Flow control (all of it at the edge, from two small counters):

    * ``i_weight.ready`` is low while two loaded tiles wait for or are in use by activations
      (loading a third would overwrite a bank still in use).
    * ``i_act.ready`` is low until the weight tile the next activation needs is loaded (it rises
      in the cycle its last row is accepted).

    So with activation tiles of ``M`` rows sent back to back, the array starts a tile every
    ``max(M, rows)`` cycles.

    Parameters
    ----------
    config : EngineConfig

    Members
    -------
    i_weight : In(stream.Signature(ArrayLayout(operand, cols)))
        Weight rows.
    i_act : In(stream.Signature(StructLayout({"data": ArrayLayout(operand, rows), "last": 1})))
        Activation rows.
    o_out : Out(stream.Signature(StructLayout({"data": ArrayLayout(acc, cols), "last": 1}),
                always_ready=True))
        Result rows; there is no back-pressure, the consumer takes every row.
    """

    def __init__(self, config):
        self._config = config
        operand = operand_shape(config)
        super().__init__({
            "i_weight": In(stream.Signature(data.ArrayLayout(operand, config.cols))),
            "i_act": In(stream.Signature(data.StructLayout({
                "data": data.ArrayLayout(operand, config.rows),
                "last": 1,
            }))),
            "o_out": Out(stream.Signature(data.StructLayout({
                "data": data.ArrayLayout(acc_shape(config), config.cols),
                "last": 1,
            }), always_ready=True)),
        })

    @property
    def config(self):
        return self._config

    def elaborate(self, platform):
        m = Module()
        config = self._config
        rows, cols = config.rows, config.cols

        # Edge control: which tile is loading, which is streaming, how far ahead the weights are.
        # The conditions the ready signals need are kept in registers of their own, computed
        # from the next state, so the valid -> ready -> fire -> next-state path is a couple of
        # LUTs and not a chain of comparisons.
        w_row = Signal(range(max(rows, 2)))  # at least one bit, for a one-row array
        w_last = Signal(init=int(rows == 1))  # w_row == rows - 1
        w_bank = Signal()
        act_bank = Signal()
        loaded_ahead = Signal(range(3))  # weight tiles loaded and not yet fully streamed
        w_ready = Signal(init=1)         # loaded_ahead <= 1
        have_tile = Signal()             # loaded_ahead != 0

        w_fire = self.i_weight.valid & w_ready
        w_done = w_fire & w_last
        act_fire = self.i_act.valid & self.i_act.ready
        act_done = act_fire & self.i_act.payload.last

        m.d.comb += [
            self.i_weight.ready.eq(w_ready),
            self.i_act.ready.eq(have_tile | w_done),
        ]
        with m.If(w_fire):
            m.d.sync += [
                w_row.eq(wrapping_increment(w_row, rows)),
                w_last.eq(1 if rows == 1 else w_row == rows - 2),
            ]
        with m.If(w_done):
            m.d.sync += w_bank.eq(~w_bank)
        with m.If(act_done):
            m.d.sync += act_bank.eq(~act_bank)
        next_ahead = Signal(range(3))
        m.d.comb += next_ahead.eq(loaded_ahead + w_done - act_done)
        m.d.sync += [
            loaded_ahead.eq(next_ahead),
            w_ready.eq(next_ahead <= 1),
            have_tile.eq(next_ahead != 0),
        ]

        pes = [[ProcessingElement(config, row=r, dsp=pe_uses_dsp(config, r, c))
                for c in range(cols)] for r in range(rows)]
        for r in range(rows):
            for c in range(cols):
                m.submodules[f"pe_{r}_{c}"] = pes[r][c]

        # Skew registers: a register on every input (so no edge logic reaches a PE directly),
        # then row r's activations and column c's weights delayed by r and c more. The input
        # registers' control bits are equal for all rows (columns) and may merge into one
        # register; the skew registers after them hold equal bits too, and keep stops
        # synthesis from merging those into one register fanned out over the array's edge.
        keep = {"keep": 1}

        # Top edge: weight bus of column c, skewed by c cycles.
        for c in range(cols):
            bus = Signal(weight_layout(config), name=f"w_in_{c}")
            m.d.comb += [
                bus.valid.eq(w_fire),
                bus.hit.eq(w_fire & (w_row == 0)),
                bus.bank.eq(w_bank),
                bus.tag.eq(w_row),
                bus.data.eq(self.i_weight.payload[c]),
            ]
            bus_in = delayed(m, bus, 1, name=f"w_in_{c}")
            m.d.comb += pes[0][c].i_w.eq(delayed(m, bus_in, c, name=f"w_skew_{c}", attrs=keep))
            m.d.comb += pes[0][c].i_psum.eq(0)

        # West edge: activation of row r, skewed by r cycles.
        for r in range(rows):
            act = Signal(act_layout(config), name=f"act_in_{r}")
            m.d.comb += [
                act.data.eq(self.i_act.payload.data[r]),
                act.bank.eq(act_bank),
            ]
            m.d.comb += pes[r][0].i_act.eq(
                delayed(m, delayed(m, act, 1, name=f"act_in_{r}"), r, name=f"act_skew_{r}",
                        attrs=keep))

        # Interior hops: east for activations, south for weights and partial sums.
        for r in range(rows):
            for c in range(cols):
                if c + 1 < cols:
                    m.d.comb += pes[r][c + 1].i_act.eq(pes[r][c].o_act)
                if r + 1 < rows:
                    m.d.comb += [
                        pes[r + 1][c].i_w.eq(pes[r][c].o_w),
                        pes[r + 1][c].i_psum.eq(pes[r][c].o_psum),
                    ]

        # Bottom edge: realign the halves of each sum, then de-skew so a whole result row leaves
        # at once, with its valid and last. The sums stay as narrow as the bottom row's
        # (psum_shape) until they leave, extended to acc_width.
        split = psum_split(config)
        for c in range(cols):
            psum = pes[rows - 1][c].o_psum
            aligned = Signal(psum_shape(config, rows - 1), name=f"out_aligned_{c}")
            if split == config.acc_width:
                m.d.comb += aligned.eq(psum)
            else:
                m.d.comb += aligned.eq(Cat(delayed(m, psum[:split], 1, name=f"out_low_{c}"),
                                           psum[split:]))
            m.d.comb += self.o_out.payload.data[c].eq(
                delayed(m, aligned, cols - 1 - c, name=f"out_deskew_{c}"))
        latency = array_latency(config)
        m.d.comb += [
            self.o_out.valid.eq(delayed(m, act_fire, latency, name="out_valid")),
            self.o_out.payload.last.eq(
                delayed(m, self.i_act.payload.last, latency, name="out_last")),
        ]
        return m
