"""The MXE command set: opcodes, field positions, error codes.

One table (:data:`FIELDS`) defines where every field of every command sits in the 128-bit
command word. The gateware decodes with :func:`command_layout`, the Python encoder in
:mod:`mxe.sim.commands` encodes with the same table, and :func:`command_table_markdown` prints
it for the documentation.

A command is four 32-bit words pushed through the CSRs (``CMD_W0`` .. ``CMD_W3``), word 0 in
bits 31..0. Memory addresses in commands are byte offsets from the DMA window base
(``WIN_BASE``), so commands stay 32-bit clean on a 64-bit bus and cannot name memory outside the
window's start.
"""

from amaranth import signed, unsigned
from amaranth.lib import data, enum


__all__ = ["Opcode", "ErrorCode", "FIELDS", "REQUIRES", "COMMAND_BITS", "command_layout",
           "unsupported", "command_table_markdown", "LIMITS_DOC"]

COMMAND_BITS = 128


class Opcode(enum.Enum, shape=4):
    """What a command does (bits 3..0 of word 0). Opcode 0 is invalid on purpose: a command
    word that was never written decodes as an error, not as a no-op."""
    LOAD = 1
    MATMUL = 2
    STORE = 3
    FENCE = 4
    CONFIG = 5
    #: A GEMM descriptor is three consecutive commands; GEMM_C starts it (see
    #: :mod:`mxe.hw.gemm_unit`). 6 and 15 stay invalid.
    GEMM_A = 8
    GEMM_B = 9
    GEMM_C = 10
    #: A convolution descriptor is three consecutive commands; CONV_C starts it (see
    #: :mod:`mxe.hw.conv_unit`).
    CONV_A = 11
    CONV_B = 12
    CONV_C = 13


class ErrorCode(enum.Enum, shape=4):
    """``STATUS.error``: why the engine stopped. Dispatch stops at the first error seen; commands
    already dispatched finish (they may include younger commands independent of the failing
    one; nothing is dispatched after the error). ``STATUS.error``, ``ERR_CMD_INDEX`` and
    ``ERR_ADDR`` name the oldest failing command. A soft reset clears them."""
    OK = 0
    #: The opcode is not one of :class:`Opcode`.
    BAD_OPCODE = 1
    #: A scratchpad or accumulator range of the command reaches past the buffer's end.
    BAD_ADDR = 2
    #: A dimension is zero or larger than allowed (see :data:`LIMITS_DOC`), or a CONFIG
    #: parameter is out of its range.
    BAD_DIM = 3
    #: The memory answered a DMA burst with SLVERR; ``ERR_ADDR`` holds the failing address.
    DMA_SLVERR = 4
    #: The memory answered with DECERR; ``ERR_ADDR`` holds the failing address.
    DMA_DECERR = 5
    #: The transfer would leave the DMA window [WIN_BASE, WIN_LIMIT); nothing was accessed.
    DMA_WINDOW = 6
    #: The command needs a feature the engine was built without (GEMM_A/B/C without the GEMM
    #: unit, CONV_A/B/C without the convolution unit, a LOAD or STORE off the bus's alignment
    #: without unaligned DMA: then ``ERR_ADDR`` holds its address); the CAPABILITIES register
    #: lists the features.
    UNSUPPORTED = 7


#: Field table: opcode name -> list of (field, lsb in the 128-bit command, width, signed, doc).
FIELDS = {
    "LOAD": [
        ("opcode", 0, 4, False, "1"),
        ("to_bias", 4, 1, False, "1: into the bias row of the post-processor (rows must be "
                                 "1)"),
        ("to_requant", 5, 1, False, "1: into the post-processor's per-column multipliers (row "
                                    "0, int32) and shifts (row 1, int32, low 6 bits used); rows "
                                    "must be 2. With neither: into the scratchpad"),
        ("after_stores", 6, 1, False, "1: dispatched only when every STORE dispatched before "
                                      "it has finished, its last write response in: memory "
                                      "an earlier STORE writes (the previous layer's output) "
                                      "is read as written. AXI does not order a read after a "
                                      "write, and the controller tracks only the buffers"),
        ("spad_addr", 8, 24, False, "first scratchpad row written"),
        ("mem_offset", 32, 32, False, "byte offset of the first element from WIN_BASE"),
        ("rows", 64, 16, False, "memory rows, one scratchpad row each"),
        ("elems", 80, 16, False, "elements per row: 1..max(rows, cols) (bias: 1..cols)"),
        ("stride", 96, 32, False, "bytes from one memory row to the next"),
    ],
    "MATMUL": [
        ("opcode", 0, 4, False, "2"),
        ("accumulate", 4, 1, False, "0: overwrite the accumulator rows; 1: add to them"),
        ("act_addr", 8, 24, False, "scratchpad row of the first activation row"),
        ("weight_addr", 32, 24, False, "scratchpad row of the first weight row"),
        ("m", 64, 16, False, "activation rows streamed (>= 1)"),
        ("k", 80, 16, False, "weight rows used: 1..rows (the rest are zero)"),
        ("acc_addr", 96, 24, False, "accumulator row of the first result"),
    ],
    "STORE": [
        ("opcode", 0, 4, False, "3"),
        ("bias", 4, 1, False, "add the bias row (loaded with LOAD to_bias=1)"),
        ("relu", 5, 1, False, "max(x, 0)"),
        ("requant", 6, 1, False, "requantize to 8 bits as CONFIG says (1-byte elements); "
                                 "otherwise raw accumulator values"),
        ("acc_addr", 8, 24, False, "first accumulator row read"),
        ("mem_offset", 32, 32, False, "byte offset of the first element from WIN_BASE"),
        ("rows", 64, 16, False, "accumulator rows, one memory row each"),
        ("elems", 80, 16, False, "elements per row: 1..cols"),
        ("stride", 96, 32, False, "bytes from one memory row to the next"),
    ],
    "FENCE": [
        ("opcode", 0, 4, False, "4: wait until every earlier command has finished, then set "
                                "STATUS.done (and raise irq if enabled)"),
    ],
    "CONFIG": [
        ("opcode", 0, 4, False, "5: post-processing parameters for the STOREs after it"),
        ("round_even", 4, 1, False, "rounding of the requantization: 0 half away from zero, "
                                    "1 half to even (a tie goes to the even output, zero "
                                    "point included, as ONNX computes it)"),
        ("clamp", 5, 1, False, "1: clamp requantized outputs to [clamp_min, clamp_max], "
                               "which also picks int8 or uint8 outputs; 0: the range of the "
                               "engine's operand type"),
        ("per_channel", 6, 1, False, "1: requantize with the per-column multipliers and shifts "
                                     "(LOAD to_requant); 0: with multiplier and shift"),
        ("multiplier", 32, 32, True, "requantization multiplier (signed)"),
        ("shift", 64, 8, False, "requantization right shift, 0..63"),
        ("zero_point", 80, 9, True, "output zero point, added to the rounded value before "
                                    "the clamp"),
        ("clamp_min", 96, 9, True, "lowest output (with clamp): -128..127 with clamp_max for "
                                   "int8, 0..255 for uint8"),
        ("clamp_max", 112, 9, True, "highest output (with clamp), >= clamp_min"),
    ],
    "GEMM_A": [
        ("opcode", 0, 4, False, "8: first of the three commands of a GEMM descriptor "
                                "C = post(A @ B); sizes and post-processing"),
        ("bias", 4, 1, False, "add N per-column bias values from channel_offset"),
        ("relu", 5, 1, False, "max(x, 0)"),
        ("requant", 6, 1, False, "1-byte outputs requantized as CONFIG says; otherwise raw "
                                 "accumulator values"),
        ("per_channel", 7, 1, False, "load the per-column multipliers and shifts of the "
                                     "outputs (for a CONFIG with per_channel) from the table "
                                     "after the bias values"),
        ("after_stores", 8, 1, False, "chain after the GEMMs before: the first LOAD of A "
                                      "carries after_stores, so A is read only after every "
                                      "earlier STORE has finished (A may be an earlier GEMM's "
                                      "C). With B in whole strips, the first strip's LOAD "
                                      "goes first, ahead of the bias LOADs, and streams while "
                                      "the earlier STOREs drain"),
        ("m", 32, 16, False, "rows of A and C (>= 1)"),
        ("k", 48, 16, False, "columns of A, rows of B (>= 1)"),
        ("n", 64, 16, False, "columns of B and C (>= 1)"),
        ("channel_offset", 96, 32, False, "byte offset from WIN_BASE of the per-column "
                                          "values: with bias, N bias values (acc_elem_bytes "
                                          "each); then, with per_channel, N int32 multipliers "
                                          "and N int32 shifts"),
    ],
    "GEMM_B": [
        ("opcode", 0, 4, False, "9: second command of a GEMM descriptor; A and B"),
        ("a_offset", 32, 32, False, "byte offset of A[0, 0] from WIN_BASE"),
        ("a_stride", 64, 32, False, "bytes from one row of A to the next"),
        ("b_offset", 96, 32, False, "byte offset of B[0, 0] from WIN_BASE"),
    ],
    "GEMM_C": [
        ("opcode", 0, 4, False, "10: third command of a GEMM descriptor; C; starts the GEMM "
                                "with the last GEMM_A and GEMM_B"),
        ("b_stride", 32, 32, False, "bytes from one row of B to the next"),
        ("c_offset", 64, 32, False, "byte offset of C[0, 0] from WIN_BASE"),
        ("c_stride", 96, 32, False, "bytes from one row of C to the next"),
    ],
    "CONV_A": [
        ("opcode", 0, 4, False, "11: first of the three commands of a convolution descriptor "
                                "(NHWC input, weights a (KH*KW*C) x N matrix, NHWC output); "
                                "kernel, strides, dilations, sizes, post-processing"),
        ("bias", 4, 1, False, "add N per-channel bias values from channel_offset"),
        ("relu", 5, 1, False, "max(x, 0)"),
        ("requant", 6, 1, False, "1-byte outputs requantized as CONFIG says; otherwise raw "
                                 "accumulator values"),
        ("per_channel", 7, 1, False, "load the per-channel multipliers and shifts (for a "
                                     "CONFIG with per_channel) from the table after the bias "
                                     "values"),
        ("kh", 8, 3, False, "kernel height, 1..7"),
        ("kw", 12, 3, False, "kernel width, 1..7"),
        ("stride_h", 16, 3, False, "vertical stride, 1..4"),
        ("stride_w", 20, 3, False, "horizontal stride, 1..4"),
        ("dil_h", 24, 2, False, "vertical dilation, 1..2"),
        ("dil_w", 28, 2, False, "horizontal dilation, 1..2"),
        ("h", 32, 16, False, "input height (>= 1)"),
        ("w", 48, 16, False, "input width (>= 1)"),
        ("c", 64, 16, False, "input channels used (>= 1), from in_offset on in every pixel"),
        ("n", 80, 16, False, "output channels (>= 1)"),
        ("channel_offset", 96, 32, False, "byte offset from WIN_BASE of the per-channel "
                                          "values: with bias, N bias values (acc_elem_bytes "
                                          "each); then, with per_channel, N int32 multipliers "
                                          "and N int32 shifts"),
    ],
    "CONV_B": [
        ("opcode", 0, 4, False, "12: second command of a convolution descriptor; padding, "
                                "input, weights"),
        ("pad_top", 8, 4, False, "input lines of padding above, 0..15"),
        ("pad_bottom", 12, 4, False, "input lines of padding below, 0..15"),
        ("pad_left", 16, 4, False, "input columns of padding on the left, 0..15"),
        ("pad_right", 20, 4, False, "input columns of padding on the right, 0..15"),
        ("in_offset", 32, 32, False, "byte offset of the first used channel of input pixel "
                                     "(0, 0) from WIN_BASE"),
        ("w_offset", 64, 32, False, "byte offset of weight row 0 (tap (0, 0), channel 0); "
                                    "row (ky*KW + kx)*C + c holds the N weights of that tap "
                                    "and input channel"),
        ("zp_offset", 96, 32, False, "byte offset of min(rows, C) operands, each the input's "
                                     "zero point: the padding is loaded from there"),
    ],
    "CONV_C": [
        ("opcode", 0, 4, False, "13: third command of a convolution descriptor; pitches, "
                                "output; starts the convolution with the last CONV_A and "
                                "CONV_B"),
        ("in_pitch", 16, 16, False, "bytes from one input pixel to the next (an input line "
                                    "is W pixels)"),
        ("out_offset", 32, 32, False, "byte offset of output pixel (0, 0), channel 0"),
        ("w_stride", 64, 16, False, "bytes from one weight row to the next"),
        ("out_pitch", 80, 16, False, "bytes from one output pixel to the next (an output "
                                     "line is OW pixels)"),
    ],
}

#: Commands that need a feature a user may leave out: opcode name -> the
#: :class:`~mxe.hw.config.EngineConfig` parameter (a CAPABILITIES bit, :mod:`mxe.hw.regmap`).
#: Without it the controller refuses the command with ``UNSUPPORTED`` (counted in ERR_CMD_INDEX
#: like any refused command).
REQUIRES = {"GEMM_A": "gemm_unit", "GEMM_B": "gemm_unit", "GEMM_C": "gemm_unit",
            "CONV_A": "conv_unit", "CONV_B": "conv_unit", "CONV_C": "conv_unit"}


def unsupported(config):
    """The opcode names an engine built with ``config`` refuses with ``UNSUPPORTED``."""
    return [name for name, feature in REQUIRES.items() if not getattr(config, feature)]


def _requires_doc():
    by_feature = {}
    for name, feature in REQUIRES.items():
        by_feature.setdefault(feature, []).append(name)
    return "\n".join(f"- {', '.join(names)} on an engine built without {feature}\n"
                     f"  (CAPABILITIES.{feature} = 0): UNSUPPORTED; each counts as a command;"
                     for feature, names in by_feature.items())


LIMITS_DOC = f"""\
A command is refused (STATUS.error, nothing of it runs) when:
- its opcode is not LOAD, MATMUL, STORE, FENCE, CONFIG, GEMM_A/B/C or CONV_A/B/C
  (BAD_OPCODE);
{_requires_doc()}
- LOAD: rows = 0, elems = 0, elems > max(rows, cols) (scratchpad) or > cols (bias,
  requant), a bias LOAD with rows != 1, a requant LOAD with rows != 2, or both to_bias and
  to_requant (BAD_DIM); spad_addr + rows > spad_depth (BAD_ADDR; scratchpad only);
- MATMUL: m = 0, k = 0 or k > rows (BAD_DIM); act_addr + m or weight_addr + k > spad_depth,
  or acc_addr + m > acc_depth (BAD_ADDR);
- STORE: rows = 0, elems = 0 or elems > cols (BAD_DIM); acc_addr + rows > acc_depth (BAD_ADDR);
- CONFIG: shift > 63, or clamp = 1 with clamp_min > clamp_max or a range that is in neither
  -128..127 nor 0..255 (BAD_DIM).
- GEMM descriptor (at GEMM_C): m, k or n = 0 (BAD_DIM); neither way of keeping B fits
  (BAD_ADDR). With kr = min(rows, k) and kt = ceil(k / kr), B takes b = 2 * kt * kr scratchpad
  rows as two strips, else b = 8 * kr as eight tiles; a way fits when b < spad_depth and
  min(m, acc_depth // 2, (spad_depth - b) // (2 * kt)) is at least min(m, rows) (strips) or
  at least 1 (tiles). n plays no part.
  The GEMM unit expands a descriptor into LOAD/MATMUL/STORE sub-commands, which the controller
  checks, dispatches and counts (ERR_CMD_INDEX) like pushed commands; GEMM_A/B/C themselves are
  not counted.
- Convolution descriptor (at CONV_C): h, w, c, n, kh, kw = 0, kh or kw > 7, a stride
  outside 1..4, a dilation outside 1..2, or a dilated kernel ((k - 1) * dil + 1) taller or
  wider than the padded input (BAD_DIM); the scratchpad cannot hold its ring of
  (KH - 1) * dil_h + 1 + 2 * stride_h input lines, a line of padding and the weights of one
  (two, when N > cols) output-channel tiles, or the accumulator two output lines
  (2 * OW > acc_depth) (BAD_ADDR; the sizes are in the architecture page). Expanded into
  LOAD/MATMUL/STORE sub-commands like a GEMM descriptor, counted the same way.
On an engine built without unaligned DMA (CAPABILITIES.unaligned_dma = 0), a LOAD or STORE
whose address WIN_BASE + mem_offset or, with rows > 1, whose stride is not a multiple of the
bus width in bytes is refused by the DMA before any access (UNSUPPORTED; ERR_ADDR holds the
address). A LOAD or STORE whose memory extent leaves [WIN_BASE, WIN_LIMIT) is refused by the
DMA before any access (DMA_WINDOW)."""


def command_layout(opcode):
    """A ``data.FlexibleLayout`` of the 128-bit command word for ``opcode`` (a name)."""
    fields = {}
    for name, lsb, width, is_signed, _doc in FIELDS[opcode]:
        shape = signed(width) if is_signed else unsigned(width)
        fields[name] = data.Field(shape, lsb)
    return data.FlexibleLayout(COMMAND_BITS, fields)


def command_table_markdown():
    lines = ["| command | field | word | bits | meaning |", "|---|---|---|---|---|"]
    for opcode, fields in FIELDS.items():
        for name, lsb, width, is_signed, doc in fields:
            word, bit = divmod(lsb, 32)
            bits = f"{bit + width - 1}:{bit}" if width > 1 else f"{bit}"
            kind = " (signed)" if is_signed else ""
            lines.append(f"| {opcode} | {name}{kind} | W{word} | {bits} | {doc} |")
    return "\n".join(lines)
