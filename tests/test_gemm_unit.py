"""The GEMM unit (hw/gemm_unit.py) in Amaranth's simulator: the sub-command stream it generates
for a descriptor equals the reference expansion (sim/gemm_model.py) command by command, for many
shapes, configurations and options, with random back-pressure; ordinary commands pass through;
refused descriptors expand to the refused command.

Reproduce a failure with the printed seed: ``MXE_SEED=<seed> pytest tests/test_gemm_unit.py``.
"""

import random

import pytest
from amaranth.sim import Simulator

from mxe.hw.config import EngineConfig
from mxe.hw.gemm_unit import GemmUnit
from mxe.hw.isa import ErrorCode
from mxe.sim import commands as cmds
from mxe.sim.engine_model import EngineModel
from mxe.sim.gemm_model import STRIP_CHOICES, descriptor, expand, schedule

CONFIGS = {
    "tiny": EngineConfig.preset("tiny"),
    "small": EngineConfig.preset("small"),
    # Small buffers: two B strips, single B tiles, refusals for long K.
    "cramped": EngineConfig.preset("tiny", spad_depth=64, acc_depth=16),
    # Not square, 2-byte operands, 8-byte accumulators.
    "odd": EngineConfig.preset("tiny", rows=4, cols=6, input_width=12, signed=False,
                               acc_width=40, spad_depth=256, acc_depth=64, axi_data_width=64),
    # Neither side a power of two: kt and nt on the divider, not by shift and mask.
    "uneven": EngineConfig.preset("tiny", rows=3, cols=5, spad_depth=128, acc_depth=32),
}


def run_unit(config, stream, seed, *, ready_prob=0.7, max_cycles=200_000):
    """Push ``stream`` through a GemmUnit; returns what it offers the controller."""
    dut = GemmUnit(config)
    rng = random.Random(seed)
    got = []

    async def testbench(ctx):
        ctx.set(dut.enable, 1)
        i = 0
        idle = 0
        for _ in range(max_cycles):
            valid = i < len(stream)
            ctx.set(dut.i_cmd.valid, valid)
            ctx.set(dut.i_cmd.payload, stream[i] if valid else 0)
            ready = rng.random() < ready_prob
            ctx.set(dut.o_cmd.ready, ready)
            popped = valid and ctx.get(dut.i_cmd.ready)
            if ctx.get(dut.o_cmd.valid) and ready:
                got.append(ctx.get(dut.o_cmd.payload))
            await ctx.tick()
            if popped:
                i += 1
            if i == len(stream) and not ctx.get(dut.busy):
                idle += 1
                if idle > 3:
                    return
        raise AssertionError(f"the unit did not finish in {max_cycles} cycles")

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(testbench)
    sim.run()
    return got


def check(config, M, K, N, seed, *, bias=False, relu=False, requant=False, per_channel=False,
          strides=None, after_stores=False):
    rng = random.Random(seed)
    eb = config.elem_bytes
    a_stride, b_stride, c_stride = strides or (K * eb + rng.randrange(0, 64),
                                               N * eb + rng.randrange(0, 64),
                                               N * 4 + rng.randrange(0, 64))
    desc = descriptor(M, K, N, a_offset=rng.randrange(1 << 20), a_stride=a_stride,
                      b_offset=rng.randrange(1 << 20), b_stride=b_stride,
                      c_offset=rng.randrange(1 << 31), c_stride=c_stride,
                      channel_offset=rng.randrange(1 << 20), bias=bias,
                      per_channel=per_channel, relu=relu, requant=requant,
                      after_stores=after_stores)
    before, after = cmds.config(rng.randrange(1 << 20), 7), cmds.fence()
    want = [before, *expand(config, desc), after]
    got = run_unit(config, [before, *desc, after], seed)
    for i, (g, w) in enumerate(zip(got, want)):
        assert g == w, (f"{M}x{K}x{N} command {i}: got {cmds.describe(g)}, want "
                        f"{cmds.describe(w)}; schedule {schedule(config, M, K, N)}")
    assert len(got) == len(want), f"{M}x{K}x{N}: {len(got)} commands, want {len(want)}"
    return want


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_random_shapes(name, seed):
    config = CONFIGS[name]
    rng = random.Random(seed)
    shapes = [(1, 1, 1), (config.rows + 1, config.rows * 2 + 1, config.cols + 1)]
    shapes += [tuple(rng.randint(1, 40) for _ in range(3)) for _ in range(4)]
    for i, (M, K, N) in enumerate(shapes):
        requant = rng.random() < 0.5
        check(config, M, K, N, seed + i, bias=rng.random() < 0.5, relu=rng.random() < 0.5,
              requant=requant, per_channel=requant and rng.random() < 0.5)


def test_schedules(seed):
    """Each way of keeping B (two strips loaded ahead, single tiles), several M chunks, and B
    staying in the scratchpad across M chunks when one strip holds it (one N tile)."""
    config = CONFIGS["cramped"]
    seen = set()
    for M, K, N in [(20, 8, 9), (3, 14, 5), (7, 20, 6), (30, 3, 13), (3, 40, 5), (17, 17, 17),
                    (20, 8, 3)]:
        s, error = schedule(config, M, K, N)
        assert error is None, (M, K, N)
        seen.add((s.strips, s.whole, s.mt > 1, s.nt == 1))
        check(config, M, K, N, seed + M, bias=True)
    assert set(STRIP_CHOICES) <= {x[:2] for x in seen}, seen
    assert (2, True, True, True) in seen, seen


def test_refusals(seed):
    """Zero dimensions expand to a MATMUL with m = 0, a descriptor no buffer can hold to one past
    the scratchpad: the controller refuses them with BAD_DIM and BAD_ADDR."""
    config = CONFIGS["cramped"]
    model = EngineModel(config, bytearray(1 << 10))
    for M, K, N, code in [(0, 3, 3, ErrorCode.BAD_DIM), (3, 0, 3, ErrorCode.BAD_DIM),
                          (3, 3, 0, ErrorCode.BAD_DIM), (3, 200, 3, ErrorCode.BAD_ADDR)]:
        assert schedule(config, M, K, N)[1] == code
        want = check(config, M, K, N, seed, strides=(1, 1, 1))
        assert len(want) == 3 and model.check(want[1]) == code


def test_large(seed):
    """A bigger product on the small preset (many chunks and tiles)."""
    check(CONFIGS["small"], 70, 40, 30, seed, bias=True, requant=True)
    check(CONFIGS["small"], 70, 40, 30, seed, bias=True, requant=True, per_channel=True)
    check(CONFIGS["small"], 20, 9, 30, seed, requant=True, per_channel=True)


def test_after_stores(seed):
    """GEMM_A.after_stores: the first A LOAD, and only it, carries after_stores; with whole B
    strips the first strip's LOAD goes first, ahead of the bias LOADs; otherwise the stream is
    the one without the bit. Whole strips and single tiles, one and several M chunks, bias and
    per-column requantization."""
    for name, (M, K, N), options in [
            ("small", (64, 64, 64), {}),
            ("small", (70, 40, 30), {"bias": True, "requant": True, "per_channel": True}),
            ("cramped", (20, 8, 9), {"bias": True}),          # several M chunks
            ("cramped", (3, 40, 5), {"bias": True}),          # single B tiles
            ("uneven", (7, 10, 11), {"requant": True})]:
        config = CONFIGS[name]
        s, _ = schedule(config, M, K, N)
        plain = check(config, M, K, N, seed, **options)[1:-1]
        chained = check(config, M, K, N, seed, after_stores=True, **options)[1:-1]
        marked = [i for i, c in enumerate(chained)
                  if cmds.decode(c)[0] == "LOAD" and cmds.decode(c)[1]["after_stores"]]
        assert len(marked) == 1, (name, M, K, N, marked)
        first_a = marked[0]
        # The marked LOAD is the plain stream's first A LOAD (scratchpad row 0 of panel 0).
        def unmarked(c):
            name_, f = cmds.decode(c)
            return cmds.load(f["spad_addr"], f["mem_offset"], f["rows"], f["elems"],
                             f["stride"], to_bias=f["to_bias"], to_requant=f["to_requant"]) \
                if name_ == "LOAD" else c
        stripped = [unmarked(c) for c in chained]
        if s.whole:
            strip = stripped.pop(0)
            assert cmds.decode(strip)[1]["spad_addr"] == s.b_base, cmds.describe(strip)
            assert strip in plain
            plain = plain[:plain.index(strip)] + plain[plain.index(strip) + 1:]
            first_a -= 1
        assert stripped == plain, (name, M, K, N)
        f = cmds.decode(plain[first_a])[1]
        assert f["spad_addr"] == 0 and not f["to_bias"] and not f["to_requant"], \
            cmds.describe(plain[first_a])
        assert all(cmds.decode(c)[0] != "STORE" for c in plain[:first_a])
