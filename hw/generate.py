"""Verilog generation for MXE components."""

import re

from amaranth.back import verilog
from amaranth.hdl import Const, Value
from amaranth.lib import wiring


__all__ = ["TOPS", "component_ports", "to_verilog"]


def component_ports(component):
    """The top-level ports of ``component``, in signature order.

    Members that are constant by construction (the ``ready`` of an ``always_ready`` stream) are
    left out: they are not wires of the design.
    """
    ports = []
    for _path, _member, value in component.signature.flatten(component):
        value = Value.cast(value)
        if not isinstance(value, Const):
            ports.append(value)
    return ports


# Yosys writes a constant driving part of a signal as ``always @* x[3:0] = 4'h0;``. Such a block
# has nothing in its sensitivity list, so Icarus never runs it and the bits stay X. An ``initial``
# assignment means the same to simulators and to synthesis (an initial value).
_CONSTANT_ALWAYS = re.compile(r"always @\*\n(\s+)([^\n;]+?) = (\d+'[hbd][0-9a-fA-F_]+);")


# Yosys puts a dummy register, initialized to 0, in the sensitivity list of every ``always @*``
# block so that it runs once at time zero. Icarus may initialize the register before the block
# starts waiting on it; a block whose real inputs then never change (an FSM output while in
# reset) stays X. Changing the dummy once more after time zero's active events (``#0``) runs
# every block; only Icarus sees the line (Verilator and synthesis do not need it).
_YOSYS_TRIGGER = re.compile(r"reg (\\\$auto\$verilog_backend\S*dump_module\$\d+) += 0;")


def _icarus_trigger(match):
    return f"{match.group(0)}\n`ifdef __ICARUS__\n  initial #0 {match.group(1)} = 1;\n`endif"


def to_verilog(component, *, name, src=False):
    """Verilog text of ``component`` as a module called ``name``, for synthesis and for every
    simulator the project uses (Verilator, Icarus) as it is written. ``src`` keeps Amaranth's
    ``(* src = "file:line" *)`` attributes (coverage builds map Verilog back to Python)."""
    if not isinstance(component, wiring.Component):
        raise TypeError(f"component must be a wiring.Component, not {component!r}")
    text = verilog.convert(component, name=name, ports=component_ports(component),
                           emit_src=src)
    text = _CONSTANT_ALWAYS.sub(r"initial \2 = \3;", text)
    return _YOSYS_TRIGGER.sub(_icarus_trigger, text)


def _array(config):
    from .array import SystolicArray
    return SystolicArray(config)


def _csr(config):
    from .csr import CSRBlock
    return CSRBlock(config)


#: Blocks ``mxe generate --top`` can emit: name -> (constructor taking an EngineConfig,
#: Verilog module name).
TOPS = {
    "array": (_array, "mxe_array"),
    "csr": (_csr, "mxe_csr"),
}


def _dma(config):
    from .dma import DMA
    return DMA(config)


TOPS["dma"] = (_dma, "mxe_dma")


def _engine(config):
    from .engine import Engine
    return Engine(config)


TOPS["engine"] = (_engine, "mxe_engine")
