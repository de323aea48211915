"""A pin wrapper: any component behind five pins, so place and route works on small packages.

The bare array or engine has hundreds of I/O bits, more than any iCE40 package. For a timing
estimate the wrapper feeds every input of the design from one long shift register loaded through
a single pin and captures every output in a register chain read out through another, so each
input and output of the design is a register-to-register path of its own and nothing is
optimized away. The Fmax of the wrapped design is the Fmax of the design's internal paths (the
wrapper's own paths are a one-LUT shift chain); its resource use adds about one FF per I/O bit.
"""

from amaranth import Cat, Elaboratable, Module, Signal
from amaranth.hdl import Const, Value
from amaranth.lib.wiring import Flow


__all__ = ["PinWrapper", "port_bits"]


def _ports(component):
    inputs, outputs = [], []
    for _path, member, value in component.signature.flatten(component):
        value = Value.cast(value)
        if isinstance(value, Const):
            continue
        (inputs if member.flow == Flow.In else outputs).append(value)
    return inputs, outputs


def port_bits(component):
    """``(input bits, output bits)`` of a component's signature (constant members excluded)."""
    inputs, outputs = _ports(component)
    return sum(len(v) for v in inputs), sum(len(v) for v in outputs)


class PinWrapper(Elaboratable):
    """``component`` with its ports reached through shift registers.

    Parameters
    ----------
    component : wiring.Component
        The design to wrap; it becomes submodule ``dut``.

    Members
    -------
    sin : Signal
        Serial input: shifted into the input chain every cycle.
    load : Signal
        Capture all outputs of the design into the output chain (else shift it).
    sout : Signal
        Serial output: the end of the output chain.
    """

    def __init__(self, component):
        self._component = component
        self.sin = Signal()
        self.load = Signal()
        self.sout = Signal()

    def ports(self):
        return [self.sin, self.load, self.sout]

    def elaborate(self, platform):
        m = Module()
        m.submodules.dut = dut = self._component
        inputs, outputs = _ports(dut)

        in_bits = Cat(*inputs)
        chain = Signal(max(1, len(in_bits)))
        m.d.sync += chain.eq(Cat(self.sin, chain[:-1]))
        m.d.comb += in_bits.eq(chain[:len(in_bits)])

        out_bits = Cat(*outputs)
        capture = Signal(max(1, len(out_bits)))
        with m.If(self.load):
            m.d.sync += capture.eq(out_bits)
        with m.Else():
            m.d.sync += capture.eq(capture >> 1)
        m.d.comb += self.sout.eq(capture[0])
        return m
