"""Cycles of layers chained through memory on the engine RTL (``sim/tb_engine.py``,
``test_chain``): the GEMM descriptors pushed back to back with GEMM_A ``after_stores``, against
the same layers run one at a time with a wait for done in between. Prints the table.

    python -m mxe.sim.chain_bench --preset small --m 64 --widths 64 64 64 64

Both runs are checked bit-exact against the numpy model (each layer's input the previous
layer's requantized output); no pauses on the buses, memory latency 4 cycles (``--latency``).
"""

import argparse
import json

from mxe.hw.config import EngineConfig


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m mxe.sim.chain_bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="small")
    parser.add_argument("--m", type=int, default=64)
    parser.add_argument("--widths", type=int, nargs="+", default=[64, 64, 64, 64],
                        help="K of the first layer, then every layer's N")
    parser.add_argument("--latency", type=int, default=4)
    parser.add_argument("--simulator", default="verilator")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    from mxe.hw.generate import TOPS
    from mxe.sim.runner import run_bench
    config = EngineConfig.preset(args.preset)
    run_dir = run_bench(sim=args.simulator, name="mxe_engine", make_component=TOPS["engine"][0],
                        config=config, test_module="mxe.sim.tb_engine", testcase="test_chain",
                        seed=args.seed,
                        params={"latency": args.latency, "pause": 0.0,
                                "chain": {"m": args.m, "widths": args.widths,
                                          "compare": True}})
    with open(run_dir / "chain_measure.json") as f:
        report = json.load(f)
    print(f"{args.preset} preset on {args.simulator}, seed {args.seed}: "
          f"{len(args.widths) - 1} layers of M={args.m}, widths {args.widths}, "
          f"bound {report['bound']} cycles")
    for line in report["table"]:
        print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
