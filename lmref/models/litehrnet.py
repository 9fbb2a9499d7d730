"""Lite-HRNet and Lite-HRNet Plus, NumPy forward from exported weights.

Lite-HRNet: Yu et al., "Lite-HRNet: A Lightweight High-Resolution Network", CVPR 2021; the layer order
follows the authors' code, HRNet/Lite-HRNet ``models/backbones/litehrnet.py`` (fact sheet §4).
Lite-HRNet Plus: Kato et al., "Lite-HRNet Plus: fast and accurate facial landmark detection" (§3):
the SCAF block replaces the fusion's point-wise convolutions, the MR head replaces the output module.

State-dict keys are those of an mmpose ``TopDown`` model (``backbone.*``, ``keypoint_head.*``), so a
published Lite-HRNet checkpoint's ``state_dict`` loads unchanged (with ``upstream_fusion=True``).

    image [B, 3, H, W]
      -> stem                    [B, 32, H/4, W/4]
      -> stage s = 0, 1, 2:  transition s (new branch at half the resolution)
                             num_modules[s] x (num_blocks[s] conditional channel weighting units, fusion)
                             branches [B, C_k, H/2^(k+2), W/2^(k+2)], k < 2, 3, 4
      -> iterative head (optional) and the keypoint head -> heatmaps [B, K, H/4, W/4]
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace

import numpy as np

from .. import ops
from ..trace import scope

ARCH = "litehrnet"

FUSIONS = ("pw", "bottleneck", "group", "scaf")
HEADS = ("simple", "mr")


@dataclass
class Config:
    """Lite-HRNet / Lite-HRNet Plus.  Defaults are Lite-HRNet-18 (upstream config
    ``litehrnet_18_coco_256x192.py``) with the corrected fusion and 98 WFLW points."""

    num_points: int = 98                     # K heatmaps
    in_channels: int = 3
    # Stem (upstream extra.stem)
    stem_channels: int = 32
    stem_out_channels: int = 32
    stem_expand_ratio: float = 1.0
    # Stages (upstream extra.stages_spec); branch count of stage s is len(num_channels[s])
    num_modules: tuple = (2, 4, 2)
    num_blocks: tuple = (2, 2, 2)            # conditional channel weighting units per module
    reduce_ratios: tuple = (8, 8, 8)         # cross-resolution weighting bottleneck
    num_channels: tuple = ((40, 80), (40, 80, 160), (40, 80, 160, 320))
    # Fusion between branches at the end of every module:
    #   "pw"         Lite-HRNet's: 1x1 conv + BN + nearest upsample (low->high); (dw 3x3 s2 + BN + 1x1 + BN)
    #                steps (high->low); sum; ReLU
    #   "bottleneck" every 1x1 conv C_j -> C_i replaced by 1x1 C_j -> m + BN, 1x1 m -> C_i (+ BN),
    #                m = max(1, min(C_j, C_i) // bottleneck_ratio)   (paper Table 2a "Bottleneck")
    #   "group"      every 1x1 conv made a group conv (gcd of fusion_groups and both widths), followed by
    #                a channel shuffle (ShuffleNet)                   (paper Table 2a "Group Conv")
    #   "scaf"       the stepped channel attention fusion of Lite-HRNet Plus (paper §3.1)
    fusion: str = "pw"
    # The upstream forward counts branch 0 twice and feeds the in-place-modified branch-0 sum to the
    # other outputs (fact sheet §4.5).  False (default): the corrected fusion y_i = ReLU(sum_j f_ij(x_j)).
    # True: the upstream arithmetic exactly, for published checkpoints (conv fusions only).
    upstream_fusion: bool = False
    bottleneck_ratio: int = 4
    fusion_groups: int = 4
    # SCAF choices the paper leaves open (see scaf_fusion below):
    scaf_reduction: int = 4                  # r of the attention bottleneck C -> C/r -> C
    scaf_route: str = "stepped"              # "stepped": adjacent resolutions, top-down then bottom-up
                                             # sweep; "direct": every pair j -> i, resized in one go
    scaf_down: str = "dwconv"                # high->low resampling: "dwconv" (dw 3x3 s2 + BN per step on
                                             # the channel-mean map) or "avgpool" (adaptive average pool)
    scaf_up: str = "nearest"                 # low->high resampling: "nearest" or "bilinear"
    # Output
    iterative_head: bool = True              # upstream IterativeHead (with_head=True)
    head: str = "simple"                     # "simple": 1x1 conv on the highest-resolution branch
                                             # (TopDownSimpleHead); "mr": the multi-resolution head
    mr_mode: str = "bilinear"                # MR head upsampling: "bilinear" (align_corners below) or "nearest"
    mr_align_corners: bool = True
    bn_eps: float = 1e-5

    def __post_init__(self):
        # JSON manifests turn tuples into lists: normalise, then validate.
        self.num_modules = tuple(int(v) for v in self.num_modules)
        self.num_blocks = tuple(int(v) for v in self.num_blocks)
        self.reduce_ratios = tuple(int(v) for v in self.reduce_ratios)
        self.num_channels = tuple(tuple(int(c) for c in chans) for chans in self.num_channels)
        n = len(self.num_channels)
        if not (len(self.num_modules) == len(self.num_blocks) == len(self.reduce_ratios) == n) or n == 0:
            raise ValueError("num_modules, num_blocks, reduce_ratios and num_channels need one entry per stage")
        for s, chans in enumerate(self.num_channels):
            prev = (self.stem_out_channels,) if s == 0 else self.num_channels[s - 1]
            if len(chans) != len(prev) + 1:
                raise ValueError(f"stage {s} must add exactly one branch: {prev} -> {chans}")
            if any(c <= 0 or c % 2 for c in chans):
                raise ValueError(f"stage {s}: branch widths must be positive and even, got {chans}")
        if self.stem_channels % 2 or stem_widths(self)[0] < 1:
            raise ValueError(f"stem: stem_channels must be even and stem_out_channels larger than the part the "
                             f"second half produces, got {self.stem_channels}, {self.stem_out_channels}")
        if self.fusion not in FUSIONS:
            raise ValueError(f"fusion must be one of {FUSIONS}, got {self.fusion!r}")
        if self.head not in HEADS:
            raise ValueError(f"head must be one of {HEADS}, got {self.head!r}")
        if self.upstream_fusion and self.fusion == "scaf":
            raise ValueError("upstream_fusion reproduces the conv fusion's double count; it has no meaning for SCAF")
        if self.scaf_route not in ("stepped", "direct"):
            raise ValueError(f"scaf_route must be 'stepped' or 'direct', got {self.scaf_route!r}")
        if self.scaf_down not in ("dwconv", "avgpool"):
            raise ValueError(f"scaf_down must be 'dwconv' or 'avgpool', got {self.scaf_down!r}")
        if self.scaf_up not in ("nearest", "bilinear"):
            raise ValueError(f"scaf_up must be 'nearest' or 'bilinear', got {self.scaf_up!r}")
        if self.mr_mode not in ("nearest", "bilinear"):
            raise ValueError(f"mr_mode must be 'nearest' or 'bilinear', got {self.mr_mode!r}")
        for name in ("num_points", "in_channels", "scaf_reduction", "bottleneck_ratio", "fusion_groups"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1")

    def to_dict(self):
        return asdict(self)

    @classmethod
    def from_dict(cls, d):
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown Lite-HRNet config keys: {sorted(unknown)}")
        return cls(**d)


def stem_widths(cfg):
    """(inc, mid, linear_out) of the stem, as upstream ``Stem.__init__`` derives them:
    branch1's 1x1 conv gives ``inc`` channels, the second half expands to ``mid`` and its linear conv
    gives ``linear_out``; inc + linear_out = stem_out_channels."""
    half = cfg.stem_channels // 2
    mid = int(round(cfg.stem_channels * cfg.stem_expand_ratio))
    if cfg.stem_channels == cfg.stem_out_channels:
        return cfg.stem_out_channels - half, mid, half
    return cfg.stem_out_channels - cfg.stem_channels, mid, cfg.stem_channels


def branch_widths(cfg):
    """Widths of the branches leaving the backbone (after the iterative head if there is one).
    The iterative head maps C_{k+1} -> C_k on the way up and C_0 -> C_0 at the top, so its outputs are
    (C_0, C_0, C_1, ..., C_{S-2})."""
    chans = cfg.num_channels[-1]
    return (chans[0],) + tuple(chans[:-1]) if cfg.iterative_head else tuple(chans)


# ----------------------------------------------------------------------------------------------------
# Layer specs for the nn.Sequential parts (transitions, fuse layers).  torch_impl builds its Sequential
# from the same list, so the numeric keys (``fuse_layers.2.0.1.3.weight``) agree by construction.
#   ("conv", cin, cout, kernel, stride, groups)   bias-free conv, padding kernel // 2
#   ("bn", c)   ("relu",)   ("shuffle", groups)   ("upsample",)  (nearest, to the target size)

def _pointwise(cin, cout, cfg):
    """The fusion's 1x1 conv + BN, or its replacement in the Table 2a ablation."""
    if cfg.fusion == "bottleneck":
        m = max(1, min(cin, cout) // cfg.bottleneck_ratio)
        return [("conv", cin, m, 1, 1, 1), ("bn", m), ("conv", m, cout, 1, 1, 1), ("bn", cout)]
    if cfg.fusion == "group":
        g = int(np.gcd(np.gcd(cfg.fusion_groups, cin), cout))
        return [("conv", cin, cout, 1, 1, g), ("bn", cout)] + ([("shuffle", g)] if g > 1 else [])
    return [("conv", cin, cout, 1, 1, 1), ("bn", cout)]


def transition_spec(cin_list, cout_list, k):
    """Spec of ``transition{s}.{k}`` (upstream ``_make_transition_layer``), or None when branch k passes
    through.  Existing branch with a new width: dw 3x3 + BN, 1x1 + BN + ReLU.  New branch: from the
    previous lowest branch, one [dw 3x3 s2 + BN, 1x1 + BN + ReLU] step per missing branch (a nested
    Sequential, hence the extra index)."""
    if k < len(cin_list):
        cin, cout = cin_list[k], cout_list[k]
        if cin == cout:
            return None
        return [("conv", cin, cin, 3, 1, cin), ("bn", cin), ("conv", cin, cout, 1, 1, 1), ("bn", cout), ("relu",)]
    steps, cin = [], cin_list[-1]
    for j in range(k + 1 - len(cin_list)):
        cout = cout_list[k] if j == k - len(cin_list) else cin
        steps.append([("conv", cin, cin, 3, 2, cin), ("bn", cin), ("conv", cin, cout, 1, 1, 1), ("bn", cout), ("relu",)])
    return steps


def fuse_spec(chans, i, j, cfg):
    """Spec of ``fuse_layers.{i}.{j}`` for the conv fusions (upstream ``_make_fuse_layers``): how input
    branch j reaches output branch i.
    j > i: 1x1 conv C_j -> C_i + BN, nearest upsample to branch i's size.
    j < i: (i - j) steps of dw 3x3 s2 + BN + 1x1 + BN, ReLU after all but the last step; the last 1x1
    maps to C_i.  (A nested Sequential, one entry per step.)"""
    if j > i:
        return _pointwise(chans[j], chans[i], cfg) + [("upsample",)]
    steps = []
    for k in range(i - j):
        last = k == i - j - 1
        c = chans[j]
        step = [("conv", c, c, 3, 2, c), ("bn", c)] + _pointwise(c, chans[i] if last else c, cfg)
        steps.append(step if last else step + [("relu",)])
    return steps


def scaf_pairs(num_branches, cfg):
    """(i, j) pairs that have an SCAF unit merging branch j into branch i, in execution order.
    stepped: top-down sweep (i+1 -> i for i = S-2 .. 0), then bottom-up (i-1 -> i for i = 1 .. S-1).
    direct: every j != i, in the upstream fusion's (i, j) order."""
    S = num_branches
    if cfg.scaf_route == "stepped":
        return [(i, i + 1) for i in range(S - 2, -1, -1)] + [(i, i - 1) for i in range(1, S)]
    return [(i, j) for i in range(S) for j in range(S) if j != i]


def scaf_hidden(c, cfg):
    """Width of the attention bottleneck C -> C/r -> C."""
    return max(1, c // cfg.scaf_reduction)
