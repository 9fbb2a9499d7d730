"""A backbone + the AAM heatmap head of ADNet/STAR, decoded by soft-argmax — the landmark model of
the ICME 2024 low-power entry (student: MobileViT-v2 x0.5 + this head; teacher: SwinV2 + this head).

    F  = backbone(x)                                  [B, C, h, w]        (stride 32 for MobileViT-v2)
    U  = upsample(F) to the heatmap grid              [B, C, Hh, Wh]      (stride 4: 64x64 for 256x256)
    H  = ReLU(InstanceNorm(conv1x1(U)))               [B, N, Hh, Wh]      heatmaps     ("in+relu", no affine)
    P  = sigmoid(conv1x1(U))                          [B, N, Hh, Wh]      point maps, one per landmark
    E  = sigmoid(conv1x1(U))                          [B, E, Hh, Wh]      edge maps, one per boundary
    H' = (E2P(E) * P) * H                             [B, N, Hh, Wh]      fused heatmaps (AAM attention mask)
    x̂  = soft-argmax(H')                              [B, N, 2]           (x, y) in [-1, 1]

E2P is STAR's fixed ``E2HTransform``: E2P(E)_p = sum_e M[p, e] E_e + b_p with M[p, e] = 1 iff
landmark p lies on boundary e and b_p = 1 iff p lies on none (``lmref.landmarks.Layout.edge_matrix``);
it has no weights and is rebuilt from ``Config.layout``.

Coordinate conventions (written down once, used everywhere):
* ``coords`` — normalised (x, y): the heatmap pixel (i, j) sits at X_j = 2j/(Wh-1) - 1,
  Y_i = 2i/(Hh-1) - 1 (STAR's decoder; first and last pixel centres at -1 and +1).
* ``landmarks`` — input pixels, pixel centres at integers: x = ((x̂ + 1) W - 1) / 2,
  y = ((ŷ + 1) H - 1) / 2 for an input of W x H (STAR ``denorm_points``; -1 -> -0.5, +1 -> W - 0.5).

Parameters: ``backbone.*`` (the backbone's own keys) and ``head.out_heatmaps / out_pointmaps /
out_edgemaps .weight/.bias`` (STAR's names).  With MobileViT-v2 x0.5 (256 channels) and the
``inner51`` layout (51 points, 8 boundaries): 1,113,593 + (256+1)(51+51+8) = 1,141,863.
"""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field

from .. import landmarks, ops
from ..ops._check import check_array
from ..trace import scope

ARCH = "aam"

UPSAMPLE_MODES = ("bilinear", "nearest")
SOFT_ARGMAX_METHODS = ("star", "softmax")


@dataclass
class Config:
    """backbone          architecture name of the backbone (a key of ``lmref.models.MODULES``)
    backbone_config   that backbone's Config as a dict (missing fields take its defaults; stored
                      complete, so {} becomes the default backbone written out in full)
    layout            landmark layout name (``lmref.landmarks``): number of points, boundaries, E2P
    heatmap_stride    heatmap grid = ceil(H / stride) x ceil(W / stride) of the input (4: 64x64 at 256)
    heatmap_size      (Hh, Wh) to use instead of the stride rule, or None
    upsample_mode     "bilinear" or "nearest": backbone features -> heatmap grid
    align_corners     for bilinear upsampling (torch's meaning); must be False for nearest
    soft_argmax       "star" (STAR's normalised expectation) or "softmax" (DSNT-style)
    softmax_beta      inverse temperature of the "softmax" method (unused by "star")
    """
    backbone: str = "mobilevitv2"
    backbone_config: dict = field(default_factory=dict)
    layout: str = "inner51"
    heatmap_stride: int = 4
    heatmap_size: tuple = None
    upsample_mode: str = "bilinear"
    align_corners: bool = False
    soft_argmax: str = "star"
    softmax_beta: float = 1.0

    def __post_init__(self):
        from . import MODULES
        if self.backbone not in MODULES or self.backbone == ARCH:
            raise ValueError(f"aam_head.Config: unknown backbone {self.backbone!r}; known: "
                             f"{sorted(k for k in MODULES if k != ARCH)}")
        if dataclasses.is_dataclass(self.backbone_config):
            self.backbone_config = dataclasses.asdict(self.backbone_config)
        if not isinstance(self.backbone_config, dict):
            raise ValueError(f"aam_head.Config: backbone_config must be a dict or a Config, got "
                             f"{type(self.backbone_config).__name__}")
        landmarks.get(self.layout)      # raises KeyError naming the known layouts
        stride = self.heatmap_stride
        if isinstance(stride, bool) or not isinstance(stride, int) or stride < 1:
            raise ValueError(f"aam_head.Config: heatmap_stride must be a positive int, got {stride!r}")
        if self.heatmap_size is not None:
            hs = tuple(self.heatmap_size)
            if len(hs) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 2 for v in hs):
                raise ValueError(f"aam_head.Config: heatmap_size must be None or two ints >= 2, "
                                 f"got {self.heatmap_size!r}")
            self.heatmap_size = hs
        if self.upsample_mode not in UPSAMPLE_MODES:
            raise ValueError(f"aam_head.Config: upsample_mode must be one of {UPSAMPLE_MODES}, "
                             f"got {self.upsample_mode!r}")
        if not isinstance(self.align_corners, bool):
            raise ValueError(f"aam_head.Config: align_corners must be a bool, got {self.align_corners!r}")
        if self.upsample_mode == "nearest" and self.align_corners:
            raise ValueError("aam_head.Config: align_corners=True needs upsample_mode='bilinear'")
        if self.soft_argmax not in SOFT_ARGMAX_METHODS:
            raise ValueError(f"aam_head.Config: soft_argmax must be one of {SOFT_ARGMAX_METHODS}, "
                             f"got {self.soft_argmax!r}")
        beta = self.softmax_beta
        if isinstance(beta, bool) or not isinstance(beta, (int, float)) or not (beta > 0 and math.isfinite(beta)):
            raise ValueError(f"aam_head.Config: softmax_beta must be a positive number, got {self.softmax_beta!r}")
        # validate the backbone's settings and keep all of them, in JSON form (lists, not tuples), so a
        # manifest records the whole backbone and reads back equal
        self.backbone_config = json.loads(json.dumps(dataclasses.asdict(backbone_config(self))))


def backbone_module(cfg):
    """The lmref model module of the backbone."""
    from . import get
    return get(cfg.backbone)


def backbone_config(cfg):
    """The backbone's Config object built from ``cfg.backbone_config``."""
    return backbone_module(cfg).Config(**cfg.backbone_config)


def layout(cfg):
    return landmarks.get(cfg.layout)


def num_points(cfg):
    return layout(cfg).num_points


def num_edges(cfg):
    return layout(cfg).num_edges


def num_features(cfg):
    """Channels the head sees: the backbone's output channels."""
    return backbone_module(cfg).num_features(backbone_config(cfg))


def heatmap_size(cfg, height, width):
    """(Hh, Wh) of the heatmaps for an input of height x width."""
    if cfg.heatmap_size is not None:
        return tuple(cfg.heatmap_size)
    s = cfg.heatmap_stride
    size = math.ceil(height / s), math.ceil(width / s)
    if min(size) < 2:
        raise ValueError(f"aam: input {height}x{width} gives a {size[0]}x{size[1]} heatmap grid; "
                         f"soft-argmax needs at least 2x2 (grid X_j = 2j/(W-1) - 1)")
    return size


def param_shapes(cfg):
    """{state-dict key: shape}: ``backbone.*`` and the head's three 1x1 convs."""
    shapes = {f"backbone.{k}": v for k, v in backbone_module(cfg).param_shapes(backbone_config(cfg)).items()}
    c, n, e = num_features(cfg), num_points(cfg), num_edges(cfg)
    for name, cout in (("out_heatmaps", n), ("out_pointmaps", n), ("out_edgemaps", e)):
        shapes[f"head.{name}.weight"] = (cout, c, 1, 1)
        shapes[f"head.{name}.bias"] = (cout,)
    return shapes


# ---------------------------------------------------------------------------------------------
# forward

def conv1x1(x, p):
    """x: [B, C, h, w] -> [B, Cout, h, w]"""
    return ops.conv2d(x, p["weight"], p["bias"])


def aam_head(p, features, cfg, size):
    """The head on backbone features [B, C, h, w]; size = (Hh, Wh) of the heatmap grid.
    Returns the dict of maps and normalised coordinates (see ``forward``)."""
    align = cfg.align_corners if cfg.upsample_mode == "bilinear" else None
    u = ops.interpolate(features, size=size, mode=cfg.upsample_mode, align_corners=align)   # [B, C, Hh, Wh]
    with scope("out_heatmaps"):
        heatmaps = conv1x1(u, p["out_heatmaps"])                                             # [B, N, Hh, Wh]
    with scope("heatmap_act"):
        heatmaps = ops.relu(ops.instance_norm(heatmaps))                                     # H >= 0
    with scope("out_pointmaps"):
        pointmaps = ops.sigmoid(conv1x1(u, p["out_pointmaps"]))                              # [B, N, Hh, Wh]
    with scope("out_edgemaps"):
        edgemaps = ops.sigmoid(conv1x1(u, p["out_edgemaps"]))                                # [B, E, Hh, Wh]
    M, b = layout(cfg).edge_matrix()                                                         # [N, E], [N]
    with scope("e2p"):
        fused = ops.aam_fusion(heatmaps, pointmaps, edgemaps, M.astype(u.dtype), b.astype(u.dtype))  # [B, N, Hh, Wh]
    with scope("decoder"):
        beta = cfg.softmax_beta if cfg.soft_argmax == "softmax" else 1.0
        coords = ops.soft_argmax(fused, method=cfg.soft_argmax, beta=beta)                  # [B, N, 2]
    return {"fusion_heatmaps": fused, "heatmaps": heatmaps, "pointmaps": pointmaps,
            "edgemaps": edgemaps, "coords": coords}


def forward(params, x, cfg):
    """params: nested dict of ``param_shapes(cfg)``; x: [B, C, H, W] (the backbone's input channels).

    Returns a dict:
      fusion_heatmaps  [B, N, Hh, Wh]  H' = E2P(E) * P * H, what coordinates are decoded from
      heatmaps         [B, N, Hh, Wh]  H (after InstanceNorm + ReLU)
      pointmaps        [B, N, Hh, Wh]  P (sigmoid)
      edgemaps         [B, E, Hh, Wh]  E (sigmoid)
      coords           [B, N, 2]       (x, y) in [-1, 1] on the heatmap grid (see module docstring)
      landmarks        [B, N, 2]       (x, y) in input pixels, pixel centres at integers
      features         [B, C, h, w]    the backbone output (what feature distillation compares)
    """
    check_array(x, "x", ndim=4)
    bmod = backbone_module(cfg)
    backbone_forward = getattr(bmod, "forward_features", bmod.forward)
    H, W = x.shape[2:]
    with scope("backbone"):
        features = backbone_forward(params["backbone"], x, backbone_config(cfg))            # [B, C, h, w]
    with scope("head"):
        out = aam_head(params["head"], features, cfg, heatmap_size(cfg, H, W))
    out["landmarks"] = ops.normalized_to_pixels(out["coords"], W, H)                         # [B, N, 2]
    out["features"] = features
    return out
