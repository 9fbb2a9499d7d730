"""Parameters and MACs of a model, layer by layer, read off an ``lmref.trace`` of one forward pass.

    rows, totals = profile(lambda p, x: mod.forward(p, x, cfg), params, np.zeros((1, 3, 256, 256)))
    print(format_table(rows, totals, depth=4))

or, for a weights file (what ``lmref info <weights>`` prints):

    python -m lmref.info student.safetensors [--depth 4]

A *layer* is a trace scope (the models name their scopes after state-dict keys, so a scope is a
module path such as ``backbone.stages.2.1.transformer.0.attn``).  Each row gives the ops recorded in
that scope, its output shape, the parameters whose key lies under it (the deepest scope that is a
prefix of the key wins), and the MACs of its ops.

MAC convention (multiply-accumulates, one per multiply that is summed into an output):
* conv2d       out.numel * Cin/groups * kh * kw          (bias adds not counted)
* linear       out.numel * in_features
* matmul       out.numel * K  (the contracted length)
* e2p          out.numel * E  (a fixed 1x1 conv)          aam_fusion: its E2P part
* separable_self_attention: its qkv and out 1x1 convs, plus B*d*P*N for the context reduction
  sum_N key * score
Norms, activations, resizing, elementwise products and (un)folding are not counted.  An op called
inside another op that has a rule is not counted again.  ``rules`` extends or overrides the table.

Parameters vs buffers: keys ending in ``running_mean``, ``running_var`` or ``num_batches_tracked``
are buffers (BatchNorm statistics) — counted apart, as ``sum(p.numel() for p in model.parameters())``
in torch leaves them out.
"""
from __future__ import annotations

import argparse
import sys

import numpy as np

from .trace import trace
from .weights import flatten

__all__ = ["profile", "format_table", "info", "MAC_RULES", "BUFFER_SUFFIXES", "main"]

BUFFER_SUFFIXES = ("running_mean", "running_var", "num_batches_tracked")


def _numel(shape):
    return int(np.prod(shape, dtype=np.int64))


def _conv2d(r):        # inputs: x [B, Cin, H, W], weight [Cout, Cin/g, kh, kw], ...
    return _numel(r.output.shape) * _numel(r.inputs[1][1:])


def _linear(r):        # inputs: x [..., in], weight [out, in], ...
    return _numel(r.output.shape) * r.inputs[1][1]


def _matmul(r):        # inputs: a [..., M, K], b [..., K, N]
    return _numel(r.output.shape) * r.inputs[0][-1]


def _e2p(r):           # inputs: edge maps [B, E, h, w], matrix [N, E], bias [N]
    return _numel(r.output.shape) * r.inputs[1][1]


def _aam_fusion(r):    # inputs: heatmaps, point maps, edge maps, matrix [N, E], bias [N]
    return _numel(r.output.shape) * r.inputs[3][1]


def _separable_self_attention(r):   # inputs: x [B, d, P, N], qkv_w [1+2d, d, 1, 1], qkv_b, out_w [d, d, 1, 1], out_b
    B, d, P, N = r.inputs[0]
    tokens = B * P * N
    return tokens * (1 + 2 * d) * d + tokens * d + tokens * d * d   # qkv conv, context, out conv


MAC_RULES = {
    "conv2d": _conv2d,
    "linear": _linear,
    "matmul": _matmul,
    "e2p": _e2p,
    "aam_fusion": _aam_fusion,
    "separable_self_attention": _separable_self_attention,
}


def _scope_of(name):
    """'a.b:conv2d' -> 'a.b';  'a.b:op/conv2d#1' -> 'a.b';  'conv2d' -> ''."""
    head = name.split("/", 1)[0]
    return head.split(":", 1)[0] if ":" in head else ""


def profile(forward_fn, params, x, rules=None, is_buffer=None):
    """Run ``forward_fn(params, x)`` under ``lmref.trace()`` and count parameters and MACs per scope.

    params: nested or flat dict of arrays.  rules: {op name: fn(record) -> MACs} added to MAC_RULES.
    is_buffer: fn(key) -> bool (default: the BatchNorm statistics suffixes).

    Returns (rows, totals):
      rows    list of dicts, one per scope in order of first use: scope, ops (top-level op names),
              output (shape of the scope's last top-level op), params, buffers, macs
      totals  dict: params, buffers, macs, macs_by_op {op: MACs}, unassigned (keys of params under
              no traced scope — unused weights, or ops called outside any scope)
    """
    rules = {**MAC_RULES, **(rules or {})}
    is_buffer = is_buffer or (lambda k: k.rsplit(".", 1)[-1] in BUFFER_SUFFIXES)
    flat = flatten(params)
    with trace() as t:
        forward_fn(params, x)

    counted_names = {r.name for r in t if r.op in rules}
    rows, by_scope, macs_by_op = [], {}, {}
    for r in t:
        scope = _scope_of(r.name)
        if scope not in by_scope:
            by_scope[scope] = {"scope": scope, "ops": [], "output": None, "params": 0, "buffers": 0, "macs": 0}
            rows.append(by_scope[scope])
        row = by_scope[scope]
        parents = r.name.split("/")[:-1]          # enclosing op calls, outermost first
        if not parents:
            row["ops"].append(r.op)
            row["output"] = tuple(r.output.shape) if isinstance(r.output, np.ndarray) else type(r.output).__name__
        ancestors = ["/".join(parents[:i + 1]) for i in range(len(parents))]
        if r.op in rules and not any(a in counted_names for a in ancestors):
            m = int(rules[r.op](r))
            row["macs"] += m
            macs_by_op[r.op] = macs_by_op.get(r.op, 0) + m

    scopes = sorted((s for s in by_scope if s), key=len, reverse=True)
    unassigned = []
    for key, value in flat.items():
        owner = next((s for s in scopes if key.startswith(s + ".")), None)
        if owner is None:
            unassigned.append(key)
            continue
        by_scope[owner]["buffers" if is_buffer(key) else "params"] += int(np.asarray(value).size)
    totals = {
        "params": sum(int(np.asarray(v).size) for k, v in flat.items() if not is_buffer(k)),
        "buffers": sum(int(np.asarray(v).size) for k, v in flat.items() if is_buffer(k)),
        "macs": sum(r["macs"] for r in rows),
        "macs_by_op": macs_by_op,
        "unassigned": unassigned,
    }
    return rows, totals


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
    if hasattr(mod, "info_report"):              # a model's own summary, e.g. Lite-HRNet's cost per block
        text += "\n\n" + mod.info_report(model.params, model.config, (int(h), int(w)))
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
