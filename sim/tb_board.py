"""cocotb bench of a simulated board: the board SoC's UART pins served on a TCP port.

The board top's logic (:class:`mxe.hw.boards.soc.BoardSoC`: engine, board memory, UARTBone
bridge) runs in the simulator; cocotbext-uart's ``UartSource`` drives its ``uart_rx`` pin and
``UartSink`` reads its ``uart_tx`` pin. Bytes from a TCP client go out on ``uart_rx``, bytes from
``uart_tx`` go back to the client, so a host program reaches the simulated board exactly as it
reaches a real one through pyserial (``socket://127.0.0.1:PORT``). Clients may connect one
after the other (one at a time, as to a serial port); the bench ends when ``stop_file`` exists
and no client is connected, or when no client came within ``accept_s`` seconds.

Parameters (``MXE_PARAMS``, JSON): ``port_file`` (the listening port is written there),
``stop_file``,
``divisor`` (clocks per UART bit, as built), ``clock_ns`` (default 10), ``accept_s`` (default
120), ``poll`` (cycles between socket polls, default 32). Written to ``board.json`` in the test
directory: cycles simulated, bytes each way, wall time.
"""

import json
import logging
import os
import socket
import time

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, Timer
from cocotb.utils import get_sim_time

from mxe.sim.runner import bench_params


async def _reset(dut):
    dut.uart_rx.value = 1
    dut.rst.value = 1
    await ClockCycles(dut.clk, 8)
    dut.rst.value = 0
    await ClockCycles(dut.clk, 8)


@cocotb.test()
async def serve(dut):
    """Serve the board's UART on a TCP port until told to stop."""
    from cocotbext.uart import UartSink, UartSource

    params = bench_params()
    clock_ns = params.get("clock_ns", 10)
    divisor = params["divisor"]
    poll = params.get("poll", 32)
    log = logging.getLogger("cocotb.tb")
    cocotb.start_soon(Clock(dut.clk, clock_ns, unit="ns").start())
    baud = 1e9 / (divisor * clock_ns)
    # cocotbext-uart times bits in whole nanoseconds: the bit time must be one.
    assert divisor * clock_ns == int(divisor * clock_ns), "bit time must be whole nanoseconds"
    source = UartSource(dut.uart_rx, baud=baud, bits=8, stop_bits=1)
    sink = UartSink(dut.uart_tx, baud=baud, bits=8, stop_bits=1)
    for name in list(logging.root.manager.loggerDict):
        if "uart" in name:
            logging.getLogger(name).setLevel(logging.WARNING)
    await _reset(dut)

    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", params.get("port", 0)))
    server.listen(1)
    server.setblocking(False)
    port = server.getsockname()[1]
    tmp = f"{params['port_file']}.tmp"
    with open(tmp, "w") as f:
        f.write(str(port))
    os.replace(tmp, params["port_file"])
    log.info("board UART on 127.0.0.1:%d, %.0f baud (%d clocks per bit)", port, baud, divisor)

    t0 = t_free = time.monotonic()
    conn = None
    stats = {"bytes_in": 0, "bytes_out": 0, "clients": 0}
    while True:
        # One timer, not `poll` clock-edge callbacks: the loop costs little simulation speed.
        await Timer(poll * clock_ns, unit="ns")
        if conn is None:
            if os.path.exists(params["stop_file"]):
                break
            try:
                conn, _ = server.accept()
                conn.setblocking(False)
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                sink.clear()        # answers the last client did not wait for
                stats["clients"] += 1
                log.info("client connected after %.1f s", time.monotonic() - t0)
            except BlockingIOError:
                if time.monotonic() - t_free > params.get("accept_s", 120):
                    raise AssertionError(f"no client for {params.get('accept_s', 120)} s") \
                        from None
                continue
        try:
            data = conn.recv(65536)
            if not data:        # the client closed the port
                conn.close()
                conn, t_free = None, time.monotonic()
                continue
            source.write_nowait(data)
            stats["bytes_in"] += len(data)
        except BlockingIOError:
            pass
        if not sink.empty():
            out = bytes(sink.read_nowait())
            conn.setblocking(True)
            conn.sendall(out)
            conn.setblocking(False)
            stats["bytes_out"] += len(out)
    server.close()
    stats.update(cycles=int(get_sim_time("ns") // clock_ns), wall_s=time.monotonic() - t0, baud=baud,
                 led_error=int(dut.led_error.value))
    with open("board.json", "w") as f:
        json.dump(stats, f)
    log.info("stopped: %s", stats)
