"""Thread safety: public functions called concurrently from several Python threads (the first
calls loading their kernels concurrently too) give the same results as serial calls. Runs in
a subprocess so that an unsafe threading layer aborting the process fails a test instead of
killing the session."""
import json
import os
import subprocess
import sys
from pathlib import Path

import lmref
from lmref.testing import _sweep as S

ROOT = Path(lmref.__file__).resolve().parent.parent


def test_concurrent_calls_equal_serial_calls():
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    env = dict(os.environ, PYTHONPATH=path, NUMBA_NUM_THREADS="2")
    p = subprocess.run([sys.executable, "-m", "lmref.testing._sweep", "threads"], env=env,
                       cwd=str(ROOT), capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, f"exit code {p.returncode}: {p.stderr[-2000:]}"
    result = json.loads(p.stdout)
    serial, threaded = result["serial"], result["threaded"]
    assert set(serial) == set(threaded) == set(S.recipes())
    differ = sorted(q for q in serial if any(d != serial[q] for d in threaded[q]))
    assert not differ, f"results differ when called from several threads: {differ}"
    assert all(len(v) == 4 for v in threaded.values())
    assert not [q for q, d in serial.items() if d.startswith("raised")]
