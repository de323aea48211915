"""``mxe bench``: GEMM utilization of the whole engine in simulation, per preset and shape.

One simulation per preset runs all shapes (one build, one start; see :mod:`mxe.sim.tb_bench`).
For each GEMM the table gives the engine's busy cycles, the lower bound ``M*K*N / (R*C)``, the
utilization, the naive weight-stationary schedule ``ceil(K/R)*ceil(N/C)*(M+2R+C-2)`` and our
speed-up over it, the DMA bytes against the minimum (A, B and C once each, in their memory
element sizes), the memory-bandwidth bound when it is above the compute bound, and the simulation
speed (simulated cycles per second of wall time). The bandwidth bound counts bus beats: A and B
read once and C written once, each matrix row starting on a beat (as the driver lays them out),
on the read and write channels, which AXI4 runs independently: the larger of the two.

The presets run as jobs of :mod:`mxe.cluster`, on a local Dask cluster of the machine's cores or
on an existing cluster (``--scheduler``); a single preset runs in this process.
"""

import argparse
import csv
import random
from pathlib import Path

from mxe.cluster import add_cluster_arguments, bench_job, check_cluster_arguments, run_jobs
from mxe.config_args import SWITCHES, CommandError, parse_bool
from mxe.hw.config import PRESETS
from mxe.sim.cycle_model import lower_bound, naive_cycles
from mxe.sim.runner import SIMULATORS, simulator_missing

NAME = "bench"
HELP = ("GEMM utilization benchmark: run shapes on presets in simulation (memory latency 16 "
        "cycles; one Dask job per preset, on this machine's cores or on a cluster with "
        "--scheduler) and tabulate cycles against the lower bound, the naive schedule and the "
        "memory-bandwidth bound")

DEFAULT_PRESETS = ("tiny", "small", "default")
DEFAULT_SHAPES = ((64, 64, 64), (128, 128, 128), (256, 256, 256), (1, 512, 512), (512, 64, 64),
                  (100, 300, 70), (33, 17, 9))

COLUMNS = ["preset", "M", "K", "N", "issue", "cycles", "lower_bound", "utilization", "naive",
           "naive_over_ours", "dma_bytes", "min_bytes", "bytes_ratio", "bw_bound",
           "of_bound", "sim_cycles_per_s", "wall_s"]


def _shape(text):
    try:
        dims = tuple(int(x) for x in text.lower().split("x"))
    except ValueError:
        dims = ()
    if len(dims) != 3 or not all(1 <= d <= 4096 for d in dims):
        raise CommandError(f"a shape is MxKxN with each dimension in 1..4096, not {text!r}")
    return dims


def add_arguments(parser):
    parser.add_argument("--presets", default=",".join(DEFAULT_PRESETS),
                        help="comma-separated presets (default: %(default)s)")
    parser.add_argument("--shapes", default=",".join("x".join(map(str, s))
                                                     for s in DEFAULT_SHAPES),
                        help="comma-separated MxKxN shapes (default: %(default)s)")
    parser.add_argument("--mode", choices=("descriptor", "commands"), default="descriptor",
                        help="how a GEMM is issued: the hardware GEMM descriptor or the driver's "
                             "command stream (default: %(default)s)")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                        help="override a configuration parameter of every preset, e.g. "
                             "--set max_outstanding_reads=16 (repeatable)")
    parser.add_argument("--latency", type=int, default=16,
                        help="memory latency in cycles (default: %(default)s)")
    parser.add_argument("--slow-models", action="store_true",
                        help="the testbench's per-cycle heartbeat and memory-latency models "
                             "(for comparing simulation speed; same cycle counts)")
    parser.add_argument("--simulator", choices=SIMULATORS, default="verilator",
                        help="(default: %(default)s)")
    parser.add_argument("--seed", type=int, help="random seed (default: random, printed)")
    parser.add_argument("-o", "--output", default="out/bench", metavar="DIR",
                        help="where bench.csv and bench.md go (default: %(default)s); builds "
                             "go to $MXE_BUILD_DIR or ./build, on a cluster the worker's")
    add_cluster_arguments(parser, unit="preset",
                          note="; presets that run side by side share the cores, so measure "
                               "the simulation speed (sim cyc/s) with -j 1")


def table_row(preset, config, result):
    """One row of the table from a measured GEMM (``bench.json`` entry)."""
    M, K, N = result["m"], result["k"], result["n"]
    counters = result["counters"]
    cycles = counters["BUSY_CYCLES"]
    bound = lower_bound(M, K, N, config)
    naive = naive_cycles(M, K, N, config)
    moved = counters["DMA_RD_BYTES"] + counters["DMA_WR_BYTES"]
    minimum = (M * K + K * N) * config.elem_bytes + M * N * config.acc_elem_bytes

    def beats(rows, cols, nbytes):
        return rows * -(-cols * nbytes // config.axi_bytes)

    bw = max(beats(M, K, config.elem_bytes) + beats(K, N, config.elem_bytes),
             beats(M, N, config.acc_elem_bytes))
    binding = max(bw, bound)
    return {
        "preset": preset, "M": M, "K": K, "N": N, "issue": result["mode"],
        "cycles": cycles, "lower_bound": bound,
        "utilization": round(M * K * N / (config.macs * cycles), 4),
        "naive": naive, "naive_over_ours": round(naive / cycles, 3),
        "dma_bytes": moved, "min_bytes": minimum, "bytes_ratio": round(moved / minimum, 3),
        "bw_bound": bw if bw > bound else "",
        "of_bound": round(binding / cycles, 4),
        "sim_cycles_per_s": round(counters["CYCLES"] / result["wall"]) if result["wall"] else "",
        "wall_s": round(result["wall"], 2),
    }


def markdown(rows):
    head = ["preset", "M×K×N", "issue", "cycles", "lower bound", "util.", "naive",
            "naive/ours", "DMA bytes (×min)", "BW bound", "of binding bound", "sim cyc/s"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        lines.append("| " + " | ".join(str(x) for x in [
            r["preset"], f"{r['M']}×{r['K']}×{r['N']}", r["issue"], r["cycles"],
            r["lower_bound"], f"{r['utilization']:.1%}", r["naive"],
            f"{r['naive_over_ours']:.2f}", f"{r['dma_bytes']} ({r['bytes_ratio']:.2f})",
            r["bw_bound"] or "—", f"{r['of_bound']:.1%}", r["sim_cycles_per_s"]]) + " |")
    return "\n".join(lines)


def run(args):
    from tqdm import tqdm

    presets = [p.strip() for p in args.presets.split(",") if p.strip()]
    for p in presets:
        if p not in PRESETS:
            raise CommandError(f"unknown preset {p!r}; one of {', '.join(PRESETS)}")
    overrides = {}
    for item in args.set:
        name, _, value = item.partition("=")
        name = name.strip()
        try:
            overrides[name] = parse_bool(value) if name in SWITCHES else int(value)
        except (ValueError, argparse.ArgumentTypeError):
            raise CommandError(f"--set wants NAME=INTEGER (NAME=true/false for a switch), not "
                               f"{item!r}") from None
    shapes = [_shape(s.strip()) for s in args.shapes.split(",") if s.strip()]
    if not shapes:
        raise CommandError("--shapes names no shape")
    missing = simulator_missing(args.simulator)
    if missing:
        raise CommandError(f"simulator {args.simulator} is not available: {missing}")
    check_cluster_arguments(args)
    configs = []
    for preset in presets:
        try:
            config = PRESETS[preset].replace(**overrides)
        except (TypeError, ValueError) as exc:
            raise CommandError(str(exc)) from None
        if not config.perf_counters:
            raise CommandError("mxe bench reports the engine's performance counters: it needs "
                               "perf_counters (drop --set perf_counters=false)")
        configs.append(config)
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1 << 31)
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    print(f"mxe bench on {args.simulator}, seed {seed}, memory latency {args.latency}")
    # The unit of work is one preset, all its shapes in one simulation, as before: the bench
    # draws every shape's operands from one random stream seeded once, so a shape's data
    # depends on the shapes before it, and splitting the shapes over jobs would change the
    # operands (and the table) for the same seed. A preset is one build either way; jobs of
    # single shapes would wait on that build's lock and each pay the simulator start.
    params = {"shapes": [list(s) for s in shapes], "latency": args.latency, "mode": args.mode,
              "fast": not args.slow_models}
    jobs = [((i, preset), {"config": config.to_dict(), "sim": args.simulator, "seed": seed,
                           "params": params})
            for i, (preset, config) in enumerate(zip(presets, configs))]
    by_job, failed = {}, []
    for (i, preset), outcome, error in run_jobs(bench_job, jobs, workers=args.jobs,
                                                scheduler=args.scheduler, desc="mxe bench",
                                                unit="preset"):
        if outcome is None:
            tqdm.write(f"{preset}: FAILED: {error}")
            failed.append(preset)
            continue
        results = outcome["results"]
        by_job[i] = [table_row(preset, configs[i], r) for r in results]
        tqdm.write(f"{preset}: {len(results)} GEMMs in {outcome['seconds']:.0f} s "
                   f"(build included)")
    rows = [row for i in sorted(by_job) for row in by_job[i]]
    with open(out / "bench.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    table = markdown(rows)
    (out / "bench.md").write_text(table + "\n")
    print(table)
    print(f"CSV and Markdown in {out}/")
    return 1 if failed else 0
