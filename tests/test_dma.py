"""DMA: cocotb benches against cocotbext-axi's AxiRam on Verilator and Icarus, plus quick
Amaranth-level checks of the interface."""

import os

import pytest

from mxe.hw.config import EngineConfig
from mxe.hw.dma import DMA, DMAError
from mxe.sim.runner import run_bench, simulator_missing

from engine_benches import sim_cases

SEED = int(os.environ.get("MXE_SEED", "1"))

CONFIGS = {
    # 64-bit bus, 16-beat bursts, 4 reads in flight
    "small": EngineConfig.preset("small"),
    # 32-bit bus, short bursts, one read in flight: many bursts, many 4 KiB splits
    "narrow": EngineConfig.preset("tiny", max_burst_len=4, max_outstanding_reads=1),
    # 256-bit bus, 64-beat bursts (4 KiB splits bite), 64-bit addresses
    "wide": EngineConfig.preset("small", axi_data_width=256, max_burst_len=64,
                                max_outstanding_reads=8, axi_addr_width=64),
    # 64-bit bus without unaligned transfers: no byte shifters, misaligned commands refused;
    # and without the deep pipeline's skid buffers on the AR, AW, R and W channels (the lean
    # engine of the engine benches has such a DMA with a 32-bit bus)
    "aligned": EngineConfig.preset("small", unaligned_dma=False, max_burst_len=8,
                                   max_outstanding_reads=3, deep_pipeline=False),
}


def _sim(sim):
    missing = simulator_missing(sim)
    if missing:
        pytest.skip(missing)
    return sim


def _run(sim, name, testcase, seed, **params):
    print(f"seed {seed} (MXE_SEED={seed} reproduces)")
    run_bench(sim=sim, name="mxe_dma", make_component=DMA, config=CONFIGS[name],
              test_module="mxe.sim.tb_dma", testcase=testcase, seed=seed, params=params)


def _cases(names):
    """``names`` on both simulators, Verilator behind slow: a DMA's Verilator build takes 30 s
    and serves these benches alone, and every engine bench runs a DMA on Verilator."""
    return sim_cases(names, ident=lambda sim, name: f"{name}-{sim}",
                     slow=lambda sim, name: sim == "verilator")


@pytest.mark.parametrize("sim, name", _cases(sorted(CONFIGS)))
def test_dma_random(sim, name):
    """Random sizes, strides, alignments; random pauses on all AXI channels and streams;
    random memory latency; whole-memory check (guard bytes); bursts checked on the bus."""
    _run(_sim(sim), name, "test_random", SEED)


@pytest.mark.parametrize("sim, name", _cases(["small", "narrow", "aligned"]))
def test_dma_errors(sim, name):
    """SLVERR (small) or DECERR (narrow) on reads and writes, window violations, zero
    dimensions, misaligned commands (aligned); recovery."""
    _run(_sim(sim), name, "test_errors", SEED, decerr=name == "narrow")


@pytest.mark.parametrize("sim, name", _cases(["small", "narrow"]))
def test_dma_read_error_edges(sim, name):
    """A read failing on its last beat (or its first), then a good one, over and over."""
    _run(_sim(sim), name, "test_read_error_edges", SEED)


@pytest.mark.parametrize("sim, name", _cases(["small"]))
def test_dma_back_to_back(sim, name):
    _run(_sim(sim), name, "test_back_to_back", SEED)


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(2, 12))
@pytest.mark.parametrize("name", sorted(CONFIGS))
@pytest.mark.parametrize("testcase", ["test_random", "test_errors"])
def test_dma_sweep(testcase, name, seed, request):
    """Long random sweeps: only when selected with ``-m slow``."""
    if "slow" not in (request.config.getoption("markexpr") or "") \
            or "not slow" in request.config.getoption("markexpr"):
        pytest.skip("long sweep: run with -m slow")
    _run(_sim("verilator"), name, testcase, seed, commands=60)


def test_dma_ports():
    """The AXI port is named so that AxiBus.from_prefix(dut, "axi_") finds it."""
    from mxe.hw.generate import TOPS, to_verilog

    make, module = TOPS["dma"]
    text = to_verilog(make(CONFIGS["small"]), name=module)
    for name in ("axi__awaddr", "axi__wstrb", "axi__bresp", "axi__arlen", "axi__rlast",
                 "i_rd_cmd__payload", "o_rd_data__payload", "o_wr_done__valid"):
        assert f" {name};" in text, name
    assert DMAError.BAD_CMD.value == 4 and DMAError.OK.value == 0


@pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")
def test_engine_limits():
    """An engine's DMA is as wide as its LOADs and STOREs get: rows up to the deeper buffer,
    row bytes up to a buffer row of the widest element (or a burst); limits that cannot hold a
    burst are refused."""
    from mxe.hw.config import REQUANT_ELEM_BYTES
    from mxe.hw.dma import DMALimits, FULL_LIMITS, engine_limits
    for config in [*CONFIGS.values(), EngineConfig.preset("default"),
                   EngineConfig(rows=3, cols=5, input_width=12, acc_width=40, spad_depth=32,
                                acc_depth=4096, axi_data_width=32, max_burst_len=1)]:
        limits = engine_limits(config)
        deepest = max(config.spad_depth, config.acc_depth)
        widest = max(config.spad_row_elems * config.elem_bytes,
                     config.cols * max(config.acc_elem_bytes, REQUANT_ELEM_BYTES),
                     config.max_burst_len * config.axi_bytes)
        assert 2 ** (limits.rows - 1) <= deepest < 2 ** limits.rows, (config, limits)
        assert 2 ** (limits.row_bytes - 1) <= widest < 2 ** limits.row_bytes, (config, limits)
        DMA(config, limits)
    with pytest.raises(ValueError, match="holding a burst's 64 bytes"):
        DMA(CONFIGS["narrow"].replace(max_burst_len=16), DMALimits(rows=8, row_bytes=6))
    with pytest.raises(ValueError, match="limits must be"):
        DMA(CONFIGS["small"], DMALimits(rows=17))
    assert FULL_LIMITS == DMALimits(16, 16)


@pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")
def test_dma_bad_config():
    with pytest.raises(TypeError, match="config"):
        DMA({"axi_data_width": 64})


def test_dma_window_check_boundaries():
    """The command check (Amaranth simulation): exact window edges, zero dimensions, extents
    that would wrap the address space, against a Python model of the rule."""
    import numpy as np
    from amaranth.sim import Simulator

    from mxe.hw.dma import _Checker

    config = CONFIGS["small"]
    dut = _Checker(config)
    rng = np.random.default_rng(SEED)
    base, limit = 0x1000, 0x9000
    cases = [
        (base, 1, 0x8000, 0),              # exactly the window
        (base, 2, 0x4000, 0x4000),         # two rows filling it exactly
        (base, 2, 0x4000, 0x4001),         # one byte too far
        (base - 1, 1, 1, 0),               # one byte below
        (limit - 1, 1, 1, 0),              # the last byte
        (limit, 1, 1, 0),                  # the limit itself
        (base, 0, 16, 16),                 # rows == 0
        (base, 4, 0, 16),                  # row_bytes == 0
        (0xFFFF_FF00, 2, 0x100, 0x100),    # would wrap the 32-bit address space
        (base, 0xFFFF, 1, 0xFFFF_FFFF),    # huge stride
        (base, 1, 0x100, 0x1_0000),        # a stride past 16 bits, one row: inside
        (base, 2, 1, 0x1_0000),            # the same stride, two rows: outside
        (base, 2, 1, 0x1_7FFF),            # one row beyond 0x8000
    ]
    for _ in range(40):
        rows = int(rng.integers(0, 6))
        row_bytes = int(rng.integers(0, 0x3000))
        stride = int(rng.integers(0, 0x3000))
        addr = int(rng.integers(0, 0xA000))
        cases.append((addr, rows, row_bytes, stride))

    def model(addr, rows, row_bytes, stride):
        if rows == 0 or row_bytes == 0:
            return DMAError.BAD_CMD
        end = addr + (rows - 1) * stride + row_bytes
        return DMAError.OK if base <= addr and end <= limit else DMAError.WINDOW

    async def tb(ctx):
        ctx.set(dut.window_base, base)
        ctx.set(dut.window_limit, limit)
        ctx.set(dut.o_cmd.ready, 1)
        for addr, rows, row_bytes, stride in cases:
            ctx.set(dut.i_cmd.valid, 1)
            ctx.set(dut.i_cmd.payload, {"addr": addr, "rows": rows, "row_bytes": row_bytes,
                                        "stride": stride})
            await ctx.tick().until(dut.i_cmd.ready)
            ctx.set(dut.i_cmd.valid, 0)
            error, = await ctx.tick().sample(dut.o_cmd.payload.error).until(dut.o_cmd.valid)
            want = model(addr, rows, row_bytes, stride)
            assert error == want, f"{(hex(addr), rows, row_bytes, stride)}: {error} != {want}"

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(tb)
    sim.run()


def _checked(config, base, limit, addr, rows, row_bytes, stride):
    """What the checker hands on for a command (Python model): the error and every field the
    read and write engines take from it."""
    aw, b = config.axi_addr_width, config.axi_bytes
    s = b.bit_length() - 1
    in_beats = -(-row_bytes // b)
    tail = (row_bytes - 1) & 0xFFFF
    tail_over = row_bytes - 1 - config.max_burst_len * b
    off = addr % b if config.unaligned_dma else 0      # an aligned-only DMA has no lane offset
    if rows == 0 or row_bytes == 0:
        error = DMAError.BAD_CMD
    elif not config.unaligned_dma and (addr % b or (rows > 1 and stride % b)):
        error = DMAError.UNALIGNED
    else:
        # exact: an end at 2**aw or beyond is outside, however it would wrap
        end = addr + (rows - 1) * stride + row_bytes
        error = DMAError.OK if base <= addr and end <= limit else DMAError.WINDOW
    return {
        "error": error,
        "beats": rows * in_beats,             # the write engine drains a refused command's beats
        "in_beats": in_beats, "in_one": in_beats == 1, "tail": tail % b,
        "tails": (tail, tail_over),
        "second": (addr + stride) % 2 ** aw,
        "row0": (addr - addr % b, (off + tail) >> s, (off + tail_over) >> s,
                 ~(addr >> s) % 2 ** (12 - s)),
    }


def _got(payload):
    g, t, r = payload.geometry, payload.tails, payload.row0
    return {
        "error": payload.error, "beats": payload.beats,
        "in_beats": g.in_beats, "in_one": bool(g.in_one), "tail": g.tail,
        "tails": (t.tail, t.tail_over), "second": payload.second,
        "row0": (r.beat_addr, r.left1, r.over1, r.bnd1),
    }


#: The checker alone also runs on the DMA of a board SoC's engine, whose addresses are only as
#: wide as its memory window (mxe.hw.boards.soc.soc_addr_width).
CHECK_CONFIGS = {**CONFIGS, "addr21": EngineConfig.preset("lean", axi_addr_width=21)}


@pytest.mark.parametrize("name", sorted(CHECK_CONFIGS))
def test_dma_check_shift_add(name):
    """The command check's shift-add (Amaranth simulation), against a Python model of every
    field it hands on: one row and no rows (no steps), 65535 rows, strides that need every
    bit, products and sums past 2**aw whose wrapped end would lie inside the window, refused
    commands' beat counts; each command checked in check_latency(config, rows) cycles when
    sent alone, then the same commands back to back with a random ready on the output."""
    import numpy as np
    from amaranth.sim import Simulator

    from mxe.hw.dma import _Checker, check_latency

    config = CHECK_CONFIGS[name]
    aw = config.axi_addr_width
    top = 2 ** aw - 1
    seed = SEED
    print(f"seed {seed} (MXE_SEED={seed} reproduces)")
    rng = np.random.default_rng(seed)
    windows = [(0x1000, 0x9000), (0, top)]
    if aw >= 32:
        windows.append((top - 0xFFFF_FFFF + 0x10, top))                      # 4 GiB
    cases = [
        (0, 1, 1, top),                          # one row: the stride is never added
        (0, 2, 1, top),                          # ... two rows: past 2**aw, wraps to 0
        (0, 0, 16, 16),                          # no rows: no steps, no beats
        (0, 2, 0, 16),                           # no bytes: no beats
        (0, 0xFFFF, 0xFFFF, 0xFFFF),             # every bit of rows - 1 but the lowest
        (0, 0xFFFF, 1, 0x1_0001),                # a stride past 16 bits, 65535 rows
        (0, 0xFFFF, 16, top),                    # refused, its beats still exact
        (0, 0x8001, 1, 2 ** (aw - 15)),          # one addition of 2**aw (the shifted stride)
        (0, 0x8001, 1, 2 ** (aw - 16)),          # one addition of 2**(aw - 1): inside
        (0, 3, 1, 2 ** (aw - 1)),                # the stride passes 2**aw before its addition
        (0x1000, 11, 1, 2 ** aw // 8 - 1),       # past the limit, then past 2**aw, wrapping
        (top + 1 - 0x100, 2, 0x1100, 0x100),     # the end wraps to 0x1000
        (top - 2 ** (aw - 8), 0x101, 1, 2 ** (aw - 16)),  # the end exactly at the limit
        (top - 2 ** (aw - 8), 0x101, 2, 2 ** (aw - 16)),  # one byte past it
        (top - 0xFFFF, 1, 0xFFFF, 0),            # addr + row_bytes exactly at the limit
        (top - 0xFFFE, 1, 0xFFFF, 0),            # ... one past: 2**aw
    ]
    for _ in range(120):
        rows = int(rng.choice([0, 1, 2, 3, 0xFFFF, int(rng.integers(0, 2 ** 16)),
                               int(2 ** rng.uniform(0, 16))]))
        row_bytes = int(2 ** rng.uniform(0, 16)) if rng.random() < 0.9 else 0
        stride = int(2 ** rng.uniform(0, aw)) if rng.random() < 0.9 else int(rng.integers(0, 64))
        addr = int(rng.integers(0, 2 ** aw, dtype=np.uint64)) if rng.random() < 0.3 \
            else int(rng.integers(0, 0xA000))
        cases.append((addr, rows, row_bytes, stride))

    def send(ctx, addr, rows, row_bytes, stride):
        ctx.set(dut.i_cmd.valid, 1)
        ctx.set(dut.i_cmd.payload, {"addr": addr, "rows": rows, "row_bytes": row_bytes,
                                    "stride": stride})

    for base, limit in windows:
        async def feed(ctx, after_each=None):
            ctx.set(dut.window_base, base)
            ctx.set(dut.window_limit, limit)
            for case in cases:
                send(ctx, *case)
                await ctx.tick().until(dut.i_cmd.ready)
                if after_each is not None:
                    await after_each(ctx, case)
            ctx.set(dut.i_cmd.valid, 0)

        async def one_at_a_time(ctx, case):
            ctx.set(dut.i_cmd.valid, 0)
            cycles = 1
            while not ctx.get(dut.o_cmd.valid):
                assert cycles < check_latency(config, case[1]), \
                    f"{case}: no result after {cycles} cycles"
                await ctx.tick()
                cycles += 1
            assert cycles == check_latency(config, case[1]), f"{case}: {cycles} cycles"
            want = _checked(config, base, limit, *case)
            assert _got(ctx.get(dut.o_cmd.payload)) == want, case
            ctx.set(dut.o_cmd.ready, 1)
            await ctx.tick()
            ctx.set(dut.o_cmd.ready, 0)

        dut = _Checker(config)
        sim = Simulator(dut)
        sim.add_clock(1e-8)

        async def alone(ctx):
            await feed(ctx, one_at_a_time)

        sim.add_testbench(alone)
        sim.run()

        dut = _Checker(config)
        got = []

        async def consumer(ctx):
            # Every command within its latency and the random ready's waits: a bound, no hang.
            budget = sum(3 * check_latency(config, case[1]) + 8 for case in cases)
            while len(got) < len(cases):
                budget -= 1
                assert budget > 0, f"{len(got)} of {len(cases)} results"
                ready = bool(rng.random() < 0.5)
                ctx.set(dut.o_cmd.ready, ready)
                _, _, valid, payload = await ctx.tick().sample(dut.o_cmd.valid,
                                                               dut.o_cmd.payload)
                if valid and ready:
                    got.append(_got(payload))

        sim = Simulator(dut)
        sim.add_clock(1e-8)
        sim.add_testbench(feed)
        sim.add_testbench(consumer)
        sim.run()
        for case, payload in zip(cases, got):
            assert payload == _checked(config, base, limit, *case), case
