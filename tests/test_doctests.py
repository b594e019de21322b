"""The ``Examples`` sections of the main functions' docstrings run, and show what they print.

One test per module runs every docstring example of the module with the standard library's
``doctest``; the functions listed here must have an ``Examples`` section with examples, so a
module whose examples were dropped fails instead of passing with nothing to run.
"""
import doctest
import importlib

import pytest

MAIN = {
    "lmref.conv": ["conv2d", "conv2d_backward", "conv2d_matrix", "conv_transpose2d"],
    "lmref.compose": ["compose", "dilate"],
    "lmref.motion": ["warp", "warp_backward", "motion_matrix", "affine_flow", "scale_flow"],
    "lmref.arma": ["ar_solve"],
    "lmref.blockmatch": ["block_match", "psnr_to_nrmse", "nrmse_to_psnr"],
    "lmref.layers": ["max_pool2d", "avg_pool2d", "relu"],
    "lmref.temporal": ["context_span", "local_multiply", "log_divide"],
    "lmref.testing": ["assert_close", "gradcheck"],
}
FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


def _doctests(module_name):
    """The module's docstring examples, by the short name of the object holding them."""
    mod = importlib.import_module(module_name)
    tests = doctest.DocTestFinder().find(mod, module_name)
    return {t.name.rsplit(".", 1)[-1]: t for t in tests if t.examples}


@pytest.mark.parametrize("module_name", sorted(MAIN))
def test_main_functions_have_examples(module_name):
    mod = importlib.import_module(module_name)
    tests = _doctests(module_name)
    no_section = [n for n in MAIN[module_name]
                  if "\n    Examples\n    --------\n" not in (getattr(mod, n).__doc__ or "")]
    no_examples = [n for n in MAIN[module_name] if n not in tests]
    assert not no_section, f"{module_name}: no Examples section in {no_section}"
    assert not no_examples, f"{module_name}: no doctest examples in {no_examples}"


@pytest.mark.parametrize("module_name", sorted(MAIN))
def test_docstring_examples_pass(module_name):
    report = []
    runner = doctest.DocTestRunner(optionflags=FLAGS)
    for test in _doctests(module_name).values():
        runner.run(test, out=report.append)
    failed, attempted = runner.summarize(verbose=False)
    assert attempted >= len(MAIN[module_name]), f"{module_name}: only {attempted} examples ran"
    assert failed == 0, "".join(report)
