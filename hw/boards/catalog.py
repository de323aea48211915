"""The FPGA boards MXE is built for, and what their tops share.

A :class:`Board` names the amaranth-boards platform, the engine configuration that fits the
board's FPGA, the engine clock, the UART's bit rate and the on-chip memory of the
:class:`~mxe.hw.boards.soc.BoardSoC`; :data:`BOARDS` holds them by name (``mxe board list``).
Each FPGA family has its top (:mod:`.ecp5`, :mod:`.ice40`, :mod:`.xilinx`): a subclass of
:class:`BoardTop`, which does the part every board shares (reset, UART pins, LEDs, the SoC) and
leaves the clock to the family.
"""

import dataclasses
import importlib
from dataclasses import dataclass, field
from fractions import Fraction

from amaranth import ClockDomain, ClockSignal, Elaboratable, Module, ResetSignal, Signal
from amaranth.lib import io
from amaranth.lib.cdc import FFSynchronizer

from ..config import PRESETS, EngineConfig
from ..uart import uart_divisor
from .soc import BoardSoC, soc_addr_width


__all__ = ["Board", "BOARDS", "BoardTop", "ClockPlan", "board", "clock_range_mhz", "KIB"]


KIB = 1024


@dataclass(frozen=True)
class ClockPlan:
    """How a top makes its engine clock from the board's oscillator.

    Parameters
    ----------
    input_hz : float
        The board's oscillator.
    requested_hz : float
        The clock asked for.
    output_hz : float
        The clock the dividers make (what the engine runs at, and what timing is checked for).
    primitive : str or None
        ``EHXPLLL``, ``MMCME2_BASE``, or ``None`` when the oscillator drives the engine directly.
    params : dict
        The primitive's divider settings and its VCO frequency, for the build report.
    """

    input_hz: float
    requested_hz: float
    output_hz: float
    primitive: str = None
    params: dict = field(default_factory=dict)

    def to_dict(self):
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class Board:
    """One board: its platform, the engine built for it and how the top uses its pins.

    Parameters
    ----------
    name : str
        Command-line name (``ulx3s-85f``).
    title : str
        What the board is, for ``mxe board list``.
    family : str
        ``ecp5``, ``ice40`` or ``xilinx``: the top class (:attr:`top_class`) and the synthesis
        family (:mod:`mxe.synth.devices`).
    device : str
        The FPGA as :mod:`mxe.synth.devices` names it (capacities for the fit check).
    platform : type
        The amaranth-boards platform class.
    preset : str
        Engine preset (:data:`mxe.hw.config.PRESETS`)...
    config_changes : dict
        ...and the parameters changed from it for this board (``multiplier="dsp"`` where the
        FPGA has DSPs for every PE).
    clock_mhz : float
        Default engine clock.
    baud : int
        Default UART bit rate.
    mem_size : int
        Bytes of on-chip RAM in the SoC (operands and results of the host's GEMMs).
    mem_single_port : bool
        The RAM is single-ported, for the iCE40 UP5K's SPRAM (128 KiB in four blocks, no
        initial contents); block RAM otherwise.
    reset : tuple or None
        ``(resource, number)`` of the button that resets the SoC, or ``None``.
    leds : dict
        LED role (``busy``, ``error``, ``irq``, ``alive``: a 1 Hz blink once out of reset) to
        the number of the board's ``led`` resource.
    programmer : tuple
        openFPGALoader options that pick the board or cable (``-b ulx3s``).
    capacity : dict or None
        Capacities for a device :mod:`mxe.synth.devices` does not list.
    note : str
        One line for ``mxe board list`` (what limits the board).
    """

    name: str
    title: str
    family: str
    device: str
    platform: type
    preset: str
    clock_mhz: float
    baud: int
    mem_size: int
    config_changes: dict = field(default_factory=dict)
    mem_single_port: bool = False
    reset: tuple = None
    leds: dict = field(default_factory=dict)
    programmer: tuple = ()
    capacity: dict = None
    note: str = ""

    @property
    def config(self):
        """The :class:`~mxe.hw.config.EngineConfig` built for this board."""
        return PRESETS[self.preset].replace(**self.config_changes)

    @property
    def clock_hz(self):
        """The engine clock a default build runs at: :attr:`clock_mhz` as the board's clock
        primitive makes it from its oscillator."""
        input_hz = self.platform().default_clk_frequency
        return self.top_class.plan_clock(input_hz, self.clock_mhz * 1e6).output_hz

    @property
    def engine_label(self):
        """The preset and its changes, as ``tiny`` or ``small, multiplier=dsp, dsp_budget=0``."""
        return ", ".join([self.preset, *(f"{k}={v}" for k, v in self.config_changes.items())])

    @property
    def top_name(self):
        """Name of the top-level module and of the build's files (``mxe_ulx3s_85f``)."""
        return "mxe_" + self.name.replace("-", "_")

    @property
    def top_class(self):
        """The family's :class:`BoardTop` subclass (imported here, since those modules import
        this one)."""
        module = importlib.import_module(f"{__package__}.{self.family}")
        return module.TOP


def clock_range_mhz(input_hz, output_hz, primitive, input_range, output_range):
    """``(input, output)`` in MHz as fractions, after checking both against a clock primitive's
    ranges (MHz); ValueError naming the clock otherwise. Shared by the PLL planners."""
    fin = Fraction(input_hz) / 1_000_000
    fout = Fraction(output_hz) / 1_000_000
    if not input_range[0] <= fin <= input_range[1]:
        raise ValueError(f"input clock {float(fin):g} MHz is outside the {primitive}'s input "
                         f"range {input_range[0]}..{input_range[1]} MHz")
    if not output_range[0] <= fout <= output_range[1]:
        raise ValueError(f"clock {float(fout):g} MHz is outside the {primitive}'s output range "
                         f"{output_range[0]}..{output_range[1]} MHz")
    return fin, fout


class BoardTop(Elaboratable):
    """The top-level design of a board: engine clock, reset, UART and LEDs around a BoardSoC.

    A family's subclass says how the clock is made (:meth:`plan_clock`, :meth:`make_clock`).
    Everything runs in one ``sync`` domain on that clock. Its reset is synchronous: it is held
    while the reset button is pressed or the PLL is not locked (both go through a two-flip-flop
    synchronizer) and for :attr:`RESET_HOLD` cycles after, which also covers the iCE40's block
    RAMs, unreadable for a few microseconds after configuration.

    Parameters
    ----------
    board : Board
    clock_mhz : float or None
        Engine clock; the board's default when ``None``.
    baud : int or None
        UART bit rate; the board's default when ``None``.
    mem_size : int or None
        Bytes of SoC memory; the board's default when ``None``.
    config : EngineConfig or None
        The engine; the board's (:attr:`Board.config`) when ``None``.
    soc : callable or None
        Builds the SoC component from ``(config, mem_size=, divisor=, timeout_cycles=)``;
        :class:`~mxe.hw.boards.soc.BoardSoC` when ``None``.

    Raises
    ------
    TypeError
        If ``board`` is not a :class:`Board` or ``config`` not an EngineConfig.
    ValueError
        If the clock cannot be made from the board's oscillator (the message names the clock),
        the UART's bit rate cannot be made from that clock (it names the baud rate), or the
        SoC refuses ``mem_size``.
    """

    #: Cycles the reset stays on after the button is released and the PLL has locked.
    RESET_HOLD = 1024

    #: How long the UART bridge waits for the rest of a command before it drops it (seconds).
    UART_TIMEOUT_S = 0.1

    def __init__(self, board, *, clock_mhz=None, baud=None, mem_size=None, config=None,
                 soc=None):
        try:
            self._setup(board, clock_mhz, baud, mem_size, config, soc)
        except (TypeError, ValueError):
            # Not a design anyone forgot to use: Amaranth need not warn when it is collected.
            self._MustUse__silence = True
            raise

    def _setup(self, board, clock_mhz, baud, mem_size, config, soc):
        if not isinstance(board, Board):
            raise TypeError(f"board must be a Board, not {board!r}")
        config = board.config if config is None else config
        if not isinstance(config, EngineConfig):
            raise TypeError(f"config must be an EngineConfig, not {config!r}")
        clock_mhz = board.clock_mhz if clock_mhz is None else clock_mhz
        if not isinstance(clock_mhz, (int, float)) or isinstance(clock_mhz, bool) \
                or not clock_mhz > 0:
            raise ValueError(f"clock must be a positive frequency in MHz, not {clock_mhz!r}")
        self._board = board
        self._config = config
        self._clock = self.plan_clock(board.platform().default_clk_frequency, clock_mhz * 1e6)
        self._baud = board.baud if baud is None else baud
        self._divisor = uart_divisor(self._clock.output_hz, self._baud)
        self._mem_size = board.mem_size if mem_size is None else mem_size
        # Made here, so its own checks (mem_size a power of two, ...) fail where it is asked for.
        self._soc = (BoardSoC if soc is None else soc)(
            config, mem_size=self._mem_size, divisor=self._divisor,
            timeout_cycles=self.timeout_cycles, single_port_memory=board.mem_single_port)

    @property
    def board(self):
        return self._board

    @property
    def config(self):
        return self._config

    @property
    def clock(self):
        """The :class:`ClockPlan`: ``clock.output_hz`` is the engine clock."""
        return self._clock

    @property
    def baud(self):
        return self._baud

    @property
    def divisor(self):
        """UART clocks per bit."""
        return self._divisor

    @property
    def actual_baud(self):
        return self._clock.output_hz / self._divisor

    @property
    def mem_size(self):
        return self._mem_size

    @property
    def soc(self):
        """The SoC component the top instantiates."""
        return self._soc

    @property
    def timeout_cycles(self):
        return round(self.UART_TIMEOUT_S * self._clock.output_hz)

    def summary(self):
        """What this top is, for the build report."""
        return {
            "board": self._board.name,
            "top": self._board.top_name,
            "platform": self._board.platform.__name__,
            "device": self._board.device,
            "engine": self._board.engine_label,
            "config": self._config.to_dict(),
            "config_key": self._config.key(),
            "clock": self._clock.to_dict(),
            "clock_mhz": round(self._clock.output_hz / 1e6, 6),
            "baud": self._baud,
            "uart_divisor": self._divisor,
            "actual_baud": round(self.actual_baud, 1),
            "baud_error_percent": round(100 * (self.actual_baud - self._baud) / self._baud, 3),
            "mem_size": self._mem_size,
        }

    # What a family provides.

    @classmethod
    def plan_clock(cls, input_hz, output_hz):
        """The :class:`ClockPlan` for ``output_hz`` from a board oscillator of ``input_hz``;
        ValueError naming the clock if it cannot be made."""
        raise NotImplementedError

    def make_clock(self, m, platform):
        """Add the clock's primitives to ``m``; return ``(clock, locked)`` signals."""
        raise NotImplementedError

    # What every board shares.

    def elaborate(self, platform):
        m = Module()
        board = self._board

        clk, locked = self.make_clock(m, platform)
        m.domains.sync = ClockDomain("sync")
        # The reset logic's own registers never reset: they run from configuration on.
        m.domains.por = ClockDomain("por", reset_less=True)
        m.d.comb += [ClockSignal("sync").eq(clk), ClockSignal("por").eq(clk)]

        request = ~locked
        if board.reset is not None:
            m.submodules.reset_button = button = io.Buffer(
                "i", platform.request(*board.reset, dir="-"))
            request |= button.i
        held = Signal(init=1)
        m.submodules.reset_sync = FFSynchronizer(request, held, o_domain="por", init=1)
        count = Signal(range(self.RESET_HOLD + 1))
        reset = Signal(init=1)
        with m.If(held):
            m.d.por += count.eq(0)
        with m.Elif(count != self.RESET_HOLD):
            m.d.por += count.eq(count + 1)
        m.d.por += reset.eq(held | (count != self.RESET_HOLD))
        m.d.comb += ResetSignal("sync").eq(reset)

        m.submodules.soc = soc = self._soc
        uart = platform.request("uart", 0, dir="-")
        m.submodules.uart_rx = rx = io.Buffer("i", uart.rx)
        m.submodules.uart_tx = tx = io.Buffer("o", uart.tx)
        m.d.comb += [soc.uart_rx.eq(rx.i), tx.o.eq(soc.uart_tx)]

        alive = Signal()
        half_period = max(2, int(self._clock.output_hz) // 2)
        half_second = Signal(range(half_period))
        with m.If(half_second == 0):
            m.d.sync += [half_second.eq(half_period - 1), alive.eq(~alive)]
        with m.Else():
            m.d.sync += half_second.eq(half_second - 1)
        roles = {"busy": soc.led_busy, "error": soc.led_error, "irq": soc.irq, "alive": alive}
        for role, number in board.leds.items():
            m.submodules[f"led_{role}"] = led = io.Buffer(
                "o", platform.request("led", number, dir="-"))
            m.d.comb += led.o.eq(roles[role])
        return m


def _boards():
    from amaranth_boards.arty_a7 import ArtyA7_35Platform, ArtyA7_100Platform
    from amaranth_boards.colorlight_5a75b_r7_0 import Colorlight_5A75B_R70Platform
    from amaranth_boards.icebreaker import ICEBreakerPlatform
    from amaranth_boards.ulx3s import (ULX3S_12F_Platform, ULX3S_25F_Platform,
                                       ULX3S_45F_Platform, ULX3S_85F_Platform)

    # ULX3S: FT231X USB-UART (3 Mbaud), the PWR button as reset (as LiteX does), 8 LEDs.
    ulx3s = dict(family="ecp5", clock_mhz=50, baud=3_000_000, mem_size=64 * KIB,
                 reset=("button_pwr", 0), leds={"busy": 0, "error": 1, "irq": 2, "alive": 7},
                 programmer=("-b", "ulx3s"))
    spram = 128 * KIB          # the UP5K's four SPRAM blocks
    boards = [
        # The 85F has DSPs for all of small's PEs (64 + 32 in the post-processor, of 156): fewer
        # LUTs than the preset, which leaves 24 PEs in LUTs to fit the 45F.
        # 45 MHz makes the FT231X's 3 Mbaud exactly (15 clocks a bit).
        Board("ulx3s-85f", "Radiona ULX3S, LFE5U-85F", device="LFE5U-85F",
              platform=ULX3S_85F_Platform, preset="small",
              config_changes={"multiplier": "dsp", "dsp_budget": 0},
              **{**ulx3s, "clock_mhz": 45}),
        Board("ulx3s-45f", "Radiona ULX3S, LFE5U-45F", device="LFE5U-45F",
              platform=ULX3S_45F_Platform, preset="small", **ulx3s),
        Board("ulx3s-25f", "Radiona ULX3S, LFE5U-25F", device="LFE5U-25F",
              platform=ULX3S_25F_Platform, preset="tiny", **ulx3s),
        # 32 KiB of memory (16 EBR) leave the engine 16 of the 12F's 32.
        Board("ulx3s-12f", "Radiona ULX3S, LFE5U-12F", device="LFE5U-12F",
              platform=ULX3S_12F_Platform, preset="lean",
              # Not in mxe.synth.devices. The data sheet's 12k LUTs and 32 EBR: nextpnr places
              # the 12F as the 25F die it is (24288 LUTs, 56 DP16KD), which Lattice does not
              # promise, so the fit check holds it to the data sheet.
              capacity={"lut_equiv": 12000, "ff": 12000, "dsp": 28, "bram": 32, "io": 197},
              note="the lean engine: no GEMM unit, counters or unaligned DMA; 32 KiB memory",
              **{**ulx3s, "mem_size": 32 * KIB}),
        # No USB-UART on board: its UART resource is J19's two pins (the LED and the button),
        # for an adapter wired there; 115200 baud suits any adapter (--baud for a faster one).
        Board("colorlight-5a-75b", "Colorlight 5A-75B v7.0, LFE5U-25F", family="ecp5",
              device="LFE5U-25F", platform=Colorlight_5A75B_R70Platform, preset="tiny",
              clock_mhz=50, baud=115_200,
              mem_size=64 * KIB, programmer=("-c", "ft232"),
              note="UART on J19 (the LED and button pins): no LEDs, no reset button"),
        # The FT2232H's second channel is the UART; 12 MHz allows 1 Mbaud at 12 clocks a bit.
        # The array's 16 products take the UP5K's 8 DSPs (two each): the post-processor
        # requantizes with the serial multiplier, in LUTs. The memory is the UP5K's SPRAM, and
        # the DMA's addresses only as wide as it needs. Four MATMULs in flight instead of six:
        # the same cycles on every GEMM benchmarked (docs/configuration.md, exec_slots).
        Board("icebreaker", "1BitSquared iCEBreaker, iCE40UP5K", family="ice40", device="up5k",
              platform=ICEBreakerPlatform, preset="lean",
              config_changes={"serial_requant": True, "acc_read_ports": 1,
                              "axi_addr_width": soc_addr_width(spram), "exec_slots": 4},
              clock_mhz=12,
              baud=1_000_000,
              mem_size=spram, mem_single_port=True, reset=("button", 0),
              leds={"busy": 1, "error": 0},
              programmer=("-b", "icebreaker"),
              note="the lean engine and the SoC need about 7.8k LUTs and 8.0k FFs: 1.5 times "
                   "the UP5K's 5280 each; 128 KiB memory in SPRAM"),
        Board("arty-a7-35", "Digilent Arty A7-35T, XC7A35T", family="xilinx", device="xc7a35t",
              platform=ArtyA7_35Platform, preset="tiny", clock_mhz=50, baud=3_000_000,
              mem_size=64 * KIB, reset=("rst", 0),
              leds={"busy": 0, "error": 1, "irq": 2, "alive": 3},
              programmer=("-b", "arty_a7_35t"), note="Vivado builds it (not run here)"),
        Board("arty-a7-100", "Digilent Arty A7-100T, XC7A100T", family="xilinx",
              device="xc7a100t", platform=ArtyA7_100Platform, preset="small",
              config_changes={"multiplier": "dsp", "dsp_budget": 0}, clock_mhz=50,
              baud=3_000_000, mem_size=64 * KIB, reset=("rst", 0),
              leds={"busy": 0, "error": 1, "irq": 2, "alive": 3},
              programmer=("-b", "arty_a7_100t"), note="Vivado builds it (not run here)"),
    ]
    return {b.name: b for b in boards}


#: Every board by name.
BOARDS = _boards()

#: The board whose device each preset is built to fit, unchanged, with the board top and host
#: link (``mxe board build BOARD --synth-only`` says ``fits``; a slow test checks each).
#: ``default`` has no board of its own: ``mxe synth --preset default`` fits the ECP5-85F.
PRESET_BOARDS = {"lean": "ulx3s-12f", "tiny": "ulx3s-25f", "small": "ulx3s-45f"}


def board(name):
    """The :class:`Board` called ``name``; ValueError listing the boards otherwise."""
    if name not in BOARDS:
        raise ValueError(f"board must be one of {', '.join(BOARDS)}, not {name!r}")
    return BOARDS[name]
