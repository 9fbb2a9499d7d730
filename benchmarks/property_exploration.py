"""Fixed or fresh hypothesis examples? A measurement on the op mutants of benchmarks/mutation.py.

    python -m benchmarks.property_exploration [--seeds 10] [--fixed 12,60] [--only ID,...]

Issue 21 found that the property tests ran the same 12 examples on every run (``derandomize=True``),
and that ``test_ops_conv::test_conv2d_matches_torch`` therefore never met a bug in the depthwise
stride-1 path. Two remedies: draw new examples on every run (from a seed printed at the top, so a
failure replays), or keep fixed examples and run more of them. This script measures both on every
mutant of lmref/ops in ``benchmarks/mutation.py``, running only the *property tests* (the
``@given`` tests) of the mutated op's test file, in one process per mutant:

* fixed-N: ``derandomize=True`` with N examples per test (N=12 is the old setting) -> caught or not;
* fresh-12: 12 examples per test from each of ``--seeds`` seeds -> the share of seeds that catch it,
  i.e. the chance that one CI run catches it; (1 - p)^k is the chance it survives k runs.

It writes benchmarks/results/property_exploration.md (and .json).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

from benchmarks.mutation import MUTANTS, RESULTS, apply, make_copy, restore

PROPERTY_TESTS = {          # op module -> the test file whose @given tests are its property tests
    "lmref/ops/conv.py": "test_ops_conv", "lmref/ops/norm.py": "test_ops_norm",
    "lmref/ops/activation.py": "test_ops_activation", "lmref/ops/pooling.py": "test_ops_pooling",
    "lmref/ops/resize.py": "test_ops_resize", "lmref/ops/heatmap.py": "test_ops_heatmap",
    "lmref/ops/attention.py": "test_ops_attention", "lmref/ops/patches.py": "test_ops_patches",
    "lmref/ops/shuffle.py": "test_ops_shuffle",
}

# Runs inside the mutated copy: every @given test of one module under each configuration.
PROBE = r'''
import json, sys, time, warnings
import torch
from hypothesis import HealthCheck, Phase, settings
torch.set_num_threads(1)
warnings.simplefilter("ignore")
sys.path.insert(0, "tests")
mod = __import__(sys.argv[1])
configs = json.loads(sys.argv[2])
tests = [getattr(mod, n) for n in dir(mod) if n.startswith("test_") and hasattr(getattr(mod, n), "hypothesis")]


def parametrized(fn):
    """The keyword arguments of every pytest.mark.parametrize combination of fn ([{}] if none)."""
    combos = [{}]
    for m in getattr(fn, "pytestmark", []):
        if m.name != "parametrize":
            continue
        names = [n.strip() for n in m.args[0].split(",")] if isinstance(m.args[0], str) else list(m.args[0])
        values = [v.values if hasattr(v, "values") else (v,) if len(names) == 1 else v for v in m.args[1]]
        combos = [{**c, **dict(zip(names, v))} for c in combos for v in values]
    return combos


out = []
for c in configs:
    t0, caught = time.time(), []
    for fn in tests:        # (hypothesis allows one @settings per test: set what it sets directly)
        fn._hypothesis_internal_use_settings = settings(
            max_examples=c["n"], derandomize=c["seed"] is None, database=None, deadline=None,
            phases=(Phase.explicit, Phase.generate), suppress_health_check=list(HealthCheck))
        fn._hypothesis_internal_use_seed = c["seed"]
        for kwargs in parametrized(fn):
            try:
                fn(**kwargs)
            except Exception:
                caught.append(fn.__name__)
                break
    out.append({**c, "caught": caught, "seconds": time.time() - t0})
print("RESULT " + json.dumps({"tests": [f.__name__ for f in tests], "runs": out}))
'''


def probe(copy, module, configs):
    env = {**os.environ, "PYTHONPATH": copy, "PYTHONDONTWRITEBYTECODE": "1"}
    r = subprocess.run([sys.executable, "-c", PROBE, module, json.dumps(configs)], cwd=copy, env=env,
                       capture_output=True, text=True, timeout=3600)
    line = [x for x in r.stdout.splitlines() if x.startswith("RESULT ")]
    if not line:
        raise RuntimeError(f"probe of {module} failed:\n{r.stderr[-2000:]}")
    return json.loads(line[0][len("RESULT "):])


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m benchmarks.property_exploration", description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, default=10, help="fresh-example runs per mutant (seeds 1..N)")
    ap.add_argument("--fixed", default="12,60", help="example counts of the fixed-example runs")
    ap.add_argument("--only", help="comma-separated mutant ids")
    ap.add_argument("--out", default=os.path.join(RESULTS, "property_exploration.md"))
    ap.add_argument("--label", default="", help="a title suffix for the report")
    args = ap.parse_args(argv)
    fixed = [int(n) for n in args.fixed.split(",")]
    mutants = [m for m in MUTANTS if m.file in PROPERTY_TESTS and (not args.only or m.id in args.only.split(","))]
    configs = [{"name": f"fixed-{n}", "n": n, "seed": None} for n in fixed]
    configs += [{"name": f"fresh-12 seed {s}", "n": 12, "seed": s} for s in range(1, args.seeds + 1)]
    rows = []
    with tempfile.TemporaryDirectory(prefix="lmref-explore-") as tmp:
        copy = make_copy(os.path.join(tmp, "repo"))
        cost = {c["name"].split(" seed")[0]: 0.0 for c in configs}        # unmutated: nothing is caught,
        for module in sorted({PROPERTY_TESTS[m.file] for m in mutants}):   # and what each setting costs
            warm = {"name": "warm-up", "n": 12, "seed": 0}                 # imports and first calls, not timed
            base = probe(copy, module, [warm] + configs[:len(fixed) + 1])
            for r in base["runs"][1:]:
                if r["caught"]:
                    raise SystemExit(f"{module}: property tests fail unmutated ({r['name']}): {r['caught']}")
                cost[r["name"].split(" seed")[0]] += r["seconds"]
        for m in mutants:
            original = apply(copy, m)
            try:
                t0 = time.time()
                res = probe(copy, PROPERTY_TESTS[m.file], configs)
            finally:
                restore(copy, m, original)
            runs = {r["name"]: r for r in res["runs"]}
            fresh = [r for r in res["runs"] if r["name"].startswith("fresh")]
            row = {"id": m.id, "module": PROPERTY_TESTS[m.file], "why": m.why,
                   **{f"fixed_{n}": bool(runs[f"fixed-{n}"]["caught"]) for n in fixed},
                   **{f"fixed_{n}_s": runs[f"fixed-{n}"]["seconds"] for n in fixed},
                   "fresh_rate": sum(bool(r["caught"]) for r in fresh) / len(fresh),
                   "fresh_s": sum(r["seconds"] for r in fresh) / len(fresh)}
            rows.append(row)
            print(f"{m.id:34s} " + " ".join(f"fixed-{n} {'X' if row[f'fixed_{n}'] else '.'}" for n in fixed)
                  + f"  fresh-12 {row['fresh_rate']:.0%}  ({time.time() - t0:.0f} s)", flush=True)
    write_report(rows, fixed, args.seeds, args.out, cost, args.label)


def write_report(rows, fixed, seeds, out, cost, label):
    n = len(rows)
    caught_fixed = {k: sum(r[f"fixed_{k}"] for r in rows) for k in fixed}
    expected_fresh = sum(r["fresh_rate"] for r in rows)
    ever_fresh = sum(r["fresh_rate"] > 0 for r in rows)
    modules = sorted({r["module"] for r in rows})
    def after(k):
        return sum(1 - (1 - r["fresh_rate"]) ** k for r in rows)
    lines = [f"# Fixed or fresh hypothesis examples{': ' + label if label else ''}", "",
             f"`python -m benchmarks.property_exploration --seeds {seeds} --fixed {','.join(map(str, fixed))}`: "
             f"the {n} mutants of lmref/ops in `benchmarks/mutation.py`, each against the property tests "
             f"(`@given`) of its op's test file only ({', '.join(modules)}). Seconds: all those property "
             "tests once, unmutated, on this 2-core machine (timings from one run: compare within a table, not across).", "",
             "| setting | mutants caught by one run | seconds |", "| --- | --- | --- |"]
    lines += [f"| fixed examples, {k} per test | {caught_fixed[k]} of {n} | {cost[f'fixed-{k}']:.1f} |" for k in fixed]
    lines += [f"| fresh examples each run, 12 per test | {expected_fresh:.1f} of {n} expected "
              f"(mean over {seeds} seeds) | {cost['fresh-12']:.1f} |",
              f"| fresh, after 5 / 20 runs | {after(5):.1f} / {after(20):.1f} of {n} expected | |",
              f"| fresh, caught by at least one of {seeds} seeds | {ever_fresh} of {n} | |", "",
              "| mutant | " + " | ".join(f"fixed-{k}" for k in fixed) + " | fresh-12: share of seeds that catch it |",
              "| --- | " + " | ".join("---" for _ in fixed) + " | --- |"]
    for r in rows:
        lines.append(f"| `{r['id']}` | " + " | ".join("caught" if r[f"fixed_{k}"] else "missed" for k in fixed)
                     + f" | {r['fresh_rate']:.0%} |")
    with open(out, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    with open(os.path.splitext(out)[0] + ".json", "w", encoding="utf-8") as f:
        json.dump({"seeds": seeds, "fixed": fixed, "cost_seconds": cost, "rows": rows}, f, indent=1)
    print(f"wrote {out}")


if __name__ == "__main__":
    sys.exit(main())
