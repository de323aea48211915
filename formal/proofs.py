"""The proofs ``python -m mxe.formal`` and ``tests/test_formal.py`` run, with the parameters the
engine instantiates each block with."""

from dataclasses import dataclass
from typing import Callable, Optional

from amaranth.lib.fifo import SyncFIFO, SyncFIFOBuffered

from mxe.hw.accumulator import ACC_READ_LATENCY
from mxe.hw.config import EngineConfig
from mxe.hw.scratchpad import SPAD_READ_LATENCY
from . import sby
from .controller import ControllerProof
from .csr import CSRBlockProof
from .dma import DMAProof
from .fetch import RowFetcherProof
from .fifo import FIFOProof
from .skid import SkidBufferProof


__all__ = ["Proof", "PROOFS", "DMA_CONFIG", "DMA_DEPTH", "CONTROLLER_DEPTH",
           "CONTROLLER_DEEP_DEPTH"]


@dataclass(frozen=True)
class Proof:
    """A harness and how to prove it.

    ``mode`` is ``prove`` (ABC PDR, unbounded) or ``bmc`` (ABC BMC3, ``depth`` cycles from
    reset). ``slow`` proofs stay out of the default test run.
    """

    name: str
    build: Callable
    doc: str
    mode: str = "prove"
    depth: Optional[int] = None
    slow: bool = False

    @property
    def engine(self):
        return sby.engine_name(self.mode, self.depth)

    def run(self, **kwargs):
        """Run the proof (:func:`mxe.formal.sby.run`'s ``workdir`` and ``timeout``)."""
        return sby.run(self.build(), name=self.name, mode=self.mode, depth=self.depth,
                       **kwargs)


#: The DMA's configuration in its proofs: ``tiny`` with short bursts and few in flight, so
#: that the limits are reached within the bound. With 3 the in-flight FIFOs hold exactly the
#: limit; ``tests/test_formal.py`` also proves 2, where they hold one more (docs/verification.md,
#: Findings).
DMA_CONFIG = EngineConfig.preset("tiny", max_burst_len=4, max_outstanding_reads=3)
#: Cycles from reset the DMA's bounded proofs cover: the first AR goes out in cycle 5, the
#: first WLAST in cycle 8, the first write response in cycle 9. Each cycle more costs about
#: four times as long.
DMA_DEPTH = 10

#: Cycles from reset the controller's quick bounded proof covers. The controller dispatches a
#: command every third cycle at most, the first in cycle 4: 12 cycles reach three commands
#: running at once, enough for every hazard between two units. PDR did not converge in 25
#: minutes (docs/verification.md, "What is not proven").
CONTROLLER_DEPTH = 12
#: ... and its slow one: four commands running at once (their dispatches in cycles 4, 7, 10
#: and 13). Each cycle more costs about twice as long: 14 cycles took 45 s, 16 three minutes.
CONTROLLER_DEEP_DEPTH = 16

def _fifo(kind, depth, users):
    cls = {"buffered": SyncFIFOBuffered, "sync": SyncFIFO}[kind]
    # SyncFIFOBuffered(depth=2) refuses a write for a cycle with a place free (FIFOProof).
    exact = not (cls is SyncFIFOBuffered and depth == 2)
    return Proof(f"fifo_{kind}_{depth}",
                 lambda: FIFOProof(depth, width=2, fifo=cls, exact_w_rdy=exact),
                 f"{cls.__name__}(depth={depth}): {users}", slow=depth > 8)


_PROOFS = [
    Proof("skid", lambda: SkidBufferProof(width=4),
          "SkidBuffer: order, level, stream rule, a transfer per cycle"),
    Proof("fetch_spad", lambda: RowFetcherProof(latency=SPAD_READ_LATENCY),
          f"RowFetcher(latency={SPAD_READ_LATENCY}): the execute unit's weight and "
          f"activation fetchers"),
    Proof("fetch_acc", lambda: RowFetcherProof(latency=ACC_READ_LATENCY, register=True),
          f"RowFetcher(latency={ACC_READ_LATENCY}, register=True): the store unit's fetcher"),
    Proof("fetch_acc_shallow", lambda: RowFetcherProof(latency=ACC_READ_LATENCY, depth=2),
          f"RowFetcher(latency={ACC_READ_LATENCY}, depth=2): the store unit's fetcher without "
          f"the deep pipeline, one post-processor lane for 4 columns (lean)"),
    _fifo("buffered", 2, "the DMA's read descriptors"),
    _fifo("buffered", 4, "the DMA's write bursts, the load unit's metadata"),
    _fifo("buffered", 8, "the command queue of tiny"),
    _fifo("buffered", 13, "the post-processor's output"),
    _fifo("buffered", 16, "the command queue of small, default and large"),
    # SyncFIFOBuffered(depth=32), the DMA's in-flight queues, does not converge (docs).
    _fifo("sync", 2, "the DMA's write retire queue"),
    _fifo("sync", 4, "the DMA's read data"),
    Proof("csr", lambda: CSRBlockProof(EngineConfig.preset("tiny")),
          "CSRBlock of tiny as an AXI4-Lite subordinate: one response per request, read-back, "
          "the map's constants, command push", slow=True),
    Proof("csr_lean", lambda: CSRBlockProof(EngineConfig.preset("tiny", perf_counters=False,
                                                                gemm_unit=False)),
          "CSRBlock without the optional features: their registers read 0", slow=True),
    Proof("controller", lambda: ControllerProof(EngineConfig.preset("tiny")),
          "Controller of tiny: no two running commands with overlapping buffer ranges where "
          "one writes", mode="bmc", depth=CONTROLLER_DEPTH),
    Proof("controller_deep", lambda: ControllerProof(EngineConfig.preset("tiny")),
          "the same, deeper", mode="bmc", depth=CONTROLLER_DEEP_DEPTH, slow=True),
    Proof("dma_read", lambda: DMAProof(DMA_CONFIG, engines=("read",)),
          "DMA read engine as an AXI4 manager (tiny, max_burst_len=4, "
          "max_outstanding_reads=3)", mode="bmc", depth=DMA_DEPTH, slow=True),
    Proof("dma_write", lambda: DMAProof(DMA_CONFIG, engines=("write",)),
          "DMA write engine as an AXI4 manager (tiny, max_burst_len=4, "
          "max_outstanding_reads=3)", mode="bmc", depth=DMA_DEPTH, slow=True),
]

#: Every proof by name, in the order the command lists them.
PROOFS = {proof.name: proof for proof in _PROOFS}
