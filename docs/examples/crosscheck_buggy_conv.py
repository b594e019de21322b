"""Cross-check a (buggy) PyTorch layer against lmref: the worked example of the docs.

The layer below ports a "same"-padded convolution by hand and makes a classic mistake: it
pads with ``F.pad(x, (1, 1, 1, 1))`` *and* mirrors the kernel (a true convolution, as in
``scipy.signal.convolve2d``, instead of PyTorch's cross-correlation).
"""
import numpy as np
import torch
import torch.nn.functional as F
import warnings

from hypothesis import given, settings, HealthCheck

import lmref.conv
import lmref.testing as lt
from lmref.testing import strategies


warnings.filterwarnings("ignore", message="Using padding=.same. with even kernel")


def my_conv(x, weight, bias, padding="same"):
    """The user's layer: a 3x3 'same' convolution... with the kernel flipped (the bug)."""
    assert padding == "same"  # takes lmref's keyword, handles only this case
    return F.conv2d(F.pad(x, (1, 1, 1, 1)), weight.flip(-1, -2), bias)


rng = np.random.default_rng(0)
x = rng.standard_normal((2, 3, 9, 8))
w = rng.standard_normal((4, 3, 3, 3))
b = rng.standard_normal(4)

# 1. Forward: assert_close with its diagnosis. conv_suspects adds lmref's convolution under
#    the usual porting mistakes, so the report can name the one that matches.
mine = my_conv(torch.from_numpy(x), torch.from_numpy(w), torch.from_numpy(b), padding="same")
expected = lmref.conv.conv2d(x, w, b, padding="same")
try:
    lt.assert_close(mine, expected,
                    suspects=lt.conv_suspects(x, w, b, padding="same"))
except AssertionError as exc:
    print("assert_close says:\n" + str(exc))

# 2. Backward: the layer's autograd gradients (lt.torch_backward) against lmref's manual
#    backward. check_vjp raises on the first gradient that differs.
g = rng.standard_normal(expected.shape)
try:
    lt.check_vjp(lt.torch_backward(my_conv), lmref.conv.conv2d_backward, g, x, w, b,
                 padding="same")
except AssertionError as exc:
    print("\ncheck_vjp says:\n" + "\n".join(str(exc).splitlines()[:3]))


# 3. Property test with hypothesis: lmref.testing.strategies draws valid argument sets of
#    conv2d (here stride 1, zeros padding, with a bias), and the fixed layer must match lmref
#    on every one of them (F.conv2d stands for the fixed layer).
@settings(max_examples=25, deadline=None, database=None,
          suppress_health_check=list(HealthCheck))
@given(strategies.conv_args(max_stride=1, max_dilation=1, padding_modes=("zeros",), bias=True))
def test_fixed_conv(case):
    (x, w), kw = case  # ((x, weight), {"bias": ..., "padding": ..., "groups": ...})
    t = [torch.from_numpy(np.asarray(a, np.float64)) for a in (x, w, kw["bias"])]
    out = F.conv2d(*t, padding=kw["padding"], groups=kw["groups"])
    lt.assert_close(out, lmref.conv.conv2d(x, w, **kw))


test_fixed_conv()
print("\nhypothesis: the fixed layer matches lmref on 25 drawn argument sets")

# 4. The conformance runner: the installed PyTorch against every registered op (here conv2d
#    only, one case), float64 and float32, forward and backward, plus the probes of the known
#    convention differences.
from lmref.testing.conformance import format_result, run_conformance  # noqa: E402

result = run_conformance("torch", ops=["conv2d"], seeds=1)
print("\n" + "\n".join(format_result(result)))
