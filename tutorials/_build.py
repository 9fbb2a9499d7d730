"""Build the tutorial notebooks from their sources, execute them, and save them with clean outputs.

Each notebook is written as a plain Python file in ``tutorials/src/`` with ``# %%`` cell markers
(the "percent" format that VS Code, Spyder and jupytext read):

    # %% [markdown]
    # # A title
    # Some text.

    # %%
    x = 1 + 1

so a diff of a tutorial is a diff of Python code. This script turns ``src/NN_name.py`` into
``NN_name.ipynb``, runs it top to bottom with nbclient (default settings unless ``--small``) and
writes it with its outputs, after removing what changes from run to run without changing the
content: execution counts, timing metadata, kernel versions; cell ids are numbered, not random.

    python tutorials/_build.py                  # build and execute every notebook (default settings)
    python tutorials/_build.py 01 04            # only notebooks whose name starts with 01 or 04
    python tutorials/_build.py --no-execute     # sources -> notebooks without outputs
    python tutorials/_build.py --small          # execute with LMREF_TUTORIAL_SMALL=1 (what the tests use)

``tests/test_tutorials.py`` checks that every committed notebook's cells equal its source and
executes every notebook with ``LMREF_TUTORIAL_SMALL=1``.
"""
from __future__ import annotations

import argparse
import os
import re
import sys
import time
from pathlib import Path

import nbformat

HERE = Path(__file__).resolve().parent
SRC = HERE / "src"
REPO = HERE.parent
SMALL_ENV = "LMREF_TUTORIAL_SMALL"

_MARKER = re.compile(r"^# %%(?P<rest>.*)$")
KERNELSPEC = {"name": "python3", "display_name": "Python 3", "language": "python"}


def parse_cells(text):
    """Percent-format source -> [(kind, source)] with kind "markdown" or "code"."""
    cells, kind, lines = [], None, []

    def flush():
        body = "\n".join(lines).strip("\n")
        if kind is not None and body.strip():
            cells.append((kind, body))

    for line in text.splitlines():
        m = _MARKER.match(line)
        if m:
            flush()
            kind, lines = ("markdown" if "[markdown]" in m.group("rest") else "code"), []
        elif kind == "markdown":
            if line.strip() and not line.startswith("#"):
                raise ValueError(f"markdown cell line does not start with '#': {line!r}")
            lines.append(line[2:] if line.startswith("# ") else line[1:])
        elif kind == "code":
            lines.append(line)
        elif line.strip() and not line.startswith("#"):
            raise ValueError(f"code before the first '# %%' marker: {line!r}")
    flush()
    return cells


def notebook_from_source(path):
    """A new notebook (no outputs) from one percent-format source file."""
    nb = nbformat.v4.new_notebook()
    for k, (kind, body) in enumerate(parse_cells(Path(path).read_text())):
        make = nbformat.v4.new_markdown_cell if kind == "markdown" else nbformat.v4.new_code_cell
        nb.cells.append(make(body, id=f"cell-{k:02d}"))
    nb.metadata = {"kernelspec": dict(KERNELSPEC), "language_info": {"name": "python"}}
    return nb


def clean(nb):
    """Remove run-to-run noise: execution counts, timings, kernel versions, output metadata."""
    nb.metadata = {"kernelspec": dict(KERNELSPEC), "language_info": {"name": "python"}}
    for k, cell in enumerate(nb.cells):
        cell.id = f"cell-{k:02d}"
        cell.metadata = {}
        if cell.cell_type == "code":
            cell.execution_count = None
            for out in cell.outputs:
                if "execution_count" in out:
                    out.execution_count = None
                if "metadata" in out:
                    out.metadata = {}
    return nb


def execute(nb, small=False, timeout=1800):
    """Run a notebook in tutorials/ with the repository importable.
    Returns (wall seconds, CPU seconds of the kernel process: user + system, all threads)."""
    import resource

    from nbclient import NotebookClient

    saved = {k: os.environ.get(k) for k in (SMALL_ENV, "PYTHONPATH", "MPLBACKEND")}
    os.environ[SMALL_ENV] = "1" if small else "0"
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), saved["PYTHONPATH"]) if p)
    os.environ.pop("MPLBACKEND", None)          # the kernel's inline backend draws the figures
    try:
        client = NotebookClient(nb, timeout=timeout, kernel_name="python3",
                                resources={"metadata": {"path": str(HERE)}})
        r0, t0 = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
        client.execute()                        # starts the kernel, runs every cell, shuts it down
        wall, r1 = time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_CHILDREN)
        return wall, (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def cell_seconds(cell):
    """Wall seconds nbclient recorded for one executed code cell (its timing metadata), or None."""
    t = cell.get("metadata", {}).get("execution", {})
    start, end = t.get("iopub.execute_input"), t.get("shell.execute_reply")
    if not (start and end):
        return None
    from datetime import datetime
    parse = lambda s: datetime.fromisoformat(s.replace("Z", "+00:00"))
    return (parse(end) - parse(start)).total_seconds()


def print_cell_times(nb, k):
    """The k slowest code cells of an executed notebook (before `clean` drops the timings)."""
    timed = [(cell_seconds(c), i, c.source.splitlines()[0] if c.source else "")
             for i, c in enumerate(nb.cells) if c.cell_type == "code"]
    timed = sorted((t for t in timed if t[0] is not None), reverse=True)[:k]
    for seconds, i, first in timed:
        print(f"  cell {i:2d}: {seconds:7.1f} s  {first[:70]}")


def sources(prefixes=()):
    files = sorted(SRC.glob("[0-9][0-9]_*.py"))
    if prefixes:
        files = [f for f in files if any(f.stem.startswith(p) for p in prefixes)]
    return files


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("names", nargs="*", help="notebook name prefixes (default: all)")
    ap.add_argument("--no-execute", action="store_true", help="write notebooks without running them")
    ap.add_argument("--small", action="store_true", help=f"run with {SMALL_ENV}=1")
    ap.add_argument("--cell-times", type=int, default=0, metavar="K",
                    help="after executing, print the K slowest cells with their wall times")
    args = ap.parse_args(argv)
    files = sources(args.names)
    if not files:
        sys.exit(f"no tutorial source matches {args.names} in {SRC}")
    for src in files:
        nb = notebook_from_source(src)
        out = HERE / (src.stem + ".ipynb")
        if not args.no_execute:
            wall, cpu = execute(nb, small=args.small)
            print(f"{out.name}: executed in {wall:.1f} s wall, {cpu:.1f} s CPU "
                  f"({'small' if args.small else 'default'} settings, load average {os.getloadavg()[0]:.1f})")
            if args.cell_times:
                print_cell_times(nb, args.cell_times)
        nbformat.validate(clean(nb))
        nbformat.write(nb, out)
        print(f"wrote {out.relative_to(REPO)}")


if __name__ == "__main__":
    main()
