"""``lmref info``: parameters and MACs of a weights file, layer by layer, and the model's cost report.

    python -m lmref.info student.safetensors [--depth 4]

The counting (``profile``, its MAC convention and the FLOP reports) is ``lmref.cost``; this module
formats it.

    rows, totals = profile(lambda p, x: mod.forward(p, x, cfg), params, np.zeros((1, 3, 256, 256)))
    print(format_table(rows, totals, depth=4))
"""
from __future__ import annotations

import argparse
import sys

import numpy as np

from . import cost
from .cost import BUFFER_SUFFIXES, MAC_RULES, profile  # noqa: F401  (lmref.info.profile, as before)

__all__ = ["profile", "format_table", "info", "MAC_RULES", "BUFFER_SUFFIXES", "main"]


def aggregate(rows, depth):
    """Sum rows whose scopes share the first ``depth`` dot-separated parts
    ('backbone.stages.2.1.conv_kxk.conv' at depth 4 -> 'backbone.stages.2.1')."""
    if depth is None:
        return rows
    if not isinstance(depth, int) or depth < 1:
        raise ValueError(f"depth must be a positive int or None, got {depth!r}")
    out, index = [], {}
    for r in rows:
        key = ".".join(r["scope"].split(".")[:depth]) if r["scope"] else ""
        if key not in index:
            index[key] = {"scope": key, "ops": [], "output": None, "params": 0, "buffers": 0, "macs": 0}
            out.append(index[key])
        a = index[key]
        a["ops"] += r["ops"]
        a["output"] = r["output"] if r["output"] is not None else a["output"]
        for f in ("params", "buffers", "macs"):
            a[f] += r[f]
    return out


def _ops_summary(ops, width=34):
    counts = {}
    for o in ops:
        counts[o] = counts.get(o, 0) + 1
    s = ", ".join(o if n == 1 else f"{o} x{n}" for o, n in counts.items())
    return s if len(s) <= width else s[:width - 3] + "..."


def format_table(rows, totals, depth=None):
    """The profile as text: one line per scope (or per group of scopes at ``depth``), then totals."""
    rows = aggregate(rows, depth)
    w = max([len("layer")] + [len(r["scope"] or "(top level)") for r in rows])
    lines = [f"{'layer':<{w}}  {'ops':<34}  {'output':<22}  {'params':>11}  {'MACs':>15}",
             "-" * (w + 90)]
    for r in rows:
        out = "x".join(str(d) for d in r["output"]) if isinstance(r["output"], tuple) else str(r["output"] or "")
        lines.append(f"{r['scope'] or '(top level)':<{w}}  {_ops_summary(r['ops']):<34}  {out:<22}  "
                     f"{r['params']:>11,}  {r['macs']:>15,}")
    lines.append("-" * (w + 90))
    lines.append(f"total parameters  {totals['params']:,}  ({totals['params'] / 1e6:.4f} M)")
    lines.append(f"total buffers     {totals['buffers']:,}  (BatchNorm statistics, not parameters)")
    lines.append(f"total MACs        {totals['macs']:,}  ({totals['macs'] / 1e6:.3f} M)")
    for op, m in sorted(totals["macs_by_op"].items(), key=lambda kv: -kv[1]):
        lines.append(f"  {op:<26} {m:>15,}")
    if totals["unassigned"]:
        lines.append(f"parameters under no traced scope: {', '.join(totals['unassigned'])}")
    return "\n".join(lines)


def info(path, depth=None, dtype=np.float32):
    """Profile a weights file on a zeros input of its manifest's input size: (text, rows, totals)."""
    from . import models, weights
    model = weights.load_model(path, dtype=dtype)
    spec = model.manifest.get("input") or {}
    if "size" not in spec or "channels" not in spec:
        raise weights.WeightsError(f"{path}: manifest 'input' needs 'size' and 'channels' to profile, got {spec!r}")
    h, w = spec["size"]
    x = np.zeros((1, int(spec["channels"]), int(h), int(w)), dtype=dtype)
    mod = models.get(model.arch)
    rows, totals = profile(lambda p, x: mod.forward(p, x, model.config), model.params, x)
    head = f"{path}: architecture {model.arch}, input 1x{spec['channels']}x{h}x{w}"
    text = head + "\n" + format_table(rows, totals, depth)
    extra = cost.report(model.arch, model.params, model.config, (int(h), int(w)))
    if extra:                                    # a model's own cost summary, e.g. Lite-HRNet's per block
        text += "\n\n" + extra
    return text, rows, totals


def main(argv=None):
    """``lmref info <weights> [--depth N]``: print the per-layer table and totals."""
    ap = argparse.ArgumentParser(prog="lmref info", description=main.__doc__)
    ap.add_argument("weights", help="an lmref weights file (.safetensors with an lmref manifest)")
    ap.add_argument("--depth", type=int, default=None,
                    help="group layers by the first N parts of their names (default: every scope)")
    args = ap.parse_args(argv)
    text, _, _ = info(args.weights, depth=args.depth)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
