"""The one command encoder (and decoder) of MXE.

Every command is built from the field table :data:`mxe.hw.isa.FIELDS`; no field position is
repeated here. The encoder refuses values that do not fit their field (``ValueError`` naming the
field); it does *not* refuse what the hardware refuses semantically (zero dimensions, ranges past
a buffer's end, ...), so tests can send such commands on purpose (see
:data:`mxe.hw.isa.LIMITS_DOC`).

A command is a 128-bit integer; :func:`to_words` splits it into the four 32-bit words written to
``CMD_W0`` .. ``CMD_W3`` (word 0 = bits 31..0).
"""

import numpy as np

from mxe.hw.isa import COMMAND_BITS, FIELDS, Opcode


__all__ = ["encode", "decode", "load", "matmul", "store", "fence", "config", "to_words",
           "from_words", "field_range", "describe", "OPCODE_NAMES"]

#: Opcode value -> name.
OPCODE_NAMES = {op.value: op.name for op in Opcode}

_OPCODE = {name: fields[0] for name, fields in FIELDS.items()}
assert all(f[0] == "opcode" for f in _OPCODE.values())


def field_range(opcode, name):
    """Inclusive ``(lo, hi)`` of field ``name`` of command ``opcode``."""
    for fname, _lsb, width, is_signed, _doc in FIELDS[opcode]:
        if fname == name:
            if is_signed:
                return -(1 << (width - 1)), (1 << (width - 1)) - 1
            return 0, (1 << width) - 1
    raise KeyError(f"{opcode} has no field {name!r}")


def encode(opcode, /, **values):
    """A 128-bit command ``opcode`` (a name of :data:`FIELDS`) with the given field values.

    Fields not given are 0; ``opcode`` is filled in from :class:`Opcode`.

    Raises
    ------
    KeyError
        Unknown opcode name.
    TypeError
        A value is not an integer (bools are accepted for 1-bit fields).
    ValueError
        A value does not fit its field, or the field does not exist; the message names it.
    """
    if opcode not in FIELDS:
        raise KeyError(f"opcode must be one of {', '.join(FIELDS)}, not {opcode!r}")
    known = {f[0] for f in FIELDS[opcode]}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"{opcode} has no field(s) {', '.join(unknown)}; fields: "
                         f"{', '.join(sorted(known - {'opcode'}))}")
    if "opcode" in values:
        raise ValueError("opcode is set by the command name, not as a field")
    word = 0
    for name, lsb, width, is_signed, _doc in FIELDS[opcode]:
        value = Opcode[opcode].value if name == "opcode" else values.get(name, 0)
        if isinstance(value, bool):
            if width != 1:
                raise TypeError(f"{opcode}.{name} must be an integer, not {value!r}")
            value = int(value)
        if isinstance(value, np.integer):
            value = int(value)
        if not isinstance(value, int):
            raise TypeError(f"{opcode}.{name} must be an integer, not {value!r}")
        lo, hi = field_range(opcode, name)
        if not lo <= value <= hi:
            raise ValueError(f"{opcode}.{name} must be in {lo}..{hi} ({width}-bit "
                             f"{'signed' if is_signed else 'unsigned'} field), not {value}")
        word |= (value & ((1 << width) - 1)) << lsb
    return word


def decode(command):
    """``(opcode name, {field: value})`` of a 128-bit command.

    An opcode that is not one of :class:`Opcode` decodes as ``("INVALID", {"opcode": n})``.
    """
    if not isinstance(command, int) or not 0 <= command < 1 << COMMAND_BITS:
        raise ValueError(f"command must be a {COMMAND_BITS}-bit unsigned integer, not {command!r}")
    lsb, width = _OPCODE["LOAD"][1], _OPCODE["LOAD"][2]
    op = (command >> lsb) & ((1 << width) - 1)
    name = OPCODE_NAMES.get(op)
    if name is None or name not in FIELDS:
        return "INVALID", {"opcode": op}
    fields = {}
    for fname, flsb, fwidth, is_signed, _doc in FIELDS[name]:
        value = (command >> flsb) & ((1 << fwidth) - 1)
        if is_signed and value >> (fwidth - 1):
            value -= 1 << fwidth
        fields[fname] = value
    return name, fields


def load(spad_addr, mem_offset, rows, elems, stride, *, to_bias=False, to_requant=False,
         after_stores=False):
    """LOAD: ``rows`` memory rows of ``elems`` elements (row ``r`` at ``mem_offset + r *
    stride``) into scratchpad rows ``spad_addr..``, into the bias row (``to_bias``), or into the
    per-column multipliers and shifts (``to_requant``, two rows). ``after_stores``: dispatched
    only when every earlier STORE has finished (its write responses in)."""
    return encode("LOAD", to_bias=bool(to_bias), to_requant=bool(to_requant),
                  after_stores=bool(after_stores), spad_addr=spad_addr, mem_offset=mem_offset,
                  rows=rows, elems=elems, stride=stride)


def matmul(act_addr, weight_addr, m, k, acc_addr, *, accumulate=False):
    """MATMUL: ``m`` activation rows from ``act_addr`` through the weight tile of ``k`` rows at
    ``weight_addr`` into accumulator rows ``acc_addr..`` (added if ``accumulate``)."""
    return encode("MATMUL", accumulate=bool(accumulate), act_addr=act_addr,
                  weight_addr=weight_addr, m=m, k=k, acc_addr=acc_addr)


def store(acc_addr, mem_offset, rows, elems, stride, *, bias=False, relu=False, requant=False):
    """STORE: accumulator rows ``acc_addr..`` through the post-processor to memory."""
    return encode("STORE", bias=bool(bias), relu=bool(relu), requant=bool(requant),
                  acc_addr=acc_addr, mem_offset=mem_offset, rows=rows, elems=elems,
                  stride=stride)


def fence():
    """FENCE: wait for every earlier command, then pulse done."""
    return encode("FENCE")


def config(multiplier, shift, *, zero_point=0, clamp=None, round_even=False,
           per_channel=False):
    """CONFIG: requantization parameters for the later STOREs: multiplier (signed 32-bit),
    shift, output zero point, clamp range ``(lo, hi)`` (``None``: the engine's operand type's),
    rounding, and whether the per-column multipliers and shifts replace ``multiplier`` and
    ``shift`` (:class:`mxe.sim.model.Requant` says what each does)."""
    lo, hi = (0, 0) if clamp is None else clamp
    return encode("CONFIG", multiplier=multiplier, shift=shift, zero_point=zero_point,
                  clamp=clamp is not None, clamp_min=lo, clamp_max=hi, round_even=round_even,
                  per_channel=per_channel)


def to_words(command):
    """The four 32-bit words of a command, ``CMD_W0`` first."""
    if not isinstance(command, int) or not 0 <= command < 1 << COMMAND_BITS:
        raise ValueError(f"command must be a {COMMAND_BITS}-bit unsigned integer, not {command!r}")
    return [(command >> (32 * i)) & 0xFFFF_FFFF for i in range(COMMAND_BITS // 32)]


def from_words(words):
    """Inverse of :func:`to_words`."""
    words = list(words)
    if len(words) != COMMAND_BITS // 32 or any(not 0 <= w < 1 << 32 for w in words):
        raise ValueError(f"words must be {COMMAND_BITS // 32} 32-bit values, not {words!r}")
    return sum(w << (32 * i) for i, w in enumerate(words))


def describe(command):
    """One line of text for a command, for logs and error messages."""
    name, fields = decode(command)
    args = ", ".join(f"{k}={v}" for k, v in fields.items() if k != "opcode")
    return f"{name}({args})" if name != "INVALID" else f"INVALID(opcode={fields['opcode']})"
