"""Parameters and MACs of a model, scope by scope, read off an ``lmref.trace`` of one forward pass.

    rows, totals = profile(lambda p, x: mod.forward(p, x, cfg), params, np.zeros((1, 3, 256, 256)))

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

import numpy as np

from ..trace import trace
from ..weights import flatten

__all__ = ["profile", "MAC_RULES", "BUFFER_SUFFIXES"]

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
