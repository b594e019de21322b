"""Every op with a CUDA twin, on its registry example (the options users see in the docs)."""
import numpy as np
import pytest

import lmref.cuda as lc
from lmref import registry

OPS = registry.ops()
TWINS = sorted(n for n in lc._FUNCTIONS if n in OPS)


def test_every_twin_is_registered():
    assert TWINS == sorted(n for n in lc._FUNCTIONS if not n.endswith("_backward"))
    assert {n for n, op in OPS.items() if op.cuda is not None} == set(TWINS)


@pytest.mark.parametrize("name", TWINS)
def test_twin_equals_cpu_on_the_registry_example(name, close):
    op = OPS[name]
    assert op.get("cuda") is getattr(lc, name)  # the registry names our twin
    args, kw = op.get("example")(np.random.default_rng(0))
    out = op.get("cpu")(*args, **kw)
    tol = dict(rtol=0, atol=0) if name == "max_pool2d" else {}  # a max does not round
    close(getattr(lc, name)(*args, **kw), out, **tol)
    if op.backward and f"{name}_backward" in lc._FUNCTIONS:
        g = np.random.default_rng(1).standard_normal(np.shape(out))
        close(getattr(lc, f"{name}_backward")(g, *args, **kw), op.get("backward")(g, *args, **kw))
