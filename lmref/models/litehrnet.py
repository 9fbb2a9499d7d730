"""Lite-HRNet Plus and Lite-HRNet: heatmaps from exported weights, in NumPy ops.

Lite-HRNet Plus: Kato et al., "Lite-HRNet Plus: fast and accurate facial landmark detection" (§3): the
SCAF block replaces the fusion's point-wise convolutions, the MR head replaces the output module.
Lite-HRNet: Yu et al., "Lite-HRNet: A Lightweight High-Resolution Network", CVPR 2021.  The layer
order follows the authors' code, HRNet/Lite-HRNet ``models/backbones/litehrnet.py`` (fact sheet §4).

State-dict keys are those of an mmpose ``TopDown`` model (``backbone.*``, ``keypoint_head.*``), so a
published Lite-HRNet checkpoint's ``state_dict`` loads unchanged (with ``upstream_fusion=True``).

    image [B, 3, H, W]
      -> stem                                                    [B, 32, H/4, W/4]
      -> stage s = 0, 1, 2: transition s (adds a branch at half the lowest resolution), then
         num_modules[s] x (num_blocks[s] conditional channel weighting units + fusion)
         branch k: [B, C_k, H/2^(k+2), W/2^(k+2)]
      -> keypoint head: the MR head (Plus), or the iterative head + a 1x1 conv on branch 0 (Lite-HRNet)
                                                                 heatmaps [B, K, H/4, W/4]

Sizes not divisible by 32 work: every stride-2 conv gives ceil(n/2) and every upsampling goes to the
target branch's size (upstream's ``nn.Upsample(scale_factor=2**k)`` is the same when sizes divide).

Reading order: the config, then Lite-HRNet Plus top-down (forward, backbone, stem, the conditional
channel weighting, SCAF, the MR head); below the first divider the ablation fusions of the paper's
Table 2a and upstream Lite-HRNet-18's conv fusion with its quirk and iterative head; below the second
the parameter shapes.  Heatmap decoding is ``lmref.ops.decode_heatmaps``; the cost per block is
``lmref.cost.litehrnet``; a faster route for the same parameters is ``lmref.fast.litehrnet``.

Choices (each a Config field, so the alternatives can be run):
* Fusion: the corrected sum is the default; ``upstream_fusion=True`` reproduces upstream's double
  count of branch 0 for published checkpoints.
* SCAF, where the paper is silent: a unit for every pair of branches ("pairwise"; non-adjacent
  high->low merges pass through stride-2 steps, as Lite-HRNet's fusion does), high->low downsampling
  by Lite-HRNet's own dw 3x3 s2 + BN steps with the 1x1 convs removed ("dwconv"), nearest upsampling
  low->high, r = 4, the GAP of the target branch shared by its units, ReLU after the sum as in the conv
  fusion.  With these the fusion loses 82-88 % of its FLOPs (the paper: "approximately 80 %") and the
  presets land within 6 % of the paper's two sizes; "cascade" routing and "avgpool" downsampling are
  the alternatives.
* MR head: bilinear upsampling with align_corners=True (as the iterative head), no iterative head in
  front (the paper's "1.87 times the Lite-HRNet output module" is sum_k 2^-k over four branches of
  doubling width: 1 + 1/2 + 1/4 + 1/8 = 1.875, i.e. 1x1 convs on the stage outputs themselves).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace

import numpy as np

from .. import ops
from ..ops._check import check_array
from ..trace import replaceable, scope

ARCH = "litehrnet"

FUSIONS = ("pw", "bottleneck", "group", "scaf")
HEADS = ("simple", "mr")


def stem_widths(cfg):
    """(inc, mid, lin) of the stem, as upstream ``Stem.__init__`` derives them: branch1's 1x1 conv
    gives ``inc`` channels, the second half expands to ``mid`` and its linear conv gives ``lin``;
    inc + lin = stem_out_channels."""
    half = cfg.stem_channels // 2
    mid = int(round(cfg.stem_channels * cfg.stem_expand_ratio))
    if cfg.stem_channels == cfg.stem_out_channels:
        return cfg.stem_out_channels - half, mid, half
    return cfg.stem_out_channels - cfg.stem_channels, mid, cfg.stem_channels


@dataclass
class Config:
    """Lite-HRNet / Lite-HRNet Plus.  The defaults are Lite-HRNet-18 (upstream
    ``litehrnet_18_coco_256x192.py``) with the corrected fusion and 98 (WFLW) heatmaps; ``PRESETS``
    holds Lite-HRNet-18/-30 and the two Lite-HRNet Plus sizes."""

    num_points: int = 98                     # K heatmaps
    in_channels: int = 3
    # Stem (upstream extra.stem)
    stem_channels: int = 32
    stem_out_channels: int = 32
    stem_expand_ratio: float = 1.0
    # Stages (upstream extra.stages_spec); stage s has len(num_channels[s]) branches
    num_modules: tuple = (2, 4, 2)
    num_blocks: tuple = (2, 2, 2)            # conditional channel weighting units per module
    reduce_ratios: tuple = (8, 8, 8)         # cross-resolution weighting bottleneck
    num_channels: tuple = ((40, 80), (40, 80, 160), (40, 80, 160, 320))
    # The fusion at the end of every module (see fuse_spec and scaf_fusion):
    #   "pw"         Lite-HRNet's: 1x1 conv + BN + nearest upsample (low->high); steps of
    #                dw 3x3 s2 + BN + 1x1 conv + BN (high->low); sum; ReLU
    #   "bottleneck" each 1x1 conv C_j -> C_i becomes 1x1 C_j -> m + BN, 1x1 m -> C_i + BN with
    #                m = max(1, min(C_j, C_i) // bottleneck_ratio), no activation in between
    #                (paper Table 2a "Bottleneck", MobileNetV2's linear bottleneck)
    #   "group"      each 1x1 conv becomes a group conv with gcd(fusion_groups, C_j, C_i) groups,
    #                followed by a channel shuffle (paper Table 2a "Group Conv", ShuffleNet)
    #   "scaf"       the stepped channel attention fusion of Lite-HRNet Plus (paper §3.1)
    fusion: str = "pw"
    # Upstream's forward counts branch 0 twice and feeds the in-place-modified branch-0 sum to the other
    # outputs (fact sheet §4.5; HRNet/Lite-HRNet issues #14, #53, #64).  DEFAULT False: the corrected
    # fusion y_i = ReLU(sum_j f_ij(x_j)).  True: upstream's arithmetic exactly, so published
    # checkpoints (trained with it) give their published outputs.  Conv fusions only.
    upstream_fusion: bool = False
    bottleneck_ratio: int = 4
    fusion_groups: int = 4
    # SCAF choices the paper leaves open (CHOSEN defaults, see ScafUnit / scaf_fusion):
    scaf_reduction: int = 4                  # r: attention bottleneck C -> C/r -> C (2 C^2 / r MACs)
    scaf_route: str = "pairwise"             # "pairwise": a unit for every pair j -> i, as the conv
                                             #   fusion; low->high one upsampling by 2^(j-i), high->low
                                             #   (i-j) stride-2 steps ("stepped")
                                             # "cascade": adjacent pairs only, a top-down then a
                                             #   bottom-up sweep, branches updated in turn
    scaf_down: str = "dwconv"                # high->low: "dwconv" = Lite-HRNet's dw 3x3 s2 + BN steps on
                                             #   x_j with the 1x1 convs removed, then the channel mean;
                                             #   "avgpool" = channel mean, then adaptive average pool
    scaf_up: str = "nearest"                 # low->high upsampling of the channel-mean map:
                                             #   "nearest" (as the conv fusion) or "bilinear" (corners)
    # Output
    iterative_head: bool = True              # upstream IterativeHead (extra.with_head)
    head: str = "simple"                     # "simple": 1x1 conv (bias) on the highest-resolution branch
                                             #   (mmpose TopDownSimpleHead, no deconv); "mr": MR head
    mr_mode: str = "bilinear"                # MR head upsampling: "bilinear" or "nearest"
    mr_align_corners: bool = True            # CHOSEN: as Lite-HRNet's IterativeHead upsamples
    bn_eps: float = 1e-5

    def __post_init__(self):
        # JSON manifests turn tuples into lists: normalise, then validate.
        self.num_modules = tuple(int(v) for v in self.num_modules)
        self.num_blocks = tuple(int(v) for v in self.num_blocks)
        self.reduce_ratios = tuple(int(v) for v in self.reduce_ratios)
        self.num_channels = tuple(tuple(int(c) for c in chans) for chans in self.num_channels)
        n = len(self.num_channels)
        if n == 0 or not (len(self.num_modules) == len(self.num_blocks) == len(self.reduce_ratios) == n):
            raise ValueError("num_modules, num_blocks, reduce_ratios and num_channels need one entry per stage")
        if min(self.num_modules) < 1 or min(self.num_blocks) < 1 or min(self.reduce_ratios) < 1:
            raise ValueError("num_modules, num_blocks and reduce_ratios must be >= 1")
        for s, chans in enumerate(self.num_channels):
            prev = (self.stem_out_channels,) if s == 0 else self.num_channels[s - 1]
            if len(chans) != len(prev) + 1:
                raise ValueError(f"num_channels: stage {s} must add exactly one branch, {prev} -> {chans}")
            if any(c <= 0 or c % 2 for c in chans):
                raise ValueError(f"num_channels: stage {s} widths must be positive and even, got {chans}")
        if self.stem_channels < 2 or self.stem_channels % 2 or stem_widths(self)[0] < 1:
            raise ValueError(f"stem: stem_channels must be even and stem_out_channels larger than what the "
                             f"second half gives, got {self.stem_channels}, {self.stem_out_channels}")
        for name, value, allowed in (("fusion", self.fusion, FUSIONS), ("head", self.head, HEADS),
                                     ("scaf_route", self.scaf_route, ("pairwise", "cascade")),
                                     ("scaf_down", self.scaf_down, ("dwconv", "avgpool")),
                                     ("scaf_up", self.scaf_up, ("nearest", "bilinear")),
                                     ("mr_mode", self.mr_mode, ("nearest", "bilinear"))):
            if value not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {value!r}")
        if self.upstream_fusion and self.fusion == "scaf":
            raise ValueError("upstream_fusion reproduces the conv fusion's double count; it has no meaning for SCAF")
        for name in ("num_points", "in_channels", "scaf_reduction", "bottleneck_ratio", "fusion_groups"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")

    def to_dict(self):
        return asdict(self)

    @classmethod
    def from_dict(cls, d):
        if not isinstance(d, dict):
            raise ValueError(f"Lite-HRNet config: expected a dict, got {type(d).__name__}")
        unknown = set(d) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"unknown Lite-HRNet config keys: {sorted(unknown)}")
        return cls(**d)


def _plus(**kw):
    """Lite-HRNet Plus: SCAF fusion, MR head, no iterative head."""
    return Config(fusion="scaf", head="mr", iterative_head=False, **kw)


# The Lite-HRNet Plus paper gives sizes, not configurations.  These two land on its sizes (98 points,
# 96x96, FLOP convention in lmref.cost.litehrnet): Lite-HRNet-30's depth and widths for the
# 1.51 M / 30.27 MFLOPs model, Lite-HRNet-18's depth at 24..192 channels with a 16-channel stem for the
# 0.37 M / 10.25 MFLOPs one (both measured in tests/test_litehrnet.py).
PRESETS = {
    "litehrnet_18": Config(),
    "litehrnet_30": Config(num_modules=(3, 8, 3)),
    "litehrnet_plus_30m": _plus(num_modules=(3, 8, 3)),
    "litehrnet_plus_10m": _plus(stem_channels=16, stem_out_channels=16,
                                num_channels=((24, 48), (24, 48, 96), (24, 48, 96, 192))),
}


def preset(name, **overrides):
    """A copy of ``PRESETS[name]`` with fields replaced, e.g. ``preset("litehrnet_18", num_points=17,
    upstream_fusion=True)`` for the published COCO checkpoint."""
    if name not in PRESETS:
        raise KeyError(f"unknown Lite-HRNet preset {name!r}; known: {sorted(PRESETS)}")
    return replace(PRESETS[name], **overrides)


def branch_widths(cfg):
    """Widths of the branches the keypoint head reads.  The iterative head maps C_{k+1} -> C_k on the
    way up and C_0 -> C_0 at the top, so after it they are (C_0, C_0, C_1, ..., C_{S-2})."""
    chans = cfg.num_channels[-1]
    return (chans[0],) + tuple(chans[:-1]) if cfg.iterative_head else tuple(chans)


# ----------------------------------------------------------------------------------------------------
# Lite-HRNet Plus, top-down


def forward(params, x, cfg):
    """Heatmaps [B, K, ceil(H/4), ceil(W/4)] from images [B, in_channels, H, W] (raw head output: train
    with MSE on it, or BCE with it as logits)."""
    check_array(x, "x", ndim=4)
    if x.shape[1] != cfg.in_channels:
        raise ValueError(f"x: expected {cfg.in_channels} input channels, got shape {x.shape}")
    if min(x.shape[2:]) < 8:
        raise ValueError(f"x: input {x.shape[2:]} too small for the stride-4 stem and three halvings")
    with scope("backbone"):
        ys = backbone(params["backbone"], x, cfg)
    with scope("keypoint_head"):
        return keypoint_head(ys, params["keypoint_head"], cfg)


def backbone(params, x, cfg):
    """[B, 3, H, W] -> list of branch maps, highest resolution first (after the iterative head if any)."""
    with scope("stem"):
        ys = [stem(x, params["stem"], cfg)]                                  # [B, 32, H/4, W/4]
    prev = (cfg.stem_out_channels,)
    for s, chans in enumerate(cfg.num_channels):
        xs = []
        for k in range(len(chans)):
            spec = transition_spec(prev, chans, k)
            if spec is None:
                xs.append(ys[k])
                continue
            with scope(f"transition{s}.{k}"):
                p = params[f"transition{s}"][str(k)]
                if k < len(prev):
                    xs.append(sequential(ys[k], p, spec, eps=cfg.bn_eps))
                else:                                                         # new branch at half size
                    xs.append(steps(ys[-1], p, spec, cfg.bn_eps))
        for m in range(cfg.num_modules[s]):
            with scope(f"stage{s}.{m}"):
                xs = lite_hr_module(xs, params[f"stage{s}"][str(m)], cfg, s)
        ys, prev = xs, chans
    if cfg.iterative_head:
        with scope("head_layer"):
            ys = iterative_head(ys, params["head_layer"], cfg.bn_eps)
    return ys


def lite_hr_module(xs, p, cfg, s):
    """num_blocks[s] conditional channel weighting units, then the fusion."""
    for blk in range(cfg.num_blocks[s]):
        with scope(f"layers.{blk}"):
            xs = conditional_channel_weighting(xs, p["layers"][str(blk)], cfg.bn_eps)
    with scope("fuse_layers"):
        if cfg.fusion == "scaf":
            return scaf_fusion(xs, p["fuse_layers"], cfg)
        return conv_fusion(xs, p["fuse_layers"], cfg)


def stem(x, p, cfg):
    """3x3 s2 conv + BN + ReLU; halves: (dw 3x3 s2 + BN, 1x1 + BN + ReLU) and (1x1 + BN + ReLU,
    dw 3x3 s2 + BN, 1x1 + BN + ReLU); concat; channel shuffle (2).  [B, 3, H, W] -> [B, C, H/4, W/4]"""
    eps = cfg.bn_eps
    with scope("conv1"):
        x = conv_bn(x, p["conv1"], stride=2, act="relu", eps=eps)             # [B, C, H/2, W/2]
    half = x.shape[1] // 2
    x1, x2 = x[:, :half], x[:, half:]
    with scope("branch1.0"):
        x1 = conv_bn(x1, p["branch1"]["0"], stride=2, groups=half, eps=eps)  # [B, C/2, H/4, W/4]
    with scope("branch1.1"):
        x1 = conv_bn(x1, p["branch1"]["1"], act="relu", eps=eps)              # [B, inc, H/4, W/4]
    with scope("expand_conv"):
        x2 = conv_bn(x2, p["expand_conv"], act="relu", eps=eps)               # [B, mid, H/2, W/2]
    with scope("depthwise_conv"):
        x2 = conv_bn(x2, p["depthwise_conv"], stride=2, groups=x2.shape[1], eps=eps)   # [B, mid, H/4, W/4]
    with scope("linear_conv"):
        x2 = conv_bn(x2, p["linear_conv"], act="relu", eps=eps)               # [B, lin, H/4, W/4]
    return ops.channel_shuffle(np.concatenate([x1, x2], axis=1), 2)           # [B, C_out, H/4, W/4]


@replaceable
def conditional_channel_weighting(xs, p, eps):
    """Halves A_k, B_k of every branch; B goes through cross-resolution weighting, dw 3x3 + BN and
    spatial weighting; concat [A_k, B_k]; channel shuffle (2).  Shapes unchanged."""
    a = [s[:, :s.shape[1] // 2] for s in xs]
    b = [s[:, s.shape[1] // 2:] for s in xs]
    with scope("cross_resolution_weighting"):
        b = cross_resolution_weighting(b, p["cross_resolution_weighting"], eps)
    for k in range(len(b)):
        with scope(f"depthwise_convs.{k}"):
            b[k] = conv_bn(b[k], p["depthwise_convs"][str(k)], groups=b[k].shape[1], eps=eps)
        with scope(f"spatial_weighting.{k}"):
            b[k] = spatial_weighting(b[k], p["spatial_weighting"][str(k)])
    out = []
    for k in range(len(xs)):
        with scope(f"shuffle{k}"):
            out.append(ops.channel_shuffle(np.concatenate([a[k], b[k]], axis=1), 2))
    return out


def cross_resolution_weighting(xs, p, eps):
    """Pool every branch to the smallest size, concat (sum C_k), 1x1 + BN + ReLU to sum/r, 1x1 + BN +
    Sigmoid back, split, nearest-upsample each weight map to its branch, multiply."""
    size = xs[-1].shape[2:]
    pooled = []
    for k, s in enumerate(xs[:-1]):
        with scope(f"pool{k}"):
            pooled.append(ops.adaptive_avg_pool2d(s, size))                 # [B, C_k, h, w]
    w = np.concatenate(pooled + [xs[-1]], axis=1)                           # [B, sum C_k, h, w]
    with scope("conv1"):
        w = conv_bn(w, p["conv1"], act="relu", eps=eps)                     # [B, sum/r, h, w]
    with scope("conv2"):
        w = conv_bn(w, p["conv2"], act="sigmoid", eps=eps)                  # [B, sum C_k, h, w]
    out, start = [], 0
    for k, s in enumerate(xs):
        a = w[:, start:start + s.shape[1]]
        start += s.shape[1]
        with scope(f"up{k}"):
            out.append(s * ops.interpolate(a, size=s.shape[2:], mode="nearest"))   # [B, C_k, H_k, W_k]
    return out


def spatial_weighting(x, p):
    """SE: GAP, 1x1 (bias) C -> C/4 + ReLU, 1x1 (bias) -> C + Sigmoid, channel-wise product."""
    with scope("pool"):
        w = ops.adaptive_avg_pool2d(x, 1)                                   # [B, C, 1, 1]
    with scope("conv1"):
        w = conv_act(w, p["conv1"], "relu")                                 # [B, C/4, 1, 1]
    with scope("conv2"):
        w = conv_act(w, p["conv2"], "sigmoid")                              # [B, C, 1, 1]
    return x * w


@replaceable
def scaf_fusion(xs, p, cfg):
    """Stepped channel attention fusion, then ReLU as the conv fusion has.
    pairwise: y_i = x_i + sum_{j != i} unit_ij(GAP(x_i), x_j), all from the fusion's inputs (GAP once
    per i).  cascade: the sweeps of ``scaf_pairs`` update the branches in turn,
    x_i <- x_i + unit_ij(GAP(x_i), x_j), so branch i sees every other branch through its neighbours."""
    xs = list(xs)
    sizes = [x.shape[2:] for x in xs]
    S = len(xs)
    if cfg.scaf_route == "cascade":
        for i, j in scaf_pairs(S, cfg):
            with scope(f"{i}.{j}"):
                xs[i] = xs[i] + scaf_unit(gap(xs[i]), xs[j], sizes[i], p[str(i)][str(j)], max(0, i - j), cfg)
        return [ops.relu(x) for x in xs]
    out = []
    for i in range(S):
        with scope(str(i)):
            g = gap(xs[i])                                                    # [B, C_i]
        y = xs[i]
        for j in range(S):
            if j != i:
                with scope(f"{i}.{j}"):
                    y = y + scaf_unit(g, xs[j], sizes[i], p[str(i)][str(j)], max(0, i - j), cfg)
        out.append(ops.relu(y))
    return out


def scaf_unit(g_i, x_j, size_i, p, down_steps, cfg):
    """One SCAF merge of branch j into branch i (Lite-HRNet Plus Fig. 3); returns the map added to x_i.

        a_i   = sigmoid(fc2(ReLU(fc1(g_i))))     g_i = GAP(x_i) [B, C_i]    (2 C_i^2 / r MACs)
        m_j   = mean over channels of x_j        [B, 1, h_j, w_j]
        new   = resize(m_j) * a_i                [B, C_i, h_i, w_i]

    Fig. 3 multiplies before resizing; resizing the one-channel map first gives the same numbers
    (both resizes are linear per channel) at a cost independent of C_i (``scaf_map``)."""
    m = scaf_map(x_j, size_i, p, down_steps, cfg)                             # [B, 1, h_i, w_i]
    with scope("fc1"):
        a = ops.relu(ops.linear(g_i, p["fc1"]["weight"], p["fc1"]["bias"]))  # [B, C_i/r]
    with scope("fc2"):
        a = ops.sigmoid(ops.linear(a, p["fc2"]["weight"], p["fc2"]["bias"]))  # [B, C_i]
    return m * a[:, :, None, None]                                            # [B, C_i, h_i, w_i]


def scaf_map(x_j, size_i, p, down_steps, cfg):
    """The spatial map of SCAF's merge j -> i: m_j, the mean over channels of x_j, at branch i's size
    [B, 1, h_i, w_i].  high -> low (j < i), scaf_down="dwconv": (i - j) steps of Lite-HRNet's dw 3x3 s2
    + BN on x_j, then the mean; otherwise the mean resized (``scaf_resize``)."""
    if down_steps and cfg.scaf_down == "dwconv":
        with scope("down"):
            x_j = steps(x_j, p["down"], scaf_down_spec(x_j.shape[1], down_steps), cfg.bn_eps)   # [B, C_j, h_i, w_i]
        return channel_mean(x_j)                                              # [B, 1, h_i, w_i]
    return scaf_resize(channel_mean(x_j), size_i, down_steps, cfg)


def scaf_resize(m, size_i, down_steps, cfg):
    """A channel-mean map m [B, 1, h_j, w_j] at branch i's size: low -> high (no down steps) nearest
    (or bilinear) upsampling; high -> low with scaf_down="avgpool" adaptive average pooling."""
    if not down_steps:
        align = True if cfg.scaf_up == "bilinear" else None
        return ops.interpolate(m, size=size_i, mode=cfg.scaf_up, align_corners=align)   # [B, 1, h_i, w_i]
    return ops.adaptive_avg_pool2d(m, size_i)                                 # [B, 1, h_i, w_i]


def channel_mean(x):
    """Average over channels, [B, C, H, W] -> [B, 1, H, W]: an adaptive average pool of each image's
    [C, H*W] matrix to one row (lmref.ops has no reduction op)."""
    B, C, H, W = x.shape
    m = ops.adaptive_avg_pool2d(x.reshape(B, 1, C, H * W), (1, H * W))       # [B, 1, 1, H*W]
    return m.reshape(B, 1, H, W)


def gap(x):
    """Global average pool, [B, C, H, W] -> [B, C]."""
    return ops.adaptive_avg_pool2d(x, 1)[:, :, 0, 0]


def keypoint_head(ys, p, cfg):
    """simple: 1x1 conv on branch 0.  mr (Lite-HRNet Plus §3.2): a 1x1 conv per branch to K heatmaps,
    upsampled to branch 0's size, summed.  -> [B, K, H/4, W/4]"""
    if cfg.head == "simple":
        with scope("final_layer"):
            return ops.conv2d(ys[0], p["final_layer"]["weight"], p["final_layer"]["bias"])
    size = ys[0].shape[2:]
    align = cfg.mr_align_corners if cfg.mr_mode == "bilinear" else None
    out = None
    for k, y in enumerate(ys):
        with scope(f"final_layers.{k}"):
            q = p["final_layers"][str(k)]
            h = ops.conv2d(y, q["weight"], q["bias"])                         # [B, K, H_k, W_k]
            if k > 0:
                h = ops.interpolate(h, size=size, mode=cfg.mr_mode, align_corners=align)   # [B, K, H/4, W/4]
        out = h if out is None else out + h
    return out


# ----------------------------------------------------------------------------------------------------
# Layers


@replaceable
def conv_bn(x, p, stride=1, groups=1, act=None, eps=1e-5):
    """mmcv ConvModule: conv (padding k // 2, no bias) -> BN -> activation.
    [B, Cin, H, W] -> [B, Cout, H/stride, W/stride]"""
    w = p["conv"]["weight"]
    with scope("conv"):
        x = ops.conv2d(x, w, None, stride=stride, padding=w.shape[2] // 2, groups=groups)
    with scope("bn"):
        bn = p["bn"]
        x = ops.batch_norm(x, bn["running_mean"], bn["running_var"], bn["weight"], bn["bias"], eps=eps)
    return x if act is None else getattr(ops, act)(x)


def conv_act(x, p, act):
    """mmcv ConvModule without a norm (SpatialWeighting's): 1x1 conv with a bias -> activation."""
    with scope("conv"):
        x = ops.conv2d(x, p["conv"]["weight"], p["conv"]["bias"])
    return getattr(ops, act)(x)


@replaceable
def sequential(x, p, spec, size=None, eps=1e-5):
    """Run a layer spec (see ``transition_spec``) with its params ``p["0"], p["1"], ...``."""
    for idx, item in enumerate(spec):
        with scope(str(idx)):
            kind = item[0]
            if kind == "conv":
                _, _, _, k, stride, groups = item
                q = p[str(idx)]                       # upstream's convs have no bias (lmref.fast's folded ones do)
                x = ops.conv2d(x, q["weight"], q.get("bias"), stride=stride, padding=k // 2, groups=groups)
            elif kind == "bn":
                bn = p[str(idx)]
                x = ops.batch_norm(x, bn["running_mean"], bn["running_var"], bn["weight"], bn["bias"], eps=eps)
            elif kind == "relu":
                x = ops.relu(x)
            elif kind == "shuffle":
                x = ops.channel_shuffle(x, item[1])
            elif kind == "upsample":
                x = ops.interpolate(x, size=size, mode="nearest")
    return x


def steps(x, p, spec_steps, eps):
    """A list of specs run one after the other (upstream's nested Sequential)."""
    for k, spec in enumerate(spec_steps):
        with scope(str(k)):
            x = sequential(x, p[str(k)], spec, eps=eps)
    return x


# ----------------------------------------------------------------------------------------------------
# Layer specs for the nn.Sequential parts (transitions, conv fuse layers, SCAF downsampling).
# torch_impl builds its Sequential from the same list, so numeric keys (``fuse_layers.2.0.1.3.weight``)
# agree by construction.  Items:
#   ("conv", cin, cout, kernel, stride, groups)    bias-free, padding kernel // 2
#   ("bn", c)   ("relu",)   ("shuffle", groups)   ("upsample",)   (nearest, to the target branch's size)


def transition_spec(cin_list, cout_list, k):
    """``transition{s}.{k}`` (upstream ``_make_transition_layer``), None when branch k passes through.
    Existing branch with a new width: dw 3x3 + BN, 1x1 + BN + ReLU.  New branch, from the previous
    lowest branch: one step [dw 3x3 s2 + BN, 1x1 + BN + ReLU] per missing branch (a list of steps, a
    nested Sequential upstream)."""
    if k < len(cin_list):
        cin, cout = cin_list[k], cout_list[k]
        if cin == cout:
            return None
        return [("conv", cin, cin, 3, 1, cin), ("bn", cin), ("conv", cin, cout, 1, 1, 1), ("bn", cout), ("relu",)]
    steps, cin = [], cin_list[-1]
    for j in range(k + 1 - len(cin_list)):
        cout = cout_list[k] if j == k - len(cin_list) else cin
        steps.append([("conv", cin, cin, 3, 2, cin), ("bn", cin), ("conv", cin, cout, 1, 1, 1), ("bn", cout),
                      ("relu",)])
    return steps


def scaf_pairs(num_branches, cfg):
    """(i, j) pairs with an SCAF unit merging branch j into branch i, in execution order.
    pairwise: every j != i, in the conv fusion's (i, j) order.
    cascade: top-down sweep (i+1 -> i for i = S-2 .. 0), then bottom-up (i-1 -> i for i = 1 .. S-1)."""
    S = num_branches
    if cfg.scaf_route == "cascade":
        return [(i, i + 1) for i in range(S - 2, -1, -1)] + [(i, i - 1) for i in range(1, S)]
    return [(i, j) for i in range(S) for j in range(S) if j != i]


def scaf_hidden(c, cfg):
    """Width of the SCAF attention bottleneck C -> C/r -> C."""
    return max(1, c // cfg.scaf_reduction)


def scaf_down_spec(c, steps):
    """``fuse_layers.{i}.{j}.down`` of SCAF with scaf_down="dwconv": Lite-HRNet's high->low steps
    without their 1x1 convs -- dw 3x3 s2 + BN on the C_j-channel source, ReLU between steps."""
    return [[("conv", c, c, 3, 2, c), ("bn", c)] + ([("relu",)] if k < steps - 1 else []) for k in range(steps)]


# ====================================================================================================
# Below: Lite-HRNet's own fusion and head -- the point-wise conv fusion with its Table 2a ablations
# (bottleneck, group conv), upstream's double count of branch 0 (``upstream_fusion``), and the
# iterative head -- which Lite-HRNet Plus replaces with SCAF and the MR head.
# ====================================================================================================


def _pointwise(cin, cout, cfg):
    """The fusion's 1x1 conv + BN, or its Table 2a replacement."""
    if cfg.fusion == "bottleneck":
        m = max(1, min(cin, cout) // cfg.bottleneck_ratio)
        return [("conv", cin, m, 1, 1, 1), ("bn", m), ("conv", m, cout, 1, 1, 1), ("bn", cout)]
    if cfg.fusion == "group":
        g = int(np.gcd(np.gcd(cfg.fusion_groups, cin), cout))
        return [("conv", cin, cout, 1, 1, g), ("bn", cout)] + ([("shuffle", g)] if g > 1 else [])
    return [("conv", cin, cout, 1, 1, 1), ("bn", cout)]


def fuse_spec(chans, i, j, cfg):
    """``fuse_layers.{i}.{j}`` of a conv fusion (upstream ``_make_fuse_layers``): input branch j to
    output branch i.  j > i: 1x1 C_j -> C_i + BN, nearest upsample to branch i's size.  j < i: (i - j)
    steps of [dw 3x3 s2 + BN, 1x1 + BN], ReLU after all but the last, whose 1x1 maps to C_i (a list
    of steps)."""
    if j > i:
        return _pointwise(chans[j], chans[i], cfg) + [("upsample",)]
    steps, c = [], chans[j]
    for k in range(i - j):
        last = k == i - j - 1
        step = [("conv", c, c, 3, 2, c), ("bn", c)] + _pointwise(c, chans[i] if last else c, cfg)
        steps.append(step if last else step + [("relu",)])
    return steps


def conv_fusion(xs, p, cfg):
    """Output i = ReLU(sum_j f_ij(x_j)), f_ii the identity (``fuse_spec``).

    upstream_fusion=True is HRNet/Lite-HRNet ``LiteHRModule.forward`` exactly: the sum of output 0
    starts from x_0 and adds x_0 again, in place, so that x_0 itself becomes
    S_0 = 2 x_0 + sum_{j>0} f_0j(x_j); every later output starts from f_i0(S_0) and adds it again."""
    chans = [x.shape[1] for x in xs]
    sizes = [x.shape[2:] for x in xs]
    out = []

    def f(i, j, x):
        with scope(f"{i}.{j}"):
            if j > i:
                return sequential(x, p[str(i)][str(j)], fuse_spec(chans, i, j, cfg), size=sizes[i], eps=cfg.bn_eps)
            return steps(x, p[str(i)][str(j)], fuse_spec(chans, i, j, cfg), cfg.bn_eps)

    for i in range(len(xs)):
        y = xs[0] if i == 0 else f(i, 0, xs[0])
        if cfg.upstream_fusion:
            y = y + y                                                         # branch 0 counted twice
        for j in range(1, len(xs)):
            y = y + (xs[j] if j == i else f(i, j, xs[j]))
        if cfg.upstream_fusion and i == 0:
            xs = [y] + list(xs[1:])                                           # the in-place alias of x_0
        out.append(ops.relu(y))
    return out


def iterative_head(xs, p, eps):
    """From the lowest resolution up: add the bilinearly upsampled (align_corners=True) previous output,
    then dw 3x3 + BN, 1x1 + BN + ReLU (C_k -> C_{k-1}; C_0 -> C_0 at the top).  Highest first."""
    ys, last = [], None
    for i, s in enumerate(xs[::-1]):
        with scope(f"projects.{i}"):
            if last is not None:
                s = s + ops.interpolate(last, size=s.shape[2:], mode="bilinear", align_corners=True)
            q = p["projects"][str(i)]
            with scope("depthwise_conv"):
                s = conv_bn(s, q["depthwise_conv"], groups=s.shape[1], eps=eps)
            with scope("pointwise_conv"):
                last = conv_bn(s, q["pointwise_conv"], act="relu", eps=eps)
        ys.append(last)
    return ys[::-1]


# ====================================================================================================
# Parameter shapes (torch_impl's state-dict keys)
# ====================================================================================================


def _bn(prefix, c):
    return {f"{prefix}.{k}": (c,) for k in ("weight", "bias", "running_mean", "running_var")}


def _conv_module(prefix, cin, cout, k, groups=1):
    """mmcv ConvModule with BN: ``conv.weight`` (no bias), ``bn.*``."""
    return {f"{prefix}.conv.weight": (cout, cin // groups, k, k), **_bn(f"{prefix}.bn", cout)}


def _spec_shapes(prefix, spec):
    shapes = {}
    for idx, item in enumerate(spec):
        if item[0] == "conv":
            _, cin, cout, k, _, g = item
            shapes[f"{prefix}.{idx}.weight"] = (cout, cin // g, k, k)
        elif item[0] == "bn":
            shapes.update(_bn(f"{prefix}.{idx}", item[1]))
    return shapes


def _steps_shapes(prefix, steps):
    shapes = {}
    for k, step in enumerate(steps):
        shapes.update(_spec_shapes(f"{prefix}.{k}", step))
    return shapes


def param_shapes(cfg):
    """{state-dict key: shape} of torch_impl's LiteHRNet (BatchNorm statistics included)."""
    b = "backbone"
    c, (inc, mid, lin) = cfg.stem_channels, stem_widths(cfg)
    half = c // 2
    shapes = {**_conv_module(f"{b}.stem.conv1", cfg.in_channels, c, 3),
              **_conv_module(f"{b}.stem.branch1.0", half, half, 3, groups=half),
              **_conv_module(f"{b}.stem.branch1.1", half, inc, 1),
              **_conv_module(f"{b}.stem.expand_conv", half, mid, 1),
              **_conv_module(f"{b}.stem.depthwise_conv", mid, mid, 3, groups=mid),
              **_conv_module(f"{b}.stem.linear_conv", mid, lin, 1)}
    prev = (cfg.stem_out_channels,)
    for s, chans in enumerate(cfg.num_channels):
        for k in range(len(chans)):
            spec = transition_spec(prev, chans, k)
            if spec is not None:
                p = f"{b}.transition{s}.{k}"
                shapes.update(_spec_shapes(p, spec) if k < len(prev) else _steps_shapes(p, spec))
        half_chans = [ch // 2 for ch in chans]
        total = sum(half_chans)
        for m in range(cfg.num_modules[s]):
            mod = f"{b}.stage{s}.{m}"
            for blk in range(cfg.num_blocks[s]):
                p = f"{mod}.layers.{blk}"
                r = int(total / cfg.reduce_ratios[s])
                shapes.update(_conv_module(f"{p}.cross_resolution_weighting.conv1", total, r, 1))
                shapes.update(_conv_module(f"{p}.cross_resolution_weighting.conv2", r, total, 1))
                for k, hc in enumerate(half_chans):
                    shapes.update(_conv_module(f"{p}.depthwise_convs.{k}", hc, hc, 3, groups=hc))
                    q, r4 = f"{p}.spatial_weighting.{k}", int(hc / 4)
                    shapes.update({f"{q}.conv1.conv.weight": (r4, hc, 1, 1), f"{q}.conv1.conv.bias": (r4,),
                                   f"{q}.conv2.conv.weight": (hc, r4, 1, 1), f"{q}.conv2.conv.bias": (hc,)})
            shapes.update(_fusion_shapes(f"{mod}.fuse_layers", chans, cfg))
        prev = chans
    if cfg.iterative_head:
        rev = cfg.num_channels[-1][::-1]
        for i, cin in enumerate(rev):
            cout = rev[min(i + 1, len(rev) - 1)]
            p = f"{b}.head_layer.projects.{i}"
            shapes.update(_conv_module(f"{p}.depthwise_conv", cin, cin, 3, groups=cin))
            shapes.update(_conv_module(f"{p}.pointwise_conv", cin, cout, 1))
    widths = branch_widths(cfg)
    heads = ["keypoint_head.final_layer"] if cfg.head == "simple" else \
        [f"keypoint_head.final_layers.{k}" for k in range(len(widths))]
    for name, cin in zip(heads, widths):
        shapes[f"{name}.weight"] = (cfg.num_points, cin, 1, 1)
        shapes[f"{name}.bias"] = (cfg.num_points,)
    return shapes


def _fusion_shapes(prefix, chans, cfg):
    shapes = {}
    if cfg.fusion == "scaf":
        for i, j in scaf_pairs(len(chans), cfg):
            p, hid = f"{prefix}.{i}.{j}", scaf_hidden(chans[i], cfg)
            shapes.update({f"{p}.fc1.weight": (hid, chans[i]), f"{p}.fc1.bias": (hid,),
                           f"{p}.fc2.weight": (chans[i], hid), f"{p}.fc2.bias": (chans[i],)})
            if j < i and cfg.scaf_down == "dwconv":
                shapes.update(_steps_shapes(f"{p}.down", scaf_down_spec(chans[j], i - j)))
        return shapes
    for i in range(len(chans)):
        for j in range(len(chans)):
            if j > i:
                shapes.update(_spec_shapes(f"{prefix}.{i}.{j}", fuse_spec(chans, i, j, cfg)))
            elif j < i:
                shapes.update(_steps_shapes(f"{prefix}.{i}.{j}", fuse_spec(chans, i, j, cfg)))
    return shapes
