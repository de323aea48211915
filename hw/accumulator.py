"""The accumulator: block-RAM rows of ``cols`` partial sums, overwritten or added to per row."""

from amaranth import Cat, Module, Mux, Signal, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from .array import signals
from .pe import acc_shape
from .scratchpad import ReadPortSignature, _check_config


__all__ = ["Accumulator", "acc_row_layout", "acc_addr_width", "acc_write_latency",
           "ACC_WRITE_LATENCY_MAX", "ACC_READ_LATENCY"]

#: The longest :func:`acc_write_latency` of any configuration.
ACC_WRITE_LATENCY_MAX = 4
#: Cycles from ``read.en`` to ``read.data``.
ACC_READ_LATENCY = 1


def acc_write_latency(config):
    """Cycles from a write accepted on ``i_write`` (cycle t) to the first read issued on
    ``read`` that returns the updated row: 4 with ``deep_pipeline`` (a read issued in cycle
    t + 4 or later sees it), else 2."""
    return ACC_WRITE_LATENCY_MAX if config.deep_pipeline else 2


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

    Without ``config.deep_pipeline`` (for a slow clock) the read-modify-write takes two cycles:
    the stored row is read in the cycle the write is accepted, and in the next the sum is formed
    from the block RAM's output and written. One bypass register keeps the row written last for
    the write behind it, whose read of the block RAM did not see it.

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
        issued in cycle t + :func:`acc_write_latency` (4, or 2 without ``deep_pipeline``) or
        later.
    read_free : Out(1)
        With ``config.acc_read_ports`` 1 only: the block RAM's one read port serves ``read`` in
        this cycle (no accumulating write is accepted on ``i_write``, whose read-modify-write
        takes the port). ``read.data`` is then valid the cycle after a read issued while
        ``read_free`` is high, and does not hold.
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
            **({"read_free": Out(1)} if config.acc_read_ports == 1 else {}),
        })

    @property
    def config(self):
        return self._config

    def elaborate(self, platform):
        m = Module()
        config = self._config
        aw = acc_addr_width(config)
        row_bits = config.acc_row_bits

        mem = Memory(shape=unsigned(row_bits), depth=config.acc_depth, init=[])
        m.submodules.mem = mem
        wp = mem.write_port()
        w = self.i_write
        rmw = mem.read_port(domain="sync")
        if config.acc_read_ports == 2:
            # The read-modify-write reads every cycle, with no enable (no net fans out to its
            # output); the store path has a port of its own.
            store = mem.read_port(domain="sync")
            m.d.comb += [
                rmw.addr.eq(w.payload.addr),
                store.addr.eq(self.read.addr),
                store.en.eq(self.read.en),
                self.read.data.eq(store.data),
            ]
        else:
            # One port: an accumulating write's read first, the store path's in the other
            # cycles.
            rmw_read = w.valid & w.payload.accumulate
            m.d.comb += [
                rmw.addr.eq(Mux(rmw_read, w.payload.addr, self.read.addr)),
                self.read.data.eq(rmw.data),
                self.read_free.eq(~rmw_read),
            ]
        if not config.deep_pipeline:
            self._read_modify_write_shallow(m, wp, rmw)
            return m

        # Stage 0: the write is accepted and the stored row read. Stage 1: the row read is
        # registered as it leaves the block RAM (nothing between them). Stage 2: the row
        # forwarded, if any, replaces it. Stage 3: add (or not) and write. The block RAM does
        # not see the rows of the three writes ahead (written after its read), so they are
        # forwarded: the row written three writes earlier (``fwd_old``) or two writes earlier
        # (``fwd``) into stage 2's register, the row written one write earlier (``fwd``) into
        # stage 3's adders. Whether an address matches is decided a stage ahead, from registers.
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
        new = Signal(row_bits)
        m.d.comb += new.eq(_accumulated(config, Mux(hit1, fwd, s3_old), s3_data, s3_acc))
        m.d.comb += [
            wp.addr.eq(s3_addr),
            wp.data.eq(new),
            wp.en.eq(s3_valid),
        ]
        m.d.sync += [fwd.eq(new), fwd_old.eq(fwd)]
        return m

    def _read_modify_write_shallow(self, m, wp, rmw):
        """The two-cycle read-modify-write: read as the write is accepted (stage 1 next cycle),
        add and write in stage 1. The block RAM's read of a write accepted while the write ahead
        of it is written does not see that row, so it comes from ``fwd``."""
        config = self._config
        w = self.i_write
        s1_valid, s1_acc, hit = signals(1, "s1_valid s1_acc hit")
        (s1_addr,) = signals(acc_addr_width(config), "s1_addr")
        s1_data, fwd = signals(config.acc_row_bits, "s1_data fwd")
        m.d.sync += [
            s1_valid.eq(w.valid),
            s1_addr.eq(w.payload.addr),
            s1_data.eq(w.payload.data.as_value()),
            s1_acc.eq(w.payload.accumulate),
            hit.eq(s1_valid & (s1_addr == w.payload.addr)),
        ]
        new = Signal(config.acc_row_bits)
        m.d.comb += [
            new.eq(_accumulated(config, Mux(hit, fwd, rmw.data), s1_data, s1_acc)),
            wp.addr.eq(s1_addr),
            wp.data.eq(new),
            wp.en.eq(s1_valid),
        ]
        m.d.sync += fwd.eq(new)


def _accumulated(config, old, data, accumulate):
    """``old + data`` column by column (each wrapping at ``acc_width``) if ``accumulate``, else
    ``data``."""
    width = config.acc_width
    return Cat(*(Mux(accumulate, old[lo:lo + width] + data[lo:lo + width],
                     data[lo:lo + width])[:width]
                 for lo in range(0, config.acc_row_bits, width)))
