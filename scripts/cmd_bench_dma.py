"""``mxe bench-dma``: measure the DMA's bus efficiency in simulation.

For every AXI data width, memory latency, direction and transfer size, the DMA moves ``repeat``
back-to-back transfers through cocotbext-axi's ``AxiRam`` (no pauses; the latency is a real
pipelined delay of read data and write responses, see :class:`mxe.sim.tb_dma.LatencyRam`).
Efficiency = payload bytes / (bus bytes per beat x cycles), cycles counted from the first command
offered to the last done entry taken. Prints a table and writes ``bench_dma.csv`` and
``bench_dma.md`` to the output directory.
"""

import csv
import json
import tempfile
from pathlib import Path

from mxe.config_args import CommandError, add_config_arguments, config_from_args
from mxe.hw.config import AXI_DATA_WIDTHS

NAME = "bench-dma"
HELP = "measure DMA bus efficiency (reads and writes, all data widths) in simulation"

COLUMNS = ["data_width", "latency", "direction", "nbytes", "repeat", "cycles", "efficiency"]


def add_arguments(parser):
    add_config_arguments(parser, default_preset="small")
    parser.add_argument("--widths", type=int, nargs="+", default=list(AXI_DATA_WIDTHS),
                        metavar="BITS", help="AXI data widths (default: all)")
    parser.add_argument("--latencies", type=int, nargs="+", default=[0, 16], metavar="CYCLES",
                        help="memory latencies (default: 0 16)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[4096, 16384], metavar="BYTES",
                        help="transfer sizes in bytes (default: 4096 16384)")
    parser.add_argument("--repeat", type=int, default=4,
                        help="back-to-back transfers per measurement (default: 4)")
    parser.add_argument("--sim", choices=["verilator", "icarus"], default="verilator",
                        help="simulator (default: verilator)")
    parser.add_argument("-o", "--output", default="out/bench_dma", metavar="DIR",
                        help="output directory (default: %(default)s)")


def markdown(rows):
    lines = ["| data width | latency | direction | bytes | transfers | cycles | efficiency |",
             "|---:|---:|:---|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['data_width']} | {r['latency']} | {r['direction']} | {r['nbytes']} "
                     f"| {r['repeat']} | {r['cycles']} | {100 * r['efficiency']:.1f} % |")
    return "\n".join(lines) + "\n"


def run(args):
    from mxe.hw.dma import DMA
    from mxe.sim.runner import run_bench
    from mxe.sim.runner import simulator_missing

    missing = simulator_missing(args.sim)
    if missing:
        raise CommandError(f"cannot run {args.sim}: {missing}")
    base = config_from_args(args)
    for size in args.sizes:
        if not 0 < size <= 65535 * 4:
            raise CommandError(f"--sizes must be in 1..{65535 * 4}, not {size}")
    for latency in args.latencies:
        if latency < 0:
            raise CommandError(f"--latencies must be >= 0, not {latency}")
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    print(f"{'width':>5} {'lat':>3} {'dir':>3} {'bytes':>6} {'cycles':>7} {'efficiency':>10}")
    for width in args.widths:
        try:
            config = base.replace(axi_data_width=width)
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        for latency in args.latencies:
            for direction in ("rd", "wr"):
                for nbytes in args.sizes:
                    with tempfile.TemporaryDirectory() as tmp:
                        result_file = Path(tmp) / "result.json"
                        run_bench(sim=args.sim, name="mxe_dma", make_component=DMA,
                                  config=config, test_module="mxe.sim.tb_dma",
                                  testcase="test_bench", seed=1,
                                  params={"direction": direction, "nbytes": nbytes,
                                          "repeat": args.repeat, "latency": latency,
                                          "out": str(result_file)})
                        result = json.loads(result_file.read_text())
                    rows.append(result)
                    print(f"{width:>5} {latency:>3} {direction:>3} {nbytes:>6} "
                          f"{result['cycles']:>7} {100 * result['efficiency']:>9.1f}%", flush=True)
    with open(out / "bench_dma.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    (out / "bench_dma.md").write_text(
        f"DMA efficiency, {base.key()} (max_burst_len {base.max_burst_len}, "
        f"{base.max_outstanding_reads} reads in flight), {args.repeat} back-to-back transfers "
        f"per row, {args.sim}\n\n" + markdown(rows))
    print(f"{out / 'bench_dma.csv'}\n{out / 'bench_dma.md'}")
    return 0
