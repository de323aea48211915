"""cocotb bench of the convolution descriptor (:mod:`mxe.hw.conv_unit`) on the whole engine.

Same harness as :mod:`mxe.sim.tb_engine` (AxiRam with latency and random pauses on every
channel, the Python driver). Parameters (``MXE_PARAMS``, JSON):

``count``
    Random convolutions in ``test_conv_random`` (default 6).
``top``
    Largest input height and width drawn (default 12).
"""

import cocotb
import numpy as np

from mxe.hw.isa import ErrorCode
from mxe.sim import commands as cmds
from mxe.sim.conv import ConvGeometry, conv2d_reference
from mxe.sim.conv_model import descriptor, expand, plan_conv, traffic
from mxe.sim.cycle_model import lower_bound
from mxe.sim.engine_model import EngineModel
from mxe.sim.model import Requant, postprocess_columns
from mxe.sim.tb_engine import expect_error, random_options, setup


def draw_geometry(rng, config, top, *, depthwise=False):
    """A random convolution the engine's unit takes: ``(geometry, x shape, Cout)``."""
    while True:
        kernel = (int(rng.integers(1, 8)), int(rng.integers(1, 8)))
        stride = tuple(int(v) for v in rng.integers(1, 5, size=2))
        dilation = tuple(int(v) for v in rng.integers(1, 3, size=2))
        pads = tuple(int(v) for v in rng.integers(0, 4, size=4))
        H, W = (int(v) for v in rng.integers(1, top + 1, size=2))
        if depthwise:
            groups = C = cout = int(rng.integers(2, 5))
        else:
            groups = int(rng.choice([1, 1, 2]))
            C = groups * int(rng.integers(1, 2 * config.rows + 2))
            cout = groups * int(rng.integers(1, 2 * config.cols + 2))
        geometry = ConvGeometry.of(kernel, stride=stride, padding=pads, dilation=dilation,
                                   groups=groups)
        try:
            geometry.output_size(H, W)
        except ValueError:
            continue
        x = np.zeros((1, H, W, C), dtype=np.int64)
        w = np.zeros((cout, *kernel, C // groups), dtype=np.int64)
        if plan_conv(config, x, w, geometry) is not None:
            return geometry, (int(rng.integers(1, 3)), H, W, C), cout


@cocotb.test()
async def test_conv_random(dut):
    """Random convolutions through convolution descriptors (``MXEDriver.conv2d``) against the
    direct-loop reference and the post-processor's model: kernels 1x1..7x7 with KH != KW,
    strides 1..4, dilations 1..2, padding on every side filled with a random zero point,
    groups, depthwise, one or two images, random bias, ReLU and requantization; fixed cases
    that have padding on exactly one side each. The DMA's byte counters equal the reference
    expansion's traffic (the stream ran as planned)."""
    tb = await setup(dut)
    c = tb.config
    assert tb.drv.config.conv_unit, "this bench is for an engine with the convolution unit"
    lo, hi = c.input_range
    cases = []
    # Each padding edge alone, and a stride larger than the kernel (lines skipped).
    for pads in ((1, 0, 0, 0), (0, 2, 0, 0), (0, 0, 3, 0), (0, 0, 0, 1)):
        cases.append((ConvGeometry.of((3, 2), padding=pads), (1, 5, 6, c.rows + 1), c.cols + 1))
    cases.append((ConvGeometry.of((1, 1), stride=(3, 2)), (1, 7, 7, 3), 2))
    for i in range(tb.params.get("count", 6)):
        cases.append(draw_geometry(tb.rng, c, tb.params.get("top", 12), depthwise=i % 3 == 2))
    for i, (geometry, shape, cout) in enumerate(cases):
        x = tb.rng.integers(lo, hi, size=shape, endpoint=True)
        w = tb.rng.integers(lo, hi, size=(cout, *geometry.kernel, shape[3] // geometry.groups),
                            endpoint=True)
        zp = int(tb.rng.integers(lo, hi, endpoint=True))
        bias, relu, requant = random_options(tb.rng, c, cout)
        acc = conv2d_reference(x, w, geometry, pad_value=zp)
        want = postprocess_columns(acc.reshape(-1, cout), c, bias=bias, relu=relu,
                                   requant=requant).reshape(acc.shape)
        plan = plan_conv(c, x, w, geometry, bias=bias, relu=relu,
                         requant=None if requant is None else Requant.of(requant), pad_value=zp)
        assert plan is not None, f"case {i}: {geometry} does not fit the unit"
        model = EngineModel(c, bytearray(1 << 20))
        for offset, blob in plan.blobs.items():
            model.memory[offset:offset + len(blob)] = blob
        outcome = model.run(plan.commands)
        assert outcome.ok
        y, counters = await tb.drv._conv_descriptor(x, w, geometry, bias=bias, relu=relu,
                                                     requant=requant, quant=None,
                                                     pad_value=zp)
        bad = np.argwhere(y != want)
        assert not bad.size, f"case {i} {geometry} {shape} -> {cout}: {len(bad)} wrong, " \
            f"first at {tuple(bad[0])}: got {y[tuple(bad[0])]}, want {want[tuple(bad[0])]}"
        rd = sum(traffic(c, plan.commands[j - 2:j + 1])[0] for j, cmd in
                 enumerate(plan.commands) if cmds.decode(cmd)[0] == "CONV_C")
        assert counters["DMA_RD_BYTES"] == model.counters["dma_rd_bytes"] == rd, \
            f"case {i}: DMA read {counters['DMA_RD_BYTES']} bytes, planned {rd}"
        assert counters["DMA_WR_BYTES"] == model.counters["dma_wr_bytes"]
        tb.log.info("conv %d: %s x %s -> %d, %s (zero point %d): bit-exact, %d cycles", i,
                    shape, w.shape, cout, geometry, zp, counters["CYCLES"])
    # Through conv2d as a user calls it (descriptor by default).
    x = tb.rng.integers(lo, hi, size=(1, 6, 7, 3), endpoint=True)
    w = tb.rng.integers(lo, hi, size=(5, 3, 3, 3), endpoint=True)
    got, _ = await tb.drv.conv2d(x, w, padding=1, stride=(1, 2))
    assert (got == conv2d_reference(x, w, ConvGeometry.of(3, padding=1, stride=(1, 2)))).all()
    # QLinearConv against ONNX's reference: uint8 and int8 inputs with zero points (the
    # padding), per-tensor and per-channel weight scales, through the descriptor where the
    # weights less their zero points stay int8.
    from mxe.sim.onnx_cases import qlinear_conv_case
    used = 0
    for i in range(4):
        case = qlinear_conv_case(tb.rng, ("uint8", "int8")[i % 2], shape=(1, 3, 6, 5, 6),
                                 kernel=(3, 2), strides=(1, 2), pads=(1, 0, 1, 2),
                                 per_channel=i < 2, symmetric_weights=i % 3 != 2)
        g = case.geometry
        geometry = ConvGeometry.of(g["kernel"], stride=g["strides"], padding=g["pads"],
                                   dilation=g["dilations"])
        done = await tb.drv._conv_descriptor(case.x.transpose(0, 2, 3, 1),
                                             case.w.transpose(0, 2, 3, 1), geometry,
                                             bias=case.bias, relu=False, requant=None,
                                             quant=case.quant)
        if done is None:
            tb.log.info("QLinearConv %d: weights leave int8, lowered on the host", i)
            continue
        used += 1
        got = done[0].transpose(0, 3, 1, 2)
        assert got.dtype == case.want.dtype and (got == case.want).all(), \
            f"QLinearConv {i}: {int((got != case.want).sum())} differ from ONNX's reference"
        tb.log.info("QLinearConv %d %s: equal to ONNX's reference", i, g)
    assert used, "no QLinearConv case ran through the descriptor"


@cocotb.test()
async def test_conv_refused(dut):
    """Bad descriptors stop the engine with their error code at the descriptor's sub-command
    index, nothing after them runs, memory as the model leaves it; after a soft reset a
    convolution runs bit-exactly."""
    tb = await setup(dut)
    c = tb.config
    base = dict(h=6, w=6, c=2, n=2, kernel=(3, 3), in_offset=0x100, in_pitch=2,
                w_offset=0x400, w_stride=2, out_offset=0x800, out_pitch=8, zp_offset=0x200)
    bad = [(dict(h=0), ErrorCode.BAD_DIM), (dict(kernel=(0, 3)), ErrorCode.BAD_DIM),
           (dict(stride=(5, 1)), ErrorCode.BAD_DIM), (dict(dilation=(1, 3)), ErrorCode.BAD_DIM),
           (dict(kernel=(7, 3), dilation=(2, 1)), ErrorCode.BAD_DIM),
           (dict(w=c.acc_depth), ErrorCode.BAD_ADDR),
           (dict(c=c.spad_depth, kernel=(7, 7), h=8, w=8), ErrorCode.BAD_ADDR)]
    for changes, code in bad:
        await tb.drv.soft_reset()
        prefix = [cmds.load(0, 0, 2, c.spad_row_elems, c.spad_row_elems * c.elem_bytes),
                  cmds.matmul(0, 0, 2, 1, 0)][:int(tb.rng.integers(0, 3))]
        stream = [*prefix, *descriptor(**{**base, **changes}),
                  cmds.store(0, 0x900, 1, c.cols, 0), cmds.fence()]
        outcome = await expect_error(tb, stream, tb.image(), what=f"conv {changes}")
        assert outcome.error == code and outcome.index == len(prefix), \
            f"{changes}: {outcome.error.name} at {outcome.index}"
        st = await tb.drv.status()
        assert not st["busy"], f"{changes}: busy after the error"
    await tb.drv.soft_reset()
    lo, hi = c.input_range
    x = tb.rng.integers(lo, hi, size=(1, 5, 5, 2), endpoint=True)
    w = tb.rng.integers(lo, hi, size=(3, 2, 3, 2), endpoint=True)
    got, _ = await tb.drv.conv2d(x, w, padding=(1, 0, 0, 2))
    assert (got == conv2d_reference(x, w, ConvGeometry.of((2, 3), padding=(1, 0, 0, 2)))).all()


@cocotb.test()
async def test_conv_measure(dut):
    """Cycles and DMA bytes of one convolution (``shape`` [H, W, C, Cout], ``kernel``,
    ``padding``, ``groups``; default 16x16x16 -> 16, 3x3, padding 1, int8 out), through the convolution
    descriptor and lowered on the host, against the array bound and the input + weights +
    output minimum. Checked bit-exact; the table goes to the log and ``conv_measure.json``."""
    import json
    tb = await setup(dut, pause=0.0, latency=tb_latency(dut))
    c = tb.config
    H, W, C, cout = tb.params.get("shape", [16, 16, 16, 16])
    kernel = tuple(tb.params.get("kernel", [3, 3]))
    padding = tb.params.get("padding", 1)
    groups = tb.params.get("groups", 1)
    geometry = ConvGeometry.of(kernel, padding=padding, groups=groups)
    lo, hi = c.input_range
    x = tb.rng.integers(lo, hi, size=(1, H, W, C), endpoint=True)
    w = tb.rng.integers(lo, hi, size=(cout, *kernel, C // groups), endpoint=True)
    requant = Requant(1 << 14, 20)
    want = postprocess_columns(conv2d_reference(x, w, geometry).reshape(-1, cout), c,
                               requant=requant)
    oh, ow = geometry.output_size(H, W)
    M, K = oh * ow, kernel[0] * kernel[1] * C // groups
    rows = {}
    for name, use in (("descriptor", True), ("host im2col", False)):
        got, counters = await tb.drv.conv2d(x, w, padding=padding, requant=requant,
                                            groups=groups, conv_descriptor=use)
        assert (got.reshape(-1, cout) == want).all(), f"{name}: not bit-exact"
        rows[name] = counters
    bound = lower_bound(M, K, cout // groups, c) * groups
    minimum = H * W * C + K * cout + M * cout
    report = {"shape": [H, W, C, cout], "kernel": list(kernel), "padding": padding,
              "groups": groups,
              "bound": bound, "minimum_bytes": minimum, "runs": {}}
    lines = [f"conv {H}x{W}x{C} -> {cout}, kernel {kernel}, padding {padding}, groups {groups}, "
             f"{c.rows}x{c.cols} array: bound M*K*N/(R*C) = {bound} cycles, input + weights "
             f"+ output = {minimum} bytes",
             f"{'path':<14}{'cycles':>8}{'busy':>8}{'MAC-active':>11}{'of bound':>10}"
             f"{'DMA read':>10}{'written':>9}{'x minimum':>10}"]
    for name, k in rows.items():
        traffic_bytes = k["DMA_RD_BYTES"] + k["DMA_WR_BYTES"]
        report["runs"][name] = {key: int(v) for key, v in k.items()}
        lines.append(f"{name:<14}{k['CYCLES']:>8}{k['BUSY_CYCLES']:>8}"
                     f"{k['MAC_ACTIVE_CYCLES']:>11}{bound / k['BUSY_CYCLES']:>10.1%}"
                     f"{k['DMA_RD_BYTES']:>10}{k['DMA_WR_BYTES']:>9}"
                     f"{traffic_bytes / minimum:>10.2f}")
    for line in lines:
        tb.log.info("%s", line)
    with open("conv_measure.json", "w") as f:
        json.dump({**report, "table": lines}, f, indent=1)


def tb_latency(dut):
    from mxe.sim.runner import bench_params
    return bench_params().get("latency", 4)


@cocotb.test()
async def test_conv_soft_reset(dut):
    """Soft reset while a convolution descriptor expands and runs: busy clears, no error, the
    queue empty, nothing written outside the output region; the next convolution is right."""
    from cocotb.triggers import RisingEdge
    tb = await setup(dut)
    c = tb.config
    lo, hi = c.input_range
    geometry = ConvGeometry.of(3, padding=1)
    for trial in range(2):
        x = tb.rng.integers(lo, hi, size=(1, 12, 12, c.rows + 3), endpoint=True)
        w = tb.rng.integers(lo, hi, size=(c.cols + 2, 3, 3, c.rows + 3), endpoint=True)
        plan = plan_conv(c, x, w, geometry)
        win = tb.drv.window[0]
        for offset, blob in plan.blobs.items():
            tb.ram.write(win + offset, blob)
        before = tb.image()
        await tb.drv.start()
        pusher = cocotb.start_soon(tb.drv.push(plan.commands))
        for _ in range(int(tb.rng.integers(100, 1500)) * (trial + 1)):
            await RisingEdge(dut.clk)
        tb.drv.abort = True
        await pusher
        tb.drv.abort = False
        await tb.drv.soft_reset()
        st = await tb.drv.status()
        assert st["busy"] == 0 and st["error"] == 0 and st["queue_empty"] == 1, st
        after = tb.image()
        out = win + plan.out_offset
        assert after[:out] == before[:out] and \
            after[out + plan.out_bytes:] == before[out + plan.out_bytes:], \
            "a write outside the output region"
        x = tb.rng.integers(lo, hi, size=(1, 5, 6, 3), endpoint=True)
        w = tb.rng.integers(lo, hi, size=(4, 3, 3, 3), endpoint=True)
        got, _ = await tb.drv.conv2d(x, w, padding=1)
        assert (got == conv2d_reference(x, w, geometry)).all(), "wrong after the soft reset"
