"""Amaranth-level unit tests of the processing element."""

import numpy as np
import pytest
from amaranth.sim import Simulator

from mxe.hw.array import array_latency
from mxe.hw.config import EngineConfig
from mxe.hw.pe import ProcessingElement, psum_shape, psum_split
from mxe.sim import model


def sum_offset(config):
    """Cycles from an activation presented to a PE to the ``i_psum`` low half it is added to:
    the array's latency less its input register, ``rows - 1`` cycles of skew, ``cols - 1`` of
    de-skew, one hop per PE east and south (the top-left PE's activation register) and the cycle
    that realigns the halves of the sums at the bottom edge (none when a PE adds its sum whole,
    without deep_pipeline)."""
    realign = int(psum_split(config) < config.acc_width)
    return array_latency(config) - config.rows - config.cols - realign


def run_pe(config, row, program, *, dsp=True):
    """Simulate a PE. ``program`` is a list of per-cycle input dicts; returns per-cycle outputs."""
    dut = ProcessingElement(config, row=row, dsp=dsp)
    outputs = []

    async def testbench(ctx):
        for inputs in program:
            ctx.set(dut.i_w.valid, inputs.get("w_valid", 0))
            ctx.set(dut.i_w.hit, inputs.get("w_valid", 0) and inputs.get("w_tag", 0) == row)
            ctx.set(dut.i_w.tag, inputs.get("w_tag", 0))
            ctx.set(dut.i_w.bank, inputs.get("w_bank", 0))
            ctx.set(dut.i_w.data, inputs.get("w", 0))
            ctx.set(dut.i_act.data, inputs.get("a", 0))
            ctx.set(dut.i_act.bank, inputs.get("a_bank", 0))
            ctx.set(dut.i_psum, inputs.get("psum", 0))
            await ctx.tick()
            outputs.append({
                "psum": ctx.get(dut.o_psum),
                "act": ctx.get(dut.o_act.data),
                "w": ctx.get(dut.o_w.data),
                "w_valid": ctx.get(dut.o_w.valid),
                "w_hit": ctx.get(dut.o_w.hit),
            })

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(testbench)
    sim.run()
    return outputs


@pytest.mark.parametrize("config", [
    EngineConfig(rows=4, cols=4),
    EngineConfig(rows=4, cols=4, signed=False),
    EngineConfig(rows=4, cols=4, input_width=16, acc_width=32),
    EngineConfig(rows=2, cols=2, acc_width=16),
    EngineConfig(rows=4, cols=4, deep_pipeline=False),
    EngineConfig(rows=4, cols=4, input_width=16, acc_width=32, deep_pipeline=False),
], ids=lambda c: c.key())
@pytest.mark.parametrize("dsp", [True, False], ids=["dsp", "lut"])
@pytest.mark.parametrize("last_row", [False, True], ids=["row1", "last-row"])
def test_multiply_accumulate(config, dsp, last_row, seed):
    """o_psum = i_psum + act * weight[bank] (i_psum anywhere in the range of the row above's
    partial sums, extremes included), modulo 2**acc_width once extended, the low half SUM cycles
    after the activation is presented and the high half (from the i_psum high half presented a
    cycle later) a cycle after that; weights for other rows pass by untouched."""
    rng = np.random.default_rng(seed)
    SUM = sum_offset(config)
    row = config.rows - 1 if last_row else 1
    lo, hi = config.input_range
    w0, w1 = lo, int(rng.integers(lo, hi, endpoint=True))     # bank 0: the extreme products
    program = [
        {"w_valid": 1, "w_tag": row, "w_bank": 0, "w": w0},
        {"w_valid": 1, "w_tag": row, "w_bank": 1, "w": w1},
        {"w_valid": 1, "w_tag": row + 1, "w_bank": 0, "w": hi},  # for the PE below: not kept
    ]
    # i_psum: a sum of the `row` products of the PEs above, wrapped to the row above's width.
    in_width = psum_shape(config, row - 1).width
    products = (lo * hi, lo * lo) if config.signed else (0, hi * hi)
    psum_lo, psum_hi = (int(model.wrap(row * p, in_width, config.signed)) for p in products)
    cases = [(a, 0, psum) for a in (lo, hi) for psum in (psum_lo, psum_hi)]
    for _ in range(40):
        a = int(rng.integers(lo, hi, endpoint=True))
        bank = int(rng.integers(0, 1, endpoint=True))
        psum = int(model.wrap(rng.integers(row * products[0], row * products[1], endpoint=True),
                              in_width, config.signed))
        cases.append((a, bank, psum))
    # An activation presented in cycle t shows on o_act in t+1; its product (operand stage,
    # then product register) meets the i_psum low half presented in cycle t+SUM and the high
    # half presented in t+SUM+1; the halves of the sum show on o_psum in t+SUM+1 and t+SUM+2
    # (the PE's documented latency).
    split = psum_split(config)
    mask = (1 << split) - 1

    def psum_in(cycle):
        """i_psum in ``cycle``: the low half of case cycle - SUM, the high half of the case
        before it (as unsigned bits)."""
        def case_bits(t):
            return cases[t][2] % 2 ** in_width if 0 <= t < len(cases) else 0
        return (case_bits(cycle - SUM) & mask) | (case_bits(cycle - SUM - 1) & ~mask)

    for t, (a, bank, _) in enumerate(cases):
        program.append({"a": a, "a_bank": bank, "psum": psum_in(t)})
    program += [{"psum": psum_in(len(cases) + i)} for i in range(SUM + 1)] + [{}]
    out = run_pe(config, row, program, dsp=dsp)
    start = 3
    for t, (a, bank, psum) in enumerate(cases):
        w = (w0, w1)[bank]
        bits = 2 ** config.acc_width
        want = int(model.wrap(psum + a * w, config.acc_width, config.signed)) % bits
        got = (out[start + t + SUM]["psum"] & mask) | (out[start + t + SUM + 1]["psum"] & ~mask)
        assert out[start + t]["act"] == a
        assert got % bits == want, \
            f"case {t}: a={a} bank={bank} psum={psum}"
    # Every weight travels south one cycle later, whatever its tag.
    assert [o["w"] for o in out[:3]] == [w0, w1, hi]
    assert [o["w_valid"] for o in out[:3]] == [1, 1, 1]
    # The PE below (row + 1), if there is one, is told to keep only the third weight.
    assert [o["w_hit"] for o in out[:3]] == [0, 0, int(row + 1 < config.rows)]


@pytest.mark.filterwarnings("ignore:.*created but never used")
def test_row_out_of_range():
    with pytest.raises(ValueError, match="row must be in 0..3"):
        ProcessingElement(EngineConfig(rows=4, cols=4), row=4)
