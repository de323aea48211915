"""Reference of the hardware convolution command (:mod:`mxe.hw.conv_unit`): the descriptor
encoding, the schedule the unit chooses and the exact sub-command stream it generates.

The gateware must produce exactly :func:`expand_fields`'s stream, and
:class:`mxe.sim.engine_model.EngineModel` executes a descriptor by running that stream. The
oracle of the tests is :func:`mxe.sim.conv.conv2d_reference` (direct loops), not this module.

The schedule (see the architecture page, "The convolution unit"):

* ``kr = rows`` channels per channel block, ``cb = ceil(C / kr)`` blocks (the last has
  ``C - (cb - 1) * kr``); ``nc = min(cols, N)`` output channels per pass, ``nt = ceil(N / nc)``
  passes.
* The scratchpad holds a **ring** of ``L = Eh + 2 * stride_h`` padded input lines
  (``Eh = (KH - 1) * dil_h + 1``), one slot of ``S = stride_w * cb * Q`` rows each
  (``Q = ceil(Wp / stride_w)``, ``Wp`` the padded width): a slot row is one pixel's channel block,
  pixels grouped by channel block, then by column phase ``iw mod stride_w``, then ``iw //
  stride_w``. So the pixels one kernel tap reads for a whole output line are consecutive
  scratchpad rows, and a MATMUL with ``m = OW`` streams them. Then one slot of padding
  (every row the zero point), then the weights of one pass (``KH * KW * cb * kr`` rows;
  two places when ``nt > 1``).
* Each input line is loaded once per pass: per channel block and column phase one LOAD of
  ``ceil((W - x) / stride_w)`` pixels at a stride of ``stride_w * in_pitch`` bytes. The left and
  right padding of a slot is loaded from the zero-point row (stride 0) the first time a slot is
  used; lines of padding (top, bottom) are never loaded: their taps read the padding slot.
  Lines that no window covers (``stride_h > Eh``) are skipped.
* Output line ``oy`` of pass ``j``: ``KH * KW * cb`` MATMULs of ``OW`` rows into one of two
  accumulator places (alternating over all lines of all passes), the first overwriting; after
  its MATMUL ``HOOK`` (or its last), the input lines the next output line needs and the STORE of
  the line before (which may be the last pass's last line), preceded by its pass's bias and
  multipliers if the post-processor does not hold them yet. The ring goes on across passes:
  a pass's padded line 0 takes the slot after the last pass's last line.
"""

from dataclasses import dataclass

from mxe.hw.config import REQUANT_ELEM_BYTES
from mxe.hw.conv_unit import DILATION_MAX, HOOK, KERNEL_MAX, STRIDE_MAX
from mxe.hw.isa import ErrorCode
from mxe.sim import commands as cmds


__all__ = ["descriptor", "ConvSchedule", "schedule", "expand_fields", "expand", "traffic",
           "KERNEL_MAX", "STRIDE_MAX", "DILATION_MAX", "PAD_MAX"]

#: Padding per side at most (the 4-bit fields of CONV_B).
PAD_MAX = 15


def descriptor(*, h, w, c, n, kernel, stride=(1, 1), dilation=(1, 1), pads=(0, 0, 0, 0),
               in_offset, in_pitch, w_offset, w_stride, out_offset, out_pitch, zp_offset,
               channel_offset=0, bias=False, per_channel=False, relu=False, requant=False):
    """The three commands (CONV_A, CONV_B, CONV_C) of a convolution descriptor.

    ``pads`` in ONNX's order (top, left, bottom, right); offsets are window offsets."""
    top, left, bottom, right = pads
    return [
        cmds.encode("CONV_A", kh=kernel[0], kw=kernel[1], stride_h=stride[0],
                    stride_w=stride[1], dil_h=dilation[0], dil_w=dilation[1], h=h, w=w, c=c,
                    n=n, bias=bool(bias), relu=bool(relu), requant=bool(requant),
                    per_channel=bool(per_channel), channel_offset=channel_offset),
        cmds.encode("CONV_B", pad_top=top, pad_bottom=bottom, pad_left=left, pad_right=right,
                    in_offset=in_offset, w_offset=w_offset, zp_offset=zp_offset),
        cmds.encode("CONV_C", in_pitch=in_pitch, out_offset=out_offset, w_stride=w_stride,
                    out_pitch=out_pitch),
    ]


def _ceil_div(a, b):
    return -(-a // b)


@dataclass(frozen=True)
class ConvSchedule:
    """The sizes the convolution unit derives from a descriptor."""
    oh: int       # output lines
    ow: int       # output pixels per line
    eh: int       # input lines one output line spans: (KH - 1) * dil_h + 1
    kr: int       # channels per channel block (rows)
    cb: int       # channel blocks
    kc_last: int  # channels of the last block
    nc: int       # output channels per pass
    nt: int       # passes
    q: int        # slot rows per channel block and column phase: ceil(Wp / stride_w)
    slot: int     # rows of one ring slot: stride_w * cb * q
    lines: int    # ring slots: eh + 2 * stride_h
    wplace: int   # rows of one pass's weights: KH * KW * cb * kr

    @property
    def zp_base(self):
        return self.lines * self.slot

    @property
    def w_base(self):
        return (self.lines + 1) * self.slot

    @property
    def rows_used(self):
        return self.w_base + (2 if self.nt > 1 else 1) * self.wplace


def schedule(config, f):
    """``(ConvSchedule, None)`` or ``(None, ErrorCode)`` for descriptor fields ``f``."""
    c = config
    kh, kw, sh, sw, dh, dw = (f[k] for k in ("kh", "kw", "stride_h", "stride_w", "dil_h",
                                             "dil_w"))
    H, W, C, N = f["h"], f["w"], f["c"], f["n"]
    if (0 in (H, W, C, N, kh, kw) or kh > KERNEL_MAX or kw > KERNEL_MAX
            or not 1 <= sh <= STRIDE_MAX or not 1 <= sw <= STRIDE_MAX
            or not 1 <= dh <= DILATION_MAX or not 1 <= dw <= DILATION_MAX):
        return None, ErrorCode.BAD_DIM
    eh, ew = (kh - 1) * dh + 1, (kw - 1) * dw + 1
    hp = f["pad_top"] + H + f["pad_bottom"]
    wp = f["pad_left"] + W + f["pad_right"]
    if eh > hp or ew > wp:
        return None, ErrorCode.BAD_DIM
    oh, ow = (hp - eh) // sh + 1, (wp - ew) // sw + 1
    kr = c.rows
    cb = _ceil_div(C, kr)
    nc = min(c.cols, N)
    nt = _ceil_div(N, nc)
    q = _ceil_div(wp, sw)
    slot = sw * cb * q
    s = ConvSchedule(oh=oh, ow=ow, eh=eh, kr=kr, cb=cb, kc_last=C - (cb - 1) * kr, nc=nc,
                     nt=nt, q=q, slot=slot, lines=eh + 2 * sh, wplace=kh * kw * cb * kr)
    if s.rows_used > c.spad_depth or slot > 0xFFFF or 2 * ow > c.acc_depth:
        return None, ErrorCode.BAD_ADDR
    return s, None


def expand_fields(config, f):
    """The sub-commands for decoded descriptor fields ``f`` (CONV_A, CONV_B and CONV_C fields
    merged). A refused descriptor expands to one command the controller refuses with the
    descriptor's error: a MATMUL with ``m = 0`` (BAD_DIM) or one past the scratchpad (BAD_ADDR).

    Raises ``ValueError`` for a configuration without the convolution unit.
    """
    c = config
    if not c.conv_unit:
        raise ValueError("the engine has no convolution unit (conv_unit=False): it refuses "
                         "CONV_A/B/C with UNSUPPORTED; lower the convolution to GEMMs instead")
    s, error = schedule(c, f)
    if error == ErrorCode.BAD_DIM:
        return [cmds.matmul(0, 0, 0, 1, 0)]
    if error == ErrorCode.BAD_ADDR:
        return [cmds.matmul(c.spad_depth, 0, 1, 1, 0)]
    mask = (1 << 32) - 1
    eb, ab = c.elem_bytes, c.acc_elem_bytes
    ob = 1 if f["requant"] else ab
    kh, kw, sh, sw, dh, dw = (f[k] for k in ("kh", "kw", "stride_h", "stride_w", "dil_h",
                                             "dil_w"))
    H, W, C, N = f["h"], f["w"], f["c"], f["n"]
    pt, pl, pr = f["pad_top"], f["pad_left"], f["pad_right"]
    pitch = f["in_pitch"]
    zp_e = min(s.kr, C)
    rq_base = (f["channel_offset"] + (N * ab if f["bias"] else 0)) & mask
    out = []
    filled = [False] * s.lines

    def kc(cbi):
        return s.kc_last if cbi == s.cb - 1 else s.kr

    def zp_load(spad, rows):
        out.append(cmds.load(spad, f["zp_offset"], rows, zp_e, 0))

    def load_line(ih, slot):
        r = ih - pt
        base = slot * s.slot
        fill = (pl or pr) and not filled[slot]
        filled[slot] = True
        for cbi in range(s.cb):
            for x in range(sw):
                p, q0 = (x + pl) % sw, (x + pl) // sw
                nrows = _ceil_div(W - x, sw) if x < W else 0
                phase = base + (cbi * sw + p) * s.q
                if fill and q0:
                    zp_load(phase, q0)
                if nrows:
                    off = f["in_offset"] + r * W * pitch + x * pitch + cbi * s.kr * eb
                    out.append(cmds.load(phase + q0, off & mask, nrows, kc(cbi), sw * pitch))
                rest = s.q - q0 - nrows
                if fill and pr and rest:
                    zp_load(phase + q0 + nrows, rest)

    def load_lines(upto, cursor, slot0):
        while cursor < upto:
            if pt <= cursor < pt + H and cursor % sh < s.eh:
                load_line(cursor, (slot0 + cursor) % s.lines)
            cursor += 1
        return cursor

    pending = None          # (STORE, its pass, bias offset, requant offset, channels)
    bias_for = None         # the pass whose bias and multipliers the post-processor holds

    def emit_pending():
        nonlocal pending, bias_for
        store, j, bias_off, rq_off, n = pending
        if (f["bias"] or f["per_channel"]) and bias_for != j:
            if f["bias"]:
                out.append(cmds.load(0, bias_off, 1, n, 0, to_bias=True))
            if f["per_channel"]:
                out.append(cmds.load(0, rq_off, 2, n, N * REQUANT_ELEM_BYTES, to_requant=True))
            bias_for = j
        out.append(store)
        pending = None

    if f["pad_top"] or f["pad_bottom"]:
        zp_load(s.zp_base, s.slot)
    slot0 = 0               # the ring slot of this pass's padded line 0
    lines_done = 0          # output lines so far, all passes: the accumulator place
    taps_blocks = kh * kw * s.cb
    hook = min(HOOK, taps_blocks - 1)
    for j in range(s.nt):
        n0 = j * s.nc
        n = min(s.nc, N - n0)
        wplace = s.w_base + (j % 2) * s.wplace
        for tap in range(kh * kw):
            out.append(cmds.load(wplace + tap * s.cb * s.kr,
                                 (f["w_offset"] + tap * C * f["w_stride"] + n0 * eb) & mask,
                                 C, n, f["w_stride"]))
        cursor = load_lines(s.eh, 0, slot0)
        for oy in range(s.oh):
            acc = (lines_done % 2) * s.ow
            index = 0
            w_row = wplace
            for ky in range(kh):
                ih = oy * sh + ky * dh
                real = pt <= ih < pt + H
                slot_base = ((slot0 + ih) % s.lines) * s.slot if real else s.zp_base
                for kx in range(kw):
                    p, q = (kx * dw) % sw, (kx * dw) // sw
                    for cbi in range(s.cb):
                        act = slot_base + (cbi * sw + p) * s.q + q
                        out.append(cmds.matmul(act, w_row, s.ow, kc(cbi), acc,
                                               accumulate=index > 0))
                        w_row += s.kr
                        if index == hook:
                            if oy + 1 < s.oh:
                                cursor = load_lines((oy + 1) * sh + s.eh, cursor, slot0)
                            if pending is not None:
                                emit_pending()
                        index += 1
            store = cmds.store(acc, (f["out_offset"] + oy * s.ow * f["out_pitch"] + n0 * ob)
                               & mask, s.ow, n, f["out_pitch"], bias=f["bias"],
                               relu=f["relu"], requant=f["requant"])
            pending = (store, j, (f["channel_offset"] + n0 * ab) & mask,
                       (rq_base + n0 * REQUANT_ELEM_BYTES) & mask, n)
            lines_done += 1
        slot0 = (slot0 + cursor) % s.lines
    emit_pending()
    return out


def expand(config, commands):
    """The sub-commands of a descriptor given as its three encoded commands."""
    fields = {}
    for command in commands:
        name, f = cmds.decode(command)
        if not name.startswith("CONV_"):
            raise ValueError(f"not a convolution descriptor command: {cmds.describe(command)}")
        fields.update({k: v for k, v in f.items() if k != "opcode"})
    return expand_fields(config, fields)


def traffic(config, commands):
    """DMA bytes ``(read, written)`` of a descriptor's sub-commands (payload bytes, as the
    DMA counters count them)."""
    c = config
    rd = wr = 0
    for command in expand(config, commands):
        name, f = cmds.decode(command)
        if name == "LOAD":
            eb = (c.acc_elem_bytes if f["to_bias"] else
                  REQUANT_ELEM_BYTES if f["to_requant"] else c.elem_bytes)
            rd += f["rows"] * f["elems"] * eb
        elif name == "STORE":
            wr += f["rows"] * f["elems"] * (1 if f["requant"] else c.acc_elem_bytes)
    return rd, wr


@dataclass(frozen=True)
class ConvPlan:
    """Where :func:`plan_conv` puts a convolution in the window and the commands that run it.

    ``blobs`` is ``{offset: bytes}`` to write, ``commands`` the CONFIG (when requantizing), one
    descriptor per image and group, and a FENCE; the output is ``out_bytes`` bytes at
    ``out_offset``, NHWC, ``out_elem_bytes`` per value."""
    blobs: dict
    commands: list
    out_offset: int
    out_bytes: int
    out_elem_bytes: int
    out_shape: tuple
    descriptors: int


def plan_conv(config, x, w, geometry, *, bias=None, relu=False, requant=None, pad_value=0,
              base=0, align=64):
    """A convolution as convolution descriptors (one per image and block of groups), laid out
    from window offset ``base``: the NHWC input as it is, a row of ``pad_value``, the weights of
    each block as a ``(KH*KW*b*Cg) x (b*Ng)`` matrix, zero between its ``b`` groups (as many as
    the array's rows and columns take: a depthwise convolution runs ``min(rows, cols)`` channels
    at once), the per-channel values of each block, the NHWC output.

    ``x`` ``(N, H, W, C)`` and ``w`` ``(Cout, KH, KW, C / groups)`` are engine operands;
    ``requant`` a :class:`~mxe.sim.model.Requant` or ``None``. Returns a :class:`ConvPlan`, or
    ``None`` when the engine would refuse a descriptor (geometry outside the unit's range, or
    too large for its buffers): then lower to GEMMs instead.
    """
    import numpy as np

    from mxe.sim.engine_model import encode_elems

    c = config
    x, w = np.asarray(x, dtype=np.int64), np.asarray(w, dtype=np.int64)
    N, H, W, C = x.shape
    cout, kh, kw, cg = w.shape
    geometry.check_channels(C, cout, cg)
    groups = geometry.groups
    ng = cout // groups
    oh, ow = geometry.output_size(H, W)
    top, left, bottom, right = geometry.pads
    eb, ab = c.elem_bytes, c.acc_elem_bytes
    ob = 1 if requant is not None else ab
    per_channel = requant is not None and requant.per_column
    fields = dict(kh=kh, kw=kw, stride_h=geometry.stride[0], stride_w=geometry.stride[1],
                  dil_h=geometry.dilation[0], dil_w=geometry.dilation[1], h=H, w=W, c=cg,
                  n=ng, pad_top=top, pad_bottom=bottom, pad_left=left, pad_right=right)
    if (max(geometry.pads) > PAD_MAX or C * eb > 0xFFFF or cout * eb > 0xFFFF
            or cout * ob > 0xFFFF or max(H, W, C, cout) > 0xFFFF):
        return None
    # Groups narrower than the array go together, as one convolution whose weights are zero
    # between groups (block-diagonal): a depthwise convolution then fills min(rows, cols)
    # columns of the array instead of one.
    merge = max(1, min(c.rows // cg, c.cols // ng, groups))
    while merge > 1 and schedule(c, {**fields, "c": merge * cg, "n": merge * ng})[1]:
        merge -= 1
    if schedule(c, {**fields, "c": merge * cg, "n": merge * ng})[1] is not None:
        return None
    blocks = [(g0, min(merge, groups - g0)) for g0 in range(0, groups, merge)]

    def up(n):
        return -(-n // align) * align

    cursor = base
    blobs = {}

    def put(data):
        nonlocal cursor
        offset = cursor
        blobs[offset] = data
        cursor = up(cursor + len(data))
        return offset

    x_off = put(encode_elems(x.reshape(-1), eb))
    zp_off = put(encode_elems(np.full(c.spad_row_elems, pad_value), eb))
    w_offs, ch_offs = [], []
    for g0, count in blocks:
        # Rows (ky, kx, c) of the block's count * cg channels, columns its count * ng outputs.
        wb = np.zeros((kh, kw, count * cg, count * ng), dtype=np.int64)
        for i in range(count):
            g = g0 + i
            wb[:, :, i * cg:(i + 1) * cg, i * ng:(i + 1) * ng] = \
                w[g * ng:(g + 1) * ng].transpose(1, 2, 3, 0)
        w_offs.append(put(encode_elems(wb.reshape(-1), eb)))
        cols = slice(g0 * ng, (g0 + count) * ng)
        table = b""
        if bias is not None:
            table += encode_elems(np.asarray(bias)[cols], ab)
        if per_channel:
            table += encode_elems(np.array([list(requant.multiplier)[cols],
                                            list(requant.shift)[cols]], dtype=np.int64),
                                  REQUANT_ELEM_BYTES)
        ch_offs.append(put(table) if table else 0)
    out_bytes = N * oh * ow * cout * ob
    out_off = cursor
    cursor = up(cursor + out_bytes)
    from mxe.sim.driver import config_command
    commands = [config_command(requant)] if requant is not None else []
    for n in range(N):
        for b, (g0, count) in enumerate(blocks):
            commands += descriptor(
                h=H, w=W, c=count * cg, n=count * ng, kernel=(kh, kw), stride=geometry.stride,
                dilation=geometry.dilation, pads=geometry.pads,
                in_offset=x_off + (n * H * W * C + g0 * cg) * eb, in_pitch=C * eb,
                w_offset=w_offs[b], w_stride=count * ng * eb,
                out_offset=out_off + (n * oh * ow * cout + g0 * ng) * ob, out_pitch=cout * ob,
                zp_offset=zp_off, channel_offset=ch_offs[b], bias=bias is not None,
                per_channel=per_channel, relu=relu, requant=requant is not None)
    commands.append(cmds.fence())
    return ConvPlan(blobs, commands, out_off, out_bytes, ob, (N, oh, ow, cout),
                    N * len(blocks))
