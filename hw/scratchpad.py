"""The scratchpad: banked on-chip operand memory with one write and two read ports."""

from amaranth import Module, Signal, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from .config import EngineConfig
from .pe import operand_shape


__all__ = ["Scratchpad", "ReadPortSignature", "spad_row_layout", "spad_addr_width",
           "SPAD_READ_LATENCY"]

#: Cycles from ``en`` to ``data`` on a scratchpad read port: the block RAM's read, then a register
#: beside each bank, before the bank multiplexer.
SPAD_READ_LATENCY = 2


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
        accumulator, :data:`SPAD_READ_LATENCY` for the scratchpad).
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
    and a weight row together). A read in the same cycle as a write to the same row returns the
    old contents (read-before-write); the write is visible to reads issued from the next cycle.

    Each bank's read data is registered before the bank multiplexer, so the block RAM's
    clock-to-out (5.8 ns on an ECP5 DP16KD without its output register, which Yosys does not
    infer) meets a flip-flop placed beside it, and no path runs from a block RAM across the
    device. The read latency is therefore :data:`SPAD_READ_LATENCY` (2) cycles.

    Parameters
    ----------
    config : EngineConfig

    Members
    -------
    i_write : In(stream.Signature(StructLayout({"addr": addr_width, "data": row, "mask": elems}),
              always_ready=True))
        Row writes, one per cycle, no back-pressure. ``mask`` bit ``i`` enables operand ``i``.
    read_a, read_b : In(ReadPortSignature(addr_width, row))
        Read ports; ``data`` is valid :data:`SPAD_READ_LATENCY` (2) cycles after ``en`` and holds
        while ``en`` is low.
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

        def bank_of(addr):
            return addr[bank_aw:] if bank_bits else 0

        reads = [self.read_a, self.read_b]
        # The bank each port read one and two cycles ago (the latter selects the registered data).
        bank_regs = [[Signal(range(banks), name=f"read_{'ab'[i]}_bank{s}") for s in (1, 2)]
                     for i in range(2)]
        bank_data = [[None] * banks for _ in range(2)]
        for b in range(banks):
            mem = Memory(shape=unsigned(width), depth=bank_depth, init=[])
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
                rp = mem.read_port(domain="sync")
                m.d.comb += [
                    rp.addr.eq(port.addr[:bank_aw]),
                    rp.en.eq(port.en & (bank_of(port.addr) == b)),
                ]
                # Loaded every cycle and never reset: an enable or a reset here would fan out
                # over the whole row.
                bank_data[i][b] = Signal(width, name=f"read_{'ab'[i]}_data{b}", reset_less=True)
                m.d.sync += bank_data[i][b].eq(rp.data)
        for i, port in enumerate(reads):
            with m.If(port.en):
                m.d.sync += bank_regs[i][0].eq(bank_of(port.addr))
            m.d.sync += bank_regs[i][1].eq(bank_regs[i][0])
            with m.Switch(bank_regs[i][1]):
                for b in range(banks):
                    with m.Case(b):
                        m.d.comb += port.data.eq(bank_data[i][b])
        return m
