"""``mxe soak``: a long random stream of GEMMs, bad commands, window and bus errors and soft
resets on the engine RTL, the whole memory checked against the model after every step."""

import json
import random
import shlex
import tempfile
import threading
from pathlib import Path

from mxe.config_args import CommandError, add_config_arguments, config_from_args
from mxe.hw.generate import TOPS
from mxe.sim.runner import SIMULATORS, BenchFailed, run_bench, simulator_missing
from mxe.sim.tb_soak import KINDS

NAME = "soak"
HELP = ("run a long random command stream (GEMMs, refused commands, window violations, "
        "SLVERR/DECERR, soft resets) on the engine in simulation, checking the whole memory "
        "against the model after every step")


def add_arguments(parser):
    add_config_arguments(parser, default_preset="small")
    parser.add_argument("--minutes", type=float, default=10.0,
                        help="wall-clock time to run (default: %(default)s)")
    parser.add_argument("--steps", type=int,
                        help="stop after this many steps (default: run for --minutes)")
    parser.add_argument("--seed", type=int, help="random seed (default: random, printed)")
    parser.add_argument("--kinds", metavar="LIST",
                        help=f"step kinds to draw from, comma-separated (default: all: "
                             f"{','.join(KINDS)})")
    parser.add_argument("--simulator", choices=SIMULATORS, default="verilator",
                        help="(default: %(default)s)")


def _follow(path, done):
    """Print the lines the bench appends to ``path`` until ``done`` is set."""
    with open(path) as f:
        while True:
            finished = done.wait(1.0)
            for line in f.readlines():
                print(line.rstrip(), flush=True)
            if finished:
                return


def run(args):
    config = config_from_args(args)
    if args.minutes <= 0:
        raise CommandError(f"minutes must be positive, not {args.minutes}")
    if args.steps is not None and args.steps < 1:
        raise CommandError(f"steps must be at least 1, not {args.steps}")
    kinds = [k.strip() for k in args.kinds.split(",") if k.strip()] if args.kinds else None
    unknown = sorted(set(kinds or ()) - set(KINDS))
    if unknown or kinds == []:
        raise CommandError(f"kinds must be some of {', '.join(KINDS)}, not {args.kinds!r}")
    missing = simulator_missing(args.simulator)
    if missing:
        raise CommandError(f"simulator {args.simulator} is not available: {missing}")
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1 << 31)
    limit = f"{args.steps} steps" if args.steps else f"{args.minutes:g} minutes"
    print(f"MXE soak: {config.rows}x{config.cols} engine ({config.key()}) on {args.simulator}, "
          f"seed {seed}, {limit}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        progress = Path(tmp) / "progress"
        progress.touch()
        params = {"seconds": None if args.steps else args.minutes * 60, "steps": args.steps,
                  "kinds": kinds, "progress": str(progress)}
        done = threading.Event()
        follower = threading.Thread(target=_follow, args=(progress, done), daemon=True)
        follower.start()
        error = None
        try:
            run_dir = run_bench(sim=args.simulator, name="mxe_engine",
                                make_component=TOPS["engine"][0], config=config,
                                test_module="mxe.sim.tb_soak", testcase="test_soak", seed=seed,
                                params=params)
        except BenchFailed as exc:
            error, run_dir = exc, exc.test_dir
        finally:
            done.set()
            follower.join()
    report = None
    if (run_dir / "soak.json").exists():
        report = json.loads((run_dir / "soak.json").read_text())
    if report is None:
        print(f"FAILED: {error}")
        return 1
    print(f"{report['steps']} steps in {report['seconds'] / 60:.1f} minutes "
          f"({report['steps_per_minute']:.0f} steps/min), seed {seed}: "
          + ", ".join(f"{kind} {n}" for kind, n in report["kinds"].items()))
    failure = report["failure"]
    if failure is None and error is None:
        print("clean: the memory equalled the model after every step")
        return 0
    if failure is None:
        print(f"FAILED: {error}")
        return 1
    print(f"FAILED at step {failure['step']} ({failure['kind']}): {failure['message']}")
    # The steps depend on the seed alone: the same seed and configuration, stopped right
    # after the failing step, replay it.
    saved = run_dir / "config.json"
    saved.write_text(config.to_json(indent=2) + "\n")
    print("reproduce: " + shlex.join(["mxe", "soak", "--config", str(saved), "--simulator",
                                      args.simulator, "--seed", str(seed), "--steps",
                                      str(failure["step"] + 1),
                                      *(["--kinds", ",".join(kinds)] if kinds else [])]))
    return 1
