"""The one configuration object of MXE.

Every other part of the project — gateware, golden model, cycle model, driver, synthesis flow —
reads its numbers from an :class:`EngineConfig`. Nothing repeats them.
"""

import dataclasses
import hashlib
import json
from dataclasses import dataclass, fields


__all__ = ["EngineConfig", "PRESETS", "DATAFLOWS", "MULTIPLIERS", "AXI_DATA_WIDTHS",
           "key_as_name"]


#: Dataflows the array can be built with. Only weight-stationary is implemented; ``os``
#: (output-stationary) is reserved by ARCHITECTURE.md and refused with a clear message.
DATAFLOWS = ("ws",)
RESERVED_DATAFLOWS = ("os",)
#: How multipliers are built: all in DSP blocks, all in LUTs, or DSPs up to ``dsp_budget``.
MULTIPLIERS = ("dsp", "lut", "auto")
AXI_DATA_WIDTHS = (32, 64, 128, 256)
#: Width of the post-processor's requantization multiplier (a signed TFLite-style fixed-point
#: multiplier).
REQUANT_MULTIPLIER_WIDTH = 32
#: Bytes of one value of a per-column requantization table in memory (a multiplier, or a shift
#: in the low bits), as a LOAD with to_requant reads it.
REQUANT_ELEM_BYTES = REQUANT_MULTIPLIER_WIDTH // 8
#: The post-processor cuts its products into pieces of this many bits (17-bit unsigned low
#: pieces, a signed top piece of at most 18), so that each piece product fits one 18x18 signed
#: DSP multiplier (ECP5 MULT18X18D, Xilinx DSP48).
DSP_CHUNK_WIDTH = 17


def _is_pow2(n):
    return n > 0 and n & (n - 1) == 0


@dataclass(frozen=True)
class EngineConfig:
    """Parameters of one MXE engine.

    Parameters
    ----------
    rows, cols : int
        Systolic array size, 1..64 each. ``rows`` is the reduction (K) direction, ``cols`` the
        output (N) direction.
    input_width : int
        Width of activations and weights, 4..16 bits.
    signed : bool
        Two's complement (``True``) or unsigned operands.
    acc_width : int
        Accumulator width, ``2 * input_width`` .. 64; sums wrap around modulo ``2**acc_width``.
    dataflow : str
        ``"ws"`` (weight-stationary).
    spad_depth : int
        Scratchpad rows (power of two); one row holds ``max(rows, cols)`` operands.
    spad_banks : int
        Scratchpad banks (power of two dividing ``spad_depth``).
    acc_depth : int
        Accumulator rows (power of two); one row holds ``cols`` accumulators.
    acc_read_ports : int
        The accumulator's block-RAM read ports: 2 (one for the read-modify-write of MATMUL's
        accumulating writes, one for STORE) or 1, shared, which stores the accumulator once
        instead of twice (half its block RAMs: iCE40 and ECP5 block RAMs have one read port).
        With one port a STORE reads a row only in a cycle without an accumulating write, so a
        STORE that overlaps a MATMUL waits for its gaps; the results are the same.
    axi_data_width : int
        DMA data bus width: 32, 64, 128 or 256.
    axi_addr_width : int
        DMA address width, 16..64: the bytes the DMA can reach (the window registers' bits
        above it are ignored). A board SoC, whose DMA reaches only its own memory, needs fewer
        than 32 bits (:func:`mxe.hw.boards.soc.soc_addr_width`).
    axi_id_width : int
        DMA ID width, 1..16.
    max_burst_len : int
        Longest AXI4 INCR burst in beats, 1..256.
    max_outstanding_reads : int
        Read bursts in flight, 1..32.
    cmd_queue_depth : int
        Command queue entries (power of two), 2..1024.
    exec_slots : int
        MATMULs the execute unit keeps in flight: 0 (the default) for enough to keep the
        array busy with back-to-back one-row tiles (:func:`mxe.hw.exec_unit.exec_slots`, 6 for
        ``lean``, 7 for ``tiny``), or 3..8. Each slot holds a MATMUL's ranges and compares
        them with every command the controller checks, so fewer slots take fewer LUTs and
        flip-flops; streams of MATMULs with fewer rows than the array's latency then wait for
        a free slot, and the results are the same.
    multiplier : str
        ``"dsp"``, ``"lut"`` or ``"auto"`` (DSPs up to ``dsp_budget``, then LUTs).
    dsp_budget : int
        DSP blocks the ``"auto"`` multiplier may use, >= 0.
    gemm_unit : bool
        Build the GEMM descriptor unit (``GEMM_A/B/C`` commands, :mod:`mxe.hw.gemm_unit`). Without
        it those commands are refused with ``UNSUPPORTED`` and a driver issues a GEMM as plain
        LOAD/MATMUL/STORE commands.
    conv_unit : bool
        Build the convolution descriptor unit (``CONV_A/B/C`` commands,
        :mod:`mxe.hw.conv_unit`). Without it those commands are refused with ``UNSUPPORTED``
        and a driver lowers a convolution to GEMMs on the host.
    postproc_lanes : int
        Columns the post-processor requantizes per cycle: ``0`` (every column, a row per cycle)
        or a divisor of ``cols``. With fewer lanes a row takes ``cols / postproc_lanes`` cycles
        and its multipliers are shared: :attr:`postproc_multipliers` shrinks by the same factor
        (a lean engine's STORE then runs at that rate; its results are the same).
    serial_requant : bool
        Requantize with one bit of the multiplier a cycle, in LUTs, instead of the partial
        products of :attr:`postproc_multipliers` DSP blocks: no DSP at all, for a device whose
        DSPs the array takes (the iCE40 UP5K's 8). A requantized row then takes
        :attr:`postproc_row_cycles` (33 per pass) instead of one cycle per pass; rows that are
        not requantized go at the full rate, and every result is the same.
    perf_counters : bool
        Build the performance counters. Without them every counter register reads 0 except
        ``CYCLES``, which stays: a driver times its waits with it over a link that has no clock
        of its own (:class:`mxe.sim.transport.UARTBoneTransport`).
    unaligned_dma : bool
        Let the DMA move rows at any byte address and stride, realigning them on the bus.
        Without it the DMA has no byte shifters: a LOAD or STORE whose address (``WIN_BASE +
        mem_offset``) or, over more than one row, whose stride is not a multiple of the bus
        width in bytes is refused with ``UNSUPPORTED``, and a driver lays every operand out on
        bus-aligned rows. It needs the array's tiles to start on the bus too: ``rows`` operands
        and ``cols`` bytes each a multiple of the bus width.

    deep_pipeline : bool
        Pipeline registers that let the engine close timing near 150 MHz on ECP5: three
        multiply stages in every PE and its sum added in two halves a cycle apart, a
        four-stage read-modify-write in the accumulator, two registers after each
        scratchpad bank's block RAM, a register on the accumulator's read data into the store
        unit, skid buffers that cut the handshakes of the DMA's AR, AW, R and W channels, of
        the post-processor's output and of the store path's write data, an output register
        after each of the DMA's window checks, the store unit's register for the row whose
        beats leave, and the load unit's row buffer for bias and requantization rows. Without
        them (one multiply stage, one adder, two read-modify-write stages, scratchpad reads in
        one cycle, plain connections for the skid buffers, the checks' results handed on from
        their command registers, beats straight from the post-processor's output, bias and
        requantization values straight from the read beats) the engine takes fewer flip-flops
        and LUTs and suits a slower clock (an iCE40's 12 to 48 MHz, an ECP5 board's 50 MHz);
        the array's latency is three cycles shorter, the scratchpad's two, the
        post-processor's and the window check's one, so a MATMUL's results come sooner and a
        LOAD's or STORE's first bus request two cycles sooner.

    Features a user may leave out (``gemm_unit``, ``conv_unit``, ``perf_counters``,
    ``unaligned_dma``) are advertised in the ``CAPABILITIES`` register (:mod:`mxe.hw.regmap`).

    Raises
    ------
    TypeError
        If a parameter has the wrong type.
    ValueError
        If a parameter is out of range or two parameters do not fit together. The message names
        the parameter and what is allowed.
    """

    rows: int = 16
    cols: int = 16
    input_width: int = 8
    signed: bool = True
    acc_width: int = 32
    dataflow: str = "ws"
    spad_depth: int = 4096
    spad_banks: int = 2
    acc_depth: int = 1024
    acc_read_ports: int = 2
    axi_data_width: int = 128
    axi_addr_width: int = 32
    axi_id_width: int = 4
    max_burst_len: int = 16
    max_outstanding_reads: int = 32
    cmd_queue_depth: int = 16
    exec_slots: int = 0
    multiplier: str = "dsp"
    dsp_budget: int = 0
    gemm_unit: bool = True
    perf_counters: bool = True
    postproc_lanes: int = 0
    serial_requant: bool = False
    conv_unit: bool = False
    unaligned_dma: bool = True
    deep_pipeline: bool = True

    def __post_init__(self):
        def integer(name, lo, hi):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool):
                raise TypeError(f"{name} must be an integer, not {value!r}")
            if not lo <= value <= hi:
                raise ValueError(f"{name} must be in {lo}..{hi}, not {value}")
            return value

        def power_of_two(name, lo, hi):
            value = integer(name, lo, hi)
            if not _is_pow2(value):
                raise ValueError(f"{name} must be a power of two in {lo}..{hi}, not {value}")

        def choice(name, allowed, reserved=()):
            value = getattr(self, name)
            if not isinstance(value, str):
                raise TypeError(f"{name} must be a string, not {value!r}")
            if value in reserved:
                raise ValueError(f"{name} {value!r} is not implemented yet; allowed: "
                                 f"{', '.join(map(repr, allowed))}")
            if value not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(map(repr, allowed))}, "
                                 f"not {value!r}")

        def boolean(name):
            value = getattr(self, name)
            if not isinstance(value, bool):
                raise TypeError(f"{name} must be a bool, not {value!r}")

        integer("rows", 1, 64)
        integer("cols", 1, 64)
        integer("input_width", 4, 16)
        boolean("signed")
        integer("acc_width", 2 * self.input_width, 64)
        choice("dataflow", DATAFLOWS, RESERVED_DATAFLOWS)
        power_of_two("spad_depth", 16, 1 << 20)
        power_of_two("spad_banks", 1, 16)
        if self.spad_depth % self.spad_banks or self.spad_depth // self.spad_banks < 16:
            raise ValueError(f"spad_banks must leave at least 16 rows per bank: spad_depth "
                             f"{self.spad_depth} / spad_banks {self.spad_banks}")
        power_of_two("acc_depth", 16, 1 << 20)
        integer("acc_read_ports", 1, 2)
        if self.axi_data_width not in AXI_DATA_WIDTHS:
            raise ValueError(f"axi_data_width must be one of "
                             f"{', '.join(map(str, AXI_DATA_WIDTHS))}, not {self.axi_data_width!r}")
        integer("axi_addr_width", 16, 64)
        integer("axi_id_width", 1, 16)
        integer("max_burst_len", 1, 256)
        integer("max_outstanding_reads", 1, 32)
        power_of_two("cmd_queue_depth", 2, 1024)
        if integer("exec_slots", 0, 8) in (1, 2):
            raise ValueError(f"exec_slots must be 0 (enough for one-row tiles) or 3..8, "
                             f"not {self.exec_slots}")
        choice("multiplier", MULTIPLIERS)
        integer("dsp_budget", 0, 100_000)
        boolean("gemm_unit")
        boolean("conv_unit")
        boolean("perf_counters")
        integer("postproc_lanes", 0, 64)
        if self.postproc_lanes and self.cols % self.postproc_lanes:
            divisors = [d for d in range(1, self.cols + 1) if self.cols % d == 0]
            raise ValueError(f"postproc_lanes must be 0 (every column) or a divisor of cols "
                             f"{self.cols} ({', '.join(map(str, divisors))}), "
                             f"not {self.postproc_lanes}")
        boolean("serial_requant")
        boolean("unaligned_dma")
        boolean("deep_pipeline")
        if not self.unaligned_dma and (self.rows * self.elem_bytes % self.axi_bytes
                                       or self.cols % self.axi_bytes):
            raise ValueError(f"unaligned_dma=False needs rows x element bytes and cols to be "
                             f"multiples of the bus's {self.axi_bytes} bytes (axi_data_width "
                             f"{self.axi_data_width}), not rows {self.rows} x "
                             f"{self.elem_bytes} and cols {self.cols}")

    # Derived numbers. Everything that depends only on the parameters lives here, once.

    @property
    def macs(self):
        """Multiply-accumulate units in the array."""
        return self.rows * self.cols

    @property
    def spad_row_elems(self):
        """Operands in one scratchpad row: a row of A (``rows`` wide) or of B (``cols`` wide)."""
        return max(self.rows, self.cols)

    @property
    def spad_row_bits(self):
        return self.spad_row_elems * self.input_width

    @property
    def acc_row_bits(self):
        return self.cols * self.acc_width

    @property
    def product_width(self):
        return 2 * self.input_width

    @property
    def input_range(self):
        """Smallest and largest operand value, inclusive."""
        if self.signed:
            return -(1 << (self.input_width - 1)), (1 << (self.input_width - 1)) - 1
        return 0, (1 << self.input_width) - 1

    @property
    def elem_bytes(self):
        """Bytes an operand takes in memory (sign- or zero-extended): 1 up to 8 bits, else 2."""
        return 1 if self.input_width <= 8 else 2

    @property
    def acc_elem_bytes(self):
        """Bytes a raw accumulator value (or a bias value) takes in memory: 1, 2, 4 or 8."""
        return next(b for b in (1, 2, 4, 8) if self.acc_width <= 8 * b)

    @property
    def lanes(self):
        """Columns the post-processor requantizes per cycle (``postproc_lanes``, 0 is every
        column)."""
        return self.postproc_lanes or self.cols

    @property
    def postproc_passes(self):
        """Cycles the post-processor takes per accumulator row: ``cols / lanes``."""
        return self.cols // self.lanes

    @property
    def postproc_multipliers(self):
        """18x18 multipliers of the post-processor's requantization: one per pair of
        :data:`DSP_CHUNK_WIDTH`-bit pieces of an accumulator and the multiplier, per lane
        (four per lane for 32-bit accumulators), none with ``serial_requant``. On ECP5 each is
        a MULT18X18D, beside the array's ``dsp_budget``."""
        if self.serial_requant:
            return 0
        pieces = -(-self.acc_width // DSP_CHUNK_WIDTH) * \
            -(-REQUANT_MULTIPLIER_WIDTH // DSP_CHUNK_WIDTH)
        return self.lanes * pieces

    @property
    def postproc_row_cycles(self):
        """Cycles between requantized rows through the post-processor: one per pass, or with
        ``serial_requant`` one per multiplier bit plus one to start, per pass."""
        step = REQUANT_MULTIPLIER_WIDTH + 1 if self.serial_requant else 1
        return step * self.postproc_passes

    @property
    def axi_bytes(self):
        """Bytes per AXI data beat."""
        return self.axi_data_width // 8

    @property
    def dma_alignment(self):
        """Bytes a LOAD's or STORE's address (and, over more than one row, its stride) must be
        a multiple of: 1 with ``unaligned_dma``, else the bus width."""
        return 1 if self.unaligned_dma else self.axi_bytes

    # Construction and export.

    def replace(self, **changes):
        """A copy with some parameters changed (validated like a new object)."""
        return dataclasses.replace(self, **changes)

    @classmethod
    def preset(cls, name, **changes):
        """The named preset, optionally with some parameters changed."""
        if name not in PRESETS:
            raise ValueError(f"preset must be one of {', '.join(map(repr, PRESETS))}, "
                             f"not {name!r}")
        return PRESETS[name].replace(**changes)

    def to_dict(self):
        return dataclasses.asdict(self)

    def to_json(self, **kwargs):
        return json.dumps(self.to_dict(), **kwargs)

    @classmethod
    def from_dict(cls, data):
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"unknown configuration parameter(s): {', '.join(unknown)}")
        return cls(**data)

    @classmethod
    def from_json(cls, text):
        return cls.from_dict(json.loads(text))

    def key(self):
        """A short string naming this configuration, for build directories and test IDs."""
        default = EngineConfig()
        diff = [f"{f.name}={getattr(self, f.name)}" for f in fields(self)
                if f.name not in ("rows", "cols")
                and getattr(self, f.name) != getattr(default, f.name)]
        return "_".join([f"{self.rows}x{self.cols}", *diff]).replace("=", "")

    def dir_key(self):
        """:meth:`key` as a directory or file name (:func:`key_as_name`)."""
        return key_as_name(self.key())


#: Characters of a configuration's name in a directory or file name, and of the hash that ends
#: a name cut to fit (:func:`key_as_name`).
NAME_LIMIT = 100
NAME_HASH = 12


def key_as_name(key):
    """A configuration's :meth:`~EngineConfig.key` as a directory or file name: cut to
    :data:`NAME_LIMIT` characters, ending with a hash of the whole key, when it is longer, so
    that an engine with many parameters set still names a file (file systems take 255 bytes a
    name)."""
    if len(key) <= NAME_LIMIT:
        return key
    digest = hashlib.sha256(key.encode()).hexdigest()[:NAME_HASH]
    return f"{key[:NAME_LIMIT - 1 - NAME_HASH]}_{digest}"


def _dsps_left_for_array(device_dsps, **params):
    """``dsp_budget`` for an engine of ``params`` on a device with ``device_dsps`` 18x18
    multipliers: what the post-processor leaves (the rest of the engine takes none)."""
    return device_dsps - EngineConfig(**params).postproc_multipliers


_TINY = dict(rows=4, cols=4, spad_depth=512, spad_banks=2, acc_depth=256, axi_data_width=32,
             max_burst_len=16, cmd_queue_depth=8)
_SMALL = dict(rows=8, cols=8, spad_depth=2048, spad_banks=2, acc_depth=512, axi_data_width=64,
              max_burst_len=16)
_DEFAULT = dict(rows=16, cols=16, spad_depth=4096, spad_banks=2, acc_depth=1024,
                axi_data_width=128, max_burst_len=16)

#: The named configurations. Each fits the device its comment names, with the board top and host
#: link where a board is named (checked by the slow tests of ``tests/test_boards.py``).
PRESETS = {
    # ECP5-12F (ULX3S-12F; 12k LUTs, 28 MULT18X18D, 32 EBR): tiny's array without the features a
    # user may leave out, one requantization lane (4 DSPs), every PE in a DSP (16) and the
    # pipeline of a 50 MHz clock.
    "lean": EngineConfig(**_TINY, multiplier="dsp", gemm_unit=False, perf_counters=False,
                         postproc_lanes=1, unaligned_dma=False, deep_pipeline=False),
    # ECP5-25F (ULX3S-25F, Colorlight 5A-75B; 28 MULT18X18D): 8 DSP PEs (the iCE40 UP5K's DSP
    # count), 8 in LUTs, and 16 multipliers in the post-processor, 4 DSPs to spare. Not yet the
    # UP5K itself (5280 LUT4, 8 DSP, 30 EBR).
    "tiny": EngineConfig(**_TINY, multiplier="auto", dsp_budget=8),
    # ECP5-45F (ULX3S-45F): its 72 MULT18X18D less the post-processor's 32 for the array.
    "small": EngineConfig(**_SMALL, multiplier="auto",
                          dsp_budget=_dsps_left_for_array(72, **_SMALL)),
    # ECP5-85F: its 156 MULT18X18D less the post-processor's 64 for the array.
    "default": EngineConfig(**_DEFAULT, multiplier="auto",
                            dsp_budget=_dsps_left_for_array(156, **_DEFAULT)),
    "large": EngineConfig(rows=32, cols=32, spad_depth=8192, spad_banks=2, acc_depth=2048,
                          axi_data_width=256, max_burst_len=16, multiplier="lut"),
}
