"""Post-processor: the golden model against Python-integer / Fraction arithmetic, and the
gateware (Amaranth simulation) against the golden model with random gaps and backpressure.

Seeds: ``MXE_SEED`` in the environment overrides the default seed; every random test prints the
seed it used (shown by pytest on failure).
"""

import os
import random
from fractions import Fraction
from math import floor

import numpy as np
import pytest
from amaranth.sim import Simulator

from mxe.hw.config import EngineConfig
from mxe.hw.postproc import PostProcessor, postproc_latency
from mxe.sim import model


def _seed(default):
    seed = int(os.environ.get("MXE_SEED", default))
    print(f"seed {seed} (set MXE_SEED={seed} to reproduce)")
    return seed


# Independent reference: exact rational arithmetic, written without the model's shift trick.

def ref_round_half_away(fraction):
    magnitude = abs(fraction)
    n = floor(magnitude)
    if magnitude - n >= Fraction(1, 2):
        n += 1
    return n if fraction >= 0 else -n


def ref_requant(x, requant, signed, column=0):
    """``requant``: a (multiplier, shift) pair or a model.Requant (of ``column`` if per
    column); Python's round() of a Fraction rounds half to even."""
    requant = model.Requant.of(requant)
    multiplier, shift = requant.multiplier, requant.shift
    if requant.per_column:
        multiplier, shift = multiplier[column], shift[column]
    exact = Fraction(x * multiplier, 2 ** shift)
    if requant.round_even:     # ONNX: rint(value + zero point)
        q = round(exact + requant.zero_point)
    else:                      # TFLite: the zero point added to the rounded value
        q = ref_round_half_away(exact) + requant.zero_point
    if requant.clamp is not None:
        lo, hi = requant.clamp
    else:
        lo, hi = (-128, 127) if signed else (0, 255)
    return min(max(q, lo), hi)


def ref_wrap(v, width, signed):
    v %= 2 ** width
    if signed and v >= 2 ** (width - 1):
        v -= 2 ** width
    return v


def ref_postprocess(row, config, bias, relu, requant):
    out = []
    for c, x in enumerate(row):
        if bias is not None:
            x = ref_wrap(x + bias[c], config.acc_width, config.signed)
        if relu and x < 0:
            x = 0
        if requant is not None:
            x = ref_requant(x, requant, config.signed, c)
        out.append(x)
    return out


def acc_range(config):
    if config.signed:
        return -2 ** (config.acc_width - 1), 2 ** (config.acc_width - 1) - 1
    return 0, 2 ** config.acc_width - 1


def random_acc(rng, config, n):
    """Accumulator values: extremes, small values, and uniform over the whole range."""
    lo, hi = acc_range(config)
    special = [lo, hi, lo + 1, hi - 1, 0, 1, -1 if config.signed else 2, 127, 128, -128 % (hi + 1)]
    special = [v for v in special if lo <= v <= hi]
    values = []
    for _ in range(n):
        r = rng.random()
        if r < 0.25:
            values.append(rng.choice(special))
        elif r < 0.5:
            values.append(max(lo, min(hi, rng.randint(-300, 300))))
        else:
            values.append(rng.randint(lo, hi))
    return values


MULT_EXTREMES = [-2 ** 31, 2 ** 31 - 1, 0, 1, -1, 2 ** 30, -2 ** 30]
SHIFT_EXTREMES = [0, 1, 31, 63]
ZERO_POINT_EXTREMES = [-256, 255, -128, 127, 0, 1, -1]


def random_clamp(rng):
    """None, a whole output type, a ReLU/ReLU6-like range or a random range inside a type."""
    r = rng.random()
    if r < 0.3:
        return None
    if r < 0.5:
        return rng.choice([(-128, 127), (0, 255)])
    lo, hi = rng.choice([(-128, 127), (0, 255)])
    a, b = sorted(rng.randint(lo, hi) for _ in range(2))
    return (a, b)


def random_requant(rng, cols):
    """A model.Requant over the whole parameter space, extremes often; per column (a different
    multiplier and shift in every column) half the time."""
    def multiplier():
        return rng.choice(MULT_EXTREMES + [rng.randint(-2 ** 31, 2 ** 31 - 1)] * 3)

    def shift():
        return rng.choice(SHIFT_EXTREMES + [rng.randint(0, 63)] * 3)

    per_column = rng.random() < 0.5
    return model.Requant(
        [multiplier() for _ in range(cols)] if per_column else multiplier(),
        [shift() for _ in range(cols)] if per_column else shift(),
        zero_point=rng.choice(ZERO_POINT_EXTREMES + [rng.randint(-256, 255)] * 3)
        if rng.random() < 0.6 else 0,
        clamp=random_clamp(rng), round_even=rng.random() < 0.5)


# --- the model against the reference -----------------------------------------------------------

def test_requantize_ties_both_signs():
    config = EngineConfig(rows=4, cols=4)
    # x * m / 2**s lands exactly on .5: away from zero on both sides.
    cases = [(3, 1, 1, 2), (-3, 1, 1, -2), (1, 1, 1, 1), (-1, 1, 1, -1), (5, 1, 1, 3),
             (-5, 1, 1, -3), (3 << 29, 1, 30, 2), (-(3 << 29), 1, 30, -2),
             (1, 2 ** 30, 31, 1), (-1, 2 ** 30, 31, -1), (2 ** 31 - 1, 2 ** 31 - 1, 63, 0),
             (-2 ** 31, -2 ** 31, 63, 1), (-2 ** 31, 2 ** 31 - 1, 63, 0),
             (-(2 ** 31 - 1), 2 ** 31 - 1, 62, -1), (7, 1, 0, 7),
             (201, 1, 1, 101), (-201, 1, 1, -101), (255, 1, 1, 127), (-257, 1, 1, -128)]
    for x, mult, shift, want in cases:
        got = int(model.requantize([x], (mult, shift), config)[0])
        assert got == want == ref_requant(x, (mult, shift), True), (x, mult, shift, got, want)


def test_requantize_half_to_even_and_zero_point():
    config = EngineConfig(rows=4, cols=4)
    # x / 2: ties go to the even neighbour, on both sides of zero; the zero point comes after.
    xs = [1, 3, 5, -1, -3, -5, 255, -257, 2]
    even = model.Requant(1, 1, round_even=True)
    assert list(model.requantize(xs, even, config)) == [0, 2, 2, 0, -2, -2, 127, -128, 1]
    shifted = model.Requant(1, 1, zero_point=10, round_even=True)
    assert list(model.requantize(xs, shifted, config)) == [10, 12, 12, 10, 8, 8, 127, -118, 11]
    # An odd zero point: the tie goes to the even output, not to the even rounded value.
    odd = model.Requant(1, 1, zero_point=3, round_even=True)
    assert list(model.requantize(xs, odd, config)) == [4, 4, 6, 2, 2, 0, 127, -126, 4]
    away = model.Requant(1, 1, zero_point=3)
    assert list(model.requantize(xs, away, config)) == [4, 5, 6, 2, 1, 0, 127, -126, 4]
    # The zero point is added before the clamp: 245 + 10 is 255 (uint8), not 245 clamped first.
    uint8 = model.Requant(1, 0, zero_point=10, clamp=(0, 255))
    assert list(model.requantize([245, 300, -10, -11], uint8, config)) == [255, 255, 0, 0]
    relu6 = model.Requant(1, 0, zero_point=-128, clamp=(-128, -128 + 6))
    assert list(model.requantize([-5, 0, 3, 6, 7], relu6, config)) == [-128, -128, -125, -122,
                                                                      -122]
    for x in xs + [2 ** 31 - 1, -2 ** 31]:
        for r in (even, shifted, odd, away, uint8, relu6):
            assert int(model.requantize([x], r, config)[0]) == ref_requant(x, r, True)


def test_requant_parameter_errors():
    with pytest.raises(ValueError, match="zero_point must be in -256..255"):
        model.Requant(1, 0, zero_point=256)
    with pytest.raises(ValueError, match="clamp must be a range"):
        model.Requant(1, 0, clamp=(5, 4))
    with pytest.raises(ValueError, match="clamp must be a range"):
        model.Requant(1, 0, clamp=(-1, 128))
    with pytest.raises(ValueError, match="clamp lo must be in"):
        model.Requant(1, 0, clamp=(-257, 0))
    with pytest.raises(TypeError, match="clamp must be None or a"):
        model.Requant(1, 0, clamp=5)
    with pytest.raises(TypeError, match="round_even"):
        model.Requant(1, 0, round_even=1)


def test_requantize_saturation_and_unsigned():
    signed = EngineConfig(rows=4, cols=4)
    unsigned = EngineConfig(rows=4, cols=4, signed=False)
    assert list(model.requantize([2 ** 31 - 1, -2 ** 31], (2 ** 31 - 1, 0), signed)) == [127, -128]
    assert list(model.requantize([2 ** 32 - 1, 5], (-1, 0), unsigned)) == [0, 0]
    assert list(model.requantize([2 ** 32 - 1, 511, 509], (1, 1), unsigned)) == [255, 255, 255]
    assert list(model.requantize([509, 3], (1, 2), unsigned)) == [127, 1]


@pytest.mark.parametrize("config", [
    EngineConfig(rows=4, cols=4),
    EngineConfig(rows=4, cols=4, signed=False),
    EngineConfig(rows=4, cols=3, acc_width=64),
    EngineConfig(rows=4, cols=3, acc_width=64, signed=False),
    EngineConfig(rows=4, cols=2, input_width=4, acc_width=8),
], ids=lambda c: c.key())
def test_model_against_fraction_reference(config):
    rng = random.Random(_seed(1234))
    lo, hi = acc_range(config)
    for trial in range(300):
        rows = rng.randint(1, 4)
        acc = [random_acc(rng, config, config.cols) for _ in range(rows)]
        bias = random_acc(rng, config, config.cols) if rng.random() < 0.5 else None
        relu = rng.random() < 0.5
        requant = random_requant(rng, config.cols) if rng.random() < 0.7 else None
        got = model.postprocess(np.array(acc, dtype=object), config, bias=bias, relu=relu,
                                requant=requant)
        want = [ref_postprocess(row, config, bias, relu, requant) for row in acc]
        assert got.dtype in (np.int64, np.uint64)
        assert [[int(v) for v in row] for row in got] == want, (trial, acc, bias, relu, requant)


def test_model_argument_errors():
    config = EngineConfig(rows=4, cols=4)
    with pytest.raises(ValueError, match="multiplier"):
        model.requantize([1], (2 ** 31, 0), config)
    with pytest.raises(ValueError, match="multiplier"):
        model.postprocess([[0] * 4], config, requant=(-2 ** 31 - 1, 0))
    with pytest.raises(ValueError, match="shift"):
        model.requantize([1], (1, 64), config)
    with pytest.raises(ValueError, match="shift"):
        model.requantize([1], (1, -1), config)
    with pytest.raises(ValueError, match="bias"):
        model.postprocess([[0] * 4], config, bias=[0] * 3)
    with pytest.raises(ValueError, match="bias"):
        model.postprocess([[0] * 4], config, bias=[2 ** 31] * 4)
    with pytest.raises(ValueError, match="acc"):
        model.postprocess([[0] * 3], config)
    with pytest.raises(ValueError, match="acc"):
        model.postprocess([[2 ** 31, 0, 0, 0]], config)
    with pytest.raises(TypeError, match="shift"):
        model.requantize([1], (1, 1.5), config)
    with pytest.raises(TypeError, match="requant"):
        model.postprocess([[0] * 4], config, requant=5)


# --- the gateware against the model ------------------------------------------------------------

def make_stores(rng, config, n_stores, rows_per_store):
    """Stores with different settings; the first few cover the named corner cases."""
    lo, hi = acc_range(config)
    stores = []
    fixed = [
        dict(bias=None, relu=False, requant=None),
        dict(bias="random", relu=True, requant=None),
        dict(bias=None, relu=False, requant=(2 ** 31 - 1, 0)),
        dict(bias=None, relu=False, requant=(-2 ** 31, 63)),
        dict(bias=None, relu=False, requant=(2 ** 31 - 1, 63)),
        dict(bias="random", relu=True, requant=(2 ** 30, 31)),
        dict(bias=None, relu=False, requant=(1, 1)),        # ties at every odd value
        dict(bias=None, relu=False, requant=(-1, 1)),
        dict(bias=None, relu=False, requant=(2 ** 20, 21)),  # the same ties, far below
        dict(bias=None, relu=False, requant=(-2 ** 20, 21)),
        dict(bias=None, relu=False, requant=(3, 31)),
        dict(bias="extreme", relu=False, requant=None),     # wrap-around of the bias add
        dict(bias=None, relu=False, requant=model.Requant(1, 1, round_even=True)),
        dict(bias=None, relu=False, requant=model.Requant(-2 ** 20, 21, round_even=True,
                                                          zero_point=-7)),
        dict(bias=None, relu=False, requant=model.Requant(1, 0, zero_point=255,
                                                          clamp=(0, 255))),
        dict(bias=None, relu=False, requant=model.Requant(1, 1, zero_point=-256,
                                                          clamp=(-128, 127))),
        dict(bias=None, relu=False, requant=model.Requant(3, 2, zero_point=-128,
                                                          clamp=(-128, -122))),
    ]
    for k in range(n_stores):
        if k < len(fixed):
            settings = dict(fixed[k])
        else:
            settings = dict(
                bias=rng.choice([None, "random", "extreme"]), relu=rng.random() < 0.5,
                requant=random_requant(rng, config.cols) if rng.random() < 0.7 else None)
        if settings["bias"] == "random":
            settings["bias"] = random_acc(rng, config, config.cols)
        elif settings["bias"] == "extreme":
            settings["bias"] = [rng.choice([lo, hi]) for _ in range(config.cols)]
        rows = [random_acc(rng, config, config.cols) for _ in range(rows_per_store)]
        requant = settings["requant"] and model.Requant.of(settings["requant"])
        if requant and not requant.per_column \
                and (abs(requant.multiplier), requant.shift) in ((1, 1), (2 ** 20, 21)):
            # Odd values at the small end: x / 2 is exactly .5 off an integer.
            rows = [[max(lo, min(hi, 2 * rng.randint(-150, 150) + 1)) for _ in row]
                    for row in rows]
        settings["rows"] = rows
        stores.append(settings)
    return stores


def run_gateware(config, stores, rng, *, gap, stall):
    dut = PostProcessor(config)
    sim = Simulator(dut)
    sim.add_clock(1e-6)
    results = []  # per store: list of (row, last)

    async def producer(ctx):
        for k, store in enumerate(stores):
            # Settings change only between stores, with the pipeline empty.
            ctx.set(dut.cfg.bias_en, store["bias"] is not None)
            ctx.set(dut.cfg.relu, store["relu"])
            ctx.set(dut.cfg.requant, store["requant"] is not None)
            requant = model.Requant.of(store["requant"] or (0, 0))
            lo, hi = requant.bounds(config)
            per_column = requant.per_column
            # The per-column inputs hold stale values when CONFIG's multiplier and shift apply.
            columns = zip(requant.multiplier, requant.shift) if per_column else \
                [(rng.randint(-2 ** 31, 2 ** 31 - 1), rng.randint(0, 63))] * config.cols
            for c, (mult, shift) in enumerate(columns):
                ctx.set(dut.column_quant[c], {"multiplier": mult, "shift": shift})
            ctx.set(dut.cfg.quant, {"multiplier": 0 if per_column else requant.multiplier,
                                    "shift": 0 if per_column else requant.shift,
                                    "per_channel": per_column,
                                    "zero_point": requant.zero_point,
                                    "round_even": requant.round_even,
                                    "clamp_min": lo, "clamp_max": hi})
            for c, b in enumerate(store["bias"] or [0] * config.cols):
                ctx.set(dut.bias[c], b)
            rows = store["rows"]
            for i, row in enumerate(rows):
                while rng.random() < gap:
                    await ctx.tick()
                ctx.set(dut.i_data.valid, 1)
                ctx.set(dut.i_data.payload, {"data": row, "last": i == len(rows) - 1})
                await ctx.tick().until(dut.i_data.ready)
                ctx.set(dut.i_data.valid, 0)
            # Change the settings only after the consumer has collected this store.
            while len(results) < k + 1:
                await ctx.tick()

    async def consumer(ctx):
        for store in stores:
            rows = []
            cycles = 0
            while len(rows) < len(store["rows"]):
                ready = rng.random() >= stall
                ctx.set(dut.o_data.ready, ready)
                _, _, valid, payload = await ctx.tick().sample(dut.o_data.valid,
                                                                dut.o_data.payload)
                if valid and ready:
                    rows.append(([int(v) for v in payload.data], int(payload.last)))
                cycles += 1
                assert cycles < 100 * config.postproc_row_cycles * (len(store["rows"]) + 20), \
                    "post-processor stalled"
            ctx.set(dut.o_data.ready, 0)
            results.append(rows)

    sim.add_testbench(producer)
    sim.add_testbench(consumer)
    sim.run()
    return results


CONFIGS = [
    EngineConfig(rows=4, cols=4),
    EngineConfig(rows=4, cols=3, signed=False),
    EngineConfig(rows=4, cols=2, acc_width=64),
    EngineConfig(rows=4, cols=2, acc_width=64, signed=False),
    EngineConfig(rows=4, cols=2, input_width=4, acc_width=8),
    # Shared lanes: a row in cols / postproc_lanes passes.
    EngineConfig(rows=4, cols=4, postproc_lanes=1),
    EngineConfig(rows=4, cols=6, postproc_lanes=2, signed=False),
    EngineConfig(rows=4, cols=3, acc_width=64, postproc_lanes=1),
    # The serial multiplier: one lane (the iCEBreaker's engine, without the deep pipeline's
    # skid buffer), every lane, two lanes.
    EngineConfig(rows=4, cols=4, postproc_lanes=1, serial_requant=True, deep_pipeline=False),
    EngineConfig(rows=4, cols=3, acc_width=64, signed=False, serial_requant=True),
    EngineConfig(rows=4, cols=4, postproc_lanes=2, input_width=4, acc_width=8,
                 serial_requant=True),
]


@pytest.mark.parametrize("gap, stall", [(0.0, 0.0), (0.3, 0.4)], ids=["streaming", "random"])
@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: c.key())
def test_gateware_against_model(config, gap, stall):
    seed = _seed(20240 + CONFIGS.index(config))
    rng = random.Random(seed)
    # The serial multiplier's requantized rows take 33 cycles a pass: fewer of them.
    stores = make_stores(rng, config, n_stores=32,
                         rows_per_store=6 if config.serial_requant else 24)
    results = run_gateware(config, stores, rng, gap=gap, stall=stall)
    checked = 0
    for k, (store, got) in enumerate(zip(stores, results)):
        want = model.postprocess(np.array(store["rows"], dtype=object), config,
                                 bias=store["bias"], relu=store["relu"],
                                 requant=store["requant"])
        assert len(got) == len(store["rows"])
        for i, ((row, last), want_row) in enumerate(zip(got, want)):
            # A requantized value leaves in an accumulator-shaped element, of which the store
            # keeps the low byte.
            want_row = [ref_wrap(int(v), config.acc_width, config.signed) for v in want_row]
            assert row == want_row, (
                f"seed {seed} store {k} {({k2: v for k2, v in store.items() if k2 != 'rows'})} "
                f"row {i}: in {store['rows'][i]}, got {row}, expected {list(want_row)}")
            assert last == (i == len(got) - 1), f"seed {seed} store {k} row {i}: last {last}"
            checked += 1
    assert checked == sum(len(s["rows"]) for s in stores)


@pytest.mark.parametrize("lanes, serial, requant, deep, interval, latency", [
    (0, False, True, True, 1, 11), (1, False, True, True, 2, 11), (1, False, False, True, 2, 11),
    (0, True, True, True, 33, 41), (1, True, True, True, 66, 41), (1, True, False, True, 2, 9),
    (0, False, True, False, 1, 10), (1, True, True, False, 66, 40),
    (1, True, False, False, 2, 8)])
def test_throughput_and_latency(lanes, serial, requant, deep, interval, latency):
    """With no gaps and no backpressure, a row every ``postproc_row_cycles`` (one cycle a pass,
    33 with the serial multiplier; one a pass for rows not requantized) after the documented
    latency, counted from the cycle the row is accepted; one cycle sooner without the deep
    pipeline's skid buffer."""
    config = EngineConfig(rows=4, cols=2, postproc_lanes=lanes, serial_requant=serial,
                          deep_pipeline=deep)
    passes = config.postproc_passes
    assert passes == (1 if lanes == 0 else 2)
    if requant:
        assert config.postproc_row_cycles == interval
    dut = PostProcessor(config)
    assert postproc_latency(config, requant=requant) == latency
    assert dut.latency == postproc_latency(config)
    sim = Simulator(dut)
    sim.add_clock(1e-6)
    n = 20
    accepted, seen = [], []

    async def tb(ctx):
        ctx.set(dut.o_data.ready, 1)
        ctx.set(dut.cfg.requant, requant)
        ctx.set(dut.cfg.quant, {"multiplier": 1, "shift": 0, "clamp_min": -128,
                                "clamp_max": 127})
        for cycle in range(interval * n + latency + 10):
            k = len(accepted)
            ctx.set(dut.i_data.valid, k < n)
            ctx.set(dut.i_data.payload, {"data": [k, -k], "last": 0})
            _, _, ready, valid, payload = await ctx.tick().sample(
                dut.i_data.ready, dut.o_data.valid, dut.o_data.payload)
            if k < n and ready:
                accepted.append(cycle)
            if valid:
                seen.append((cycle, [int(v) for v in payload.data]))

    sim.add_testbench(tb)
    sim.run()
    first = interval - interval // passes      # the first row's earlier passes
    assert accepted == [interval * k + first for k in range(n)]
    assert [data for _, data in seen] == [[k, -k] for k in range(n)]
    assert [cycle for cycle, _ in seen] == [a + latency for a in accepted]


def test_constructor_rejects_non_config():
    with pytest.raises(TypeError, match="config"):
        PostProcessor({"rows": 4})
