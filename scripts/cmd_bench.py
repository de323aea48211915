"""``mxe bench``: GEMM utilization of the whole engine in simulation, per preset and shape.

One simulation per preset runs all shapes (one build, one start; see :mod:`mxe.sim.tb_bench`).
For each GEMM the table gives the engine's busy cycles, the lower bound ``M*K*N / (R*C)``, the
utilization, the naive weight-stationary schedule ``ceil(K/R)*ceil(N/C)*(M+2R+C-2)`` and our
speed-up over it, the DMA bytes against the minimum (A, B and C once each, in their memory
element sizes), the memory-bandwidth bound when it is above the compute bound, and the simulation
speed (simulated cycles per second of wall time). The bandwidth bound counts bus beats: A and B
read once and C written once, each matrix row starting on a beat (as the driver lays them out),
on the read and write channels, which AXI4 runs independently: the larger of the two.

With ``--network NAME`` it runs one of the MLPerf Tiny reference networks instead
(:mod:`mxe.sim.networks`), layer by layer, every layer checked bit-exactly against the
direct-loop reference; per layer and in total: cycles, bound, utilization, DMA bytes against
the input, weights and output once, and with ``--synth-report`` the latency and inferences per
second at the routed Fmax.

The presets run as jobs of :mod:`mxe.cluster`, on a local Dask cluster of the machine's cores or
on an existing cluster (``--scheduler``); a single preset runs in this process.
"""

import argparse
import csv
import random
from pathlib import Path

import numpy as np

from mxe.cluster import add_cluster_arguments, bench_job, check_cluster_arguments, run_jobs
from mxe.config_args import SWITCHES, CommandError, parse_bool
from mxe.hw.config import PRESETS
from mxe.sim.networks import NETWORKS
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
    parser.add_argument("--network", choices=sorted(NETWORKS),
                        help="run an MLPerf Tiny reference network's layers (random int8 "
                             "weights) instead of the shapes: " + "; ".join(
                                 f"{name}: {text}" for name, (text, _) in sorted(NETWORKS.items())))
    parser.add_argument("--synth-report", action="append", default=[], metavar="FILE",
                        help="with --network: JSON report of `mxe synth --pnr` of a preset; its "
                             "Fmax gives the latency and inferences/s (repeatable, one per preset)")
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


NETWORK_COLUMNS = ["preset", "layer", "shape", "where", "macs", "cycles", "lower_bound",
                   "utilization", "dma_bytes", "min_bytes", "bytes_ratio", "exact"]


def network_rows(preset, config, results, reference):
    """Per-layer rows and a total row of a network run (``results``: the bench's statistics
    and ``outputs``), each layer's output compared with ``reference``."""
    rows = []
    total = dict.fromkeys(("macs", "cycles", "lower_bound", "dma_bytes", "min_bytes"), 0)
    total_exact = True
    for layer in results["layers"]:
        got = np.asarray(results["outputs"][layer["name"]])
        want = reference[layer["name"]]
        exact = got.shape == want.shape and bool(np.array_equal(got, want))
        total_exact &= exact
        row = {"preset": preset, "layer": layer["name"], "shape": layer["shape"],
               "where": layer["where"], "exact": exact}
        if layer["where"] == "engine":
            counters = layer["counters"]
            cycles = counters["BUSY_CYCLES"]
            row.update(macs=layer["macs"], cycles=cycles,
                       lower_bound=-(-layer["macs"] // config.macs),
                       dma_bytes=counters["DMA_RD_BYTES"] + counters["DMA_WR_BYTES"],
                       min_bytes=layer["in_bytes"] + layer["w_bytes"] + layer["out_bytes"])
            for key in total:
                total[key] += row[key]
            row.update(utilization=round(layer["macs"] / (config.macs * cycles), 4),
                       bytes_ratio=round(row["dma_bytes"] / row["min_bytes"], 3))
        rows.append(row)
    rows.append({"preset": preset, "layer": "total", "shape": "", "where": "", **total,
                 "utilization": round(total["macs"] / (config.macs * total["cycles"]), 4),
                 "bytes_ratio": round(total["dma_bytes"] / total["min_bytes"], 3),
                 "exact": total_exact})
    return rows


def network_markdown(rows, fmax):
    head = ["preset", "layer", "shape", "where", "MACs", "cycles", "bound", "util.",
            "DMA bytes (×min)", "bit-exact"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        engine = "cycles" in r
        lines.append("| " + " | ".join(str(x) for x in [
            r["preset"], f"**{r['layer']}**" if r["layer"] == "total" else r["layer"],
            r["shape"], r["where"], r.get("macs", "—"), r.get("cycles", "—"),
            r.get("lower_bound", "—"), f"{r['utilization']:.1%}" if engine else "—",
            f"{r['dma_bytes']} ({r['bytes_ratio']:.2f})" if engine else "—",
            "yes" if r["exact"] else "**NO**"]) + " |")
    notes = []
    for r in rows:
        if r["layer"] == "total" and r["preset"] in fmax:
            mhz, where, note = fmax[r["preset"]]
            ms = r["cycles"] / (mhz * 1e3)
            notes.append(f"{r['preset']}: {r['cycles']} engine cycles per inference = "
                         f"{ms:.3f} ms at {mhz:g} MHz ({where}): {1e3 / ms:.0f} inferences/s"
                         + (f" ({note})" if note else ""))
    return "\n".join(lines + ([""] + notes if notes else []))


def _run_network(args, presets, configs, seed, out):
    from tqdm import tqdm

    from mxe.cmd_demo import read_fmax
    from mxe.sim.networks import build

    fmax = {}
    for path in args.synth_report:
        report_fmax = None
        for preset, config in zip(presets, configs):
            mhz, where, note = read_fmax(path, config)
            if note is None:
                fmax[preset] = report_fmax = (mhz, where, None)
        if report_fmax is None:
            raise CommandError(f"{path} is for none of the presets run "
                               f"({', '.join(presets)}): {note}")
    params = {"network": args.network, "seed": seed, "latency": args.latency}
    rows, failed = [], []
    for i, preset, outcome in _run_presets(args, presets, configs, seed, params, failed):
        config = configs[i]
        want = build(args.network, config, seed).reference
        preset_rows = network_rows(preset, config, outcome["results"], want)
        if not preset_rows[-1]["exact"]:
            failed.append(preset)
        rows += preset_rows
        tqdm.write(f"{preset}: {args.network} in {outcome['seconds']:.0f} s (build included)"
                   + ("" if preset_rows[-1]["exact"] else ": OUTPUTS DIFFER"))
    _write_tables(out / "network", NETWORK_COLUMNS, rows, network_markdown(rows, fmax))
    return 1 if failed else 0


def _run_presets(args, presets, configs, seed, params, failed):
    """Run the bench's job of every preset (:func:`mxe.cluster.bench_job`); yield ``(index,
    preset, outcome)`` of each that ran, add the others to ``failed``."""
    from tqdm import tqdm

    jobs = [((i, preset), {"config": config.to_dict(), "sim": args.simulator, "seed": seed,
                           "params": params})
            for i, (preset, config) in enumerate(zip(presets, configs))]
    for (i, preset), outcome, error in run_jobs(bench_job, jobs, workers=args.jobs,
                                                scheduler=args.scheduler, desc="mxe bench",
                                                unit="preset"):
        if outcome is None:
            tqdm.write(f"{preset}: FAILED: {error}")
            failed.append(preset)
        else:
            yield i, preset, outcome


def _write_tables(stem, columns, rows, table):
    """``stem``.csv and ``stem``.md, and the table on standard output."""
    with open(stem.with_suffix(".csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    stem.with_suffix(".md").write_text(table + "\n")
    print(table)
    print(f"CSV and Markdown in {stem.parent}/")


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
    if args.synth_report and not args.network:
        raise CommandError("--synth-report goes with --network")
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
            raise CommandError("mxe bench reports the engine's performance counters, which "
                               f"{preset} is built without here: add --set perf_counters=true "
                               "(they only count: the cycles are the same)")
        configs.append(config)
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1 << 31)
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    print(f"mxe bench on {args.simulator}, seed {seed}, memory latency {args.latency}"
          + (f", network {args.network}" if args.network else ""))
    if args.network:
        return _run_network(args, presets, configs, seed, out)
    # The unit of work is one preset, all its shapes in one simulation, as before: the bench
    # draws every shape's operands from one random stream seeded once, so a shape's data
    # depends on the shapes before it, and splitting the shapes over jobs would change the
    # operands (and the table) for the same seed. A preset is one build either way; jobs of
    # single shapes would wait on that build's lock and each pay the simulator start.
    params = {"shapes": [list(s) for s in shapes], "latency": args.latency, "mode": args.mode,
              "fast": not args.slow_models}
    by_job, failed = {}, []
    for i, preset, outcome in _run_presets(args, presets, configs, seed, params, failed):
        results = outcome["results"]
        by_job[i] = [table_row(preset, configs[i], r) for r in results]
        tqdm.write(f"{preset}: {len(results)} GEMMs in {outcome['seconds']:.0f} s "
                   f"(build included)")
    rows = [row for i in sorted(by_job) for row in by_job[i]]
    _write_tables(out / "bench", COLUMNS, rows, markdown(rows))
    return 1 if failed else 0
