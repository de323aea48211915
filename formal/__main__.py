"""``python -m mxe.formal [NAME ...]``: run the formal proofs and print a table of results."""

import argparse
import sys
from pathlib import Path

from .proofs import PROOFS


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m mxe.formal",
        description="Run MXE's formal proofs (SymbiYosys with ABC, from the YoWASP wheels).")
    parser.add_argument("names", nargs="*", metavar="NAME",
                        help="proofs to run (default: all; see --list)")
    parser.add_argument("--quick", action="store_true",
                        help="only the proofs of the default test run (not the slow ones)")
    parser.add_argument("--list", action="store_true", help="list the proofs and exit")
    parser.add_argument("--keep", metavar="DIR", type=Path,
                        help="keep each run's files in DIR/NAME (the .sby file, RTLIL, logs)")
    parser.add_argument("--timeout", type=int, default=3600, metavar="SECONDS",
                        help="time limit of each proof (default: %(default)s)")
    args = parser.parse_args(argv)

    if args.list:
        for proof in PROOFS.values():
            slow = " [slow]" if proof.slow else ""
            print(f"{proof.name:<20} {proof.engine:<18} {proof.doc}{slow}")
        return 0
    unknown = [name for name in args.names if name not in PROOFS]
    if unknown:
        parser.error(f"unknown proof {', '.join(unknown)}; one of {', '.join(PROOFS)}")
    proofs = [PROOFS[name] for name in args.names] or list(PROOFS.values())
    if args.quick:
        proofs = [proof for proof in proofs if not proof.slow]

    print(f"{'proof':<20} {'engine':<18} {'result':<8} {'seconds':>8}")
    failed = []
    for proof in proofs:
        workdir = args.keep / proof.name if args.keep else None
        result = proof.run(workdir=workdir, timeout=args.timeout)
        print(f"{proof.name:<20} {result.engine:<18} {result.status:<8} "
              f"{result.seconds:>8.1f}", flush=True)
        if not result.passed:
            failed.append(result)
    for result in failed:
        print(f"\n{result.name}: {result.status}")
        if result.failure is not None:
            print(result.failure.summary())
        else:
            print(result.log[-2000:])
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
