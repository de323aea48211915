"""Command-level golden model of the MXE engine (numpy).

:class:`EngineModel` executes encoded commands (:mod:`mxe.sim.commands`) in program order with the
engine's semantics: LOAD into the scratchpad or the bias row, MATMUL into the accumulator
(overwrite or accumulate, wrapping at ``acc_width``), STORE through the post-processor
(:func:`mxe.sim.model.postprocess`), CONFIG, FENCE, and GEMM and convolution descriptors (expanded
as the GEMM unit does, :mod:`mxe.sim.gemm_model`, and the convolution unit,
:mod:`mxe.sim.conv_model`); the refusal rules of :data:`mxe.hw.isa.LIMITS_DOC`
(including ``UNSUPPORTED`` for a command whose feature the configuration leaves out, as GEMM_A/B/C
without ``gemm_unit``), the DMA window check, and DMA errors from memory regions that answer
SLVERR. Because the hardware tracks dependencies between its units, executing the commands one
after the other in program order is what the engine must produce.

Memory is a ``bytearray`` addressed by absolute bus address (index 0 = address 0), as the
``AxiRam`` of the benches; a command's ``mem_offset`` is relative to ``win_base``.
"""

from dataclasses import dataclass, replace

import numpy as np

from mxe.hw.config import REQUANT_ELEM_BYTES, EngineConfig
from mxe.hw.isa import FIELDS, ErrorCode, unsupported
from mxe.sim import commands as cmds
from mxe.sim.model import MULTIPLIER_RANGE, SHIFT_RANGE, Requant, postprocess, wrap


__all__ = ["EngineModel", "Outcome", "read_bursts", "write_bursts", "encode_elems",
           "decode_elems", "ModelStopped"]

#: AXI bursts may not cross this boundary.
BOUNDARY = 4096


class ModelStopped(RuntimeError):
    """Raised when commands are run on a model that stopped on an error (soft reset first)."""


@dataclass(frozen=True)
class Outcome:
    """What :meth:`EngineModel.run` ended with.

    ``error`` is :class:`ErrorCode`; ``index`` the failing command's index counted since the last
    soft reset (``None`` when OK); ``addr`` the failing memory address of a DMA error (``None``
    otherwise); ``executed`` how many commands of this call ran completely.
    """
    error: ErrorCode
    index: object = None
    addr: object = None
    executed: int = 0

    @property
    def ok(self):
        return self.error == ErrorCode.OK


def encode_elems(values, nbytes):
    """Integers as little-endian two's complement elements of ``nbytes`` bytes each (values
    out of range are reduced modulo ``2**(8 * nbytes)``, which sign- or zero-extends)."""
    values = np.asarray(values)
    if nbytes == 8:
        raw = values.astype(np.int64) if values.dtype != np.uint64 else values.view(np.int64)
        return raw.astype("<i8").tobytes()
    dtype = {1: "<u1", 2: "<u2", 4: "<u4"}[nbytes]
    mask = (1 << (8 * nbytes)) - 1
    return (np.asarray(values, dtype=np.int64) & mask).astype(dtype).tobytes()


def decode_elems(data, nbytes, width, signed):
    """Little-endian elements of ``nbytes`` bytes as ``width``-bit integers (int64, uint64 for an
    unsigned 64-bit width): the low ``width`` bits, sign- or zero-extended."""
    dtype = {1: "<u1", 2: "<u2", 4: "<u4", 8: "<u8"}[nbytes]
    raw = np.frombuffer(bytes(data), dtype=dtype).astype(np.uint64).view(np.int64)
    return wrap(raw, width, signed)


def _bursts(addr, rows, row_bytes, stride, bus_bytes, max_len):
    """The bursts (aligned address, beats) a 2-D transfer is cut into, in order (the DMA's
    contract: per row, greedily at ``max_len`` beats and 4 KiB boundaries)."""
    for r in range(rows):
        start = addr + r * stride
        beat = start // bus_bytes * bus_bytes
        end = (start + row_bytes - 1) // bus_bytes * bus_bytes + bus_bytes
        while beat < end:
            n = min(max_len, (end - beat) // bus_bytes, (BOUNDARY - beat % BOUNDARY) // bus_bytes)
            yield r, beat, n
            beat += n * bus_bytes


def _hit(lo, hi, regions):
    return any(lo < r_hi and r_lo < hi for r_lo, r_hi in regions)


def read_bursts(config, addr, rows, row_bytes, stride, regions):
    """Address of the first bus beat of a read transfer that overlaps an error region, or
    ``None``: what the DMA reports as the failing address of a read."""
    b = config.axi_bytes
    for _r, beat, n in _bursts(addr, rows, row_bytes, stride, b, config.max_burst_len):
        for i in range(n):
            if _hit(beat + i * b, beat + (i + 1) * b, regions):
                return beat + i * b
    return None


def write_bursts(config, addr, rows, row_bytes, stride, regions):
    """Address of the first write burst that writes a byte (WSTRB set) in an error region, or
    ``None``: what the DMA reports as the failing address of a write."""
    b = config.axi_bytes
    for r, beat, n in _bursts(addr, rows, row_bytes, stride, b, config.max_burst_len):
        start = addr + r * stride
        lo, hi = max(beat, start), min(beat + n * b, start + row_bytes)
        if _hit(lo, hi, regions):
            return beat
    return None


class EngineModel:
    """The engine at command level.

    Parameters
    ----------
    config : EngineConfig
    memory : bytearray
        The bus memory, index = address; modified in place by STOREs.
    win_base, win_limit : int
        The DMA window ``[win_base, win_limit)``.
    fill : None or numpy Generator
        Initial contents of scratchpad, accumulator and bias row: zeros, or random values from
        this generator (stale data a correct command stream must never depend on).
    error_regions : list of (lo, hi)
        Address ranges whose reads and writes answer SLVERR.

    Members
    -------
    spad : int64 array (spad_depth, max(rows, cols))
    acc : int64 array (acc_depth, cols), values as ``acc_width``-bit two's complement
    bias : int64 array (cols,), same representation
    requant : Requant
        The last CONFIG's requantization parameters.
    per_channel : bool
        The last CONFIG's per_channel: STOREs use ``column_multiplier`` and ``column_shift``.
    column_multiplier, column_shift : int64 arrays (cols,)
        The per-column multipliers and shifts (LOAD with to_requant).
    counters : dict
        ``dma_rd_bytes``, ``dma_wr_bytes`` (payload bytes), ``mac_active`` (activation rows
        streamed), ``commands`` (popped since the soft reset), and per opcode counts.
    """

    def __init__(self, config, memory, win_base=0, win_limit=None, *, fill=None,
                 error_regions=()):
        if not isinstance(config, EngineConfig):
            raise TypeError(f"config must be an EngineConfig, not {config!r}")
        self.config = config
        self.memory = memory if isinstance(memory, bytearray) else bytearray(memory)
        self.win_base = win_base
        self.win_limit = len(self.memory) if win_limit is None else win_limit
        self.error_regions = list(error_regions)
        c = config
        shape_s = (c.spad_depth, c.spad_row_elems)
        if fill is None:
            self.spad = np.zeros(shape_s, dtype=np.int64)
            self.acc = np.zeros((c.acc_depth, c.cols), dtype=np.int64)
            self.bias = np.zeros(c.cols, dtype=np.int64)
        else:
            lo, hi = c.input_range
            self.spad = fill.integers(lo, hi, size=shape_s, endpoint=True, dtype=np.int64)
            self.acc = self._canon(fill.integers(-(1 << 62), 1 << 62, size=(c.acc_depth, c.cols),
                                                 dtype=np.int64))
            self.bias = self._canon(fill.integers(-(1 << 62), 1 << 62, size=c.cols,
                                                  dtype=np.int64))
        self.requant = Requant(0, 0)
        self.per_channel = False
        self.column_multiplier = np.zeros(c.cols, dtype=np.int64)
        self.column_shift = np.zeros(c.cols, dtype=np.int64)
        if fill is not None:
            self.column_multiplier[:] = fill.integers(*MULTIPLIER_RANGE, size=c.cols,
                                                      endpoint=True)
            self.column_shift[:] = fill.integers(*SHIFT_RANGE, size=c.cols, endpoint=True)
        #: Fields of the last GEMM_A / GEMM_B / GEMM_C (a descriptor's registers).
        self.gemm_fields = {f: 0 for name in ("GEMM_A", "GEMM_B", "GEMM_C")
                            for f, *_rest in FIELDS[name] if f != "opcode"}
        #: Fields of the last CONV_A / CONV_B / CONV_C.
        self.conv_fields = {f: 0 for name in ("CONV_A", "CONV_B", "CONV_C")
                            for f, *_rest in FIELDS[name] if f != "opcode"}
        self.soft_reset()

    # State -----------------------------------------------------------------------------

    def soft_reset(self):
        """Clear the error, the command index and the counters (buffers keep their data)."""
        self.error = ErrorCode.OK
        self.index = 0
        self.counters = {"dma_rd_bytes": 0, "dma_wr_bytes": 0, "mac_active": 0,
                         "LOAD": 0, "MATMUL": 0, "STORE": 0, "FENCE": 0, "CONFIG": 0}

    def _canon(self, values):
        """Accumulator-width values as two's complement int64 (one representation for all)."""
        return wrap(np.asarray(values, dtype=np.int64), self.config.acc_width, True)

    def _external(self, values):
        """Canonical accumulator values in the configured range (signed or unsigned)."""
        return wrap(values, self.config.acc_width, self.config.signed)

    def acc_values(self, first, rows):
        """Accumulator rows as the configured type."""
        return self._external(self.acc[first:first + rows])

    # Execution ---------------------------------------------------------------------------

    def run(self, commands):
        """Execute ``commands`` (128-bit ints) in order; stop at the first error.

        Returns
        -------
        Outcome
        """
        if self.error != ErrorCode.OK:
            raise ModelStopped(f"the model stopped on {self.error.name}; soft_reset() first")
        executed = 0
        for command in commands:
            name = cmds.decode(command)[0]
            if name.startswith("GEMM_") and self.config.gemm_unit:
                # A GEMM descriptor (mxe.hw.gemm_unit): GEMM_A and GEMM_B are kept, GEMM_C runs
                # the sub-commands the GEMM unit generates; only those count as commands.
                from mxe.sim.gemm_model import expand_fields
                self.gemm_fields.update({k: v for k, v in cmds.decode(command)[1].items()
                                         if k != "opcode"})
                subs = expand_fields(self.config, self.gemm_fields) if name == "GEMM_C" else []
            elif name.startswith("CONV_") and self.config.conv_unit:
                # A convolution descriptor (mxe.hw.conv_unit), kept and expanded the same way.
                from mxe.sim.conv_model import expand_fields as expand_conv
                self.conv_fields.update({k: v for k, v in cmds.decode(command)[1].items()
                                         if k != "opcode"})
                subs = expand_conv(self.config, self.conv_fields) if name == "CONV_C" else []
            else:
                subs = [command]
            for sub in subs:
                index = self.index
                self.index += 1
                error, addr = self.step(sub)
                if error != ErrorCode.OK:
                    self.error = error
                    return Outcome(error, index, addr, executed)
            executed += 1
        return Outcome(ErrorCode.OK, None, None, executed)

    def check(self, command):
        """The refusal of ``command`` by the controller (:data:`LIMITS_DOC`), or OK.
        Window and DMA errors are found by :meth:`step`."""
        c = self.config
        name, f = cmds.decode(command)
        if name == "INVALID":
            return ErrorCode.BAD_OPCODE
        if name in unsupported(c):
            return ErrorCode.UNSUPPORTED
        if name == "LOAD":
            post = f["to_bias"] or f["to_requant"]
            limit = c.cols if post else c.spad_row_elems
            if (f["rows"] == 0 or f["elems"] == 0 or f["elems"] > limit
                    or (f["to_bias"] and (f["rows"] != 1 or f["to_requant"]))
                    or (f["to_requant"] and f["rows"] != 2)):
                return ErrorCode.BAD_DIM
            if not post and f["spad_addr"] + f["rows"] > c.spad_depth:
                return ErrorCode.BAD_ADDR
        elif name == "MATMUL":
            if f["m"] == 0 or f["k"] == 0 or f["k"] > c.rows:
                return ErrorCode.BAD_DIM
            if (f["act_addr"] + f["m"] > c.spad_depth or f["weight_addr"] + f["k"] > c.spad_depth
                    or f["acc_addr"] + f["m"] > c.acc_depth):
                return ErrorCode.BAD_ADDR
        elif name == "STORE":
            if f["rows"] == 0 or f["elems"] == 0 or f["elems"] > c.cols:
                return ErrorCode.BAD_DIM
            if f["acc_addr"] + f["rows"] > c.acc_depth:
                return ErrorCode.BAD_ADDR
        elif name == "CONFIG":
            try:
                self._config_requant(f)
            except ValueError:
                return ErrorCode.BAD_DIM
        return ErrorCode.OK

    def _store_requant(self):
        """The requantization a STORE applies: CONFIG's, with the per-column multipliers and
        shifts if it says per_channel."""
        if not self.per_channel:
            return self.requant
        return replace(self.requant, multiplier=tuple(int(v) for v in self.column_multiplier),
                       shift=tuple(int(v) for v in self.column_shift))

    @staticmethod
    def _config_requant(f):
        """The :class:`Requant` of CONFIG fields ``f``; ValueError when the engine refuses it."""
        return Requant(f["multiplier"], f["shift"], zero_point=f["zero_point"],
                       clamp=(f["clamp_min"], f["clamp_max"]) if f["clamp"] else None,
                       round_even=bool(f["round_even"]))

    def _unaligned(self, offset, rows, stride):
        """The address of a transfer an engine without unaligned DMA refuses, or None."""
        addr = (self.win_base + offset) % (1 << self.config.axi_addr_width)
        lane0 = self.config.dma_alignment
        if addr % lane0 == 0 and (rows == 1 or stride % lane0 == 0):
            return None
        return addr

    def _window(self, offset, rows, row_bytes, stride):
        addr = self.win_base + offset
        end = addr + (rows - 1) * stride + row_bytes
        if addr < self.win_base or end > self.win_limit:
            return None
        if end > len(self.memory):
            raise IndexError(f"transfer [{addr:#x}, {end:#x}) is inside the window but past the "
                             f"model memory ({len(self.memory):#x} bytes): fix the test")
        return addr

    def step(self, command):
        """Execute one command. Returns ``(ErrorCode, failing address or None)``."""
        error = self.check(command)
        if error != ErrorCode.OK:
            return error, None
        c = self.config
        name, f = cmds.decode(command)
        self.counters[name] += 1
        if name == "LOAD":
            nbytes = c.acc_elem_bytes if f["to_bias"] else \
                REQUANT_ELEM_BYTES if f["to_requant"] else c.elem_bytes
            row_bytes = f["elems"] * nbytes
            unaligned = self._unaligned(f["mem_offset"], f["rows"], f["stride"])
            if unaligned is not None:
                return ErrorCode.UNSUPPORTED, unaligned
            addr = self._window(f["mem_offset"], f["rows"], row_bytes, f["stride"])
            if addr is None:
                return ErrorCode.DMA_WINDOW, None
            bad = read_bursts(c, addr, f["rows"], row_bytes, f["stride"], self.error_regions)
            if bad is not None:
                return ErrorCode.DMA_SLVERR, bad
            for r in range(f["rows"]):
                start = addr + r * f["stride"]
                data = self.memory[start:start + row_bytes]
                if f["to_bias"]:
                    values = decode_elems(data, nbytes, c.acc_width, c.signed)
                    self.bias[:f["elems"]] = self._canon(values.view(np.int64))
                elif f["to_requant"]:
                    # Row 0: the multipliers; row 1: the shifts (their low 6 bits).
                    values = decode_elems(data, nbytes, 8 * nbytes, True)
                    if r == 0:
                        self.column_multiplier[:f["elems"]] = values
                    else:
                        self.column_shift[:f["elems"]] = values % (SHIFT_RANGE[1] + 1)
                else:
                    values = decode_elems(data, nbytes, c.input_width, c.signed)
                    self.spad[f["spad_addr"] + r, :f["elems"]] = values
            self.counters["dma_rd_bytes"] += f["rows"] * row_bytes
        elif name == "MATMUL":
            m, k = f["m"], f["k"]
            acts = self.spad[f["act_addr"]:f["act_addr"] + m, :c.rows]
            weights = np.zeros((c.rows, c.cols), dtype=np.int64)
            weights[:k] = self.spad[f["weight_addr"]:f["weight_addr"] + k, :c.cols]
            product = self._canon(acts @ weights)   # int64 wraps modulo 2**64
            rows = slice(f["acc_addr"], f["acc_addr"] + m)
            if f["accumulate"]:
                self.acc[rows] = self._canon(self.acc[rows] + product)
            else:
                self.acc[rows] = product
            self.counters["mac_active"] += m
        elif name == "STORE":
            nbytes = 1 if f["requant"] else c.acc_elem_bytes
            row_bytes = f["elems"] * nbytes
            unaligned = self._unaligned(f["mem_offset"], f["rows"], f["stride"])
            if unaligned is not None:
                return ErrorCode.UNSUPPORTED, unaligned
            addr = self._window(f["mem_offset"], f["rows"], row_bytes, f["stride"])
            if addr is None:
                return ErrorCode.DMA_WINDOW, None
            bad = write_bursts(c, addr, f["rows"], row_bytes, f["stride"], self.error_regions)
            if bad is not None:
                return ErrorCode.DMA_SLVERR, bad
            values = postprocess(
                self.acc_values(f["acc_addr"], f["rows"]), c,
                bias=self._external(self.bias) if f["bias"] else None, relu=bool(f["relu"]),
                requant=self._store_requant() if f["requant"] else None)
            for r in range(f["rows"]):
                start = addr + r * f["stride"]
                self.memory[start:start + row_bytes] = encode_elems(values[r, :f["elems"]],
                                                                    nbytes)
            self.counters["dma_wr_bytes"] += f["rows"] * row_bytes
        elif name == "CONFIG":
            self.requant = self._config_requant(f)
            self.per_channel = bool(f["per_channel"])
        return ErrorCode.OK, None


def bad_commands(config):
    """One command for every refusal rule of :data:`mxe.hw.isa.LIMITS_DOC` on ``config``:
    list of ``(name, command, ErrorCode)``. Memory fields point at offset 0 with small extents,
    so only the rule named makes the command bad."""
    c = config
    E, S, D = c.spad_row_elems, c.spad_depth, c.acc_depth
    ld, mm, st = cmds.load, cmds.matmul, cmds.store
    cases = [
        ("opcode 0", cmds.from_words([0, 0, 0, 0]), ErrorCode.BAD_OPCODE),
        ("opcode 6", cmds.from_words([6, 0, 0, 0]), ErrorCode.BAD_OPCODE),
        ("opcode 15", cmds.from_words([0xF, 1, 1, 1]), ErrorCode.BAD_OPCODE),
        ("load rows 0", ld(0, 0, 0, 1, 0), ErrorCode.BAD_DIM),
        ("load elems 0", ld(0, 0, 1, 0, 0), ErrorCode.BAD_DIM),
        ("load elems > row", ld(0, 0, 1, E + 1, 0), ErrorCode.BAD_DIM),
        ("bias elems 0", ld(0, 0, 1, 0, 0, to_bias=True), ErrorCode.BAD_DIM),
        ("bias elems > cols", ld(0, 0, 1, c.cols + 1, 0, to_bias=True), ErrorCode.BAD_DIM),
        ("bias rows 2", ld(0, 0, 2, 1, 0, to_bias=True), ErrorCode.BAD_DIM),
        ("bias rows 0", ld(0, 0, 0, 1, 0, to_bias=True), ErrorCode.BAD_DIM),
        ("load past spad", ld(S - 1, 0, 2, 1, 0), ErrorCode.BAD_ADDR),
        ("load spad_addr = depth", ld(S, 0, 1, 1, 0), ErrorCode.BAD_ADDR),
        ("matmul m 0", mm(0, 0, 0, 1, 0), ErrorCode.BAD_DIM),
        ("matmul k 0", mm(0, 0, 1, 0, 0), ErrorCode.BAD_DIM),
        ("matmul k > rows", mm(0, 0, 1, c.rows + 1, 0), ErrorCode.BAD_DIM),
        ("matmul act past spad", mm(S - 1, 0, 2, 1, 0), ErrorCode.BAD_ADDR),
        ("matmul weights past spad", mm(0, S - c.rows + 1, 1, c.rows, 0), ErrorCode.BAD_ADDR),
        ("matmul acc past end", mm(0, 0, 2, 1, D - 1), ErrorCode.BAD_ADDR),
        ("store rows 0", st(0, 0, 0, 1, 0), ErrorCode.BAD_DIM),
        ("store elems 0", st(0, 0, 1, 0, 0), ErrorCode.BAD_DIM),
        ("store elems > cols", st(0, 0, 1, c.cols + 1, 0), ErrorCode.BAD_DIM),
        ("store past acc", st(D - 1, 0, 2, 1, 0), ErrorCode.BAD_ADDR),
        ("config shift 64", cmds.config(1, 64), ErrorCode.BAD_DIM),
        ("config shift 255", cmds.config(-1, 255), ErrorCode.BAD_DIM),
        ("config clamp min > max", cmds.encode("CONFIG", multiplier=1, clamp=1, clamp_min=5,
                                               clamp_max=4), ErrorCode.BAD_DIM),
        ("config clamp across both types", cmds.config(1, 0, clamp=(-1, 128)),
         ErrorCode.BAD_DIM),
        ("load to_bias and to_requant", cmds.load(0, 0, 1, 1, 0, to_bias=True, to_requant=True),
         ErrorCode.BAD_DIM),
        ("load requant rows 1", cmds.load(0, 0, 1, 1, 0, to_requant=True), ErrorCode.BAD_DIM),
        ("load requant rows 3", cmds.load(0, 0, 3, 1, 0, to_requant=True), ErrorCode.BAD_DIM),
        ("load requant elems > cols", cmds.load(0, 0, 2, c.cols + 1, 0, to_requant=True),
         ErrorCode.BAD_DIM),
        ("config clamp below int8", cmds.encode("CONFIG", multiplier=1, clamp=1, clamp_min=-129,
                                                clamp_max=0), ErrorCode.BAD_DIM),
    ]
    # Commands of a feature the engine lacks: refused whatever their fields.
    for name in unsupported(c):
        cases.append((f"{name.lower()} unsupported", cmds.encode(name), ErrorCode.UNSUPPORTED))
    return cases


__all__ += ["bad_commands"]
