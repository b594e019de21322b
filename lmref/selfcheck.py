"""``lmref selfcheck``: run every registered op's identities and print a table.

For each op: fast path vs plain reference (max abs error), the manual backward vs central
finite differences, and PyTorch (when installed) forward and backward.
"""
from __future__ import annotations

import numpy as np

from lmref import registry
from lmref.peers import run_peer, torch_available
from lmref.testing import compare, gradcheck

__all__ = ["run_selfcheck"]


def _max_err(a, b) -> float:
    a = a if isinstance(a, tuple) else (a,)
    b = b if isinstance(b, tuple) else (b,)
    return max(float(np.max(np.abs(np.asarray(x, float) - np.asarray(y, float)), initial=0.0))
               for x, y in zip(a, b))


def _check_op(op) -> dict:
    rng = np.random.default_rng(0)
    args, kw = op.get("example")(rng)
    cpu = op.get("cpu")
    out = cpu(*args, **kw)
    row = {"op": op.name, "fast vs reference": "-", "gradcheck": "-", "vs torch": "-", "ok": True}
    if op.reference:
        ref = op.get("reference")(*args, **kw)
        outs = out if isinstance(out, tuple) else (out,)
        refs = ref if isinstance(ref, tuple) else (ref,)
        ok = all(compare(o, r, rtol=op.rtol, atol=op.atol).ok for o, r in zip(outs, refs))
        row["fast vs reference"] = f"{_max_err(out, ref):.1e}"
        row["ok"] &= ok
    if op.backward:
        bwd = op.get("backward")
        g = np.random.default_rng(1).standard_normal(np.shape(out))
        wrt = [i for i in range(len(args)) if i not in op.nondiff]
        rep = gradcheck(lambda *a: cpu(*a, **kw), args, g, lambda go, *a: bwd(go, *a, **kw),
                        wrt=wrt, max_checks=30, raise_on_failure=False)
        row["gradcheck"] = f"{rep.max_abs_err:.1e}"
        row["ok"] &= rep.ok
    if op.peer and torch_available():
        theirs = run_peer(op.get("peer"), args, kw)
        rep = compare(out, theirs, rtol=max(op.rtol, 1e-9), atol=max(op.atol, 1e-10))
        row["vs torch"] = f"{_max_err(out, theirs):.1e}"
        row["ok"] &= rep.ok
    return row


def run_selfcheck(print_fn=print) -> bool:
    rows = []
    for op in registry.ops().values():
        try:
            rows.append(_check_op(op))
        except Exception as exc:  # a broken op is a failed row, not a crash of the table
            rows.append({"op": op.name, "fast vs reference": "error", "gradcheck": "-",
                         "vs torch": "-", "ok": False, "error": f"{type(exc).__name__}: {exc}"})
    cols = ["op", "fast vs reference", "gradcheck", "vs torch", "verdict"]
    for r in rows:
        r["verdict"] = "PASS" if r["ok"] else "FAIL"
    widths = [max(len(c), *(len(str(r[c])) for r in rows)) if rows else len(c) for c in cols]
    print_fn("  ".join(c.ljust(w) for c, w in zip(cols, widths)))
    print_fn("  ".join("-" * w for w in widths))
    for r in rows:
        print_fn("  ".join(str(r[c]).ljust(w) for c, w in zip(cols, widths)))
        if "error" in r:
            print_fn(f"    {r['error']}")
    n_ok = sum(r["ok"] for r in rows)
    print_fn(f"\n{n_ok} of {len(rows)} ops pass"
             + ("" if torch_available() else " (PyTorch not installed: peer column skipped)"))
    return n_ok == len(rows)
