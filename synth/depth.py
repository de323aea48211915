"""A quick ranking of the long register-to-register paths of a synthesized ECP5 netlist.

Place and route of a whole engine takes nextpnr half an hour (its routed endpoint ranking is in
the ``mxe synth --pnr`` report); this reads the ``netlist.json`` that ``mxe synth`` keeps in its
work directory and, in seconds,
lists the endpoints with the longest paths, one per block register, so a timing pass can see all
its targets at once. The delays are a coarse model, not a timing analysis: every net costs
``ROUTE_NS`` of routing, a LUT4 0.4 ns, a carry cell 0.45 ns into the chain and 0.1 ns along it,
a block RAM 4.3 ns from its clock. It ranks paths well and is typically within 30 % of the
placed estimate; Fmax comes from ``mxe synth --pnr``.

With a placed netlist (nextpnr ``--no-route --write placed.json``, a few minutes where routing
takes hours) each net instead costs nextpnr's own placement estimate for the distance it spans,
so paths that are long because their cells sit far apart show up too.

Usage: ``python -m mxe.synth.depth WORKDIR/netlist.json [--top N] [--trace K]``
"""

import argparse
import json
import re
import sys


__all__ = ["PLACED_UNIT_NS", "ROUTE_NS", "longest_paths", "register_of"]

#: Routing delay assumed for every net between cells.
ROUTE_NS = 0.8
#: Placed nets cost this per unit of nextpnr's ECP5 distance measure
#: ``3 + max(dx - 5, 0) + max(dy - 5, 0) + 2 * (min(dx, 5) + min(dy, 5))`` (cells ``dx``, ``dy``
#: tiles apart). Calibrated on two placements of the small engine, whose worst paths then come
#: within 5% of nextpnr's post-placement Fmax estimates (51.3 and 61.9 MHz).
PLACED_UNIT_NS = 0.06
_LOGIC_NS = {"LUT4": 0.4, "PFUMX": 0.25, "L6MUX21": 0.25, "CCU2C": 0.45,
             "TRELLIS_DPR16X4": 0.6, "TRELLIS_COMB": 0.4, "TRELLIS_RAMW": 0.3}
_CHAIN_PORTS = ("CIN", "FCI")
#: Clock-to-output of the cells that start a path.
_CLOCK_TO_OUT_NS = {"TRELLIS_FF": 0.5, "DP16KD": 4.3, "MULT18X18D": 0.9}
_SETUP_NS = 0.2


def register_of(cell_name):
    """The register a flip-flop or block cell belongs to: its name without the bit suffix Yosys
    and nextpnr add (``dma.level_TRELLIS_FF_Q_3`` -> ``dma.level``)."""
    return re.split(r"_(?:TRELLIS_FF|SB_DFF\w*)|\$", cell_name)[0] or cell_name


def _top_module(netlist):
    for name, module in netlist["modules"].items():
        if module.get("attributes", {}).get("top"):
            return module
    raise ValueError("the netlist has no top module")


def _location(cell):
    match = re.match(r"X(\d+)/Y(\d+)/", cell.get("attributes", {}).get("NEXTPNR_BEL", ""))
    return (int(match[1]), int(match[2])) if match else None


def _placed_route_ns(a, b):
    if a is None or b is None:
        return ROUTE_NS
    dx, dy = abs(a[0] - b[0]), abs(a[1] - b[1])
    return PLACED_UNIT_NS * (3 + max(dx - 5, 0) + max(dy - 5, 0)
                             + 2 * (min(dx, 5) + min(dy, 5)))


def longest_paths(netlist, *, top=30):
    """``[(ns, "register.port", [(ns, cell type, net name), ...]), ...]``: the ``top`` longest
    paths, at most one per register (the flip-flop cell name without its bit suffix). A placed
    netlist (cells with nextpnr's ``NEXTPNR_BEL``) is timed by distance, see the module."""
    module = _top_module(netlist)
    cells = module["cells"]
    where = {name: _location(cell) for name, cell in cells.items()}
    placed = any(loc is not None for loc in where.values())

    constants = set()

    def route_ns(from_cell, to_cell):
        if from_cell in constants:
            return 0.0
        return _placed_route_ns(where[from_cell], where[to_cell]) if placed else ROUTE_NS

    names = {}
    for name, net in module["netnames"].items():
        for bit in net["bits"]:
            if isinstance(bit, int) and (bit not in names or len(name) < len(names[bit])):
                names[bit] = name
    driver = {}
    for cell_name, cell in cells.items():
        for port, bits in cell["connections"].items():
            if cell["port_directions"].get(port) == "output":
                for bit in bits:
                    if isinstance(bit, int):
                        driver[bit] = (cell_name, port)

    arrival = {}
    expanded = set()

    def arrive(bit):
        """Arrival time at ``bit`` and the input bit it came through, iteratively (paths can be
        thousands of cells long)."""
        stack = [bit]
        while stack:
            b = stack[-1]
            if b in arrival or not isinstance(b, int) or b not in driver:
                stack.pop()
                continue
            expanded.add(b)
            cell_name, out_port = driver[b]
            cell = cells[cell_name]
            kind = cell["type"]
            if kind in _CLOCK_TO_OUT_NS:
                arrival[b] = (_CLOCK_TO_OUT_NS[kind], None)
                stack.pop()
                continue
            inputs = [(p, x) for p, bits in cell["connections"].items()
                      if cell["port_directions"].get(p) == "input" for x in bits
                      if isinstance(x, int) and x in driver]
            if kind == "TRELLIS_DPR16X4":    # the asynchronous read: address to data
                inputs = [(p, x) for p, x in inputs if p.startswith("RAD")]
            elif kind == "TRELLIS_COMB":      # placed: a LUT RAM's write side is synchronous
                inputs = [(p, x) for p, x in inputs if not p.startswith("W")]
            # An input already being expanded closes a loop (a placed netlist's slices can
            # look like one): it is left out.
            pending = [x for _p, x in inputs if x not in arrival and x not in expanded]
            inputs = [(p, x) for p, x in inputs if x in arrival or x not in expanded]
            if pending:
                stack.extend(pending)
                continue
            if not inputs:                    # a constant driver: no delay, no distance
                constants.add(cell_name)
                arrival[b] = (0.0, None)
                stack.pop()
                continue
            best = (_LOGIC_NS.get(kind, 0.4), None)
            for port, x in inputs:
                chain = port in _CHAIN_PORTS
                hop = 0.05 if chain else route_ns(driver[x][0], cell_name)
                logic = 0.1 if chain and out_port in ("COUT", "FCO") else \
                    _LOGIC_NS.get(kind, 0.4)
                t = arrival[x][0] + hop + logic
                if t > best[0]:
                    best = (t, x)
            arrival[b] = best
            stack.pop()
        return arrival.get(bit, (0.0, None))

    ends = []
    for cell_name, cell in cells.items():
        if cell["type"] == "TRELLIS_FF":
            ports = ("DI", "CE", "LSR")
        elif cell["type"] in ("DP16KD", "MULT18X18D"):
            ports = [p for p, d in cell["port_directions"].items()
                     if d == "input" and not p.startswith("CLK")]
        else:
            continue
        for port in ports:
            for bit in cell["connections"].get(port, []):
                if isinstance(bit, int):
                    hop = route_ns(driver[bit][0], cell_name) if bit in driver else ROUTE_NS
                    ends.append((arrive(bit)[0] + hop + _SETUP_NS, cell_name, port, bit))
    ends.sort(key=lambda e: -e[0])

    out, seen = [], set()
    for ns, cell_name, port, bit in ends:
        register = register_of(cell_name)
        if register in seen:
            continue
        seen.add(register)
        endpoint = f"{register}.{port}"
        path = []
        b = bit
        while b is not None and isinstance(b, int) and b in driver:
            t, previous = arrival.get(b, (0.0, None))
            path.append((round(t, 2), cells[driver[b][0]]["type"], names.get(b, "?")))
            b = previous
        out.append((round(ns, 2), endpoint, path[::-1]))
        if len(out) == top:
            break
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m mxe.synth.depth",
        description="rank the long register-to-register paths of an ECP5 netlist.json "
                    "(a coarse delay model; Fmax comes from mxe synth --pnr)")
    parser.add_argument("netlist", help="netlist.json from an mxe synth work directory, or a "
                                        "placed netlist written by nextpnr --write")
    parser.add_argument("--top", type=int, default=30, help="endpoints to list (default: 30)")
    parser.add_argument("--trace", type=int, default=3,
                        help="print the cells of the first K paths (default: 3)")
    args = parser.parse_args(argv)
    with open(args.netlist) as f:
        netlist = json.load(f)
    paths = longest_paths(netlist, top=args.top)
    print(f"{'estimate':>9}  endpoint (register.port)")
    for i, (ns, endpoint, path) in enumerate(paths):
        print(f"{ns:7.1f} ns  {endpoint}  ({len(path)} cells, ~{1000 / ns:.0f} MHz)")
        if i < args.trace:
            for t, kind, net in path:
                print(f"{'':13}{t:5.1f} {kind:9} {net[:80]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
