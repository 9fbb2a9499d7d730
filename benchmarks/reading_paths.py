"""How much code a reader must hold to follow one forward pass: the lmref functions a model executes,
their lines and their files, with the fast layer off (the definitions) or on.

    python -m benchmarks.reading_paths                 # the three models of docs/reading-guide.md
    python -m benchmarks.reading_paths --fast          # the same with lmref.fast on

One forward pass of a batch-1 zeros input runs under ``sys.settrace``; every function of a file under
``lmref/`` that is entered counts with its whole definition (decorators, docstring and body: the
lines from its ``def`` to its last line). Functions called only while loading the weights are left out
(the pass starts at ``Model.__call__``). Files are listed in the order they are first entered.
"""
from __future__ import annotations

import argparse
import inspect
import os
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LMREF = os.path.join(ROOT, "lmref") + os.sep
MODELS = {            # name in docs/reading-guide.md -> shipped model (lmref/assets/models)
    "student (MobileViT-v2 + AAM head)": "student",
    "Lite-HRNet Plus": "litehrnet_plus",
    "Stud5": "stud5",
}


def executed(model):
    """{(file, first line): (name, number of lines)} of the lmref functions one forward pass enters."""
    size = model.manifest["input"]["size"]
    x = np.zeros((1, int(model.manifest["input"]["channels"]), *map(int, size)), np.float32)
    seen = {}

    def tracer(frame, event, arg):
        code = frame.f_code
        if event == "call" and code.co_filename.startswith(LMREF):
            key = (code.co_filename, code.co_firstlineno)
            if key not in seen:
                seen[key] = code
        return None

    sys.settrace(tracer)
    try:
        model(x)
    finally:
        sys.settrace(None)
    out = {}
    for key, code in seen.items():
        if code.co_name in ("<lambda>", "<genexpr>", "<listcomp>", "<dictcomp>", "<setcomp>"):
            continue                                   # counted inside the function that holds it
        lines, _ = inspect.getsourcelines(code)
        out[key] = (code.co_qualname, len(lines))
    return out


def report(name, model):
    fns = executed(model)
    files = {}
    for (path, _), (_, n) in fns.items():
        rel = os.path.relpath(path, ROOT)
        files[rel] = files.get(rel, 0) + n
    total = sum(files.values())
    lines = [f"{name}: {total} lines in {len(fns)} functions across {len(files)} files"]
    lines += [f"  {n:4d}  {f}" for f, n in files.items()]
    return lines


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--fast", action="store_true", help="with the fast layer on (default: off)")
    args = ap.parse_args(argv)
    from lmref import fast
    fast.enable(args.fast)
    from lmref import weights
    from lmref.detect import shipped_models
    for name, shipped in MODELS.items():
        print("\n".join(report(name, weights.load_model(shipped_models()[shipped]))))
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
