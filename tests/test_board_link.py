"""The host link end to end: the real host driver, through pyserial, to a simulated board.

:func:`mxe.sim.board_sim.simulated_board` runs the board SoC (engine, board memory, UARTBone
bridge) on Verilator with its UART pins served on a TCP port; the test talks to it with
``UARTBoneTransport("socket://127.0.0.1:PORT")`` and ``MXEDriver``, the code a user runs against
a board. Every GEMM against the numpy golden model; bad frames on the link must leave the bridge
usable.

Reproduce a failure with the seed printed by the test: ``MXE_SEED=<seed> pytest ... -k ...``.
"""

import asyncio
import json
import time

import numpy as np
import pytest

from mxe.hw.boards.catalog import BOARDS
from mxe.hw.regmap import ID_VALUE, OFFSETS
from mxe.sim.demo import gemm_ref
from mxe.sim.model import random_operands
from mxe.sim.transport import (UARTBONE_READ, UARTBONE_WRITE, UARTBoneTransport,
                               uartbone_frame)


# Frames (no simulator) -----------------------------------------------------------------------

def test_uartbone_frames():
    # LiteX's wire format: command, length in words, big-endian word address, big-endian data.
    assert uartbone_frame(UARTBONE_WRITE, 0x1000_0010, [0x11223344, 5]) == bytes(
        [0x01, 2, 0x04, 0x00, 0x00, 0x04, 0x11, 0x22, 0x33, 0x44, 0, 0, 0, 5])
    assert uartbone_frame(UARTBONE_READ, 0x8, count=255) == bytes([0x02, 255, 0, 0, 0, 2])
    with pytest.raises(ValueError, match="multiple of 4"):
        uartbone_frame(UARTBONE_READ, 0x6, count=1)
    with pytest.raises(ValueError, match="1..255"):
        uartbone_frame(UARTBONE_READ, 0, count=256)
    with pytest.raises(ValueError, match="1..255"):
        uartbone_frame(UARTBONE_WRITE, 0, [])


def test_command_words_are_consecutive():
    # The driver pushes a command as one block write of CMD_W0..CMD_W3.
    base = OFFSETS["CMD_W0"]
    assert [OFFSETS[f"CMD_W{i}"] for i in range(4)] == [base + 4 * i for i in range(4)]


# On the simulated board ----------------------------------------------------------------------

#: The board simulated by the module's tests, one simulation build with the board command's
#: test: the ULX3S-25F, whose tiny engine builds in half the time of the 85F's small one.
BOARD = "ulx3s-25f"
CONFIG = BOARDS[BOARD].config
MEM_SIZE = 1 << 16


@pytest.fixture(scope="module")
def board_url():
    """One simulated board for the module's tests (its Verilator build is the expensive part);
    each test connects to it on its own, as a user's program would."""
    from mxe.sim.board_sim import simulated_board
    from mxe.sim.runner import simulator_missing
    if simulator_missing("verilator"):
        pytest.skip(simulator_missing("verilator"))
    with simulated_board(CONFIG, mem_size=MEM_SIZE) as (url, info):
        yield url
    print(f"board bench: {info['test_dir']}")


@pytest.fixture
def board(board_url):
    from mxe.hw.boards.soc import MEM_BASE
    # The simulation is slow, but it loses no byte: the timeout only catches a hang, and a
    # retry could not help.
    link = UARTBoneTransport(board_url, timeout=600.0, retries=0, resync_s=1.0)
    yield link, (MEM_BASE, MEM_BASE + MEM_SIZE)
    link.close()


def _driver(link, window):
    from mxe.sim.driver import MXEDriver
    return MXEDriver(link, window=window)


def test_gemm_over_link(board, seed):
    """Random GEMMs through the driver over the link, with bias, ReLU and requantization."""
    link, window = board
    rng = np.random.default_rng(seed)
    drv = _driver(link, window)

    async def run():
        config = await drv.discover()
        assert config.rows == CONFIG.rows and config.axi_data_width == CONFIG.axi_data_width
        await drv.soft_reset()
        await drv.set_window(*window)
        shapes = [(5, 7, 6), (17, 11, 9), tuple(int(x) for x in rng.integers(1, 24, size=3))]
        for i, (M, K, N) in enumerate(shapes):
            A = random_operands(rng, (M, K), CONFIG, extremes=0.05)
            B = random_operands(rng, (K, N), CONFIG, extremes=0.05)
            bias = rng.integers(-5000, 5000, size=N) if i != 1 else None
            relu = bool(i % 2)
            requant = (int(rng.integers(1 << 20, 1 << 30)), int(rng.integers(20, 36))) \
                if i != 0 else None
            link.reset_stats()
            t0 = time.monotonic()
            C, counters = await drv.gemm(A, B, bias=bias, relu=relu, requant=requant)
            want = gemm_ref(A, B, CONFIG, bias=bias, relu=relu, requant=requant)
            np.testing.assert_array_equal(C, want, err_msg=f"{M}x{K}x{N}")
            assert counters["MAC_ACTIVE_CYCLES"] > 0
            assert counters["DMA_WR_BYTES"] >= C.size * drv.last_plan.out_bytes
            print(f"{M}x{K}x{N}: {counters['CYCLES']} engine cycles, {link.stats} "
                  f"in {time.monotonic() - t0:.1f} s")

    asyncio.run(run())


def test_bad_frames_resynchronize(board, seed):
    """Unknown command bytes, addresses outside the map and a frame cut off mid-word: the
    bridge drops them, and the next frame works."""
    from mxe.hw.boards.soc import MEM_BASE
    link, window = board
    rng = np.random.default_rng(seed)
    word = int(rng.integers(1 << 32))
    addr = MEM_BASE + 4 * int(rng.integers(MEM_SIZE // 4))
    link.write_words(addr, [word])
    # Unknown command bytes: dropped one by one.
    link.port.write(bytes([0x00, 0x07, 0xFF, 0x55]))
    assert link.read_words(OFFSETS["ID"], 1) == [ID_VALUE]
    # Outside the map: a read answers zeros, a write is dropped.
    hole = MEM_BASE + MEM_SIZE + 0x100
    assert link.read_words(hole, 2) == [0, 0]
    link.write_words(hole, [0x12345678])
    assert link.read_words(addr, 1) == [word]
    # A write cut off in the middle of a data word: abandoned after the bridge's timeout, and
    # the partial word is never written.
    link.port.write(uartbone_frame(UARTBONE_WRITE, addr, [word ^ 0xFFFF_FFFF])[:8])
    link.port.flush()
    time.sleep(link.resync_s)
    assert link.read_words(addr, 1) == [word]
    # A read cut off in its address: same.
    link.port.write(uartbone_frame(UARTBONE_READ, addr, count=1)[:4])
    link.port.flush()
    time.sleep(link.resync_s)
    assert link.read_words(OFFSETS["ID"], 1) == [ID_VALUE]
    assert link.stats["retries"] == 0


def test_litex_client(board_url, seed):
    """LiteX's own UARTBone client (litex.tools.remote.comm_uart.CommUART, what litex_server
    --uart uses) reads the engine's ID and writes and reads the board memory."""
    from litex.tools.remote.comm_uart import CommUART
    from mxe.hw.boards.soc import CSR_BASE, MEM_BASE
    rng = np.random.default_rng(seed)
    words = [int(w) for w in rng.integers(0, 1 << 32, size=20)]   # LiteX splits writes by 8
    addr = MEM_BASE + 4 * int(rng.integers(MEM_SIZE // 4 - len(words)))
    comm = CommUART(board_url)
    comm.port.timeout = 600.0
    try:
        assert comm.read(CSR_BASE + OFFSETS["ID"]) == ID_VALUE
        comm.write(addr, words)
        assert comm.read(addr, len(words)) == words
    finally:
        comm.close()
    # The same words seen through MXE's own transport.
    link = UARTBoneTransport(board_url, timeout=600.0, retries=0)
    try:
        assert link.read_words(addr, len(words)) == words
    finally:
        link.close()


@pytest.mark.slow
def test_demo_over_link(board, seed):
    """The digits demo's int8 network through the link, every layer bit-exact with the int8
    reference (what ``mxe board demo`` runs; a few images, as the weights dominate the bytes)."""
    from mxe.sim import demo
    link, window = board
    x_tr, y_tr, x_te, _ = demo.load_data(seed)
    net = demo.train(x_tr, y_tr, seed, epochs=4)
    layers, s_input = demo.quantize_network(net, x_tr)
    x_q = demo.quantize_tensor(x_te, s_input)[:2]
    ref = demo.reference_forward(layers, x_q, CONFIG)

    async def run():
        drv = _driver(link, window)
        await drv.discover()
        await drv.soft_reset()
        await drv.set_window(*window)
        return await demo.run_network(drv, layers, x_q, batch=2)

    t0 = time.monotonic()
    outputs, stats = asyncio.run(run())
    exact, checks = demo.compare(outputs, ref, [layer.name for layer in layers])
    assert exact, checks
    assert [st["gemms"] for st in stats] == [1] * len(layers)
    print(f"demo, {len(x_q)} images: {sum(st['counters']['CYCLES'] for st in stats)} engine "
          f"cycles, {link.stats} in {time.monotonic() - t0:.1f} s")


def test_link_throughput(board, seed):
    """Payload bytes per second of the link, in simulated time (the engine's CYCLES counter),
    both ways, checked for content; printed also scaled to the ULX3S's 3 Mbaud."""
    from mxe.hw.boards.catalog import board as find_board
    from mxe.sim.board_sim import SIM_CLOCK_NS, SIM_DIVISOR
    link, (base, _limit) = board
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 256, size=2048, dtype=np.uint8).tobytes()

    async def run():
        c0 = await link.cycles()
        await link.write_mem(base, data)
        c1 = await link.cycles()
        back = await link.read_mem(base, len(data))
        c2 = await link.cycles()
        return back, c1 - c0, c2 - c1

    back, write_cycles, read_cycles = asyncio.run(run())
    assert back == data
    ulx3s = find_board(BOARD)
    scale = (SIM_DIVISOR * SIM_CLOCK_NS * 1e-9) / (round(ulx3s.clock_hz / ulx3s.baud)
                                                   / ulx3s.clock_hz)
    for what, cycles in (("write", write_cycles), ("read", read_cycles)):
        rate = len(data) / (cycles * SIM_CLOCK_NS * 1e-9)
        # Ten bits a byte on the wire is the ceiling; frame headers and the reads of the
        # CYCLES counter around the transfer cost a little more.
        assert rate < 1e9 / (SIM_CLOCK_NS * SIM_DIVISOR * 10)
        print(f"link {what}: {rate / 1e6:.2f} MB/s simulated at {SIM_DIVISOR} clocks a bit, "
              f"{rate * scale / 1e3:.0f} KB/s at the {BOARD}'s {ulx3s.baud / 1e6:g} Mbaud")


@pytest.mark.parametrize("name", [BOARD, pytest.param("ulx3s-85f", marks=pytest.mark.slow),
                                  pytest.param("ulx3s-12f", marks=pytest.mark.slow),
                                  pytest.param("arty-a7-35", marks=pytest.mark.slow)])
def test_board_gemm_command(name, capsys):
    """``mxe board gemm BOARD --port sim``: the command a user runs, against the board's own
    engine configuration simulated on Verilator. The ECP5-85F's and ECP5-12F's engines (the
    lean one: the driver issues commands on bus-aligned rows) differ from the 25F's, another
    simulation build each, so those run with ``-m slow``, as does the Arty A7-35's (the 25F's
    engine, from another board family)."""
    from mxe.cli import main
    from mxe.sim.runner import simulator_missing
    if simulator_missing("verilator"):
        pytest.skip(simulator_missing("verilator"))
    status = main(["board", "gemm", name, "--port", "sim", "--shape", "6", "10", "5",
                   "--count", "2", "--bias", "--relu", "--requant", "1518500250", "38"])
    out = capsys.readouterr().out
    assert status == 0, out
    assert out.count("bit-exact;") == 2 and "MISMATCH" not in out


def test_mxe_run_on_board(board_url, tmp_path, capsys):
    """`mxe run --board --port`: an ONNX model quantized by ONNX Runtime with its convolutions
    and its Gemm on the (simulated) board's engine, over the serial link; its output equal to
    ONNX's reference implementation."""
    from mxe.cli import main
    from onnx_models import float_cnn, quantized

    rng = np.random.default_rng(7)
    quantized(float_cnn(rng, size=6), rng, tmp_path / "cnn.onnx", fmt="qop")
    np.save(tmp_path / "x.npy", rng.standard_normal((1, 3, 6, 6)).astype(np.float32))
    assert main(["run", str(tmp_path / "cnn.onnx"), "--input", str(tmp_path / "x.npy"),
                 "--board", BOARD, "--port", board_url, "--timeout", "600", "--reference",
                 "-o", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    print(out)
    assert f"on board {BOARD} on {board_url}" in out
    engine_rows = [line for line in out.splitlines() if " engine " in line and "QLinear" in line]
    assert len(engine_rows) >= 3 and all(line.split()[-1].endswith("%") for line in engine_rows)
    (ref,) = [line for line in out.splitlines() if line.startswith("onnx.reference:")]
    equal, total = ref.split(": ")[2].split(" values")[0].split("/")
    assert equal == total
    assert json.loads((tmp_path / "out" / "run.json").read_text())["board"] == BOARD
