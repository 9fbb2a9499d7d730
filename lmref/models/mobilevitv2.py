"""MobileViT-v2 backbone (Mehta & Rastegari 2022, "Separable Self-attention for Mobile Vision
Transformers"), as timm builds ``mobilevitv2_050 / _075 / _100`` — without the classifier.

State-dict keys and shapes are timm's, so ImageNet weights published for those models load with no
renaming (drop ``head.fc.*``).  The network, for width multiplier m (timm ``_mobilevitv2_cfg``):

    stem       3x3 conv s2 (no bias) + BN + SiLU                         C0 = int(32m)
    stages.0   MV2 block C0 -> C1                                          C1..C5 = int(m*(64,128,256,384,512))
    stages.1   MV2 s2 C1 -> C2, MV2 C2 -> C2 (residual)
    stages.2   MV2 s2 C2 -> C3, MobileViTv2 block (d = C3/2, L = 2)
    stages.3   MV2 s2 C3 -> C4, MobileViTv2 block (d = C4/2, L = 4)
    stages.4   MV2 s2 C4 -> C5, MobileViTv2 block (d = C5/2, L = 3)     -> [B, C5, H/32, W/32]

MV2 (inverted residual, timm ``BottleneckBlock`` with ``bottle_in``, ``linear_out``):
    1x1 conv (hidden = 2*Cin) + BN + SiLU -> 3x3 depthwise conv (stride s) + BN + SiLU -> 1x1 conv + BN,
    plus the input when s == 1 and Cin == Cout.
MobileViTv2 block (timm ``MobileVitV2Block``, cvnets ``MobileViTBlockv2``) — no residual, no fusion:
    resize up to a multiple of the patch (bilinear, align_corners=True) if needed ->
    3x3 depthwise conv + BN + SiLU -> 1x1 conv C -> d (no bias) -> unfold [B, d, P, N] ->
    L x (x + Attn(GN(x)); x + FFN(GN(x))) -> GN -> fold [B, d, H, W] -> 1x1 conv d -> C + BN.
GN is GroupNorm with one group (statistics over all of d x P x N of a sample, per-channel affine);
Attn is the separable self-attention (``lmref.ops.separable_self_attention``); FFN is
1x1 conv d -> 2d + SiLU + 1x1 conv 2d -> d.

``Config.rank5_patches`` picks the unfold/fold written with tensors of rank <= 5 (what a TFLite-style
export needs, ICME 2024 paper Sec. 2.2.2) instead of timm's 6-D reshape/permute.  Same numbers.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .. import ops
from ..ops._check import check_array
from ..trace import scope
from .common import conv_norm_act

ARCH = "mobilevitv2"

BASE_CHANNELS = (64, 128, 256, 384, 512)    # stages.0..4 at width 1.0
STEM_CHANNELS = 32
TRANSFORMER_DEPTHS = (2, 4, 3)              # attention blocks in stages 2, 3, 4
MV2_EXPANSION = 2.0                         # inverted-residual hidden = 2 * in_channels
TRANSFORMER_RATIO = 0.5                     # attention dim d = 0.5 * C
MLP_RATIO = 2.0                             # FFN hidden = 2 * d
BN_EPS = 1e-5
GN_EPS = 1e-5


@dataclass
class Config:
    """MobileViT-v2 backbone settings.

    width_multiplier  m of timm's ``mobilevitv2_{050,075,100,...}`` (0.5, 0.75, 1.0, ...)
    in_chans          input image channels (3; 1 for grayscale)
    patch_size        patch height = width of the unfold (2 upstream)
    rank5_patches     unfold/fold written with tensors of rank <= 5 (TFLite-friendly); same numbers
    """
    width_multiplier: float = 0.5
    in_chans: int = 3
    patch_size: int = 2
    rank5_patches: bool = False

    def __post_init__(self):
        if isinstance(self.width_multiplier, bool) or not isinstance(self.width_multiplier, (int, float)) \
                or not self.width_multiplier > 0:
            raise ValueError(f"mobilevitv2.Config: width_multiplier must be a positive number, "
                             f"got {self.width_multiplier!r}")
        for name in ("in_chans", "patch_size"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise ValueError(f"mobilevitv2.Config: {name} must be a positive int, got {v!r}")
        if not isinstance(self.rank5_patches, bool):
            raise ValueError(f"mobilevitv2.Config: rank5_patches must be a bool, got {self.rank5_patches!r}")
        if int(STEM_CHANNELS * self.width_multiplier) < 1:
            raise ValueError(f"mobilevitv2.Config: width_multiplier {self.width_multiplier} leaves no stem channels")


def make_divisible(v, divisor=8, min_value=None, round_limit=0.9):
    """Round a channel count to a multiple of ``divisor`` (timm ``make_divisible``)."""
    min_value = min_value or divisor
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    if new_v < round_limit * v:
        new_v += divisor
    return new_v


def stage_plan(cfg):
    """The blocks of each stage as timm's ByobNet builds them from ``_mobilevitv2_cfg``: per stage a list of
    {"type": "mv2", "cin", "cout", "hidden", "stride"} or {"type": "mvit", "channels", "dim", "mlp_hidden", "depth"}."""
    m = cfg.width_multiplier
    chs = BASE_CHANNELS if m == 1.0 else tuple(int(c * m) for c in BASE_CHANNELS)
    prev = int(STEM_CHANNELS * m)

    def mv2(cin, cout, stride):
        return {"type": "mv2", "cin": cin, "cout": cout, "hidden": make_divisible(cin * MV2_EXPANSION),
                "stride": stride}

    plan = [[mv2(prev, chs[0], 1)], [mv2(chs[0], chs[1], 2), mv2(chs[1], chs[1], 1)]]
    prev = chs[1]
    for c, depth in zip(chs[2:], TRANSFORMER_DEPTHS):
        d = make_divisible(TRANSFORMER_RATIO * c)
        plan.append([mv2(prev, c, 2),
                     {"type": "mvit", "channels": c, "dim": d, "mlp_hidden": int(d * MLP_RATIO), "depth": depth}])
        prev = c
    return plan


def num_features(cfg):
    """Channels of the backbone output (the last stage): 256 / 384 / 512 at width 0.5 / 0.75 / 1.0."""
    return stage_plan(cfg)[-1][-1]["channels"]


def output_size(cfg, height, width):
    """Spatial size of the output for an input of height x width: each stride-2 3x3 conv gives
    ceil(n/2), and each MobileViTv2 block first resizes n up to a multiple of the patch size."""
    def down(n):
        return (n + 1) // 2
    p = cfg.patch_size
    sizes = []
    for n in (height, width):
        n = down(n)                       # stem
        n = down(n)                       # stages.1
        for _ in TRANSFORMER_DEPTHS:      # stages.2..4: strided MV2, then resize to a multiple of p
            n = math.ceil(down(n) / p) * p
        sizes.append(n)
    return tuple(sizes)


# ---------------------------------------------------------------------------------------------
# parameter shapes (state-dict keys, timm's names)

def _conv_bn_shapes(prefix, cout, cin_per_group, k):
    return {f"{prefix}.conv.weight": (cout, cin_per_group, k, k),
            **{f"{prefix}.bn.{n}": (cout,) for n in ("weight", "bias", "running_mean", "running_var")}}


def _mv2_shapes(prefix, b):
    return {**_conv_bn_shapes(f"{prefix}.conv1_1x1", b["hidden"], b["cin"], 1),
            **_conv_bn_shapes(f"{prefix}.conv2_kxk", b["hidden"], 1, 3),
            **_conv_bn_shapes(f"{prefix}.conv3_1x1", b["cout"], b["hidden"], 1)}


def _mvit_shapes(prefix, b):
    c, d, h = b["channels"], b["dim"], b["mlp_hidden"]
    s = {**_conv_bn_shapes(f"{prefix}.conv_kxk", c, 1, 3), f"{prefix}.conv_1x1.weight": (d, c, 1, 1)}
    for i in range(b["depth"]):
        t = f"{prefix}.transformer.{i}"
        s.update({f"{t}.norm1.weight": (d,), f"{t}.norm1.bias": (d,),
                  f"{t}.attn.qkv_proj.weight": (1 + 2 * d, d, 1, 1), f"{t}.attn.qkv_proj.bias": (1 + 2 * d,),
                  f"{t}.attn.out_proj.weight": (d, d, 1, 1), f"{t}.attn.out_proj.bias": (d,),
                  f"{t}.norm2.weight": (d,), f"{t}.norm2.bias": (d,),
                  f"{t}.mlp.fc1.weight": (h, d, 1, 1), f"{t}.mlp.fc1.bias": (h,),
                  f"{t}.mlp.fc2.weight": (d, h, 1, 1), f"{t}.mlp.fc2.bias": (d,)})
    s.update({f"{prefix}.norm.weight": (d,), f"{prefix}.norm.bias": (d,)})
    s.update(_conv_bn_shapes(f"{prefix}.conv_proj", c, d, 1))
    return s


def param_shapes(cfg):
    """{state-dict key: shape} of the backbone (timm's keys, classifier and num_batches_tracked left out)."""
    shapes = _conv_bn_shapes("stem", int(STEM_CHANNELS * cfg.width_multiplier), cfg.in_chans, 3)
    for i, blocks in enumerate(stage_plan(cfg)):
        for j, b in enumerate(blocks):
            prefix = f"stages.{i}.{j}"
            shapes.update(_mv2_shapes(prefix, b) if b["type"] == "mv2" else _mvit_shapes(prefix, b))
    return shapes


# ---------------------------------------------------------------------------------------------
# forward

def inverted_residual(x, p, stride):
    """MV2 block. x: [B, Cin, H, W] -> [B, Cout, H/stride, W/stride]"""
    with scope("conv1_1x1"):
        h = conv_norm_act(x, p["conv1_1x1"], act_name="silu", eps=BN_EPS)                  # [B, hidden, H, W]
    with scope("conv2_kxk"):
        h = conv_norm_act(h, p["conv2_kxk"], stride=stride, groups=h.shape[1],
                          act_name="silu", eps=BN_EPS)                                       # [B, hidden, H/s, W/s]
    with scope("conv3_1x1"):
        h = conv_norm_act(h, p["conv3_1x1"], act_name=None, eps=BN_EPS)                    # [B, Cout, H/s, W/s]
    if stride == 1 and x.shape[1] == h.shape[1]:
        h = x + h
    return h


def ffn(x, p):
    """FFN on patches: 1x1 conv d -> 2d, SiLU, 1x1 conv 2d -> d.  x: [B, d, P, N] -> [B, d, P, N]"""
    with scope("fc1"):
        h = ops.conv2d(x, p["fc1"]["weight"], p["fc1"]["bias"])                           # [B, 2d, P, N]
    h = ops.silu(h, inplace=True)                                                         # h: fc1's fresh output
    with scope("fc2"):
        return ops.conv2d(h, p["fc2"]["weight"], p["fc2"]["bias"])                        # [B, d, P, N]


def group_norm1(x, p):
    """GroupNorm with one group (cvnets ``layer_norm_2d``, timm ``GroupNorm1``)."""
    return ops.group_norm(x, 1, p["weight"], p["bias"], eps=GN_EPS)


def linear_transformer_block(x, p):
    """Pre-norm transformer layer on patches. x: [B, d, P, N] -> [B, d, P, N]"""
    with scope("norm1"):
        h = group_norm1(x, p["norm1"])
    with scope("attn"):
        a = p["attn"]
        h = ops.separable_self_attention(h, a["qkv_proj"]["weight"], a["qkv_proj"]["bias"],
                                         a["out_proj"]["weight"], a["out_proj"]["bias"])
    x = x + h
    with scope("norm2"):
        h = group_norm1(x, p["norm2"])
    with scope("mlp"):
        h = ffn(h, p["mlp"])
    return x + h


def mobilevitv2_block(x, p, cfg):
    """MobileViTv2 block. x: [B, C, H, W] -> [B, C, H', W'], H' = H rounded up to a multiple of the patch."""
    ph = pw = cfg.patch_size
    B, C, H, W = x.shape
    new_h, new_w = math.ceil(H / ph) * ph, math.ceil(W / pw) * pw
    if (new_h, new_w) != (H, W):                  # timm / cvnets resize the block input up, never back
        x = ops.interpolate(x, size=(new_h, new_w), mode="bilinear", align_corners=True)   # [B, C, H', W']
    # local representation
    with scope("conv_kxk"):
        x = conv_norm_act(x, p["conv_kxk"], groups=C, act_name="silu", eps=BN_EPS)        # [B, C, H', W']
    with scope("conv_1x1"):
        x = ops.conv2d(x, p["conv_1x1"]["weight"])                                        # [B, d, H', W']
    # global representation on patches
    x = ops.unfold_patches(x, ph, pw, rank5=cfg.rank5_patches)                            # [B, d, P, N]
    for i in range(len(p["transformer"])):
        with scope("transformer"), scope(i):
            x = linear_transformer_block(x, p["transformer"][str(i)])
    with scope("norm"):
        x = group_norm1(x, p["norm"])
    x = ops.fold_patches(x, new_h, new_w, ph, pw, rank5=cfg.rank5_patches)                # [B, d, H', W']
    with scope("conv_proj"):
        return conv_norm_act(x, p["conv_proj"], act_name=None, eps=BN_EPS)               # [B, C, H', W']


def forward_features(params, x, cfg):
    """params: nested dict of the keys in ``param_shapes(cfg)``; x: [B, in_chans, H, W].
    Returns the last stage's feature map [B, C5, H/32, W/32] (see ``output_size`` for other sizes)."""
    check_array(x, "x", ndim=4)
    if x.shape[1] != cfg.in_chans:
        raise ValueError(f"mobilevitv2: expected {cfg.in_chans} input channels, got x of shape {x.shape}")
    with scope("stem"):
        x = conv_norm_act(x, params["stem"], stride=2, act_name="silu", eps=BN_EPS)       # [B, C0, H/2, W/2]
    for i, blocks in enumerate(stage_plan(cfg)):
        for j, b in enumerate(blocks):
            with scope("stages"), scope(i), scope(j):
                bp = params["stages"][str(i)][str(j)]
                if b["type"] == "mv2":
                    x = inverted_residual(x, bp, b["stride"])                             # [B, Cout, H/s, W/s]
                else:
                    x = mobilevitv2_block(x, bp, cfg)                                     # [B, C, H, W]
    return x


forward = forward_features     # the backbone has no classifier: its output is the feature map
