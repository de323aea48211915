"""The scratchpad: banked on-chip operand memory with one write and two read ports."""

from amaranth import Module, Signal, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from .config import EngineConfig
from .pe import operand_shape


__all__ = ["Scratchpad", "ReadPortSignature", "spad_row_layout", "spad_addr_width",
           "SPAD_READ_LATENCY", "spad_read_latency"]

#: Cycles from ``en`` to ``data`` on a scratchpad read port with ``deep_pipeline``: the block
#: RAM's read, then two registers per bank before the bank multiplexer.
SPAD_READ_LATENCY = 3


def spad_read_latency(config):
    """Cycles from ``en`` to ``data`` on a scratchpad read port: :data:`SPAD_READ_LATENCY` (3)
    with ``deep_pipeline``, else 1 (the block RAM's read alone, for a slow clock)."""
    return SPAD_READ_LATENCY if config.deep_pipeline else 1


def spad_row_layout(config):
    """One scratchpad row: ``max(rows, cols)`` operands, element 0 in the low bits."""
    return data.ArrayLayout(operand_shape(config), config.spad_row_elems)


def spad_addr_width(config):
    return (config.spad_depth - 1).bit_length()


class ReadPortSignature(wiring.Signature):
    """A synchronous memory read port, seen from the requester (the side with ``Out``).

    Members
    -------
    addr : Out(addr_width)
        Row address.
    en : Out(1)
        Read ``addr`` in this cycle. While ``en`` is low, ``data`` holds its value.
    data : In(row_layout)
        The row addressed a fixed number of cycles earlier (the buffer's read latency: 1 for the
        accumulator, :func:`spad_read_latency` for the scratchpad).
    """

    def __init__(self, addr_width, row_layout):
        super().__init__({
            "addr": Out(addr_width),
            "en": Out(1),
            "data": In(row_layout),
        })


def _check_config(config):
    if not isinstance(config, EngineConfig):
        raise TypeError(f"config must be an EngineConfig, not {config!r}")


class Scratchpad(wiring.Component):
    """``spad_depth`` rows of ``max(rows, cols)`` operands in ``spad_banks`` block-RAM banks.

    The bank is selected by the high address bits; each bank is a separate
    :class:`amaranth.lib.memory.Memory` with one write port (element write enables) and two
    synchronous read ports, so Yosys infers block RAM (two copies of each bank on FPGAs whose
    block RAM has one read port besides the write port: ECP5 DP16KD, iCE40 SB_RAM40_4K).

    Both read ports can read any bank in the same cycle (the execute unit reads an activation row
    and a weight row together). A write is visible to reads issued from the next cycle. A read
    of a row in the same cycle as a write to it returns zeros. Dual-port block RAM (ECP5
    DP16KD, iCE40 SB_RAM40_4K) returns undefined data then, and Yosys would build a bypass
    (a write delay and a multiplexer in the read path) to give the old contents; the banks
    carry Yosys's ``no_rw_check`` attribute instead, and the scratchpad flags the collision
    itself and zeros the row, so simulation and hardware agree. The engine never reads a row in
    the cycle it is written (the controller keeps a MATMUL from reading rows a LOAD has not
    finished writing, and a LOAD from writing rows a MATMUL has not finished reading), and a
    zeroed row would show in every bench's results if it did.

    Each bank's read data passes two more registers before the bank multiplexer: the block
    RAM's clock-to-out (5.8 ns on an ECP5 DP16KD without its output register, which Yosys does
    not infer and nextpnr does not time) leaves no time for routing, so the first register has
    no other load than the second and the placer is free to put it beside the block RAM (with
    one register, whose loads sat at the multiplexer, the routed path still had 3.4 ns of
    routing). The read latency is therefore :data:`SPAD_READ_LATENCY` (3). Without
    ``config.deep_pipeline`` (a slow clock) those registers are left out: the latency is 1
    (:func:`spad_read_latency`).

    Parameters
    ----------
    config : EngineConfig

    Members
    -------
    i_write : In(stream.Signature(StructLayout({"addr": addr_width, "data": row, "mask": elems}),
              always_ready=True))
        Row writes, one per cycle, no back-pressure. ``mask`` bit ``i`` enables operand ``i``.
    read_a, read_b : In(ReadPortSignature(addr_width, row))
        Read ports; ``data`` is valid :func:`spad_read_latency` (3, or 1 without
        ``deep_pipeline``) cycles after ``en`` and holds while ``en`` is low.
    """

    def __init__(self, config):
        _check_config(config)
        self._config = config
        aw = spad_addr_width(config)
        row = spad_row_layout(config)
        super().__init__({
            "i_write": In(stream.Signature(data.StructLayout({
                "addr": aw,
                "data": row,
                "mask": config.spad_row_elems,
            }), always_ready=True)),
            "read_a": In(ReadPortSignature(aw, row)),
            "read_b": In(ReadPortSignature(aw, row)),
        })

    @property
    def config(self):
        return self._config

    def elaborate(self, platform):
        m = Module()
        config = self._config
        banks = config.spad_banks
        bank_depth = config.spad_depth // banks
        bank_aw = (bank_depth - 1).bit_length()
        bank_bits = (banks - 1).bit_length()
        width = config.spad_row_bits
        latency = spad_read_latency(config)

        def bank_of(addr):
            return addr[bank_aw:] if bank_bits else 0

        reads = [self.read_a, self.read_b]
        bank_data = [[None] * banks for _ in range(2)]
        for b in range(banks):
            mem = Memory(shape=unsigned(width), depth=bank_depth, init=[],
                         attrs={"no_rw_check": 1})
            m.submodules[f"bank{b}"] = mem
            wp = mem.write_port(granularity=config.input_width)
            sel = bank_of(self.i_write.payload.addr) == b
            m.d.comb += [
                wp.addr.eq(self.i_write.payload.addr[:bank_aw]),
                wp.data.eq(self.i_write.payload.data.as_value()),
            ]
            with m.If(self.i_write.valid & sel):
                m.d.comb += wp.en.eq(self.i_write.payload.mask)
            for i, port in enumerate(reads):
                # An asynchronous port and a register: Yosys merges the register into the block
                # RAM as its synchronous read, and the memory's no_rw_check attribute applies
                # to read ports it builds that way.
                rp = mem.read_port(domain="comb")
                m.d.comb += rp.addr.eq(port.addr[:bank_aw])
                ram_out = Signal(width, name=f"read_{'ab'[i]}_ram{b}", reset_less=True)
                with m.If(port.en):
                    m.d.sync += ram_out.eq(rp.data)
                # Loaded every cycle and never reset: an enable or a reset here would fan out
                # over the whole row. They hold while en is low because ram_out does.
                data = ram_out
                for stage in range(1, latency):
                    reg = Signal(width, name=f"read_{'ab'[i]}_data{b}_{stage}", reset_less=True)
                    m.d.sync += reg.eq(data)
                    data = reg
                bank_data[i][b] = data
        for i, port in enumerate(reads):
            # The bank the port read, and whether that read collided with a write of its row
            # (its data is then zeros, on every target alike), following the data's stages.
            name = f"read_{'ab'[i]}"
            bank = Signal(range(banks), name=f"{name}_bank1")
            collided = Signal(name=f"{name}_collided1")
            with m.If(port.en):
                m.d.sync += [
                    bank.eq(bank_of(port.addr)),
                    collided.eq(self.i_write.valid & (self.i_write.payload.addr == port.addr)),
                ]
            for stage in range(2, latency + 1):
                bank_next = Signal.like(bank, name=f"{name}_bank{stage}")
                collided_next = Signal(name=f"{name}_collided{stage}")
                m.d.sync += [bank_next.eq(bank), collided_next.eq(collided)]
                bank, collided = bank_next, collided_next
            with m.If(~collided):
                with m.Switch(bank):
                    for b in range(banks):
                        with m.Case(b):
                            m.d.comb += port.data.eq(bank_data[i][b])
        return m
