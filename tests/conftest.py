import os

import numpy as np
import pytest

# Tests compare against PyTorch in float64 on the CPU; keep its threads from fighting numba's.
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture
def rng():
    return np.random.default_rng(12345)


def _torch_or_skip():
    return pytest.importorskip(
        "torch", reason="PyTorch (the cross-check peer) is not installed: pip install -e '.[test]'")


@pytest.fixture
def torch():
    t = _torch_or_skip()
    t.set_num_threads(1)
    return t
