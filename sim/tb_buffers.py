"""cocotb bench of the scratchpad and the accumulator (:mod:`mxe.hw.scratchpad`,
:mod:`mxe.hw.accumulator`).

Run through :func:`mxe.sim.runner.run_bench` with the matching component as top level. Each
test writes random rows (masked writes on the scratchpad; overwrite and accumulate, often to the
same row on consecutive cycles, on the accumulator), then reads every row back through the read
port(s) and compares with a numpy model.
"""

import logging

import cocotb
import numpy as np
from amaranth.lib import data
from cocotb.clock import Clock
from cocotb.triggers import FallingEdge, ReadOnly, RisingEdge

from mxe.hw.accumulator import ACC_READ_LATENCY, acc_row_layout
from mxe.hw.scratchpad import spad_read_latency, spad_row_layout
from mxe.sim.runner import bench_config, bench_seed


def pack_fields(layout, **values):
    """Pack ``values`` (ints) into a StructLayout's bit vector."""
    word = 0
    for name, field in layout:
        word |= (int(values[name]) & ((1 << field.width) - 1)) << field.offset
    return word


def pack_row(values, width):
    mask = (1 << width) - 1
    return sum((int(v) & mask) << (i * width) for i, v in enumerate(values))


def unpack_row(word, count, width, signed):
    values = np.array([(word >> (i * width)) & ((1 << width) - 1) for i in range(count)],
                      dtype=np.int64)
    if signed:
        values = np.where(values >= 1 << (width - 1), values - (1 << width), values)
    return values


def wrap(values, width, signed):
    return unpack_row(pack_row(values, width), len(values), width, signed)


def value_range(width, signed):
    return (-(1 << (width - 1)), 1 << (width - 1)) if signed else (0, 1 << width)


async def start(dut):
    cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
    dut.rst.value = 1
    dut.i_write__valid.value = 0
    await RisingEdge(dut.clk)
    await RisingEdge(dut.clk)
    dut.rst.value = 0
    await FallingEdge(dut.clk)


async def read_rows(dut, port, addrs, latency, count, width, signed):
    """Read ``addrs`` through read port ``port``, one per cycle; each row is taken ``latency``
    cycles after its address."""
    en, addr, data = (getattr(dut, f"{port}__{s}") for s in ("en", "addr", "data"))
    rows = []
    for t in range(len(addrs) + latency - 1):
        en.value = t < len(addrs)
        if t < len(addrs):
            addr.value = int(addrs[t])
        await RisingEdge(dut.clk)
        await ReadOnly()
        if t >= latency - 1:
            rows.append(unpack_row(data.value.to_unsigned(), count, width, signed))
        await FallingEdge(dut.clk)
    en.value = 0
    return rows


@cocotb.test()
async def test_scratchpad(dut):
    config = bench_config()
    seed = bench_seed()
    logging.getLogger("cocotb.tb").info("seed %d config %s", seed, config.key())
    rng = np.random.default_rng(seed)
    await start(dut)
    n, w = config.spad_row_elems, config.input_width
    aw = (config.spad_depth - 1).bit_length()
    layout = data.StructLayout({"addr": aw, "data": spad_row_layout(config), "mask": n})
    lo, hi = value_range(w, config.signed)
    model = np.zeros((config.spad_depth, n), dtype=np.int64)
    for _ in range(3 * config.spad_depth // 2):
        if rng.random() < 0.2:
            dut.i_write__valid.value = 0
        else:
            addr = int(rng.integers(config.spad_depth))
            row = rng.integers(lo, hi, size=n)
            mask = rng.integers(0, 2, size=n) if rng.random() < 0.5 else np.ones(n, dtype=int)
            dut.i_write__valid.value = 1
            dut.i_write__payload.value = pack_fields(
                layout, addr=addr, data=pack_row(row, w), mask=pack_row(mask, 1))
            model[addr] = np.where(mask.astype(bool), row, model[addr])
        await FallingEdge(dut.clk)
    dut.i_write__valid.value = 0
    order = rng.permutation(config.spad_depth)
    for port, addrs in (("read_a", order), ("read_b", order[::-1])):
        rows = await read_rows(dut, port, addrs, spad_read_latency(config), n, w,
                               config.signed)
        for a, row in zip(addrs, rows):
            assert (row == model[a]).all(), f"{port} row {a}: {row} != {model[a]}"


@cocotb.test()
async def test_accumulator(dut):
    config = bench_config()
    seed = bench_seed()
    logging.getLogger("cocotb.tb").info("seed %d config %s", seed, config.key())
    rng = np.random.default_rng(seed)
    await start(dut)
    n, w = config.cols, config.acc_width
    aw = (config.acc_depth - 1).bit_length()
    layout = data.StructLayout({"addr": aw, "data": acc_row_layout(config), "accumulate": 1})
    lo, hi = value_range(w, config.signed)
    model = np.zeros((config.acc_depth, n), dtype=np.int64)
    hot = rng.integers(config.acc_depth, size=4)
    same = 0
    last = None
    for _ in range(max(4 * config.acc_depth, 500)):
        if rng.random() < 0.15:
            dut.i_write__valid.value = 0
            last = None
            await FallingEdge(dut.clk)
            continue
        addr = int(rng.choice(hot)) if rng.random() < 0.5 else int(rng.integers(config.acc_depth))
        row = rng.integers(lo, hi, size=n)
        acc = bool(rng.random() < 0.75)
        dut.i_write__valid.value = 1
        dut.i_write__payload.value = pack_fields(layout, addr=addr, data=pack_row(row, w),
                                                 accumulate=acc)
        model[addr] = wrap(model[addr] + row if acc else row, w, config.signed)
        same += acc and last == addr
        last = addr
        await FallingEdge(dut.clk)
    dut.i_write__valid.value = 0
    for _ in range(3):
        await FallingEdge(dut.clk)
    addrs = rng.permutation(config.acc_depth)
    rows = await read_rows(dut, "read", addrs, ACC_READ_LATENCY, n, w, config.signed)
    for a, row in zip(addrs, rows):
        assert (row == model[a]).all(), f"row {a}: {row} != {model[a]}"
    assert same > 10, f"only {same} back-to-back accumulates to one row"
