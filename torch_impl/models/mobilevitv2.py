"""MobileViT-v2 backbone in PyTorch (mirrors lmref/models/mobilevitv2.py; same keys as timm's
``mobilevitv2_050 / _075 / _100`` without ``head.fc``).

Weights published for timm's models load directly:

    sd = torch.load("mobilevitv2_050.pth", weights_only=True)
    model = MobileViTv2(Config(width_multiplier=0.5))
    model.load_state_dict(without_classifier(sd))
"""
from __future__ import annotations

import dataclasses
import math

import torch
import torch.nn.functional as F
from torch import nn

from lmref.models.mobilevitv2 import (ARCH, BN_EPS, GN_EPS, STEM_CHANNELS, Config,  # noqa: F401
                                      num_features, stage_plan)

from .common import ConvNormAct


# ---------------------------------------------------------------------------------------------
# patches: [B, C, H, W] <-> [B, C, P, N], P index i*pw + j, N index a*(W/pw) + b

def unfold_patches(x, patch_h, patch_w, rank5=False):
    """[B, C, H, W] -> [B, C, P, N] (``lmref.ops.unfold_patches``).  rank5=False: timm's 6-D
    reshape/permute.  rank5=True: the split/squeeze/5-D permute/unsqueeze/concat rewrite of the ICME
    2024 paper arranged so that no tensor has rank above 5 (TFLite-style runtimes); same numbers."""
    B, C, H, W = x.shape
    nh, nw = H // patch_h, W // patch_w
    if not rank5:
        x = x.reshape(B, C, nh, patch_h, nw, patch_w).permute(0, 1, 3, 5, 2, 4)      # [B, C, ph, pw, nh, nw]
        return x.reshape(B, C, patch_h * patch_w, nh * nw)                          # [B, C, P, N]
    t = x.reshape(B, C, H, nw, patch_w)                                              # [B, C, H, nw, pw]
    parts = []
    for t_j in torch.split(t, 1, dim=4):                                             # pw x [B, C, H, nw, 1]
        t_j = t_j.squeeze(4).reshape(B, C, nh, patch_h, nw)                          # [B, C, nh, ph, nw]
        t_j = t_j.permute(0, 1, 3, 2, 4).reshape(B, C, patch_h, nh * nw)             # [B, C, ph, N]
        parts.append(t_j.unsqueeze(3))                                               # [B, C, ph, 1, N]
    t = torch.cat(parts, dim=3)                                                      # [B, C, ph, pw, N]
    return t.reshape(B, C, patch_h * patch_w, nh * nw)                               # [B, C, P, N]


def fold_patches(x, out_h, out_w, patch_h, patch_w, rank5=False):
    """[B, C, P, N] -> [B, C, H, W], the inverse of :func:`unfold_patches`."""
    B, C = x.shape[:2]
    nh, nw = out_h // patch_h, out_w // patch_w
    if not rank5:
        x = x.reshape(B, C, patch_h, patch_w, nh, nw).permute(0, 1, 4, 2, 5, 3)      # [B, C, nh, ph, nw, pw]
        return x.reshape(B, C, out_h, out_w)                                         # [B, C, H, W]
    t = x.reshape(B, C, patch_h, patch_w, nh * nw)                                   # [B, C, ph, pw, N]
    parts = []
    for t_j in torch.split(t, 1, dim=3):                                             # pw x [B, C, ph, 1, N]
        t_j = t_j.squeeze(3).reshape(B, C, patch_h, nh, nw)                          # [B, C, ph, nh, nw]
        t_j = t_j.permute(0, 1, 3, 2, 4).reshape(B, C, out_h, nw)                    # [B, C, H, nw]
        parts.append(t_j.unsqueeze(4))                                               # [B, C, H, nw, 1]
    t = torch.cat(parts, dim=4)                                                      # [B, C, H, nw, pw]
    return t.reshape(B, C, out_h, out_w)                                             # [B, C, H, W]


# ---------------------------------------------------------------------------------------------
# blocks (module and attribute names = timm's, so state-dict keys match)

class InvertedResidual(nn.Module):
    """MV2 block (timm ``BottleneckBlock(bottle_in=True, linear_out=True, group_size=1)``)."""

    def __init__(self, cin, cout, hidden, stride):
        super().__init__()
        self.conv1_1x1 = ConvNormAct(cin, hidden, 1, act="silu", eps=BN_EPS)
        self.conv2_kxk = ConvNormAct(hidden, hidden, 3, stride=stride, groups=hidden, act="silu", eps=BN_EPS)
        self.conv3_1x1 = ConvNormAct(hidden, cout, 1, act=None, eps=BN_EPS)
        self.has_residual = stride == 1 and cin == cout

    def forward(self, x):
        h = self.conv3_1x1(self.conv2_kxk(self.conv1_1x1(x)))
        return x + h if self.has_residual else h


class LinearSelfAttention(nn.Module):
    """Separable self-attention on [B, d, P, N] (timm ``LinearSelfAttention``, cvnets
    ``LinearSelfAttention``): scores = softmax_N(q), context = sum_N k * scores, out = relu(v) * context."""

    def __init__(self, dim):
        super().__init__()
        self.dim = dim
        self.qkv_proj = nn.Conv2d(dim, 1 + 2 * dim, 1)
        self.out_proj = nn.Conv2d(dim, dim, 1)

    def forward(self, x):
        qkv = self.qkv_proj(x)                                                  # [B, 1+2d, P, N]
        q, k, v = qkv.split([1, self.dim, self.dim], dim=1)                    # [B,1,P,N], [B,d,P,N] x2
        scores = F.softmax(q, dim=-1)                                          # [B, 1, P, N]
        context = (k * scores).sum(dim=-1, keepdim=True)                       # [B, d, P, 1]
        return self.out_proj(F.relu(v) * context)                              # [B, d, P, N]

    def macs(self, inputs, output):
        """MACs outside the two convs (for torch_impl.info): the context reduction, B*d*P*N."""
        return output.numel()


class ConvMlp(nn.Module):
    """FFN with 1x1 convs (timm ``ConvMlp``): fc1 d -> h, SiLU, fc2 h -> d."""

    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1 = nn.Conv2d(dim, hidden, 1)
        self.act = nn.SiLU()
        self.fc2 = nn.Conv2d(hidden, dim, 1)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class LinearTransformerBlock(nn.Module):
    """Pre-norm layer: x + Attn(GN(x)), then + FFN(GN(x)); GN = GroupNorm with one group."""

    def __init__(self, dim, mlp_hidden):
        super().__init__()
        self.norm1 = nn.GroupNorm(1, dim, eps=GN_EPS)
        self.attn = LinearSelfAttention(dim)
        self.norm2 = nn.GroupNorm(1, dim, eps=GN_EPS)
        self.mlp = ConvMlp(dim, mlp_hidden)

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class MobileViTv2Block(nn.Module):
    """MobileViTv2 block (timm ``MobileVitV2Block``): no residual, no fusion conv."""

    def __init__(self, channels, dim, mlp_hidden, depth, patch_size=2, rank5=False):
        super().__init__()
        self.conv_kxk = ConvNormAct(channels, channels, 3, groups=channels, act="silu", eps=BN_EPS)
        self.conv_1x1 = nn.Conv2d(channels, dim, 1, bias=False)
        self.transformer = nn.Sequential(*[LinearTransformerBlock(dim, mlp_hidden) for _ in range(depth)])
        self.norm = nn.GroupNorm(1, dim, eps=GN_EPS)
        self.conv_proj = ConvNormAct(dim, channels, 1, act=None, eps=BN_EPS)
        self.patch_size = patch_size
        self.rank5 = rank5

    def forward(self, x):
        p = self.patch_size
        H, W = x.shape[-2:]
        new_h, new_w = math.ceil(H / p) * p, math.ceil(W / p) * p
        if (new_h, new_w) != (H, W):
            x = F.interpolate(x, size=(new_h, new_w), mode="bilinear", align_corners=True)
        x = self.conv_1x1(self.conv_kxk(x))                                    # [B, d, H', W']
        x = unfold_patches(x, p, p, self.rank5)                                # [B, d, P, N]
        x = self.norm(self.transformer(x))
        x = fold_patches(x, new_h, new_w, p, p, self.rank5)                    # [B, d, H', W']
        return self.conv_proj(x)                                               # [B, C, H', W']


class MobileViTv2(nn.Module):
    """The backbone: stem + 5 stages; forward returns the last feature map [B, C5, H/32, W/32]
    (``num_features`` = C5 channels)."""

    arch = ARCH

    def __init__(self, cfg: Config = None):
        super().__init__()
        cfg = cfg or Config()
        self.cfg = cfg
        self.stem = ConvNormAct(cfg.in_chans, int(STEM_CHANNELS * cfg.width_multiplier), 3, stride=2,
                                act="silu", eps=BN_EPS)
        stages = []
        for blocks in stage_plan(cfg):
            mods = []
            for b in blocks:
                if b["type"] == "mv2":
                    mods.append(InvertedResidual(b["cin"], b["cout"], b["hidden"], b["stride"]))
                else:
                    mods.append(MobileViTv2Block(b["channels"], b["dim"], b["mlp_hidden"], b["depth"],
                                                 cfg.patch_size, cfg.rank5_patches))
            stages.append(nn.Sequential(*mods))
        self.stages = nn.Sequential(*stages)
        self.num_features = num_features(cfg)

    def set_rank5_patches(self, rank5: bool):
        """Switch the unfold/fold form in place (weights unchanged)."""
        self.cfg = dataclasses.replace(self.cfg, rank5_patches=bool(rank5))
        for m in self.modules():
            if isinstance(m, MobileViTv2Block):
                m.rank5 = bool(rank5)
        return self

    def forward_features(self, x):
        if x.ndim != 4 or x.shape[1] != self.cfg.in_chans:
            raise ValueError(f"x: expected [B, {self.cfg.in_chans}, H, W], got {tuple(x.shape)}")
        return self.stages(self.stem(x))                                       # [B, C5, H/32, W/32]

    def forward(self, x):
        return self.forward_features(x)


def without_classifier(state_dict):
    """A timm ``mobilevitv2_*`` state dict with the classifier (``head.*``) removed."""
    return {k: v for k, v in state_dict.items() if not k.startswith("head.")}
