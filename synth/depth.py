"""A quick ranking of the long register-to-register paths of a synthesized ECP5 netlist.

Place and route of a whole engine takes nextpnr an hour or more and reports one critical path;
this reads the ``netlist.json`` that ``mxe synth`` keeps in its work directory and, in seconds,
lists the endpoints with the longest paths, one per block register, so a timing pass can see all
its targets at once. The delays are a coarse model, not a timing analysis: every net costs
``ROUTE_NS`` of routing, a LUT4 0.4 ns, a carry cell 0.45 ns into the chain and 0.1 ns along it,
a block RAM 4.3 ns from its clock. It ranks paths well and is typically within 30 % of the
placed estimate; Fmax comes from ``mxe synth --pnr``.

Usage: ``python -m mxe.synth.depth WORKDIR/netlist.json [--top N] [--trace K]``
"""

import argparse
import json
import sys


__all__ = ["ROUTE_NS", "longest_paths"]

#: Routing delay assumed for every net between cells.
ROUTE_NS = 0.8
_LOGIC_NS = {"LUT4": 0.4, "PFUMX": 0.25, "L6MUX21": 0.25, "CCU2C": 0.45,
             "TRELLIS_DPR16X4": 0.6}
#: Clock-to-output of the cells that start a path.
_CLOCK_TO_OUT_NS = {"TRELLIS_FF": 0.5, "DP16KD": 4.3, "MULT18X18D": 0.9}
_SETUP_NS = 0.2


def _top_module(netlist):
    for name, module in netlist["modules"].items():
        if module.get("attributes", {}).get("top"):
            return module
    raise ValueError("the netlist has no top module")


def longest_paths(netlist, *, top=30):
    """``[(ns, "register.port", [(ns, cell type, net name), ...]), ...]``: the ``top`` longest
    paths, at most one per register (the flip-flop cell name without its bit suffix)."""
    module = _top_module(netlist)
    cells = module["cells"]
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

    def arrive(bit):
        """Arrival time at ``bit`` and the input bit it came through, iteratively (paths can be
        thousands of cells long)."""
        stack = [bit]
        while stack:
            b = stack[-1]
            if b in arrival or not isinstance(b, int) or b not in driver:
                stack.pop()
                continue
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
            pending = [x for _p, x in inputs if x not in arrival]
            if pending:
                stack.extend(pending)
                continue
            best = (_LOGIC_NS.get(kind, 0.4), None)
            for port, x in inputs:
                chain = kind == "CCU2C" and port == "CIN"
                hop = 0.05 if chain else ROUTE_NS
                logic = 0.1 if chain and out_port == "COUT" else _LOGIC_NS.get(kind, 0.4)
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
                    ends.append((arrive(bit)[0] + ROUTE_NS + _SETUP_NS, cell_name, port, bit))
    ends.sort(key=lambda e: -e[0])

    out, seen = [], set()
    for ns, cell_name, port, bit in ends:
        register = cell_name.split("_TRELLIS_FF")[0]
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
    parser.add_argument("netlist", help="netlist.json from an mxe synth work directory")
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
