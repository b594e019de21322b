"""Command line of lmref (also ``python -m lmref``).

  lmref reproduce [NAME ...]   re-run the papers' claims: tables, summary.json and PNG plots
  lmref selfcheck              check every op against its reference, finite differences and PyTorch
  lmref fixtures export DIR    write a golden fixture corpus (.npz per case + manifest.json)
"""
from __future__ import annotations

import argparse
import sys

__all__ = ["main"]


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lmref", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    from lmref import __version__
    p.add_argument("--version", action="version", version=f"lmref {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.add_parser("selfcheck", help="check every op against its reference, finite differences "
                                     "and PyTorch; print a table")
    r = sub.add_parser(
        "reproduce", help="re-run the papers' claims; print a summary table, write summary.json "
                          "and PNG plots",
        description="Re-run the papers' claims and show them as tables and plots. Without NAME "
                    "every experiment runs (see --list). Exit status 0 when every claim is "
                    "reproduced or explained, 1 otherwise.")
    r.add_argument("names", nargs="*", metavar="NAME", help="experiment(s) to run (default: all)")
    r.add_argument("--out", default="./lmref-report", metavar="DIR",
                   help="output folder for summary.json and the PNGs (default: %(default)s)")
    r.add_argument("--quick", action="store_true",
                   help="small sizes: everything in about a minute on 2 cores")
    r.add_argument("--seed", type=int, default=0, help="base random seed (default: %(default)s)")
    where = r.add_mutually_exclusive_group()
    where.add_argument("--workers", type=_positive_int, metavar="N",
                       help="run the sweeps on a dask LocalCluster with N worker processes")
    where.add_argument("--scheduler", metavar="ADDRESS",
                       help="run the sweeps on an existing dask cluster (e.g. tcp://host:8786)")
    r.add_argument("--no-plots", action="store_true", help="skip the PNG figures")
    r.add_argument("--list", action="store_true", help="list the experiments and exit")
    f = sub.add_parser("fixtures", help="golden fixture corpus for other projects' CI")
    fsub = f.add_subparsers(dest="fixtures_command", metavar="ACTION", required=True)
    fe = fsub.add_parser("export", help="write .npz cases and manifest.json into DIR")
    fe.add_argument("directory", metavar="DIR")
    fe.add_argument("--ops", nargs="+", metavar="OP", help="registry op names (default: all)")
    fe.add_argument("--seeds", nargs="+", type=int, default=[0], metavar="SEED",
                    help="one case per op and seed (default: 0)")
    return p


def _reproduce(args, parser) -> int:
    from lmref.reproduce import EXPERIMENTS, run_experiments

    if args.list:
        for name, exp in EXPERIMENTS.items():
            print(f"{name:18s} {exp.title}")
        return 0
    unknown = [n for n in args.names if n not in EXPERIMENTS]
    if unknown:
        parser.error(f"unknown experiment(s) {', '.join(unknown)}; "
                     f"choose from {', '.join(EXPERIMENTS)}")
    summary = run_experiments(args.names, out=args.out, quick=args.quick, seed=args.seed,
                              workers=args.workers, scheduler=args.scheduler,
                              plots=not args.no_plots)
    return 0 if summary["all_passed"] else 1


def main(argv=None) -> int:
    parser = _build_parser()
    args = parser.parse_args(argv)
    if args.command in (None, "selfcheck"):
        from lmref.selfcheck import run_selfcheck
        return 0 if run_selfcheck() else 1
    if args.command == "reproduce":
        return _reproduce(args, parser)
    if args.command == "fixtures":
        from lmref.testing.fixtures import export
        try:
            path = export(args.directory, ops=args.ops, seeds=args.seeds)
        except ValueError as exc:
            parser.error(str(exc))
        print(f"wrote {path}")
        return 0
    return 2


if __name__ == "__main__":
    sys.exit(main())
