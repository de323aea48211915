"""Reference of the hardware GEMM command (:mod:`mxe.hw.gemm_unit`): the descriptor encoding,
the tiling the unit chooses and the exact sub-command stream it generates.

The gateware must produce exactly :func:`expand`'s stream (``tests/test_gemm_unit.py`` checks it
command by command), and :class:`mxe.sim.engine_model.EngineModel` executes a descriptor by
running that stream, so end-to-end tests check memory images against it.

An engine built without the unit (``gemm_unit=False``) has no expansion: its controller refuses
each of GEMM_A/B/C with ``UNSUPPORTED`` (so does the engine model), and :func:`expand_fields`
raises ``ValueError`` for such a configuration.
"""

from dataclasses import dataclass

from mxe.hw.config import REQUANT_ELEM_BYTES
from mxe.hw.gemm_unit import STRIP_CHOICES, TILES_AHEAD
from mxe.hw.isa import ErrorCode
from mxe.sim import commands as cmds


__all__ = ["descriptor", "GemmSchedule", "schedule", "expand", "expand_fields",
           "STRIP_CHOICES"]


def descriptor(M, K, N, *, a_offset, a_stride, b_offset, b_stride, c_offset, c_stride,
               channel_offset=0, bias=False, per_channel=False, relu=False, requant=False,
               after_stores=False):
    """The three commands (GEMM_A, GEMM_B, GEMM_C) of a GEMM descriptor; GEMM_C starts it.

    ``requant`` selects 8-bit requantized output as the last CONFIG says; at ``channel_offset``
    (a window offset) are, with ``bias``, ``N`` accumulator-sized bias values, then, with
    ``per_channel``, ``N`` int32 multipliers and ``N`` int32 shifts. ``after_stores`` chains
    the GEMM after the commands before it: A is read only after every earlier STORE has
    finished, so A may be the C of a GEMM still draining (no FENCE or wait in between)."""
    return [
        cmds.encode("GEMM_A", m=M, k=K, n=N, bias=bool(bias), relu=bool(relu),
                    requant=bool(requant), per_channel=bool(per_channel),
                    after_stores=bool(after_stores), channel_offset=channel_offset),
        cmds.encode("GEMM_B", a_offset=a_offset, a_stride=a_stride, b_offset=b_offset),
        cmds.encode("GEMM_C", b_stride=b_stride, c_offset=c_offset, c_stride=c_stride),
    ]


def _ceil_div(a, b):
    return -(-a // b)


@dataclass(frozen=True)
class GemmSchedule:
    """The tiling the GEMM unit chooses (see :mod:`mxe.hw.gemm_unit`)."""
    kr: int       # weight rows per K tile: min(rows, K)
    kt: int       # K tiles
    nc: int       # columns per N tile: min(cols, N)
    nt: int       # N tiles
    mc: int       # rows per M chunk (balanced)
    mt: int       # M chunks
    strips: int   # B places in the scratchpad ring
    whole: bool   # a place holds a strip of K rows (else one tile of kr rows)
    panel: int    # scratchpad rows of one A panel: kt * mc

    @property
    def strip_rows(self):
        return self.kt * self.kr if self.whole else self.kr

    @property
    def b_base(self):
        return 2 * self.panel


def schedule(config, M, K, N):
    """``(GemmSchedule, None)`` or ``(None, ErrorCode)`` for a descriptor's dimensions."""
    c = config
    if M == 0 or K == 0 or N == 0:
        return None, ErrorCode.BAD_DIM
    kr, nc = min(c.rows, K), min(c.cols, N)
    kt, nt = _ceil_div(K, kr), _ceil_div(N, nc)
    for strips, whole in STRIP_CHOICES:
        rows_b = strips * (kt * kr if whole else kr)
        if rows_b >= c.spad_depth:
            continue
        cap = min((c.spad_depth - rows_b) // (2 * kt), M, c.acc_depth // 2)
        if cap >= min(M, c.rows) or (not whole and cap > 0):
            mt = _ceil_div(M, cap)
            mc = _ceil_div(M, mt)
            return GemmSchedule(kr, kt, nc, nt, mc, mt, strips, whole, kt * mc), None
    return None, ErrorCode.BAD_ADDR


def expand_fields(config, f):
    """The sub-commands for decoded descriptor fields ``f`` (GEMM_A, GEMM_B and GEMM_C fields
    merged). A refused descriptor expands to one command the controller refuses with the
    descriptor's error: a MATMUL with ``m = 0`` (BAD_DIM) or one past the scratchpad (BAD_ADDR).

    Raises ``ValueError`` for a configuration without the GEMM unit.
    """
    c = config
    if not c.gemm_unit:
        raise ValueError("the engine has no GEMM unit (gemm_unit=False): it refuses GEMM_A/B/C "
                         "with UNSUPPORTED; issue LOAD/MATMUL/STORE (plan_gemm) instead")
    M, K, N = f["m"], f["k"], f["n"]
    s, error = schedule(c, M, K, N)
    if error == ErrorCode.BAD_DIM:
        return [cmds.matmul(0, 0, 0, 1, 0)]
    if error == ErrorCode.BAD_ADDR:
        return [cmds.matmul(c.spad_depth, 0, 1, 1, 0)]
    eb = c.elem_bytes
    ob = 1 if f["requant"] else c.acc_elem_bytes
    mask = (1 << 32) - 1        # memory offsets wrap at 32 bits, as in the gateware
    # The per-column multipliers follow the bias values, if any.
    rq_base = (f["channel_offset"] + (N * c.acc_elem_bytes if f["bias"] else 0)) & mask
    out = []
    pending = None
    p = 0                       # output tile index
    loads_b = 0                 # B loads so far: the ring position
    ahead = s.whole and s.nt > 1   # strips load one output tile ahead (with nt = 1, B stays)
    # Single B tiles in MATMUL order; their LOADs run TILES_AHEAD MATMULs ahead.
    tiles = [] if s.whole else [(ki * s.kr, ni * s.nc, min(s.kr, K - ki * s.kr))
                                for _mi in range(s.mt) for ni in range(s.nt)
                                for ki in range(s.kt)]
    matmuls = 0
    chained = bool(f.get("after_stores", 0))

    def load_b(k0, n0, rows):
        nonlocal loads_b
        place = s.b_base + (loads_b % s.strips) * s.strip_rows
        loads_b += 1
        out.append(cmds.load(place, (f["b_offset"] + k0 * f["b_stride"] + n0 * eb) & mask, rows,
                             min(s.nc, N - n0), f["b_stride"]))
        return place

    # A chained GEMM (after_stores) with whole strips sends its first strip ahead of the bias
    # LOADs and of A's first LOAD, which wait for the earlier STOREs.
    early = chained and s.whole
    if early:
        strip = load_b(0, 0, K)
    for mi in range(s.mt):
        m0 = mi * s.mc
        m = min(s.mc, M - m0)
        panel = (mi % 2) * s.panel
        other = ((mi + 1) % 2) * s.panel
        m_next = min(s.mc, M - m0 - s.mc)
        pf_cnt = pf_q = 0
        for ni in range(s.nt):
            n0 = ni * s.nc
            n = min(s.nc, N - n0)
            acc = (p % 2) * s.mc
            if (f["bias"] or f["per_channel"]) and (s.nt > 1 or p == 0):
                if pending is not None:
                    out.append(pending)
                    pending = None
                if f["bias"]:
                    out.append(cmds.load(0, (f["channel_offset"] + n0 * c.acc_elem_bytes) & mask,
                                         1, n, 0, to_bias=True))
                if f["per_channel"]:
                    out.append(cmds.load(0, (rq_base + n0 * REQUANT_ELEM_BYTES) & mask, 2, n,
                                         N * REQUANT_ELEM_BYTES, to_requant=True))
            for ki in range(s.kt):
                k0 = ki * s.kr
                k = min(s.kr, K - k0)
                a_row = panel + ki * s.mc
                if mi == 0 and ni == 0:
                    out.append(cmds.load(a_row, (f["a_offset"] + k0 * eb) & mask, m, k,
                                         f["a_stride"], after_stores=chained and ki == 0))
                if s.whole and p == 0 and ki == 0 and not early:
                    strip = load_b(k0, n0, K)
                while loads_b < min(len(tiles), matmuls + TILES_AHEAD):
                    load_b(*tiles[loads_b])
                if not s.whole:
                    strip = s.b_base + (matmuls % s.strips) * s.strip_rows
                matmuls += 1
                w_row = strip + k0 if s.whole else strip
                out.append(cmds.matmul(a_row, w_row, m, k, acc, accumulate=ki > 0))
                if ahead and p + 1 < s.mt * s.nt and ki == (s.kt - 1 if p == 0 else 0):
                    n0_next = 0 if ni == s.nt - 1 else n0 + s.nc
                    strip_next = load_b(0, n0_next, K)
                if ki == 0 and pending is not None:
                    out.append(pending)
                    pending = None
                if pf_cnt == s.nt - 1:
                    if mi + 1 < s.mt:
                        q0 = pf_q * s.kr
                        out.append(cmds.load(other + pf_q * s.mc,
                                             (f["a_offset"] + (m0 + s.mc) * f["a_stride"]
                                              + q0 * eb) & mask,
                                             m_next, min(s.kr, K - q0), f["a_stride"]))
                    pf_cnt, pf_q = 0, pf_q + 1
                else:
                    pf_cnt += 1
            if ahead:
                strip = strip_next
            pending = cmds.store(acc, (f["c_offset"] + m0 * f["c_stride"] + n0 * ob) & mask, m,
                                 n, f["c_stride"], bias=f["bias"], relu=f["relu"],
                                 requant=f["requant"])
            p += 1
    out.append(pending)
    return out


def expand(config, commands):
    """The sub-commands of a descriptor given as its three encoded commands."""
    fields = {}
    for command in commands:
        name, f = cmds.decode(command)
        if not name.startswith("GEMM_"):
            raise ValueError(f"not a GEMM descriptor command: {cmds.describe(command)}")
        fields.update({k: v for k, v in f.items() if k != "opcode"})
    return expand_fields(config, fields)


def traffic(config, M, K, N, *, requant=False, bias=False):
    """DMA bytes ``(read, written)`` of the expansion (no bias reloads counted twice)."""
    s, error = schedule(config, M, K, N)
    if error is not None:
        return 0, 0
    eb = config.elem_bytes
    ob = 1 if requant else config.acc_elem_bytes
    # B once per M chunk (whole strips or tiles), or once if one strip holds all of it.
    rd = M * K * eb + (1 if s.whole and s.nt == 1 else s.mt) * K * N * eb
    if bias:
        rd += (s.mt * N if s.nt > 1 else N) * config.acc_elem_bytes
    return rd, M * N * ob
