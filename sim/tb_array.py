"""cocotb bench of the bare systolic array (:class:`mxe.hw.array.SystolicArray`).

Run through :func:`mxe.sim.runner.run_bench`; it receives its configuration, seed and
parameters from the environment. Parameters (``MXE_PARAMS``, JSON):

``m, k, n``
    GEMM shape for ``test_gemm`` (tiled into ``ceil(k/rows) * ceil(n/cols)`` weight tiles, partial
    sums added up modulo ``2**acc_width`` as the accumulator does).
``tiles, max_rows``
    Number of weight tiles and the largest activation tile for ``test_random_tiles``.
``gap``
    Probability of an idle cycle between two transfers on either input in
    ``test_random_tiles`` (the other tests send back to back and check the cycle count exactly
    against the cycle model).
``extremes``
    Fraction of operands set to the extreme value (e.g. -128).
"""

import json
import logging
from math import ceil

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import FallingEdge, ReadOnly, RisingEdge

from mxe.sim import model
from mxe.sim.cycle_model import array_tile_cycles
from mxe.sim.runner import bench_config, bench_params, bench_seed


def pack(values, width):
    """Pack integers into one bit vector, element 0 in the low bits."""
    mask = (1 << width) - 1
    word = 0
    for i, v in enumerate(values):
        word |= (int(v) & mask) << (i * width)
    return word


def unpack(word, count, width, signed):
    mask = (1 << width) - 1
    values = [(word >> (i * width)) & mask for i in range(count)]
    if signed:
        values = [v - (1 << width) if v >> (width - 1) else v for v in values]
    return values


class ArrayTB:
    """Drives weight and activation tiles into the array and collects its result rows."""

    def __init__(self, dut, config, rng, *, gap=0.0):
        self.dut = dut
        self.config = config
        self.rng = rng
        self.gap = gap
        self.log = logging.getLogger("cocotb.tb")
        cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())

    async def reset(self):
        dut = self.dut
        dut.rst.value = 1
        dut.i_weight__valid.value = 0
        dut.i_act__valid.value = 0
        for _ in range(3):
            await RisingEdge(dut.clk)
        dut.rst.value = 0

    def _idle(self):
        """Random idle cycles before the next transfer (none when ``gap`` is 0)."""
        if not self.gap:
            return 0
        return int(self.rng.geometric(1 - self.gap)) - 1

    async def run(self, weight_tiles, act_tiles):
        """Send every tile, collect every result row.

        Returns
        -------
        results : list of (row values, last)
        cycles : int
            From the cycle the first weight row went in to the cycle the last result came out,
            both included.
        """
        dut, config = self.dut, self.config
        w_rows = [row for tile in weight_tiles for row in tile]
        act_rows = [(row, i == len(tile) - 1) for tile in act_tiles for i, row in enumerate(tile)]
        expected_rows = len(act_rows)
        w_words = [pack(row, config.input_width) for row in w_rows]
        act_words = [pack(row, config.input_width) | (last << (config.rows * config.input_width))
                     for row, last in act_rows]
        data_bits = config.cols * config.acc_width

        results = []
        w_next = act_next = 0
        w_idle, act_idle = self._idle(), self._idle()
        w_valid = act_valid = False
        cycle = 0
        first_cycle = last_cycle = None
        while len(results) < expected_rows:
            await FallingEdge(dut.clk)
            # A source raises valid when its idle time is over and keeps it up until the transfer.
            if not w_valid and w_next < len(w_words):
                if w_idle:
                    w_idle -= 1
                else:
                    w_valid = True
                    dut.i_weight__payload.value = w_words[w_next]
            if not act_valid and act_next < len(act_words):
                if act_idle:
                    act_idle -= 1
                else:
                    act_valid = True
                    dut.i_act__payload.value = act_words[act_next]
            dut.i_weight__valid.value = int(w_valid)
            dut.i_act__valid.value = int(act_valid)
            await ReadOnly()
            if w_valid and dut.i_weight__ready.value:
                if first_cycle is None:
                    first_cycle = cycle
                w_next += 1
                w_valid = False
                w_idle = self._idle()
            if act_valid and dut.i_act__ready.value:
                act_next += 1
                act_valid = False
                act_idle = self._idle()
            if dut.o_out__valid.value:
                word = dut.o_out__payload.value.to_unsigned()
                results.append((unpack(word, config.cols, config.acc_width, config.signed),
                                bool(word >> data_bits & 1)))
                last_cycle = cycle
            cycle += 1
            if cycle > 100 * (len(w_words) + expected_rows) + 1000:
                raise AssertionError(f"array stalled: {len(results)} of {expected_rows} results "
                                     f"after {cycle} cycles")
        await RisingEdge(dut.clk)
        dut.i_weight__valid.value = 0
        dut.i_act__valid.value = 0
        return results, last_cycle - first_cycle + 1


def check_tiles(tb, weight_tiles, act_tiles, results):
    """Every result row against the golden model, and the ``last`` flags."""
    config = tb.config
    expected = []
    for w, a in zip(weight_tiles, act_tiles):
        tile = model.matmul(a, w, config)
        expected += [(list(row), i == len(tile) - 1) for i, row in enumerate(tile)]
    assert len(results) == len(expected), f"{len(results)} result rows, expected {len(expected)}"
    for i, ((got, got_last), (want, want_last)) in enumerate(zip(results, expected)):
        assert got == [int(v) for v in want], f"result row {i}: got {got}, expected {want}"
        assert got_last == want_last, f"result row {i}: last={got_last}, expected {want_last}"


def bench_setup(dut, *, gap):
    config = bench_config()
    seed = bench_seed()
    params = bench_params()
    logging.getLogger("cocotb.tb").info("seed %d, config %s, params %s", seed, config.key(),
                                        json.dumps(params))
    rng = np.random.default_rng(seed)
    return config, params, ArrayTB(dut, config, rng, gap=gap)


def write_result(name, **values):
    """Leave measured numbers for the caller (the ``mxe`` command) in the test directory."""
    with open(f"{name}.json", "w") as f:
        json.dump(values, f)


async def random_tiles(dut, *, gap):
    config, params, tb = bench_setup(dut, gap=gap)
    rng = tb.rng
    extremes = params.get("extremes", 0.1)
    n_tiles = params.get("tiles", 6)
    max_rows = params.get("max_rows", 2 * config.rows + 3)
    weight_tiles = [model.random_operands(rng, (config.rows, config.cols), config,
                                          extremes=extremes) for _ in range(n_tiles)]
    tile_rows = [int(rng.integers(1, max_rows, endpoint=True)) for _ in range(n_tiles)]
    act_tiles = [model.random_operands(rng, (m, config.rows), config, extremes=extremes)
                 for m in tile_rows]
    await tb.reset()
    results, cycles = await tb.run(weight_tiles, act_tiles)
    check_tiles(tb, weight_tiles, act_tiles, results)
    if not tb.gap:
        predicted = array_tile_cycles(tile_rows, config)
        assert cycles == predicted, f"{cycles} cycles, cycle model says {predicted}"
    tb.log.info("%d tiles of %s rows: %d cycles, all results match", n_tiles, tile_rows, cycles)


@cocotb.test()
async def test_random_tiles(dut):
    """Random weight tiles, each with a random number of activation rows, random idle cycles
    between transfers on both inputs."""
    await random_tiles(dut, gap=bench_params().get("gap", 0.3))


@cocotb.test()
async def test_back_to_back_tiles(dut):
    """Random tiles sent as fast as the array takes them, shorter and longer than ``rows``:
    results and the exact cycle count."""
    await random_tiles(dut, gap=0.0)


@cocotb.test()
async def test_gemm(dut):
    """A whole GEMM as a chain of weight tiles, partial sums added up modulo 2**acc_width."""
    config, params, tb = bench_setup(dut, gap=0.0)
    rng = tb.rng
    rows, cols = config.rows, config.cols
    m, k, n = params.get("m", 3 * rows), params.get("k", 4 * rows), params.get("n", 2 * cols)
    a = model.random_operands(rng, (m, k), config, extremes=params.get("extremes", 0.05))
    b = model.random_operands(rng, (k, n), config, extremes=params.get("extremes", 0.05))
    kt, nt = ceil(k / rows), ceil(n / cols)
    # Zero-pad to whole tiles, as the driver does.
    a_pad = np.zeros((m, kt * rows), dtype=np.int64)
    a_pad[:, :k] = a
    b_pad = np.zeros((kt * rows, nt * cols), dtype=np.int64)
    b_pad[:k, :n] = b
    weight_tiles, act_tiles = [], []
    for j in range(nt):
        for i in range(kt):
            weight_tiles.append(b_pad[i * rows:(i + 1) * rows, j * cols:(j + 1) * cols])
            act_tiles.append(a_pad[:, i * rows:(i + 1) * rows])
    await tb.reset()
    results, cycles = await tb.run(weight_tiles, act_tiles)
    check_tiles(tb, weight_tiles, act_tiles, results)

    c = np.zeros((m, nt * cols), dtype=np.int64)
    for t, (j, i) in enumerate((j, i) for j in range(nt) for i in range(kt)):
        tile = np.array([row for row, _ in results[t * m:(t + 1) * m]], dtype=np.int64)
        c[:, j * cols:(j + 1) * cols] += tile
    c = model.wrap(c[:, :n], config.acc_width, config.signed)
    want = model.matmul(a, b, config)
    mismatches = int(np.count_nonzero(c != want))
    assert mismatches == 0, f"{mismatches} of {c.size} GEMM results differ from the model"

    predicted = array_tile_cycles([m] * len(weight_tiles), config)
    assert cycles == predicted, f"{cycles} cycles, cycle model says {predicted}"
    tb.log.info("GEMM %dx%dx%d: %d weight tiles, %d cycles (model %d), all %d results match",
                m, k, n, len(weight_tiles), cycles, predicted, c.size)
    write_result("gemm", m=m, k=k, n=n, tiles=len(weight_tiles), cycles=cycles,
                 predicted=predicted, mismatches=mismatches, results=int(c.size))
