"""Sequential arithmetic for the command expanders' set-up: a divider and a multiplier that
take a bit a cycle and only as many cycles as their operands have bits.

The convolution unit uses both, the GEMM unit the divider, each through
:func:`division_states`; both tile by a power-of-two side with :func:`pow2_tiles`.
"""

from amaranth import Cat, Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out


__all__ = ["Divider", "Multiplier", "division_states", "pow2_tiles"]


class Divider(wiring.Component):
    """Restoring divider, a quotient bit a cycle: ``quotient, remainder = divmod(num, den)``.

    Parameters
    ----------
    width : int
        Numerator and quotient bits.
    den_width : int, optional
        Denominator and remainder bits (``width`` if omitted): a divider by small numbers keeps
        a narrow remainder and compare.

    Members
    -------
    start : In(1)
        Take ``num``, ``den`` and ``steps`` this cycle.
    steps : In(range(width + 1))
        The numerator's bits: ``num`` must be below ``2 ** steps`` and come aligned to the top,
        ``num << (width - steps)``, so a narrow numerator takes only its own bits' cycles (the
        shift is a wiring when ``steps`` is a constant of each use).
    num, den : In(width), In(den_width)
    quotient, remainder : Out(width), Out(den_width)
        Valid with ``done``.
    done : Out(1)
        A register: high ``steps`` cycles after ``start`` (``steps`` at least 1) until the
        next ``start``.
    """

    def __init__(self, width, *, den_width=None):
        if not isinstance(width, int) or width <= 0:
            raise TypeError(f"width must be a positive integer, not {width!r}")
        den_width = width if den_width is None else den_width
        if not isinstance(den_width, int) or not 0 < den_width <= width:
            raise ValueError(f"den_width must be an integer in 1..width, not {den_width!r}")
        self._width = width
        self._den_width = den_width
        super().__init__({
            "start": In(1), "steps": In(range(width + 1)),
            "num": In(width), "den": In(den_width),
            "quotient": Out(width), "remainder": Out(den_width), "done": Out(1),
        })

    def begin(self, num, den, steps):
        """The combinational assignments that start ``divmod(num, den)`` this cycle, ``num``
        below ``2 ** steps`` (aligned to the top here)."""
        return [self.start.eq(1), self.steps.eq(steps),
                self.num.eq(num << (self._width - steps)), self.den.eq(den)]

    def elaborate(self, platform):
        m = Module()
        w = self._width
        count = Signal(range(w + 1))
        den = Signal(self._den_width)
        shifted = Cat(self.quotient[w - 1], self.remainder)  # (remainder << 1) | next bit
        with m.If(self.start):
            m.d.sync += [self.quotient.eq(self.num), self.remainder.eq(0), den.eq(self.den),
                         count.eq(self.steps), self.done.eq(0)]
        with m.Elif(count != 0):
            m.d.sync += [count.eq(count - 1), self.done.eq(count == 1)]
            with m.If(shifted >= den):
                m.d.sync += [self.remainder.eq(shifted - den),
                             self.quotient.eq(Cat(1, self.quotient[:w - 1]))]
            with m.Else():
                m.d.sync += [self.remainder.eq(shifted),
                             self.quotient.eq(Cat(0, self.quotient[:w - 1]))]
        with m.Else():
            m.d.sync += self.done.eq(1)
        return m


class Multiplier(wiring.Component):
    """Shift-add multiplier that stops when no multiplier bit is left: ``product = a * b``
    (modulo ``2 ** width``) ``max(1, bits(a))`` cycles after ``start``.

    Parameters
    ----------
    a_width : int
        Multiplier bits (the operand whose bits cost cycles: give it the smaller one).
    width : int
        Multiplicand and product bits.

    Members
    -------
    start : In(1)
        Take ``a`` and ``b`` this cycle.
    a, b : In(a_width), In(width)
    product : Out(width)
        Valid with ``done``.
    done : Out(1)
        A register (no compare behind it): high from the product's last cycle on until the
        next ``start``.
    """

    def __init__(self, a_width, width):
        for name, value in (("a_width", a_width), ("width", width)):
            if not isinstance(value, int) or value <= 0:
                raise TypeError(f"{name} must be a positive integer, not {value!r}")
        super().__init__({
            "start": In(1), "a": In(a_width), "b": In(width),
            "product": Out(width), "done": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        a = Signal.like(self.a)
        b = Signal.like(self.b)
        with m.If(self.start):
            m.d.sync += [self.product.eq(0), a.eq(self.a), b.eq(self.b), self.done.eq(0)]
        with m.Elif(~self.done):
            with m.If(a[0]):
                m.d.sync += self.product.eq(self.product + b)
            m.d.sync += [a.eq(a >> 1), b.eq(b << 1), self.done.eq(a[1:] == 0)]
        return m


def division_states(m, div, state, num, den, steps, then, results):
    """States ``state`` and ``state_WAIT`` of the FSM being built in ``m``: ``state`` starts
    ``divmod(num, den)`` on the :class:`Divider` ``div`` (``num`` below ``2 ** steps``);
    ``state_WAIT`` waits for its ``done``, then makes the assignments ``results(quotient,
    remainder)`` and goes on to ``then``."""
    with m.State(state):
        m.d.comb += div.begin(num, den, steps)
        m.next = f"{state}_WAIT"
    with m.State(f"{state}_WAIT"):
        with m.If(div.done):
            m.d.sync += results(div.quotient, div.remainder)
            m.next = then


def pow2_tiles(size, side, count, tail):
    """The assignments ``count = ceil(size / side)`` and ``tail`` = the last tile's size
    (``side`` when whole) for a power-of-two ``side``: a shift and a mask, no divider."""
    low = size[:side.bit_length() - 1]
    return [count.eq((size >> (side.bit_length() - 1)) + (low != 0)),
            tail.eq(Mux(low == 0, side, low))]
