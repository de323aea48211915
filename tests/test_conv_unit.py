"""The convolution unit (hw/conv_unit.py) and its reference (sim/conv_model.py).

- The reference expansion run by the engine model equals the direct-loop convolution
  (``mxe.sim.conv.conv2d_reference``, written apart from it) over random geometries: kernels
  1x1..7x7 with KH != KW, strides 1..4, dilations 1..2, padding on every side, groups and
  depthwise, several images, bias, ReLU and requantization.
- The gateware in Amaranth's simulator generates the reference's sub-command stream command by
  command, with random back-pressure; ordinary commands pass through.
- Refusals: each rule of LIMITS_DOC gives its error code.
- The set-up's cycles (CONV_C to the first sub-command) stay within the architecture page's.

Reproduce a failure with the printed seed: ``MXE_SEED=<seed> pytest tests/test_conv_unit.py``.
"""

import random

import numpy as np
import pytest
from amaranth.sim import Simulator

from mxe.hw.config import EngineConfig
from mxe.hw.conv_unit import ConvUnit
from mxe.hw.isa import ErrorCode
from mxe.sim import commands as cmds
from mxe.sim.conv import ConvGeometry, conv2d_reference
from mxe.sim.conv_model import descriptor, expand, plan_conv, schedule
from mxe.sim.engine_model import EngineModel, decode_elems
from mxe.sim.model import Requant, postprocess_columns as postprocess

CONFIGS = {
    "tiny": EngineConfig.preset("tiny", conv_unit=True),
    "small": EngineConfig.preset("small", conv_unit=True),
    # Not square, 2-byte unsigned operands, 8-byte accumulators.
    "odd": EngineConfig.preset("tiny", rows=4, cols=6, input_width=12, signed=False,
                               acc_width=40, spad_depth=1024, acc_depth=64, axi_data_width=64,
                               conv_unit=True),
    # Sides that are not powers of two: the set-up divides and multiplies by rows and cols
    # instead of shifting.
    "odd_sides": EngineConfig.preset("tiny", rows=6, cols=5, spad_depth=1024, acc_depth=64,
                                     conv_unit=True),
}


def random_geometry(rng, *, depthwise=False):
    """A random geometry over the unit's range and an input it fits, or ``None``."""
    kernel = (int(rng.integers(1, 8)), int(rng.integers(1, 8)))
    stride = tuple(int(v) for v in rng.integers(1, 5, size=2))
    dilation = tuple(int(v) for v in rng.integers(1, 3, size=2))
    pads = tuple(int(v) for v in rng.integers(0, 4, size=4))
    H, W = (int(v) for v in rng.integers(1, 14, size=2))
    if depthwise:
        groups = cg = int(rng.integers(1, 6))
        C, cout = groups, groups
    else:
        groups = int(rng.choice([1, 1, 2, 3]))
        C = groups * int(rng.integers(1, 12))
        cout = groups * int(rng.integers(1, 12))
    geometry = ConvGeometry.of(kernel, stride=stride, padding=pads, dilation=dilation,
                               groups=groups)
    try:
        geometry.output_size(H, W)
    except ValueError:
        return None
    return geometry, (int(rng.integers(1, 3)), H, W, C), cout


def run_model(config, x, w, geometry, *, bias=None, relu=False, requant=None, pad_value=0):
    plan = plan_conv(config, x, w, geometry, bias=bias, relu=relu, requant=requant,
                     pad_value=pad_value)
    if plan is None:
        return None
    mem = bytearray(1 << 20)
    for offset, blob in plan.blobs.items():
        mem[offset:offset + len(blob)] = blob
    model = EngineModel(config, mem)
    outcome = model.run(plan.commands)
    assert outcome.ok, outcome
    data = bytes(model.memory[plan.out_offset:plan.out_offset + plan.out_bytes])
    if requant is None:
        values = decode_elems(data, plan.out_elem_bytes, config.acc_width, config.signed)
    else:
        values = decode_elems(data, 1, 8, requant.bounds(config)[0] < 0)
    return values.reshape(plan.out_shape)


@pytest.mark.parametrize("name", ["tiny", "small", "odd"])
def test_model_against_direct_loops(name, seed):
    """The expansion on the engine model equals the direct-loop reference (post-processed by the
    post-processor's model) over random geometries; every padding edge, KH != KW, strides,
    dilation, groups and depthwise come up (counted and asserted)."""
    c = CONFIGS[name]
    rng = np.random.default_rng(seed)
    print(f"seed {seed}")
    lo, hi = c.input_range
    seen = {"pad_top": 0, "pad_left": 0, "pad_bottom": 0, "pad_right": 0, "kh!=kw": 0,
            "stride>1": 0, "dilation 2": 0, "depthwise": 0, "run": 0}
    tried = 0
    while seen["run"] < 60 and tried < 400:
        tried += 1
        drawn = random_geometry(rng, depthwise=tried % 5 == 0)
        if drawn is None:
            continue
        geometry, shape, cout = drawn
        x = rng.integers(lo, hi, size=shape, endpoint=True)
        w = rng.integers(lo, hi, size=(cout, *geometry.kernel, shape[3] // geometry.groups),
                         endpoint=True)
        zp = int(rng.integers(lo, hi, endpoint=True))
        bias = rng.integers(-1000, 1000, size=cout) if c.signed and tried % 2 else None
        requant = None
        if tried % 3 == 1:
            requant = Requant(int(rng.integers(1, 1 << 20)), 18, zero_point=3)
        elif tried % 3 == 2:
            requant = Requant(rng.integers(1, 1 << 20, size=cout).tolist(),
                              rng.integers(10, 24, size=cout).tolist())
        relu = bool(tried % 4 == 0)
        got = run_model(c, x, w, geometry, bias=bias, relu=relu, requant=requant,
                        pad_value=zp)
        if got is None:
            continue
        acc = conv2d_reference(x, w, geometry, pad_value=zp)
        want = postprocess(acc.reshape(-1, cout), c, bias=bias, relu=relu,
                           requant=requant).reshape(acc.shape)
        assert (got == want).all(), f"seed {seed}: {geometry} {shape} -> {cout}: " \
            f"{int((got != want).sum())} wrong"
        top, left, bottom, right = geometry.pads
        seen["run"] += 1
        seen["pad_top"] += top > 0
        seen["pad_left"] += left > 0
        seen["pad_bottom"] += bottom > 0
        seen["pad_right"] += right > 0
        seen["kh!=kw"] += geometry.kernel[0] != geometry.kernel[1]
        seen["stride>1"] += max(geometry.stride) > 1
        seen["dilation 2"] += max(geometry.dilation) > 1
        seen["depthwise"] += geometry.groups == shape[3] and geometry.groups > 1
    assert all(seen.values()), f"seed {seed}: not every case came up: {seen}"


def run_unit(config, stream, seed, *, ready_prob=0.7, max_cycles=400_000):
    """Push ``stream`` through a ConvUnit; returns what it offers the controller."""
    dut = ConvUnit(config)
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


def unit_case(rng, config, *, kernel, stride=(1, 1), dilation=(1, 1), pads=(0, 0, 0, 0), h, w,
              c, n, options=()):
    eb = config.elem_bytes
    return descriptor(h=h, w=w, c=c, n=n, kernel=kernel, stride=stride, dilation=dilation,
                      pads=pads, in_offset=rng.randrange(1 << 20),
                      in_pitch=min(0xFFFF, c * eb + rng.randrange(0, 8)),
                      w_offset=rng.randrange(1 << 20), w_stride=n * eb + rng.randrange(0, 8),
                      out_offset=rng.randrange(1 << 31), out_pitch=n * 4 + rng.randrange(0, 8),
                      zp_offset=rng.randrange(1 << 20), channel_offset=rng.randrange(1 << 20),
                      **{o: True for o in options})


def check_unit(config, desc, seed):
    before, after = cmds.config(5, 7), cmds.fence()
    want = [before, *expand(config, desc), after]
    got = run_unit(config, [before, *desc, after], seed)
    for i, (g, w) in enumerate(zip(got, want)):
        assert g == w, f"seed {seed}: command {i}: got {cmds.describe(g)}, want " \
            f"{cmds.describe(w)}"
    assert len(got) == len(want), f"seed {seed}: {len(got)} commands, want {len(want)}"
    return len(want)


# (kernel, stride, dilation, pads (top, left, bottom, right), h, w, c, n, options)
UNIT_CASES = [
    ((3, 3), (1, 1), (1, 1), (1, 1, 1, 1), 6, 5, 3, 5, ("bias",)),
    ((2, 3), (2, 1), (1, 2), (0, 1, 2, 1), 7, 6, 9, 11, ("per_channel", "requant")),
    ((1, 7), (1, 3), (1, 1), (0, 3, 0, 2), 5, 9, 2, 9, ("bias", "per_channel", "relu")),
    ((5, 2), (3, 4), (2, 1), (3, 0, 1, 2), 12, 11, 5, 3, ()),
    ((1, 1), (4, 2), (1, 1), (0, 0, 0, 0), 9, 7, 4, 4, ("requant",)),
    ((7, 7), (1, 1), (2, 2), (2, 2, 2, 2), 11, 11, 1, 1, ()),
]


@pytest.mark.parametrize("name", ["tiny", "odd", "odd_sides"])
def test_unit_stream_equals_reference(name, seed):
    """The gateware's sub-commands equal the reference's, for fixed geometries that cover the
    loops (channel blocks, passes, column phases, padding on each side, lines skipped by a
    stride larger than the kernel) and random ones, with random back-pressure."""
    c = CONFIGS[name]
    rng = random.Random(seed)
    print(f"seed {seed}")
    cases = [dict(kernel=k, stride=s, dilation=d, pads=p, h=h, w=w, c=ch, n=n, options=o)
             for k, s, d, p, h, w, ch, n, o in UNIT_CASES]
    nprng = np.random.default_rng(seed)
    while len(cases) < len(UNIT_CASES) + 6:
        drawn = random_geometry(nprng)
        if drawn is None:
            continue
        geometry, (_n, h, w, ch), cout = drawn
        cases.append(dict(kernel=geometry.kernel, stride=geometry.stride,
                          dilation=geometry.dilation, pads=geometry.pads, h=h, w=w,
                          c=ch // geometry.groups, n=cout // geometry.groups, options=()))
    for i, case in enumerate(cases):
        desc = unit_case(rng, c, **case)
        check_unit(c, desc, seed + i)


def setup_cycles(config, desc):
    """Cycles from the unit taking CONV_C to its first sub-command, the consumer always ready."""
    dut = ConvUnit(config)
    cycles = []

    async def testbench(ctx):
        ctx.set(dut.enable, 1)
        ctx.set(dut.o_cmd.ready, 1)
        taken = None
        pushed = 0
        for i in range(10_000):
            valid = pushed < len(desc)
            ctx.set(dut.i_cmd.valid, valid)
            ctx.set(dut.i_cmd.payload, desc[pushed] if valid else 0)
            if ctx.get(dut.o_cmd.valid):
                cycles.append(i - taken)
                return
            popped = valid and ctx.get(dut.i_cmd.ready)
            await ctx.tick()
            if popped:
                pushed += 1
                if pushed == len(desc):
                    taken = i + 1
        raise AssertionError("no sub-command in 10000 cycles")

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(testbench)
    sim.run()
    return cycles[0]


#: (stride, set-up cycles at most): the architecture page's figures (38 for stride 1 here).
SETUP_BOUNDS = [((1, 1), 40), ((2, 2), 40), ((3, 3), 120)]


@pytest.mark.parametrize("stride,bound", SETUP_BOUNDS, ids=[str(s) for s, _ in SETUP_BOUNDS])
def test_unit_setup_cycles(stride, bound):
    """The set-up of a 3x3 16x16x16 -> 16 descriptor on small stays within the cycles the
    architecture page gives: shifts for strides 1, 2, 4, the divider for 3."""
    c = CONFIGS["small"]
    desc = descriptor(h=16, w=16, c=16, n=16, kernel=(3, 3), stride=stride, dilation=(1, 1),
                      pads=(1, 1, 1, 1), in_offset=0x1000, in_pitch=16, w_offset=0x8000,
                      w_stride=16, out_offset=0x20000, out_pitch=64, zp_offset=0x100,
                      channel_offset=0x300, bias=True)
    cycles = setup_cycles(c, desc)
    print(f"stride {stride}: set-up {cycles} cycles")
    assert cycles <= bound, f"set-up {cycles} cycles, more than {bound}"


def test_unit_passes_other_commands(seed):
    c = CONFIGS["tiny"]
    stream = [cmds.config(5, 7), cmds.load(0, 0, 1, 1, 0), cmds.matmul(0, 0, 1, 1, 0),
              cmds.fence()]
    assert run_unit(c, stream, seed) == stream


def _fields(**changes):
    f = dict(kh=3, kw=3, stride_h=1, stride_w=1, dil_h=1, dil_w=1, h=8, w=8, c=4, n=4,
             pad_top=1, pad_bottom=1, pad_left=1, pad_right=1)
    f.update(changes)
    return f


#: (fields changed, error): every refusal rule of the convolution descriptor.
REFUSALS = [
    (dict(h=0), ErrorCode.BAD_DIM), (dict(w=0), ErrorCode.BAD_DIM),
    (dict(c=0), ErrorCode.BAD_DIM), (dict(n=0), ErrorCode.BAD_DIM),
    (dict(kh=0), ErrorCode.BAD_DIM), (dict(kw=0), ErrorCode.BAD_DIM),
    (dict(stride_h=0), ErrorCode.BAD_DIM), (dict(stride_w=5), ErrorCode.BAD_DIM),
    (dict(stride_h=7), ErrorCode.BAD_DIM), (dict(dil_h=0), ErrorCode.BAD_DIM),
    (dict(dil_w=3), ErrorCode.BAD_DIM),
    # The dilated kernel taller / wider than the padded input.
    (dict(kh=7, dil_h=2, h=10, pad_top=1, pad_bottom=1), ErrorCode.BAD_DIM),
    (dict(kw=5, w=2, pad_left=1, pad_right=1), ErrorCode.BAD_DIM),
    # Too large for the buffers: the ring (channels), two output lines (width).
    (dict(c=4000, kh=7, kw=7), ErrorCode.BAD_ADDR),
    (dict(w=4000), ErrorCode.BAD_ADDR),
    # A ring so large that its size overflows the unit's 24-bit size registers.
    (dict(c=0xFFFF, w=120, h=20, kh=7, dil_h=2), ErrorCode.BAD_ADDR),
]


@pytest.mark.parametrize("changes,error", REFUSALS,
                         ids=[",".join(f"{k}={v}" for k, v in ch.items()) for ch, _ in REFUSALS])
def test_refusals(changes, error, seed):
    """Each refusal rule: the reference schedule refuses with its code, the engine model stops
    with it at the descriptor's one sub-command, and the gateware emits that command."""
    c = CONFIGS["tiny"]
    f = _fields(**changes)
    assert schedule(c, f)[1] == error
    rng = random.Random(seed)
    desc = unit_case(rng, c, kernel=(f["kh"], f["kw"]), stride=(f["stride_h"], f["stride_w"]),
                     dilation=(f["dil_h"], f["dil_w"]),
                     pads=(f["pad_top"], f["pad_left"], f["pad_bottom"], f["pad_right"]),
                     h=f["h"], w=f["w"], c=f["c"], n=f["n"])
    model = EngineModel(c, bytearray(1 << 16))
    outcome = model.run([cmds.config(5, 7), *desc])
    assert outcome.error == error and outcome.index == 1
    assert check_unit(c, desc, seed) == 3


def test_unsupported_without_the_unit():
    """Without conv_unit the model refuses CONV_A with UNSUPPORTED, and plan-less expansion
    is refused in Python."""
    c = EngineConfig.preset("tiny")
    assert not c.conv_unit
    desc = unit_case(random.Random(1), c, kernel=(3, 3), h=4, w=4, c=2, n=2)
    outcome = EngineModel(c, bytearray(1 << 16)).run(desc)
    assert outcome.error == ErrorCode.UNSUPPORTED and outcome.index == 0
    with pytest.raises(ValueError, match="conv_unit"):
        expand(c, desc)


# The engine RTL ------------------------------------------------------------------------------

#: The engine benches run on ``CONFIGS["tiny"]`` (4x4, 32-bit bus) in the default suite, on
#: ``CONFIGS["small"]`` (8x8, 64-bit bus) behind slow (its Verilator build takes twice as long).
CASES = ["test_conv_random", "test_conv_refused", "test_conv_soft_reset"]


def run_conv_bench(sim, testcase, seed, engine="tiny", **params):
    from mxe.hw.generate import TOPS
    from mxe.sim.runner import run_bench
    return run_bench(sim=sim, name="mxe_engine", make_component=TOPS["engine"][0],
                     config=CONFIGS[engine], test_module="mxe.sim.tb_conv", testcase=testcase,
                     seed=seed, params=params)


@pytest.mark.parametrize("engine", ["tiny", pytest.param("small", marks=pytest.mark.slow)])
def test_engine_conv_descriptor(engine, seed):
    """Random convolutions through the descriptor on the engine RTL (Verilator), bit-exact
    against the direct loops, DMA bytes as planned; refusals with their codes and recovery; a
    soft reset in the middle of one."""
    run_conv_bench("verilator", CASES, seed, engine, count=5)


@pytest.mark.slow
def test_engine_conv_descriptor_icarus(seed):
    run_conv_bench("icarus", CASES, seed, count=3, top=8)
