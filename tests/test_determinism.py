"""Determinism: every public function (the robustness sweep's valid calls) gives bitwise
identical results on repeated calls and with NUMBA_NUM_THREADS=1 and 2."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import lmref
from lmref.testing import _sweep as S

ROOT = Path(lmref.__file__).resolve().parent.parent
RECIPES = S.recipes()


def _digests_in_subprocess(threads: int) -> dict:
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    env = dict(os.environ, NUMBA_NUM_THREADS=str(threads), PYTHONPATH=path)
    p = subprocess.run([sys.executable, "-m", "lmref.testing._sweep", "hashes"], env=env,
                       cwd=str(ROOT), capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stderr[-2000:]
    return json.loads(p.stdout)


@pytest.mark.parametrize("qualname", list(RECIPES), ids=lambda q: q.removeprefix("lmref."))
def test_repeated_calls_are_bitwise_identical(qualname):
    rec = RECIPES[qualname]
    first = S._digest_call(rec)
    assert not first.startswith("raised"), f"{qualname}: the valid call {first}"
    for _ in range(2):
        assert S._digest_call(rec) == first


def test_thread_count_does_not_change_results():
    one, two = _digests_in_subprocess(1), _digests_in_subprocess(2)
    here = S.hashes()
    assert set(one) == set(two) == set(here)
    differ = sorted(q for q in here if not one[q] == two[q] == here[q])
    assert not differ, f"results depend on NUMBA_NUM_THREADS (1 vs 2 vs this process): {differ}"
    assert not [q for q, d in one.items() if d.startswith("raised")]


def test_digest_sees_every_bit():
    a = np.array([1.0, 2.0])
    b = a.copy()
    b[1] = np.nextafter(2.0, 3.0)
    assert S.digest(a) != S.digest(b)
    assert S.digest(a) != S.digest(a.astype(np.float32))
    assert S.digest((a, 1)) != S.digest((a, 2))
    assert S.digest(-0.0 * a) != S.digest(0.0 * a)
