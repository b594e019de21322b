"""Every python example in the README runs (the docs promise what the examples show)."""
import pathlib
import re

import pytest

README = (pathlib.Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
BLOCKS = re.findall(r"```python\n(.*?)```", README, re.S)


def test_the_readme_has_python_examples():
    assert len(BLOCKS) >= 2


@pytest.mark.parametrize("i", range(len(BLOCKS)))
def test_readme_example_runs(i):
    pytest.importorskip("torch", reason="the README examples cross-check PyTorch")
    pytest.importorskip("jax", reason="the README's JAX example needs jax")
    exec(compile(BLOCKS[i], f"README.md python block {i}", "exec"), {})
