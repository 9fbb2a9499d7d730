"""Swin Transformer V2 (Liu et al., CVPR 2022) with timm's module and state-dict names: the ICME 2024
teacher backbone (SwinV2-B without classifier, its last feature map feeding the AAM head).

Written from the paper and the description of timm's ``swin_transformer_v2.py`` (timm cannot be
imported here: it needs torchvision).  Same keys and shapes, same non-persistent buffers
(``k_bias``, ``relative_coords_table``, ``relative_position_index``, ``attn_mask``), same init
(trunc-normal(0.02) Linear weights, zero biases, logit scale ln 10, residual post-norms at zero so a
fresh block is the identity).  The buffers are built by the functions of :mod:`lmref.models.swinv2`,
which also holds the Config; see that module for the equations.

    model = SwinTransformerV2(Config())            # SwinV2-B/8 @256, no classifier
    feats = model(x)                               # [B, 3, 256, 256] -> [B, 1024, 8, 8]
    model.num_features, model.feature_stride       # 1024, 32
"""
import math

import torch
import torch.nn.functional as F
from torch import nn

from lmref.models.swinv2 import (  # noqa: F401  (Config and PRESETS re-exported for callers)
    ARCH, LOGIT_SCALE_MAX, PRESETS, Config, block_shift, relative_coords_table, relative_position_index,
    shifted_window_mask, stage_geometry,
)


def window_partition(x, window):
    """[B, H, W, C] -> [B * nW, wh*ww, C]"""
    B, H, W, C = x.shape
    wh, ww = window
    x = x.view(B, H // wh, wh, W // ww, ww, C).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, wh * ww, C)


def window_reverse(windows, window, resolution):
    """[B * nW, wh*ww, C] -> [B, H, W, C]"""
    (wh, ww), (H, W) = window, resolution
    C = windows.shape[-1]
    x = windows.view(-1, H // wh, W // ww, wh, ww, C).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, H, W, C)


class DropPath(nn.Module):
    """Stochastic depth: drop the whole residual branch of a sample with probability p (training)."""

    def __init__(self, p=0.0):
        super().__init__()
        self.p = p

    def forward(self, x):
        if not self.training or self.p == 0.0:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask / keep


class WindowAttention(nn.Module):
    """Scaled cosine attention with continuous position bias inside M x M windows.
    x: [B*nW, N, C] -> [B*nW, N, C]"""

    def __init__(self, dim, window, num_heads, qkv_bias=True, pretrained_window=0):
        super().__init__()
        self.dim, self.window, self.num_heads = dim, tuple(window), num_heads
        self.pretrained_window = pretrained_window
        self.logit_scale = nn.Parameter(torch.full((num_heads, 1, 1), math.log(10.0)))
        self.cpb_mlp = nn.Sequential(nn.Linear(2, 512, bias=True), nn.ReLU(inplace=True),
                                     nn.Linear(512, num_heads, bias=False))
        self.qkv = nn.Linear(dim, dim * 3, bias=False)
        if qkv_bias:
            self.q_bias = nn.Parameter(torch.zeros(dim))
            self.register_buffer("k_bias", torch.zeros(dim), persistent=False)
            self.v_bias = nn.Parameter(torch.zeros(dim))
        else:
            self.q_bias = self.k_bias = self.v_bias = None
        self.proj = nn.Linear(dim, dim)
        self.register_buffer("relative_coords_table",
                             torch.from_numpy(relative_coords_table(self.window, pretrained_window)),
                             persistent=False)
        self.register_buffer("relative_position_index",
                             torch.from_numpy(relative_position_index(self.window)), persistent=False)

    def position_bias(self):
        """16 sigmoid(cpb_mlp(table)) gathered per token pair -> [heads, N, N]"""
        N = self.window[0] * self.window[1]
        table = self.cpb_mlp(self.relative_coords_table).view(-1, self.num_heads)  # [(2wh-1)(2ww-1), heads]
        bias = table[self.relative_position_index.view(-1)].view(N, N, -1)        # [N, N, heads]
        return 16 * torch.sigmoid(bias.permute(2, 0, 1))                           # [heads, N, N]

    def forward(self, x, mask=None):
        Bn, N, C = x.shape
        bias = None if self.q_bias is None else torch.cat((self.q_bias, self.k_bias, self.v_bias))
        qkv = F.linear(x, self.qkv.weight, bias)                                    # [Bn, N, 3C]
        q, k, v = qkv.reshape(Bn, N, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4).unbind(0)  # [Bn, h, N, d]
        attn = F.normalize(q, dim=-1) @ F.normalize(k, dim=-1).transpose(-2, -1)  # cosine, [Bn, h, N, N]
        attn = attn * torch.clamp(self.logit_scale, max=LOGIT_SCALE_MAX).exp()
        attn = attn + self.position_bias().unsqueeze(0)
        if mask is not None:
            nW = mask.shape[0]
            attn = attn.view(-1, nW, self.num_heads, N, N) + mask.unsqueeze(1).unsqueeze(0)
            attn = attn.view(-1, self.num_heads, N, N)
        attn = attn.softmax(dim=-1)
        x = (attn @ v).transpose(1, 2).reshape(Bn, N, C)                            # [Bn, N, C]
        return self.proj(x)


class Mlp(nn.Module):
    """fc1 -> GELU -> fc2 (timm Mlp keys)."""

    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class SwinTransformerV2Block(nn.Module):
    """x + LN(W-MSA or SW-MSA(x)), then x + LN(MLP(x)).  [B, H, W, C] -> [B, H, W, C]"""

    def __init__(self, geom, shift, mlp_ratio=4.0, qkv_bias=True, drop_path=0.0, eps=1e-5):
        super().__init__()
        dim = geom["dim"]
        self.resolution, self.window, self.shift = geom["resolution"], geom["window"], tuple(shift)
        self.attn = WindowAttention(dim, self.window, geom["heads"], qkv_bias, geom["pretrained_window"])
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.drop_path1 = DropPath(drop_path)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.drop_path2 = DropPath(drop_path)
        mask = shifted_window_mask(self.resolution, self.window, self.shift)
        self.register_buffer("attn_mask", None if mask is None else torch.from_numpy(mask), persistent=False)

    def _attn(self, x):
        B, H, W, C = x.shape
        if any(self.shift):
            x = torch.roll(x, shifts=(-self.shift[0], -self.shift[1]), dims=(1, 2))
        windows = self.attn(window_partition(x, self.window), mask=self.attn_mask)   # [B*nW, N, C]
        x = window_reverse(windows, self.window, (H, W))
        if any(self.shift):
            x = torch.roll(x, shifts=self.shift, dims=(1, 2))
        return x

    def forward(self, x):
        x = x + self.drop_path1(self.norm1(self._attn(x)))
        return x + self.drop_path2(self.norm2(self.mlp(x)))


class PatchMerging(nn.Module):
    """2x2 neighbourhood concat -> Linear(4C, 2C, no bias) -> LN.  [B, H, W, C] -> [B, H/2, W/2, 2C]"""

    def __init__(self, dim, eps=1e-5):
        super().__init__()
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)
        self.norm = nn.LayerNorm(2 * dim, eps=eps)

    def forward(self, x):
        B, H, W, C = x.shape
        x = x.reshape(B, H // 2, 2, W // 2, 2, C).permute(0, 1, 3, 4, 2, 5).flatten(3)
        return self.norm(self.reduction(x))


class SwinTransformerV2Stage(nn.Module):
    """Optional patch merging (stages 1..), then depth blocks alternating W-MSA / SW-MSA."""

    def __init__(self, geom, depth, downsample, mlp_ratio, qkv_bias, drop_path, eps):
        super().__init__()
        self.downsample = PatchMerging(geom["dim"] // 2, eps) if downsample else nn.Identity()
        self.blocks = nn.ModuleList([
            SwinTransformerV2Block(geom, block_shift(geom, b), mlp_ratio, qkv_bias, drop_path[b], eps)
            for b in range(depth)])

    def forward(self, x):
        x = self.downsample(x)
        for blk in self.blocks:
            x = blk(x)
        return x


class PatchEmbed(nn.Module):
    """4x4 stride-4 conv + LN.  [B, Cin, H, W] -> [B, H/4, W/4, C]"""

    def __init__(self, cfg):
        super().__init__()
        self.proj = nn.Conv2d(cfg.in_chans, cfg.embed_dim, cfg.patch_size, cfg.patch_size)
        self.norm = nn.LayerNorm(cfg.embed_dim, eps=cfg.eps)

    def forward(self, x):
        return self.norm(self.proj(x).permute(0, 2, 3, 1))


class ClassifierHead(nn.Module):
    """Global average pool over (h, w) + fc (keys head.fc.*).  [B, h, w, F] -> [B, classes]"""

    def __init__(self, num_features, num_classes):
        super().__init__()
        self.fc = nn.Linear(num_features, num_classes)

    def forward(self, x):
        return self.fc(x.mean(dim=(1, 2)))


class SwinTransformerV2(nn.Module):
    """forward(x): [B, in_chans, *img_size] -> feature map [B, num_features, h, w] (num_classes == 0)
    or logits [B, num_classes].  forward_features(x) always returns the feature map (NCHW, after the
    final LayerNorm)."""

    arch = ARCH

    def __init__(self, cfg: Config = Config()):
        super().__init__()
        self.cfg = cfg
        geometry = stage_geometry(cfg)
        self.num_features = cfg.num_features
        self.feature_stride = cfg.feature_stride
        self.patch_embed = PatchEmbed(cfg)
        depths = cfg.depths[:cfg.num_stages]
        # stochastic depth rising linearly over all blocks of the full model (timm's schedule)
        dpr = torch.linspace(0, cfg.drop_path_rate, sum(cfg.depths), device="cpu").tolist()
        starts = [sum(cfg.depths[:s]) for s in range(len(depths))]
        self.layers = nn.Sequential(*[
            SwinTransformerV2Stage(geom, depths[s], s > 0, cfg.mlp_ratio, cfg.qkv_bias,
                                   dpr[starts[s]:starts[s] + depths[s]], cfg.eps)
            for s, geom in enumerate(geometry)])
        self.norm = nn.LayerNorm(self.num_features, eps=cfg.eps)
        self.head = ClassifierHead(self.num_features, cfg.num_classes) if cfg.num_classes else None
        self.reset_parameters()

    def reset_parameters(self):
        """timm's init: Linear weights trunc-normal(std .02) with zero bias; post-norms at zero."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        for stage in self.layers:
            for blk in stage.blocks:
                for norm in (blk.norm1, blk.norm2):
                    nn.init.zeros_(norm.weight)
                    nn.init.zeros_(norm.bias)

    def forward_features(self, x):
        if x.ndim != 4 or x.shape[1] != self.cfg.in_chans or tuple(x.shape[2:]) != self.cfg.img_size:
            raise ValueError(f"x: expected [B, {self.cfg.in_chans}, {self.cfg.img_size[0]}, "
                             f"{self.cfg.img_size[1]}] (SwinV2 is built for a fixed size), got {tuple(x.shape)}")
        x = self.patch_embed(x)               # [B, H/4, W/4, C]
        x = self.layers(x)                    # -> [B, h, w, F]
        x = self.norm(x)
        return x.permute(0, 3, 1, 2)          # -> [B, F, h, w]

    def forward(self, x):
        x = self.forward_features(x)
        if self.head is None:
            return x
        return self.head(x.permute(0, 2, 3, 1))


def build(cfg: Config = None) -> SwinTransformerV2:
    return SwinTransformerV2(cfg or Config())
