"""A model module with the lmref.models interface that *finds* coloured dots: channel c of the input
is the heatmap of point c. Fed an image with a red, a green and a blue dot, it returns their
positions, so the Landmarker's whole geometry (box -> crop -> decode -> back to the image) can be
checked against known answers. Registered in tests by monkeypatching lmref.models.MODULES["probe"].

Config.output picks the head it imitates: "heatmaps" ([B, 3, S, S], decoded by the Landmarker's
heatmap path), "dict" (the AAM model's dict: landmarks, coords, pointmaps) or "regression"
([B, 6] in STAR's [-1, 1] convention)."""
from dataclasses import dataclass

import numpy as np

from lmref import ops

ARCH = "probe"


@dataclass(frozen=True)
class Config:
    output: str = "heatmaps"


def param_shapes(cfg):
    return {"gain": (1,)}


def forward(params, x, cfg):
    """x: [B, 3, S, S] (pixels / 255) -> per cfg.output (see the module doc)."""
    heat = x * params["gain"][0]                                        # [B, 3, S, S]
    if cfg.output == "heatmaps":
        return heat
    B, N, S, _ = heat.shape
    px, _ = ops.argmax_subpixel(heat)                                   # [B, 3, 2] crop pixels
    coords = (2.0 * px + 1.0) / S - 1.0                                 # STAR's [-1, 1] labels
    if cfg.output == "regression":
        return coords.reshape(B, 2 * N)
    grid = px / (S - 1) * 2.0 - 1.0                                     # heatmap grid X_j = 2j/(S-1) - 1
    return {"landmarks": px, "coords": grid, "pointmaps": np.clip(heat, 0, 1), "heatmaps": heat}
