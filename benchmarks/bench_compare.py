"""Before / after: lmref/torch ratios of several ``benchmarks.bench`` runs, against their run-to-run spread.

    python -m benchmarks.bench_compare --before B1.json B2.json --after A1.json A2.json [--out FILE.md]

Each JSON is a ``bench.json`` written by ``python -m benchmarks.bench``. For every model and batch the
table gives each run's lmref/torch ratio (the ratio of the medians, measured in the same run), the
change of the mean ratio, and the run-to-run spread: the largest difference between two runs *of the
same code* (before with before, after with after). A change counts as within the spread when it is
no larger than that spread.
"""
from __future__ import annotations

import argparse
import json
import sys


def ratios(path):
    """{(case, batch): (lmref/torch, lmref f32 median ms or None)} of one bench.json."""
    with open(path) as f:
        rows = json.load(f)["rows"]
    return {(r["case"], r["batch"]): (r["ratio_torch"], r.get("time", {}).get("lmref-f32", {}).get("median_ms"))
            for r in rows}


def spread(values):
    return max(values) - min(values) if len(values) > 1 else float("nan")


def compare(before, after):
    """Rows of (case, batch, [before ratios], [after ratios], change of the means, spread, within,
    ([before lmref ms], [after lmref ms]))."""
    b_runs, a_runs = [ratios(p) for p in before], [ratios(p) for p in after]
    keys = [k for k in b_runs[0] if all(k in r for r in b_runs + a_runs)]
    out = []
    for key in keys:
        b, a = [r[key][0] for r in b_runs], [r[key][0] for r in a_runs]
        ms = ([r[key][1] for r in b_runs], [r[key][1] for r in a_runs])
        change = sum(a) / len(a) - sum(b) / len(b)
        s = max(spread(b), spread(a))
        out.append((*key, b, a, change, s, abs(change) <= s, ms))
    return out


def markdown(rows, before, after):
    fmt = lambda v: " / ".join(f"{x:.2f}" for x in v)                # noqa: E731
    lines = [f"before: {', '.join(before)}; after: {', '.join(after)}", "",
             "| model | batch | lmref/torch before (each run) | after (each run) | change of the mean | "
             "run-to-run spread | within the spread | lmref f32 ms before | after |",
             "|---|---:|---|---|---:|---:|---|---|---|"]
    ms_fmt = lambda v: " / ".join("-" if x is None else f"{x:.1f}" for x in v)   # noqa: E731
    for case, batch, b, a, change, s, ok, (mb, ma) in rows:
        lines.append(f"| {case} | {batch} | {fmt(b)} | {fmt(a)} | {change:+.3f} | {s:.3f} | "
                     f"{'yes' if ok else '**no**'} | {ms_fmt(mb)} | {ms_fmt(ma)} |")
    n_ok = sum(r[6] for r in rows)
    lines += ["", f"{n_ok} of {len(rows)} ratios changed by no more than the run-to-run spread."]
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m benchmarks.bench_compare", description=__doc__.split("\n\n")[0])
    ap.add_argument("--before", nargs="+", required=True, help="bench.json files of the code before")
    ap.add_argument("--after", nargs="+", required=True, help="bench.json files of the code after")
    ap.add_argument("--out", default=None, help="also write the table to this Markdown file")
    args = ap.parse_args(argv)
    if len(args.before) < 2 and len(args.after) < 2:
        ap.error("the spread needs at least two runs of the same code (before or after)")
    try:
        md = markdown(compare(args.before, args.after), args.before, args.after)
    except (OSError, ValueError, KeyError) as e:
        print(f"bench_compare: error: {e}", file=sys.stderr)
        return 1
    print(md)
    if args.out:
        with open(args.out, "w") as f:
            f.write(md + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
