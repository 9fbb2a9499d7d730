"""Backbone + AAM heatmap head (ADNet/STAR) in PyTorch; mirrors lmref/models/aam_head.py, where the
equations, output dict and coordinate conventions are written down.

    model = AAM(Config(backbone="mobilevitv2", backbone_config={"width_multiplier": 0.5}, layout="inner51"))
    out = model(x)       # dict: fusion_heatmaps, heatmaps, pointmaps, edgemaps, coords, landmarks, features
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lmref.models.aam_head import (ARCH, Config, backbone_config, heatmap_size,  # noqa: F401
                                   layout, num_edges, num_features, num_points)

from . import build as build_model


class E2P(nn.Module):
    """STAR's ``E2HTransform``: a fixed 1x1 conv from edge maps to point maps,
    E2P(E)_p = sum_e M[p, e] E_e + b_p.  Buffers are not persistent: the layout defines them."""

    def __init__(self, matrix, bias):
        super().__init__()
        matrix = torch.as_tensor(matrix, dtype=torch.float32)
        self.register_buffer("weight", matrix[:, :, None, None].clone(), persistent=False)   # [N, E, 1, 1]
        self.register_buffer("bias", torch.as_tensor(bias, dtype=torch.float32).clone(), persistent=False)

    def forward(self, edgemaps):
        return F.conv2d(edgemaps, self.weight, self.bias)                                  # [B, N, h, w]

    def macs(self, inputs, output):
        return output.numel() * self.weight.shape[1]


def soft_argmax(heatmaps, method="star", beta=1.0):
    """[B, N, h, w] -> [B, N, 2] (x, y) in [-1, 1] on the grid X_j = 2j/(w-1) - 1, Y_i = 2i/(h-1) - 1
    (``lmref.ops.soft_argmax``).  "star": STAR's decoder, sum(X * H) / max(sum H, 1e-6), with the grid
    built in the heatmap's dtype (STAR builds it in float32).  "softmax": DSNT, sum(X * softmax(beta H))."""
    B, N, h, w = heatmaps.shape
    xs = torch.arange(w, dtype=heatmaps.dtype, device=heatmaps.device) / (w - 1) * 2 - 1     # X_j: [w]
    ys = torch.arange(h, dtype=heatmaps.dtype, device=heatmaps.device) / (h - 1) * 2 - 1     # Y_i: [h]
    if method == "star":
        p = heatmaps
        total = torch.clamp(p.sum(dim=(2, 3)), min=1e-6)                                   # S: [B, N]
    elif method == "softmax":
        p = F.softmax(beta * heatmaps.reshape(B, N, h * w), dim=-1).reshape(B, N, h, w)
        total = 1.0
    else:
        raise ValueError(f"soft_argmax: method must be 'star' or 'softmax', got {method!r}")
    x = (p * xs[None, None, None, :]).sum(dim=(2, 3)) / total                               # [B, N]
    y = (p * ys[None, None, :, None]).sum(dim=(2, 3)) / total                               # [B, N]
    return torch.stack([x, y], dim=-1)                                                     # [B, N, 2]


def normalized_to_pixels(coords, width, height):
    """[-1, 1] -> input pixels with centres at integers: x = ((x̂ + 1) W - 1) / 2 (STAR)."""
    x = ((coords[..., 0] + 1) * width - 1) / 2
    y = ((coords[..., 1] + 1) * height - 1) / 2
    return torch.stack([x, y], dim=-1)


class AAMHead(nn.Module):
    """Upsample -> three 1x1 convs (heatmaps: InstanceNorm + ReLU; point and edge maps: sigmoid) ->
    E2P fusion -> soft-argmax."""

    def __init__(self, in_channels, cfg: Config):
        super().__init__()
        self.cfg = cfg
        lay = layout(cfg)
        n, e = lay.num_points, lay.num_edges
        self.out_heatmaps = nn.Conv2d(in_channels, n, 1)
        self.out_pointmaps = nn.Conv2d(in_channels, n, 1)
        self.out_edgemaps = nn.Conv2d(in_channels, e, 1)
        self.e2p = E2P(*lay.edge_matrix())

    def forward(self, features, size):
        cfg = self.cfg
        align = cfg.align_corners if cfg.upsample_mode == "bilinear" else None
        u = F.interpolate(features, size=size, mode=cfg.upsample_mode, align_corners=align)  # [B, C, Hh, Wh]
        heatmaps = F.relu(F.instance_norm(self.out_heatmaps(u)))                            # [B, N, Hh, Wh]
        pointmaps = torch.sigmoid(self.out_pointmaps(u))                                    # [B, N, Hh, Wh]
        edgemaps = torch.sigmoid(self.out_edgemaps(u))                                      # [B, E, Hh, Wh]
        fused = self.e2p(edgemaps) * pointmaps * heatmaps                                   # [B, N, Hh, Wh]
        coords = soft_argmax(fused, cfg.soft_argmax, cfg.softmax_beta)                      # [B, N, 2]
        return {"fusion_heatmaps": fused, "heatmaps": heatmaps, "pointmaps": pointmaps,
                "edgemaps": edgemaps, "coords": coords}


class AAM(nn.Module):
    """backbone + AAMHead; forward(x) returns the dict documented in lmref.models.aam_head.forward."""

    arch = ARCH

    def __init__(self, cfg: Config = None):
        super().__init__()
        cfg = cfg or Config()
        self.cfg = cfg
        self.backbone = build_model(cfg.backbone, backbone_config(cfg))
        self.head = AAMHead(num_features(cfg), cfg)

    def forward(self, x):
        if x.ndim != 4:
            raise ValueError(f"x: expected [B, C, H, W], got {tuple(x.shape)}")
        H, W = x.shape[2:]
        size = heatmap_size(self.cfg, H, W)
        bb = self.backbone
        features = bb.forward_features(x) if hasattr(bb, "forward_features") else bb(x)   # [B, C, h, w]
        out = self.head(features, size)
        out["landmarks"] = normalized_to_pixels(out["coords"], W, H)
        out["features"] = features
        return out

