"""``mxe board gemm`` and ``mxe board demo``: the host side of a board run.

Both talk to a board (or a simulated one, ``--port sim``) through
:class:`~mxe.sim.transport.UARTBoneTransport` and :class:`~mxe.sim.driver.MXEDriver`, the same
driver the simulation benches use, and check every result against the numpy golden model.
"""

import asyncio
import contextlib
import json
import time
from pathlib import Path

import numpy as np

from mxe.config_args import CommandError


__all__ = ["add_gemm_arguments", "add_demo_arguments", "add_port_arguments", "run_gemm",
           "run_demo", "open_link", "connect"]


def _board(name):
    from mxe.hw.boards.catalog import board
    try:
        return board(name)
    except ValueError as exc:
        raise CommandError(str(exc)) from None


def _add_link_arguments(parser):
    parser.add_argument("board", metavar="BOARD", help="board name (`mxe board list`)")
    add_port_arguments(parser, required=True)
    parser.add_argument("--seed", type=int, default=0, help="(default: %(default)s)")


def add_port_arguments(parser, *, required):
    """``--port``, ``--baud`` and ``--timeout``: the link to a board (:func:`open_link`)."""
    parser.add_argument("--port", required=required,
                        help="the board's serial port (/dev/ttyUSB0), any pyserial URL "
                             "(socket://HOST:PORT), or 'sim' to start a simulated board of the "
                             "BOARD's engine on Verilator")
    parser.add_argument("--baud", type=int, default=None,
                        help="link baud rate (default: the board's)")
    parser.add_argument("--timeout", type=float, default=None,
                        help="seconds to wait for a read's answer, besides the time the bytes "
                             "before it take (default: 2; 600 with --port sim, which is slow "
                             "but loses no byte)")


def add_gemm_arguments(parser):
    _add_link_arguments(parser)
    parser.add_argument("--shape", type=int, nargs=3, default=(32, 32, 32),
                        metavar=("M", "K", "N"), help="(default: 32 32 32)")
    parser.add_argument("--count", type=int, default=1, help="GEMMs to run (default: 1)")
    parser.add_argument("--bias", action="store_true", help="add a random per-column bias")
    parser.add_argument("--relu", action="store_true")
    parser.add_argument("--requant", type=int, nargs=2, metavar=("MULTIPLIER", "SHIFT"),
                        help="int8 outputs requantized by MULTIPLIER / 2**SHIFT")


def add_demo_arguments(parser):
    _add_link_arguments(parser)
    parser.add_argument("--samples", type=int, default=None,
                        help="held-out images to run (default: all 450)")
    parser.add_argument("--batch", type=int, default=32, help="images per GEMM (default: 32)")
    parser.add_argument("--epochs", type=int, default=30, help="float training epochs "
                        "(default: 30)")
    parser.add_argument("-o", "--output", default=None, metavar="DIR",
                        help="write board-demo.json there")


@contextlib.contextmanager
def open_link(args, board):
    """An open transport to ``board`` on ``args.port`` (``--port sim``: a simulated board,
    started here) and the window of the board's memory."""
    from mxe.hw.boards.soc import CSR_BASE, MEM_BASE
    from mxe.sim.transport import UARTBoneTransport
    import serial

    with contextlib.ExitStack() as stack:
        port, timeout, retries, resync_s = args.port, args.timeout or 2.0, 2, 0.25
        if args.port == "sim":
            from mxe.sim.board_sim import simulated_board
            from mxe.sim.runner import simulator_missing
            missing = simulator_missing("verilator")
            if missing:
                raise CommandError(f"--port sim needs Verilator: {missing}")
            print(f"starting a simulated {board.name} on Verilator (a first run builds the "
                  f"model, a few minutes)")
            port, _info = stack.enter_context(simulated_board(
                board.config, mem_size=board.mem_size,
                single_port_memory=board.mem_single_port))
            # The simulation is slow but loses no byte: the timeout only catches a hang, and
            # a retry could not help.
            timeout, retries, resync_s = args.timeout or 600.0, 0, 1.0
        try:
            link = UARTBoneTransport(port, baud=args.baud or board.baud, timeout=timeout,
                                     retries=retries, resync_s=resync_s, csr_base=CSR_BASE)
        except (serial.SerialException, OSError, ValueError) as exc:
            raise CommandError(f"cannot open {args.port}: {exc}") from None
        stack.callback(link.close)      # before the simulated board stops
        yield link, (MEM_BASE, MEM_BASE + board.mem_size)


async def connect(link, window):
    """A driver on ``link``: the engine discovered, soft-reset, its window set."""
    from mxe.sim.driver import MXEDriver
    drv = MXEDriver(link, window=window)
    config = await drv.discover()
    await drv.soft_reset()
    await drv.set_window(*window)
    return drv, config


def _timing(link, wall, counters, clock_hz):
    """One line of timing; an engine built without ``perf_counters`` has only CYCLES."""
    busy = counters.get("BUSY_CYCLES")
    engine = ("engine busy: not counted (built without perf_counters)" if busy is None else
              f"engine busy {busy} cycles = {busy / clock_hz * 1e3:.3f} ms at "
              f"{clock_hz / 1e6:g} MHz")
    return (f"wall {wall:.3f} s, of which serial I/O {link.stats['link_seconds']:.3f} s "
            f"({link.stats['bytes_out']} bytes out, {link.stats['bytes_in']} in); {engine} "
            f"({counters['CYCLES']} cycles from first to last command)")


def run_gemm(args):
    """Random GEMMs of ``--shape M K N`` on the board, checked against the golden model."""
    from mxe.sim.demo import gemm_ref
    from mxe.sim.model import random_operands
    from mxe.sim.transport import LinkError

    board = _board(args.board)
    M, K, N = args.shape
    if min(M, K, N) < 1 or args.count < 1:
        raise CommandError(f"--shape and --count must be positive, not {args.shape} and "
                           f"{args.count}")
    rng = np.random.default_rng(args.seed)
    with open_link(args, board) as (link, window):
        async def go():
            drv, config = await connect(link, window)
            print(f"engine: {config.rows}x{config.cols}, {config.axi_data_width}-bit DMA, "
                  f"queue {config.cmd_queue_depth}; window {window[0]:#x}..{window[1]:#x}")
            failures = 0
            for i in range(args.count):
                A = random_operands(rng, (M, K), config)
                B = random_operands(rng, (K, N), config)
                bias = rng.integers(-1000, 1000, size=N) if args.bias else None
                requant = tuple(args.requant) if args.requant else None
                link.reset_stats()
                t0 = time.monotonic()
                C, counters = await drv.gemm(A, B, bias=bias, relu=args.relu, requant=requant)
                wall = time.monotonic() - t0
                want = gemm_ref(A, B, config, bias=bias, relu=args.relu, requant=requant)
                ok = bool(np.array_equal(C, want))
                failures += not ok
                print(f"GEMM {i}: {M}x{K}x{N} {'bit-exact' if ok else 'MISMATCH'}; "
                      f"{_timing(link, wall, counters, board.clock_hz)}")
            return failures

        try:
            failures = asyncio.run(go())
        except LinkError as exc:
            raise CommandError(f"the link to {args.port} failed: {exc}") from None
    return 1 if failures else 0


def run_demo(args):
    """The digits demo on the board: train on the host, run the int8 network on the engine,
    compare every layer with the int8 reference."""
    from mxe.sim import demo
    from mxe.sim.transport import LinkError

    board = _board(args.board)
    if args.batch < 1 or args.epochs < 1:
        raise CommandError(f"--batch and --epochs must be positive, not {args.batch} and "
                           f"{args.epochs}")
    x_tr, y_tr, x_te, y_te = demo.load_data(args.seed)
    n = len(x_te) if args.samples is None else args.samples
    if not 1 <= n <= len(x_te):
        raise CommandError(f"--samples must be in 1..{len(x_te)}, not {n}")
    with open_link(args, board) as (link, window):
        net = demo.train(x_tr, y_tr, args.seed, epochs=args.epochs)
        layers, s_input = demo.quantize_network(net, x_tr)
        x_q = demo.quantize_input(x_te, s_input)[:n]

        async def go():
            drv, config = await connect(link, window)
            ref = demo.reference_forward(layers, x_q, config)
            link.reset_stats()
            t0 = time.monotonic()
            outputs, stats = await demo.run_network(drv, layers, x_q, batch=args.batch)
            return ref, outputs, stats, time.monotonic() - t0

        try:
            ref, outputs, stats, wall = asyncio.run(go())
        except LinkError as exc:
            raise CommandError(f"the link to {args.port} failed: {exc}") from None
    exact, checks = demo.compare(outputs, ref, [layer.name for layer in layers])
    totals = {name: sum(st["counters"][name] for st in stats)
              for name in ("CYCLES", "BUSY_CYCLES") if name in stats[0]["counters"]}
    acc = demo.accuracy(outputs[-1], y_te[:n])
    print(f"digits demo on {board.name}: {n} images, batch {args.batch}; accuracy "
          f"{acc:.2%} (int8 reference {demo.accuracy(ref[-1], y_te[:n]):.2%})")
    print(f"bit-exact: {'YES' if exact else 'NO'} against the int8 numpy reference")
    for c in checks:
        if "first" in c:
            print(f"  {c['layer']}: {c['mismatches']} of {c['values']} differ, {c['first']}")
    print(_timing(link, wall, totals, board.clock_hz))
    if args.output:
        out = Path(args.output)
        out.mkdir(parents=True, exist_ok=True)
        (out / "board-demo.json").write_text(json.dumps({
            "board": board.name, "samples": n, "batch": args.batch, "bit_exact": exact,
            "accuracy": acc, "checks": checks, "engine_cycles": totals, "wall_s": wall,
            "link": link.stats, "layers": stats}, indent=2) + "\n")
    return 0 if exact else 1
