"""Refresh the cached ``lmref reproduce --quick`` run that the docs show.

    python docs/_tools/refresh_reproduce.py

Runs ``lmref reproduce --quick`` (about 1.5 min on 2 cores) into ``docs/_static/reproduce``
and shrinks its PNGs (half-size thumbnails would lose the labels: the figures are resampled to
at most 1100 px wide and stored with a 256-colour palette). The docs build never runs the
experiments; it reads ``summary.json`` and the figures from there. ``tests/test_docs.py``
checks that the cache lists the experiments lmref registers today.
"""
from __future__ import annotations

import glob
import os
import shutil
import sys

DOCS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(DOCS, "_static", "reproduce")
MAX_WIDTH = 1100


def shrink_png(path: str) -> None:
    from PIL import Image

    with Image.open(path) as im:
        im = im.convert("RGB")
        if im.width > MAX_WIDTH:
            im = im.resize((MAX_WIDTH, round(im.height * MAX_WIDTH / im.width)),
                           Image.Resampling.LANCZOS)
        im.quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)


def main() -> int:
    sys.path.insert(0, os.path.dirname(DOCS))
    from lmref.reproduce import run_experiments

    shutil.rmtree(OUT, ignore_errors=True)
    summary = run_experiments(None, out=OUT, quick=True, seed=0)
    for png in glob.glob(os.path.join(OUT, "*.png")):
        shrink_png(png)
    return 0 if summary["all_passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
