"""The formal proofs (formal/, ``python -m mxe.formal``): each one passes, and broken variants of
the blocks fail, which shows the harnesses can fail (their assumptions leave the bugs
reachable) and name the property the bug breaks.

The proofs run SymbiYosys with ABC from the YoWASP wheels; see docs/verification.md.
"""

import pytest
from amaranth import Module
from amaranth.lib import stream, wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.wiring import In, Out

from mxe.formal.fetch import RowFetcherProof
from mxe.formal.fifo import FIFOProof
from mxe.formal.proofs import PROOFS
from mxe.formal.skid import SkidBufferProof
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


def prove(harness):
    from mxe.formal import sby
    return sby.run(harness, name="variant", timeout=TIMEOUT)


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


def test_skid_loss_fails():
    assert_fails(prove(SkidBufferProof(dut=SkidTakesWhenFull)))


def test_skid_corruption_fails():
    assert_fails(prove(SkidBufferProof(dut=SkidCorrupts)), "each item out is the next one in")


def test_fifo_loss_fails():
    assert_fails(prove(FIFOProof(4, width=2, fifo=FIFOWritesWhenFull)))


def test_fetch_overflow_fails():
    assert_fails(prove(RowFetcherProof(latency=3, dut=FetcherWithoutCredits)),
                 "only with room", "i_req.ready whenever", "at most", "next one in")
