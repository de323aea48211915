"""Cycles and DMA bytes of one convolution on the engine RTL, through the convolution
descriptor and lowered on the host (``sim/tb_conv.py``, ``test_conv_measure``), against the
array's bound ``M*K*N / (R*C)`` and the input + weights + output minimum. Prints the table.

    python -m mxe.sim.conv_bench --preset small --shape 16 16 16 16 --kernel 3 3 --padding 1

Both runs are checked bit-exact against the direct-loop reference; no pauses on the buses,
memory latency 4 cycles (``--latency``).
"""

import argparse
import json

from mxe.hw.config import EngineConfig


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m mxe.sim.conv_bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="small")
    parser.add_argument("--shape", type=int, nargs=4, default=[16, 16, 16, 16],
                        metavar=("H", "W", "C", "COUT"))
    parser.add_argument("--kernel", type=int, nargs=2, default=[3, 3], metavar=("KH", "KW"))
    parser.add_argument("--padding", type=int, default=1)
    parser.add_argument("--groups", type=int, default=1, help="C for depthwise")
    parser.add_argument("--latency", type=int, default=4)
    parser.add_argument("--simulator", default="verilator")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    from mxe.hw.generate import TOPS
    from mxe.sim.runner import run_bench
    config = EngineConfig.preset(args.preset, conv_unit=True)
    run_dir = run_bench(sim=args.simulator, name="mxe_engine", make_component=TOPS["engine"][0],
                        config=config, test_module="mxe.sim.tb_conv",
                        testcase="test_conv_measure", seed=args.seed,
                        params={"shape": args.shape, "kernel": args.kernel,
                                "padding": args.padding, "groups": args.groups,
                                "latency": args.latency,
                                "pause": 0.0})
    with open(run_dir / "conv_measure.json") as f:
        report = json.load(f)
    print(f"{args.preset} preset on {args.simulator}, seed {args.seed}")
    for line in report["table"]:
        print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
