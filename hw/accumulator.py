"""The accumulator: block-RAM rows of ``cols`` partial sums, overwritten or added to per row."""

from amaranth import Module, Mux, Signal, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In

from .array import signals
from .pe import acc_shape
from .scratchpad import ReadPortSignature, _check_config


__all__ = ["Accumulator", "acc_row_layout", "acc_addr_width", "ACC_WRITE_LATENCY",
           "ACC_READ_LATENCY"]

#: Cycles from a write accepted on ``i_write`` (cycle t) to the first read issued on ``read`` that
#: returns the updated row (a read issued in cycle t + 3 or later sees it).
ACC_WRITE_LATENCY = 3
#: Cycles from ``read.en`` to ``read.data``.
ACC_READ_LATENCY = 1


def acc_row_layout(config):
    """One accumulator row: ``cols`` values of ``acc_width`` bits, column 0 in the low bits."""
    return data.ArrayLayout(acc_shape(config), config.cols)


def acc_addr_width(config):
    return (config.acc_depth - 1).bit_length()


class Accumulator(wiring.Component):
    """``acc_depth`` rows of ``cols`` accumulators in block RAM, with overwrite and accumulate.

    Writes arrive as a stream without back-pressure, one row per cycle sustained. A write with
    ``accumulate`` set adds its row to the stored row (element-wise, wrapping modulo
    ``2**acc_width``); otherwise it overwrites. The read-modify-write is pipelined over three
    cycles, so no path runs from the block RAM's output or an address compare into the adders:
    the stored row is read in the cycle the write is accepted, registered in the next, and the
    sum is written in the third. A bypass register forwards the last row written to the two
    writes behind it, so back-to-back writes to the same address (the normal case while K is
    tiled) accumulate correctly.

    Parameters
    ----------
    config : EngineConfig

    Members
    -------
    i_write : In(stream.Signature(StructLayout({"addr": addr_width, "data": row,
              "accumulate": 1}), always_ready=True))
        Row writes (no back-pressure).
    read : In(ReadPortSignature(addr_width, row))
        Read port for the store path: ``data`` is valid :data:`ACC_READ_LATENCY` (1) cycle after
        ``en``, and holds while ``en`` is low. A write accepted in cycle t is visible to reads
        issued in cycle t + :data:`ACC_WRITE_LATENCY` (3) or later.
    """

    def __init__(self, config):
        _check_config(config)
        self._config = config
        aw = acc_addr_width(config)
        row = acc_row_layout(config)
        super().__init__({
            "i_write": In(stream.Signature(data.StructLayout({
                "addr": aw,
                "data": row,
                "accumulate": 1,
            }), always_ready=True)),
            "read": In(ReadPortSignature(aw, row)),
        })

    @property
    def config(self):
        return self._config

    def elaborate(self, platform):
        m = Module()
        config = self._config
        aw = acc_addr_width(config)
        width = config.acc_width
        row_bits = config.acc_row_bits

        mem = Memory(shape=unsigned(row_bits), depth=config.acc_depth, init=[])
        m.submodules.mem = mem
        wp = mem.write_port()
        rmw = mem.read_port(domain="sync")
        store = mem.read_port(domain="sync")

        # Stage 0: the write is accepted and the stored row read. Stage 1: the row read is
        # registered. Stage 2: add (or not) and write. The block RAM does not see the rows of
        # the two writes ahead (written after its read), so they are forwarded from ``fwd``:
        # the row written two writes earlier into stage 1, the row written one write earlier
        # into stage 2. Whether an address matches is decided a stage ahead, from registers.
        w = self.i_write
        m.d.comb += rmw.addr.eq(w.payload.addr)   # no enable: no net fans out to its output
        s1_valid, s1_acc, s2_valid, s2_acc = signals(1, "s1_valid s1_acc s2_valid s2_acc")
        s1_addr, s2_addr = signals(aw, "s1_addr s2_addr")
        s1_data, s2_data, s2_old, fwd = signals(row_bits, "s1_data s2_data s2_old fwd")
        hit2 = Signal()    # stage 1 holds the address of the row now in stage 2's output
        hit1 = Signal()    # stage 2 holds the address of the row written a cycle before
        m.d.sync += [
            s1_valid.eq(w.valid),
            s1_addr.eq(w.payload.addr),
            s1_data.eq(w.payload.data.as_value()),
            s1_acc.eq(w.payload.accumulate),
            hit2.eq(s2_valid & (s2_addr == w.payload.addr)),
            s2_valid.eq(s1_valid),
            s2_addr.eq(s1_addr),
            s2_data.eq(s1_data),
            s2_acc.eq(s1_acc),
            s2_old.eq(Mux(hit2, fwd, rmw.data)),
            hit1.eq(s2_valid & (s2_addr == s1_addr)),
        ]
        old = Mux(hit1, fwd, s2_old)
        new = Signal(row_bits)
        for c in range(config.cols):
            lo = c * width
            m.d.comb += new[lo:lo + width].eq(
                Mux(s2_acc, old[lo:lo + width] + s2_data[lo:lo + width], s2_data[lo:lo + width]))
        m.d.comb += [
            wp.addr.eq(s2_addr),
            wp.data.eq(new),
            wp.en.eq(s2_valid),
        ]
        m.d.sync += fwd.eq(new)

        m.d.comb += [
            store.addr.eq(self.read.addr),
            store.en.eq(self.read.en),
            self.read.data.eq(store.data),
        ]
        return m
