"""Scratchpad, accumulator and the row fetcher that reads them: Amaranth-level unit tests,
cocotb benches on both simulators, and a block-RAM inference check with Yosys."""

import os

import numpy as np
import pytest
from amaranth import Elaboratable, Module, Signal
from amaranth.lib import data
from amaranth.lib.memory import Memory
from amaranth.sim import Simulator

from mxe.hw.accumulator import Accumulator, acc_write_latency
from mxe.hw.config import EngineConfig
from mxe.hw.fetch import RowFetcher, fetch_depth
from mxe.hw.scratchpad import SPAD_READ_LATENCY, Scratchpad, spad_read_latency
from mxe.sim.runner import run_bench
from mxe.sim.runner import SIMULATORS, simulator_missing

SEEDS = [int(os.environ["MXE_SEED"])] if "MXE_SEED" in os.environ else [1, 2]

_ODD = EngineConfig(rows=3, cols=5, input_width=6, acc_width=13, spad_depth=64, spad_banks=4,
                    acc_depth=32, axi_data_width=32)

CONFIGS = {
    "small": EngineConfig.preset("small"),
    "tiny-unsigned": EngineConfig.preset("tiny", signed=False, acc_width=20),
    "odd": _ODD,
    # The two-cycle read-modify-write (without deep_pipeline).
    "lean": EngineConfig.preset("lean"),
    "odd-shallow": _ODD.replace(deep_pipeline=False),
    # One read port for the read-modify-write and the store path (both pipelines).
    "lean-shared": EngineConfig.preset("lean", acc_read_ports=1),
    "small-shared": EngineConfig.preset("small", acc_read_ports=1),
}


def wrap(values, width, signed):
    """``values`` modulo ``2**width``, as two's complement if ``signed``."""
    values = np.asarray(values, dtype=np.int64) & ((1 << width) - 1)
    if signed:
        values = np.where(values >= 1 << (width - 1), values - (1 << width), values)
    return values


def value_range(width, signed):
    return (-(1 << (width - 1)), 1 << (width - 1)) if signed else (0, 1 << width)


def run_sim(dut, testbench):
    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(testbench)
    sim.run()


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_accumulator_rmw(name, seed):
    """Random overwrite/accumulate streams, mostly to a few hot rows so that back-to-back writes
    to the same address are frequent; every read is compared with a numpy model in which a write
    accepted in cycle t is visible to reads issued from cycle t + acc_write_latency(config) on,
    not before (memory starts at zero). With one read port a read is served only in a cycle
    without an accumulating write (``read_free``), and its data is checked the cycle after."""
    config = CONFIGS[name]
    print(f"seed {seed} config {name}")
    rng = np.random.default_rng(seed)
    dut = Accumulator(config)
    lo, hi = value_range(config.acc_width, config.signed)
    model = np.zeros((config.acc_depth, config.cols), dtype=np.int64)
    hot = rng.integers(0, config.acc_depth, size=3)
    stats = {"reads": 0, "same_addr_b2b": 0}
    shared = config.acc_read_ports == 1

    def apply(until, pending):
        while pending and pending[0][0] <= until:
            _, addr, row, acc = pending.pop(0)
            model[addr] = wrap(model[addr] + row if acc else row, config.acc_width, config.signed)

    def cols(ctx):
        return np.array([ctx.get(dut.read.data[c]) for c in range(config.cols)])

    async def tb(ctx):
        pending = []   # (cycle from which reads see it, addr, row, accumulate)
        expect = None  # model row the read port must show
        last_addr = None
        for t in range(800):
            apply(t, pending)
            valid = rng.random() < 0.85
            addr = (int(rng.choice(hot)) if rng.random() < 0.6
                    else int(rng.integers(config.acc_depth)))
            row = rng.integers(lo, hi, size=config.cols)
            acc = bool(rng.random() < 0.7)
            ren = rng.random() < 0.7
            raddr = (int(rng.choice(hot)) if rng.random() < 0.5
                     else int(rng.integers(config.acc_depth)))
            ctx.set(dut.i_write.valid, valid)
            ctx.set(dut.i_write.payload.addr, addr)
            ctx.set(dut.i_write.payload.data, [int(v) for v in row])
            ctx.set(dut.i_write.payload.accumulate, acc)
            ctx.set(dut.read.en, ren)
            ctx.set(dut.read.addr, raddr)
            if shared:
                free = ctx.get(dut.read_free)
                assert free == (not (valid and acc)), f"cycle {t}: read_free {free}"
                ren = ren and free
                expect = None            # the shared port's data does not hold
            if ren:
                expect = model[raddr].copy()
            if valid:
                pending.append((t + acc_write_latency(config), addr, row, acc))
                stats["same_addr_b2b"] += last_addr == addr and acc
            last_addr = addr if valid else None
            await ctx.tick()
            if expect is not None:  # data holds while en is low
                got = cols(ctx)
                assert (got == expect).all(), \
                    f"cycle {t}: read {raddr} got {got}, expected {expect}"
                stats["reads"] += 1
        ctx.set(dut.i_write.valid, 0)
        apply(1 << 30, pending)
        for addr in range(config.acc_depth):
            ctx.set(dut.read.en, 1)
            ctx.set(dut.read.addr, addr)
            await ctx.tick()
            got = cols(ctx)
            assert (got == model[addr]).all(), f"final read {addr}: {got} != {model[addr]}"

    run_sim(dut, tb)
    assert stats["reads"] > (150 if shared else 400) and stats["same_addr_b2b"] > 30, stats


@pytest.mark.parametrize("name", ["small", "lean"])
def test_accumulator_same_address_burst(name):
    """A directed case: eight accumulates to one row on consecutive cycles add up exactly."""
    config = CONFIGS[name]
    dut = Accumulator(config)
    rows = np.arange(8 * config.cols).reshape(8, config.cols) * 1000 - 20000

    async def tb(ctx):
        ctx.set(dut.i_write.valid, 1)
        for i, row in enumerate(rows):
            ctx.set(dut.i_write.payload.addr, 5)
            ctx.set(dut.i_write.payload.data, [int(v) for v in row])
            ctx.set(dut.i_write.payload.accumulate, i > 0)
            await ctx.tick()
        ctx.set(dut.i_write.valid, 0)
        for _ in range(acc_write_latency(config) - 1):   # the last write was accepted a cycle ago
            await ctx.tick()
        ctx.set(dut.read.en, 1)
        ctx.set(dut.read.addr, 5)
        await ctx.tick()
        got = [ctx.get(dut.read.data[c]) for c in range(config.cols)]
        assert got == list(rows.sum(axis=0)), got

    run_sim(dut, tb)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_scratchpad(name, seed):
    """Random masked writes and two random reads per cycle across all banks, against numpy; each
    read's row is checked spad_read_latency cycles later (3, or 1 without deep_pipeline), and
    while en is low it must hold. A read of the row written in the same cycle (a collision)
    returns zeros."""
    config = CONFIGS[name]
    latency = spad_read_latency(config)
    print(f"seed {seed} config {name}")
    rng = np.random.default_rng(seed)
    dut = Scratchpad(config)
    n = config.spad_row_elems
    lo, hi = value_range(config.input_width, config.signed)
    model = np.zeros((config.spad_depth, n), dtype=np.int64)
    ports = (dut.read_a, dut.read_b)
    checked = [0, 0]    # reads checked, of which collisions

    async def tb(ctx):
        issued = [[], []]    # per port: (cycle, row expected) of each read, in order
        last = 0             # the address of the last cycle's write
        for t in range(600):
            valid = rng.random() < 0.8
            addr = int(rng.integers(config.spad_depth))
            row = rng.integers(lo, hi, size=n)
            mask = rng.integers(0, 2, size=n) if rng.random() < 0.5 else np.ones(n, dtype=int)
            ctx.set(dut.i_write.valid, valid)
            ctx.set(dut.i_write.payload.addr, addr)
            ctx.set(dut.i_write.payload.data, [int(v) for v in row])
            ctx.set(dut.i_write.payload.mask, int(sum(int(b) << i for i, b in enumerate(mask))))
            for i, port in enumerate(ports):
                ren = rng.random() < 0.8
                # often the row written a cycle earlier (visible now) or the row being written
                # (a collision: zeros)
                pick = rng.random()
                raddr = (last if pick < 0.15 else addr if pick < 0.25
                         else int(rng.integers(config.spad_depth)))
                ctx.set(port.en, ren)
                ctx.set(port.addr, raddr)
                if ren:
                    collides = valid and raddr == addr
                    issued[i].append((t, np.zeros(n, dtype=np.int64) if collides
                                      else model[raddr].copy()))
                    checked[1] += collides
            last = addr
            if valid:
                model[addr] = np.where(mask.astype(bool), row, model[addr])
            await ctx.tick()
            # now in cycle t + 1: data is the last read issued `latency` cycles ago or earlier
            # (it holds while en is low)
            for i, port in enumerate(ports):
                done = [e for c, e in issued[i] if c <= t + 1 - latency]
                if done:
                    got = np.array([ctx.get(port.data[e]) for e in range(n)])
                    assert (got == done[-1]).all(), f"cycle {t} port {i}: {got} != {done[-1]}"
                    checked[0] += 1

    run_sim(dut, tb)
    assert checked[0] > 800 and checked[1] > 50, checked


ROW8 = data.ArrayLayout(8, 1)


class _FetchFromRam(Elaboratable):
    """A RowFetcher reading a RAM of ``depth`` 8-bit rows (row i holds i) whose read data comes
    ``latency`` cycles after the address."""

    def __init__(self, latency, depth, register=False):
        self.fetch = RowFetcher(4, ROW8, tag_width=1, latency=latency, register=register,
                                depth=depth)
        self.latency = latency

    def elaborate(self, platform):
        m = Module()
        m.submodules.fetch = fetch = self.fetch
        m.submodules.mem = mem = Memory(shape=8, depth=16, init=range(16))
        rp = mem.read_port()
        m.d.comb += [rp.addr.eq(fetch.read.addr), rp.en.eq(fetch.read.en)]
        data = rp.data
        for _ in range(self.latency - 1):
            delayed = Signal(8)
            m.d.sync += delayed.eq(data)
            data = delayed
        m.d.comb += fetch.read.data.as_value().eq(data)
        return m


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("latency,register,interval", [
    (1, False, 1), (2, False, 1), (SPAD_READ_LATENCY, False, 1), (1, True, 1),
    (1, False, 4), (1, True, 4), (1, False, 2), (1, False, 8)])
def test_row_fetcher(latency, register, interval, seed):
    """Rows come out in request order with their tags, none lost under random back-pressure;
    with a consumer that takes each row ``interval`` cycles after it is first offered and a
    FIFO of fetch_depth entries, a row every ``interval`` cycles, the first taken in the cycle
    latency + register + interval after the first request."""
    print(f"seed {seed} latency {latency} register {register} interval {interval}")
    rng = np.random.default_rng(seed)
    stages = latency + register
    depth = fetch_depth(latency, register, interval)
    dut = _FetchFromRam(latency, depth=depth, register=register)
    fetch = dut.fetch

    async def run(ctx, cycles, p_valid, p_ready):
        sent, got, out_cycles = [], [], []
        offered = 0                  # cycles the row now offered has been offered
        for t in range(cycles):
            addr = int(rng.integers(16))
            valid = rng.random() < p_valid
            if p_ready is None:      # the paced consumer
                ready = offered == interval - 1
            else:
                ready = rng.random() < p_ready
            ctx.set(fetch.i_req.valid, valid)
            ctx.set(fetch.i_req.payload.addr, addr)
            ctx.set(fetch.i_req.payload.tag, addr & 1)
            ctx.set(fetch.o_row.ready, ready)
            if valid and ctx.get(fetch.i_req.ready):
                sent.append(addr)
            row_valid = ctx.get(fetch.o_row.valid)
            if ready and row_valid:
                got.append(ctx.get(fetch.o_row.payload.row.as_value()))
                assert ctx.get(fetch.o_row.payload.tag) == got[-1] & 1, f"cycle {t}"
                out_cycles.append(t)
            offered = 0 if (ready or not row_valid) else offered + 1
            await ctx.tick()
        ctx.set(fetch.i_req.valid, 0)
        ctx.set(fetch.o_row.ready, 1)
        for t in range(cycles, cycles + stages + 4):
            if ctx.get(fetch.o_row.valid):
                got.append(ctx.get(fetch.o_row.payload.row.as_value()))
            await ctx.tick()
        assert got == sent, (sent, got)
        return out_cycles

    async def tb(ctx):
        out_cycles = await run(ctx, 40, 1.0, None)
        assert out_cycles == list(range(stages + interval, 40, interval)), out_cycles
        await run(ctx, 400, 0.7, 0.6)

    run_sim(dut, tb)


@pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")
def test_row_fetcher_bad_parameters():
    with pytest.raises(ValueError, match="latency must be a positive integer"):
        RowFetcher(4, ROW8, tag_width=1, latency=0)
    with pytest.raises(ValueError, match="depth must be a positive integer, not 0"):
        RowFetcher(4, ROW8, tag_width=1, latency=2, depth=0)


@pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")
def test_bad_config():
    with pytest.raises(TypeError, match="config"):
        Scratchpad({"rows": 8})
    with pytest.raises(TypeError, match="config"):
        Accumulator(None)


# cocotb benches on Verilator and Icarus

# The Amaranth-level tests above cover every configuration; the benches check the generated
# Verilog on Icarus, and on Verilator with -m slow (each Verilator build costs ~20 s; every
# engine bench runs both buffers on Verilator too).
BENCH_CONFIGS = {"small": CONFIGS["small"]}
if os.environ.get("MXE_SLOW"):
    BENCH_CONFIGS["odd"] = CONFIGS["odd"]


@pytest.mark.parametrize("sim", ["icarus", pytest.param("verilator", marks=pytest.mark.slow)])
@pytest.mark.parametrize("name", sorted(BENCH_CONFIGS))
@pytest.mark.parametrize("block", ["scratchpad", "accumulator"])
def test_buffers_cocotb(block, name, sim):
    missing = simulator_missing(sim)
    if missing:
        pytest.skip(missing)
    seed = SEEDS[0]
    print(f"seed {seed}")
    make = Scratchpad if block == "scratchpad" else Accumulator
    run_bench(sim=sim, name=f"mxe_{block}", make_component=make, config=BENCH_CONFIGS[name],
              test_module="mxe.sim.tb_buffers", testcase=f"test_{block}", seed=seed)


def test_buffers_map_to_block_ram():
    """The ``tiny`` buffers infer DP16KD (ECP5) and SB_RAM40_4K (iCE40), not flip-flops, and the
    scratchpad's reads go from block RAM to a register with no bypass logic between."""
    from mxe.synth.check_bram import check

    config = EngineConfig.preset("tiny")
    result = check(config)
    for (block, family), (bram, ff) in result.items():
        print(f"{block} {family}: {bram} block RAMs, {ff} flip-flops")
        bits = (config.spad_depth * config.spad_row_bits if block == "scratchpad"
                else config.acc_depth * config.acc_row_bits)
        assert bram > 0, (block, family)
        # flip-flops are pipeline and bypass registers only, far fewer than the memory bits
        # (tiny's accumulator: about ten rows of registers beside 256 rows of block RAM)
        assert ff < bits // 16, (block, family, ff)
        if block == "scratchpad":
            # the registers beside the banks and a few flags: no collision bypass
            # (no_rw_check), which would add a row of flip-flops per port and bank
            regs = 2 * config.spad_banks * (spad_read_latency(config) - 1) * config.spad_row_bits
            assert ff <= regs + 16, (family, ff)
