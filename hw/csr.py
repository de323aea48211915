"""The CSR block: an AXI4-Lite subordinate generated from the register table in
:mod:`.regmap`."""

from amaranth import Cat, Const, Module, Mux, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from .axi import RESP_OKAY, RESP_SLVERR, axilite_signature
from .regmap import ADDR_WIDTH, REGISTERS, ports as regmap_ports


__all__ = ["CSRBlock", "CMD_WIDTH"]


#: Width of one command pushed through CMD_W0..CMD_W3.
CMD_WIDTH = 128


class CSRBlock(wiring.Component):
    """AXI4-Lite register block of MXE, generated from :data:`mxe.hw.regmap.REGISTERS`.

    The register map (offsets, fields, access kinds) is documented by
    :func:`mxe.hw.regmap.register_map_markdown` (``mxe regmap``). Every field that is not a
    constant and not internal has a port named after it (``<register>_<field>``, or the name in
    the table):

    * RO fields: ``In`` ports the engine drives (``status_busy``, ``status_error`` (4 bits),
      ``status_queue_empty``, ``status_queue_full``, ``err_cmd_index`` (32), ``err_addr`` (64),
      ``cmd_level`` (16)).
    * RW fields: ``Out`` ports holding the written value (``ctrl_irq_enable``, ``win_base`` (64),
      ``win_limit`` (64)); reset value 0.
    * W1P fields: ``Out`` ports high for the one cycle after the write of a 1 (``ctrl_start``,
      ``ctrl_soft_reset``).
    * W1C fields: ``In`` set pulses of the sticky bits (``status_done``).
    * CNT registers: ``In(64)`` counter values the engine keeps (``cycles``, ``busy_cycles``,
      ``mac_active_cycles``, ``dma_rd_bytes``, ``dma_wr_bytes``, ``stall_load``,
      ``stall_store``, ``stall_dep``).

    A register of a feature the configuration leaves out (``feature=`` in the table, e.g. the
    counters but ``cycles`` without ``perf_counters``) has no port: it reads 0 and ignores
    writes, with an OKAY response, so every engine answers at the same offsets.

    Bus behaviour: AW and W are taken in any order (each has a one-entry holding register, their
    ``ready`` is high while it is empty); the write happens when both are held and no write
    response is waiting, and its response is held until ``bready``. A read's address is decoded
    as AR is taken and the register read a cycle later; the next AR is taken once the response
    has been accepted. Latency: write response 1 cycle after the later of AW and W, read data 2
    cycles after AR. Unmapped addresses answer SLVERR (reads return 0) without side effects;
    writes to CONST and RO registers are ignored with OKAY. ``wstrb`` masks RW and staging
    bytes; for W1P, W1C and PUSH a byte with its strobe low counts as written with zeros.
    Address bits 1:0 are ignored. ``soft_reset`` does not reset this block (the window and
    staging words survive).

    Command push: a write to CMD_W3 offers ``{CMD_W3, CMD_W2, CMD_W1, CMD_W0}`` (CMD_W0 in bits
    31:0) on ``o_cmd`` for the one cycle of the write, from registers (no output register of
    its own). The queue takes it if it has room (``o_cmd.ready``, meaning "not full");
    otherwise the command is dropped and STATUS.cmd_overflow is set. So unlike a stream's,
    ``o_cmd.valid`` does not wait for ``ready``: the queue's ``w_en`` is all it drives.

    Parameters
    ----------
    config : EngineConfig
        Values of the CONST configuration registers.
    addr_width : int
        Bus address width, :data:`mxe.hw.regmap.ADDR_WIDTH` (12) by default; 9..32.

    Members
    -------
    bus : In(axilite_signature(addr_width=addr_width, data_width=32))
        The AXI4-Lite subordinate port.
    o_cmd : Out(stream.Signature(128))
        Pushed commands, to the command queue.
    irq : Out(1)
        ``CTRL.irq_enable & STATUS.done``.
    <field ports> : see above and :func:`mxe.hw.regmap.ports`.
    """

    def __init__(self, config, *, addr_width=ADDR_WIDTH):
        from .config import EngineConfig
        if not isinstance(config, EngineConfig):
            self._MustUse__silence = True
            raise TypeError(f"config must be an EngineConfig, not {config!r}")
        top = max(reg.offset for reg in REGISTERS)
        if not isinstance(addr_width, int) or isinstance(addr_width, bool):
            self._MustUse__silence = True
            raise TypeError(f"addr_width must be an integer, not {addr_width!r}")
        if not top < 1 << addr_width or addr_width > 32:
            self._MustUse__silence = True
            raise ValueError(f"addr_width must be in {top.bit_length()}..32, not {addr_width}")
        self._config = config
        self._addr_width = addr_width
        members = {
            "bus": In(axilite_signature(addr_width=addr_width, data_width=32)),
            "o_cmd": Out(stream.Signature(CMD_WIDTH)),
            "irq": Out(1),
        }
        for name, (direction, width, _access, _doc) in regmap_ports(config=config).items():
            members[name] = (In if direction == "in" else Out)(width)
        super().__init__(members)

    @property
    def config(self):
        return self._config

    @property
    def addr_width(self):
        return self._addr_width

    def elaborate(self, platform):
        m = Module()
        bus = self.bus
        config = self._config

        def port(name):
            return getattr(self, name)

        # Internal state: staging words, sticky bits, counter snapshots.
        internal = {}    # (register, field) -> Signal for RW/W1C fields without a port
        sticky = {}      # (register, field) -> sticky Signal of a W1C field
        w1c_set = {}     # (register, field) -> set pulse
        snapshots = {}   # counter port -> Signal(32) holding the high word
        push = Signal()  # a CMD_W3 write this cycle
        push_word = Signal(32)
        # The registers this engine has; the others decode (OKAY) and read 0.
        present = [reg for reg in REGISTERS if reg.present(config)]
        for reg in present:
            for f in reg.fields:
                access, name = reg.access_of(f), reg.port_of(f)
                key = (reg.name, f.name)
                if access == "RW" and name is None:
                    internal[key] = Signal(f.width, init=f.reset,
                                           name=f"{reg.name.lower()}_{f.name}")
                elif access == "W1C":
                    sticky[key] = Signal(f.width, name=f"{reg.name.lower()}_{f.name}_sticky")
                    w1c_set[key] = port(name) if name is not None else Signal(
                        f.width, name=f"{reg.name.lower()}_{f.name}_set")
                elif access == "CNT" and name not in snapshots:
                    snapshots[name] = Signal(32, name=f"{name}_hi_snapshot")

        def field_value(reg, f):
            """What a read of field ``f`` returns."""
            access, name = reg.access_of(f), reg.port_of(f)
            key = (reg.name, f.name)
            if access == "CONST":
                return Const(f.value(config), f.width)
            if access in ("W1P", "PUSH"):
                return Const(0, f.width)
            if access == "W1C":
                return sticky[key]
            if access == "CNT":
                return port(name)[:32] if f.port_lsb == 0 else snapshots[name]
            if access == "RW" and name is None:
                return internal[key]
            return port(name)[f.port_lsb:f.port_lsb + f.width]

        # --- write channel -----------------------------------------------------------------
        aw_held = Signal()
        w_held = Signal()
        w_data = Signal(32)
        w_strb = Signal(4)
        m.d.comb += [
            bus.awready.eq(~aw_held),
            bus.wready.eq(~w_held),
        ]
        # The write address is decoded as it is taken: one flag per register, so a write's
        # enables come from a flip-flop and not from an address compare.
        aw_sel = {reg.name: Signal(name=f"aw_sel_{reg.name.lower()}") for reg in REGISTERS}
        with m.If(bus.awvalid & bus.awready):
            m.d.sync += aw_held.eq(1)
            m.d.sync += [aw_sel[reg.name].eq(bus.awaddr[2:] == reg.offset >> 2)
                         for reg in REGISTERS]
        with m.If(bus.wvalid & bus.wready):
            m.d.sync += [w_held.eq(1), w_data.eq(bus.wdata), w_strb.eq(bus.wstrb)]
        with m.If(bus.bvalid & bus.bready):
            m.d.sync += bus.bvalid.eq(0)

        # A write happens when both halves are held and the last response has gone:
        # ``aw_held & w_held & ~bvalid``, kept in a register from those three's next values, so
        # the write enables (and the command push behind them) start from one flip-flop.
        do_write = Signal()
        aw_held_next = (aw_held & ~do_write) | (bus.awvalid & bus.awready)
        w_held_next = (w_held & ~do_write) | (bus.wvalid & bus.wready)
        bvalid_next = (bus.bvalid & ~bus.bready) | do_write
        m.d.sync += do_write.eq(aw_held_next & w_held_next & ~bvalid_next)
        byte_mask = Signal(32)
        m.d.comb += byte_mask.eq(Cat(*(w_strb[i].replicate(8) for i in range(4))))
        masked = Signal(32)
        m.d.comb += masked.eq(w_data & byte_mask)

        w1p_ports = [(reg, f) for reg in present for f in reg.fields
                     if reg.access_of(f) == "W1P"]
        for reg, f in w1p_ports:
            m.d.sync += port(reg.port_of(f)).eq(0)  # a pulse lasts one cycle
        w1c_clear = {key: Signal(len(s), name=f"{key[0].lower()}_{key[1]}_clear")
                     for key, s in sticky.items()}

        with m.If(do_write):
            m.d.sync += [aw_held.eq(0), w_held.eq(0), bus.bvalid.eq(1),
                         bus.bresp.eq(Mux(Cat(*aw_sel.values()).any(), RESP_OKAY, RESP_SLVERR))]
            for reg in present:
                with m.If(aw_sel[reg.name]):
                    for f in reg.fields:
                        access, name = reg.access_of(f), reg.port_of(f)
                        key = (reg.name, f.name)
                        bits = slice(f.lsb, f.lsb + f.width)
                        if access == "RW":
                            target = (internal[key] if name is None
                                      else port(name)[f.port_lsb:f.port_lsb + f.width])
                            mask = byte_mask[bits]
                            m.d.sync += target.eq((target & ~mask) | (w_data[bits] & mask))
                        elif access == "W1P":
                            m.d.sync += port(name).eq(masked[bits])
                        elif access == "W1C":
                            m.d.comb += w1c_clear[key].eq(masked[bits])
                        elif access == "PUSH":
                            m.d.comb += [push.eq(1), push_word.eq(masked)]

        for key, s in sticky.items():
            m.d.sync += s.eq((s & ~w1c_clear[key]) | w1c_set[key])

        # --- command push --------------------------------------------------------------------
        # Offered for the one cycle of the write, straight from registers (the staging words,
        # the write data, the write's flags): taken if the queue has room, else dropped.
        staging = [internal[(f"CMD_W{i}", "value")] for i in range(3)]
        m.d.comb += [
            self.o_cmd.valid.eq(push),
            self.o_cmd.payload.eq(Cat(*staging, push_word)),
        ]
        with m.If(push & ~self.o_cmd.ready):
            m.d.comb += w1c_set[("STATUS", "cmd_overflow")].eq(1)

        # --- read channel --------------------------------------------------------------------
        # Two steps: the address is decoded as it is taken, into one flag per register; a cycle
        # later the flagged register's word is read. No path runs from the address through the
        # decoder into the wide read multiplexer.
        ar_held = Signal()
        ar_sel = {reg.name: Signal(name=f"ar_sel_{reg.name.lower()}") for reg in REGISTERS}
        m.d.comb += bus.arready.eq(~ar_held & ~bus.rvalid)
        with m.If(bus.rvalid & bus.rready):
            m.d.sync += bus.rvalid.eq(0)
        with m.If(bus.arvalid & bus.arready):
            m.d.sync += ar_held.eq(1)
            m.d.sync += [ar_sel[reg.name].eq(bus.araddr[2:] == reg.offset >> 2)
                         for reg in REGISTERS]
        with m.If(ar_held):
            word = Const(0, 32)
            for reg in present:
                reg_word = Const(0, 32)
                for f in reg.fields:
                    reg_word = reg_word | (field_value(reg, f).as_unsigned() << f.lsb)
                word = word | Mux(ar_sel[reg.name], reg_word[:32], 0)
                for f in reg.fields:
                    if reg.access_of(f) == "CNT" and f.port_lsb == 0:
                        name = reg.port_of(f)
                        with m.If(ar_sel[reg.name]):
                            m.d.sync += snapshots[name].eq(port(name)[32:64])
            m.d.sync += [
                ar_held.eq(0),
                bus.rvalid.eq(1),
                bus.rdata.eq(word[:32]),
                bus.rresp.eq(Mux(Cat(*ar_sel.values()).any(), RESP_OKAY, RESP_SLVERR)),
            ]

        m.d.comb += self.irq.eq(self.ctrl_irq_enable & sticky[("STATUS", "done")])
        return m
