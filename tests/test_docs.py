"""The documentation site builds with warnings as errors and lists every public function."""
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FAMILIES = ["conv", "compose", "motion", "arma", "blockmatch", "layers", "temporal", "testing",
            "registry"]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    pytest.importorskip("sphinx", reason="sphinx is in the test/docs extras")
    pytest.importorskip("numpydoc", reason="numpydoc is in the test/docs extras")
    pytest.importorskip("pydata_sphinx_theme", reason="pydata-sphinx-theme is in the extras")
    out = tmp_path_factory.mktemp("html")
    proc = subprocess.run([sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html",
                           str(ROOT / "docs"), str(out)], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return out


def test_docs_build_without_warnings(built):
    assert (built / "index.html").exists()


@pytest.mark.parametrize("family", FAMILIES)
def test_every_public_function_is_in_the_reference(built, family):
    mod = importlib.import_module(f"lmref.{family}")
    html = "\n".join(p.read_text(encoding="utf-8") for p in (built / "api").glob("*.html"))
    missing = [name for name in getattr(mod, "__all__", []) if f"lmref.{family}.{name}" not in html]
    assert not missing, f"lmref.{family}: not in the API reference: {missing}"
