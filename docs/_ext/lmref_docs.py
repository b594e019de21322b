"""Sphinx helpers of lmref's documentation (kept small: everything else is plain reST).

``.. lmref-api:: lmref.conv``
    the module docstring, then every name of the module's ``__all__`` (functions, classes,
    constants), so a public function added to a module shows up without editing the docs.
``.. lmref-claims::`` (option ``:verdict:``)
    the claims table of the cached ``lmref reproduce --quick`` run (``docs/_static/reproduce``).
``.. lmref-figures::``
    the figures of that run, per experiment.
``.. lmref-deviations::``
    the conformance runner's documented convention differences with the frameworks.
``.. lmref-run:: examples/file.py``
    runs a documentation example in a fresh namespace at build time and shows its output: an
    example that stops working breaks the (warnings-as-errors) build.

Docstring validation: every documented object is checked with numpydoc's validator against
``lmref_validation_checks`` (conf.py); ``lmref_known_defects`` maps an object to the codes it is
allowed to fail *today* (a ratchet: a new public function must pass every check, a fixed
docstring should leave the map). numpydoc's own ``numpydoc_validation_checks`` cannot do this
per object and crashes on objects without source (hypothesis strategies).
"""
from __future__ import annotations

import contextlib
import importlib
import inspect
import io
import json
import os
import runpy

from docutils import nodes
from docutils.parsers.rst import directives
from docutils.statemachine import StringList
from sphinx.util import logging
from sphinx.util.docutils import SphinxDirective

logger = logging.getLogger(__name__)

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # docs/
REPORT_DIR = os.path.join(HERE, "_static", "reproduce")


def public_names(module_name: str) -> list[str]:
    """The documented names of a module: its ``__all__``."""
    mod = importlib.import_module(module_name)
    return list(mod.__all__)


def _api_lines(module_name: str) -> list[str]:
    mod = importlib.import_module(module_name)
    lines = [f".. automodule:: {module_name}", "   :no-members:", ""]
    for name in mod.__all__:
        obj = getattr(mod, name)
        if inspect.isclass(obj):
            lines += [f".. autoclass:: {module_name}.{name}", ""]
        elif callable(obj):
            lines += [f".. autofunction:: {module_name}.{name}", ""]
        else:
            simple = isinstance(obj, (int, float, str, tuple)) and len(repr(obj)) < 200
            lines += [f".. autodata:: {module_name}.{name}"]
            lines += ([] if simple else ["   :no-value:"]) + [""]
    return lines


class _RstDirective(SphinxDirective):
    def _parse(self, lines: list[str]) -> list[nodes.Node]:
        node = nodes.section() if self.name == "lmref-api" else nodes.container()
        node.document = self.state.document
        self.state.nested_parse(StringList(lines, source=self.get_source_info()[0]),
                                self.content_offset, node, match_titles=True)
        return node.children


class ApiDirective(_RstDirective):
    required_arguments = 1

    def run(self):
        return self._parse(_api_lines(self.arguments[0]))


def load_summary() -> dict:
    with open(os.path.join(REPORT_DIR, "summary.json")) as fh:
        return json.load(fh)


def _cell(text) -> str:
    return " ".join(str(text).split()).replace("|", "\\|") or "-"


def _claims_lines(summary: dict, verdict: str | None) -> list[str]:
    claims = [c for c in summary["claims"] if verdict is None or c["verdict"] == verdict]
    if not claims:
        return ["(no claim with this verdict in the cached run)"]
    lines = [".. list-table::", "   :header-rows: 1", "   :widths: 12 30 22 26 10", "",
             "   * - experiment", "     - claim", "     - paper", "     - lmref measured",
             "     - verdict"]
    for c in claims:
        lines += [f"   * - {_cell(c['experiment'])}", f"     - {_cell(c['claim'])}",
                  f"     - {_cell(c['paper'])}", f"     - {_cell(c['measured'])}",
                  f"     - {_cell(c['verdict'])}"]
    return lines


class ClaimsDirective(_RstDirective):
    option_spec = {"verdict": directives.unchanged}

    def run(self):
        self.env.note_dependency(os.path.join(REPORT_DIR, "summary.json"))
        return self._parse(_claims_lines(load_summary(), self.options.get("verdict")))


class FiguresDirective(_RstDirective):
    def run(self):
        self.env.note_dependency(os.path.join(REPORT_DIR, "summary.json"))
        lines = []
        for exp in load_summary()["experiments"]:
            if not exp["figures"]:
                continue
            lines += [f"**{exp['name']}** — {_cell(exp['title'])} ({exp['seconds']:.1f} s)", ""]
            for fig in exp["figures"]:
                lines += [f".. figure:: /_static/reproduce/{fig}", "   :width: 90%", "",
                          f"   ``{fig}``", ""]
        return self._parse(lines)


class DeviationsDirective(_RstDirective):
    """The conformance runner's documented convention differences (``DEVIATIONS``)."""

    def run(self):
        from lmref.testing.conformance import DEVIATIONS

        lines = [".. list-table::", "   :header-rows: 1", "   :widths: 10 10 20 30 30", "",
                 "   * - op", "     - framework", "     - what", "     - lmref",
                 "     - framework"]
        for d in DEVIATIONS:
            lines += [f"   * - ``{d.op}``", f"     - {d.framework}", f"     - {_cell(d.title)}",
                      f"     - {_cell(d.lmref)}", f"     - {_cell(d.framework_side)}"]
        return self._parse(lines)


class RunDirective(SphinxDirective):
    """Run an example script (path relative to docs/) and show what it prints."""

    required_arguments = 1

    def run(self):
        path = os.path.join(HERE, self.arguments[0])
        self.env.note_dependency(path)
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            runpy.run_path(path, run_name="__main__")
        text = out.getvalue().rstrip() or "(no output)"
        block = nodes.literal_block(text, text)
        block["language"] = "text"
        return [block]


def _validator_cls():
    from numpydoc.docscrape import get_doc_object
    from numpydoc.validate import Validator

    class SourcelessValidator(Validator):
        """numpydoc's validator for objects whose source cannot be read (hypothesis
        ``@composite`` strategies): their "returns something" is taken as true."""

        def __init__(self, obj_name):
            super().__init__(get_doc_object(Validator._load_obj(obj_name)))

        @property
        def method_source(self):
            try:
                return super().method_source
            except OSError:
                return "def f():\n    return 1\n"

    return SourcelessValidator


def validate_docstring(name: str, checks, allowed=()) -> list[tuple[str, str]]:
    """The ``(code, message)`` numpydoc errors of ``name`` within ``checks``, minus ``allowed``."""
    from numpydoc.validate import validate

    report = validate(name, validator_cls=_validator_cls())
    return [(code, msg) for code, msg in report["errors"]
            if code in checks and code not in allowed]


def _on_docstring(app, what, name, obj, options, lines):
    if what not in ("function", "class", "method") or not name.startswith("lmref."):
        return
    if name in app.env.temp_data.setdefault("lmref_validated", set()):
        return
    app.env.temp_data["lmref_validated"].add(name)
    known = app.config.lmref_known_defects.get(name, "").split()
    errors = validate_docstring(name, set(app.config.lmref_validation_checks), known)
    if errors:
        logger.warning("[numpydoc] docstring of %s: %s", name,
                       "; ".join(f"{c}: {m}" for c, m in errors), type="lmref",
                       subtype="docstring")


def setup(app):
    app.add_config_value("lmref_validation_checks", (), "env")
    app.add_config_value("lmref_known_defects", {}, "env")
    app.connect("autodoc-process-docstring", _on_docstring, priority=400)
    app.add_directive("lmref-api", ApiDirective)
    app.add_directive("lmref-claims", ClaimsDirective)
    app.add_directive("lmref-figures", FiguresDirective)
    app.add_directive("lmref-run", RunDirective)
    app.add_directive("lmref-deviations", DeviationsDirective)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
