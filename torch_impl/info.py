"""Parameters and MACs per module of a torch model, with forward hooks — the torch-side twin of
``lmref.info`` (same MAC convention, see there), so that the two counts can be compared.

    rows, totals = profile(model, torch.zeros(1, 3, 256, 256))
    print(lmref.info.format_table(rows, totals, depth=4))

A row is a module that owns parameters or MACs: its dotted name (= state-dict prefix), its own
parameters (not its children's), and its MACs:
* nn.Conv2d   out.numel * Cin/groups * kh * kw;   nn.Linear   out.numel * in_features
* any module with a ``macs(inputs, output)`` method: what it returns (for work done outside child
  modules, e.g. the context reduction of separable self-attention, or the fixed E2P conv).
"""
from __future__ import annotations

import torch
from torch import nn

__all__ = ["profile", "report", "MODULE_RULES"]


def _conv2d(m, inputs, output):
    return output.numel() * m.weight[0].numel()


def _linear(m, inputs, output):
    return output.numel() * m.in_features


MODULE_RULES = {nn.Conv2d: _conv2d, nn.Linear: _linear}


@torch.no_grad()
def profile(model: nn.Module, x, rules=None):
    """Run ``model(x)`` once with hooks.  Returns (rows, totals) shaped like ``lmref.info.profile``:
    rows: scope, ops (module class name), output, params, buffers, macs; totals: params, buffers, macs,
    macs_by_op ({module class: MACs}), unassigned ([])."""
    rules = {**MODULE_RULES, **(rules or {})}
    rows, handles, macs_by_op = {}, [], {}

    def rule_for(m):
        for cls in type(m).__mro__:
            if cls in rules:
                return rules[cls]
        return (lambda mod, i, o: mod.macs(i, o)) if hasattr(m, "macs") else None

    def hook_for(name, rule):
        def hook(m, inputs, output):
            macs = int(rule(m, inputs, output)) if rule is not None else 0
            row = rows[name]
            row["macs"] += macs
            row["output"] = tuple(output.shape) if torch.is_tensor(output) else type(output).__name__
            op = type(m).__name__
            macs_by_op[op] = macs_by_op.get(op, 0) + macs
        return hook

    for name, m in model.named_modules():
        own_params = sum(p.numel() for p in m.parameters(recurse=False))
        own_buffers = sum(b.numel() for n, b in m.named_buffers(recurse=False)
                          if n not in m._non_persistent_buffers_set and b.is_floating_point())
        rule = rule_for(m)
        if own_params == 0 and rule is None:
            continue
        rows[name] = {"scope": name, "ops": [type(m).__name__], "output": None,
                      "params": own_params, "buffers": own_buffers, "macs": 0}
        handles.append(m.register_forward_hook(hook_for(name, rule)))
    try:
        model(x)
    finally:
        for h in handles:
            h.remove()
    rows = list(rows.values())
    totals = {"params": sum(p.numel() for p in model.parameters()),
              "buffers": sum(r["buffers"] for r in rows),
              "macs": sum(r["macs"] for r in rows), "macs_by_op": macs_by_op, "unassigned": []}
    return rows, totals


def report(model: nn.Module, x, depth=None, rules=None):
    """The profile as the same text table ``lmref info`` prints."""
    from lmref.info import format_table
    rows, totals = profile(model, x, rules)
    return format_table(rows, totals, depth)
