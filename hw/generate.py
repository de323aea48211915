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


def to_verilog(component, *, name):
    """Verilog text of ``component`` as a module called ``name``."""
    if not isinstance(component, wiring.Component):
        raise TypeError(f"component must be a wiring.Component, not {component!r}")
    text = verilog.convert(component, name=name, ports=component_ports(component),
                           emit_src=False)
    return _CONSTANT_ALWAYS.sub(r"initial \2 = \3;", text)


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
