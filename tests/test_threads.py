"""Thread safety: public functions called concurrently from several Python threads (the first
calls loading their kernels concurrently too) give the same results as serial calls. Runs in
a subprocess so that an unsafe threading layer aborting the process fails a test instead of
killing the session. Each numba threading layer lmref may meet is tried: the default one
(OpenMP or TBB) and ``workqueue``, numba's fallback without either, which is not thread-safe
itself (lmref serialises its parallel launches there, see :mod:`lmref._numba`)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import lmref
from lmref.testing import _sweep as S

ROOT = Path(lmref.__file__).resolve().parent.parent


def _run(args, layer=None, timeout=900):
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    env = dict(os.environ, PYTHONPATH=path, NUMBA_NUM_THREADS="2")
    env.pop("NUMBA_THREADING_LAYER", None)
    if layer is not None:
        env["NUMBA_THREADING_LAYER"] = layer
    return subprocess.run([sys.executable, *args], env=env, cwd=str(ROOT), capture_output=True,
                          text=True, timeout=timeout)


@pytest.mark.parametrize("layer", [None, S.UNSAFE_THREADING_LAYER], ids=["default", "workqueue"])
def test_concurrent_calls_equal_serial_calls(layer):
    p = _run(["-m", "lmref.testing._sweep", "threads"], layer)
    assert p.returncode == 0, f"exit code {p.returncode}: {p.stderr[-2000:]}"
    result = json.loads(p.stdout)
    assert layer is None or result["layer"] == layer
    serial, threaded = result["serial"], result["threaded"]
    assert set(serial) == set(threaded) == set(S.recipes())
    differ = sorted(q for q in serial if any(d != serial[q] for d in threaded[q]))
    assert not differ, f"results differ when called from several threads: {differ}"
    assert all(len(v) == 4 for v in threaded.values())
    assert not [q for q, d in serial.items() if d.startswith("raised")]


_HAMMER = """
import threading, numpy as np, numba
from lmref import motion, _numba
rng = np.random.default_rng(0)
x = rng.standard_normal((2, 3, 48, 48)); f = rng.uniform(-3, 3, (48, 48, 2))
want = motion.warp(x, f)
bad = []
def go():
    for _ in range(40):
        if not np.array_equal(motion.warp(x, f), want):
            bad.append(1)
threads = [threading.Thread(target=go) for _ in range(4)]
[t.start() for t in threads]; [t.join() for t in threads]
print(numba.threading_layer(), _numba.serialising(), len(bad))
"""


def test_warp_from_four_threads_on_workqueue():
    """Issue 18 item 8: four Python threads calling ``warp`` aborted the process (SIGABRT,
    "Concurrent access has been detected") on the workqueue layer."""
    p = _run(["-c", _HAMMER], S.UNSAFE_THREADING_LAYER, timeout=600)
    assert p.returncode == 0, f"exit code {p.returncode}: {p.stderr[-2000:]}"
    assert p.stdout.split() == ["workqueue", "True", "0"]


def test_default_layer_is_not_serialised():
    """The lock is only taken on workqueue: on OpenMP/TBB parallel calls run concurrently."""
    p = _run(["-c", _HAMMER])
    assert p.returncode == 0, f"exit code {p.returncode}: {p.stderr[-2000:]}"
    layer, serialising, bad = p.stdout.split()
    assert (layer, serialising, bad) == (layer, str(layer == "workqueue"), "0")
