"""The formal proofs (formal/, ``python -m mxe.formal``): each one passes, and broken variants of
the blocks fail, which shows the harnesses can fail (their assumptions leave the bugs
reachable) and name the property the bug breaks.

The proofs run SymbiYosys with ABC from the YoWASP wheels; see docs/verification.md.
"""

import pytest
from amaranth import Cat, Const, Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.wiring import Flow, In, Out

from mxe.formal import sby
from mxe.formal.controller import ControllerProof
from mxe.formal.csr import CSRBlockProof
from mxe.formal.dma import DMAProof
from mxe.formal.fetch import RowFetcherProof
from mxe.formal.fifo import FIFOProof
from mxe.formal.proofs import CONTROLLER_DEPTH, DMA_CONFIG, DMA_DEPTH, PROOFS
from mxe.formal.skid import SkidBufferProof
from mxe.hw.config import EngineConfig
from mxe.hw.controller import Controller
from mxe.hw.csr import CSRBlock
from mxe.hw.dma import DMA
from mxe.hw.fetch import RowFetcher
from mxe.hw.skid import SkidBuffer


TIMEOUT = 1800


@pytest.mark.parametrize("name", [
    pytest.param(name, marks=[pytest.mark.slow] if proof.slow else [])
    for name, proof in PROOFS.items()
])
def test_proof(name):
    result = PROOFS[name].run(timeout=TIMEOUT)
    detail = result.failure.summary() if result.failure else result.log[-2000:]
    assert result.status == "PASS", f"{name}: {result.status}\n{detail}"


def prove(harness, **kwargs):
    return sby.run(harness, name="variant", timeout=TIMEOUT, **kwargs)


def assert_fails(result, *properties):
    """The proof failed, on one of ``properties`` (substrings of the messages) if given."""
    assert result.status == "FAIL", result.log[-2000:]
    if properties:
        assert any(p in result.failure.prop for p in properties), result.failure.summary()


# --- Broken variants ------------------------------------------------------------------------

class SkidTakesWhenFull(SkidBuffer):
    """Takes an item with both entries full: that item is lost."""

    def elaborate(self, platform):
        m = super().elaborate(platform)
        m.d.comb += self.i.ready.eq(1)
        return m


class SkidCorrupts(wiring.Component):
    """A skid buffer whose output payload has its low bit inverted."""

    def __init__(self, shape):
        self._shape = shape
        super().__init__({
            "i": In(stream.Signature(shape)),
            "o": Out(stream.Signature(shape)),
            "level": Out(range(3)),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.inner = inner = SkidBuffer(self._shape)
        m.d.comb += [
            inner.i.valid.eq(self.i.valid), inner.i.payload.eq(self.i.payload),
            self.i.ready.eq(inner.i.ready),
            self.o.valid.eq(inner.o.valid), self.o.payload.eq(inner.o.payload ^ 1),
            inner.o.ready.eq(self.o.ready),
            self.level.eq(inner.level),
        ]
        return m


class FIFOWritesWhenFull(SyncFIFOBuffered):
    """Says it is writable while full: the write is dropped."""

    def elaborate(self, platform):
        m = super().elaborate(platform)
        m.d.comb += self.w_rdy.eq(1)
        return m


class FetcherWithoutCredits(RowFetcher):
    """Takes a request without room for its row."""

    def elaborate(self, platform):
        m = super().elaborate(platform)
        m.d.comb += self.i_req.ready.eq(1)
        return m


class CSRTakesAWWhileHeld(CSRBlock):
    """Takes a write address while one is held: the held one is overwritten."""

    def elaborate(self, platform):
        m = super().elaborate(platform)
        m.d.comb += self.bus.awready.eq(1)
        return m


class Patched(wiring.Component):
    """A block with some of its ports changed on their way: :meth:`patch` drives those it names
    (a port's path: ``"cycles"``, ``"bus.wstrb"``, ``"i_load_done.valid"``), the others pass
    through."""

    def __init__(self, inner):
        self._inner = inner
        super().__init__(inner.signature)

    def elaborate(self, platform):
        m = Module()
        m.submodules.inner = inner = self._inner
        patched = self.patch(m, inner)
        within = {path: port for path, _, port in inner.signature.flatten(inner)}
        # Flows as the block sees them: In is driven from outside.
        for path, member, outer in self.signature.flatten(self):
            if ".".join(map(str, path)) in patched or isinstance(outer, Const):
                continue
            if member.flow == Flow.In:
                m.d.comb += within[path].eq(outer)
            else:
                m.d.comb += outer.eq(within[path])
        return m


class PatchedCSR(Patched):
    def __init__(self, config):
        super().__init__(CSRBlock(config))


class CSRIgnoresStrobes(PatchedCSR):
    """Writes only byte 0 of every word."""

    def patch(self, m, inner):
        m.d.comb += inner.bus.wstrb.eq(Cat(self.bus.wstrb[0], 0, 0, 0))
        return {"bus.wstrb"}


class CSRCorruptsReads(PatchedCSR):
    """Returns bit 2 of every read inverted."""

    def patch(self, m, inner):
        m.d.comb += self.bus.rdata.eq(inner.bus.rdata ^ (1 << 2))
        return {"bus.rdata"}


class DMAWithoutWlast(DMA):
    """Never marks a burst's last W beat."""

    def elaborate(self, platform):
        m = super().elaborate(platform)
        m.d.comb += self.axi.wlast.eq(0)
        return m


class PatchedController(Patched):
    def __init__(self, config):
        super().__init__(Controller(config))


class ControllerIgnoresSpadHazards(PatchedController):
    """Never hears of a MATMUL still reading the scratchpad."""

    def patch(self, m, inner):
        m.d.comb += inner.spad_conflict.eq(0)
        return {"spad_conflict"}


class ControllerIgnoresAccHazards(PatchedController):
    """Never hears of a MATMUL in flight writing the accumulator."""

    def patch(self, m, inner):
        m.d.comb += inner.acc_conflict.eq(0)
        return {"acc_conflict"}


class ControllerIgnoresStoreBusy(PatchedController):
    """Takes the store unit for idle."""

    def patch(self, m, inner):
        m.d.comb += inner.store_busy.eq(0)
        return {"store_busy"}


class ControllerForgetsLoads(PatchedController):
    """Takes every LOAD for done the cycle after it dispatched it (its own record of the
    running LOADs' ranges loses them)."""

    def patch(self, m, inner):
        m.d.sync += inner.i_load_done.valid.eq(self.o_load.valid & self.o_load.ready)
        m.d.comb += inner.i_load_done.payload.eq(0)
        return {"i_load_done.valid", "i_load_done.payload"}


def test_skid_loss_fails():
    assert_fails(prove(SkidBufferProof(dut=SkidTakesWhenFull)))


def test_skid_corruption_fails():
    assert_fails(prove(SkidBufferProof(dut=SkidCorrupts)), "each item out is the next one in")


def test_fifo_loss_fails():
    assert_fails(prove(FIFOProof(4, width=2, fifo=FIFOWritesWhenFull)))


def test_fetch_overflow_fails():
    assert_fails(prove(RowFetcherProof(latency=3, dut=FetcherWithoutCredits)),
                 "only with room", "i_req.ready whenever", "at most", "next one in")


class CSRStaleCapture(PatchedCSR):
    """Sees the counters' high words a cycle late, so a _LO read captures a stale _HI."""

    def patch(self, m, inner):
        high = Signal(32)
        m.d.sync += high.eq(self.cycles[32:])
        m.d.comb += inner.cycles.eq(Cat(self.cycles[:32], high))
        return {"cycles"}


@pytest.mark.parametrize("variant, properties", [
    (CSRTakesAWWhileHeld, ()),
    (CSRIgnoresStrobes, ("holds the written value", "returns the last write", "command word")),
    (CSRCorruptsReads, ("reads 0x", "returns the last write", "unmapped read returns 0",
                        "reads the capture")),
    pytest.param(CSRStaleCapture, ("captures _HI",), marks=pytest.mark.slow),
])
def test_csr_variant_fails(variant, properties):
    assert_fails(prove(CSRBlockProof(EngineConfig.preset("tiny"), dut=variant)), *properties)


@pytest.mark.parametrize("variant, properties", [
    (ControllerIgnoresSpadHazards, ("scratchpad row that a MATMUL still reads",)),
    (ControllerIgnoresAccHazards, ("accumulator row that a MATMUL",)),
    (ControllerIgnoresStoreBusy, ("waits while a STORE runs", "accumulator row that a MATMUL")),
    (ControllerForgetsLoads, ("scratchpad row that a MATMUL still reads",
                              "LOAD into the post-processor runs")),
])
def test_controller_variant_fails(variant, properties):
    assert_fails(prove(ControllerProof(EngineConfig.preset("tiny"), dut=variant), mode="bmc",
                       depth=CONTROLLER_DEPTH), *properties)


@pytest.mark.slow
def test_dma_variant_fails():
    assert_fails(prove(DMAProof(DMA_CONFIG, engines=("write",), dut=DMAWithoutWlast),
                       mode="bmc", depth=DMA_DEPTH), "WLAST")


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["read", "write"])
def test_dma_two_reads_in_flight(engine):
    """max_outstanding_reads=2: the in-flight FIFOs hold one entry more than the limit (a
    SyncFIFOBuffered of depth 2 refuses a write with a place free, and the DMA lost a burst's
    entry when it used one: docs/verification.md, Findings)."""
    config = EngineConfig.preset("tiny", max_burst_len=4, max_outstanding_reads=2)
    result = prove(DMAProof(config, engines=(engine,)), mode="bmc", depth=DMA_DEPTH)
    assert result.passed, result.failure.summary() if result.failure else result.log[-2000:]
