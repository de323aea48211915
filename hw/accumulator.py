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
#: returns the updated row (a read issued in cycle t + 4 or later sees it).
ACC_WRITE_LATENCY = 4
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
    ``2**acc_width``); otherwise it overwrites. The read-modify-write is pipelined over four
    cycles, so no path runs from the block RAM's output or an address compare into the adders,
    and the block RAM's output (slow to leave the RAM: 5.8 ns in nextpnr's ECP5 model) goes
    straight into a register: the stored row is read in the cycle the write is accepted,
    registered in the next, replaced by a forwarded row in the third if a write ahead was to the
    same address, and the sum is written in the fourth. Two bypass registers keep the last two
    rows written for the three writes behind them, so back-to-back writes to the same address
    (the normal case while K is tiled) accumulate correctly.

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
        issued in cycle t + :data:`ACC_WRITE_LATENCY` (4) or later.
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
        # registered as it leaves the block RAM (nothing between them). Stage 2: the row
        # forwarded, if any, replaces it. Stage 3: add (or not) and write. The block RAM does
        # not see the rows of the three writes ahead (written after its read), so they are
        # forwarded: the row written three writes earlier (``fwd_old``) or two writes earlier
        # (``fwd``) into stage 2's register, the row written one write earlier (``fwd``) into
        # stage 3's adders. Whether an address matches is decided a stage ahead, from registers.
        w = self.i_write
        m.d.comb += rmw.addr.eq(w.payload.addr)   # no enable: no net fans out to its output
        s1_valid, s1_acc, s2_valid, s2_acc, s3_valid, s3_acc, s4_valid = signals(
            1, "s1_valid s1_acc s2_valid s2_acc s3_valid s3_acc s4_valid")
        # s4: the address of the row written in the cycle before (now in ``fwd``).
        s1_addr, s2_addr, s3_addr, s4_addr = signals(aw, "s1_addr s2_addr s3_addr s4_addr")
        s1_data, s2_data, s3_data, s2_read, s3_old, fwd, fwd_old = signals(
            row_bits, "s1_data s2_data s3_data s2_read s3_old fwd fwd_old")
        hit3 = Signal()    # stage 2 holds the address of the row now in ``fwd_old``
        hit2 = Signal()    # stage 2 holds the address of the row now in ``fwd``
        hit1 = Signal()    # stage 3 holds the address of the row now in ``fwd``
        m.d.sync += [
            s1_valid.eq(w.valid),
            s1_addr.eq(w.payload.addr),
            s1_data.eq(w.payload.data.as_value()),
            s1_acc.eq(w.payload.accumulate),
            s2_valid.eq(s1_valid),
            s2_addr.eq(s1_addr),
            s2_data.eq(s1_data),
            s2_acc.eq(s1_acc),
            s2_read.eq(rmw.data),
            # The writes three and two ahead of stage 1 were written a cycle ago and are being
            # written now: next cycle they are in fwd_old and fwd.
            hit3.eq(s4_valid & (s4_addr == s1_addr)),
            hit2.eq(s3_valid & (s3_addr == s1_addr)),
            s3_valid.eq(s2_valid),
            s3_addr.eq(s2_addr),
            s3_data.eq(s2_data),
            s3_acc.eq(s2_acc),
            s3_old.eq(Mux(hit2, fwd, Mux(hit3, fwd_old, s2_read))),
            hit1.eq(s3_valid & (s3_addr == s2_addr)),
            s4_valid.eq(s3_valid),
            s4_addr.eq(s3_addr),
        ]
        old = Mux(hit1, fwd, s3_old)
        new = Signal(row_bits)
        for c in range(config.cols):
            lo = c * width
            m.d.comb += new[lo:lo + width].eq(
                Mux(s3_acc, old[lo:lo + width] + s3_data[lo:lo + width], s3_data[lo:lo + width]))
        m.d.comb += [
            wp.addr.eq(s3_addr),
            wp.data.eq(new),
            wp.en.eq(s3_valid),
        ]
        m.d.sync += [fwd.eq(new), fwd_old.eq(fwd)]

        m.d.comb += [
            store.addr.eq(self.read.addr),
            store.en.eq(self.read.en),
            self.read.data.eq(store.data),
        ]
        return m
