"""Lattice iCE40 boards (iCEBreaker): the engine runs from the board's oscillator."""

from amaranth import Const
from amaranth.lib import io

from .catalog import BoardTop, ClockPlan


__all__ = ["ICE40Top", "TOP"]


class ICE40Top(BoardTop):
    """A BoardSoC on an iCE40 board, clocked straight from the board oscillator (no PLL).

    See :class:`~mxe.hw.boards.catalog.BoardTop` for the parameters. The clock must be the
    oscillator's (12 MHz on the iCEBreaker): the SB_PLL40 is not used, since an engine that fits
    an UP5K at all will not run much faster than that.
    """

    @classmethod
    def plan_clock(cls, input_hz, output_hz):
        if abs(output_hz - input_hz) > 1e-6 * input_hz:
            raise ValueError(f"clock {output_hz / 1e6:g} MHz: the iCE40 top runs from the "
                             f"board's {input_hz / 1e6:g} MHz oscillator (no PLL); use "
                             f"--clock {input_hz / 1e6:g}")
        return ClockPlan(input_hz=float(input_hz), requested_hz=float(output_hz),
                         output_hz=float(input_hz))

    def make_clock(self, m, platform):
        clk_in = platform.request(platform.default_clk, dir="-")
        m.submodules.clk_in = clk_buf = io.Buffer("i", clk_in)   # SB_GB_IO: GLOBAL on the pin
        return clk_buf.i, Const(1)


#: The top class of this family (:attr:`~mxe.hw.boards.catalog.Board.top_class`).
TOP = ICE40Top
