"""The skid buffer (hw/skid.py) in Amaranth's simulator: every payload comes out once and in
order under random valid and ready, one transfer per cycle when neither side stalls, ``level``
counts what it holds, and neither handshake output follows the other side's inputs within a
cycle; built unregistered, it is a plain connection.

Reproduce a failure with the printed seed: ``MXE_SEED=<seed> pytest tests/test_skid.py``.
"""

import os
import random

import pytest
from amaranth.sim import Simulator

from mxe.hw.skid import SkidBuffer


def run(testbench, registered=True):
    dut = SkidBuffer(16, registered=registered)
    sim = Simulator(dut)
    sim.add_clock(1e-8, if_exists=True)     # an unregistered buffer has no clock

    async def bench(ctx):
        await testbench(ctx, dut)

    sim.add_testbench(bench)
    sim.run()


@pytest.mark.parametrize("p_valid, p_ready", [(0.5, 0.5), (0.9, 0.3), (0.3, 0.9), (1.0, 1.0)])
def test_order_level_and_cut(p_valid, p_ready):
    seed = int(os.environ.get("MXE_SEED", random.randrange(1 << 32)))
    print(f"seed {seed}")
    rng = random.Random(seed)
    count = 400
    got = []

    async def testbench(ctx, dut):
        sent = held = 0
        for cycle in range(4 * count):
            valid = sent < count and rng.random() < p_valid
            ready = rng.random() < p_ready
            # Outputs come from registers: toggling the other side's inputs changes nothing.
            ctx.set(dut.o.ready, 0)
            ctx.set(dut.i.valid, 0)
            i_ready, o_valid = ctx.get(dut.i.ready), ctx.get(dut.o.valid)
            ctx.set(dut.o.ready, 1)
            ctx.set(dut.i.valid, 1)
            assert (ctx.get(dut.i.ready), ctx.get(dut.o.valid)) == (i_ready, o_valid), cycle
            assert ctx.get(dut.level) == held, (cycle, held)

            ctx.set(dut.i.valid, valid)
            ctx.set(dut.i.payload, sent if valid else 0xdead)
            ctx.set(dut.o.ready, ready)
            if valid and i_ready:
                sent += 1
                held += 1
            if o_valid and ready:
                got.append(ctx.get(dut.o.payload))
                held -= 1
            await ctx.tick()
            if len(got) == count:
                break

    run(testbench)
    assert got == list(range(count)), f"seed {seed}"


def test_one_transfer_per_cycle():
    got = []

    async def testbench(ctx, dut):
        ctx.set(dut.i.valid, 1)
        ctx.set(dut.o.ready, 1)
        for value in range(20):
            ctx.set(dut.i.payload, value)
            assert ctx.get(dut.i.ready)
            if ctx.get(dut.o.valid):
                got.append(ctx.get(dut.o.payload))
            await ctx.tick()

    run(testbench)
    # The first value comes out a cycle after it went in, then one every cycle.
    assert got == list(range(19))


def test_unregistered_is_a_connection():
    """``registered=False`` (an engine without the deep pipeline): each side sees the other's
    handshake and payload in the same cycle, and the buffer holds nothing."""
    rng = random.Random(7)

    async def testbench(ctx, dut):
        for cycle in range(50):
            valid, ready, payload = rng.random() < 0.5, rng.random() < 0.5, rng.randrange(1 << 16)
            ctx.set(dut.i.valid, valid)
            ctx.set(dut.i.payload, payload)
            ctx.set(dut.o.ready, ready)
            assert (ctx.get(dut.o.valid), ctx.get(dut.i.ready), ctx.get(dut.level)) == \
                (valid, ready, 0), cycle
            assert ctx.get(dut.o.payload) == payload, cycle

    run(testbench, registered=False)
