"""A simulated board on a TCP port, for the host driver to talk to through pyserial.

:func:`simulated_board` builds the board SoC (engine, board memory, UARTBone bridge) for a
simulator, runs :mod:`mxe.sim.tb_board` in the background and hands back the pyserial URL of its
UART (``socket://127.0.0.1:PORT``). Everything a host program does with a board then works on the
simulation: the same :class:`~mxe.sim.transport.UARTBoneTransport`, the same
:class:`~mxe.sim.driver.MXEDriver`, the same ``mxe board gemm``.
"""

import contextlib
import threading
import time
import uuid

from mxe.sim.runner import build_root, run_bench


__all__ = ["simulated_board", "SIM_DIVISOR", "SIM_CLOCK_NS"]

#: Clocks per UART bit in simulation: 4 (the receiver's least; the UART model's timing is
#: exact, so no margin for a clock error is needed) at a 10 ns clock, so a byte costs 40
#: simulated cycles instead of the 170 of 3 Mbaud at 50 MHz (the bridge logic is the same).
SIM_DIVISOR = 4
SIM_CLOCK_NS = 10


@contextlib.contextmanager
def simulated_board(config, *, sim="verilator", mem_size=1 << 16, divisor=SIM_DIVISOR,
                    timeout_cycles=4096, accept_s=300, start_timeout_s=900,
                    single_port_memory=False):
    """Run a simulated board while the ``with`` block runs; yields ``(url, info)``.
    ``single_port_memory`` builds the board memory as the iCEBreaker's (SPRAM).

    Clients connect to the URL one at a time (as to a serial port). Close every connection
    before leaving the block: the bench stops once none is open. ``info`` gets ``test_dir``
    (the bench's directory; ``board.json`` there after the block). Raises AssertionError if
    the bench failed, RuntimeError if it did not start.
    """
    from mxe.hw.boards.soc import BoardSoC

    run_dir = build_root() / "board-sim"
    run_dir.mkdir(parents=True, exist_ok=True)
    tag = uuid.uuid4().hex[:8]
    port_file, stop_file = run_dir / f"port-{tag}", run_dir / f"stop-{tag}"
    params = dict(port_file=str(port_file), stop_file=str(stop_file), divisor=divisor,
                  clock_ns=SIM_CLOCK_NS, accept_s=accept_s)
    outcome = {}

    def run():
        try:
            outcome["test_dir"] = run_bench(
                sim=sim, name=f"mxe_board_{mem_size >> 10}k_d{divisor}_t{timeout_cycles}"
                              + ("_sp" if single_port_memory else ""),
                make_component=lambda c: BoardSoC(c, mem_size=mem_size, divisor=divisor,
                                                  timeout_cycles=timeout_cycles,
                                                  single_port_memory=single_port_memory),
                config=config, test_module="mxe.sim.tb_board", testcase="serve",
                params=params)
        except BaseException as exc:  # handed to the caller's thread
            outcome["error"] = exc

    thread = threading.Thread(target=run, name="board-sim", daemon=True)
    thread.start()
    deadline = time.monotonic() + start_timeout_s    # includes building the simulation
    while not port_file.exists():
        if not thread.is_alive():
            raise outcome.get("error") or RuntimeError("the board simulation ended at once")
        if time.monotonic() > deadline:
            raise RuntimeError(f"the board simulation did not start in {start_timeout_s} s")
        time.sleep(0.2)
    port = int(port_file.read_text())
    port_file.unlink()
    info = {}
    try:
        yield f"socket://127.0.0.1:{port}", info
    finally:
        stop_file.touch()
        thread.join(timeout=600)
        stop_file.unlink(missing_ok=True)
    if thread.is_alive():
        raise RuntimeError("the board simulation did not stop")
    if "error" in outcome:
        raise outcome["error"]
    info["test_dir"] = outcome["test_dir"]
