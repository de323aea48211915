"""Proof harness of :class:`mxe.hw.dma.DMA` as an AXI4 manager."""

from amaranth import Cat, Const, Module, Signal
from amaranth.asserts import AnyConst, AnySeq
from amaranth.hdl import Assert, Assume
from amaranth.lib import wiring

from mxe.hw.axi import BURST_INCR
from mxe.hw.dma import BOUNDARY, DMA
from .checkers import HandshakeRule, assume_reset


__all__ = ["DMAProof"]


class DMAProof(wiring.Component):
    """A DMA with free commands, write data and consumers on one side and an AXI4 subordinate
    that does anything the protocol allows on the other.

    The subordinate is the harness: it takes AR, AW and W whenever it likes, returns read
    beats (any data, any response, OKAY or not) only for bursts it was asked for, with RLAST on
    each burst's last beat, and write responses only for bursts whose AW and last W beat it has
    taken (AXI4 A3.3.1). The window is fixed for the run (an ``AnyConst``); the DMA samples it
    when it checks a command. Which W beat belongs to which burst is followed for one burst at
    a time, chosen freely as its AW goes out (so the proof covers each burst).

    Parameters
    ----------
    config : EngineConfig
        Small ``max_burst_len`` and ``max_outstanding_reads`` keep the state space small.
    dut : callable
        Builds the DMA from ``config`` (:class:`DMA`, or a variant for the tests that show the
        proof can fail).
    """

    def __init__(self, config, *, dut=DMA):
        self._config = config
        self._dut = dut
        super().__init__({})

    def elaborate(self, platform):
        m = Module()
        config = self._config
        checking = assume_reset(m)
        m.submodules.dut = dut = self._dut(config)
        axi = dut.axi
        aw = config.axi_addr_width
        b = config.axi_bytes
        size = b.bit_length() - 1
        outstanding = config.max_outstanding_reads

        # The DMA's other side: free, with the stream rules on what it is given.
        for stream_in in (dut.i_rd_cmd, dut.i_wr_cmd, dut.i_wr_data):
            m.d.comb += [stream_in.valid.eq(AnySeq(1)),
                         stream_in.payload.eq(AnySeq(len(stream_in.payload.as_value())))]
        for stream_out in (dut.o_rd_data, dut.o_rd_done, dut.o_wr_done):
            m.d.comb += stream_out.ready.eq(AnySeq(1))
        base = Signal(aw)
        limit = Signal(aw)
        m.d.comb += [base.eq(AnyConst(aw)), limit.eq(AnyConst(aw)),
                     dut.window_base.eq(base), dut.window_limit.eq(limit)]
        # The subordinate's free choices.
        m.d.comb += [
            axi.awready.eq(AnySeq(1)), axi.wready.eq(AnySeq(1)), axi.arready.eq(AnySeq(1)),
            axi.rvalid.eq(AnySeq(1)), axi.rdata.eq(AnySeq(len(axi.rdata))),
            axi.rresp.eq(AnySeq(2)), axi.rlast.eq(AnySeq(1)), axi.rid.eq(0),
            axi.bvalid.eq(AnySeq(1)), axi.bresp.eq(AnySeq(2)), axi.bid.eq(0),
        ]

        # AXI A3.2.1 on every channel: asserted on the DMA's, assumed on the subordinate's and
        # (as the Amaranth stream rules) on the streams the DMA is given.
        ar = Cat(axi.araddr, axi.arlen, axi.arsize, axi.arburst, axi.arid, axi.arlock,
                 axi.arcache, axi.arprot)
        aw_payload = Cat(axi.awaddr, axi.awlen, axi.awsize, axi.awburst, axi.awid, axi.awlock,
                         axi.awcache, axi.awprot)
        channels = [
            ("ar", axi.arvalid, axi.arready, ar, False),
            ("aw", axi.awvalid, axi.awready, aw_payload, False),
            ("w", axi.wvalid, axi.wready, Cat(axi.wdata, axi.wstrb, axi.wlast), False),
            ("o_rd_data", dut.o_rd_data.valid, dut.o_rd_data.ready,
             dut.o_rd_data.payload.as_value(), False),
            ("o_rd_done", dut.o_rd_done.valid, dut.o_rd_done.ready,
             dut.o_rd_done.payload.as_value(), False),
            ("o_wr_done", dut.o_wr_done.valid, dut.o_wr_done.ready,
             dut.o_wr_done.payload.as_value(), False),
            ("r", axi.rvalid, axi.rready, Cat(axi.rdata, axi.rresp, axi.rlast), True),
            ("b", axi.bvalid, axi.bready, axi.bresp, True),
        ]
        for stream_in, name in ((dut.i_rd_cmd, "i_rd_cmd"), (dut.i_wr_cmd, "i_wr_cmd"),
                                (dut.i_wr_data, "i_wr_data")):
            channels.append((name, stream_in.valid, stream_in.ready,
                             stream_in.payload.as_value(), True))
        for name, valid, ready, payload, assume in channels:
            rule = HandshakeRule(len(payload), name=f"dma {name}", assume=assume)
            m.submodules[f"{name}_rule"] = rule
            m.d.comb += [rule.valid.eq(valid), rule.ready.eq(ready), rule.payload.eq(payload)]

        ar_fire = axi.arvalid & axi.arready
        aw_fire = axi.awvalid & axi.awready
        w_fire = axi.wvalid & axi.wready
        r_fire = axi.rvalid & axi.rready
        b_fire = axi.bvalid & axi.bready

        # Read bursts asked for and not finished, oldest first: their lengths (the subordinate
        # needs them for RLAST), one place more than the DMA may use.
        room = outstanding + 1
        r_lens = [Signal(8, name=f"r_len{i}") for i in range(room)]
        r_open = Signal(range(room + 1))
        r_beat = Signal(8)
        r_done = r_fire & axi.rlast
        m.d.sync += r_open.eq(r_open + ar_fire - r_done)
        for i in range(room):
            # Shift out the finished burst; the new one goes behind the others.
            kept = r_lens[i + 1] if i + 1 < room else Const(0, 8)
            after = Signal(8, name=f"r_len{i}_after")
            m.d.comb += after.eq(r_lens[i])
            with m.If(r_done):
                m.d.comb += after.eq(kept)
            with m.If(ar_fire & (r_open - r_done == i)):
                m.d.sync += r_lens[i].eq(axi.arlen)
            with m.Else():
                m.d.sync += r_lens[i].eq(after)
        with m.If(r_fire):
            m.d.sync += r_beat.eq(r_beat + 1)
            with m.If(axi.rlast):
                m.d.sync += r_beat.eq(0)
        # The subordinate: read data only for bursts asked for, RLAST on their last beat.
        m.d.comb += [
            Assume(~axi.rvalid | (r_open != 0)),
            Assume(~axi.rvalid | (axi.rlast == (r_beat == r_lens[0]))),
        ]

        # Write bursts: AW taken, W bursts finished (WLAST taken), responses.
        aw_count = Signal(4)
        wl_count = Signal(4)
        b_count = Signal(4)
        m.d.sync += [
            aw_count.eq(aw_count + aw_fire),
            wl_count.eq(wl_count + (w_fire & axi.wlast)),
            b_count.eq(b_count + b_fire),
        ]
        w_open = (aw_count - wl_count)[:4]      # AW out, W beats still to send
        in_flight = (aw_count - b_count)[:4]    # AW out, no response yet
        answerable = (wl_count - b_count)[:4]   # all W beats out, no response yet
        # "the slave must wait for AWVALID, AWREADY, WVALID, WREADY and WLAST before BVALID".
        m.d.comb += Assume(~axi.bvalid | (answerable != 0))

        # One write burst followed: its address, length, beats sent, and the bursts ahead of it
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
                t_ahead.eq(w_open - (w_fire & axi.wlast)),
            ]

        def burst_checks(prefix, valid, addr, length, burst_size, burst, ident):
            beats_bytes = (length + 1) << size
            end = Signal(aw + 1, name=f"{prefix}_end")      # one past the burst's last byte
            m.d.comb += end.eq(addr + beats_bytes)
            # The window widened to whole bus beats: a beat holding one byte of it may be read.
            low = Cat(Const(0, size), base[size:])
            high = Signal(aw + 1, name=f"{prefix}_high")
            m.d.comb += high.eq(((limit + (b - 1)) >> size) << size)
            with m.If(checking & valid):
                m.d.comb += [
                    # "full-width beats (AxSIZE = bus width)", "aligned INCR bursts".
                    Assert(burst_size == size, f"dma {prefix}: AxSIZE is the bus width"),
                    Assert(burst == BURST_INCR, f"dma {prefix}: INCR bursts"),
                    Assert(addr[:size] == 0, f"dma {prefix}: bursts start on a bus beat"),
                    # "at most max_burst_len beats".
                    Assert(length <= config.max_burst_len - 1,
                           f"dma {prefix}: AxLEN <= max_burst_len - 1"),
                    # "never across a 4 KiB boundary" (AXI4 A3.4.1).
                    Assert(addr[:12] + beats_bytes <= BOUNDARY,
                           f"dma {prefix}: no burst crosses a 4 KiB boundary"),
                    # "all transactions use ID 0".
                    Assert(ident == 0, f"dma {prefix}: ID 0"),
                    # "an extent ... not inside [window_base, window_limit) is refused": no
                    # burst touches a bus beat without a byte of the window.
                    Assert((addr >= low) & (end <= high),
                           f"dma {prefix}: bursts stay inside the window"),
                ]

        burst_checks("ar", axi.arvalid, axi.araddr, axi.arlen, axi.arsize, axi.arburst,
                     axi.arid)
        burst_checks("aw", axi.awvalid, axi.awaddr, axi.awlen, axi.awsize, axi.awburst,
                     axi.awid)

        with m.If(checking):
            m.d.comb += [
                # "Up to max_outstanding_reads read bursts and as many write bursts are in
                # flight".
                Assert(r_open <= outstanding, "dma: at most max_outstanding_reads reads in "
                                              "flight"),
                Assert(in_flight <= outstanding, "dma: at most max_outstanding_reads writes "
                                                 "in flight"),
                # W beats follow their burst's AW (this DMA never sends W first), which is
                # what lets the harness tell the bursts' beats apart.
                Assert(~axi.wvalid | (w_open != 0), "dma w: beats only for a burst whose AW "
                                                    "went out"),
            ]
            with m.If(axi.wvalid & tracked & (t_ahead == 0)):
                beat_addr = Signal(aw, name="t_beat_addr")
                m.d.comb += beat_addr.eq(t_addr + (t_beat << size))
                m.d.comb += Assert(axi.wlast == (t_beat == t_len),
                                   "dma w: WLAST exactly on the last beat of each burst")
                # "the DMA ... sets WSTRB for partial first and last beats": no byte outside
                # the window is written.
                for lane in range(b):
                    byte = Signal(aw + 1, name=f"t_byte{lane}")
                    m.d.comb += byte.eq(beat_addr + lane)
                    with m.If(axi.wstrb[lane]):
                        m.d.comb += Assert((byte >= base) & (byte < limit),
                                           "dma w: no byte written outside the window")
        return m
