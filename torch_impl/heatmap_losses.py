"""Heatmap training for Lite-HRNet / Lite-HRNet Plus: Gaussian targets with per-point weights, and the
two losses the Lite-HRNet Plus paper trains with (Table 1: MSE, and BCE "because it is more sensitive
to small errors than MSE").

    target, weight = gaussian_targets(landmarks, heatmap_size=(24, 24), input_size=(96, 96))
    loss = HeatmapLoss("bce")(model(images), target, weight)

The loss formulas are ``torch_impl.losses.heatmap_mse`` (mmpose ``JointsMSELoss``, target weights
squared as mmpose does) and ``heatmap_bce`` (BCE with the heatmaps as logits); their NumPy twins are in
``lmref.losses``.  This module adds the targets and the choice between them.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from .losses import heatmap_bce, heatmap_mse

__all__ = ["gaussian_targets", "HeatmapLoss", "LOSSES", "heatmap_mse", "heatmap_bce"]

LOSSES = {"mse": heatmap_mse, "bce": heatmap_bce}


def gaussian_targets(landmarks, heatmap_size, input_size, sigma=2.0, visible=None, unbiased=False):
    """mmpose's MSRA heatmap targets (``TopDownGenerateTarget``, Lite-HRNet's configs use sigma 2).

    landmarks [B, K, 2]: input-pixel (x, y); heatmap_size, input_size: (h, w), (H, W).
    The centre is mu = int(x w/W + 0.5) (the rounded heatmap pixel); the target is
    exp(-((u - mu_x)^2 + (v - mu_y)^2) / (2 sigma^2)) on the window |u - mu_x|, |v - mu_y| <= floor(3 sigma)
    and 0 elsewhere (mmpose's window for integer 3 sigma).  unbiased=True: DARK's unbiased encoding,
    the un-rounded centre x w/W and no window.
    Returns (target [B, K, h, w], target_weight [B, K]): the weight is ``visible`` (default 1) and 0 for
    a point whose window lies entirely outside the heatmap (mmpose), or, unbiased, whose centre does."""
    if landmarks.ndim != 3 or landmarks.shape[-1] != 2:
        raise ValueError(f"landmarks: expected [B, K, 2], got {tuple(landmarks.shape)}")
    if sigma <= 0:
        raise ValueError(f"sigma must be positive, got {sigma}")
    (h, w), (H, W) = heatmap_size, input_size
    dtype = landmarks.dtype if landmarks.is_floating_point() else torch.float32
    B, K, _ = landmarks.shape
    scaled = landmarks.to(dtype) * torch.tensor([w / W, h / H], dtype=dtype, device=landmarks.device)
    mu = scaled if unbiased else torch.floor(scaled + 0.5)                      # [B, K, 2]
    u = torch.arange(w, dtype=dtype, device=landmarks.device)                  # heatmap columns
    v = torch.arange(h, dtype=dtype, device=landmarks.device)                  # heatmap rows
    du = u[None, None, :] - mu[..., 0:1]                                       # [B, K, w]
    dv = v[None, None, :] - mu[..., 1:2]                                       # [B, K, h]
    target = torch.exp(-(dv[..., :, None] ** 2 + du[..., None, :] ** 2) / (2 * sigma ** 2))   # [B, K, h, w]
    weight = torch.ones(B, K, dtype=dtype, device=landmarks.device) if visible is None else visible.to(dtype)
    if unbiased:
        inside = (mu[..., 0] >= 0) & (mu[..., 0] <= w - 1) & (mu[..., 1] >= 0) & (mu[..., 1] <= h - 1)
    else:
        r = math.floor(3 * sigma)
        window = (du.abs() <= r)[..., None, :] & (dv.abs() <= r)[..., :, None]
        target = target * window
        inside = (mu[..., 0] + r >= 0) & (mu[..., 0] - r <= w - 1) & (mu[..., 1] + r >= 0) & (mu[..., 1] - r <= h - 1)
    weight = weight * inside
    return target * (weight[..., None, None] > 0), weight


class HeatmapLoss(nn.Module):
    """``kind`` "mse" (mmpose JointsMSELoss) or "bce" (per-pixel BCE, heatmaps as logits), mean over
    all pixels, each point weighted by its target weight when ``use_target_weight``."""

    def __init__(self, kind="mse", use_target_weight=True):
        super().__init__()
        if kind not in LOSSES:
            raise ValueError(f"HeatmapLoss: kind must be one of {sorted(LOSSES)}, got {kind!r}")
        self.kind, self.use_target_weight = kind, use_target_weight

    def forward(self, heatmaps, target, target_weight=None):
        w = target_weight if self.use_target_weight else None
        return LOSSES[self.kind](heatmaps, target, w)
