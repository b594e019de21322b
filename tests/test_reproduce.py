"""``lmref reproduce``: end-to-end quick run, summary verdicts, figures, runners and the CLI."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import lmref
from lmref.cli import main
from lmref.reproduce import (EXPERIMENTS, VERDICTS, Claim, ExperimentResult, register,
                             run_experiments, task_rng, task_seed)
from lmref.reproduce._core import _fmt_table

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

#: experiment -> the figures it must write (a figure that silently disappears fails a test)
EXPECTED_FIGURES = {
    "matrices": ["matrices.png"],
    "noise": ["noise_variance.png"],
    "composition": ["composition.png"],
    "latent_motion": ["latent_motion_sweeps.png", "latent_motion_affine.png",
                      "latent_motion_block_matching.png"],
    "erf": ["erf_maps.png", "erf_radii.png", "erf_stability.png"],
    "arithmetic": ["arithmetic.png"],
}

#: (experiment, words in the claim) -> the verdict the quick run must give
EXPECTED_VERDICTS = {
    ("matrices", "any convolution"): "paper wrong (documented)",
    ("matrices", "invertible C"): "reproduced",
    ("composition", "two stride-2 convs"): "reproduced",
    ("latent_motion", "Fig. 6"): "reproduced",
    ("latent_motion", "Fig. 2 under the authors' notebook"): "info",
    ("latent_motion", "Fig. 5 NRMSE with the notebook's R"): "info",
    ("erf", "printed"): "paper wrong (documented)",
    ("erf", "safe form"): "reproduced",
    ("erf", "eq. 6"): "reproduced",
    ("arithmetic", "subtraction approximates motion"): "reproduced",
}


# --------------------------------------------------------------------------- the quick run
@pytest.fixture(scope="module")
def quick_report(tmp_path_factory):
    """One ``python -m lmref reproduce --quick`` in a temporary folder, shared by the tests."""
    out = tmp_path_factory.mktemp("lmref-report")
    root = os.path.dirname(os.path.dirname(lmref.__file__))  # this checkout, installed or not
    env = dict(os.environ, PYTHONUNBUFFERED="1",
               PYTHONPATH=os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])))
    cmd = [sys.executable, "-m", "lmref", "reproduce", "--quick", "--out", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    summary_path = out / "summary.json"
    assert summary_path.exists(), proc.stdout + proc.stderr
    return out, proc, json.loads(summary_path.read_text(), parse_constant=_reject_constant)


def _reject_constant(name):
    raise ValueError(f"summary.json is not standard JSON: it contains {name}")


def test_quick_run_succeeds_and_prints_the_table(quick_report):
    out, proc, summary = quick_report
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    for col in ("experiment", "claim", "paper", "measured", "verdict"):
        assert col in proc.stdout
    assert f"of {len(summary['claims'])} claims reproduced or explained" in proc.stdout
    assert "plots skipped" not in proc.stdout
    assert summary["quick"] is True and summary["plots"] is True


def test_quick_summary_has_every_experiment_with_verdicts(quick_report):
    _, _, summary = quick_report
    assert [e["name"] for e in summary["experiments"]] == list(EXPERIMENTS)
    assert set(EXPERIMENTS) == set(EXPECTED_FIGURES)
    for exp in EXPERIMENTS:
        claims = [c for c in summary["claims"] if c["experiment"] == exp]
        assert claims, f"experiment {exp} states no claim"
        for c in claims:
            assert c["verdict"] in VERDICTS and c["verdict"] != "error", c
            assert c["claim"] and c["paper"] and c["measured"], c
    failed = [c for c in summary["claims"] if c["verdict"] in ("not reproduced", "error")]
    assert not failed and summary["all_passed"] is True
    for (exp, words), verdict in EXPECTED_VERDICTS.items():
        hits = [c for c in summary["claims"]
                if c["experiment"] == exp and words.lower() in c["claim"].lower()]
        assert hits and all(c["verdict"] == verdict for c in hits), (exp, words, hits)


def test_quick_run_writes_every_figure_as_a_valid_png(quick_report):
    import matplotlib.image as mpimg

    out, _, summary = quick_report
    for exp in summary["experiments"]:
        assert sorted(exp["figures"]) == sorted(EXPECTED_FIGURES[exp["name"]]), exp["name"]
        for name in exp["figures"]:
            path = out / name
            assert path.read_bytes()[:8] == PNG_SIGNATURE, name
            img = mpimg.imread(path)
            assert img.ndim == 3 and img.shape[0] > 200 and img.shape[1] > 200, (name, img.shape)
            assert np.ptp(img[..., :3]) > 0, f"{name} is blank"


def test_quick_run_time_is_recorded_and_small(quick_report):
    _, _, summary = quick_report
    total = sum(e["seconds"] for e in summary["experiments"])
    assert all(e["seconds"] > 0 for e in summary["experiments"])
    # generous: --quick targets ~1 minute on 2 idle cores (the CI machine may be shared)
    assert total < 240, {e["name"]: e["seconds"] for e in summary["experiments"]}


# --------------------------------------------------------------------------- runners, seeds
def test_task_seed_depends_on_the_seed_and_parameters_only():
    assert task_seed(0, "tx", 1.5) == task_seed(0, "tx", 1.5)
    assert len({task_seed(0, "tx", 1.5), task_seed(1, "tx", 1.5), task_seed(0, "tx", 2.5),
                task_seed(0, "ty", 1.5), task_seed(0, "tx", 1.5, 0)}) == 5
    a = task_rng(3, "k", 7).standard_normal(4)
    task_rng(3, "other").standard_normal(100)  # drawing elsewhere changes nothing
    np.testing.assert_array_equal(a, task_rng(3, "k", 7).standard_normal(4))


def test_serial_and_local_cluster_give_identical_results(tmp_path):
    """The Theorem 3 Monte-Carlo sweep: in-process vs a 2-worker dask LocalCluster."""
    pytest.importorskip("dask.distributed")
    kw = dict(quick=True, seed=5, plots=False, print_fn=lambda s: None, log=lambda s: None)
    serial = run_experiments(["noise"], out=str(tmp_path / "serial"), **kw)
    dask = run_experiments(["noise"], out=str(tmp_path / "dask"), workers=2, **kw)
    assert serial["runner"].startswith("serial") and "LocalCluster" in dask["runner"]
    assert serial["claims"] and serial["claims"] == dask["claims"]
    assert serial["experiments"][0]["tables"] == dask["experiments"][0]["tables"]
    other_seed = run_experiments(["noise"], out=str(tmp_path / "s6"), **{**kw, "seed": 6})
    assert other_seed["experiments"][0]["tables"] != serial["experiments"][0]["tables"]


def test_an_existing_scheduler_gives_the_serial_results(tmp_path):
    """``--scheduler ADDRESS``: the ERF grid on a cluster started elsewhere."""
    distributed = pytest.importorskip("dask.distributed")
    kw = dict(quick=True, plots=False, print_fn=lambda s: None, log=lambda s: None)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster:
        remote = run_experiments(["erf"], out=str(tmp_path / "remote"),
                                 scheduler=cluster.scheduler_address, **kw)
    serial = run_experiments(["erf"], out=str(tmp_path / "serial"), **kw)
    assert remote["runner"] == f"dask scheduler {cluster.scheduler_address}"
    assert remote["claims"] == serial["claims"]
    assert remote["experiments"][0]["tables"] == serial["experiments"][0]["tables"]


# --------------------------------------------------------------------------- plots skipped
def test_without_matplotlib_tables_still_print_and_plots_are_skipped(tmp_path, monkeypatch, capsys):
    for mod in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, mod)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    logs = []
    summary = run_experiments(["composition"], out=str(tmp_path), quick=True, log=logs.append)
    printed = capsys.readouterr().out
    assert summary["plots"] is False and summary["experiments"][0]["figures"] == []
    assert not list(tmp_path.glob("*.png"))
    assert any("matplotlib is not installed: plots are skipped" in s for s in logs)
    assert "plots skipped: matplotlib missing" in printed and "composition" in printed
    assert summary["all_passed"]


# --------------------------------------------------------------------------- framework
@pytest.fixture
def dummy_experiments():
    """Two throw-away experiments registered for one test only."""
    names = ["_dummy_ok", "_dummy_broken"]

    def ok(ctx):
        res = ExperimentResult("_dummy_ok")
        squares = ctx.map("squares", _square_task, [(i,) for i in range(5)])
        res.tables["squares"] = [{"i": i, "value": v} for i, v in enumerate(squares)]
        res.claim("sum of squares", "30", str(sum(squares)), "reproduced", sum(squares))
        return res

    def broken(ctx):
        raise RuntimeError("boom")

    for name, fn in zip(names, (ok, broken)):
        register(name, f"dummy {name}")(fn)
    yield names
    for name in names:
        EXPERIMENTS.pop(name)


def _square_task(task, seed):
    (i,) = task
    return i * i


def test_a_crashing_experiment_is_an_error_claim_and_the_others_run(tmp_path, dummy_experiments):
    printed = []
    summary = run_experiments(dummy_experiments, out=str(tmp_path), quick=True, plots=False,
                              log=lambda s: None, print_fn=printed.append)
    verdicts = {c["experiment"]: c["verdict"] for c in summary["claims"]}
    assert verdicts == {"_dummy_ok": "reproduced", "_dummy_broken": "error"}
    assert summary["all_passed"] is False
    assert "RuntimeError: boom" in json.dumps(summary["claims"])
    assert summary["experiments"][0]["tables"]["squares"][4] == {"i": 4, "value": 16}
    assert "squares" in "\n".join(printed)


def test_claim_verdict_is_validated_and_the_table_wraps():
    with pytest.raises(ValueError, match="verdict must be one of"):
        Claim("x", "c", "p", "m", "maybe")
    c = Claim("exp", "a long claim " * 8, "paper", "measured", "reproduced", np.float32(0.5))
    assert isinstance(c.value, float) and c.passed()
    table = _fmt_table([c])
    assert max(len(line) for line in table.splitlines()) <= 135
    assert len(table.splitlines()) > 3  # wrapped over several lines


# --------------------------------------------------------------------------- CLI
def test_cli_lists_experiments(capsys):
    assert main(["reproduce", "--list"]) == 0
    out = capsys.readouterr().out
    for name in EXPECTED_FIGURES:
        assert name in out


@pytest.mark.parametrize("argv, message", [
    (["reproduce", "no_such_experiment"], "unknown experiment"),
    (["reproduce", "--workers", "0"], "positive integer"),
    (["reproduce", "--workers", "2", "--scheduler", "tcp://x:1"], "not allowed with"),
])
def test_cli_rejects_bad_arguments(argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_cli_exit_status_reflects_the_verdicts(tmp_path, dummy_experiments, capsys):
    assert main(["reproduce", "_dummy_ok", "--no-plots", "--out", str(tmp_path / "a")]) == 0
    assert "plots skipped: --no-plots" in capsys.readouterr().out
    assert main(["reproduce", "_dummy_broken", "--out", str(tmp_path / "b")]) == 1
    assert json.loads((tmp_path / "b" / "summary.json").read_text())["all_passed"] is False
