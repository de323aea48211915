"""Proof harness of :class:`mxe.hw.csr.CSRBlock` as an AXI4-Lite subordinate."""

from amaranth import Cat, Mux, Signal
from amaranth.asserts import AnyConst, AnySeq, Initial
from amaranth.hdl import Assert, Assume

from mxe.hw.axi import RESP_OKAY, RESP_SLVERR
from mxe.hw.csr import CSRBlock
from mxe.hw.regmap import REGISTERS, by_name, ports as regmap_ports
from .checkers import BlockProof, HandshakeRule


__all__ = ["CSRBlockProof", "rw_registers", "read_values", "counter_pairs"]


def rw_registers(config):
    """``{register: mask of its RW bits}`` of the registers with RW fields an engine with
    ``config`` has."""
    result = {}
    for reg in REGISTERS:
        mask = sum(f.mask for f in reg.fields if reg.access_of(f) == "RW")
        if mask and reg.present(config):
            result[reg] = mask
    return result


def read_values(config):
    """``{register: value}`` of the registers whose reads the map fixes: CONST registers (their
    value for ``config``), those with only W1P and PUSH fields (0) and those of a feature the
    engine lacks (0)."""
    result = {}
    for reg in REGISTERS:
        kinds = {reg.access_of(f) for f in reg.fields}
        if not reg.present(config) or kinds <= {"W1P", "PUSH"}:
            result[reg] = 0
        elif kinds == {"CONST"}:
            result[reg] = sum(f.value(config) << f.lsb for f in reg.fields)
    return result


def counter_pairs(config):
    """``[(LO register, HI register, port)]`` of the counters an engine with ``config`` has."""
    present = [reg for reg in REGISTERS if reg.present(config) and reg.access == "CNT"]
    return [(lo, hi, lo.port_of(lo.fields[0]))
            for lo in present for hi in present
            if lo.name.endswith("_LO") and hi.name == lo.name[:-3] + "_HI"]


class CSRBlockProof(BlockProof):
    """A CSR block driven by an AXI4-Lite manager that keeps the AXI rules (and does anything
    they allow, with several transactions in flight), with every engine-side input free.

    Which register a write lands in and what a read returns are checked on one register at a
    time, chosen freely among those with RW fields (an ``AnyConst``), so the proof covers each.
    The harness keeps what that register must hold: a write takes effect by the time its
    response is offered (``bvalid`` rises), and a read returns the registers as they are the
    cycle after its AR handshake ("the register read a cycle later").

    Parameters
    ----------
    config : EngineConfig
    dut : callable
        Builds the block from ``config`` (:class:`CSRBlock`, or a variant for the tests that
        show the proof can fail).
    """

    def __init__(self, config, *, dut=CSRBlock):
        super().__init__(config, dut=dut)

    def check(self, m, dut, checking):
        config = self._config
        bus = dut.bus
        aw = len(bus.awaddr)

        # The manager: free, within the AXI rules assumed below; the engine side: free.
        m.d.comb += [
            bus.awvalid.eq(AnySeq(1)), bus.awaddr.eq(AnySeq(aw)), bus.awprot.eq(AnySeq(3)),
            bus.wvalid.eq(AnySeq(1)), bus.wdata.eq(AnySeq(32)), bus.wstrb.eq(AnySeq(4)),
            bus.bready.eq(AnySeq(1)),
            bus.arvalid.eq(AnySeq(1)), bus.araddr.eq(AnySeq(aw)), bus.arprot.eq(AnySeq(3)),
            bus.rready.eq(AnySeq(1)),
            dut.o_cmd.ready.eq(AnySeq(1)),
        ]
        for name, (direction, width, _access, _doc) in regmap_ports(config=config).items():
            if direction == "in":
                m.d.comb += getattr(dut, name).eq(AnySeq(width))

        # AXI A3.2.1 on the manager's channels (assumed) and on the subordinate's (asserted).
        channels = [
            ("aw", bus.awvalid, bus.awready, Cat(bus.awaddr, bus.awprot), True),
            ("w", bus.wvalid, bus.wready, Cat(bus.wdata, bus.wstrb), True),
            ("ar", bus.arvalid, bus.arready, Cat(bus.araddr, bus.arprot), True),
            ("b", bus.bvalid, bus.bready, bus.bresp, False),
            ("r", bus.rvalid, bus.rready, Cat(bus.rdata, bus.rresp), False),
        ]
        for name, valid, ready, payload, assume in channels:
            rule = HandshakeRule(len(payload), name=f"csr {name}", assume=assume)
            m.submodules[f"{name}_rule"] = rule
            m.d.comb += [rule.valid.eq(valid), rule.ready.eq(ready), rule.payload.eq(payload)]

        aw_fire = bus.awvalid & bus.awready
        w_fire = bus.wvalid & bus.wready
        b_fire = bus.bvalid & bus.bready
        ar_fire = bus.arvalid & bus.arready
        r_fire = bus.rvalid & bus.rready

        # Requests taken and not yet answered (a response counts once its handshake is done).
        aw_open = Signal(range(4))
        w_open = Signal(range(4))
        ar_open = Signal(range(4))
        m.d.sync += [
            aw_open.eq(aw_open + aw_fire - b_fire),
            w_open.eq(w_open + w_fire - b_fire),
            ar_open.eq(ar_open + ar_fire - r_fire),
        ]
        # The last AW and W taken, and the last AR: the request a response answers (checked
        # below to be the only one open when the response starts).
        aw_word = Signal(aw - 2)
        w_data = Signal(32)
        w_strb = Signal(4)
        ar_word = Signal(aw - 2)
        with m.If(aw_fire):
            m.d.sync += aw_word.eq(bus.awaddr[2:])
        with m.If(w_fire):
            m.d.sync += [w_data.eq(bus.wdata), w_strb.eq(bus.wstrb)]
        with m.If(ar_fire):
            m.d.sync += ar_word.eq(bus.araddr[2:])
        b_was = Signal()
        r_was = Signal()
        m.d.sync += [b_was.eq(bus.bvalid), r_was.eq(bus.rvalid)]
        b_starts = bus.bvalid & ~b_was
        r_starts = bus.rvalid & ~r_was

        def decode(word, registers):
            return Cat(word == reg.offset >> 2 for reg in registers).any()

        with m.If(checking):
            m.d.comb += [
                # "Exactly one response per request" (AXI4-Lite: every write, an AW and a W,
                # gets one B; every AR one R): a response only for a request taken, and when
                # it starts, that request is the only one open (in order, none skipped).
                Assert(~bus.bvalid | ((aw_open != 0) & (w_open != 0)),
                       "csr: a write response only for a write taken"),
                Assert(~b_starts | ((aw_open == 1) & (w_open == 1)),
                       "csr: a write response answers the one open write"),
                Assert(~bus.rvalid | (ar_open == 1), "csr: read data only for a read taken"),
                # "each has a one-entry holding register": at most one request held besides
                # the one being answered.
                Assert((aw_open <= 2) & (w_open <= 2) & (ar_open <= 1),
                       "csr: one request held besides the one answered"),
            ]
        # "Latency: write response 1 cycle after the later of AW and W, read data 2 cycles
        # after AR": a request open without its response being offered for two cycles in a
        # row is one left unanswered.
        w_waiting = (aw_open != 0) & (w_open != 0) & ~bus.bvalid
        r_waiting = (ar_open != 0) & ~bus.rvalid
        w_waited = Signal()
        r_waited = Signal()
        m.d.sync += [w_waited.eq(w_waiting), r_waited.eq(r_waiting)]
        with m.If(checking):
            m.d.comb += [
                Assert(~(w_waited & w_waiting), "csr: a write is answered in the cycle after "
                                                "both halves are held (Latency)"),
                Assert(~(r_waited & r_waiting), "csr: read data 2 cycles after AR (Latency)"),
            ]

        # Responses: "Unmapped addresses answer SLVERR (reads return 0) without side effects".
        mapped_w = decode(aw_word, REGISTERS)
        mapped_r = decode(ar_word, REGISTERS)
        with m.If(checking & b_starts):
            m.d.comb += Assert(bus.bresp == Mux(mapped_w, RESP_OKAY, RESP_SLVERR),
                               "csr: OKAY for a mapped write, SLVERR for an unmapped one")
        with m.If(checking & r_starts):
            m.d.comb += Assert(bus.rresp == Mux(mapped_r, RESP_OKAY, RESP_SLVERR),
                               "csr: OKAY for a mapped read, SLVERR for an unmapped one")
            with m.If(~mapped_r):
                m.d.comb += Assert(bus.rdata == 0, "csr: an unmapped read returns 0")
            # Registers whose reads the map fixes: CONST (regmap values for this config),
            # W1P/PUSH-only ("reads return 0") and those of a missing feature ("reads 0").
            for reg, value in read_values(config).items():
                with m.If(ar_word == reg.offset >> 2):
                    m.d.comb += Assert(bus.rdata == value, f"csr: {reg.name} reads "
                                                           f"{value:#x} (regmap)")

        # The tracked RW register: its word address and RW bits, and what it must hold.
        rw = rw_registers(config)
        chosen = Signal(aw - 2)
        m.d.comb += chosen.eq(AnyConst(aw - 2))
        m.d.comb += Assume(decode(chosen, rw))
        mask = Signal(32)
        for reg, bits in rw.items():
            with m.If(chosen == reg.offset >> 2):
                m.d.comb += mask.eq(bits)
        reset = Signal(32)
        for reg in rw:
            with m.If(chosen == reg.offset >> 2):
                m.d.comb += reset.eq(sum(f.reset << f.lsb for f in reg.fields
                                         if reg.access_of(f) == "RW"))
        held = Signal(32)
        held_before = Mux(Initial(), reset, held)
        # A write to it takes effect by the time its response starts: byte strobes and the
        # register's RW bits select what changes ("wstrb masks RW and staging bytes").
        byte_mask = Cat(w_strb[i].replicate(8) for i in range(4))
        written = (held_before & ~(byte_mask & mask)) | (w_data & byte_mask & mask)
        held_now = Signal(32)
        m.d.comb += held_now.eq(Mux(b_starts & (aw_word == chosen), written, held_before))
        m.d.sync += held.eq(held_now)
        # What a read of it must return: the value the cycle after its AR.
        ar_was = Signal()
        expected = Signal(32)
        m.d.sync += ar_was.eq(ar_fire)
        with m.If(ar_was):
            m.d.sync += expected.eq(held_now)
        with m.If(checking & r_starts & (ar_word == chosen)):
            m.d.comb += Assert((bus.rdata & mask) == expected,
                               "csr: a read returns the last write to an RW register")
        # "RW fields: Out ports holding the written value".
        for reg in rw:
            for f in reg.fields:
                name = reg.port_of(f)
                if reg.access_of(f) != "RW" or name is None:
                    continue
                port = getattr(dut, name)[f.port_lsb:f.port_lsb + f.width]
                with m.If(checking & (chosen == reg.offset >> 2)):
                    m.d.comb += Assert(port == held_now[f.lsb:f.lsb + f.width],
                                       f"csr: {name} holds the written value")
        # Counters, one pair at a time (chosen freely): "Reading the _LO half captures the
        # _HI half at the same instant; reading _HI returns that capture".
        pairs = counter_pairs(config)
        if pairs:
            which = Signal(range(len(pairs)))
            m.d.comb += which.eq(AnyConst(range(len(pairs))))
            m.d.comb += Assume(which < len(pairs))
            capture = Signal(32)
            counter_read = Signal(32)
            for i, (lo, hi, name) in enumerate(pairs):
                value = getattr(dut, name)
                with m.If(ar_was & (which == i)):
                    with m.If(ar_word == lo.offset >> 2):
                        m.d.sync += [capture.eq(value[32:]), counter_read.eq(value[:32])]
                    with m.If(ar_word == hi.offset >> 2):
                        m.d.sync += counter_read.eq(capture)
                with m.If(checking & r_starts & (which == i)
                          & ((ar_word == lo.offset >> 2) | (ar_word == hi.offset >> 2))):
                    m.d.comb += Assert(bus.rdata == counter_read,
                                       "csr: _LO reads the counter and captures _HI, _HI "
                                       "reads the capture (CNT)")

        # "a write to CMD_W3 offers {CMD_W3, CMD_W2, CMD_W1, CMD_W0} on o_cmd for the one cycle
        # of the write": the cycle before the write's response, word 3 the write's data, words 0
        # to 2 the staging registers.
        push = Signal()
        m.d.sync += push.eq(dut.o_cmd.valid)
        w3 = b_starts & (aw_word == by_name("CMD_W3").offset >> 2)
        with m.If(checking):
            m.d.comb += [Assert(~push | w3, "csr: a command is pushed by a write to CMD_W3"),
                         Assert(push | ~w3, "csr: a write to CMD_W3 pushes a command")]
        with m.If(checking & dut.o_cmd.valid):
            m.d.comb += [
                Assert(~push, "csr: a command is offered for one cycle"),
                Assert(dut.o_cmd.payload[96:] == (w_data & Cat(w_strb[i].replicate(8)
                                                               for i in range(4))),
                       "csr: command word 3 is the CMD_W3 write's data"),
            ]
            for i in range(3):
                with m.If(chosen == by_name(f"CMD_W{i}").offset >> 2):
                    m.d.comb += Assert(dut.o_cmd.payload[32 * i:32 * i + 32] == held_now,
                                       f"csr: command word {i} is CMD_W{i}")
