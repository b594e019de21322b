"""The asv benchmark modules are well-formed, and the side-by-side table runner works.

Timings themselves are never asserted (speed is measured by asv, not tested).
"""
import importlib
import itertools
import pathlib
import types

import pytest

from benchmarks import table

BENCH_DIR = pathlib.Path(__file__).resolve().parent.parent / "benchmarks"
MODULES = sorted(p.stem for p in BENCH_DIR.glob("bench_*.py"))


def _classes(module):
    return [c for n, c in vars(module).items()
            if isinstance(c, type) and hasattr(c, "params") and not n.startswith("_")]


def test_table_covers_every_cpu_module():
    assert set(table.CPU_MODULES) == set(MODULES) - {"bench_cuda"}


@pytest.mark.parametrize("name", MODULES)
def test_benchmark_classes_are_well_formed(name):
    module = importlib.import_module(f"benchmarks.{name}")
    classes = _classes(module)
    assert classes, f"{name} defines no benchmark class"
    for cls in classes:
        params = cls.params if isinstance(cls.params[0], (list, tuple)) else (cls.params,)
        assert len(params) == len(cls.param_names), cls.__name__
        assert any(m.startswith("time_") for m in dir(cls)), cls.__name__
        if cls.param_names[0] == "peer":
            assert "torch" in params[0] or name == "bench_cuda", cls.__name__


class _Toy:
    params = (["lmref", "torch"], [1, 2])
    param_names = ["peer", "n"]

    def setup(self, peer, n):
        if peer == "torch" and n == 2:
            raise NotImplementedError("no peer here")
        self.calls = 0

    def time_toy(self, peer, n):
        self.calls += 1


def test_table_rows_time_every_case_and_report_skips():
    rows = list(table._rows(types.SimpleNamespace(Toy=_Toy, __name__="toy")))
    assert [r[:3] for r in rows] == [("Toy", "time_toy", "1"), ("Toy", "time_toy", "2")]
    assert all(isinstance(r[3], float) for r in rows)
    assert isinstance(rows[0][4], float) and rows[0][5].endswith("x")
    assert rows[1][4].startswith("skipped (no peer here)") and rows[1][5] == "-"


def test_table_gives_a_third_peer_a_row_of_its_own():
    class Three(_Toy):
        params = (["lmref", "torch", "opencv"], [1])

    rows = list(table._rows(types.SimpleNamespace(Three=Three, __name__="three")))
    assert [r[:3] for r in rows] == [("Three", "time_toy", "1"),
                                     ("Three", "time_toy", "1 vs opencv")]
    assert rows[0][3] == rows[1][3]  # the same lmref median on both rows
    assert all(isinstance(r[4], float) and r[5].endswith("x") for r in rows)


def test_table_cases_without_peer():
    class NoPeer:
        params = [3, 4]
        param_names = ["k"]

    peers, rest = table._cases(NoPeer)
    assert peers is None and rest == list(itertools.product([3, 4]))


def test_table_counts_page_faults_when_asked(monkeypatch):
    """``--faults``: every time carries the median minor page faults per call; a call that
    touches freshly mapped memory counts them (here: a 64-page buffer, mapped anew each call)."""
    import mmap

    def fresh_pages():
        with mmap.mmap(-1, 64 * mmap.PAGESIZE) as m:
            for i in range(0, len(m), mmap.PAGESIZE):
                m[i] = 1

    monkeypatch.setattr(table, "COUNT_FAULTS", True)
    quiet, touching = table._median_ms(lambda: None, fresh_pages)
    assert quiet.faults == 0 and touching.faults >= 64
    assert table._fmt(touching) == f"{float(touching):.3f}/{touching.faults}"
