"""Command line: ``lmref selfcheck`` (and ``lmref reproduce`` once it lands)."""
from __future__ import annotations

import argparse
import sys

__all__ = ["main"]


def _build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lmref", description=__doc__)
    sub = p.add_subparsers(dest="command")
    sub.add_parser("selfcheck", help="check every op against its reference, finite differences "
                                     "and PyTorch; print a table")
    return p


def main(argv=None) -> int:
    args = _build_parser().parse_args(argv)
    if args.command in (None, "selfcheck"):
        from lmref.selfcheck import run_selfcheck
        return 0 if run_selfcheck() else 1
    return 2


if __name__ == "__main__":
    sys.exit(main())
