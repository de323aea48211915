"""Two 8x8 products in one iCE40 SB_MAC16 (a netlist pass).

Yosys's ``ice40_dsp`` maps every multiply to its own SB_MAC16 in 16x16 mode, also a PE's 8x8
product, whose operands only sign- (or zero-) extend their low bytes into the block's 16-bit
ports. The block also has an 8x8 mode: two independent products, ``A[15:8] * B[15:8]`` on
``O[31:16]`` and ``A[7:0] * B[7:0]`` on ``O[15:0]``, each signed when ``A_SIGNED`` /
``B_SIGNED`` are. This pass finds SB_MAC16s that compute nothing but such a product and merges
them two by two: a 4x4 int8 array's 16 products fit the UP5K's 8 blocks.

A cell qualifies when it is in 16x16 mode with the product on both output halves
(``TOPOUTPUT_SELECT`` and ``BOTOUTPUT_SELECT`` 3) and no product pipeline registers, its
operands' high bytes are copies of their bit 7 (signed) or constant 0 (unsigned), and nothing
uses its carry or cascade outputs. Two cells merge when their parameters and their clock,
clock enable, reset and hold inputs are equal. The merged cell drives the first cell's product
on ``O[31:16]`` and the second's on ``O[15:0]``; what used a product's extension bits
(``O[31:16]`` of the 16x16 cell) uses the product's sign bit, or 0 when unsigned. Input
registers (``A_REG``, ``B_REG``) move with the operands, so behaviour is cycle-for-cycle the
same (the gate-level benches of ``tests/test_array.py`` check it on Yosys's SB_MAC16 model).
"""

__all__ = ["pair_mult8x8"]

#: Inputs two merged cells must share.
_SHARED_INPUTS = ("CLK", "CE", "AHOLD", "BHOLD", "IRSTTOP", "IRSTBOT")
#: Outputs besides O that a qualifying cell leaves unused.
_SIDE_OUTPUTS = ("CO", "ACCUMCO", "SIGNEXTOUT")


def _param(cell, name):
    value = str(cell["parameters"].get(name, "0")).strip()
    return int(value, 2) if value and set(value) <= {"0", "1"} else value


def _extension_ok(bits, signed):
    """The high byte of a 16-bit operand only extends its low byte."""
    high = bits[8:16]
    return all(bit == bits[7] for bit in high) if signed else all(bit == "0" for bit in high)


def _qualifies(cell, sinks):
    if cell["type"] != "SB_MAC16":
        return False
    if _param(cell, "MODE_8x8") or _param(cell, "TOPOUTPUT_SELECT") != 3 \
            or _param(cell, "BOTOUTPUT_SELECT") != 3 or _param(cell, "PIPELINE_16x16_MULT_REG1") \
            or _param(cell, "PIPELINE_16x16_MULT_REG2"):
        return False
    conn = cell["connections"]
    if not (_extension_ok(conn["A"], _param(cell, "A_SIGNED"))
            and _extension_ok(conn["B"], _param(cell, "B_SIGNED"))):
        return False
    return not any(sinks.get(bit) for port in _SIDE_OUTPUTS for bit in conn.get(port, [])
                   if not isinstance(bit, str))


def _key(cell):
    conn = cell["connections"]
    params = tuple(sorted((k, str(v).strip()) for k, v in cell["parameters"].items()))
    return params, tuple(tuple(conn.get(port, ["0"])) for port in _SHARED_INPUTS)


def _sink_lists(module):
    """``(holder, key)`` of every list of bits the module reads: the cells' input connections
    and the module's output ports."""
    for cell in module["cells"].values():
        for port in cell["connections"]:
            if cell.get("port_directions", {}).get(port, "input") == "input":
                yield cell["connections"], port
    for port in module["ports"].values():
        if port["direction"] == "output":
            yield port, "bits"


def pair_mult8x8(netlist, top):
    """Merge the 8x8-product SB_MAC16s of module ``top`` two by two (in place).

    Returns
    -------
    dict
        ``{"dsps": SB_MAC16s before, "pairs": merged pairs}``.
    """
    module = netlist["modules"][top]
    cells = module["cells"]
    sinks = {bit: True for holder, key in _sink_lists(module) for bit in holder[key]}

    groups = {}
    total = 0
    for name in sorted(cells):
        cell = cells[name]
        total += cell["type"] == "SB_MAC16"
        if _qualifies(cell, sinks):
            groups.setdefault(_key(cell), []).append(name)

    replace = {}                      # extension bits of a product -> its sign bit (or "0")
    pairs = 0
    for names in groups.values():
        for high_name, low_name in zip(names[0::2], names[1::2]):
            high, low = cells[high_name], cells[low_name]
            signed = _param(high, "A_SIGNED") or _param(high, "B_SIGNED")
            hc, lc = high["connections"], low["connections"]
            for cell in (high, low):
                out = cell["connections"]["O"]
                for bit in out[16:]:
                    replace[bit] = out[15] if signed else "0"
            hc["A"] = lc["A"][:8] + hc["A"][:8]
            hc["B"] = lc["B"][:8] + hc["B"][:8]
            hc["O"] = lc["O"][:16] + hc["O"][:16]
            for param, value in (("MODE_8x8", 1), ("TOPOUTPUT_SELECT", 2),
                                 ("BOTOUTPUT_SELECT", 2), ("TOP_8x8_MULT_REG", 0),
                                 ("BOT_8x8_MULT_REG", 0)):
                width = len(str(high["parameters"].get(param, "")).strip()) or \
                    (2 if param.endswith("SELECT") else 1)
                high["parameters"][param] = format(value, f"0{width}b")
            del cells[low_name]
            pairs += 1

    if replace:
        for holder, key in _sink_lists(module):
            holder[key] = [replace.get(bit, bit) for bit in holder[key]]
        for net in module.get("netnames", {}).values():
            net["bits"] = [replace.get(bit, bit) for bit in net["bits"]]
    return {"dsps": total, "pairs": pairs}
