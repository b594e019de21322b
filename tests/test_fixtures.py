"""The golden fixture corpus: export, reload, check lmref and the torch peer, refuse corruption."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lmref.registry import get
from lmref.testing import fixtures as F

ROOT = Path(__file__).resolve().parents[1]
OPS = ["conv2d", "conv_transpose2d", "warp", "max_pool2d", "avg_pool2d", "relu", "log_divide",
       "block_match"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    d = tmp_path_factory.mktemp("corpus")
    F.export(d, ops=OPS, seeds=(0, 1))
    return d


def test_manifest_lists_every_case_with_its_hash(corpus):
    m = json.loads((corpus / "manifest.json").read_text())
    assert m["format"] == F.FORMAT and m["lmref_version"]
    assert sorted({c["op"] for c in m["cases"]}) == sorted(OPS)
    assert len(m["cases"]) == 2 * len(OPS)
    for c in m["cases"]:
        assert len(c["sha256"]) == 64 and (corpus / c["file"]).is_file()


@pytest.mark.parametrize("op", OPS)
def test_lmref_passes_its_own_corpus(corpus, op):
    o = get(op)
    assert F.check(o.get("cpu"), op, corpus, backward=o.get("backward")) == 2


def test_differentiable_cases_carry_a_cotangent_and_gradients(corpus):
    case = F.load(corpus, "conv2d")[0]
    assert case.grad_out is not None and case.grad_out.shape == case.outputs[0].shape
    assert len(case.grads) == 3  # x, weight, bias


@pytest.mark.parametrize("op", ["conv2d", "max_pool2d", "relu"])
def test_the_torch_peer_passes(corpus, op):
    torch = pytest.importorskip("torch", reason="the torch peer needs torch")
    peer = get(op).get("peer")

    def fn(*arrays, **kw):
        return peer(*(torch.from_numpy(np.array(a)) for a in arrays), **kw).numpy()

    assert F.check(fn, op, corpus) == 2


def test_a_wrong_implementation_fails_with_the_diagnosis(corpus):
    cpu = get("conv2d").get("cpu")
    with pytest.raises(AssertionError, match="conv2d seed 0"):
        F.check(lambda x, w, b, **kw: cpu(x, w[..., ::-1, ::-1], b, **kw), "conv2d", corpus)
    bwd = get("relu").get("backward")
    with pytest.raises(AssertionError, match="gradient 0"):
        F.check(get("relu").get("cpu"), "relu", corpus,
                backward=lambda g, x: (2 * bwd(g, x)[0],))


def test_a_corrupted_file_is_refused_before_it_is_read(tmp_path):
    F.export(tmp_path, ops=["relu"])
    path = tmp_path / "relu-seed0.npz"
    data = bytearray(path.read_bytes())
    data[-10] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(F.FixtureError, match="SHA-256"):
        F.load(tmp_path, "relu")


def test_malformed_corpora_are_refused(tmp_path):
    with pytest.raises(F.FixtureError, match="no manifest.json"):
        F.load(tmp_path)
    F.export(tmp_path, ops=["relu"])
    with pytest.raises(F.FixtureError, match="has no case"):
        F.load(tmp_path, "conv2d")
    m = json.loads((tmp_path / "manifest.json").read_text())
    m["cases"][0]["file"] = "../elsewhere.npz"
    (tmp_path / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(F.FixtureError, match="invalid file"):
        F.load(tmp_path)


def test_pickled_arrays_are_never_loaded(tmp_path):
    F.export(tmp_path, ops=["relu"])
    path = tmp_path / "relu-seed0.npz"
    np.savez(path, input_0=np.array([object()], dtype=object), output_0=np.zeros(1))
    m = json.loads((tmp_path / "manifest.json").read_text())
    m["cases"][0]["sha256"] = F._sha256(path)  # a matching hash: the pickle itself is refused
    (tmp_path / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(ValueError, match="allow_pickle"):
        F.load(tmp_path)


def test_export_refuses_unknown_ops(tmp_path):
    with pytest.raises(ValueError, match="ops: unknown"):
        F.export(tmp_path, ops=["nope"])


def test_checking_needs_numpy_only(corpus):
    """A project that only checks against a corpus never imports numba or scipy."""
    code = f"""
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('numba', 'scipy', 'torch'):
            raise ImportError('blocked: ' + name)
sys.meta_path.insert(0, Block())
import numpy as np
from lmref.testing import fixtures
n = fixtures.check(lambda x: np.maximum(x, 0.0), 'relu', {str(corpus)!r})
print(n)
"""
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "2"


def test_cli_export(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "lmref", "fixtures", "export", str(tmp_path),
                           "--ops", "relu", "--seeds", "3", "4"], cwd=ROOT, capture_output=True,
                          text=True)
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in tmp_path.glob("*.npz")) == ["relu-seed3.npz", "relu-seed4.npz"]
