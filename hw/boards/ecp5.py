"""Lattice ECP5 boards (ULX3S, Colorlight 5A-75B): the engine clock from an EHXPLLL."""

from fractions import Fraction
from math import ceil, floor

from amaranth import Instance, Signal
from amaranth.lib import io

from .catalog import BoardTop, ClockPlan, clock_range_mhz


__all__ = ["ECP5Top", "ecp5_pll", "TOP"]


# EHXPLLL limits (ECP5 data sheet, as Project Trellis' ecppll uses them), in MHz.
CLKI_RANGE = (8, 400)
PFD_RANGE = (3.125, 400)
VCO_RANGE = (400, 800)
CLKOP_RANGE = (3.125, 400)
CLKI_DIVS = range(1, 129)
CLKFB_DIVS = range(1, 81)
CLKOP_DIVS = range(1, 129)


def ecp5_pll(input_hz, output_hz, *, tolerance=0.005):
    """EHXPLLL dividers for ``output_hz`` from ``input_hz``, feedback from CLKOP.

    ``CLKOP = CLKI / CLKI_DIV * CLKFB_DIV`` and the VCO runs at ``CLKOP * CLKOP_DIV``, which must
    lie in 400..800 MHz. Of the settings closest to the requested clock, the one whose VCO is
    nearest 600 MHz is taken (as Project Trellis' ``ecppll`` does); CLKOP is shifted by half a
    period, as ``ecppll`` and Lattice's tools do.

    Parameters
    ----------
    input_hz : float
        The oscillator on CLKI (8..400 MHz).
    output_hz : float
        The clock wanted on CLKOP (3.125..400 MHz).
    tolerance : float
        How far from ``output_hz`` the result may be, as a fraction.

    Returns
    -------
    ClockPlan
        ``params`` holds ``CLKI_DIV``, ``CLKFB_DIV``, ``CLKOP_DIV``, ``CLKOP_CPHASE`` and the
        VCO and phase detector frequencies in MHz.

    Raises
    ------
    ValueError
        If a clock is out of range or no setting comes within ``tolerance``; the message names
        the clock.
    """
    fin, fout = clock_range_mhz(input_hz, output_hz, "EHXPLLL", CLKI_RANGE, CLKOP_RANGE)
    best = None
    for clki_div in CLKI_DIVS:
        pfd = fin / clki_div
        if pfd < PFD_RANGE[0]:
            break
        if pfd > PFD_RANGE[1]:
            continue
        for clkfb_div in CLKFB_DIVS:
            out = pfd * clkfb_div
            # The VCO runs at out * CLKOP_DIV: any divider that puts it in range will do.
            lo = max(CLKOP_DIVS.start, ceil(VCO_RANGE[0] / out))
            hi = min(CLKOP_DIVS.stop - 1, floor(VCO_RANGE[1] / out))
            if lo > hi:
                continue
            clkop_div = min(max(round(600 / out), lo), hi)
            vco = out * clkop_div
            key = (abs(out - fout), abs(vco - 600), clki_div)
            if best is None or key < best[0]:
                best = (key, clki_div, clkfb_div, clkop_div, out, vco, pfd)
    if best is None or best[0][0] > fout * Fraction(tolerance):
        near = "" if best is None else f" (nearest {float(best[4]):.4f} MHz)"
        raise ValueError(f"clock {float(fout):g} MHz cannot be made by the EHXPLLL from "
                         f"{float(fin):g} MHz within {tolerance:.1%} with a VCO in "
                         f"{VCO_RANGE[0]}..{VCO_RANGE[1]} MHz{near}")
    _, clki_div, clkfb_div, clkop_div, out, vco, pfd = best
    return ClockPlan(
        input_hz=float(input_hz), requested_hz=float(output_hz), output_hz=float(out * 1e6),
        primitive="EHXPLLL",
        params={"CLKI_DIV": clki_div, "CLKFB_DIV": clkfb_div, "CLKOP_DIV": clkop_div,
                "CLKOP_CPHASE": clkop_div // 2, "vco_mhz": float(vco), "pfd_mhz": float(pfd)})


class ECP5Top(BoardTop):
    """A BoardSoC on an ECP5 board, clocked from the board oscillator through an EHXPLLL.

    See :class:`~mxe.hw.boards.catalog.BoardTop` for the parameters. The PLL's LOCK holds the
    SoC in reset; the PLL output carries a frequency constraint of the clock it makes.
    """

    @classmethod
    def plan_clock(cls, input_hz, output_hz):
        return ecp5_pll(input_hz, output_hz)

    def make_clock(self, m, platform):
        plan = self.clock
        p = plan.params
        clk_in = platform.request(platform.default_clk, dir="-")
        m.submodules.clk_in = clk_buf = io.Buffer("i", clk_in)
        clk = Signal(name="pll_clk")
        locked = Signal(name="pll_locked")
        m.submodules.pll = Instance(
            "EHXPLLL",
            # Attributes Lattice's tools (and ecppll) put on the PLL; nextpnr reads none of them.
            a_FREQUENCY_PIN_CLKI=f"{plan.input_hz / 1e6:g}",
            a_FREQUENCY_PIN_CLKOP=f"{plan.output_hz / 1e6:.6g}",
            a_ICP_CURRENT="12", a_LPF_RESISTOR="8", a_MFG_ENABLE_FILTEROPAMP="1",
            a_MFG_GMCREF_SEL="2",
            p_PLLRST_ENA="DISABLED", p_INTFB_WAKE="DISABLED", p_STDBY_ENABLE="DISABLED",
            p_DPHASE_SOURCE="DISABLED",
            p_OUTDIVIDER_MUXA="DIVA", p_OUTDIVIDER_MUXB="DIVB", p_OUTDIVIDER_MUXC="DIVC",
            p_OUTDIVIDER_MUXD="DIVD",
            p_CLKI_DIV=p["CLKI_DIV"], p_CLKFB_DIV=p["CLKFB_DIV"],
            p_CLKOP_ENABLE="ENABLED", p_CLKOP_DIV=p["CLKOP_DIV"],
            p_CLKOP_CPHASE=p["CLKOP_CPHASE"], p_CLKOP_FPHASE=0,
            p_FEEDBK_PATH="CLKOP",
            i_CLKI=clk_buf.i, i_CLKFB=clk, o_CLKOP=clk, o_LOCK=locked,
            i_RST=0, i_STDBY=0, i_PHASESEL0=0, i_PHASESEL1=0, i_PHASEDIR=1, i_PHASESTEP=1,
            i_PHASELOADREG=1, i_PLLWAKESYNC=0, i_ENCLKOP=0,
        )
        platform.add_clock_constraint(clk, plan.output_hz)
        return clk, locked


#: The top class of this family (:attr:`~mxe.hw.boards.catalog.Board.top_class`).
TOP = ECP5Top
