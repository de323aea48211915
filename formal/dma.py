"""Proof harness of :class:`mxe.hw.dma.DMA` as an AXI4 manager."""

from amaranth import Cat, Const, Mux, Signal
from amaranth.asserts import AnyConst, AnySeq
from amaranth.hdl import Assert, Assume

from mxe.hw.axi import BURST_INCR
from mxe.hw.dma import BOUNDARY, DMA
from .checkers import BlockProof, HandshakeRule


__all__ = ["DMAProof"]


class DMAProof(BlockProof):
    """A DMA with free commands and consumers on one side and an AXI4 subordinate that does
    anything the protocol allows on the other.

    The subordinate is the harness: it takes AR, AW and W whenever it likes, returns read
    beats (any response, OKAY or not) only for bursts it was asked for, with RLAST on each
    burst's last beat, and write responses only for bursts whose AW and last W beat it has
    taken (AXI4 A3.3.1). The window is fixed for the run (an ``AnyConst``); the DMA samples it
    when it checks a command. Which W beat belongs to which burst is followed for one burst at
    a time, chosen freely as its AW goes out (so the proof covers each burst).

    The data moved is 0: the properties are about addresses, lengths, strobes and handshakes,
    which the DMA never works out from data, and the skid buffer and FIFOs the data passes on
    its way are proven on their own (:mod:`.skid`, :mod:`.fifo`). Constant data lets Yosys
    remove the data registers before the model checker sees them.

    Parameters
    ----------
    config : EngineConfig
        Small ``max_burst_len`` and ``max_outstanding_reads`` keep the state space small.
    engines : tuple of str
        The engines given commands and checked: ``"read"``, ``"write"`` or both. They share no
        logic, so each is proven on its own, a smaller problem.
    short : (int, int) or None
        At most this many rows and row bytes per command (``None``: any), so that a bounded
        proof reaches whole commands sooner.
    dut : callable
        Builds the DMA from ``config`` (:class:`DMA`, or a variant for the tests that show the
        proof can fail).
    """

    def __init__(self, config, *, engines=("read", "write"), short=None, dut=DMA):
        if not engines or not set(engines) <= {"read", "write"}:
            raise ValueError(f"engines must name 'read', 'write' or both, not {engines!r}")
        self._engines = tuple(engines)
        self._short = short
        super().__init__(config, dut=dut)

    def check(self, m, dut, checking):
        config = self._config
        axi = dut.axi
        aw = config.axi_addr_width
        b = config.axi_bytes
        size = b.bit_length() - 1
        outstanding = config.max_outstanding_reads
        read = "read" in self._engines
        write = "write" in self._engines

        def free(signal):
            m.d.comb += signal.eq(AnySeq(len(signal)))

        # The DMA's other side: free, within the stream rules (assumed below). An engine left
        # out gets no commands, and the subordinate gives it no handshakes.
        for stream_in, on in ((dut.i_rd_cmd, read), (dut.i_wr_cmd, write)):
            if on:
                free(stream_in.valid)
                free(stream_in.payload.as_value())
                if self._short is not None:
                    rows, row_bytes = self._short
                    m.d.comb += Assume((stream_in.payload.rows <= rows)
                                       & (stream_in.payload.row_bytes <= row_bytes))
            else:
                m.d.comb += [stream_in.valid.eq(0), stream_in.payload.eq(0)]
        m.d.comb += [dut.i_wr_data.payload.eq(0), axi.rdata.eq(0), axi.rid.eq(0),
                     axi.bid.eq(0)]
        if write:
            free(dut.i_wr_data.valid)
        else:
            m.d.comb += dut.i_wr_data.valid.eq(0)
        for stream_out in (dut.o_rd_data, dut.o_rd_done, dut.o_wr_done):
            free(stream_out.ready)
        base = Signal(aw)
        limit = Signal(aw)
        m.d.comb += [base.eq(AnyConst(aw)), limit.eq(AnyConst(aw)),
                     dut.window_base.eq(base), dut.window_limit.eq(limit)]

        # The subordinate's handshakes, quiet for an engine left out (set below otherwise).
        m.d.comb += [axi.arready.eq(0), axi.rvalid.eq(0), axi.rresp.eq(0), axi.rlast.eq(0),
                     axi.awready.eq(0), axi.wready.eq(0), axi.bvalid.eq(0), axi.bresp.eq(0)]
        channels = []           # (name, valid, ready, payload, assumed)

        def burst_checks(prefix, valid, addr, length, burst_size, burst, ident):
            beats_bytes = (length + 1) << size
            end = Signal(aw + 1, name=f"{prefix}_end")      # one past the burst's last byte
            m.d.comb += end.eq(addr + beats_bytes)
            # The window widened to whole bus beats: a beat with one byte of it may be read.
            low = Cat(Const(0, size), base[size:])
            high = Signal(aw + 1, name=f"{prefix}_high")
            m.d.comb += high.eq(((limit + (b - 1)) >> size) << size)
            with m.If(checking & valid):
                m.d.comb += [
                    # "INCR bursts of full-width beats (AxSIZE = bus width)", aligned.
                    Assert(burst_size == size, f"dma {prefix}: AxSIZE is the bus width"),
                    Assert(burst == BURST_INCR, f"dma {prefix}: INCR bursts"),
                    Assert(addr[:size] == 0, f"dma {prefix}: bursts start on a bus beat"),
                    # "of at most max_burst_len beats".
                    Assert(length <= config.max_burst_len - 1,
                           f"dma {prefix}: AxLEN <= max_burst_len - 1"),
                    # "that never cross a 4 KiB boundary" (AXI4 A3.4.1).
                    Assert(addr[:12] + beats_bytes <= BOUNDARY,
                           f"dma {prefix}: no burst crosses a 4 KiB boundary"),
                    # "all transactions use ID 0".
                    Assert(ident == 0, f"dma {prefix}: ID 0"),
                    # "an extent ... not inside [window_base, window_limit) is refused": no
                    # burst touches a bus beat without a byte of the window.
                    Assert((addr >= low) & (end <= high),
                           f"dma {prefix}: bursts stay inside the window"),
                ]

        if read:
            m.d.comb += [axi.arready.eq(AnySeq(1)), axi.rvalid.eq(AnySeq(1)),
                         axi.rresp.eq(AnySeq(2)), axi.rlast.eq(AnySeq(1))]
            ar_fire = axi.arvalid & axi.arready
            r_fire = axi.rvalid & axi.rready
            channels += [
                ("ar", axi.arvalid, axi.arready,
                 Cat(axi.araddr, axi.arlen, axi.arsize, axi.arburst, axi.arid, axi.arlock,
                     axi.arcache, axi.arprot), False),
                ("o_rd_data", dut.o_rd_data.valid, dut.o_rd_data.ready,
                 dut.o_rd_data.payload.as_value(), False),
                ("o_rd_done", dut.o_rd_done.valid, dut.o_rd_done.ready,
                 dut.o_rd_done.payload.as_value(), False),
                ("r", axi.rvalid, axi.rready, Cat(axi.rresp, axi.rlast), True),
                ("i_rd_cmd", dut.i_rd_cmd.valid, dut.i_rd_cmd.ready,
                 dut.i_rd_cmd.payload.as_value(), True),
            ]
            # Read bursts asked for and not finished, oldest first: their lengths (for RLAST),
            # one place more than the DMA may use.
            room = outstanding + 1
            r_lens = [Signal(8, name=f"r_len{i}") for i in range(room)]
            r_open = Signal(range(room + 1))
            r_beat = Signal(8)
            r_done = r_fire & axi.rlast
            m.d.sync += r_open.eq(r_open + ar_fire - r_done)
            for i in range(room):
                # The finished burst shifts out; a new one goes behind the others.
                after = Signal(8, name=f"r_len{i}_after")
                m.d.comb += after.eq(Mux(r_done, r_lens[i + 1] if i + 1 < room else 0,
                                         r_lens[i]))
                with m.If(ar_fire & (r_open - r_done == i)):
                    m.d.sync += r_lens[i].eq(axi.arlen)
                with m.Else():
                    m.d.sync += r_lens[i].eq(after)
            with m.If(r_fire):
                m.d.sync += r_beat.eq(Mux(axi.rlast, 0, r_beat + 1))
            # The subordinate: read data only for bursts asked for (A3.3.1), RLAST on their
            # last beat.
            m.d.comb += [
                Assume(~axi.rvalid | (r_open != 0)),
                Assume(~axi.rvalid | (axi.rlast == (r_beat == r_lens[0]))),
            ]
            burst_checks("ar", axi.arvalid, axi.araddr, axi.arlen, axi.arsize, axi.arburst,
                         axi.arid)
            with m.If(checking):
                # "Up to max_outstanding_reads read bursts ... are in flight".
                m.d.comb += Assert(r_open <= outstanding,
                                   "dma: at most max_outstanding_reads reads in flight")

        if write:
            m.d.comb += [axi.awready.eq(AnySeq(1)), axi.wready.eq(AnySeq(1)),
                         axi.bvalid.eq(AnySeq(1)), axi.bresp.eq(AnySeq(2))]
            aw_fire = axi.awvalid & axi.awready
            w_fire = axi.wvalid & axi.wready
            b_fire = axi.bvalid & axi.bready
            channels += [
                ("aw", axi.awvalid, axi.awready,
                 Cat(axi.awaddr, axi.awlen, axi.awsize, axi.awburst, axi.awid, axi.awlock,
                     axi.awcache, axi.awprot), False),
                ("w", axi.wvalid, axi.wready, Cat(axi.wdata, axi.wstrb, axi.wlast), False),
                ("o_wr_done", dut.o_wr_done.valid, dut.o_wr_done.ready,
                 dut.o_wr_done.payload.as_value(), False),
                ("b", axi.bvalid, axi.bready, axi.bresp, True),
                ("i_wr_cmd", dut.i_wr_cmd.valid, dut.i_wr_cmd.ready,
                 dut.i_wr_cmd.payload.as_value(), True),
                ("i_wr_data", dut.i_wr_data.valid, dut.i_wr_data.ready, Const(0, 1), True),
            ]
            # Bursts whose AW was taken, whose last W beat was taken, and responses.
            aw_count = Signal(4)
            wl_count = Signal(4)
            b_count = Signal(4)
            wl_fire = w_fire & axi.wlast
            m.d.sync += [
                aw_count.eq(aw_count + aw_fire),
                wl_count.eq(wl_count + wl_fire),
                b_count.eq(b_count + b_fire),
            ]
            w_open = (aw_count - wl_count)[:4]      # AW out, W beats still to send
            in_flight = (aw_count - b_count)[:4]    # AW out, no response yet
            answerable = (wl_count - b_count)[:4]   # every W beat out, no response yet
            # "the slave must wait for AWVALID, AWREADY, WVALID, WREADY and WLAST before
            # asserting BVALID" (A3.3.1; W follows AW here, asserted below).
            m.d.comb += Assume(~axi.bvalid | (answerable != 0))

            # One burst followed: its address, length, beats sent, and the bursts ahead of it
            # whose W beats are still to come.
            tracked = Signal()
            t_addr = Signal(aw)
            t_len = Signal(8)
            t_beat = Signal(8)
            t_ahead = Signal(4)
            with m.If(tracked & w_fire):
                with m.If(t_ahead == 0):
                    m.d.sync += t_beat.eq(t_beat + 1)
                    with m.If(axi.wlast):
                        m.d.sync += [tracked.eq(0), t_beat.eq(0)]
                with m.Elif(axi.wlast):
                    m.d.sync += t_ahead.eq(t_ahead - 1)
            with m.If(~tracked & aw_fire & AnySeq(1)):
                m.d.sync += [
                    tracked.eq(1), t_addr.eq(axi.awaddr), t_len.eq(axi.awlen), t_beat.eq(0),
                    t_ahead.eq(w_open - wl_fire),
                ]

            burst_checks("aw", axi.awvalid, axi.awaddr, axi.awlen, axi.awsize, axi.awburst,
                         axi.awid)
            with m.If(checking):
                m.d.comb += [
                    # "... and as many write bursts are in flight".
                    Assert(in_flight <= outstanding,
                           "dma: at most max_outstanding_reads writes in flight"),
                    # W beats follow their burst's AW (this DMA never sends W first), which is
                    # what lets the harness tell the bursts' beats apart.
                    Assert(~axi.wvalid | (w_open != 0),
                           "dma w: beats only for a burst whose AW went out"),
                ]
                with m.If(axi.wvalid & tracked & (t_ahead == 0)):
                    beat_addr = Signal(aw, name="t_beat_addr")
                    m.d.comb += beat_addr.eq(t_addr + (t_beat << size))
                    # AXI4: WLAST on the final write transfer of the burst.
                    m.d.comb += Assert(axi.wlast == (t_beat == t_len),
                                       "dma w: WLAST exactly on the last beat of each burst")
                    # "sets WSTRB for partial first and last beats": no byte outside the window
                    # is written.
                    for lane in range(b):
                        byte = Signal(aw + 1, name=f"t_byte{lane}")
                        m.d.comb += byte.eq(beat_addr + lane)
                        with m.If(axi.wstrb[lane]):
                            m.d.comb += Assert((byte >= base) & (byte < limit),
                                               "dma w: no byte written outside the window")

        # AXI A3.2.1 on every channel: asserted on the DMA's, assumed on the subordinate's and
        # (as the Amaranth stream rules) on the streams the DMA is given.
        for name, valid, ready, payload, assume in channels:
            rule = HandshakeRule(len(payload), name=f"dma {name}", assume=assume)
            m.submodules[f"{name}_rule"] = rule
            m.d.comb += [rule.valid.eq(valid), rule.ready.eq(ready), rule.payload.eq(payload)]
