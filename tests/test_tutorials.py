"""The tutorial notebooks: each committed notebook equals its source in ``tutorials/src`` (so a
reviewer can trust the diff of the source), is saved executed and clean, ends with a summary and a
"try this" exercise, draws its figures in ``lmref.viz.NOTEBOOK_RC`` sizes, and runs top to bottom
without an error with ``LMREF_TUTORIAL_SMALL=1`` (the notebooks' small-settings switch).

Build / re-execute with default settings: ``python tutorials/_build.py``.
"""
import importlib.util
import re
from pathlib import Path

import nbformat
import pytest

TUTORIALS = Path(__file__).resolve().parents[1] / "tutorials"
_spec = importlib.util.spec_from_file_location("tutorials_build", TUTORIALS / "_build.py")
build = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(build)

SOURCES = build.sources()
# Notebooks whose small-settings run still takes more than a minute on 2 cores run only with --slow.
SLOW = set()


def _param(src):
    marks = [pytest.mark.slow] if src.stem in SLOW else []
    return pytest.param(src, id=src.stem, marks=marks)


def _committed(src):
    path = TUTORIALS / (src.stem + ".ipynb")
    assert path.exists(), f"{path.name} is missing: run python tutorials/_build.py {src.stem[:2]}"
    return nbformat.read(path, as_version=4)


def test_every_notebook_has_a_source():
    assert SOURCES, "no tutorial sources found"
    notebooks = {p.stem for p in TUTORIALS.glob("*.ipynb")}
    assert notebooks == {s.stem for s in SOURCES}


def test_parse_cells():
    text = "# %% [markdown]\n# # Title\n#\n# text\n\n# %%\nx = 1\n\n# comment\ny = 2\n\n# %%\n\n"
    assert build.parse_cells(text) == [("markdown", "# Title\n\ntext"), ("code", "x = 1\n\n# comment\ny = 2")]
    with pytest.raises(ValueError, match="markdown cell line"):
        build.parse_cells("# %% [markdown]\nnot a comment\n")
    with pytest.raises(ValueError, match="before the first"):
        build.parse_cells("x = 1\n# %%\ny = 2\n")


def test_cell_times_read_nbclient_timing(capsys):
    nb = build.notebook_from_source(SOURCES[0])
    code = [c for c in nb.cells if c.cell_type == "code"]
    code[0].metadata["execution"] = {"iopub.execute_input": "2026-12-06T16:00:00.000000Z",
                                     "shell.execute_reply": "2026-12-06T16:01:02.500000Z"}
    code[1].metadata["execution"] = {"iopub.execute_input": "2026-12-06T16:01:03.000000Z",
                                     "shell.execute_reply": "2026-12-06T16:01:04.000000Z"}
    assert build.cell_seconds(code[0]) == 62.5 and build.cell_seconds(code[2]) is None
    build.print_cell_times(nb, 1)
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 1 and "62.5 s" in out[0]


@pytest.mark.parametrize("src", [_param(s) for s in SOURCES])
def test_notebook_matches_source_and_is_saved_clean(src):
    nb = _committed(src)
    fresh = build.notebook_from_source(src)
    got = [(c.cell_type, c.source) for c in nb.cells]
    want = [(c.cell_type, c.source) for c in fresh.cells]
    assert got == want, f"{src.stem}.ipynb is out of date with src/{src.name}: rebuild it"
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert any(c.outputs for c in code), "saved without outputs: build it with execution"
    for c in code:
        assert c.execution_count is None and c.metadata == {}, f"{c.id}: run-to-run noise not stripped"
        for out in c.outputs:
            assert out.output_type != "error", f"{c.id}: saved with an error output"
            assert out.get("execution_count") is None
    nbformat.validate(nb)


@pytest.mark.parametrize("src", [_param(s) for s in SOURCES])
def test_notebook_ends_with_summary_and_exercise(src):
    """Every notebook ends with a "Summary" section and a "Try this" exercise, in its last cells."""
    cells = build.parse_cells(src.read_text())
    tail = "\n".join(body for kind, body in cells[-3:] if kind == "markdown")
    assert "## Summary" in tail and "### Try this" in tail, f"{src.name}: no summary / try-this at the end"
    tries = tail.split("### Try this", 1)[1]
    assert tries.count("\n* ") >= 1, f"{src.name}: the try-this section has no exercise"


@pytest.mark.parametrize("src", [_param(s) for s in SOURCES])
def test_notebook_figures_use_the_notebook_style(src):
    """Figures readable on HiDPI screens: every notebook applies lmref.viz.NOTEBOOK_RC (100 dpi,
    10-12 pt text) and none sets a smaller dpi or an 8 pt (or smaller) title afterwards."""
    text = src.read_text()
    assert "plt.rcParams.update(viz.NOTEBOOK_RC)" in text, f"{src.name}: figures not in the notebook style"
    assert "figure.dpi\"] = 72" not in text
    small = re.findall(r"set_title\([^\n]*fontsize=[1-8]\b", text) + re.findall(r"suptitle\([^\n]*fontsize=[1-8]\b", text)
    assert not small, f"{src.name}: titles smaller than 9 pt: {small[:3]}"


@pytest.mark.parametrize("src", [_param(s) for s in SOURCES])
def test_notebook_runs_with_small_settings(src):
    nb = _committed(src)
    seconds, _ = build.execute(nb, small=True, timeout=600)   # raises CellExecutionError on any error
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors
    print(f"{src.stem}: {seconds:.1f} s with small settings")
