"""The MXE driver: GEMM planning (pure Python) and :class:`MXEDriver`.

:func:`plan_gemm` turns ``C = A @ B`` (any M, K, N) into a command stream for one engine
configuration and a memory layout; it needs no simulator, so its output is checked against the
command-level model (:mod:`mxe.sim.engine_model`) for many shapes in ``tests/test_driver.py``.
:class:`MXEDriver` runs a plan on an engine through a transport (:mod:`mxe.sim.transport`):
cocotbext-axi on a simulated engine, or a serial port to a board. It discovers the configuration
and the features the engine was built with (``CAPABILITIES``) from the CSRs, writes the operands
into memory, pushes the commands (never overflowing the queue), waits for the FENCE, checks
``STATUS.error``, reads the result back and reports the performance counters the engine has.
A GEMM goes as the plan's LOAD/MATMUL/STORE stream, or, when asked and the engine has the GEMM
unit, as one hardware GEMM descriptor (:func:`descriptor_commands`); without the unit the
driver falls back to the stream.

Tiling
------
K is cut into tiles of ``kr = min(rows, K)`` weight rows, N into tiles of ``nc = min(cols, N)``
columns, M into chunks of ``mc`` rows. A weight tile ``(ki, ni)`` takes ``kr`` scratchpad rows
(``B[k0:k0+kr, n0:n0+nc]``), an activation tile ``(mi, ki)`` ``mc`` rows
(``A[m0:m0+mc, k0:k0+kr]``), an output tile ``(mi, ni)`` ``mc`` accumulator rows, filled by
``kt = ceil(K / kr)`` MATMULs (the first overwrites, the others accumulate) and then stored.

The planner chooses a loop order (``mn``: M chunks outside, N tiles inside; ``nm``: the other way)
and, for each operand, how it lives in the scratchpad:

``panel``
    The operand tiles of the current outer iteration (A's ``kt`` tiles of one M chunk in ``mn``
    order, B's ``kt`` tiles of one N tile in ``nm`` order) stay loaded while the inner loop runs;
    two panels alternate, so the next panel loads while the current one computes. Each tile is
    read from memory once.
``resident``
    Every tile of the operand has its own place (B in ``mn`` order, A in ``nm`` order); loaded on
    first use, read from memory once.
``stream``
    Two places alternate, the tile is loaded before each use (the inner operand is then read
    once per outer iteration).

The accumulator holds two output tiles that alternate, so a STORE drains one while the MATMULs
fill the other. Among all feasible choices (scratchpad rows ``<= spad_depth``, accumulator rows
``<= acc_depth``), the planner takes the one with the lowest estimated time (the maximum of DMA
beats, array cycles and command pushes, plus FENCE drains), then the least memory traffic.

The post-processor's bias row is one row of ``cols`` values: with a bias and more than one N
tile, the row is reloaded per N tile, after the previous tile's STORE in program order. The
controller holds a bias LOAD while a STORE runs, so no FENCE is needed; ``bias_fence=True`` puts
one before each reload for an engine without that interlock (the driver waits for every FENCE, so
such GEMMs then run in segments).
"""

import dataclasses
import logging
from dataclasses import dataclass, field
from math import ceil

import numpy as np

from mxe.hw.config import REQUANT_ELEM_BYTES, EngineConfig
from mxe.hw.isa import ErrorCode
from mxe.hw.regmap import (CONFIG_REGISTERS, ID_MAGIC, OFFSETS, REGMAP, VERSION, capabilities_of,
                           present_counters)
from mxe.sim import commands as cmds
from mxe.sim.engine_model import decode_elems, encode_elems
from mxe.sim.model import Requant, check_operands
from mxe.sim.quant import lower


__all__ = ["plan_gemm", "config_command", "GemmPlan", "Region", "MXEDriver", "MXEError", "MXETimeout",
           "pack_operands", "unpack_result", "counter_names", "descriptor_commands",
           "descriptor_layout", "plan_chain", "chain_operands", "chain_commands"]


# Planning ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Region:
    """A matrix in memory: ``rows`` rows of ``cols`` elements of ``elem_bytes`` bytes, row ``r``
    at window offset ``offset + r * stride``; the stride is the row's bytes rounded up to a
    multiple of ``pitch``. The bytes between rows are padding (never read, never written)."""
    offset: int
    rows: int
    cols: int
    elem_bytes: int
    pitch: int = 1

    @property
    def row_bytes(self):
        return self.cols * self.elem_bytes

    @property
    def stride(self):
        return -(-self.row_bytes // self.pitch) * self.pitch

    @property
    def nbytes(self):
        """Bytes from the first row's start to the last row's end."""
        return (self.rows - 1) * self.stride + self.row_bytes

    def pack(self, data):
        """Row-major bytes of the matrix (``rows * row_bytes``) laid out with this stride."""
        if self.stride == self.row_bytes:
            return bytes(data)
        out = bytearray(self.nbytes)
        for r in range(self.rows):
            out[r * self.stride:r * self.stride + self.row_bytes] = \
                data[r * self.row_bytes:(r + 1) * self.row_bytes]
        return bytes(out)

    def unpack(self, data):
        """The matrix's row-major bytes from the ``nbytes`` bytes of the region."""
        if self.stride == self.row_bytes:
            return bytes(data)
        return b"".join(bytes(data[r * self.stride:r * self.stride + self.row_bytes])
                        for r in range(self.rows))

    @property
    def end(self):
        return self.offset + self.nbytes


@dataclass
class GemmPlan:
    """What :func:`plan_gemm` returns.

    Members
    -------
    commands : list of int
        The command stream (128-bit ints), ending with a FENCE. Every FENCE is a point where the
        driver waits for done.
    layout : dict of Region
        ``"a"``, ``"b"``, ``"c"``, with a bias ``"bias"``, and with per-column requantization
        ``"requant"`` (multipliers, then shifts, right after the bias); offsets from
        ``WIN_BASE``.
    size : int
        Window bytes the layout needs from offset 0 (``base`` included).
    schedule : dict
        The choice: ``order``, ``mc``, ``kr``, ``nc``, ``a_mode``, ``b_mode``, buffer places.
    stats : dict
        Exactly what the stream moves and computes: ``dma_rd_bytes``, ``dma_wr_bytes``,
        ``mac_active`` (activation rows streamed = sum of MATMUL ``m``), counts per opcode, the
        cost estimate.
    """
    config: EngineConfig
    M: int
    K: int
    N: int
    bias: bool
    relu: bool
    requant: object
    commands: list
    layout: dict
    size: int
    schedule: dict
    stats: dict = field(default_factory=dict)

    @property
    def out_bytes(self):
        return self.layout["c"].elem_bytes

    def segments(self):
        """The command stream cut after every FENCE (each piece ends with one)."""
        pieces, current = [], []
        for command in self.commands:
            current.append(command)
            if cmds.decode(command)[0] == "FENCE":
                pieces.append(current)
                current = []
        if current:
            pieces.append(current)
        return pieces


def _check_dim(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be a positive integer, not {value!r}")
    if not 1 <= value <= 65535 * 64:
        raise ValueError(f"{name} must be in 1..{65535 * 64}, not {value}")
    return int(value)


def _align(value, alignment):
    return -(-value // alignment) * alignment


def _candidates(config, M, K, N, kr, bias, mcs=None):
    """Every feasible (cost, bytes, schedule) for k tiles of ``kr`` rows (and M chunks of
    ``mcs`` rows, by default every chunk count's balanced size)."""
    c = config
    nc = min(c.cols, N)
    kt, nt = ceil(K / kr), ceil(N / nc)
    if mcs is None:
        mcs = sorted({ceil(M / chunks) for chunks in range(1, M + 1)}, reverse=True)
    for mc in mcs:
        if mc > 65535:
            continue
        mt = ceil(M / mc)
        acc_places = 2 if mt * nt > 1 else 1
        if acc_places * mc > c.acc_depth:
            continue
        for order in ("mn", "nm"):
            if order == "mn":
                a_modes = {"panel": kt * min(2, mt), "stream": min(2, mt * nt * kt)}
                b_modes = {"resident": kt * nt, "stream": min(2, mt * nt * kt)}
            else:
                a_modes = {"resident": mt * kt, "stream": min(2, mt * nt * kt)}
                b_modes = {"panel": kt * min(2, nt), "stream": min(2, mt * nt * kt)}
            for a_mode, a_places in a_modes.items():
                for b_mode, b_places in b_modes.items():
                    if a_places * mc + b_places * kr > c.spad_depth:
                        continue
                    sched = dict(order=order, mc=mc, mt=mt, kr=kr, kt=kt, nc=nc, nt=nt,
                                 a_mode=a_mode, b_mode=b_mode, a_places=a_places,
                                 b_places=b_places, acc_places=acc_places)
                    cost, nbytes = _estimate(c, M, K, N, sched, bias)
                    yield cost, nbytes, sched


def _estimate(c, M, K, N, s, bias):
    """Rough cycles and exact bytes of a schedule (for choosing, not for checking)."""
    eb = c.elem_bytes
    a_reads = 1 if s["a_mode"] in ("panel", "resident") else s["nt"]
    b_reads = 1 if s["b_mode"] in ("panel", "resident") else s["mt"]
    pairs = s["mt"] * s["nt"]
    bias_loads = 0
    fences = 1
    if bias:
        bias_loads = s["nt"] if s["order"] == "nm" else (pairs if s["nt"] > 1 else 1)
        fences += bias_loads - 1
    rd = M * K * eb * a_reads + K * N * eb * b_reads + bias_loads * N * c.acc_elem_bytes
    wr = M * N * c.acc_elem_bytes
    # Every row costs at least one beat plus some overhead; the bus moves axi_bytes a beat.
    a_rows = M * s["kt"] * a_reads
    b_rows = K * s["nt"] * b_reads
    dma = (rd + wr) / c.axi_bytes + 2 * (a_rows + b_rows + M * s["nt"])
    compute = sum(max(min(s["mc"], M - mi * s["mc"]), c.rows) for mi in range(s["mt"])) \
        * s["nt"] * s["kt"]
    loads = s["kt"] * s["mt"] * a_reads + s["kt"] * s["nt"] * b_reads + bias_loads
    commands = loads + pairs * s["kt"] + pairs + fences
    cost = max(dma, compute, 16 * commands) + fences * (4 * (c.rows + c.cols) + 100)
    return cost, rd + wr


def _choose(config, M, K, N, bias, force):
    kr = min(config.rows, K)
    while kr >= 1:
        mcs = [force["mc"]] if force and "mc" in force else None
        options = [(cost, nbytes, s)
                   for cost, nbytes, s in _candidates(config, M, K, N, kr, bias, mcs)
                   if all(s.get(k) == v for k, v in (force or {}).items())]
        if options:
            return min(options, key=lambda o: (o[0], o[1], -o[2]["mc"]))[2]
        kr //= 2
    raise ValueError(f"no tiling of a {M}x{K}x{N} GEMM fits spad_depth {config.spad_depth} and "
                     f"acc_depth {config.acc_depth}" + (f" with {force}" if force else ""))


def plan_gemm(config, M, K, N, *, bias=False, relu=False, requant=None, base=0, align=64,
              pitch=None, order=("a", "b", "bias", "c"), bias_fence=False, force=None):
    """Plan ``C = A @ B`` (A: M x K, B: K x N) for the engine ``config``.

    Parameters
    ----------
    config : EngineConfig
    M, K, N : int
    bias : bool
        Add a per-column bias (N values of ``acc_elem_bytes`` bytes in memory).
    relu : bool
    requant : None, Requant or (multiplier, shift)
        Requantize the outputs to one byte each (int8, or uint8 where the clamp range is
        0..255); raw ``acc_width`` values otherwise.
    base : int
        Window offset of the first byte the layout may use.
    align : int
        Alignment of every region (1 for none). On an engine without unaligned DMA, ``align`` and
        ``pitch`` must be multiples of the bus width in bytes, and the per-column tables start
        and run on it.
    pitch : int, optional
        Row strides of A, B and C are multiples of ``pitch`` bytes. The default is the bus width
        (``axi_bytes``): every row starts on a bus beat, so a row of up to ``axi_bytes`` bytes
        is one beat, not two. 1 packs the rows tightly.
    order : sequence of str
        The order of the regions in memory (``"a"``, ``"b"``, ``"bias"``, ``"c"``).
    bias_fence : bool
        Put a FENCE before each bias reload. Not needed with the controller of ``hw/``, which
        holds a bias LOAD while a STORE runs (and a STORE with bias while a bias LOAD runs).
    force : dict, optional
        Restrict the schedule (``order``, ``mc``, ``a_mode``, ``b_mode``): for tests.

    Returns
    -------
    GemmPlan

    Raises
    ------
    TypeError, ValueError
        Bad arguments, or no tiling fits the buffers.
    """
    if not isinstance(config, EngineConfig):
        raise TypeError(f"config must be an EngineConfig, not {config!r}")
    M, K, N = _check_dim("M", M), _check_dim("K", K), _check_dim("N", N)
    if requant is not None:
        requant = Requant.of(requant)        # the ranges the post-processor accepts
    if base < 0 or align < 1:
        raise ValueError(f"base must be >= 0 and align >= 1, not {base} and {align}")
    c = config
    pitch = c.axi_bytes if pitch is None else pitch
    if not isinstance(pitch, int) or pitch < 1:
        raise ValueError(f"pitch must be a positive number of bytes, not {pitch!r}")
    # An engine without unaligned DMA refuses a row off the bus's lane 0.
    lane0 = c.dma_alignment
    if pitch % lane0 or align % lane0:
        raise ValueError(f"pitch and align must be multiples of the bus's {lane0} bytes on an "
                         f"engine without unaligned DMA, not {pitch} and {align}")
    s = _choose(c, M, K, N, bias and bias_fence, force)

    # Memory layout. The per-column multipliers and shifts (two rows) follow the bias values
    # directly, as a GEMM descriptor expects them (without unaligned DMA, from the bus's next
    # lane 0 on, rows padded to it).
    per_column = requant is not None and requant.per_column
    if per_column and len(requant.multiplier) != N:
        raise ValueError(f"requant has {len(requant.multiplier)} per-column multipliers for "
                         f"N = {N} columns")
    eb, ob = c.elem_bytes, (1 if requant is not None else c.acc_elem_bytes)
    shapes = {"a": (M, K, eb), "b": (K, N, eb), "bias": (1, N, c.acc_elem_bytes),
              "c": (M, N, ob)}
    if sorted(order) != sorted(shapes):
        raise ValueError(f"order must name a, b, bias and c once each, not {order!r}")
    layout = {}
    offset = _align(base, align)
    for name in order:
        if name == "bias":
            if bias:
                layout["bias"] = Region(offset, *shapes["bias"], pitch=1)
                offset = layout["bias"].end
            if per_column:
                layout["requant"] = Region(_align(offset, lane0), 2, N, REQUANT_ELEM_BYTES,
                                           pitch=lane0)
                offset = layout["requant"].end
            offset = _align(offset, align)
            continue
        layout[name] = Region(offset, *shapes[name], pitch=pitch)
        offset = _align(layout[name].end, align)
    size = max(region.end for region in layout.values())
    if size > 1 << 32:
        raise ValueError(f"the operands need {size} bytes; commands address 4 GiB at most")

    mc, mt, kr, kt, nc, nt = s["mc"], s["mt"], s["kr"], s["kt"], s["nc"], s["nt"]
    a_base, b_base = 0, s["a_places"] * mc
    A, B, C = layout["a"], layout["b"], layout["c"]
    out = []
    stats = {"dma_rd_bytes": 0, "dma_wr_bytes": 0, "mac_active": 0}
    loaded = {}          # (operand, tile) -> scratchpad row, for panel / resident modes
    stream_count = {"a": 0, "b": 0}

    def place(operand, mode, tile, mi, ni, ki):
        """Scratchpad row of a tile, and whether it must be loaded now."""
        size_ = mc if operand == "a" else kr
        base_ = a_base if operand == "a" else b_base
        if mode == "stream":
            slot = stream_count[operand] % s[f"{operand}_places"]
            stream_count[operand] += 1
            return base_ + slot * size_, True
        if mode == "resident":
            slot = mi * kt + ki if operand == "a" else ki * nt + ni
        else:   # panel: the outer index picks one of two panels
            outer = mi if operand == "a" else ni
            slot = (outer % 2) * kt + ki
        key = (operand, tile)
        row = base_ + slot * size_
        if loaded.get(key) == row:
            return row, False
        loaded[key] = row
        return row, True

    def load(row, region, r0, nrows, c0, ncols):
        out.append(cmds.load(row, region.offset + r0 * region.stride + c0 * region.elem_bytes,
                             nrows, ncols, region.stride))
        stats["dma_rd_bytes"] += nrows * ncols * region.elem_bytes

    if requant is not None:
        out.append(config_command(requant))
    pairs = [(mi, ni) for mi in range(mt) for ni in range(nt)] if s["order"] == "mn" else \
        [(mi, ni) for ni in range(nt) for mi in range(mt)]
    pending_store = None
    bias_tile = None

    def flush_store():
        nonlocal pending_store
        if pending_store is not None:
            out.append(pending_store[0])
            stats["dma_wr_bytes"] += pending_store[1]
            pending_store = None

    for p, (mi, ni) in enumerate(pairs):
        m0, n0 = mi * mc, ni * nc
        m, n = min(mc, M - m0), min(nc, N - n0)
        acc = (p % s["acc_places"]) * mc
        if (bias or per_column) and bias_tile != ni:
            if bias_tile is not None:
                flush_store()    # the previous tile's STORE uses the previous bias
                if bias_fence:
                    out.append(cmds.fence())
            for name, rows in (("bias", 1), ("requant", 2)):
                if name in layout:
                    region = layout[name]
                    out.append(cmds.load(0, region.offset + n0 * region.elem_bytes, rows, n,
                                         region.stride, to_bias=name == "bias",
                                         to_requant=name == "requant"))
                    stats["dma_rd_bytes"] += rows * n * region.elem_bytes
            bias_tile = ni
        for ki in range(kt):
            k0 = ki * kr
            k = min(kr, K - k0)
            a_row, a_load = place("a", s["a_mode"], (mi, ki), mi, ni, ki)
            if a_load:
                load(a_row, A, m0, m, k0, k)
            b_row, b_load = place("b", s["b_mode"], (ki, ni), mi, ni, ki)
            if b_load:
                load(b_row, B, k0, k, n0, n)
            # The previous tile's STORE goes after the first loads of this one, so those loads
            # are issued while the previous tile still computes.
            flush_store()
            out.append(cmds.matmul(a_row, b_row, m, k, acc, accumulate=ki > 0))
            stats["mac_active"] += m
        pending_store = (cmds.store(acc, C.offset + m0 * C.stride + n0 * ob, m, n, C.stride,
                                    bias=bias, relu=relu, requant=requant is not None),
                         m * n * ob)
    flush_store()
    out.append(cmds.fence())
    for name in ("LOAD", "MATMUL", "STORE", "FENCE", "CONFIG"):
        stats[name] = 0
    for command in out:
        stats[cmds.decode(command)[0]] += 1
    stats["estimate"] = _estimate(c, M, K, N, s, bias)[0]
    return GemmPlan(config=c, M=M, K=K, N=N, bias=bool(bias), relu=bool(relu), requant=requant,
                    commands=out, layout=layout, size=size, schedule=s, stats=stats)


def pack_operands(plan, A, B, bias=None):
    """``{offset: bytes}`` of the operands for ``plan`` (checked against the configuration)."""
    c = plan.config
    A = check_operands("A", A, c)
    B = check_operands("B", B, c)
    if A.shape != (plan.M, plan.K) or B.shape != (plan.K, plan.N):
        raise ValueError(f"A and B must be {plan.M}x{plan.K} and {plan.K}x{plan.N}, not "
                         f"{A.shape} and {B.shape}")
    L = plan.layout
    out = {L["a"].offset: L["a"].pack(encode_elems(A, c.elem_bytes)),
           L["b"].offset: L["b"].pack(encode_elems(B, c.elem_bytes))}
    if plan.bias:
        if bias is None:
            raise ValueError("the plan has a bias; pass its values")
        bias = np.asarray(bias)
        if bias.shape != (plan.N,):
            raise ValueError(f"bias must have shape ({plan.N},), not {bias.shape}")
        out[plan.layout["bias"].offset] = encode_elems(bias, c.acc_elem_bytes)
    if "requant" in L:
        table = np.array([plan.requant.multiplier, plan.requant.shift], dtype=np.int64)
        out[L["requant"].offset] = encode_elems(table, REQUANT_ELEM_BYTES)
    return out


def config_command(requant):
    """The CONFIG command of a :class:`~mxe.sim.model.Requant` (per-column multipliers and
    shifts are loaded with LOAD to_requant; CONFIG then says per_channel)."""
    per = requant.per_column
    return cmds.config(0 if per else requant.multiplier, 0 if per else requant.shift,
                       zero_point=requant.zero_point, clamp=requant.clamp,
                       round_even=requant.round_even, per_channel=per)


def unpack_result(plan, data):
    """The result matrix from the bytes of region ``c``: int64 (requantized values, or raw
    ``acc_width`` values; uint64 for an unsigned 64-bit accumulator)."""
    c = plan.config
    C = plan.layout["c"]
    data = C.unpack(data)
    if plan.requant is not None:
        values = decode_elems(data, 1, 8, plan.requant.bounds(c)[0] < 0)
    else:
        values = decode_elems(data, C.elem_bytes, c.acc_width, c.signed)
    return values.reshape(plan.M, plan.N)


def counter_names(config=None):
    """Names of the performance counters (``CYCLES``, ...); with a ``config``, only those an
    engine built with it keeps (the others read 0 there)."""
    return [name for name, _port, _doc in present_counters(config)]


def descriptor_layout(plan):
    """Whether the GEMM descriptor can describe ``plan``'s layout: its per-column
    requantization tables (multipliers, then shifts) right after the bias, rows of ``N`` values.
    On an engine without unaligned DMA, :func:`plan_gemm` pads them to the bus when ``N * 4``
    bytes are not a multiple of it."""
    L = plan.layout
    if "requant" not in L:
        return True
    table = L["requant"]
    return table.stride == table.row_bytes and \
        ("bias" not in L or table.offset == L["bias"].end)


def descriptor_commands(plan, *, after_stores=False, fence=True):
    """``plan``'s GEMM as the hardware GEMM command (:mod:`mxe.hw.gemm_unit`): CONFIG (when
    requantizing), the GEMM_A/B/C descriptor for the plan's layout and options, FENCE (unless
    ``fence`` is false). ``after_stores`` sets GEMM_A's bit of that name: A is read only after
    every earlier STORE has finished. Only for an engine with the GEMM unit (``gemm_unit``), and a
    layout the descriptor describes (:func:`descriptor_layout`)."""
    from mxe.sim.gemm_model import descriptor
    if not descriptor_layout(plan):
        raise ValueError("the GEMM descriptor cannot describe this plan's padded per-column "
                         "tables: issue plan.commands")
    L = plan.layout
    out = [config_command(plan.requant)] if plan.requant is not None else []
    channel = L.get("bias", L.get("requant"))
    out += descriptor(plan.M, plan.K, plan.N, a_offset=L["a"].offset, a_stride=L["a"].stride,
                      b_offset=L["b"].offset, b_stride=L["b"].stride, c_offset=L["c"].offset,
                      c_stride=L["c"].stride, channel_offset=channel.offset if channel else 0,
                      bias=plan.bias, per_channel="requant" in L, relu=plan.relu,
                      requant=plan.requant is not None, after_stores=after_stores)
    return out + ([cmds.fence()] if fence else [])


def plan_chain(config, M, widths, *, requants, biases=None, relus=None, base=0, align=64):
    """Plans of consecutive GEMMs where each layer's A is the previous layer's C in memory:
    layer ``i`` is ``(M x widths[i]) @ (widths[i] x widths[i + 1])``. Every layer but the last
    must requantize (its 8-bit output is the next layer's input; 8-bit operands only). Layer
    ``i + 1``'s ``"a"`` region is layer ``i``'s ``"c"`` (the region ``plan_gemm`` gave it for
    A is left unused). Returns the list of :class:`GemmPlan`."""
    layers = len(widths) - 1
    if layers < 1:
        raise ValueError(f"widths must name at least one layer (two sizes), not {widths!r}")
    if config.elem_bytes != 1:
        raise ValueError("a chain feeds 8-bit outputs to the next layer: it needs 1-byte "
                         f"operands, not input_width {config.input_width}")
    if len(requants) != layers or any(r is None for r in requants[:-1]):
        raise ValueError("requants needs one entry per layer, None only for the last")
    biases = biases or [False] * layers
    relus = relus or [False] * layers
    plans, offset = [], base
    for i in range(layers):
        plan = plan_gemm(config, M, widths[i], widths[i + 1], bias=bool(biases[i]),
                         relu=bool(relus[i]), requant=requants[i], base=offset, align=align)
        if plans:
            prev = plans[-1].layout["c"]
            if prev.stride != plan.layout["a"].stride:
                raise ValueError(f"layer {i}: C and the next A have different strides")
            plan.layout["a"] = prev
        plans.append(plan)
        offset = plan.size
    return plans


def chain_operands(plans, A, layers):
    """The bytes to write for a :func:`plan_chain` (window offset to bytes): the first layer's
    ``A``, and every layer's ``B`` and ``bias`` (``layers``: dicts as
    :meth:`MXEDriver.gemm_chain` takes them). A later layer's A is the layer before's C, which
    the engine writes."""
    out = {}
    for i, (plan, layer) in enumerate(zip(plans, layers)):
        # A zero matrix stands in for later layers' A, whose bytes are left out.
        a = A if i == 0 else np.zeros((plan.M, plan.K), dtype=np.int64)
        for offset, data in pack_operands(plan, a, layer["B"], layer.get("bias")).items():
            if not i or offset != plan.layout["a"].offset:
                out[offset] = data
    return out


def chain_commands(plans, *, after_stores=True, wait=False):
    """The commands of a :func:`plan_chain`: each layer's CONFIG and descriptor, the layers
    after the first with ``after_stores`` (unless it is false: unsafe, for tests), one FENCE at
    the end; or, with ``wait``, a FENCE after every layer (the driver waits for done there,
    so no layer needs the bit: the way layers ran before it)."""
    out = []
    for i, plan in enumerate(plans):
        out += descriptor_commands(plan, after_stores=after_stores and i > 0 and not wait,
                                   fence=wait)
    return out if wait else out + [cmds.fence()]


# The cocotb-side driver --------------------------------------------------------------------

class MXEError(RuntimeError):
    """The engine stopped on an error."""

    def __init__(self, code, index, addr, command=None):
        self.code = code
        self.index = index
        self.addr = addr
        self.command = command
        what = f" ({cmds.describe(command)})" if command is not None else ""
        super().__init__(f"engine error {code.name} at command {index}{what}, "
                         f"ERR_ADDR {addr:#x}")


class MXETimeout(TimeoutError):
    """The engine did not finish in time."""


def _field(reg, name, word):
    f = REGMAP[reg]["fields"][name]
    return (word >> f["lsb"]) & ((1 << f["width"]) - 1)


def _bit(reg, name):
    return 1 << REGMAP[reg]["fields"][name]["lsb"]


def _columns_of(settings, cols):
    """A Requant or Quantization restricted to the output columns ``cols`` (a slice) where it
    has one value per column; ``None`` stays ``None``."""
    if settings is None:
        return None
    if isinstance(settings, Requant) or not hasattr(settings, "scale"):
        r = Requant.of(settings)
        if not r.per_column:
            return r
        return dataclasses.replace(r, multiplier=list(r.multiplier)[cols],
                                   shift=list(r.shift)[cols])
    changes = {name: np.asarray(getattr(settings, name))[cols]
               for name in ("scale", "b_zero_point")
               if getattr(settings, name) is not None and np.ndim(getattr(settings, name))}
    return dataclasses.replace(settings, **changes)


class MXEDriver:
    """Runs GEMMs on an MXE engine, simulated or on a board.

    Parameters
    ----------
    transport : mxe.sim.transport.Transport
        The link to the engine: :class:`~mxe.sim.transport.CocotbTransport` in a cocotb test,
        :class:`~mxe.sim.transport.UARTBoneTransport` to a board.
    window : (base, limit), optional
        The DMA window the driver sets and allocates in (memory byte addresses).
    use_irq : bool
        Wait for ``irq`` (with ``CTRL.irq_enable``) rather than polling ``STATUS``, where the
        transport can see ``irq``.
    timeout_cycles : int or None
        Engine cycles to wait for a FENCE before :class:`MXETimeout`; ``None`` estimates from
        the plan.

    Members
    -------
    last_plan
        What the last call ran: the :func:`plan_gemm` plan of :meth:`gemm` (of a convolution
        lowered on the host, its last GEMM's), the list of plans of :meth:`gemm_chain`, or
        the :class:`~mxe.sim.conv_model.ConvPlan` of a convolution that ran as descriptors.
    """

    def __init__(self, transport, *, window=None, use_irq=True, timeout_cycles=None, log=None):
        self.transport = transport
        self.window = window
        self.use_irq = use_irq and transport.has_irq
        self.timeout_cycles = timeout_cycles
        self.log = log or logging.getLogger("cocotb.mxe.driver")
        self.config = None
        self.version = None
        self.commands_sent = 0   # since the last soft reset: ERR_CMD_INDEX counts from here
        self.last_plan = None
        self.sent_log = []       # every command pushed since the last soft reset
        self.abort = False       # set to make push() stop after the command it is writing

    # Registers.

    async def read(self, reg):
        return await self.transport.read_reg(OFFSETS[reg])

    async def write(self, reg, value):
        await self.transport.write_reg(OFFSETS[reg], value)

    async def read64(self, name):
        lo = await self.read(f"{name}_LO")
        hi = await self.read(f"{name}_HI")
        return hi << 32 | lo

    async def write64(self, name, value):
        await self.write(f"{name}_LO", value & 0xFFFF_FFFF)
        await self.write(f"{name}_HI", value >> 32)

    async def counters(self):
        """The performance counters the engine has (after :meth:`discover`: without the
        ``perf_counters`` feature only ``CYCLES``): ``{name: value}``."""
        return {name: await self.read64(name) for name in counter_names(self.config)}

    async def status(self):
        word = await self.read("STATUS")
        return {name: _field("STATUS", name, word) for name in REGMAP["STATUS"]["fields"]}

    # Setup.

    async def discover(self):
        """Read ID, the configuration registers and CAPABILITIES; returns an
        :class:`EngineConfig` with the read-back parameters and features (others at their
        defaults)."""
        ident = await self.read("ID")
        magic, version = _field("ID", "magic", ident), _field("ID", "version", ident)
        if magic != ID_MAGIC:
            raise RuntimeError(f"no MXE engine: ID reads {ident:#010x}, expected magic "
                               f"{ID_MAGIC:#x} in bits 31:8")
        if not 1 <= version <= VERSION:
            raise RuntimeError(f"MXE register map version {version}, this driver speaks "
                               f"1 to {VERSION}")
        values = {}
        for reg, attr in CONFIG_REGISTERS:
            values[attr] = await self.read(reg)
        values["signed"] = bool(values["signed"])
        # Version 1 had no CAPABILITIES register, and every feature.
        capabilities = await self.read("CAPABILITIES") if version >= 2 else 0
        values.update(capabilities_of(version, capabilities))
        self.version = version
        self.config = EngineConfig(**values)
        return self.config

    async def set_window(self, base, limit):
        await self.write64("WIN_BASE", base)
        await self.write64("WIN_LIMIT", limit)
        self.window = (base, limit)

    async def start(self, *, irq=None):
        irq = self.use_irq if irq is None else irq
        await self.write("CTRL", _bit("CTRL", "start") | (_bit("CTRL", "irq_enable") if irq
                                                          else 0))

    async def soft_reset(self, *, timeout_cycles=100_000):
        """Soft reset, then wait for ``STATUS.busy == 0``; clears a stale done."""
        await self.write("CTRL", _bit("CTRL", "soft_reset")
                         | (_bit("CTRL", "irq_enable") if self.use_irq else 0))
        await self._wait(lambda st: not st["busy"], timeout_cycles, "busy to clear after a "
                         "soft reset", irq=False)
        await self.write("STATUS", _bit("STATUS", "done") | _bit("STATUS", "cmd_overflow"))
        self.commands_sent = 0
        self.sent_log = []

    # Commands.

    async def push(self, commands, *, timeout_cycles=1_000_000):
        """Push commands, never more than the queue has room for.

        Stops early (returns the number pushed) when the engine reports an error while the
        driver waits for room: a stopped engine never drains its queue. Raises
        :class:`MXETimeout` when the queue does not drain for ``timeout_cycles``.
        """
        depth = self.config.cmd_queue_depth
        room = 0
        pushed = 0
        for command in commands:
            if self.abort:
                return pushed
            start = await self.transport.cycles()
            while room == 0:
                room = max(0, depth - await self.read("CMD_LEVEL"))
                if room:
                    break
                st = await self.status()
                if st["error"]:
                    return pushed
                if await self.transport.cycles() - start > timeout_cycles:
                    raise MXETimeout(f"the command queue did not drain in {timeout_cycles} "
                                     f"cycles; STATUS {st}")
                await self.transport.idle(4)
            # CMD_W0..CMD_W3 are consecutive; the write of CMD_W3 pushes the command.
            await self.transport.write_regs(OFFSETS["CMD_W0"], cmds.to_words(command))
            room -= 1
            pushed += 1
            self.commands_sent += 1
            self.sent_log.append(command)
        return pushed

    async def _wait(self, ready, timeout_cycles, what, *, irq):
        start = await self.transport.cycles()
        while True:
            st = await self.status()
            if ready(st):
                return st
            elapsed = await self.transport.cycles() - start
            if elapsed > timeout_cycles:
                raise MXETimeout(f"timeout after {elapsed} cycles waiting for {what}; "
                                 f"STATUS {st}, CMD_LEVEL {await self.read('CMD_LEVEL')}")
            if irq:
                # Sleep until irq rises, or a while (then poll again: a missed edge must not hang).
                await self.transport.wait_irq(max(1, min(timeout_cycles - elapsed, 2000)))
            else:
                await self.transport.idle(16)

    async def wait_done(self, timeout_cycles):
        """Wait for STATUS.done, clear it, raise :class:`MXEError` if STATUS.error is set."""
        st = await self._wait(lambda st: st["done"], timeout_cycles, "STATUS.done",
                              irq=self.use_irq)
        await self.write("STATUS", _bit("STATUS", "done"))
        if st["error"]:
            await self.raise_error(st["error"])
        if st["cmd_overflow"]:
            raise RuntimeError("STATUS.cmd_overflow: a command was dropped (driver bug)")
        return st

    async def raise_error(self, code):
        index = await self.read("ERR_CMD_INDEX")
        addr = await self.read64("ERR_ADDR")
        try:
            code = ErrorCode(code)
        except ValueError:
            raise RuntimeError(f"STATUS.error reads {code}, not an ErrorCode") from None
        command = self.sent_log[index] if 0 <= index < len(self.sent_log) else None
        raise MXEError(code, index, addr, command)

    async def run(self, commands, *, timeout_cycles=None):
        """Push ``commands`` (each FENCE a point where the driver waits for done) and wait."""
        pieces, current = [], []
        for command in commands:
            current.append(command)
            if cmds.decode(command)[0] == "FENCE":
                pieces.append(current)
                current = []
        if current:
            current.append(cmds.fence())
            pieces.append(current)
        await self.start()
        for piece in pieces:
            # push() stops early when the engine stopped on an error; wait_done reports it.
            await self.push(piece)
            await self.wait_done(timeout_cycles or self._timeout(piece))

    def _timeout(self, commands):
        if self.timeout_cycles:
            return self.timeout_cycles
        c = self.config
        work = 0
        for command in commands:
            name, f = cmds.decode(command)
            if name == "MATMUL":
                work += f["m"] + 2 * (c.rows + c.cols) + 20
            elif name in ("LOAD", "STORE"):
                work += f["rows"] * (f["elems"] * 8 // c.axi_bytes + 40) + 100
        return 20 * work + 20_000

    # GEMM.

    def _region(self, plan):
        base, limit = self.window
        if base + plan.size > limit:
            raise ValueError(f"the GEMM needs {plan.size} bytes; the window has {limit - base}")
        return base

    def gemm_commands(self, plan, *, descriptor=False):
        """The commands :meth:`gemm` pushes for ``plan``: the hardware GEMM descriptor
        (:func:`descriptor_commands`) if ``descriptor`` and the engine has the GEMM unit
        (``CAPABILITIES.gemm_unit``, read by :meth:`discover`); otherwise the plan's
        LOAD/MATMUL/STORE stream, as an engine without the unit refuses GEMM_A/B/C (and as the
        descriptor cannot describe padding in the per-column tables: see
        :func:`descriptor_layout`)."""
        if descriptor and self.config.gemm_unit and descriptor_layout(plan):
            return descriptor_commands(plan)
        return plan.commands

    async def conv2d(self, x, w, *, stride=1, padding=0, dilation=1, groups=1, bias=None,
                     relu=False, requant=None, quant=None, descriptor=False,
                     conv_descriptor=True):
        """A 2-D convolution on the engine: as convolution descriptors
        (:mod:`mxe.hw.conv_unit`, one per image and group) where the engine has the convolution
        unit and takes the geometry, otherwise as GEMMs of its patches (one per group).

        Parameters
        ----------
        x : int array (N, H, W, C)
            NHWC input, in the configured range (with ``quant``: of its ``a_type``).
        w : int array (Cout, KH, KW, C / groups)
        stride, dilation : int or (int, int)
        padding : int, (pad_h, pad_w) or (top, left, bottom, right)
            Filled with the input's zero point (``quant.a_zero_point``; 0 without ``quant``),
            so that the padding is a real zero.
        groups : int
            Divides C and Cout; ``groups == C`` is depthwise (C GEMMs of one output column).
        bias, relu, requant, quant, descriptor
            As for :meth:`gemm`, per output channel where they have one value per column
            (``descriptor``: the GEMMs of a convolution lowered on the host).
        conv_descriptor : bool
            Use the convolution unit where the engine has it (``CAPABILITIES.conv_unit``, with
            ``unaligned_dma``: it gathers pixels at any byte offset) and the geometry fits it
            (:func:`mxe.sim.conv_model.plan_conv`); ``False``: always lower on the host. A
            quantized convolution whose weight zero points make the weights leave int8 is
            lowered on the host too.

        Returns
        -------
        (y, counters) : (array (N, OH, OW, Cout), dict)
            The output, and the counters' deltas summed over the GEMMs.
        """
        from mxe.sim.conv import ConvGeometry, lower_groups
        x, w = np.asarray(x), np.asarray(w)
        if x.ndim != 4 or w.ndim != 4:
            raise ValueError(f"x must be (N, H, W, C) and w (Cout, KH, KW, C / groups), not "
                             f"{x.shape} and {w.shape}")
        geometry = ConvGeometry.of(w.shape[1:3], stride=stride, padding=padding,
                                   dilation=dilation, groups=groups)
        N, H, W, _ = x.shape
        oh, ow = geometry.output_size(H, W)
        pad_value = 0
        if quant is not None:
            if np.ndim(quant.a_zero_point):
                raise ValueError("a convolution's input zero point is per tensor")
            pad_value = int(quant.a_zero_point)
        if self.config is None:
            await self.discover()
        if conv_descriptor and self.config.conv_unit and self.config.unaligned_dma:
            done = await self._conv_descriptor(x, w, geometry, bias=bias, relu=relu,
                                               requant=requant, quant=quant)
            if done is not None:
                return done
        # Groups narrower than the array go into one GEMM each as many as it has columns
        # (block-diagonal weights, the weights' zero point between the blocks).
        pack = max(1, self.config.cols // (w.shape[0] // geometry.groups))
        fill = 0 if quant is None else quant.b_zero_point
        y, totals = None, {}
        for A, B, cols in lower_groups(x, w, geometry, pad_value=pad_value, pack=pack,
                                       fill=fill):
            out, counters = await self.gemm(
                A, B, bias=None if bias is None else np.asarray(bias)[cols], relu=relu,
                requant=_columns_of(requant, cols), quant=_columns_of(quant, cols),
                descriptor=descriptor)
            if y is None:
                y = np.empty((N * oh * ow, w.shape[0]), dtype=out.dtype)
            y[:, cols] = out
            for name, value in counters.items():
                totals[name] = totals.get(name, 0) + value
        return y.reshape(N, oh, ow, w.shape[0]), totals

    async def _conv_descriptor(self, x, w, geometry, *, bias, relu, requant, quant,
                               pad_value=0):
        """:meth:`conv2d` through convolution descriptors, the padding ``pad_value`` (without
        ``quant``); ``None`` if the engine would refuse them (then the caller lowers on the
        host)."""
        from mxe.sim.conv_model import expand, plan_conv
        from mxe.sim.quant import _to_int8
        out_dtype = None
        if quant is not None:
            # The quantized convolution as the engine computes it, per group as lower() maps a
            # GEMM: the input's zero point goes into the bias, the weights' zero points into
            # the weights (if they stay int8), the scales into per-channel requantization.
            cout, kh, kw, cg = w.shape
            per = cout // geometry.groups
            w_eng = np.empty(w.shape, dtype=np.int64)
            biases, multipliers, shifts, requants = [], [], [], []
            for g in range(geometry.groups):
                cols = slice(g * per, (g + 1) * per)
                B = w[cols].reshape(per, kh * kw * cg).T
                low = lower(np.zeros((1, B.shape[0]), dtype=np.int64), B,
                            _columns_of(quant, cols), self.config,
                            bias=None if bias is None else np.asarray(bias)[cols])
                if low.parts != 1:
                    return None
                w_eng[cols] = low.B.T.reshape(per, kh, kw, cg)
                biases.append(low.bias)
                requants.append(low.requant)
                if low.requant is not None:
                    r = low.requant
                    multipliers += list(r.multiplier) if r.per_column else [r.multiplier] * per
                    shifts += list(r.shift) if r.per_column else [r.shift] * per
                out_dtype = low.out_dtype
            x = _to_int8("x", x, quant.a_type)
            pad_value = int(_to_int8("a_zero_point", quant.a_zero_point, quant.a_type))
            w = w_eng
            bias = np.concatenate(biases)
            bias = bias if bias.any() else None
            requant = None
            if requants[0] is not None:
                requant = dataclasses.replace(requants[0], multiplier=multipliers, shift=shifts)
        r = None if requant is None else Requant.of(requant)
        plan = plan_conv(self.config, x, w, geometry, bias=bias, relu=relu, requant=r,
                         pad_value=pad_value)
        if plan is None:
            return None
        base, limit = self.window
        end = max(off + len(blob) for off, blob in plan.blobs.items())
        end = max(end, plan.out_offset + plan.out_bytes)
        if base + end > limit:
            return None
        self.last_plan = plan
        for offset, blob in plan.blobs.items():
            await self.transport.write_mem(base + offset, blob)
        subs = []
        for i, command in enumerate(plan.commands):
            if cmds.decode(command)[0] == "CONV_C":
                subs += expand(self.config, plan.commands[i - 2:i + 1])
        self.log.info("convolution %s x %s, %s: %d descriptor(s), %d sub-commands", x.shape,
                      w.shape, geometry, plan.descriptors, len(subs))
        before = await self.counters()
        await self.run(plan.commands, timeout_cycles=self._timeout(subs))
        after = await self.counters()
        data = await self.transport.read_mem(base + plan.out_offset, plan.out_bytes)
        if r is None:
            values = decode_elems(data, plan.out_elem_bytes, self.config.acc_width,
                                  self.config.signed)
        else:
            values = decode_elems(data, 1, 8, r.bounds(self.config)[0] < 0)
        y = values.reshape(plan.out_shape)
        if out_dtype is not None:
            y = y.astype(out_dtype)
        return y, {k: (after[k] - before[k]) % (1 << 64) for k in after}

    async def gemm(self, A, B, bias=None, relu=False, requant=None, *, quant=None, base=0,
                   align=64, descriptor=False, **plan_options):
        """``postprocess(A @ B)`` on the engine.

        Parameters
        ----------
        A : int array (M, K), B : int array (K, N)
            Operands in the configured range (with ``quant``: of its operand types).
        bias : int array (N,), optional
        relu : bool
        requant : None, Requant or (multiplier, shift)
        quant : Quantization, optional
            A quantized GEMM as ONNX and TFLite state it (float scales, zero points, int8 or
            uint8 operands and outputs), instead of ``requant``: lowered exactly onto the engine
            by :func:`mxe.sim.quant.lower`; the result comes back in the output type.
        base, align : int
            Where in the window the driver places the operands (see :func:`plan_gemm`).
        descriptor : bool
            Issue the GEMM as one hardware GEMM descriptor where the engine has the GEMM unit
            (its own tiling); without the unit, and by default, as the plan's command stream
            (:meth:`gemm_commands`).
        plan_options
            More keyword arguments of :func:`plan_gemm` (``order``, ``bias_fence``, ``force``).

        Returns
        -------
        (C, counters) : (int64 array (M, N), dict)
            The result (requantized 8-bit values, or raw accumulator values; with ``quant``,
            in its output type: int8, uint8, or int32 without a scale) and the deltas of
            the engine's counters over this GEMM (only ``CYCLES`` without ``perf_counters``).

        Raises
        ------
        MXEError
            The engine stopped on an error (code, command index, address).
        MXETimeout
        """
        if self.config is None:
            await self.discover()
        if self.window is None:
            raise ValueError("set_window() first")
        out_dtype = None
        if quant is not None:
            if requant is not None:
                raise ValueError("give requant or quant, not both")
            low = lower(A, B, quant, self.config, bias=bias)
            A, B, requant, out_dtype = low.A, low.B, low.requant, low.out_dtype
            bias = low.bias if low.bias.any() else None
            if low.parts > 1:
                self.log.info("quantized GEMM: zero points split B - zb (or A - za) into %d "
                              "int8 parts, K %d -> %d", low.parts, A.shape[1] // low.parts,
                              A.shape[1])
        A, B = np.asarray(A), np.asarray(B)
        if A.ndim != 2 or B.ndim != 2 or A.shape[1] != B.shape[0]:
            raise ValueError(f"A and B must be (M, K) and (K, N), not {A.shape} and {B.shape}")
        M, K = A.shape
        N = B.shape[1]
        if requant is not None and self.version < 3:
            r = Requant.of(requant)
            if r.zero_point or r.clamp is not None or r.round_even:
                raise ValueError(f"requant {r} needs a zero point, clamp or rounding mode, "
                                 f"which an engine of register map version {self.version} "
                                 f"does not have (3 or later)")
        plan = plan_gemm(self.config, M, K, N, bias=bias is not None, relu=relu,
                         requant=requant, base=base, align=align, **plan_options)
        self.last_plan = plan
        win = self._region(plan)
        for offset, data in pack_operands(plan, A, B, bias).items():
            await self.transport.write_mem(win + offset, data)
        commands = self.gemm_commands(plan, descriptor=descriptor)
        before = await self.counters()
        self.log.info("GEMM %dx%dx%d: %s, %d commands%s", M, K, N,
                      plan.schedule if commands is plan.commands else "descriptor",
                      len(commands), " (no GEMM unit: LOAD/MATMUL/STORE)"
                      if descriptor and commands is plan.commands else "")
        # A descriptor's timeout follows the work of the plan's stream, which it does too.
        await self.run(commands, timeout_cycles=None if commands is plan.commands
                       else self._timeout(plan.commands))
        after = await self.counters()
        C = plan.layout["c"]
        result = unpack_result(plan, await self.transport.read_mem(win + C.offset, C.nbytes))
        deltas = {k: (after[k] - before[k]) % (1 << 64) for k in after}
        if out_dtype is not None:
            result = result.astype(out_dtype)
        return result, deltas

    async def gemm_chain(self, A, layers, *, after_stores=True, wait=False, base=0, align=64):
        """Consecutive GEMMs, each layer's input the previous layer's output, pushed back to
        back as hardware GEMM descriptors: the next layer's set-up and weight loads overlap
        the previous layer's last STOREs, and its A is read only once they have finished
        (GEMM_A ``after_stores``), so no wait for done sits between the layers.

        Parameters
        ----------
        A : int array (M, K)
            The first layer's input (8-bit operands).
        layers : sequence of dict
            Per layer: ``B`` (K x N, the next layer's K is this N), and optionally ``bias``,
            ``relu`` and ``requant`` (required but on the last layer: the 8-bit output feeds
            the next layer).
        after_stores : bool
            Chain with the bit (default). False drops it: the layers then race (for tests).
        wait : bool
            A FENCE after every layer and a wait for done there: the way to run layers before
            the bit, for comparison.

        Returns
        -------
        (outputs, counters) : (list of int64 arrays (M, N_i), dict)
            Every layer's output and the counters' deltas over the whole chain.
        """
        if self.config is None:
            await self.discover()
        if self.window is None:
            raise ValueError("set_window() first")
        if not self.config.gemm_unit:
            raise ValueError("gemm_chain needs the GEMM unit (CAPABILITIES.gemm_unit)")
        A = np.asarray(A)
        widths = [A.shape[1]] + [np.asarray(layer["B"]).shape[1] for layer in layers]
        requants = [None if layer.get("requant") is None else Requant.of(layer["requant"])
                    for layer in layers]
        plans = plan_chain(self.config, A.shape[0], widths, requants=requants,
                           biases=[layer.get("bias") is not None for layer in layers],
                           relus=[bool(layer.get("relu")) for layer in layers],
                           base=base, align=align)
        win = self._region(plans[-1])
        for offset, data in chain_operands(plans, A, layers).items():
            await self.transport.write_mem(win + offset, data)
        commands = chain_commands(plans, after_stores=after_stores, wait=wait)
        self.last_plan = plans
        before = await self.counters()
        await self.run(commands, timeout_cycles=sum(self._timeout(p.commands) for p in plans))
        after = await self.counters()
        outputs = []
        for plan in plans:
            C = plan.layout["c"]
            outputs.append(unpack_result(plan, await self.transport.read_mem(win + C.offset,
                                                                              C.nbytes)))
        return outputs, {k: (after[k] - before[k]) % (1 << 64) for k in after}
