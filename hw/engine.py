"""MXE, the whole engine: the top-level component a user drops into an FPGA design."""

from amaranth import Module, ResetInserter, Signal
from amaranth.lib import wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.wiring import Out

from .accumulator import Accumulator
from .axi import axi4_signature, axilite_signature, connect_flat, flat_members
from .controller import Controller
from .counter import EventCounter
from .csr import CSRBlock
from .dma import DMA, engine_limits, wr_data_layout
from .exec_unit import ExecUnit
from .conv_unit import ConvUnit
from .gemm_unit import GemmUnit
from .isa import COMMAND_BITS, ErrorCode
from .load_unit import LoadUnit
from .regmap import ADDR_WIDTH, present_counters
from .scratchpad import Scratchpad
from .skid import SkidBuffer
from .store_unit import StoreUnit


__all__ = ["Engine"]


class Engine(wiring.Component):
    """The MXE matrix engine.

    A host pushes commands through the AXI4-Lite registers (``s_axil_*``); the engine moves
    operands between memory and its buffers with its AXI4 DMA (``m_axi_*``), multiplies them on
    the systolic array, post-processes the results and writes them back. See the register map
    (:mod:`mxe.hw.regmap`) and the command set (:mod:`mxe.hw.isa`).

    Parameters
    ----------
    config : EngineConfig

    Members
    -------
    m_axi_* : AXI4 manager (AMD/Xilinx names), ``axi_data_width`` data, ``axi_addr_width``
        addresses, ``axi_id_width`` IDs.
    s_axil_* : AXI4-Lite subordinate, 32-bit data, 12-bit (4 KiB) addresses.
    irq : Out(1)
        ``CTRL.irq_enable & STATUS.done``: level, cleared by writing 1 to ``STATUS.done``.
    busy : Out(1)
        ``STATUS.busy``, for a board's LED.
    error : Out(1)
        ``STATUS.error != 0``, for a board's LED.

    ``clk`` and ``rst`` (synchronous, active high) are the ``sync`` domain's.

    Without ``config.gemm_unit`` the queue feeds the controller directly, which refuses
    GEMM_A/B/C (``UNSUPPORTED``); without ``config.perf_counters`` only the ``CYCLES`` counter
    is built (the other counter registers read 0). ``CAPABILITIES`` says which.
    """

    def __init__(self, config):
        self._config = config
        members = {}
        members.update(flat_members(axi4_signature(
            addr_width=config.axi_addr_width, data_width=config.axi_data_width,
            id_width=config.axi_id_width), "m_axi"))
        members.update(flat_members(axilite_signature(addr_width=ADDR_WIDTH, data_width=32),
                                    "s_axil", flipped=True))
        members["irq"] = Out(1)
        members["busy"] = Out(1)
        members["error"] = Out(1)
        super().__init__(members)

    @property
    def config(self):
        return self._config

    def elaborate(self, platform):
        m = Module()
        config = self._config
        aw = config.axi_addr_width

        m.submodules.csr = csr = CSRBlock(config)
        m.submodules.controller = ctrl = Controller(config)
        queue = SyncFIFOBuffered(width=COMMAND_BITS, depth=config.cmd_queue_depth)
        m.submodules.queue = queue = ResetInserter(ctrl.flush)(queue)
        m.submodules.load = load = LoadUnit(config)
        m.submodules.exec = exe = ExecUnit(config)
        m.submodules.store = store = StoreUnit(config)
        m.submodules.spad = spad = Scratchpad(config)
        m.submodules.acc = acc = Accumulator(config)
        m.submodules.dma = dma = DMA(config, engine_limits(config))

        connect_flat(m, self, "m_axi", dma.axi)
        connect_flat(m, self, "s_axil", csr.bus)
        m.d.comb += self.irq.eq(csr.irq)

        # Registers -> command queue -> GEMM unit (passes commands through, expands GEMM
        # descriptors in place of the queue head) -> skid buffer (a timing cut between the GEMM
        # unit's outputs and the controller's dispatch) -> controller. Without the GEMM unit the
        # queue's registered head goes to the controller directly.
        m.d.comb += [
            queue.w_data.eq(csr.o_cmd.payload),
            queue.w_en.eq(csr.o_cmd.valid),
            csr.o_cmd.ready.eq(queue.w_rdy & ~ctrl.flush),
            ctrl.win_base.eq(csr.win_base[:aw]),
            ctrl.start.eq(csr.ctrl_start),
            ctrl.soft_reset.eq(csr.ctrl_soft_reset),
        ]
        # The descriptor units in a chain (convolution, then GEMM): each passes on what it
        # does not expand. Soft reset (flush) drops a descriptor being expanded, as it empties
        # the queue. They expand descriptors while the engine runs with no error, told from a
        # register (a cycle late, which only moves the first expansion by a cycle).
        expanders = []
        if config.conv_unit:
            m.submodules.conv = conv = ResetInserter(ctrl.flush)(ConvUnit(config))
            expanders.append(conv)
        if config.gemm_unit:
            m.submodules.gemm = gemm = ResetInserter(ctrl.flush)(GemmUnit(config))
            expanders.append(gemm)
        if expanders:
            m.submodules.gemm_out = gemm_out = ResetInserter(ctrl.flush)(
                SkidBuffer(COMMAND_BITS))
            gemm_enable = Signal()
            m.d.sync += gemm_enable.eq(ctrl.running & (ctrl.error == ErrorCode.OK))
            first = expanders[0]
            m.d.comb += [
                first.i_cmd.payload.eq(queue.r_data),
                first.i_cmd.valid.eq(queue.r_rdy),
                queue.r_en.eq(first.i_cmd.ready),
            ]
            for unit, after in zip(expanders, expanders[1:]):
                wiring.connect(m, unit.o_cmd, after.i_cmd)
            for unit in expanders:
                m.d.comb += unit.enable.eq(gemm_enable)
            wiring.connect(m, gemm_out=expanders[-1].o_cmd, skid=gemm_out.i)
            wiring.connect(m, gemm_out=gemm_out.o, ctrl=ctrl.i_cmd)
        else:
            m.d.comb += [
                ctrl.i_cmd.payload.eq(queue.r_data),
                ctrl.i_cmd.valid.eq(queue.r_rdy),
                queue.r_en.eq(ctrl.i_cmd.ready),
            ]

        # Controller -> units, and what the units tell it.
        wiring.connect(m, ctrl=ctrl.o_load, load=load.i_cmd)
        wiring.connect(m, ctrl=ctrl.o_exec, exec=exe.i_cmd)
        wiring.connect(m, ctrl=ctrl.o_store, store=store.i_cmd)
        wiring.connect(m, load=load.o_done, ctrl=ctrl.i_load_done)
        wiring.connect(m, store=store.o_done, ctrl=ctrl.i_store_done)
        m.d.comb += [
            ctrl.load_busy.eq(load.busy),
            ctrl.exec_busy.eq(exe.busy),
            ctrl.store_busy.eq(store.busy),
            exe.q_spad_lo.eq(ctrl.q_spad_lo),
            exe.q_spad_hi.eq(ctrl.q_spad_hi),
            exe.q_acc_lo.eq(ctrl.q_acc_lo),
            exe.q_acc_hi.eq(ctrl.q_acc_hi),
            ctrl.spad_conflict.eq(exe.spad_conflict),
            ctrl.acc_conflict.eq(exe.acc_conflict),
            store.bias.eq(load.o_bias),
            store.column_quant.eq(load.o_requant),
        ]

        # Data paths: DMA <-> units <-> buffers.
        wiring.connect(m, load=load.o_rd_cmd, dma=dma.i_rd_cmd)
        wiring.connect(m, dma=dma.o_rd_data, load=load.i_rd_data)
        wiring.connect(m, dma=dma.o_rd_done, load=load.i_rd_done)
        wiring.connect(m, store=store.o_wr_cmd, dma=dma.i_wr_cmd)
        # Write data passes a skid buffer: the DMA hands AXI's wready to its data input
        # combinationally, and the store unit's packer and post-processor sit behind that.
        # Without the deep pipeline (a slow clock) it is a plain connection.
        m.submodules.wr_skid = wr_skid = SkidBuffer(wr_data_layout(config),
                                                     registered=config.deep_pipeline)
        wiring.connect(m, store=store.o_wr_data, skid=wr_skid.i)
        wiring.connect(m, skid=wr_skid.o, dma=dma.i_wr_data)
        wiring.connect(m, dma=dma.o_wr_done, store=store.i_wr_done)
        wiring.connect(m, load=load.o_spad_write, spad=spad.i_write)
        wiring.connect(m, exec=exe.read_act, spad=spad.read_a)
        wiring.connect(m, exec=exe.read_weight, spad=spad.read_b)
        wiring.connect(m, exec=exe.o_acc_write, acc=acc.i_write)
        wiring.connect(m, store=store.read, acc=acc.read)
        if config.acc_read_ports == 1:
            m.d.comb += store.read_free.eq(acc.read_free)
        m.d.comb += [
            dma.window_base.eq(csr.win_base[:aw]),
            dma.window_limit.eq(csr.win_limit[:aw]),
        ]

        # Status. The GEMM unit's set-up (no command offered yet) counts as busy while running.
        busy = Signal()
        if expanders:
            units_busy = expanders[0].busy
            for unit in expanders[1:]:
                units_busy = units_busy | unit.busy
            m.d.comb += busy.eq(ctrl.busy | (units_busy & ctrl.running))
        else:
            m.d.comb += busy.eq(ctrl.busy)
        m.d.comb += [
            csr.status_busy.eq(busy),
            csr.status_done.eq(ctrl.done),
            csr.status_queue_empty.eq(~queue.r_rdy),
            csr.status_queue_full.eq(~queue.w_rdy),
            csr.status_error.eq(ctrl.error),
            self.busy.eq(busy),
            self.error.eq(ctrl.error != ErrorCode.OK),
            csr.err_cmd_index.eq(ctrl.err_index),
            csr.err_addr.eq(ctrl.err_addr),
            csr.cmd_level.eq(queue.level),
        ]

        # Performance counters, cleared when a soft reset has finished (work still in flight
        # when it was requested is not counted). The DMA's byte counters run freely; the engine
        # reports what they moved since then. A counter is built where the register table gives
        # the CSR block its port: without perf_counters only CYCLES (the others read 0).
        have = {port for _name, port, _doc in present_counters(config)}
        counters = {
            "cycles": 1,
            "busy_cycles": busy,
            "mac_active_cycles": exe.mac_active,
            "stall_load": load.stall,
            "stall_store": store.stall,
            "stall_dep": ctrl.stall_dep,
        }
        # Events are counted and the clear applied a cycle late, from registers: no path from
        # the units' handshakes or the controller into the 64-bit counters (they sit far apart).
        clear = Signal()
        m.d.sync += clear.eq(ctrl.cleared)
        for name, event in counters.items():
            if name not in have:
                continue
            counter = EventCounter(width=64, split=32)
            m.submodules[f"count_{name}"] = counter
            seen = Signal(name=f"seen_{name}")
            m.d.sync += seen.eq(event)
            m.d.comb += [counter.event.eq(seen), counter.clear.eq(clear),
                         getattr(csr, name).eq(counter.count)]
        for name, total in (("dma_rd_bytes", dma.bytes_read), ("dma_wr_bytes", dma.bytes_written)):
            if name not in have:
                continue
            base = Signal.like(total, name=f"{name}_base")
            moved = Signal.like(total, name=name)   # a cycle late: no subtractor before the CSRs
            with m.If(clear):
                m.d.sync += base.eq(total)
            m.d.sync += moved.eq(total - base)
            m.d.comb += getattr(csr, name).eq(moved)
        return m
