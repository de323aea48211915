"""AMD/Xilinx 7-series boards (Arty A7): the engine clock from an MMCME2_BASE.

Vivado is not part of the open flow: ``mxe board build`` writes the Verilog, the XDC constraints
and the Tcl script that Vivado runs (``vivado -mode batch -source <top>.tcl``).
"""

from fractions import Fraction

from amaranth import Instance, Signal
from amaranth.lib import io

from .catalog import BoardTop, ClockPlan, clock_range_mhz


__all__ = ["XilinxTop", "mmcm_config", "TOP"]


# MMCME2 limits for Artix-7 speed grades -1 and -1L (DS181), in MHz.
CLKIN_RANGE = (10, 800)
PFD_RANGE = (10, 450)
VCO_RANGE = (600, 1200)
CLKOUT_RANGE = (4.69, 450)
DIVCLK_DIVIDES = range(1, 107)
CLKFBOUT_MULTS = range(2, 65)
CLKOUT_DIVIDES = range(1, 129)


def mmcm_config(input_hz, output_hz, *, tolerance=0.005):
    """MMCME2_BASE settings for ``output_hz`` on CLKOUT0 from ``input_hz`` on CLKIN1.

    ``VCO = CLKIN1 / DIVCLK_DIVIDE * CLKFBOUT_MULT_F`` (600..1200 MHz) and
    ``CLKOUT0 = VCO / CLKOUT0_DIVIDE_F``; integer settings only. Of the settings closest to the
    requested clock, the one with the smallest input divider and then a VCO nearest 1000 MHz
    (what Vivado's clocking wizard picks for the Arty's 100 MHz).

    Returns
    -------
    ClockPlan
        ``params`` holds ``DIVCLK_DIVIDE``, ``CLKFBOUT_MULT_F``, ``CLKOUT0_DIVIDE_F`` and the VCO
        frequency in MHz.

    Raises
    ------
    ValueError
        If a clock is out of range or no setting comes within ``tolerance``; the message names
        the clock.
    """
    fin, fout = clock_range_mhz(input_hz, output_hz, "MMCME2", CLKIN_RANGE, CLKOUT_RANGE)
    best = None
    for divclk in DIVCLK_DIVIDES:
        pfd = fin / divclk
        if pfd < PFD_RANGE[0]:
            break
        if pfd > PFD_RANGE[1]:
            continue
        for mult in CLKFBOUT_MULTS:
            vco = pfd * mult
            if not VCO_RANGE[0] <= vco <= VCO_RANGE[1]:
                continue
            div = min(max(round(vco / fout), CLKOUT_DIVIDES.start), CLKOUT_DIVIDES.stop - 1)
            out = vco / div
            key = (abs(out - fout), divclk, abs(vco - 1000))
            if best is None or key < best[0]:
                best = (key, divclk, mult, div, out, vco)
    if best is None or best[0][0] > fout * Fraction(tolerance):
        near = "" if best is None else f" (nearest {float(best[4]):.4f} MHz)"
        raise ValueError(f"clock {float(fout):g} MHz cannot be made by the MMCME2 from "
                         f"{float(fin):g} MHz within {tolerance:.1%} with a VCO in "
                         f"{VCO_RANGE[0]}..{VCO_RANGE[1]} MHz{near}")
    _, divclk, mult, div, out, vco = best
    return ClockPlan(
        input_hz=float(input_hz), requested_hz=float(output_hz), output_hz=float(out * 1e6),
        primitive="MMCME2_BASE",
        params={"DIVCLK_DIVIDE": divclk, "CLKFBOUT_MULT_F": mult, "CLKOUT0_DIVIDE_F": div,
                "vco_mhz": float(vco)})


class XilinxTop(BoardTop):
    """A BoardSoC on a 7-series board, clocked through an MMCME2_BASE and a BUFG.

    See :class:`~mxe.hw.boards.catalog.BoardTop` for the parameters. The MMCM's LOCKED holds
    the SoC in reset. Vivado derives the engine clock's constraint from the oscillator's
    (``create_clock`` on the input pin, in the XDC) through the MMCM.
    """

    @classmethod
    def plan_clock(cls, input_hz, output_hz):
        return mmcm_config(input_hz, output_hz)

    def make_clock(self, m, platform):
        plan = self.clock
        p = plan.params
        clk_in = platform.request(platform.default_clk, dir="-")
        m.submodules.clk_in = clk_buf = io.Buffer("i", clk_in)
        feedback = Signal(name="mmcm_feedback")
        mmcm_out = Signal(name="mmcm_clkout0")
        clk = Signal(name="mmcm_clk")
        locked = Signal(name="mmcm_locked")
        m.submodules.mmcm = Instance(
            "MMCME2_BASE",
            p_BANDWIDTH="OPTIMIZED",
            p_CLKIN1_PERIOD=round(1e9 / plan.input_hz, 3),
            p_DIVCLK_DIVIDE=p["DIVCLK_DIVIDE"],
            p_CLKFBOUT_MULT_F=float(p["CLKFBOUT_MULT_F"]),
            p_CLKOUT0_DIVIDE_F=float(p["CLKOUT0_DIVIDE_F"]),
            p_STARTUP_WAIT="FALSE",
            i_CLKIN1=clk_buf.i, i_CLKFBIN=feedback, o_CLKFBOUT=feedback,
            o_CLKOUT0=mmcm_out, o_LOCKED=locked, i_RST=0, i_PWRDWN=0,
        )
        m.submodules.bufg = Instance("BUFG", i_I=mmcm_out, o_O=clk)
        return clk, locked


#: The top class of this family (:attr:`~mxe.hw.boards.catalog.Board.top_class`).
TOP = XilinxTop
