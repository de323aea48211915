"""The split event counter against a plain count, across the carry between its halves."""

import numpy as np
import pytest
from amaranth.sim import Simulator

from mxe.hw.counter import EventCounter


@pytest.mark.parametrize("width,split", [(8, 3), (6, 1), (7, 6)])
def test_counter_matches_a_plain_count(width, split):
    seed = width * 100 + split
    print(f"seed {seed}")
    rng = np.random.default_rng(seed)
    dut = EventCounter(width=width, split=split)
    sim = Simulator(dut)
    sim.add_clock(1e-8)
    checked = [0]

    async def tb(ctx):
        expect = 0
        for cycle in range(3 * 2 ** width):
            event = bool(rng.random() < 0.8)
            clear = bool(rng.random() < 0.005)
            ctx.set(dut.event, event)
            ctx.set(dut.clear, clear)
            await ctx.tick()
            expect = 0 if clear else (expect + event) % 2 ** width
            assert ctx.get(dut.count) == expect, f"cycle {cycle}"
            checked[0] += 1

    sim.add_testbench(tb)
    sim.run()
    assert checked[0] == 3 * 2 ** width


@pytest.mark.parametrize("width,split,name", [(1, 1, "width"), (8, 0, "split"),
                                              (8, 8, "split"), (8.0, 4, "width")])
def test_counter_rejects_bad_parameters(width, split, name):
    with pytest.raises(ValueError, match=name):
        EventCounter(width=width, split=split)
