"""The load unit's bias and per-column requantization rows (Amaranth simulation). Without the
deep pipeline each beat's values go straight into ``o_bias`` and ``o_requant``, also where one
value spans two beats (64-bit accumulators on a 32-bit bus), and a row that stops part-way (a DMA
error) has changed only the places its beats carried; with it they go through the row buffer and
a row that stops part-way changes nothing. Only the first ``elems`` places change."""

import os

import numpy as np
import pytest
from amaranth.sim import Simulator

from mxe.hw.config import REQUANT_ELEM_BYTES, EngineConfig
from mxe.hw.load_unit import LoadUnit

SEED = int(os.environ.get("MXE_SEED", "1"))

CONFIGS = {
    # 4-byte values on 4-byte beats; a value spanning two beats; two values a beat.
    "lean": EngineConfig.preset("lean"),
    "acc64": EngineConfig.preset("lean", acc_width=64),
    "small-shallow": EngineConfig.preset("small", deep_pipeline=False),
    # For a fast clock the values go through the row buffer, a row at a time.
    "small": EngineConfig.preset("small"),
}


def _signed(value, width):
    return value - (1 << width) if value >> (width - 1) & 1 else value


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_post_rows_from_beats(name):
    config = CONFIGS[name]
    print(f"seed {SEED} (MXE_SEED={SEED} reproduces)")
    rng = np.random.default_rng(SEED)
    dut = LoadUnit(config)
    bus_bytes, cols, ab = config.axi_bytes, config.cols, config.acc_elem_bytes
    # The model of the unit's outputs: bias values and (multiplier, shift) per column.
    bias = [0] * cols
    mult = [0] * cols
    shift = [0] * cols

    def row_beats(data):
        padded = data + bytes(-len(data) % bus_bytes)
        return [int.from_bytes(padded[i:i + bus_bytes], "little")
                for i in range(0, len(padded), bus_bytes)]

    async def load(ctx, kind, elems, rows, cut=None):
        """One LOAD into the bias (``kind`` "bias") or the requantization values ("requant"):
        its command, its rows' beats (only ``cut`` beats of the last row if given: an error),
        its done entry. Updates the model."""
        nbytes = ab if kind == "bias" else REQUANT_ELEM_BYTES
        ctx.set(dut.i_cmd.payload, {"addr": 0, "stride": elems * nbytes, "rows": rows,
                                    "elems": elems, "spad_addr": 0,
                                    "to_bias": kind == "bias", "to_requant": kind == "requant"})
        ctx.set(dut.i_cmd.valid, 1)
        await ctx.tick().until(dut.i_cmd.ready)
        ctx.set(dut.i_cmd.valid, 0)
        await ctx.tick().repeat(3)       # the DMA's data comes after its check and AR at least
        for r in range(rows):
            data = bytes(rng.integers(0, 256, elems * nbytes, dtype=np.uint8))
            beats = row_beats(data)
            last_row = r == rows - 1
            sent = beats if cut is None or not last_row else beats[:cut]
            for i, word in enumerate(sent):
                ctx.set(dut.i_rd_data.payload, {"data": word, "bytes": bus_bytes,
                                                "row_last": i == len(beats) - 1,
                                                "last": last_row and i == len(beats) - 1})
                ctx.set(dut.i_rd_data.valid, 1)
                await ctx.tick()
                if config.deep_pipeline and len(sent) < len(beats):
                    continue                     # a row cut short changes nothing
                if config.deep_pipeline and i < len(beats) - 1:
                    continue                     # the row changes the values at its end
                # The model: every value whose bytes have all arrived, or part of one.
                last = len(beats) - 1 if config.deep_pipeline else i
                arrived = (last + 1) * bus_bytes
                beats_seen = range(0 if config.deep_pipeline else i, last + 1)
                for j in range(elems):
                    lo = j * nbytes
                    got = data[lo:min(lo + nbytes, arrived)]
                    if not got or not any(lo < (k + 1) * bus_bytes and lo + nbytes > k * bus_bytes
                                          for k in beats_seen):
                        continue
                    if kind == "bias":
                        width = config.acc_width
                        old = bias[j] % (1 << width)
                        part = int.from_bytes(got, "little")
                        bits = min(8 * len(got), width)
                        new = (old & ~((1 << bits) - 1)) | (part & ((1 << bits) - 1))
                        bias[j] = _signed(new, width) if config.signed else new
                    elif r == 0:
                        mult[j] = _signed(int.from_bytes(data[lo:lo + 4], "little"), 32) \
                            if arrived >= lo + 4 else mult[j]
                    else:
                        shift[j] = data[lo] % 64
            ctx.set(dut.i_rd_data.valid, 0)
        ctx.set(dut.i_rd_done.payload, {"error": 0, "addr": 0})
        ctx.set(dut.i_rd_done.valid, 1)
        await ctx.tick()
        ctx.set(dut.i_rd_done.valid, 0)
        await ctx.tick().repeat(2)

    def check(ctx, what):
        got_bias = [ctx.get(dut.o_bias[j]) for j in range(cols)]
        got_q = [(ctx.get(dut.o_requant[j].multiplier), ctx.get(dut.o_requant[j].shift))
                 for j in range(cols)]
        assert got_bias == bias, f"{what}: bias {got_bias} != {bias}"
        assert got_q == list(zip(mult, shift)), f"{what}: requant {got_q}"

    async def bench(ctx):
        ctx.set(dut.o_rd_cmd.ready, 1)
        for trial in range(12):
            elems = int(rng.integers(1, cols + 1))
            await load(ctx, "bias", elems, 1)
            check(ctx, f"bias load {trial}, {elems} values")
            await load(ctx, "requant", elems, 2)
            check(ctx, f"requant load {trial}, {elems} values")
        # A bias row cut after its first beat (a DMA error): only that beat's places change.
        await load(ctx, "bias", cols, 1, cut=1)
        check(ctx, "bias row cut after one beat")

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
