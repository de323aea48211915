"""``mxe demo``: a quantized digit classifier running on the engine RTL in simulation.

Trains a small CNN on scikit-learn's bundled digits in float, quantizes it to int8 (see
:mod:`mxe.sim.demo` for the scheme), computes the int8 reference with the numpy golden model,
runs the held-out samples through the engine RTL (:mod:`mxe.sim.tb_demo`: every dense layer one
GEMM, the convolution one GEMM of its patches or, with ``--conv-unit true``, convolution
descriptors, one per image; bias, ReLU and requantization in hardware), and checks the engine's
outputs against the reference bit for bit. Exit status 1 if they differ.
"""

import contextlib
import json
import os
import shutil
import sys
import threading
import time
from pathlib import Path

import numpy as np

from mxe.config_args import CommandError, add_config_arguments, config_from_args
from mxe.sim.runner import SIMULATORS, build_root, simulator_missing

NAME = "demo"
HELP = "train a small int8 CNN on the digits data set and run it on the engine RTL"

#: Images per GEMM: M of each layer (x36 for the convolution). Larger batches reuse each weight
#: tile for more rows (the planner cuts M to fit the scratchpad and accumulator).
DEFAULT_BATCH = 128


def add_arguments(parser):
    add_config_arguments(parser, default_preset="small")
    parser.add_argument("--simulator", choices=SIMULATORS, default="verilator",
                        help="(default: %(default)s)")
    parser.add_argument("--samples", type=int,
                        help="held-out images to run on the engine (default: all 450, about "
                             "1 minute of Verilator simulation with the small preset, plus 2-3 "
                             "minutes to build the model on a configuration's first run)")
    parser.add_argument("--batch", type=int, default=DEFAULT_BATCH,
                        help="images per GEMM: M of each layer (x36 for the convolution) "
                             "(default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0,
                        help="data split, weight initialization, training order and bench "
                             "seed (default: %(default)s)")
    parser.add_argument("--epochs", type=int, default=30, help="float training epochs "
                        "(default: %(default)s)")
    parser.add_argument("--waves", action="store_true",
                        help="record a waveform (FST) of the run; keep --samples small")
    parser.add_argument("--synth-report", metavar="FILE",
                        help="JSON report of `mxe synth --pnr`: its Fmax gives inferences/s")
    parser.add_argument("-o", "--output", default="out/demo", metavar="DIR",
                        help="where the summary, plot and waveform go (default: %(default)s)")


def read_fmax(path, config):
    """``(Fmax in MHz, "family device", note or None)`` from a JSON report of `mxe synth --pnr`
    (the note when the report is for another configuration than ``config``)."""
    try:
        report = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise CommandError(f"cannot read the synthesis report {path}: {exc}") from None
    fmax = (report.get("pnr") or {}).get("fmax_mhz") if isinstance(report, dict) else None
    if not fmax:
        raise CommandError(f"{path} has no Fmax (pnr.fmax_mhz): run `mxe synth --pnr`")
    note = None
    if report.get("config_key") != config.key():
        note = (f"the report is for configuration {report.get('config_key')}, "
                f"this run is {config.key()}")
    where = f"{report.get('family', '?')} {report.get('device', '')}".strip()
    return float(fmax), where, note


class _Progress:
    """A tqdm bar fed by the file the bench writes after every batch (the simulator runs in
    another process)."""

    def __init__(self, path, total, desc, file=None):
        from tqdm import tqdm
        self.path = path
        self.bar = tqdm(total=total, desc=desc, unit="img", dynamic_ncols=True, file=file)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._poll, daemon=True)
        self.thread.start()

    def _poll(self):
        while not self.stop.wait(0.5):
            self._update()

    def _update(self):
        try:
            done = int(Path(self.path).read_text() or 0)
        except (OSError, ValueError):
            return
        if done > self.bar.n:
            self.bar.update(done - self.bar.n)

    def close(self):
        self.stop.set()
        self.thread.join()
        self._update()
        self.bar.close()


@contextlib.contextmanager
def _output_to(log_path):
    """Send this process's stdout and stderr (file descriptors, so the Verilator build's
    compiler output too) to ``log_path``; yields a stream on the terminal's stderr for the
    progress bar."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    terminal = os.fdopen(os.dup(2), "w")
    try:
        with open(log_path, "w") as log:
            os.dup2(log.fileno(), 1)
            os.dup2(log.fileno(), 2)
            try:
                yield terminal
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os.dup2(saved[0], 1)
                os.dup2(saved[1], 2)
    finally:
        os.close(saved[0])
        os.close(saved[1])
        terminal.close()


def run(args):
    from mxe.sim import demo

    config = config_from_args(args)
    if not config.signed or config.input_width != 8 or config.acc_width < 32:
        raise CommandError("the demo needs signed 8-bit operands and accumulators of at least "
                           f"32 bits, not {config.key()}")
    if not config.perf_counters:
        raise CommandError("the demo reports the engine's performance counters: it needs "
                           "perf_counters (add --perf-counters true; they only count, the "
                           "cycles are the same)")
    missing = simulator_missing(args.simulator)
    if missing:
        raise CommandError(f"simulator {args.simulator} is not available: {missing}")
    if args.batch < 1:
        raise CommandError(f"--batch must be at least 1, not {args.batch}")
    if args.epochs < 1:
        raise CommandError(f"--epochs must be at least 1, not {args.epochs}")
    fmax = read_fmax(args.synth_report, config) if args.synth_report else None
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.monotonic()

    x_tr, y_tr, x_te, y_te = demo.load_data(args.seed)
    if args.samples is None:
        args.samples = len(x_te)
    if not 1 <= args.samples <= len(x_te):
        raise CommandError(f"--samples must be in 1..{len(x_te)} (the held-out set), "
                           f"not {args.samples}")
    print(f"MXE demo: int8 digits CNN on a {config.rows}x{config.cols} engine "
          f"({config.key()}), {args.simulator}, seed {args.seed}")
    print(f"data: scikit-learn digits, {len(x_tr)} training / {len(x_te)} held-out 8x8 images "
          f"(stratified split, seed {args.seed})")

    t0 = time.monotonic()
    net = demo.train(x_tr, y_tr, args.seed, epochs=args.epochs)
    shapes = " -> ".join(["conv3x3x8 (6x6x8)"] + [str(l["w"].shape[1])
                                                  for l in net.layers[1:]])
    print(f"float training: {shapes}, ReLU, Adam, {args.epochs} epochs, "
          f"{time.monotonic() - t0:.1f} s")

    layers, s_input = demo.quantize_network(net, x_tr)
    x_q = demo.quantize_input(x_te, s_input)
    print("quantization: int8 weights symmetric per output channel, int8 activations "
          f"asymmetric (zero point {demo.ACTIVATION_ZERO_POINT}), int32 biases; requant factors "
          "S[c] = s_in*s_w[c]/s_out ~= multiplier[c] / 2**shift[c]")
    print(f"  {'layer':<7}{'GEMM K x N':>12}{'S (min .. max over channels)':>32}"
          f"{'max rel. error':>16}")
    for layer in layers:
        K, N = layer.w.shape
        if layer.requant:
            real = np.array(layer.scales["real"])
            got = np.array(layer.requant.multiplier) / 2.0 ** np.array(layer.requant.shift)
            span = f"{real.min():.3e} .. {real.max():.3e}"
            print(f"  {layer.name:<7}{f'{K} x {N}':>12}{span:>32}"
                  f"{np.max(np.abs(got - real) / real):>16.1e}")
        else:
            print(f"  {layer.name:<7}{f'{K} x {N}':>12}{'raw int32 logits (argmax on host)':>48}")

    float_logits = net.forward(x_te)
    ref = demo.reference_forward(layers, x_q, config)
    n = args.samples
    acc = {"float": demo.accuracy(float_logits, y_te),
           "int8_reference": demo.accuracy(ref[-1], y_te),
           "float_simulated": demo.accuracy(float_logits[:n], y_te[:n]),
           "int8_reference_simulated": demo.accuracy(ref[-1][:n], y_te[:n])}

    # The engine.
    from mxe.hw.generate import TOPS
    from mxe.sim.runner import run_bench
    make, top = TOPS["engine"]
    net_path = out / "network.npz"
    demo.save_network(net_path, layers, x_q[:n])
    progress_path = out / "progress.txt"
    progress_path.write_text("0")
    print(f"engine RTL: {n} held-out images in batches of {args.batch} on {args.simulator} "
          f"(a configuration's first run builds the simulation model first; build output in "
          f"{out / 'sim.log'})")
    log_path = out / "sim.log"
    t_sim, t_wall_sim = time.monotonic(), time.time()
    failure = None
    with _output_to(log_path) as terminal:
        bar = _Progress(progress_path, n, f"{args.simulator} {config.rows}x{config.cols}",
                        file=terminal)
        try:
            run_dir = run_bench(sim=args.simulator, name=top, make_component=make,
                                config=config, test_module="mxe.sim.tb_demo",
                                testcase="test_demo", seed=args.seed,
                                params={"network": str(net_path.resolve()),
                                        "batch": args.batch,
                                        "progress": str(progress_path.resolve())},
                                waves=args.waves)
        except (AssertionError, RuntimeError) as exc:   # a failed test, or build
            failure = exc
        finally:
            bar.close()
    if failure is not None:
        print(f"FAILED: the engine bench did not finish (build and run output: {log_path}, "
              f"{build_root() / 'sim'}): {failure}")
        return 1
    sim_wall = time.monotonic() - t_sim
    progress_path.unlink(missing_ok=True)
    result = json.loads((run_dir / "demo.json").read_text())
    with np.load(run_dir / "demo.npz") as f:
        engine = [f[f"out{i}"] for i in range(len(layers))]

    # Bit-exactness, layer by layer.
    exact, checks = demo.compare(engine, ref, [layer.name for layer in layers])
    acc["engine"] = demo.accuracy(engine[-1], y_te[:n])
    pred = np.argmax(engine[-1], axis=1)

    # Report.
    print()
    print(f"  {'accuracy':<28}{f'held-out ({len(x_te)})':>16}{f'simulated ({n})':>16}")
    print(f"  {'float':<28}{acc['float']:>16.2%}{acc['float_simulated']:>16.2%}")
    print(f"  {'int8 reference (numpy)':<28}{acc['int8_reference']:>16.2%}"
          f"{acc['int8_reference_simulated']:>16.2%}")
    print(f"  {f'engine RTL ({args.simulator})':<28}{'':>16}{acc['engine']:>16.2%}")
    print()
    total_values = sum(c["values"] for c in checks)
    if exact:
        print(f"bit-exact: YES, every output of every layer ({total_values} values: int8 "
              f"activations and int32 logits) equals the int8 numpy reference")
    else:
        print("bit-exact: NO")
        for c in checks:
            if "first" in c:
                print(f"  {c['layer']}: {c['mismatches']} of {c['values']} differ, "
                      f"{c['first']}")

    macs_per_cycle = config.rows * config.cols
    print()
    print(f"per layer, summed over {n} images in {-(-n // args.batch)} batches (a GEMM per "
          f"batch, or a convolution descriptor per image; utilization = MACs / "
          f"({config.rows}*{config.cols} * cycles)):")
    head = (f"  {'layer':<7}{'run as':>11}{'GEMM (batch)':>15}{'MACs':>11}{'cycles':>10}"
            f"{'busy':>10}{'MAC-act':>10}{'util':>8}{'util(busy)':>11}{'stall ld/st/dep':>20}")
    print(head)
    rows = []
    tot = {"macs": 0, "CYCLES": 0, "BUSY_CYCLES": 0, "MAC_ACTIVE_CYCLES": 0}
    for st in result["layers"]:
        cn = st["counters"]
        M, K, N = st["shapes"][0]
        row = {"layer": st["name"], "run_as": st["run_as"], "gemm_first_batch": [M, K, N],
               "gemms": st["gemms"], "descriptors": st["descriptors"],
               "commands": st.get("commands"), "macs": st["macs"], "cycles": cn["CYCLES"],
               "busy_cycles": cn["BUSY_CYCLES"], "mac_active_cycles": cn["MAC_ACTIVE_CYCLES"],
               "stall_load": cn["STALL_LOAD"], "stall_store": cn["STALL_STORE"],
               "stall_dep": cn["STALL_DEP"], "dma_rd_bytes": cn["DMA_RD_BYTES"],
               "dma_wr_bytes": cn["DMA_WR_BYTES"],
               "utilization": st["macs"] / (macs_per_cycle * max(1, cn["CYCLES"])),
               "utilization_busy": st["macs"] / (macs_per_cycle * max(1, cn["BUSY_CYCLES"])),
               "schedule": st.get("schedule")}
        rows.append(row)
        for k in ("CYCLES", "BUSY_CYCLES", "MAC_ACTIVE_CYCLES"):
            tot[k] += cn[k]
        tot["macs"] += st["macs"]
        stalls = f"{cn['STALL_LOAD']}/{cn['STALL_STORE']}/{cn['STALL_DEP']}"
        print(f"  {st['name']:<7}{st['run_as']:>11}{f'{M}x{K}x{N}':>15}{st['macs']:>11}"
              f"{cn['CYCLES']:>10}{cn['BUSY_CYCLES']:>10}{cn['MAC_ACTIVE_CYCLES']:>10}"
              f"{row['utilization']:>8.1%}{row['utilization_busy']:>11.1%}{stalls:>20}")
    util_all = tot["macs"] / (macs_per_cycle * max(1, tot["CYCLES"]))
    util_busy = tot["macs"] / (macs_per_cycle * max(1, tot["BUSY_CYCLES"]))
    print(f"  {'total':<7}{'':>26}{tot['macs']:>11}{tot['CYCLES']:>10}{tot['BUSY_CYCLES']:>10}"
          f"{tot['MAC_ACTIVE_CYCLES']:>10}{util_all:>8.1%}{util_busy:>11.1%}")
    for st in result["layers"]:
        if st["run_as"] == "descriptor":
            print(f"  {st['name']}: {st['descriptors']} convolution descriptors (CONV_A/B/C, one "
                  f"per image), {st['commands']} commands; the GEMM column is the im2col GEMM "
                  f"they compute")
    per_inf = tot["CYCLES"] / n
    per_inf_busy = tot["BUSY_CYCLES"] / n
    print(f"cycles per inference: {per_inf:.0f} end to end (the simulated host pushes commands "
          f"over AXI-Lite and waits for each GEMM), {per_inf_busy:.0f} with the engine busy; "
          f"M*K*N / ({config.rows}*{config.cols}) bound {tot['macs'] / n / macs_per_cycle:.0f}")
    throughput = None
    if fmax:
        f_mhz, where, note = fmax
        throughput = {"fmax_mhz": f_mhz, "device": where,
                      "inferences_per_s": f_mhz * 1e6 / per_inf,
                      "inferences_per_s_busy": f_mhz * 1e6 / per_inf_busy, "note": note}
        print(f"at Fmax {f_mhz:.1f} MHz ({where}, {args.synth_report}): "
              f"{throughput['inferences_per_s']:,.0f} inferences/s end to end, "
              f"{throughput['inferences_per_s_busy']:,.0f} counting engine-busy cycles only")
        if note:
            print(f"  note: {note}")
    else:
        print("inferences/s: give --synth-report FILE (from `mxe synth --pnr`) for the Fmax")

    # Files.
    waves = []
    if args.waves:
        # Verilator writes the waveform into the run's directory, Icarus into the build's.
        build_dir = run_dir.parent.parent
        for wave in sorted({*run_dir.glob("*.fst"), *run_dir.glob("*.vcd"),
                            *build_dir.glob("*.fst"), *build_dir.glob("*.vcd")}):
            if wave.stat().st_mtime >= t_wall_sim:
                shutil.copy(wave, out / wave.name)
                waves.append(str(out / wave.name))
        if not waves:
            print(f"waveform: none found in {run_dir} or {build_dir}")
    png = out / "demo.png"
    _plot(png, rows, x_te[:n], pred, y_te[:n], config, args.simulator)
    summary = {
        "seed": args.seed, "bench_seed": result.get("seed"), "config": config.to_dict(),
        "config_key": config.key(), "simulator": args.simulator, "samples": n,
        "batch": args.batch, "epochs": args.epochs, "accuracy": acc, "bit_exact": exact,
        "checks": checks, "layers": rows,
        "quantization": [{"layer": l.name, "K": int(l.w.shape[0]), "N": int(l.w.shape[1]),
                          "relu": l.relu,
                          "requant": {"multiplier": list(l.requant.multiplier),
                                      "shift": list(l.requant.shift),
                                      "zero_point": l.requant.zero_point} if l.requant else None,
                          **l.scales} for l in layers],
        "input_scale": s_input,
        "totals": {**tot, "utilization": util_all, "utilization_busy": util_busy,
                   "cycles_per_inference": per_inf, "busy_cycles_per_inference": per_inf_busy},
        "throughput": throughput, "simulation_wall_s": round(sim_wall, 1),
        "total_wall_s": round(time.monotonic() - t_start, 1),
        "predictions": pred.tolist(), "labels": y_te[:n].tolist(), "waves": waves,
        "run_dir": str(run_dir),
    }
    (out / "demo.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"simulation {sim_wall:.0f} s, total {summary['total_wall_s']:.0f} s")
    print(f"wrote {out / 'demo.json'}, {png}, {net_path}; engine log {run_dir / 'sim.log'}")
    for wave in waves:
        print(f"waveform: {wave} (open it with GTKWave or Surfer: `gtkwave {wave}`)")
    return 0 if exact else 1


def _plot(path, rows, images, pred, labels, config, sim):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(11, 4.5))
    grid = fig.add_gridspec(3, 8, width_ratios=[1.2] * 2 + [1] * 6)
    ax = fig.add_subplot(grid[:, :2])
    names = [r["layer"] for r in rows]
    x = np.arange(len(rows))
    ax.bar(x - 0.2, [r["utilization"] for r in rows], 0.4, label="over all cycles")
    ax.bar(x + 0.2, [r["utilization_busy"] for r in rows], 0.4, label="over busy cycles")
    ax.set_xticks(x, names)
    ax.set_ylim(0, 1)
    ax.set_ylabel(f"MACs / ({config.rows}x{config.cols} x cycles)")
    ax.set_title(f"array utilization per layer ({sim})")
    ax.legend(fontsize=8)
    # The misclassified images first (up to half the panels), then the first correct ones.
    wrong = np.flatnonzero(pred != labels)[:9]
    right = np.flatnonzero(pred == labels)[:18 - len(wrong)]
    for slot, i in enumerate([*wrong, *right]):
        sub = fig.add_subplot(grid[slot // 6, 2 + slot % 6])
        sub.imshow(images[i, :, :, 0], cmap="gray_r", vmin=0, vmax=1)
        ok = pred[i] == labels[i]
        sub.set_title(f"{pred[i]}" + ("" if ok else f" (is {labels[i]})"), fontsize=9,
                      color="black" if ok else "red")
        sub.axis("off")
    fig.suptitle(f"MXE engine RTL: int8 digits CNN, the engine's predictions "
                 f"({int((pred == labels).sum())}/{len(labels)} right; red: wrong, with the "
                 f"true label)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
