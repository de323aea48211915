"""Move the registers around ECP5 multipliers into the MULT18X18D (a netlist pass).

Yosys maps a ``*`` to a MULT18X18D with all its internal registers off ("NONE") and leaves the
flip-flops in the fabric, so every product pays fabric routing into and out of the DSP within
one clock. Lattice's own tools absorb those registers; this pass does the same on the Yosys JSON
netlist before nextpnr, which times the MULT18X18D in its registered modes:

* input A (B): if every non-constant bit of A (B) comes straight from a TRELLIS_FF and all those
  flip-flops share clock, clock enable and reset, A (B) is fed from the flip-flops' D inputs and
  the DSP's input register (``REG_INPUTA_*``) takes their place. The fabric flip-flops stay when
  they have other loads (the activation also travels east).
* output P: if every used bit of P goes to exactly one TRELLIS_FF and nothing else, those
  flip-flops are removed and the DSP's output register (``REG_OUTPUT_*``) drives their nets.

Only flip-flops whose reset value is 0 and whose reset is synchronous are moved (the DSP
registers clear to 0, ``RESETMODE="SYNC"``). Behaviour is cycle-for-cycle unchanged.
"""

__all__ = ["pack_mult_registers"]


def _const(bit):
    return isinstance(bit, str)


def _ff_control(cell):
    """(clk, ce, lsr) nets of a TRELLIS_FF, or None if it cannot move into a DSP."""
    p, c = cell["parameters"], cell["connections"]
    if p.get("REGSET", "RESET").strip() != "RESET" or p.get("SRMODE", "").strip() == "ASYNC":
        return None
    if p.get("CLKMUX", "CLK").strip() != "CLK" or p.get("LSRMUX", "LSR").strip() != "LSR":
        return None
    cemux = p.get("CEMUX", "1").strip()
    if cemux not in ("1", "CE"):
        return None
    ce = tuple(c["CE"]) if cemux == "CE" and "CE" in c else ("1",)
    lsr = tuple(c["LSR"]) if "LSR" in c else ("0",)
    return tuple(c["CLK"]), ce, lsr


def _connect(cell, idx, clk, ce, lsr):
    for port, bits in ((f"CLK{idx}", clk), (f"CE{idx}", ce), (f"RST{idx}", lsr)):
        cell["connections"][port] = list(bits)
        cell.setdefault("port_directions", {})[port] = "input"


def pack_mult_registers(netlist, top):
    """Absorb input and output registers into every MULT18X18D of module ``top`` (in place).

    Returns
    -------
    dict
        ``{"dsps": n, "input_a": n, "input_b": n, "output": n, "ffs_removed": n}``.
    """
    module = netlist["modules"][top]
    cells = module["cells"]
    drivers, sinks = {}, {}
    for name, cell in cells.items():
        for port, bits in cell["connections"].items():
            direction = cell.get("port_directions", {}).get(port, "input")
            for bit in bits:
                if _const(bit):
                    continue
                if direction == "output":
                    drivers[bit] = (name, port)
                else:
                    sinks.setdefault(bit, []).append((name, port))
    for port in module["ports"].values():
        if port["direction"] != "input":
            for bit in port["bits"]:
                if not _const(bit):
                    sinks.setdefault(bit, []).append((None, None))

    stats = dict(dsps=0, input_a=0, input_b=0, output=0, ffs_removed=0)
    removed = set()
    for name, cell in list(cells.items()):
        if cell["type"] != "MULT18X18D":
            continue
        stats["dsps"] += 1
        conn, params = cell["connections"], cell["parameters"]
        for group, idx, key in (("A", 0, "input_a"), ("B", 1, "input_b")):
            ports = [f"{group}{i}" for i in range(18)]
            ffs, control = {}, set()
            for port in ports:
                bit = conn[port][0]
                if _const(bit):
                    continue
                drv = drivers.get(bit)
                if drv is None or cells[drv[0]]["type"] != "TRELLIS_FF" or drv[1] != "Q":
                    break
                ctl = _ff_control(cells[drv[0]])
                if ctl is None:
                    break
                ffs[port] = drv[0]
                control.add(ctl)
            else:
                if not ffs or len(control) != 1:
                    continue
                (clk, ce, lsr), = control
                for port, ff in ffs.items():
                    conn[port] = list(cells[ff]["connections"]["DI"])
                _connect(cell, idx, clk, ce, lsr)
                params[f"REG_INPUT{group}_CLK"] = f"CLK{idx}"
                params[f"REG_INPUT{group}_CE"] = f"CE{idx}"
                params[f"REG_INPUT{group}_RST"] = f"RST{idx}"
                stats[key] += 1
        # Output register.
        ffs, control, ok = {}, set(), True
        for i in range(36):
            bit = conn.get(f"P{i}", ["x"])[0]
            if _const(bit) or bit not in sinks:
                continue
            loads = sinks[bit]
            if len(loads) != 1 or loads[0][0] is None:
                ok = False
                break
            ff_name, ff_port = loads[0]
            ff = cells[ff_name]
            ctl = _ff_control(ff) if ff["type"] == "TRELLIS_FF" and ff_port == "DI" else None
            if ctl is None:
                ok = False
                break
            ffs[f"P{i}"] = ff_name
            control.add(ctl)
        if ok and ffs and len(control) == 1:
            (clk, ce, lsr), = control
            for port, ff in ffs.items():
                conn[port] = list(cells[ff]["connections"]["Q"])
                removed.add(ff)
            _connect(cell, 2, clk, ce, lsr)
            params["REG_OUTPUT_CLK"], params["REG_OUTPUT_CE"], params["REG_OUTPUT_RST"] = \
                "CLK2", "CE2", "RST2"
            stats["output"] += 1
        params["RESETMODE"] = "SYNC"
        params.setdefault("GSR", "DISABLED")

    # Input flip-flops whose only loads were the DSPs they moved into are now dead.
    still_used = set()
    for cell_name, cell in cells.items():
        if cell_name in removed:
            continue
        for port, bits in cell["connections"].items():
            if cell.get("port_directions", {}).get(port, "input") != "output":
                still_used.update(b for b in bits if not _const(b))
    for port in module["ports"].values():
        if port["direction"] != "input":
            still_used.update(b for b in port["bits"] if not _const(b))
    for cell_name, cell in cells.items():
        if cell["type"] == "TRELLIS_FF" and cell_name not in removed:
            if cell["connections"]["Q"][0] not in still_used:
                removed.add(cell_name)
    for cell_name in removed:
        del cells[cell_name]
    stats["ffs_removed"] = len(removed)
    return stats
