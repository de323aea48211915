"""The command encoder and decoder (sim/commands.py) against the field table of hw/isa.py."""

import random

import pytest

from mxe.hw.isa import COMMAND_BITS, FIELDS, Opcode
from mxe.sim import commands as cmds


def _random_fields(rng, opcode):
    values = {}
    for name, _lsb, width, is_signed, _doc in FIELDS[opcode]:
        if name == "opcode":
            continue
        lo, hi = cmds.field_range(opcode, name)
        values[name] = rng.choice([lo, hi, rng.randint(lo, hi)])
    return values


def test_field_table_fits_and_does_not_overlap():
    for opcode, fields in FIELDS.items():
        used = 0
        for name, lsb, width, _s, _doc in fields:
            mask = ((1 << width) - 1) << lsb
            assert lsb + width <= COMMAND_BITS, f"{opcode}.{name}"
            assert not used & mask, f"{opcode}.{name} overlaps"
            used |= mask


def test_each_field_lands_at_its_bits():
    """Setting one field to all ones sets exactly that field's bits (and the opcode)."""
    for opcode, fields in FIELDS.items():
        op_name, op_lsb, op_width, _s, _d = fields[0]
        base = Opcode[opcode].value << op_lsb
        assert cmds.encode(opcode) == base
        for name, lsb, width, is_signed, _doc in fields[1:]:
            value = -1 if is_signed else (1 << width) - 1
            word = cmds.encode(opcode, **{name: value})
            assert word == base | (((1 << width) - 1) << lsb), f"{opcode}.{name}"


def test_roundtrip_random(seed):
    rng = random.Random(seed)
    for _ in range(500):
        opcode = rng.choice(list(FIELDS))
        values = _random_fields(rng, opcode)
        word = cmds.encode(opcode, **values)
        assert 0 <= word < 1 << COMMAND_BITS
        name, decoded = cmds.decode(word)
        assert name == opcode
        assert decoded == {"opcode": Opcode[opcode].value, **values}
        assert cmds.from_words(cmds.to_words(word)) == word
        words = cmds.to_words(word)
        assert len(words) == 4 and sum(w << (32 * i) for i, w in enumerate(words)) == word


def test_helpers_match_encode(seed):
    rng = random.Random(seed)
    for _ in range(50):
        f = _random_fields(rng, "LOAD")
        assert cmds.load(f["spad_addr"], f["mem_offset"], f["rows"], f["elems"], f["stride"],
                         to_bias=f["to_bias"], to_requant=f["to_requant"],
                         after_stores=f["after_stores"]) == cmds.encode("LOAD", **f)
        f = _random_fields(rng, "MATMUL")
        assert cmds.matmul(f["act_addr"], f["weight_addr"], f["m"], f["k"], f["acc_addr"],
                           accumulate=f["accumulate"]) == cmds.encode("MATMUL", **f)
        f = _random_fields(rng, "STORE")
        assert cmds.store(f["acc_addr"], f["mem_offset"], f["rows"], f["elems"], f["stride"],
                          bias=f["bias"], relu=f["relu"], requant=f["requant"]) \
            == cmds.encode("STORE", **f)
        f = _random_fields(rng, "CONFIG")
        clamp = (f["clamp_min"], f["clamp_max"])
        if not f["clamp"]:
            f["clamp_min"] = f["clamp_max"] = 0   # what the helper writes without a clamp
        assert cmds.config(f["multiplier"], f["shift"], zero_point=f["zero_point"],
                           clamp=clamp if f["clamp"] else None,
                           round_even=f["round_even"], per_channel=f["per_channel"]) \
            == cmds.encode("CONFIG", **f)
    assert cmds.decode(cmds.fence()) == ("FENCE", {"opcode": Opcode.FENCE.value})


def test_signed_multiplier():
    for value in (-(1 << 31), -1, 0, 1, (1 << 31) - 1):
        assert cmds.decode(cmds.config(value, 5))[1]["multiplier"] == value


@pytest.mark.parametrize("opcode,field,value", [
    ("LOAD", "spad_addr", 1 << 24), ("LOAD", "mem_offset", 1 << 32), ("LOAD", "rows", 1 << 16),
    ("LOAD", "elems", -1), ("LOAD", "stride", 1 << 32), ("LOAD", "to_bias", 2),
    ("MATMUL", "m", 1 << 16), ("MATMUL", "k", 65536), ("MATMUL", "acc_addr", 1 << 24),
    ("STORE", "stride", -5), ("CONFIG", "multiplier", 1 << 31),
    ("CONFIG", "multiplier", -(1 << 31) - 1), ("CONFIG", "shift", 256),
])
def test_out_of_range_names_field(opcode, field, value):
    with pytest.raises(ValueError, match=field):
        cmds.encode(opcode, **{field: value})


def test_type_and_unknown_field_errors():
    with pytest.raises(TypeError, match="rows"):
        cmds.encode("LOAD", rows=1.5)
    with pytest.raises(TypeError, match="rows"):
        cmds.encode("LOAD", rows=True)   # a bool in a 16-bit field is a mistake
    with pytest.raises(ValueError, match="bogus"):
        cmds.encode("LOAD", bogus=1)
    with pytest.raises(ValueError, match="opcode"):
        cmds.encode("LOAD", opcode=3)
    with pytest.raises(KeyError):
        cmds.encode("GEMM")
    with pytest.raises(ValueError):
        cmds.decode(1 << COMMAND_BITS)
    with pytest.raises(ValueError):
        cmds.to_words(-1)
    with pytest.raises(ValueError):
        cmds.from_words([0, 0, 0])


def test_semantic_errors_are_encodable():
    """The encoder does not refuse what only the hardware refuses (tests send those)."""
    assert cmds.decode(cmds.load(0, 0, 0, 0, 0))[1]["rows"] == 0
    assert cmds.decode(cmds.matmul(0, 0, 1, 65535, 0))[1]["k"] == 65535
    assert cmds.decode(cmds.config(0, 200))[1]["shift"] == 200


def test_invalid_opcodes_decode():
    valid = {op.value for op in Opcode}
    for op in range(16):
        name, fields = cmds.decode(op | (0xDEADBEEF << 32))
        if op in valid:
            assert name == Opcode(op).name
        else:
            assert (name, fields) == ("INVALID", {"opcode": op})
            assert "INVALID" in cmds.describe(op)
