"""Cost of Lite-HRNet / Lite-HRNet Plus per block (stem, channel weighting, transition, fusion, head):
the table of the Lite-HRNet Plus paper's Figure 2, read off an ``lmref.cost.profile`` of one forward.

    print(cost_report(preset("litehrnet_18"), preset("litehrnet_plus_30m")))

FLOP convention of the Lite-HRNet Plus paper (Tables 1-2), as reproduced here:

    FLOPs = one per multiply-accumulate of a conv / linear layer (not 2)
          + one per output element of a conv / linear with bias
          + two per BatchNorm element, one per ReLU element
          + one per output element of an up-/down-sampling (interpolate)
          + one per input element of an average pool (global pools, channel means)
    in decimal millions.  Sigmoid, elementwise sums/products, concatenation and shuffles count 0.

This is mmcv's ``get_model_complexity_info`` counting (which mmpose-based code such as the paper's
uses), applied to every resize and pool.  Evidence: HRNetV2-W18 with the mmpose WFLW head (98 points,
96x96) has 9,662,258 parameters (the paper's 9.66 M) and 668.53 M FLOPs by this rule against the
paper's 668.54 M (MACs alone: 660.04 M; 2 x MACs: 1,320 M).  The paper's "Lite-HRNet" row
(0.66 M / 33.61 M) is not upstream Lite-HRNet-18, which has 1,134,090 parameters and 43.68 M FLOPs
here at 96x96 with 98 heatmaps, so that row cannot pin the convention by itself.  The Lite-HRNet
README counts differently: torchstat's "Flops" (multiply-accumulates, conv bias, 2 per BN element,
ReLU modules, one per *pixel* of an ``nn.Upsample``) in binary millions (2^20), e.g. 205.2 M for
Lite-HRNet-18 at 256x192; ``tests/test_litehrnet.py`` reproduces all six README numbers with that rule.
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np

from ..models import litehrnet as L
from ..weights import unflatten
from .profile import profile

__all__ = ["BLOCKS", "FLOP_RULES", "block_of", "cost_table", "format_cost_table", "cost_report",
           "params_of", "counterpart", "PAPER_SIZES"]

BLOCKS = ("stem", "ccw", "transition", "fusion", "head")

# Lite-HRNet Plus paper, Table 1 (98 WFLW points, 96x96): (parameters, FLOPs) of its two sizes
PAPER_SIZES = {"litehrnet_plus_10m": (0.37e6, 10.25e6), "litehrnet_plus_30m": (1.51e6, 30.27e6)}


def _numel(shape):
    return int(np.prod(shape, dtype=np.int64))


def _conv2d(r):            # inputs: x, weight [Cout, Cin/g, kh, kw], (bias)
    out = _numel(r.output.shape)
    return out * _numel(r.inputs[1][1:]) + (out if len(r.inputs) > 2 else 0)


def _linear(r):            # inputs: x [..., in], weight [out, in], (bias)
    out = _numel(r.output.shape)
    return out * r.inputs[1][1] + (out if len(r.inputs) > 2 else 0)


FLOP_RULES = {
    "conv2d": _conv2d,
    "linear": _linear,
    "batch_norm": lambda r: 2 * _numel(r.output.shape),
    "relu": lambda r: _numel(r.output.shape),
    "interpolate": lambda r: _numel(r.output.shape),
    "adaptive_avg_pool2d": lambda r: _numel(r.inputs[0]),
    "avg_pool2d": lambda r: _numel(r.inputs[0]),
}


def block_of(name):
    """The Figure 2 block of a scope or state-dict key: 'backbone.stage1.0.fuse_layers.2.0.1' -> 'fusion'."""
    if name.startswith("backbone.stem"):
        return "stem"
    if name.startswith("backbone.transition"):
        return "transition"
    if ".fuse_layers" in name:
        return "fusion"
    if ".layers." in name:
        return "ccw"
    return "head"              # backbone.head_layer (iterative head) and keypoint_head


def params_of(cfg, dtype=np.float64):
    """Zero parameters of the right shapes (costs depend on shapes only)."""
    return unflatten({k: np.zeros(s, dtype) for k, s in L.param_shapes(cfg).items()})


def cost_table(cfg, input_size=(96, 96), params=None):
    """{block: {"params", "macs", "flops"}} for one image of ``input_size`` (H, W), plus "total".
    params: nested parameters (default: zeros of the config's shapes)."""
    params = params_of(cfg) if params is None else params
    leaf = params
    while isinstance(leaf, dict):
        leaf = next(iter(leaf.values()))
    x = np.zeros((1, cfg.in_channels, *input_size), dtype=leaf.dtype)

    def fwd(p, x):
        return L.forward(p, x, cfg)

    rows_mac, tot_mac = profile(fwd, params, x)
    rows_flop, _ = profile(fwd, params, x, rules=FLOP_RULES)
    table = {b: {"params": 0, "macs": 0, "flops": 0} for b in BLOCKS}
    for r in rows_mac:
        b = block_of(r["scope"])
        table[b]["params"] += r["params"]
        table[b]["macs"] += r["macs"]
    for r in rows_flop:                        # profile() puts the count its rules give under "macs"
        table[block_of(r["scope"])]["flops"] += r["macs"]
    if tot_mac["unassigned"]:
        raise ValueError(f"parameters under no traced scope: {tot_mac['unassigned'][:5]}")
    table["total"] = {k: sum(table[b][k] for b in BLOCKS) for k in ("params", "macs", "flops")}
    return table


def format_cost_table(tables, names=None):
    """Side-by-side per-block table of one or more ``cost_table`` results (FLOPs in M, paper convention).
    With two tables the last column is the change of each block's FLOPs from the first to the second."""
    names = names or [f"model {i}" for i in range(len(tables))]
    w = max(14, *(len(n) for n in names))
    head = f"{'block':<12}" + "".join(f"  {n:>{w}}" for n in names)
    if len(tables) == 2:
        head += f"  {'FLOPs change':>12}"
    lines = [head, "-" * len(head)]
    for b in BLOCKS + ("total",):
        cells = []
        for t in tables:
            share = 100 * t[b]["flops"] / t["total"]["flops"]
            cells.append(f"{t[b]['flops'] / 1e6:7.2f} M {share:4.0f}%" if b != "total" else
                         f"{t[b]['flops'] / 1e6:7.2f} M     ")
        line = f"{b:<12}" + "".join(f"  {c:>{w}}" for c in cells)
        if len(tables) == 2 and tables[0][b]["flops"]:
            line += f"  {100 * (tables[1][b]['flops'] / tables[0][b]['flops'] - 1):+11.0f}%"
        lines.append(line)
    lines.append(f"{'params':<12}" + "".join(f"  {t['total']['params'] / 1e6:>{w - 2}.4f} M" for t in tables))
    lines.append(f"{'MACs':<12}" + "".join(f"  {t['total']['macs'] / 1e6:>{w - 2}.2f} M" for t in tables))
    lines.append("FLOPs: 1 per multiply-accumulate + conv/linear bias, 2 per BatchNorm element, 1 per ReLU, "
                 "resized or pooled element; decimal M (the Lite-HRNet Plus paper's convention, see "
                 "lmref.cost.litehrnet)")
    return "\n".join(lines)


def counterpart(cfg):
    """The other member of the Figure 2 pair with the same stem and stages: for a Lite-HRNet Plus config
    its Lite-HRNet (point-wise fusion, iterative head, 1x1 head), else its Plus version (SCAF, MR head)."""
    if cfg.fusion == "scaf":
        return replace(cfg, fusion="pw", head="simple", iterative_head=True)
    return replace(cfg, fusion="scaf", head="mr", iterative_head=False, upstream_fusion=False)


def cost_report(cfg, input_size=(96, 96), params=None):
    """Figure 2 as text: per-block FLOPs of Lite-HRNet and Lite-HRNet Plus with the same stem and
    stages, ``cfg`` being one of them (``counterpart`` gives the other); ``params`` are cfg's weights
    (only their shapes matter)."""
    other = counterpart(cfg)
    mine = cost_table(cfg, input_size, params)
    theirs = cost_table(other, input_size)
    plus_is_mine = cfg.fusion == "scaf"
    tables = [theirs, mine] if plus_is_mine else [mine, theirs]
    names = ["Lite-HRNet", "Lite-HRNet Plus"]
    names[1 if plus_is_mine else 0] += " (this)"
    text = (f"cost per block at {input_size[0]}x{input_size[1]}, Lite-HRNet vs Lite-HRNet Plus with the same "
            f"stem and stages:\n" + format_cost_table(tables, names))
    for name, (p, f) in PAPER_SIZES.items():
        if cfg == L.PRESETS[name] and tuple(input_size) == (96, 96):
            t = mine["total"]
            text += (f"\npreset {name}: paper Table 1 {p / 1e6:.2f} M params / {f / 1e6:.2f} M FLOPs; here "
                     f"{t['params'] / 1e6:.4f} M ({100 * (t['params'] / p - 1):+.1f}%) / {t['flops'] / 1e6:.2f} M "
                     f"({100 * (t['flops'] / f - 1):+.1f}%)")
    return text
