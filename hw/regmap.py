"""The MXE register map: one table that the CSR gateware, the Markdown documentation and the
Python driver are all generated from.

Every register is 32 bits wide at a byte offset that is a multiple of 4. A field's access kind
says what the hardware does with it:

``CONST``
    Read-only value baked in from the :class:`~mxe.hw.config.EngineConfig` (no port).
``RO``
    Read-only value driven by the engine on an ``In`` port.
``RW``
    Read/write value held in the CSR block, driven on an ``Out`` port.
``W1P``
    Write-one-pulse: writing 1 raises the ``Out`` port for exactly one cycle; reads return 0.
``W1C``
    Sticky bit set by a one-cycle pulse on the ``In`` port, cleared by writing 1 (a set in the
    same cycle wins).
``PUSH``
    Writing the register pushes a command into the queue (``o_cmd``); reads return 0.
``CNT``
    Half of a 64-bit counter the engine keeps (``In(64)`` port). Reading the ``_LO`` half
    captures the ``_HI`` half at the same instant; reading ``_HI`` returns that capture, so the
    pair read LO then HI is one consistent 64-bit value.

A field's port is named ``<register>_<field>`` in lower case unless the table names it
(``port=``); a 64-bit value split into ``_LO`` / ``_HI`` registers shares one port, the ``_HI``
half at ``port_lsb=32``. ``port=None`` means the field is internal to the CSR block (the command
staging words, the overflow flag).

Features a user may leave out of an engine (:data:`CAPABILITIES`, configuration parameters of
the same names) are advertised in the ``CAPABILITIES`` register, one bit each. A register that
belongs to such a feature (``feature=``) stays at its offset in every engine: without the
feature it reads 0 and ignores writes (and has no port). That is simpler for drivers than a
register map that depends on the configuration: one table of offsets serves every engine, and
an absent counter reads like one that never counted.
"""

from dataclasses import dataclass, field as dc_field
from typing import Callable, Optional


__all__ = ["ACCESS_KINDS", "Field", "Register", "REGISTERS", "ID_MAGIC", "VERSION", "ID_VALUE",
           "ADDR_WIDTH", "REGMAP", "OFFSETS", "COUNTERS", "CORE_COUNTERS", "CAPABILITIES",
           "CAPABILITIES_SINCE", "capabilities_of",
           "CONFIG_REGISTERS", "present_counters", "by_name", "ports", "register_map_markdown"]


ACCESS_KINDS = ("CONST", "RO", "RW", "W1P", "W1C", "PUSH", "CNT")
#: ``"MXE"`` in ASCII, the top 24 bits of the ID register.
ID_MAGIC = 0x4D5845
#: Register map version, the low 8 bits of the ID register, bumped whenever a driver must tell
#: the maps apart. 1: the first map; 2: adds CAPABILITIES (an engine of version 1 has every
#: feature, and reading CAPABILITIES there would answer SLVERR); 3: CONFIG's output zero point,
#: clamp and rounding fields (an engine of version 2 or less ignores them); 4: CAPABILITIES'
#: unaligned_dma bit (an engine of version 3 or less has unaligned DMA and reads 0 there).
VERSION = 4
ID_VALUE = ID_MAGIC << 8 | VERSION
#: Byte address bits the CSR block decodes (a 4 KiB window).
ADDR_WIDTH = 12

_AUTO = "auto"


@dataclass(frozen=True)
class Field:
    """A bit field of a register.

    Parameters
    ----------
    name : str
    width : int
    lsb : int
        Position of the field's low bit in the register.
    doc : str
    access : str, optional
        One of :data:`ACCESS_KINDS`; the register's access if omitted.
    reset : int
        Value after reset (RW fields).
    port : str or None
        Port name; ``"auto"`` for ``<register>_<field>``, ``None`` for an internal field.
    port_lsb : int
        Bit offset of this field in its port (32 for the high half of a 64-bit value).
    value : callable, optional
        ``EngineConfig -> int`` for CONST fields.
    """

    name: str
    width: int
    lsb: int
    doc: str
    access: Optional[str] = None
    reset: int = 0
    port: Optional[str] = _AUTO
    port_lsb: int = 0
    value: Optional[Callable] = None

    def __post_init__(self):
        if not 1 <= self.width <= 32 or not 0 <= self.lsb <= 32 - self.width:
            raise ValueError(f"field {self.name}: width {self.width} at lsb {self.lsb} does not "
                             f"fit 32 bits")
        if self.access is not None and self.access not in ACCESS_KINDS:
            raise ValueError(f"field {self.name}: access must be one of {ACCESS_KINDS}, not "
                             f"{self.access!r}")

    @property
    def mask(self):
        return ((1 << self.width) - 1) << self.lsb


@dataclass(frozen=True)
class Register:
    """A 32-bit register: name, byte offset, default access kind, fields, description.

    ``feature`` names the :class:`~mxe.hw.config.EngineConfig` parameter (one of
    :data:`CAPABILITIES`) the register belongs to: an engine built without it reads 0 there
    and ignores writes. ``None``: every engine has the register.
    """

    name: str
    offset: int
    access: str
    fields: tuple = dc_field(default_factory=tuple)
    doc: str = ""
    feature: Optional[str] = None

    def __post_init__(self):
        if self.offset % 4 or not 0 <= self.offset < 1 << ADDR_WIDTH:
            raise ValueError(f"register {self.name}: offset {self.offset:#x} must be a multiple "
                             f"of 4 below {1 << ADDR_WIDTH:#x}")
        if self.access not in ACCESS_KINDS:
            raise ValueError(f"register {self.name}: access must be one of {ACCESS_KINDS}, not "
                             f"{self.access!r}")
        object.__setattr__(self, "fields", tuple(self.fields))
        used = 0
        for f in self.fields:
            if used & f.mask:
                raise ValueError(f"register {self.name}: field {f.name} overlaps another field")
            used |= f.mask

    def access_of(self, f):
        return f.access or self.access

    def present(self, config):
        """Whether an engine built with ``config`` has this register (else it reads 0)."""
        return self.feature is None or bool(getattr(config, self.feature))

    def port_of(self, f):
        """Port name of field ``f`` (``None`` for an internal or constant field)."""
        if self.access_of(f) == "CONST" or f.port is None:
            return None
        return f"{self.name.lower()}_{f.name}" if f.port == _AUTO else f.port


def _const(name, offset, doc, value):
    return Register(name, offset, "CONST", [Field("value", 32, 0, doc, value=value)], doc)


def _pair(name, offset, access, port, doc, *, port_width=64, feature=None):
    """A 64-bit value as ``<name>_LO`` at ``offset`` and ``<name>_HI`` at ``offset + 4``."""
    return [
        Register(f"{name}_LO", offset, access,
                 [Field("value", 32, 0, f"{doc}, bits 31:0", port=port)], f"{doc} (low word)",
                 feature=feature),
        Register(f"{name}_HI", offset + 4, access,
                 [Field("value", port_width - 32, 0, f"{doc}, bits {port_width - 1}:32",
                        port=port, port_lsb=32)], f"{doc} (high word)", feature=feature),
    ]


#: Performance counters: register name prefix, port name, description.
COUNTERS = [
    ("CYCLES", "cycles", "clock cycles since the last reset or soft reset"),
    ("BUSY_CYCLES", "busy_cycles", "cycles with the engine busy"),
    ("MAC_ACTIVE_CYCLES", "mac_active_cycles", "cycles with the array multiplying"),
    ("DMA_RD_BYTES", "dma_rd_bytes", "bytes read by the DMA"),
    ("DMA_WR_BYTES", "dma_wr_bytes", "bytes written by the DMA"),
    ("STALL_LOAD", "stall_load", "cycles stalled waiting for DMA reads"),
    ("STALL_STORE", "stall_store", "cycles stalled waiting for DMA writes"),
    ("STALL_DEP", "stall_dep", "cycles stalled waiting on dependencies"),
]
#: Counters every engine keeps. CYCLES is the clock a driver times its waits with when the link
#: has none of its own (:class:`mxe.sim.transport.UARTBoneTransport`); the others belong to the
#: ``perf_counters`` feature.
CORE_COUNTERS = ("CYCLES",)

#: Features a user may leave out: the EngineConfig parameter (a bool), which is also the name of
#: its CAPABILITIES field, and what it brings. Bit i of CAPABILITIES is entry i; new features
#: take the next bits, so an engine that predates one reads 0 for it (:data:`CAPABILITIES_SINCE`
#: says which of those it has all the same).
CAPABILITIES = [
    ("gemm_unit", "the GEMM descriptor unit: GEMM_A/B/C run (0: they are refused with "
                  "UNSUPPORTED; issue LOAD/MATMUL/STORE instead)"),
    ("perf_counters", "the performance counters (0: every counter register but CYCLES reads 0)"),
    ("conv_unit", "the convolution descriptor unit: CONV_A/B/C run (0: they are refused with "
                  "UNSUPPORTED; lower the convolution to GEMMs instead)"),
    ("unaligned_dma", "LOAD and STORE at any byte address and stride (0: an address "
                      "WIN_BASE + mem_offset or, over more than one row, a stride that is not a "
                      "multiple of the bus width in bytes is refused with UNSUPPORTED)"),
]

#: Features every engine had before its CAPABILITIES bit came: the bit's name and the register
#: map version that brought it. An engine of an older version reads 0 there and has it.
CAPABILITIES_SINCE = {"unaligned_dma": 4}


def capabilities_of(version, word):
    """The features (CAPABILITIES field name to bool) of an engine of register map ``version``
    whose CAPABILITIES register reads ``word`` (ignored before version 2, which had every
    feature)."""
    features = {}
    for bit, (name, _doc) in enumerate(CAPABILITIES):
        since = CAPABILITIES_SINCE.get(name, 2)
        features[name] = version < since or bool(word >> bit & 1)
    return features

#: Configuration read-back: register name, config attribute (in the order of their offsets).
CONFIG_REGISTERS = [
    ("CFG_ROWS", "rows"), ("CFG_COLS", "cols"), ("CFG_INPUT_WIDTH", "input_width"),
    ("CFG_SIGNED", "signed"), ("CFG_ACC_WIDTH", "acc_width"), ("CFG_SPAD_DEPTH", "spad_depth"),
    ("CFG_SPAD_BANKS", "spad_banks"), ("CFG_ACC_DEPTH", "acc_depth"),
    ("CFG_AXI_DATA_WIDTH", "axi_data_width"), ("CFG_AXI_ADDR_WIDTH", "axi_addr_width"),
    ("CFG_MAX_BURST_LEN", "max_burst_len"), ("CFG_CMD_QUEUE_DEPTH", "cmd_queue_depth"),
]


def _build():
    regs = [
        Register("ID", 0x000, "CONST", [
            Field("version", 8, 0, "register map version", value=lambda c: VERSION),
            Field("magic", 24, 8, '"MXE" in ASCII (0x4D5845)', value=lambda c: ID_MAGIC),
        ], "identification: reads 0x4D5845xx, xx the version"),
        Register("CTRL", 0x004, "W1P", [
            Field("start", 1, 0, "start executing the queued commands"),
            Field("soft_reset", 1, 1, "stop the engine: empty the queue, clear the error, "
                                      "ERR_CMD_INDEX, ERR_ADDR and the counters; commands "
                                      "already running finish (STATUS.busy falls after "
                                      "them); STATUS.done, CONFIG, the bias and per-column "
                                      "values, the buffers and the other registers keep "
                                      "theirs"),
            Field("irq_enable", 1, 2, "drive the irq output while STATUS.done is set",
                  access="RW"),
        ], "control"),
        Register("STATUS", 0x008, "RO", [
            Field("busy", 1, 0, "the engine is executing commands"),
            Field("done", 1, 1, "the command stream finished (sticky; the engine pulses "
                                "status_done)", access="W1C"),
            Field("cmd_overflow", 1, 2, "a CMD_W3 write found the queue full and was dropped "
                                        "(sticky)", access="W1C", port=None),
            Field("queue_empty", 1, 3, "the command queue is empty"),
            Field("queue_full", 1, 4, "the command queue is full"),
            Field("error", 4, 8, "error code of the first failing command, 0 = none"),
        ], "status"),
        Register("ERR_CMD_INDEX", 0x00C, "RO", [
            Field("value", 32, 0, "index of the failing command among all commands pushed "
                                  "since the last reset or soft reset (0 = the first; streams "
                                  "run without a soft reset between them count on; a GEMM "
                                  "descriptor counts as its sub-commands, GEMM_A/B/C as none)",
                  port="err_cmd_index"),
        ], "index of the command that raised STATUS.error"),
        *_pair("ERR_ADDR", 0x010, "RO", "err_addr", "failing memory address"),
        Register("CMD_W0", 0x020, "RW", [Field("value", 32, 0, "command bits 31:0", port=None)],
                 "command staging word 0"),
        Register("CMD_W1", 0x024, "RW", [Field("value", 32, 0, "command bits 63:32", port=None)],
                 "command staging word 1"),
        Register("CMD_W2", 0x028, "RW", [Field("value", 32, 0, "command bits 95:64", port=None)],
                 "command staging word 2"),
        Register("CMD_W3", 0x02C, "PUSH", [
            Field("value", 32, 0, "command bits 127:96; the write pushes CMD_W0..CMD_W3 as one "
                                  "128-bit command", port=None),
        ], "command word 3 and push"),
        Register("CMD_LEVEL", 0x030, "RO", [
            Field("level", 16, 0, "commands in the queue", port="cmd_level"),
        ], "command queue fill level"),
        *_pair("WIN_BASE", 0x040, "RW", "win_base", "DMA window base address (inclusive)"),
        *_pair("WIN_LIMIT", 0x048, "RW", "win_limit", "DMA window limit address (exclusive)"),
        Register("CAPABILITIES", 0x07C, "CONST", [
            Field(name, 1, bit, doc, value=lambda c, name=name: int(getattr(c, name)))
            for bit, (name, doc) in enumerate(CAPABILITIES)
        ], f"features the engine was built with, one bit each (1: present); bits "
           f"31:{len(CAPABILITIES)} are reserved for features to come and read 0"),
    ]
    for i, (name, attr) in enumerate(CONFIG_REGISTERS):
        regs.append(_const(name, 0x080 + 4 * i, f"config.{attr}",
                           lambda c, attr=attr: int(getattr(c, attr))))
    for i, (name, port, doc) in enumerate(COUNTERS):
        feature = None if name in CORE_COUNTERS else "perf_counters"
        regs += _pair(name, 0x100 + 8 * i, "CNT", port, doc, feature=feature)
    return regs


#: The register table, in offset order.
REGISTERS = _build()


def _check(registers):
    offsets, names = set(), set()
    for reg in registers:
        if reg.offset in offsets:
            raise ValueError(f"register {reg.name}: offset {reg.offset:#x} used twice")
        if reg.name in names:
            raise ValueError(f"register {reg.name} defined twice")
        offsets.add(reg.offset)
        names.add(reg.name)


_check(REGISTERS)


def by_name(name):
    for reg in REGISTERS:
        if reg.name == name:
            return reg
    raise KeyError(name)


def present_counters(config=None):
    """The :data:`COUNTERS` entries an engine built with ``config`` keeps (all without one), as
    the register table says (:meth:`Register.present`); the others read 0 there."""
    return [entry for entry in COUNTERS
            if config is None or by_name(f"{entry[0]}_LO").present(config)]


def ports(registers=REGISTERS, config=None):
    """Ports of the CSR block: ``{name: (direction "in"/"out", width, access, doc)}``; with a
    ``config``, only those of the registers that engine has (:meth:`Register.present`)."""
    result = {}
    for reg in registers:
        if config is not None and not reg.present(config):
            continue
        for f in reg.fields:
            port = reg.port_of(f)
            if port is None:
                continue
            access = reg.access_of(f)
            direction = "in" if access in ("RO", "W1C", "CNT") else "out"
            width = f.port_lsb + f.width
            if access == "CNT":
                width = 64
            if port in result:
                prev = result[port]
                width = max(width, prev[1])
            result[port] = (direction, width, access, f.doc.split(", bits")[0])
    return result


#: For the driver: ``{register: {"offset", "access", "feature", "fields": {field: {"lsb",
#: "width", "access"}}}}``, plain data.
REGMAP = {
    reg.name: {
        "offset": reg.offset,
        "access": reg.access,
        "feature": reg.feature,
        "fields": {f.name: {"lsb": f.lsb, "width": f.width, "access": reg.access_of(f)}
                   for f in reg.fields},
    }
    for reg in REGISTERS
}
#: For the driver: ``{register: byte offset}``.
OFFSETS = {reg.name: reg.offset for reg in REGISTERS}


def register_map_markdown(config=None):
    """The register map as Markdown text (a register table, then one row per field).

    With a ``config``, CONST registers show their value for that configuration, and the
    registers that engine lacks show no port.
    """
    lines = [
        "# MXE register map",
        "",
        f"AXI4-Lite, 32-bit registers, byte offsets, {ADDR_WIDTH}-bit address window. "
        "Unmapped addresses answer SLVERR (reads return 0); writes to read-only registers are "
        "ignored. Access kinds: CONST (from the configuration), RO, RW, W1P (write 1: one-cycle "
        "pulse), W1C (sticky, write 1 to clear), PUSH (write pushes a command), CNT (64-bit "
        "counter half; reading _LO captures _HI). A register marked \"reads 0 without "
        "`feature`\" reads 0 and ignores writes on an engine built without that feature; "
        "CAPABILITIES says which features the engine has.",
        "",
        "| Offset | Register | Access | Description |",
        "|--------|----------|--------|-------------|",
    ]
    for reg in REGISTERS:
        absent = f" (reads 0 without `{reg.feature}`)" if reg.feature else ""
        lines.append(f"| 0x{reg.offset:03X} | {reg.name} | {reg.access} | {reg.doc}{absent} |")
    lines += [
        "",
        "## Fields",
        "",
        "| Register | Field | Bits | Access | Reset/value | Port | Description |",
        "|----------|-------|------|--------|-------------|------|-------------|",
    ]
    for reg in REGISTERS:
        for f in reg.fields:
            bits = (f"{f.lsb}" if f.width == 1 else f"{f.lsb + f.width - 1}:{f.lsb}")
            access = reg.access_of(f)
            if access == "CONST":
                value = f"{f.value(config):#x}" if config is not None else "config"
            else:
                value = f"{f.reset:#x}"
            port = reg.port_of(f) if config is None or reg.present(config) else None
            port = f"`{port}`" + (f"[{f.port_lsb + f.width - 1}:{f.port_lsb}]"
                                  if f.port_lsb else "") if port else "-"
            lines.append(f"| {reg.name} | {f.name} | {bits} | {access} | {value} | {port} | "
                         f"{f.doc} |")
    return "\n".join(lines) + "\n"
