"""``mxe gemm``: run one GEMM in simulation and print the result check and the cycle count."""

import json
import random
import shutil
from pathlib import Path

from mxe.config_args import CommandError, add_config_arguments, config_from_args
from mxe.hw.array import SystolicArray
from mxe.hw.generate import TOPS
from mxe.sim.cycle_model import lower_bound, naive_cycles
from mxe.sim.runner import SIMULATORS, run_bench, simulator_missing

NAME = "gemm"
HELP = ("generate the engine's Verilog and run one random GEMM through it in simulation "
        "(--top array: through the bare systolic array)")


def add_arguments(parser):
    add_config_arguments(parser, default_preset="small")
    parser.add_argument("--m", type=int, default=64, help="rows of A and C (default: 64)")
    parser.add_argument("--k", type=int, default=64, help="columns of A, rows of B (default: 64)")
    parser.add_argument("--n", type=int, default=64, help="columns of B and C (default: 64)")
    parser.add_argument("--top", choices=("engine", "array"), default="engine",
                        help="the whole engine (registers, DMA, memory with 16 cycles of "
                             "latency) or the bare array (default: %(default)s)")
    parser.add_argument("--simulator", choices=SIMULATORS, default="verilator",
                        help="(default: %(default)s)")
    parser.add_argument("--seed", type=int, help="random seed (default: random, printed)")
    parser.add_argument("--waves", action="store_true", help="record a waveform (FST)")
    parser.add_argument("-o", "--output", default="out", metavar="DIR",
                        help="where the Verilog, config and waveform go (default: %(default)s)")


def run(args):
    config = config_from_args(args)
    for name in ("m", "k", "n"):
        value = getattr(args, name)
        if not 1 <= value <= 4096:
            raise CommandError(f"{name} must be in 1..4096, not {value}")
    missing = simulator_missing(args.simulator)
    if missing:
        raise CommandError(f"simulator {args.simulator} is not available: {missing}")
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1 << 31)
    print(f"MXE {config.rows}x{config.cols} array, GEMM {args.m}x{args.k}x{args.n} on "
          f"{args.simulator}, seed {seed}")
    top_name, make_component = {
        "engine": ("mxe_engine", TOPS["engine"][0]),
        "array": ("mxe_array", SystolicArray),
    }[args.top]
    module, testcase = {
        "engine": ("mxe.sim.tb_gemm", "test_one_gemm"),
        "array": ("mxe.sim.tb_array", "test_gemm"),
    }[args.top]
    try:
        run_dir = run_bench(sim=args.simulator, name=top_name, make_component=make_component,
                            config=config, test_module=module, testcase=testcase,
                            seed=seed, params={"m": args.m, "k": args.k, "n": args.n},
                            waves=args.waves)
    except AssertionError as exc:
        print(f"FAILED: {exc}")
        return 1
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    build_dir = run_dir.parent.parent
    shutil.copy(build_dir / f"{top_name}.v", out / f"{top_name}.v")
    (out / f"{top_name}.json").write_text(config.to_json(indent=2) + "\n")
    for wave in list(run_dir.glob("*.fst")) + list(run_dir.glob("*.vcd")):
        shutil.copy(wave, out / wave.name)
        print(f"waveform: {out / wave.name} (open it with GTKWave or Surfer)")
    result = json.loads((run_dir / "gemm.json").read_text())
    bound = lower_bound(args.m, args.k, args.n, config)
    naive = naive_cycles(args.m, args.k, args.n, config)
    print(f"result check: {result['results'] - result['mismatches']}/{result['results']} "
          f"elements equal the golden model")
    if args.top == "array":
        cycles = result["cycles"]
        print(f"{'cycles':<30}{cycles:>10}")
        print(f"{'cycle model':<30}{result['predicted']:>10}")
    elif "BUSY_CYCLES" not in result["counters"]:
        cycles = result["counters"]["CYCLES"]
        print(f"{'schedule':<30}{result['schedule']}")
        print(f"{'cycles (first to last command)':<30}{cycles:>10}  "
              "(built without perf_counters: no busy or stall counts)")
    else:
        counters = result["counters"]
        cycles = counters["BUSY_CYCLES"]
        print(f"{'schedule':<30}{result['schedule']}")
        print(f"{'cycles (engine busy)':<30}{cycles:>10}")
        print(f"{'MAC-active cycles':<30}{counters['MAC_ACTIVE_CYCLES']:>10}")
        print(f"{'utilization MKN/(R*C*cycles)':<30}"
              f"{args.m * args.k * args.n / (config.macs * cycles):>10.1%}")
        print(f"{'DMA bytes read / written':<30}"
              f"{counters['DMA_RD_BYTES']:>10} / {counters['DMA_WR_BYTES']}")
        print(f"{'stalls load/store/dependency':<30}{counters['STALL_LOAD']:>10} / "
              f"{counters['STALL_STORE']} / {counters['STALL_DEP']}")
    print(f"{'lower bound M*K*N/(R*C)':<30}{bound:>10}  ({bound / cycles:.1%} of it reached)")
    print(f"{'naive weight-stationary':<30}{naive:>10}  ({naive / cycles:.2f}x our cycles)")
    print(f"Verilog and config in {out}/")
    return 0 if result["mismatches"] == 0 else 1
