"""The command-level engine model (sim/engine_model.py) and the GEMM planner (sim/driver.py).

The planner's command streams run through the engine model for many random shapes,
configurations and options and must give ``postprocess(matmul(A, B))`` exactly; the model itself
is checked against plain-Python loops and the refusal rules of LIMITS_DOC. No simulator needed.
"""


import numpy as np
import pytest

from mxe.hw.config import EngineConfig
from mxe.hw.isa import REQUIRES, ErrorCode
from mxe.sim import commands as cmds
from mxe.sim.driver import (chain_commands, chain_operands, counter_names, descriptor_commands,
                            pack_operands, plan_chain, plan_gemm, unpack_result)
from mxe.sim.gemm_model import expand
from mxe.sim.engine_model import (EngineModel, ModelStopped, bad_commands, decode_elems,
                                  encode_elems, read_bursts)
from mxe.sim.model import matmul, postprocess, random_operands


# Engine model ------------------------------------------------------------------------------

def _ref_int(value, width, signed):
    value &= (1 << width) - 1
    if signed and value >> (width - 1):
        value -= 1 << width
    return value


def test_elems_roundtrip(seed):
    rng = np.random.default_rng(seed)
    for nbytes, width, signed in [(1, 8, True), (1, 5, False), (2, 12, True), (2, 16, False),
                                  (4, 32, True), (4, 20, False), (8, 64, True), (8, 64, False),
                                  (8, 40, True)]:
        lo = -(1 << (width - 1)) if signed else 0
        hi = (1 << (width - 1)) - 1 if signed else (1 << width) - 1
        values = [int(rng.integers(0, 1 << 62)) % (hi - lo + 1) + lo for _ in range(50)] + [lo, hi]
        data = b"".join((v % (1 << (8 * nbytes))).to_bytes(nbytes, "little") for v in values)
        assert encode_elems(np.array(values, dtype=np.uint64 if hi >= 1 << 63 else np.int64),
                            nbytes) == data
        got = decode_elems(data, nbytes, width, signed)
        assert [int(x) for x in got] == values


def _small_engine(**changes):
    return EngineConfig.preset("tiny", **changes)


def test_model_commands_against_loops(seed):
    """LOAD, MATMUL (overwrite and accumulate), bias LOAD, CONFIG and STORE on a small
    engine, each checked against a plain-Python computation."""
    rng = np.random.default_rng(seed)
    for cfg in (_small_engine(), _small_engine(rows=3, cols=5, signed=False, acc_width=20),
                _small_engine(rows=5, cols=2, input_width=12, acc_width=64)):
        eb, ab = cfg.elem_bytes, cfg.acc_elem_bytes
        mem = bytearray(rng.integers(0, 256, size=4096, dtype=np.uint8).tobytes())
        model = EngineModel(cfg, mem, 256, 4096, fill=rng)
        spad0 = model.spad.copy()
        lo, hi = cfg.input_range
        # LOAD 3 rows of 2 elements, stride 7 bytes (unaligned), at window offset 5.
        A = rng.integers(lo, hi, size=(3, 2), endpoint=True)
        for r in range(3):
            mem[256 + 5 + 7 * r:256 + 5 + 7 * r + 2 * eb] = encode_elems(A[r], eb)
        W = rng.integers(lo, hi, size=(cfg.rows, cfg.cols), endpoint=True)
        mem[1024:1024 + W.size * eb] = encode_elems(W, eb)
        out = model.run([cmds.load(10, 5, 3, 2, 7),
                         cmds.load(20, 1024 - 256, cfg.rows, cfg.cols, cfg.cols * eb)])
        assert out.ok and out.executed == 2
        assert (model.spad[10:13, :2] == A).all()
        assert (model.spad[10:13, 2:] == spad0[10:13, 2:]).all(), "stale elements must stay"
        assert (model.spad[20:20 + cfg.rows, :cfg.cols] == W).all()
        k = max(1, cfg.rows - 1)
        acc_before = model.acc_values(7, 3).copy()
        assert model.run([cmds.matmul(10, 20, 3, k, 7, accumulate=True)]).ok
        for i in range(3):
            for j in range(cfg.cols):
                total = int(acc_before[i, j])
                for t in range(min(k, cfg.rows)):
                    a = int(model.spad[10 + i, t])
                    total += a * int(W[t, j])
                assert int(model.acc_values(7, 3)[i, j]) == _ref_int(total, cfg.acc_width,
                                                                     cfg.signed)
        assert model.run([cmds.matmul(10, 20, 3, k, 7)]).ok   # overwrite
        for i in range(3):
            for j in range(cfg.cols):
                total = sum(int(model.spad[10 + i, t]) * int(W[t, j]) for t in range(k))
                assert int(model.acc_values(7, 3)[i, j]) == _ref_int(total, cfg.acc_width,
                                                                     cfg.signed)
        # Bias (2 values), CONFIG, STORE with everything; then a raw STORE.
        b = [int(x) for x in rng.integers(-1000, 1000, size=2)]
        if not cfg.signed:
            b = [abs(x) for x in b]
        mem[3000:3000 + 2 * ab] = b"".join((x % (1 << 8 * ab)).to_bytes(ab, "little") for x in b)
        acc = model.acc_values(7, 3)
        bias_full = model.bias.copy()
        assert model.run([cmds.load(0, 3000 - 256, 1, 2, 0, to_bias=True),
                          cmds.config(12345, 9),
                          cmds.store(7, 2000 - 256, 3, 2, 11, bias=True, relu=True,
                                     requant=True),
                          cmds.store(7, 2500 - 256, 2, cfg.cols, 3 * cfg.cols * ab)]).ok
        assert (model.bias[2:] == bias_full[2:]).all()
        for i in range(3):
            for j in range(2):
                v = _ref_int(int(acc[i, j]) + b[j], cfg.acc_width, cfg.signed)
                v = max(v, 0)
                p = v * 12345
                q = (abs(p) + (1 << 8)) >> 9
                q = q if p >= 0 else -q
                q = min(max(q, -128 if cfg.signed else 0), 127 if cfg.signed else 255)
                assert mem[2000 + 11 * i + j] == q % 256
        for i in range(2):
            row = mem[2500 + 3 * cfg.cols * ab * i:][:cfg.cols * ab]
            got = [_ref_int(int.from_bytes(row[j * ab:(j + 1) * ab], "little"), cfg.acc_width,
                            cfg.signed) for j in range(cfg.cols)]
            assert got == [int(x) for x in acc[i]]
        assert model.counters["mac_active"] == 6
        assert model.counters["dma_rd_bytes"] == 6 * eb + W.size * eb + 2 * ab
        assert model.counters["dma_wr_bytes"] == 6 + 2 * cfg.cols * ab


@pytest.mark.parametrize("preset, changes", [("tiny", {}), ("small", {}),
                                             ("tiny", {"gemm_unit": False}),
                                             ("tiny", {"conv_unit": True})])
def test_model_refusals(preset, changes, seed):
    """Every LIMITS_DOC case: the error, the index, nothing after it runs, nothing written."""
    cfg = EngineConfig.preset(preset, **changes)
    unsupported = {cmds.decode(c)[0] for _n, c, code in bad_commands(cfg)
                   if code == ErrorCode.UNSUPPORTED}
    assert unsupported == {name for name, feature in REQUIRES.items()
                           if not getattr(cfg, feature)}
    rng = np.random.default_rng(seed)
    good_store = cmds.store(0, 100, 1, 1, 0)
    for name, bad, code in bad_commands(cfg):
        mem = bytearray(rng.integers(0, 256, size=1024, dtype=np.uint8).tobytes())
        image = bytes(mem)
        model = EngineModel(cfg, mem, 0, 1024)
        prefix = [cmds.load(0, 0, 1, 1, 0)] * int(rng.integers(0, 4))
        out = model.run([*prefix, bad, good_store])
        assert out.error == code, name
        assert out.index == len(prefix) and out.executed == len(prefix), name
        assert bytes(mem) == image, f"{name}: memory written"
        with pytest.raises(ModelStopped):
            model.run([good_store])
        model.soft_reset()
        out = model.run([good_store])
        assert out.ok and out.executed == 1 and model.index == 1
        assert bytes(mem) != image or mem[100:100 + cfg.acc_elem_bytes] == \
            image[100:100 + cfg.acc_elem_bytes]


def test_model_unsupported_descriptor(seed):
    """Without the GEMM unit every one of GEMM_A/B/C is refused on its own, counted as one
    command (as the controller sees them); with it, the descriptor runs the expansion."""
    rng = np.random.default_rng(seed)
    lean = EngineConfig.preset("tiny", gemm_unit=False)
    plan = plan_gemm(lean, 5, 6, 7)
    desc = descriptor_commands(plan)
    assert [cmds.decode(x)[0] for x in desc] == ["GEMM_A", "GEMM_B", "GEMM_C", "FENCE"]
    for i in range(3):
        prefix = [cmds.load(0, 0, 1, 1, 0)] * int(rng.integers(0, 3))
        model = EngineModel(lean, bytearray(plan.size), 0, plan.size)
        out = model.run([*prefix, desc[i], *desc[i + 1:]])
        assert (out.error, out.index, out.executed) == \
            (ErrorCode.UNSUPPORTED, len(prefix), len(prefix))
    with pytest.raises(ValueError, match="no GEMM unit"):
        expand(lean, desc[:3])
    # The same GEMM as a stream on the lean engine and as a descriptor on the full one.
    full = lean.replace(gemm_unit=True)
    A, B = random_operands(rng, (5, 6), full), random_operands(rng, (6, 7), full)
    images = []
    for cfg, commands in ((lean, plan.commands), (full, desc)):
        mem = bytearray(plan.size)
        for offset, data in pack_operands(plan, A, B).items():
            mem[offset:offset + len(data)] = data
        assert EngineModel(cfg, mem, 0, plan.size, fill=rng).run(commands).ok
        C = plan.layout["c"]
        assert (unpack_result(plan, mem[C.offset:C.end]) ==
                expected(cfg, A, B, None, False, None)).all()
        images.append(bytes(mem))
    assert images[0] == images[1]


def test_model_window_and_slverr():
    cfg = _small_engine()
    mem = bytearray(8192)
    model = EngineModel(cfg, mem, 1000, 3000, error_regions=[(2040, 2050)])
    # Ends exactly at the limit: fine. One byte more: window error.
    assert model.run([cmds.load(0, 2000 - 4, 1, 4, 0)]).ok
    out = model.run([cmds.load(0, 2000 - 3, 1, 4, 0)])
    assert (out.error, out.index, out.addr) == (ErrorCode.DMA_WINDOW, 1, None)
    model.soft_reset()
    out = model.run([cmds.store(0, 1999, 2, 1, 1)])
    assert out.error == ErrorCode.DMA_WINDOW
    model.soft_reset()
    # SLVERR: the first failing 4-byte beat of the second row.
    out = model.run([cmds.load(0, 1000, 3, 4, 38)])
    assert out.error == ErrorCode.DMA_SLVERR and out.index == 0
    assert out.addr == 2038 // 4 * 4 + 4 == read_bursts(cfg, 2000, 3, 4, 38, [(2040, 2050)])


# Planner --------------------------------------------------------------------------------------

def random_config(rng):
    """A random, valid engine configuration, mostly small buffers so tiling is exercised."""
    rows, cols = int(rng.integers(1, 9)), int(rng.integers(1, 9))
    width = int(rng.choice([4, 8, 8, 8, 12, 16]))
    acc = int(rng.choice([2 * width, 32, 32, 48, 64]))
    acc = max(acc, 2 * width)
    return EngineConfig(rows=rows, cols=cols, input_width=width, signed=bool(rng.random() < 0.8),
                        acc_width=acc, spad_depth=int(rng.choice([16, 32, 64, 256, 1024])),
                        spad_banks=1, acc_depth=int(rng.choice([16, 32, 128, 1024])),
                        axi_data_width=int(rng.choice([32, 64, 128, 256])),
                        max_burst_len=int(rng.choice([1, 4, 16])),
                        cmd_queue_depth=int(rng.choice([2, 8, 16])))


def random_options(rng, cfg, N):
    bias = None
    if rng.random() < 0.5:
        lo, hi = (-(1 << (cfg.acc_width - 1)), (1 << (cfg.acc_width - 1)) - 1) if cfg.signed \
            else (0, (1 << cfg.acc_width) - 1)
        if rng.random() < 0.5:
            lo, hi = max(lo, -5000), min(hi, 5000)
        bias = np.array([int(rng.integers(0, 1 << 62)) % (hi - lo + 1) + lo for _ in range(N)],
                        dtype=np.uint64 if hi >= 1 << 63 else np.int64)
    relu = bool(rng.random() < 0.5)
    requant = None
    if rng.random() < 0.5:
        requant = (int(rng.integers(-(1 << 31), 1 << 31)), int(rng.integers(0, 64)))
    return bias, relu, requant


def run_plan(cfg, A, B, bias, relu, requant, rng, *, base=0, align=64, force=None, slack=64):
    """Plan, lay out memory, run the model; return (result, plan, model, expected image)."""
    M, K = A.shape
    N = B.shape[1]
    plan = plan_gemm(cfg, M, K, N, bias=bias is not None, relu=relu, requant=requant,
                     base=base, align=align, force=force, bias_fence=bool(rng.random() < 0.3))
    win_base = int(rng.integers(0, 300))
    mem = bytearray(rng.integers(0, 256, size=win_base + plan.size + slack,
                                 dtype=np.uint8).tobytes())
    for offset, data in pack_operands(plan, A, B, bias).items():
        mem[win_base + offset:win_base + offset + len(data)] = data
    before = bytes(mem)
    model = EngineModel(cfg, mem, win_base, win_base + plan.size, fill=rng)
    out = model.run(plan.commands)
    assert out.ok, (out, cmds.describe(plan.commands[out.index]))
    C = plan.layout["c"]
    got = unpack_result(plan, mem[win_base + C.offset:win_base + C.end])
    # Only region c was written.
    assert mem[:win_base + C.offset] == before[:win_base + C.offset]
    assert mem[win_base + C.end:] == before[win_base + C.end:]
    return got, plan, model


@pytest.mark.parametrize("wait", [False, True])
def test_chain_model(wait, seed):
    """plan_chain / chain_commands: each layer reads the previous layer's C in place; the
    commands through the engine model give every layer's golden output; the layers after the
    first carry GEMM_A after_stores (unless they wait for done, FENCE after every layer)."""
    from mxe.sim.model import Requant
    rng = np.random.default_rng(seed)
    cfg = EngineConfig.preset("tiny")
    M, widths = 9, [7, 10, 5, 6]
    requants = [Requant(int(rng.integers(200, 400)), 14), Requant(300, 13), None]
    biases = [None, rng.integers(-500, 500, size=5), None]
    plans = plan_chain(cfg, M, widths, requants=requants,
                       biases=[b is not None for b in biases], relus=[True, False, False])
    assert plans[1].layout["a"] == plans[0].layout["c"]
    A = random_operands(rng, (M, widths[0]), cfg)
    Bs = [random_operands(rng, (k, n), cfg) for k, n in zip(widths, widths[1:])]
    mem = bytearray(rng.integers(0, 256, size=plans[-1].size + 64, dtype=np.uint8).tobytes())
    layers = [{"B": B, "bias": bias} for B, bias in zip(Bs, biases)]
    for offset, data in chain_operands(plans, A, layers).items():
        mem[offset:offset + len(data)] = data
    commands = chain_commands(plans, wait=wait)
    descs = [cmds.decode(c)[1] for c in commands if cmds.decode(c)[0] == "GEMM_A"]
    assert [d["after_stores"] for d in descs] == [0, int(not wait), int(not wait)]
    assert sum(cmds.decode(c)[0] == "FENCE" for c in commands) == (3 if wait else 1)
    assert EngineModel(cfg, mem, 0, len(mem)).run(commands).ok
    x = A
    for i, (plan, B, bias) in enumerate(zip(plans, Bs, biases)):
        x = expected(cfg, x, B, bias, i == 0, requants[i])
        C = plan.layout["c"]
        assert (unpack_result(plan, mem[C.offset:C.end]) == x).all(), f"layer {i}"


def expected(cfg, A, B, bias, relu, requant):
    acc = matmul(A, B, cfg)
    N = B.shape[1]
    # postprocess works on rows of cols values: pad N up to a multiple of cols.
    cols = cfg.cols
    pad = -N % cols
    accp = np.concatenate([acc, np.zeros((acc.shape[0], pad), dtype=acc.dtype)], axis=1)
    rows = accp.reshape(acc.shape[0], -1, cols)
    out = []
    for t in range(rows.shape[1]):
        b = None
        if bias is not None:
            b = np.concatenate([np.asarray(bias), np.zeros(pad, dtype=np.asarray(bias).dtype)])
            b = b[t * cols:(t + 1) * cols]
        out.append(postprocess(rows[:, t, :], cfg, bias=b, relu=relu, requant=requant))
    return np.concatenate(out, axis=1)[:, :N]


def check_plan_properties(plan):
    """Stats are what the stream does; loads never overwrite the rows the MATMUL just issued
    reads (double buffering), and the next tile's MATMUL never writes the accumulator rows of
    the STORE just issued, unless there is a single place."""
    cfg = plan.config
    last_mm = None
    last_store = None
    s = plan.schedule
    for command in plan.commands:
        name, f = cmds.decode(command)
        if name == "LOAD" and not f["to_bias"] and last_mm is not None:
            rows = set(range(f["spad_addr"], f["spad_addr"] + f["rows"]))
            reads = set(range(last_mm["act_addr"], last_mm["act_addr"] + last_mm["m"])) | \
                set(range(last_mm["weight_addr"], last_mm["weight_addr"] + last_mm["k"]))
            if s["a_places"] > 1 and s["b_places"] > 1:
                assert not rows & reads, f"LOAD {f} overwrites rows of the running {last_mm}"
        if name == "MATMUL":
            if last_store is not None and s["acc_places"] > 1:
                a, b = f["acc_addr"], last_store["acc_addr"]
                assert a + f["m"] <= b or b + last_store["rows"] <= a
            last_mm, last_store = f, None
        if name == "STORE":
            last_store = f
    assert cmds.decode(plan.commands[-1])[0] == "FENCE"
    top = s["a_places"] * s["mc"] + s["b_places"] * s["kr"]
    assert top <= cfg.spad_depth and s["acc_places"] * s["mc"] <= cfg.acc_depth


def _one(rng, cfg, M, K, N, *, force=None, options=None):
    A = random_operands(rng, (M, K), cfg, extremes=0.1)
    B = random_operands(rng, (K, N), cfg, extremes=0.1)
    bias, relu, requant = options if options else random_options(rng, cfg, N)
    align = int(rng.choice([1, 3, 64]))
    got, plan, model = run_plan(cfg, A, B, bias, relu, requant, rng,
                                base=int(rng.integers(0, 50)), align=align, force=force)
    want = expected(cfg, A, B, bias, relu, requant)
    where = np.argwhere(got != want)
    assert not where.size, (f"{M}x{K}x{N} {cfg.key()} bias={bias is not None} relu={relu} "
                            f"requant={requant} schedule={plan.schedule}: first mismatch at "
                            f"{tuple(where[0])}: got {got[tuple(where[0])]}, "
                            f"want {want[tuple(where[0])]}")
    # The plan's counts are exactly what the model did.
    assert plan.stats["mac_active"] == model.counters["mac_active"]
    assert plan.stats["dma_rd_bytes"] == model.counters["dma_rd_bytes"]
    assert plan.stats["dma_wr_bytes"] == model.counters["dma_wr_bytes"] == M * N * plan.out_bytes
    assert plan.stats["MATMUL"] == plan.schedule["mt"] * plan.schedule["nt"] * plan.schedule["kt"]
    check_plan_properties(plan)
    return plan


def test_plan_random_shapes(seed):
    rng = np.random.default_rng(seed)
    for _ in range(60):
        cfg = random_config(rng)
        M, K, N = (int(rng.choice([rng.integers(1, 12), rng.integers(1, 70)])) for _ in range(3))
        _one(rng, cfg, M, K, N)


def test_plan_presets(seed):
    rng = np.random.default_rng(seed)
    for preset in ("tiny", "small", "default"):
        cfg = EngineConfig.preset(preset)
        for M, K, N in [(1, 1, 1), (cfg.rows, cfg.rows, cfg.cols),
                        (cfg.rows + 1, cfg.rows - 1 or 1, cfg.cols + 1),
                        tuple(int(x) for x in rng.integers(1, 120, size=3))]:
            _one(rng, cfg, M, K, N)


@pytest.mark.parametrize("order,a_mode,b_mode", [
    ("mn", "panel", "resident"), ("mn", "panel", "stream"), ("mn", "stream", "resident"),
    ("mn", "stream", "stream"), ("nm", "resident", "panel"), ("nm", "stream", "panel"),
    ("nm", "resident", "stream"), ("nm", "stream", "stream")])
def test_plan_every_schedule(order, a_mode, b_mode, seed):
    """Each loop order and placement, forced, with several M chunks and N and K tiles."""
    rng = np.random.default_rng(seed)
    cfg = _small_engine(spad_depth=2048, acc_depth=64)
    for M, K, N in [(70, 13, 10), (9, 4, 4), (33, 1, 17)]:
        for bias in (False, True):
            b = rng.integers(-100, 100, size=N) if bias else None
            plan = _one(rng, cfg, M, K, N, force=dict(order=order, a_mode=a_mode, b_mode=b_mode,
                                                      mc=min(M, 16)),
                        options=(b, bool(rng.random() < 0.5), (int(rng.integers(1, 1 << 20)), 12)))
            eb = cfg.elem_bytes
            reads = {"panel": 1, "resident": 1, "stream": None}
            a_times = reads[a_mode] or plan.schedule["nt"]
            b_times = reads[b_mode] or plan.schedule["mt"]
            bias_bytes = 0
            if bias:
                # One bias load per change of N tile along the loop.
                loads = plan.schedule["nt"] if order == "nm" else \
                    (plan.schedule["mt"] * plan.schedule["nt"] if plan.schedule["nt"] > 1 else 1)
                bias_bytes = loads and sum(
                    min(cfg.cols, N - n0) for n0 in range(0, N, cfg.cols)) * \
                    cfg.acc_elem_bytes * (loads // plan.schedule["nt"])
            assert plan.stats["dma_rd_bytes"] == \
                (M * K * a_times + K * N * b_times) * eb + bias_bytes


def test_plan_minimal_traffic_when_it_fits(seed):
    """With buffers big enough for everything, each operand is read exactly once."""
    rng = np.random.default_rng(seed)
    cfg = EngineConfig.preset("small")
    for _ in range(5):
        M, K, N = (int(x) for x in rng.integers(1, 100, size=3))
        plan = _one(rng, cfg, M, K, N, options=(None, False, None))
        assert plan.stats["dma_rd_bytes"] == (M * K + K * N) * cfg.elem_bytes
        assert plan.stats["mac_active"] == M * plan.schedule["kt"] * plan.schedule["nt"]


def test_plan_tight_buffers(seed):
    """A 16-row scratchpad for an 8-row array: K tiles shrink below rows."""
    rng = np.random.default_rng(seed)
    cfg = EngineConfig(rows=8, cols=8, spad_depth=16, spad_banks=1, acc_depth=16,
                       axi_data_width=32)
    for M, K, N in [(40, 30, 20), (1, 9, 1), (17, 8, 8)]:
        plan = _one(rng, cfg, M, K, N)
        assert plan.schedule["a_places"] * plan.schedule["mc"] + \
            plan.schedule["b_places"] * plan.schedule["kr"] <= 16


def test_plan_long_shapes(seed):
    """Shapes up to 300 on the tiny engine (many tiles) through the model."""
    rng = np.random.default_rng(seed)
    _one(rng, EngineConfig.preset("tiny"), 300, 37, 45)
    _one(rng, EngineConfig.preset("tiny"), 7, 300, 300)


@pytest.mark.slow
def test_plan_big_shape_model(seed):
    """300x300x300 on the tiny engine (about 50000 commands) through the model."""
    rng = np.random.default_rng(seed)
    _one(rng, EngineConfig.preset("tiny"), 300, 300, 300)


def test_plan_argument_errors():
    cfg = EngineConfig.preset("tiny")
    with pytest.raises(ValueError, match="M"):
        plan_gemm(cfg, 0, 1, 1)
    with pytest.raises(TypeError, match="N"):
        plan_gemm(cfg, 1, 1, 2.0)
    with pytest.raises(ValueError, match="shift"):
        plan_gemm(cfg, 1, 1, 1, requant=(1, 64))
    with pytest.raises(TypeError):
        plan_gemm(None, 1, 1, 1)
    plan = plan_gemm(cfg, 2, 3, 4)
    with pytest.raises(ValueError, match="127"):
        pack_operands(plan, np.full((2, 3), 200), np.zeros((3, 4), dtype=int))
    with pytest.raises(ValueError):
        pack_operands(plan, np.zeros((3, 2), dtype=int), np.zeros((3, 4), dtype=int))


# The driver's register side, against a fake AXI-Lite master (no simulator) ----------------

class _FakeAxil:
    """Answers CSR reads from a dict, records writes."""

    def __init__(self, regs):
        self.regs = regs
        self.writes = []

    async def read(self, address, length):
        from types import SimpleNamespace
        from cocotbext.axi import AxiResp
        return SimpleNamespace(resp=AxiResp.OKAY,
                               data=self.regs.get(address, 0).to_bytes(4, "little"))

    async def write(self, address, data):
        from types import SimpleNamespace
        from cocotbext.axi import AxiResp
        self.writes.append((address, int.from_bytes(data, "little")))
        return SimpleNamespace(resp=AxiResp.OKAY)


def _csr_image(cfg, ident=None):
    """What the engine built with ``cfg`` reads: its CONST registers (ID replaced by
    ``ident``), a counter value in every counter it has (the others read 0, as absent)."""
    from mxe.hw.regmap import OFFSETS, REGISTERS
    regs = {}
    for reg in REGISTERS:
        if reg.access == "CONST":
            regs[reg.offset] = sum(f.value(cfg) << f.lsb for f in reg.fields)
    for i, name in enumerate(counter_names(cfg)):
        regs[OFFSETS[f"{name}_LO"]] = 1000 + i
    if ident is not None:
        regs[OFFSETS["ID"]] = ident
    return regs


@pytest.mark.parametrize("features", [{}, {"gemm_unit": False}, {"perf_counters": False},
                                      {"gemm_unit": False, "perf_counters": False}])
def test_discover_reads_config(features):
    """Configuration and CAPABILITIES read back; the driver adapts: counters() reads only the
    counters the engine has, a descriptor GEMM falls back to the plan's stream."""
    import asyncio
    from mxe.hw.regmap import CAPABILITIES, CONFIG_REGISTERS
    from mxe.sim.driver import MXEDriver
    from mxe.sim.transport import CocotbTransport
    cfg = EngineConfig.preset("small", rows=5, signed=False, cmd_queue_depth=32, **features)
    axil = _FakeAxil(_csr_image(cfg))
    drv = MXEDriver(CocotbTransport(axil, None, None))
    got = asyncio.run(drv.discover())
    for _reg, attr in CONFIG_REGISTERS:
        assert getattr(got, attr) == getattr(cfg, attr), attr
    for name, _doc in CAPABILITIES:
        assert getattr(got, name) is getattr(cfg, name), name
    counters = asyncio.run(drv.counters())
    assert list(counters) == counter_names(cfg)
    assert (list(counters) == ["CYCLES"]) == (not cfg.perf_counters)
    assert all(value == 1000 + i for i, value in enumerate(counters.values()))
    plan = plan_gemm(cfg, 9, 9, 9)
    commands = drv.gemm_commands(plan, descriptor=True)
    assert commands == (descriptor_commands(plan) if cfg.gemm_unit else plan.commands)
    assert drv.gemm_commands(plan) == plan.commands


def test_discover_version_1_engine_has_every_feature():
    """An engine of register map version 1 (before CAPABILITIES) has every feature; the driver
    does not read the register it lacks."""
    import asyncio
    from mxe.hw.regmap import ID_MAGIC, OFFSETS
    from mxe.sim.driver import MXEDriver
    from mxe.sim.transport import CocotbTransport
    image = _csr_image(EngineConfig.preset("tiny"), ID_MAGIC << 8 | 1)
    image[OFFSETS["CAPABILITIES"]] = 0          # what would mislead a driver that read it
    axil = _FakeAxil(image)
    read = axil.read
    addresses = []

    async def recording_read(address, length):
        addresses.append(address)
        return await read(address, length)

    axil.read = recording_read
    drv = MXEDriver(CocotbTransport(axil, None, None))
    got = asyncio.run(drv.discover())
    assert got.gemm_unit and got.perf_counters and drv.version == 1
    assert OFFSETS["CAPABILITIES"] not in addresses


def test_discover_version_3_engine_has_unaligned_dma():
    """An engine of register map version 3 moves rows at any alignment without a CAPABILITIES
    bit saying so; a version-4 engine says whether it does."""
    import asyncio
    from mxe.hw.regmap import ID_MAGIC, OFFSETS, VERSION
    from mxe.sim.driver import MXEDriver
    from mxe.sim.transport import CocotbTransport
    lean = EngineConfig.preset("tiny", gemm_unit=False, unaligned_dma=False)
    for version, want in ((3, True), (VERSION, False)):
        image = _csr_image(lean, ID_MAGIC << 8 | version)
        drv = MXEDriver(CocotbTransport(_FakeAxil(image), None, None))
        got = asyncio.run(drv.discover())
        assert image[OFFSETS["CAPABILITIES"]] == 0b0010       # perf_counters only
        assert got.unaligned_dma == want and not got.gemm_unit, version


def test_plan_without_unaligned_dma():
    """On an engine without unaligned DMA every transfer of a plan starts on the bus's lane 0
    (checked against the model's refusal), the per-column tables are padded where N * 4 bytes
    are not a multiple of the bus, and the driver then issues the stream, not the descriptor
    (which cannot describe the padding); a pitch off the bus is refused."""
    from mxe.sim.driver import descriptor_layout
    from mxe.sim.model import Requant
    cfg = EngineConfig.preset("small", unaligned_dma=False)

    def requant(N):
        return Requant(multiplier=tuple(range(1 << 20, (1 << 20) + N)), shift=(20,) * N)

    for N, padded in ((9, True), (16, False)):
        plan = plan_gemm(cfg, 11, 13, N, bias=True, requant=requant(N))
        assert descriptor_layout(plan) == (not padded), N
        table = plan.layout["requant"]
        assert table.offset % cfg.axi_bytes == 0 and table.stride % cfg.axi_bytes == 0
        commands = plan.commands if padded else descriptor_commands(plan)
        model = EngineModel(cfg, bytearray(plan.size), 0, plan.size)
        assert model.run(commands).ok, N
        if padded:
            with pytest.raises(ValueError, match="padded per-column tables"):
                descriptor_commands(plan)
    with pytest.raises(ValueError, match="multiples of the bus's 8 bytes"):
        plan_gemm(cfg, 4, 4, 4, pitch=4)
    # The same plan on an engine with unaligned DMA keeps the tables unpadded.
    assert descriptor_layout(plan_gemm(cfg.replace(unaligned_dma=True), 11, 13, 9, bias=True,
                                       requant=requant(9)))


@pytest.mark.parametrize("ident,match", [(0xDEADBEEF, "no MXE engine"), (0, "no MXE engine"),
                                         ((0x4D5845 << 8) | 0x7F, "version")])
def test_discover_refuses_wrong_id(ident, match):
    import asyncio
    from mxe.sim.driver import MXEDriver
    from mxe.sim.transport import CocotbTransport
    drv = MXEDriver(CocotbTransport(_FakeAxil(_csr_image(EngineConfig(), ident)), None, None))
    with pytest.raises(RuntimeError, match=match):
        asyncio.run(drv.discover())


def test_plan_layout_order(seed):
    rng = np.random.default_rng(seed)
    cfg = EngineConfig.preset("tiny")
    plan = plan_gemm(cfg, 9, 7, 5, bias=True, order=("c", "bias", "b", "a"), align=1)
    regions = [plan.layout[n] for n in ("c", "bias", "b", "a")]
    assert [r.offset for r in regions] == sorted(r.offset for r in regions)
    assert all(a.end <= b.offset for a, b in zip(regions, regions[1:]))
    assert plan.size == plan.layout["a"].end
    with pytest.raises(ValueError, match="order"):
        plan_gemm(cfg, 1, 1, 1, order=("a", "b", "c"))
    # Still right when run.
    A = random_operands(rng, (9, 7), cfg)
    B = random_operands(rng, (7, 5), cfg)
    mem = bytearray(plan.size + 16)
    for offset, data in pack_operands(plan, A, B, np.arange(5)).items():
        mem[offset:offset + len(data)] = data
    assert EngineModel(cfg, mem, 0, plan.size, fill=rng).run(plan.commands).ok
    C = plan.layout["c"]
    assert (unpack_result(plan, mem[C.offset:C.end]) ==
            expected(cfg, A, B, np.arange(5), False, None)).all()


def test_version_2_engine_refuses_new_requant_fields():
    """An engine of register map version 2 ignores CONFIG's zero point, clamp and rounding:
    the driver refuses a GEMM that needs them, before it writes anything to memory."""
    import asyncio
    from mxe.hw.regmap import ID_MAGIC
    from mxe.sim.driver import MXEDriver
    from mxe.sim.model import Requant
    from mxe.sim.transport import CocotbTransport
    axil = _FakeAxil(_csr_image(EngineConfig.preset("tiny"), ID_MAGIC << 8 | 2))
    drv = MXEDriver(CocotbTransport(axil, None, None), window=(0, 1 << 16))
    A = np.ones((2, 2), dtype=np.int64)
    for requant in (Requant(1, 0, zero_point=3), Requant(1, 0, clamp=(0, 255)),
                    Requant(1, 1, round_even=True)):
        with pytest.raises(ValueError, match="register map version 2"):
            asyncio.run(drv.gemm(A, A, requant=requant))
    assert axil.writes == []
