"""The documented discrepancies between the papers and lmref, each on its counter-example."""
import numpy as np

import lmref.arma as arma
import lmref.conv as conv

np.set_printoptions(precision=4, suppress=True)

# ARMA Nets, Theorem 11: the printed re-parameterisation (eqs. 16-17) is claimed to satisfy
# Theorem 9's condition |a_-1 + a_1| < a0 for every (alpha, beta). It does not once
# |alpha| > asinh(1): alpha = 1, beta = 0.
paper = arma.reparameterize(1.0, 0.0, form="paper")
safe = arma.reparameterize(1.0, 0.0, form="safe")
print("eqs. 16-17 as printed, alpha=1, beta=0:", paper,
      "Theorem 9's condition:", arma.is_stable(paper[None]))
print("  zeros of the factor:", arma.ar_zeros(paper), "|z| =", np.abs(arma.ar_zeros(paper)))
print("lmref's form='safe' at the same point:", safe,
      "Theorem 9's condition:", arma.is_stable(safe[None]))

# ARMA Nets, Theorem 9: the condition is stated as necessary and sufficient; it is only
# sufficient. [1, 1, 0.5] fails it, yet both zeros lie inside the unit circle: the system
# has a causal, BIBO-stable inverse.
counter = np.array([1.0, 1.0, 0.5])
st = arma.ar_stability_1d(counter)
print("\n[1, 1, 0.5]: Theorem 9's condition:", arma.is_stable(counter[None]),
      "| zeros:", arma.ar_zeros(counter), "| root-based stability:", st.stable)

# Feature-flow appendix, Theorem 2: T = C^-1 M C is written without assuming C invertible.
# A stride-2 convolution has a wide matrix C (fewer outputs than inputs): no exact T exists.
rng = np.random.default_rng(0)
w = rng.standard_normal((1, 1, 3, 3))
C = conv.conv2d_matrix((1, 8, 8), w, stride=2, padding=1)
print("\nstride-2 3x3 conv on 8x8: C is", C.shape, "rank", np.linalg.matrix_rank(C.toarray()),
      "< 64 inputs: C^-1 does not exist")
