"""A tiny model module with the lmref.models interface, for testing lmref.weights.Model without
depending on the real architectures. Registered in tests by monkeypatching lmref.models.MODULES."""
from dataclasses import dataclass, field

import numpy as np

ARCH = "fake"


@dataclass(frozen=True)
class Head:
    bias: bool = True


@dataclass(frozen=True)
class Config:
    in_channels: int = 3
    hidden: tuple = (5, 4)          # JSON gives a list; Model must turn it back into a tuple
    num_points: int = 2
    head: Head = field(default_factory=Head)   # nested config: JSON gives a dict


def param_shapes(cfg):
    h0, h1 = cfg.hidden
    shapes = {
        "stem.weight": (h0, cfg.in_channels),
        "stem.bias": (h0,),
        "blocks.0.weight": (h1, h0),
        "head.weight": (cfg.num_points * 2, h1),
    }
    if cfg.head.bias:
        shapes["head.bias"] = (cfg.num_points * 2,)
    return shapes


def forward(params, x, cfg):
    """x: [B, C, H, W] -> global average pool -> linear -> relu -> linear -> linear -> [B, P, 2]"""
    z = x.mean(axis=(2, 3))                                                        # [B, C]
    z = np.maximum(z @ params["stem"]["weight"].T + params["stem"]["bias"], 0)     # [B, h0]
    z = z @ params["blocks"]["0"]["weight"].T                                      # [B, h1]
    z = z @ params["head"]["weight"].T                                             # [B, 2P]
    if cfg.head.bias:
        z = z + params["head"]["bias"]
    return z.reshape(len(x), cfg.num_points, 2)
