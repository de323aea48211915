"""On-chip memory behind AXI4 and AXI4-Lite: block RAM standing in for DRAM on a board."""

from amaranth import Cat, Const, Module, Mux, Signal, unsigned
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In

from .axi import (BURST_INCR, RESP_DECERR, RESP_OKAY, RESP_SLVERR, axi4_signature,
                  axilite_signature)


__all__ = ["AXIRam", "HOST_ADDR_WIDTH", "RAM_READ_LATENCY"]

#: Address width of the ``host`` port (byte addresses).
HOST_ADDR_WIDTH = 32
#: Cycles from an AR handshake to the burst's first R beat (no host read in the way, R ready).
RAM_READ_LATENCY = 4


def _log2(n):
    return n.bit_length() - 1


def _is_pow2(n):
    return n > 0 and n & (n - 1) == 0


class AXIRam(wiring.Component):
    """``size`` bytes of block RAM at ``base``, reached by an AXI4 manager (a DMA) and an
    AXI4-Lite manager (a host bridge).

    The storage is one :class:`amaranth.lib.memory.Memory` of ``data_width``-bit words with one
    write port (byte enables) and one synchronous read port, the shape Yosys maps to block RAM
    (ECP5 DP16KD, iCE40 SB_RAM40_4K). The three requesters share it: AXI reads and host reads
    take turns on the read port, AXI writes and host writes on the write port, the host first
    (its accesses are one word each and far apart). AXI reads and writes proceed in the same
    cycle, as they use different ports.

    With ``single_port`` the memory has one port for reads and writes, one access a cycle (the
    host's write first, then the host's read, an AXI write beat, an AXI read beat), and is
    marked ``ram_style = "huge"``: the shape Yosys maps to the iCE40 UP5K's SPRAM
    (SB_SPRAM256KA, 32 KiB each, four on the device). Such RAM has no initial contents, so
    neither has the memory: ``init`` is refused, and the contents after power-up are undefined
    on the device (zeros in simulation). AXI reads and writes then take turns: a burst each way
    at once moves a beat a cycle between them.

    AXI4 port: INCR bursts of any length (1..256 beats) with ``awsize``/``arsize`` equal to the
    bus width; the low address bits of an unaligned start are ignored (the manager's strobes
    say which bytes of the first beat it writes). Another burst type or size answers SLVERR
    (every read beat, or the write's response) and touches no memory. A beat whose address lies
    outside ``[base, base + size)`` answers DECERR (a read beat returns zeros, a write beat is
    dropped and its burst's BRESP is DECERR); addresses do not alias. ``wlast`` is not looked
    at: the burst ends after ``awlen + 1`` beats. One address is held while a burst runs, so
    bursts follow each other without a gap. Reads: one beat per cycle while RREADY is high,
    first beat :data:`RAM_READ_LATENCY` (4) cycles after AR; writes: one beat per cycle while
    WVALID is high, BVALID the cycle after the last beat. A read issued while a write to the
    same word is in flight returns either the old or the new data (AXI orders them only
    through the write response).

    Host port: 32-bit AXI4-Lite, one read and one write at a time (like the CSR block). A word
    at a byte address in ``[base, base + size)`` is the 32-bit lane ``(address / 4) mod
    (data_width / 32)`` of a memory word; ``wstrb`` masks its bytes. Other addresses answer
    DECERR (reads return 0) and write nothing. Address bits 1:0 are ignored. Write response one
    cycle after the later of AW and W, read data three cycles after AR; an AXI burst running at
    the same time loses a cycle to each host access.

    Parameters
    ----------
    size : int
        Bytes, a power of two, at least ``data_width // 8``.
    data_width : int
        Width of the AXI4 data bus and of a memory word: 32, 64, 128, ..., 1024.
    addr_width : int
        Width of the AXI4 addresses, 12..64; ``base + size`` must fit it.
    id_width : int
        Width of the AXI4 IDs, 1..32 (echoed in RID and BID).
    base : int
        Byte address of the first byte, a multiple of ``size``; ``base + size`` must also fit
        the host's 32-bit addresses.
    init : bytes-like, optional
        Initial contents from ``base`` on (at most ``size`` bytes); the rest is zero.
    single_port : bool
        One port for reads and writes, for single-port RAM (above); no ``init``.

    Members
    -------
    axi : In(axi4_signature(addr_width=addr_width, data_width=data_width, id_width=id_width))
        The AXI4 subordinate port, for the engine's DMA.
    host : In(axilite_signature(addr_width=32, data_width=32))
        The AXI4-Lite subordinate port, for the host's bridge.

    Raises
    ------
    TypeError
        If a parameter is not an integer (``init``: not bytes-like).
    ValueError
        If a parameter is out of range or they do not fit together.
    """

    def __init__(self, *, size, data_width, addr_width, id_width, base=0, init=None,
                 single_port=False):
        for name, value in (("size", size), ("data_width", data_width),
                            ("addr_width", addr_width), ("id_width", id_width), ("base", base)):
            if not isinstance(value, int) or isinstance(value, bool):
                self._MustUse__silence = True
                raise TypeError(f"{name} must be an integer, not {value!r}")
        if init is not None and not isinstance(init, (bytes, bytearray, memoryview)):
            self._MustUse__silence = True
            raise TypeError(f"init must be bytes-like, not {type(init).__name__}")
        if not isinstance(single_port, bool):
            self._MustUse__silence = True
            raise TypeError(f"single_port must be a bool, not {single_port!r}")
        checks = [
            (not _is_pow2(data_width) or not 32 <= data_width <= 1024,
             f"data_width must be a power of two from 32 to 1024, not {data_width}"),
            (not 12 <= addr_width <= 64, f"addr_width must be in 12..64, not {addr_width}"),
            (not 1 <= id_width <= 32, f"id_width must be in 1..32, not {id_width}"),
            (not _is_pow2(size) or size < data_width // 8,
             f"size must be a power of two of at least {data_width // 8} bytes, not {size}"),
            (base < 0 or base % size,
             f"base must be a non-negative multiple of size ({size:#x}), not {base:#x}"),
            (base + size > 1 << min(addr_width, HOST_ADDR_WIDTH),
             f"base + size must fit {min(addr_width, HOST_ADDR_WIDTH)}-bit addresses, "
             f"not {base + size:#x}"),
            (init is not None and len(init) > size,
             f"init must be at most size ({size}) bytes, not {0 if init is None else len(init)}"),
            (single_port and init is not None,
             "init must be None with single_port=True: single-port RAM (SPRAM) has no initial "
             "contents"),
        ]
        for failed, message in checks:
            if failed:
                self._MustUse__silence = True
                raise ValueError(message)
        self._size = size
        self._data_width = data_width
        self._addr_width = addr_width
        self._id_width = id_width
        self._base = base
        self._init = bytes(init or b"")
        self._single_port = single_port
        super().__init__({
            "axi": In(axi4_signature(addr_width=addr_width, data_width=data_width,
                                     id_width=id_width)),
            "host": In(axilite_signature(addr_width=HOST_ADDR_WIDTH, data_width=32)),
        })

    @property
    def size(self):
        return self._size

    @property
    def data_width(self):
        return self._data_width

    @property
    def addr_width(self):
        return self._addr_width

    @property
    def id_width(self):
        return self._id_width

    @property
    def base(self):
        return self._base

    @property
    def single_port(self):
        return self._single_port

    @property
    def depth(self):
        """Memory words."""
        return self._size * 8 // self._data_width

    def _init_words(self):
        step = self._data_width // 8
        words = [int.from_bytes(self._init[i:i + step], "little")
                 for i in range(0, len(self._init), step)]
        while words and not words[-1]:
            words.pop()
        return words

    def elaborate(self, platform):
        m = Module()
        axi, host = self.axi, self.host
        dw = self._data_width
        lanes = dw // 8
        offset_bits = _log2(lanes)            # byte address bits inside a word
        word_bits = _log2(self.depth)         # word address bits inside the memory
        size_bits = _log2(self._size)
        host_lane_bits = _log2(dw // 32)

        # no_rw_check: a read of a word being written in the same cycle may return either
        # value (AXI does not order them), so Yosys needs no bypass around the block RAM.
        attrs = {"no_rw_check": 1}
        if self._single_port:
            attrs["ram_style"] = "huge"     # Yosys's name for the UP5K's SPRAM
        m.submodules.mem = mem = Memory(shape=unsigned(dw), depth=self.depth,
                                        init=self._init_words(), attrs=attrs)
        wp = mem.write_port(granularity=8)
        rp = mem.read_port(domain="sync")

        def word_in_range(word_addr):
            """A word address (byte address without its offset bits) lies in the memory."""
            if len(word_addr) <= word_bits:
                return Const(1)
            return word_addr[word_bits:] == self._base >> size_bits

        def host_in_range(addr):
            if size_bits >= HOST_ADDR_WIDTH:
                return Const(1)
            return addr[size_bits:] == self._base >> size_bits

        def word_index(word_addr):
            return word_addr[:word_bits]

        wa_width = self._addr_width - offset_bits
        bad_size = Const(offset_bits, 3)

        # --- host port (first on both memory ports) -----------------------------------------
        h_aw_held = Signal()
        h_aw_addr = Signal(HOST_ADDR_WIDTH)
        h_aw_ok = Signal()
        h_w_held = Signal()
        h_wdata = Signal(32)
        h_wstrb = Signal(4)
        m.d.comb += [host.awready.eq(~h_aw_held), host.wready.eq(~h_w_held)]
        with m.If(host.awvalid & host.awready):
            m.d.sync += [h_aw_held.eq(1), h_aw_addr.eq(host.awaddr),
                         h_aw_ok.eq(host_in_range(host.awaddr))]
        with m.If(host.wvalid & host.wready):
            m.d.sync += [h_w_held.eq(1), h_wdata.eq(host.wdata), h_wstrb.eq(host.wstrb)]
        with m.If(host.bvalid & host.bready):
            m.d.sync += host.bvalid.eq(0)
        # From flip-flops only: the AXI write side yields to it without a path from the host's
        # handshakes into its WREADY.
        host_wr_go = Signal()
        m.d.comb += host_wr_go.eq(h_aw_held & h_w_held & ~host.bvalid)
        h_w_lane = h_aw_addr[2:offset_bits]
        with m.If(host_wr_go):
            m.d.sync += [h_aw_held.eq(0), h_w_held.eq(0), host.bvalid.eq(1),
                         host.bresp.eq(Mux(h_aw_ok, RESP_OKAY, RESP_DECERR))]

        h_ar_held = Signal()
        h_ar_addr = Signal(HOST_ADDR_WIDTH)
        h_ar_ok = Signal()
        h_rd_infl = Signal()
        m.d.comb += host.arready.eq(~h_ar_held & ~host.rvalid)
        with m.If(host.rvalid & host.rready):
            m.d.sync += host.rvalid.eq(0)
        with m.If(host.arvalid & host.arready):
            m.d.sync += [h_ar_held.eq(1), h_ar_addr.eq(host.araddr),
                         h_ar_ok.eq(host_in_range(host.araddr))]
        host_rd_go = Signal()
        m.d.comb += host_rd_go.eq(h_ar_held & h_ar_ok & ~h_rd_infl
                                  & ~(host_wr_go if self._single_port else 0))
        m.d.sync += h_rd_infl.eq(host_rd_go)
        with m.If(h_rd_infl):
            lane = h_ar_addr[2:offset_bits]
            m.d.sync += [h_ar_held.eq(0), host.rvalid.eq(1), host.rresp.eq(RESP_OKAY),
                         host.rdata.eq(rp.data.word_select(lane, 32) if host_lane_bits
                                       else rp.data)]
        with m.Elif(h_ar_held & ~h_ar_ok):
            m.d.sync += [h_ar_held.eq(0), host.rvalid.eq(1), host.rresp.eq(RESP_DECERR),
                         host.rdata.eq(0)]

        # --- AXI write: one burst held behind the one being written --------------------------
        aw_held = Signal()
        aw_id = Signal(self._id_width)
        aw_addr = Signal(wa_width)
        aw_len = Signal(8)
        aw_bad = Signal()
        m.d.comb += axi.awready.eq(~aw_held)
        wr_active = Signal()
        wr_id = Signal(self._id_width)
        wr_addr = Signal(wa_width)
        wr_left = Signal(8)             # beats after the current one
        wr_bad = Signal()               # unsupported burst: SLVERR
        wr_dec = Signal()               # a beat so far fell outside the memory: DECERR

        wr_last = Signal()
        wr_ok = Signal()
        w_fire = Signal()
        m.d.comb += [
            wr_last.eq(wr_left == 0),
            wr_ok.eq(~wr_bad & word_in_range(wr_addr)),
            axi.wready.eq(wr_active & ~host_wr_go & ~(host_rd_go if self._single_port else 0)
                          & (~wr_last | ~axi.bvalid | axi.bready)),
            w_fire.eq(axi.wvalid & axi.wready),
        ]
        with m.If(axi.awvalid & axi.awready):
            m.d.sync += [aw_held.eq(1), aw_id.eq(axi.awid), aw_addr.eq(axi.awaddr[offset_bits:]),
                         aw_len.eq(axi.awlen),
                         aw_bad.eq((axi.awsize != bad_size) | (axi.awburst != BURST_INCR))]
        with m.If(axi.bvalid & axi.bready):
            m.d.sync += axi.bvalid.eq(0)
        with m.If(w_fire):
            m.d.sync += [wr_addr.eq(wr_addr + 1), wr_left.eq(wr_left - 1),
                         wr_dec.eq(wr_dec | ~wr_ok)]
            with m.If(wr_last):
                m.d.sync += [
                    wr_active.eq(0),
                    axi.bvalid.eq(1),
                    axi.bid.eq(wr_id),
                    axi.bresp.eq(Mux(wr_bad, RESP_SLVERR,
                                     Mux(wr_dec | ~wr_ok, RESP_DECERR, RESP_OKAY))),
                ]
        with m.If(aw_held & (~wr_active | (w_fire & wr_last))):
            m.d.sync += [aw_held.eq(0), wr_active.eq(1), wr_id.eq(aw_id), wr_addr.eq(aw_addr),
                         wr_left.eq(aw_len), wr_bad.eq(aw_bad), wr_dec.eq(0)]

        # The write port: the host's word, else the AXI beat.
        w_addr = Signal(word_bits)
        r_addr = Signal(word_bits)
        with m.If(host_wr_go):
            m.d.comb += [
                w_addr.eq(word_index(h_aw_addr[offset_bits:])),
                wp.data.eq(h_wdata.replicate(dw // 32)),
            ]
            with m.If(h_aw_ok):
                m.d.comb += wp.en.eq(Cat(Mux(h_w_lane == i, h_wstrb, 0)
                                         for i in range(dw // 32)) if host_lane_bits
                                     else h_wstrb)
        with m.Else():
            m.d.comb += [w_addr.eq(word_index(wr_addr)), wp.data.eq(axi.wdata)]
            with m.If(w_fire & wr_ok):
                m.d.comb += wp.en.eq(axi.wstrb)

        # --- AXI read: bursts issue a beat a cycle into a two-entry output buffer ------------
        ar_held = Signal()
        ar_id = Signal(self._id_width)
        ar_addr = Signal(wa_width)
        ar_len = Signal(8)
        ar_bad = Signal()
        m.d.comb += axi.arready.eq(~ar_held)
        with m.If(axi.arvalid & axi.arready):
            m.d.sync += [ar_held.eq(1), ar_id.eq(axi.arid), ar_addr.eq(axi.araddr[offset_bits:]),
                         ar_len.eq(axi.arlen),
                         ar_bad.eq((axi.arsize != bad_size) | (axi.arburst != BURST_INCR))]
        rd_active = Signal()
        rd_id = Signal(self._id_width)
        rd_addr = Signal(wa_width)
        rd_left = Signal(8)
        rd_bad = Signal()

        # A beat issued in cycle t reads the memory in t, arrives in t + 1 and is in the output
        # buffer (RVALID) from t + 2. Issuing needs room for it then: the buffer's level plus
        # the beat arriving, less the one leaving now, at most one.
        infl = Signal()                 # a beat was issued in the last cycle
        infl_id = Signal(self._id_width)
        infl_last = Signal()
        infl_resp = Signal(2)
        skid_valid = Signal()
        skid_data = Signal(dw)
        skid_id = Signal(self._id_width)
        skid_last = Signal()
        skid_resp = Signal(2)
        pop = axi.rvalid & axi.rready
        held = Signal(range(4))
        m.d.comb += held.eq(axi.rvalid + skid_valid + infl)
        issue = Signal()
        # Single-ported, a read beat also waits for a cycle without a write.
        port_free = ~host_wr_go & ~w_fire if self._single_port else 1
        m.d.comb += issue.eq(rd_active & ~host_rd_go & port_free
                             & ((held <= 1) | ((held == 2) & pop)))
        rd_last = rd_left == 0
        m.d.sync += infl.eq(issue)
        with m.If(issue):
            m.d.sync += [
                infl_id.eq(rd_id),
                infl_last.eq(rd_last),
                infl_resp.eq(Mux(rd_bad, RESP_SLVERR,
                                 Mux(word_in_range(rd_addr), RESP_OKAY, RESP_DECERR))),
                rd_addr.eq(rd_addr + 1),
                rd_left.eq(rd_left - 1),
            ]
            with m.If(rd_last):
                m.d.sync += rd_active.eq(0)
        with m.If(ar_held & (~rd_active | (issue & rd_last))):
            m.d.sync += [ar_held.eq(0), rd_active.eq(1), rd_id.eq(ar_id), rd_addr.eq(ar_addr),
                         rd_left.eq(ar_len), rd_bad.eq(ar_bad)]

        r_en = Signal()
        with m.If(host_rd_go):
            m.d.comb += [r_addr.eq(word_index(h_ar_addr[offset_bits:])), r_en.eq(1)]
        with m.Else():
            m.d.comb += [r_addr.eq(word_index(rd_addr)), r_en.eq(issue)]
        if self._single_port:
            # One address for both ports, and no read in a cycle with a write (no read then
            # wants the port): what Yosys maps to the RAM's one port.
            writing = host_wr_go | w_fire
            addr = Signal(word_bits)
            m.d.comb += [addr.eq(Mux(writing, w_addr, r_addr)), wp.addr.eq(addr),
                         rp.addr.eq(addr), rp.en.eq(r_en & ~wp.en.any())]
        else:
            m.d.comb += [wp.addr.eq(w_addr), rp.addr.eq(r_addr), rp.en.eq(r_en)]

        # Error beats carry zeros rather than whatever the memory read.
        new_data = Mux(infl_resp == RESP_OKAY, rp.data, 0)
        with m.If(~axi.rvalid | axi.rready):
            with m.If(skid_valid):
                m.d.sync += [axi.rdata.eq(skid_data), axi.rid.eq(skid_id),
                             axi.rlast.eq(skid_last), axi.rresp.eq(skid_resp),
                             skid_valid.eq(infl)]
            with m.Else():
                m.d.sync += [axi.rdata.eq(new_data), axi.rid.eq(infl_id),
                             axi.rlast.eq(infl_last), axi.rresp.eq(infl_resp),
                             axi.rvalid.eq(infl)]
        with m.Elif(infl):
            m.d.sync += skid_valid.eq(1)
        with m.If(infl):
            # Only read from the skid register after it was set, so it may follow every arrival.
            m.d.sync += [skid_data.eq(new_data), skid_id.eq(infl_id), skid_last.eq(infl_last),
                         skid_resp.eq(infl_resp)]
        return m
