"""Soak: a long random stream on the engine RTL (``mxe soak``, ``tests/test_soak.py``).

One step at a time, drawn from the bench's seed: a valid GEMM of a random shape, memory
layout (base, alignment, row strides) and post-processing, issued as a command stream or, where
the engine has the GEMM unit, as a descriptor; a refused command after a random prefix of real
work; a window that cuts a GEMM's operands or result; a SLVERR or DECERR at a random byte of a
GEMM's operands or result; a soft reset at a random cycle of a running GEMM. After every step
the whole memory (1 MiB) is compared with the command-level model (:mod:`mxe.sim.engine_model`)
run on the same commands; where the engine may legitimately have done more than the model (the
results of commands already running when an error stopped it, or when a soft reset came), each
byte of the result region must equal either the model's or the finished GEMM's.

Parameters (``MXE_PARAMS``): ``steps`` and ``seconds`` (wall time) end the run, whichever
comes first; ``kinds``, the step kinds to draw from (default: all of :data:`KINDS`); ``progress``, a file to which a line is appended every 100 steps; ``inject``, a
step number before which a byte outside the window is flipped, a fault the soak must report (its
own test). The run leaves ``soak.json`` in its run directory: the steps done, per kind, the rate,
and the first failure with its step number (and, for a soft reset, ``soak-failure.json``: the
GEMM, its commands, and its result region before, after and as the finished GEMM leaves it). The steps depend on the seed alone, so ``steps =
failing step + 1`` with the same seed replays a failure.
"""

import json
import time

import cocotb
import numpy as np
from cocotb.triggers import RisingEdge

from mxe.hw.isa import ErrorCode
from mxe.sim import commands as cmds
from mxe.sim.driver import MXEError, pack_operands, plan_gemm
from mxe.sim.engine_model import EngineModel, bad_commands
from mxe.sim.tb_engine import (WINDOW, expected_result, random_options, setup)

#: Step kinds and their weights.
KINDS = {"gemm": 8, "bad_command": 2, "window": 1, "bus_error": 2, "reset_mid_gemm": 1}


class StepFailed(AssertionError):
    pass


class Soak:
    def __init__(self, tb):
        self.tb = tb
        self.drv = tb.drv
        self.c = tb.config
        self.rng = tb.rng
        #: What the memory must hold: the model's image, carried from step to step.
        self.mem = tb.image()
        #: The model, on that image: its command index counts since the last soft reset, as
        #: ERR_CMD_INDEX does.
        self.model = EngineModel(self.c, self.mem, *WINDOW)
        self.counts = {kind: 0 for kind in KINDS}
        #: Details of the running step that a failure report includes (soak-failure.json).
        self.context = {}

    # Helpers ------------------------------------------------------------------------------

    def shape(self):
        c = self.c
        big = self.rng.random() < 0.1
        hi = 64 if big else 2 * max(c.rows, c.cols) + 3
        return tuple(int(x) for x in self.rng.integers(1, hi, size=3, endpoint=True))

    def layout_options(self):
        """Random placement in the window: base offset, region alignment, row pitch (on an
        engine without unaligned DMA, only those on the bus)."""
        b, lane = self.c.axi_bytes, self.c.dma_alignment
        return dict(base=int(self.rng.integers(0, 4096)),
                    align=int(self.rng.choice([a for a in (1, 2, 4, b, 64) if a % lane == 0])),
                    pitch=int(self.rng.choice([p for p in (1, 3, b, 2 * b + 1)
                                               if p % lane == 0])))

    def new_gemm(self, **fixed):
        """Operands, options and plan of a random GEMM; its operands written to the memory and
        to the model's image."""
        M, K, N = self.shape()
        A, B = self.tb.operands(M, K, N)
        bias, relu, requant = random_options(self.rng, self.c, N)
        options = {**self.layout_options(), **fixed}
        plan = plan_gemm(self.c, M, K, N, bias=bias is not None, relu=relu, requant=requant,
                         **options)
        for offset, data in pack_operands(plan, A, B, bias).items():
            self.tb.ram.write(WINDOW[0] + offset, data)
            self.mem[WINDOW[0] + offset:WINDOW[0] + offset + len(data)] = data
        return A, B, (bias, relu, requant), plan

    def final_image(self, commands):
        """The memory after ``commands`` ran without an error, from the current image."""
        done = bytearray(self.mem)
        outcome = EngineModel(self.c, done, *WINDOW).run(commands)
        assert outcome.ok, f"the model refuses a valid GEMM: {outcome}"
        return done

    async def soft_reset(self):
        await self.drv.soft_reset()
        self.model.soft_reset()

    def compare(self, *, loose=None, alternative=None):
        """The memory against the model's image. In ``loose`` (an absolute ``[lo, hi)``), a byte
        may instead equal ``alternative``'s; the memory's bytes there become the image's."""
        got = self.tb.image()
        diff = np.flatnonzero(np.frombuffer(bytes(got), np.uint8)
                              != np.frombuffer(bytes(self.mem), np.uint8))
        also = ""
        if loose is not None and diff.size:
            lo, hi = loose
            inside = (diff >= lo) & (diff < hi)
            allowed = np.array([got[i] == alternative[i] for i in diff[inside]], dtype=bool)
            bad_inside = diff[inside][~allowed]
            diff = np.sort(np.concatenate([diff[~inside], bad_inside]))
            if diff.size:
                first = int(diff[0])
                also = (f" or {alternative[first]:#04x} (the finished GEMM's)"
                        if lo <= first < hi else "")
        if diff.size:
            first = int(diff[0])
            raise StepFailed(f"memory differs from the model at {diff.size} bytes, first at "
                             f"{first:#x}: got {got[first]:#04x}, want {self.mem[first]:#04x}"
                             f"{also}")
        if loose is not None:
            lo, hi = loose
            self.mem[lo:hi] = got[lo:hi]

    async def expect_error(self, stream, *, error_regions=(), decerr=False, what):
        """Run ``stream`` and check the error the model names (code, index, address), or, if
        the model accepts the stream, that it runs without one."""
        self.model.win_limit = self.drv.window[1]
        self.model.error_regions = list(error_regions)
        try:
            outcome = self.model.run(stream)
        finally:
            self.model.win_limit, self.model.error_regions = WINDOW[1], []
        if outcome.ok:
            try:
                await self.drv.run(stream)
            except MXEError as exc:
                raise StepFailed(f"{what}: {exc}, where the model sees no error") from None
            return outcome
        code = ErrorCode.DMA_DECERR if decerr and outcome.error == ErrorCode.DMA_SLVERR \
            else outcome.error
        try:
            await self.drv.run(stream)
        except MXEError as exc:
            if (exc.code, exc.index) != (code, outcome.index):
                raise StepFailed(f"{what}: {exc.code.name} at command {exc.index}, expected "
                                 f"{code.name} at {outcome.index}") from None
            if outcome.addr is not None and exc.addr != outcome.addr:
                raise StepFailed(f"{what}: ERR_ADDR {exc.addr:#x}, expected "
                                 f"{outcome.addr:#x}") from None
        else:
            raise StepFailed(f"{what}: no error reported; expected {code.name} at command "
                             f"{outcome.index}")
        return outcome

    # Steps --------------------------------------------------------------------------------

    async def gemm(self):
        descriptor = self.c.gemm_unit and self.rng.random() < 0.3
        options = self.layout_options()
        M, K, N = self.shape()
        A, B = self.tb.operands(M, K, N)
        bias, relu, requant = random_options(self.rng, self.c, N)
        plan = plan_gemm(self.c, M, K, N, bias=bias is not None, relu=relu, requant=requant,
                         **options)
        for offset, data in pack_operands(plan, A, B, bias).items():
            self.mem[WINDOW[0] + offset:WINDOW[0] + offset + len(data)] = data
        outcome = self.model.run(self.drv.gemm_commands(plan, descriptor=descriptor))
        assert outcome.ok, f"the model refuses a valid GEMM: {outcome}"
        C, _ = await self.drv.gemm(A, B, bias=bias, relu=relu, requant=requant,
                                   descriptor=descriptor, **options)
        want = expected_result(self.c, A, B, bias, relu, requant)
        bad = np.argwhere(C != want)
        if bad.size:
            raise StepFailed(f"{len(bad)} wrong results, first at {tuple(bad[0])}: got "
                             f"{C[tuple(bad[0])]}, want {want[tuple(bad[0])]}")
        self.compare()
        return f"{M}x{K}x{N} {options} descriptor={descriptor} bias={bias is not None} " \
               f"relu={relu} requant={requant}"

    async def bad_command(self):
        c = self.c
        eb, ab = c.elem_bytes, c.acc_elem_bytes
        cases = bad_commands(c)
        name, bad, _code = cases[int(self.rng.integers(len(cases)))]
        # Real work before it (the STORE writes what the MATMUL computed from the LOAD), the
        # bad command, then commands that would change memory if they ran.
        prefix = [cmds.load(0, 0, 2, c.spad_row_elems, c.spad_row_elems * eb),
                  cmds.matmul(0, 0, 2, 1, 0),
                  cmds.store(0, 0x800, 2, c.cols, c.cols * ab)][:int(self.rng.integers(0, 4))]
        stream = [*prefix, bad, cmds.store(0, 0x900, 1, c.cols, 0), cmds.load(4, 0, 1, 1, 0),
                  cmds.fence()]
        await self.expect_error(stream, what=name)
        self.compare()
        await self.soft_reset()
        return f"{name} after {len(prefix)} commands"

    async def window(self):
        cut = str(self.rng.choice(["a", "b", "c"]))
        order = [r for r in ("a", "b", "bias", "c") if r != cut] + [cut]
        _A, _B, _options, plan = self.new_gemm(order=order)
        region = plan.layout[cut]
        base = WINDOW[0]
        limit = base + region.offset + region.nbytes - int(self.rng.integers(1, region.stride + 1))
        await self.drv.set_window(base, limit)
        try:
            outcome = await self.expect_error(plan.commands, what=f"window cuts {cut}")
        finally:
            await self.drv.set_window(*WINDOW)
        if outcome.error != ErrorCode.DMA_WINDOW:
            raise StepFailed(f"window cuts {cut}: the model says {outcome.error.name}, not "
                             f"DMA_WINDOW (a bench error)")
        self.compare()
        await self.soft_reset()
        return f"window cuts {cut} at {limit:#x}"

    async def bus_error(self):
        _A, _B, _options, plan = self.new_gemm()
        names = [n for n in ("a", "b", "bias", "c") if n in plan.layout]
        name = str(self.rng.choice(names))
        region = plan.layout[name]
        at = WINDOW[0] + region.offset + int(self.rng.integers(region.nbytes))
        decerr = bool(self.rng.random() < 0.5)
        final = self.final_image(plan.commands)
        self.tb.ram.error_regions, self.tb.ram.decerr = [(at, at + 1)], decerr
        try:
            # A byte no burst touches (a gap between rows) leaves the GEMM clean.
            outcome = await self.expect_error(
                plan.commands, error_regions=[(at, at + 1)], decerr=decerr,
                what=f"{'DECERR' if decerr else 'SLVERR'} in {name}")
        finally:
            self.tb.ram.error_regions, self.tb.ram.decerr = [], False
        # Commands dispatched before the error finish: results may be written past it.
        c_region = plan.layout["c"]
        self.compare(loose=(WINDOW[0] + c_region.offset, WINDOW[0] + c_region.end),
                     alternative=final)
        await self.soft_reset()
        return f"{'DECERR' if decerr else 'SLVERR'} at {at:#x} in {name}: {outcome.error.name}"

    async def reset_mid_gemm(self):
        A, B, options, plan = self.new_gemm()
        final = self.final_image(plan.commands)
        cycles = int(self.rng.integers(5, 2000))
        c_region = plan.layout["c"]
        lo, hi = WINDOW[0] + c_region.offset, WINDOW[0] + c_region.end
        # What a failure report needs to tell which command wrote what.
        self.context = {"cycles": cycles, "A": A.tolist(), "B": B.tolist(),
                        "options": [None if v is None else (v.tolist() if hasattr(v, "tolist")
                                                            else repr(v)) for v in options],
                        "schedule": plan.schedule, "c_offset": lo, "c_stride": c_region.stride,
                        "commands": [cmds.describe(x) for x in plan.commands],
                        "before": list(self.mem[lo:hi]), "final": list(final[lo:hi])}
        await self.drv.start()
        pusher = cocotb.start_soon(self.drv.push(plan.commands))
        for _ in range(cycles):
            await RisingEdge(self.tb.dut.clk)
        self.drv.abort = True
        await pusher
        self.drv.abort = False
        await self.soft_reset()
        st = await self.drv.status()
        if st["busy"] or st["error"] or not st["queue_empty"]:
            raise StepFailed(f"after the soft reset: {st}")
        self.context["after"] = list(self.tb.image()[lo:hi])
        self.compare(loose=(lo, hi), alternative=final)
        return f"soft reset {cycles} cycles into a GEMM of {len(plan.commands)} commands"


@cocotb.test()
async def test_soak(dut):
    tb = await setup(dut)
    params = tb.params
    max_steps = params.get("steps")
    seconds = params.get("seconds")
    soak = Soak(tb)
    chosen = params.get("kinds") or list(KINDS)
    kinds = [kind for kind in KINDS if kind in chosen]
    weights = np.array([KINDS[kind] for kind in kinds], dtype=float)
    start = time.monotonic()
    report = {"seed": tb.seed, "config": tb.config.to_dict(), "failure": None}
    recent = []     # the last steps before a failure, with what they did
    step = 0
    try:
        while (max_steps is None or step < max_steps) and \
                (seconds is None or time.monotonic() - start < seconds):
            kind = kinds[int(tb.rng.choice(len(kinds), p=weights / weights.sum()))]
            if step == params.get("inject"):
                # A fault the engine did not make: a byte flipped outside the window, which
                # no command may write. The step must report it.
                (byte,) = tb.ram.read(WINDOW[1] + 7, 1)
                tb.ram.write(WINDOW[1] + 7, bytes([byte ^ 0x5A]))
            soak.context = {}
            try:
                what = await getattr(soak, kind)()
            except (StepFailed, MXEError, TimeoutError) as exc:
                report["failure"] = {"step": step, "kind": kind, "message": str(exc),
                                     "steps_before": recent}
                with open("soak-failure.json", "w") as f:
                    json.dump(soak.context, f)
                raise StepFailed(f"step {step} ({kind}): {exc}") from None
            tb.log.debug("step %d %s: %s", step, kind, what)
            recent = [*recent[-7:], f"step {step} {kind}: {what}"]
            soak.counts[kind] += 1
            step += 1
            if step % 100 == 0:
                minutes = (time.monotonic() - start) / 60
                line = f"{step} steps, {step / minutes:.0f} steps/min, " + \
                    ", ".join(f"{kind} {soak.counts[kind]}" for kind in kinds)
                tb.log.info("soak: %s", line)
                if params.get("progress"):
                    with open(params["progress"], "a") as f:
                        f.write(f"  {line}\n")
    finally:
        elapsed = time.monotonic() - start
        report.update(steps=step, kinds={k: n for k, n in soak.counts.items() if k in kinds}, seconds=round(elapsed, 1),
                      steps_per_minute=round(step / max(elapsed, 1e-9) * 60, 1))
        with open("soak.json", "w") as f:
            json.dump(report, f, indent=2)
