"""Stud5, the compact student of "Knowledge Distillation for Compact Facial Landmark Detection"
(Shukla & Huang 2021): 5 x (conv 3x3 + bias -> BN -> ReLU -> max-pool 2x2) -> global pool -> fc.

3,982,344 parameters with the default :class:`Config` (1-channel input, 136 outputs); the derivation
of the configuration from that count is in :mod:`lmref.models.stud5`, which also holds the Config.
"""
import torch
from torch import nn

from lmref.models.stud5 import ARCH, Config  # noqa: F401  (one Config for both halves)

from .common import ConvNormAct


class Stud5(nn.Module):
    """forward(x): [B, in_chans, H, W] -> [B, num_outputs];
    forward_features(x): -> [B, 512, H/32, W/32] (the last conv block, what CKD distils)."""

    arch = ARCH

    def __init__(self, cfg: Config = Config()):
        super().__init__()
        self.cfg = cfg
        blocks, cin = [], cfg.in_chans
        for c in cfg.channels:
            blocks.append(ConvNormAct(cin, c, cfg.kernel_size, act="relu", eps=cfg.eps, bias=True))
            cin = c
        self.blocks = nn.ModuleList(blocks)
        self.pool = nn.MaxPool2d(2)
        self.num_features = cin
        self.feature_stride = 2 ** len(cfg.channels)
        self.fc = nn.Linear(cin, cfg.num_outputs)

    def forward_features(self, x):
        n = len(self.blocks)
        if x.ndim != 4 or x.shape[1] != self.cfg.in_chans:
            raise ValueError(f"x: expected [B, {self.cfg.in_chans}, H, W], got {tuple(x.shape)}")
        if min(x.shape[2:]) < 2 ** n:
            raise ValueError(f"x: spatial size {tuple(x.shape[2:])} is below {2 ** n}, the {n} "
                             f"max-pools would leave an empty map")
        for block in self.blocks:
            x = self.pool(block(x))       # [B, c, h, w] -> [B, c', h/2, w/2]
        return x

    def forward_head(self, x):
        x = torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1)  # [B, 512, h, w] -> [B, 512]
        return self.fc(x)                                              # -> [B, 136]

    def forward(self, x):
        return self.forward_head(self.forward_features(x))
