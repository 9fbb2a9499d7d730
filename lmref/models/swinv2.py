"""Swin Transformer V2 (Liu et al., CVPR 2022) in plain NumPy ops: the ICME 2024 entry's teacher backbone.

The teacher of the ICME 2024 low-power landmark entry is SwinV2-B (ImageNet-1k) without its
classifier; its last feature map feeds the AAM heatmap head.  State-dict keys and shapes are timm's
(``timm/models/swin_transformer_v2.py``), so timm checkpoints load unchanged:

    patch_embed.proj.{weight,bias}   patch_embed.norm.{weight,bias}
    layers.{s}.downsample.{reduction.weight, norm.weight, norm.bias}          (s >= 1)
    layers.{s}.blocks.{b}.attn.{logit_scale, q_bias, v_bias, qkv.weight, proj.{weight,bias},
                                cpb_mlp.0.{weight,bias}, cpb_mlp.2.weight}
    layers.{s}.blocks.{b}.{norm1,norm2}.{weight,bias}   layers.{s}.blocks.{b}.mlp.{fc1,fc2}.{weight,bias}
    norm.{weight,bias}               head.fc.{weight,bias}                     (num_classes > 0)

What differs from Swin v1 (all implemented below, names from the paper):
  * scaled cosine attention  Sim(q_i, k_j) = cos(q_i, k_j) / tau + B_ij,  1/tau = exp(min(logit_scale,
    ln 100)) per head (the learnable logit scale);
  * log-spaced continuous position bias: B = 16 sigmoid(G(dx, dy)), G a 2-512-heads MLP of the
    log-spaced relative coordinates  sign(d) log2(1 + 8|d|/(M-1)) / log2(8);
  * residual post-norm  x <- x + LN(Attn(x)),  x <- x + LN(MLP(x));
  * q/v biases with a zero key bias; patch merging = Linear(4C -> 2C, no bias) then LN(2C), at the
    start of stages 1..3.
Shifted windows: odd blocks roll the map by (-M/2, -M/2) before partitioning into M x M windows and
mask (-100 added to the logit) token pairs that came from different regions of the unrolled map.

The torch twin (torch_impl/models/swinv2.py) builds its non-persistent buffers (relative_coords_table,
relative_position_index, attn_mask) from the functions here, so both halves use one definition.
"""
import math
from dataclasses import dataclass

import numpy as np

from .. import ops
from ..ops._check import check_array, pair as _pair
from ..trace import scope

ARCH = "swinv2"

MASK_VALUE = -100.0     # added to the logits of token pairs from different regions (timm, Microsoft)
LOGIT_SCALE_MAX = math.log(1.0 / 0.01)   # 1/tau is clamped at 100


@dataclass(frozen=True)
class Config:
    """Default: SwinV2-B window 8 at 256x256 (timm ``swinv2_base_window8_256``) without classifier,
    the ICME 2024 teacher backbone.  86,893,816 parameters (87,918,816 with ``num_classes=1000``)."""
    img_size: tuple = (256, 256)          # (H, W) the model is built for (window/shift/mask depend on it)
    patch_size: int = 4
    in_chans: int = 3
    embed_dim: int = 128                  # C; stage s has C * 2**s channels
    depths: tuple = (2, 2, 18, 2)
    num_heads: tuple = (4, 8, 16, 32)
    window_size: tuple = (8, 8)
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    pretrained_window_sizes: tuple = None  # per stage; >0: CPB coordinates scaled by that window; None: all 0
    num_classes: int = 0                  # 0: no classifier, forward returns the feature map
    out_stage: int = -1                   # stage whose (normed) output is the feature map; later stages are not built
    drop_path_rate: float = 0.1           # stochastic depth (training only; timm's default)
    eps: float = 1e-5                     # LayerNorm epsilon

    def __post_init__(self):
        set_ = lambda k, v: object.__setattr__(self, k, v)  # noqa: E731  (frozen dataclass)
        set_("img_size", _pair(self.img_size, "img_size"))
        set_("window_size", _pair(self.window_size, "window_size"))
        if self.pretrained_window_sizes is None:
            set_("pretrained_window_sizes", (0,) * len(self.depths))
        for k in ("depths", "num_heads", "pretrained_window_sizes"):
            set_(k, tuple(int(v) for v in getattr(self, k)))
        n = len(self.depths)
        if n == 0 or len(self.num_heads) != n or len(self.pretrained_window_sizes) != n:
            raise ValueError(f"depths {self.depths}, num_heads {self.num_heads} and pretrained_window_sizes "
                             f"{self.pretrained_window_sizes} must be non-empty and of one length")
        if any(d < 1 for d in self.depths) or any(h < 1 for h in self.num_heads):
            raise ValueError(f"depths and num_heads must be positive, got {self.depths}, {self.num_heads}")
        if not -n <= self.out_stage < n:
            raise ValueError(f"out_stage: expected an index into {n} stages, got {self.out_stage}")
        if self.num_classes and self.last_stage != n - 1:
            raise ValueError("num_classes > 0 needs the classifier on the last stage (out_stage=-1)")
        for s in range(self.num_stages):
            dim = self.embed_dim * 2 ** s
            if dim % self.num_heads[s]:
                raise ValueError(f"stage {s}: width {dim} is not divisible by num_heads {self.num_heads[s]}")
        if any(w < 1 for w in self.window_size) or self.patch_size < 1:
            raise ValueError(f"window_size {self.window_size} and patch_size {self.patch_size} must be positive")
        stage_geometry(self)    # raises on sizes the windows / merging cannot tile

    @property
    def last_stage(self):
        """out_stage as a non-negative index."""
        return self.out_stage % len(self.depths)

    @property
    def num_stages(self):
        """Stages actually built: 0 .. last_stage."""
        return self.last_stage + 1

    @property
    def num_features(self):
        """Channels of the output feature map (8C = 1024 for SwinV2-B)."""
        return self.embed_dim * 2 ** self.last_stage

    @property
    def feature_stride(self):
        """Input pixels per feature-map pixel (32 for the full model)."""
        return self.patch_size * 2 ** self.last_stage


def num_features(cfg):
    """Channels of the output feature map (what the AAM head sees)."""
    return cfg.num_features


PRESETS = {   # timm names -> Config kwargs (num_classes=1000 for the ImageNet classifiers)
    "swinv2_tiny_window8_256": dict(embed_dim=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24), window_size=8),
    "swinv2_tiny_window16_256": dict(embed_dim=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24), window_size=16),
    "swinv2_small_window8_256": dict(embed_dim=96, depths=(2, 2, 18, 2), num_heads=(3, 6, 12, 24), window_size=8),
    "swinv2_small_window16_256": dict(embed_dim=96, depths=(2, 2, 18, 2), num_heads=(3, 6, 12, 24), window_size=16),
    "swinv2_base_window8_256": dict(embed_dim=128, depths=(2, 2, 18, 2), num_heads=(4, 8, 16, 32), window_size=8),
    "swinv2_base_window16_256": dict(embed_dim=128, depths=(2, 2, 18, 2), num_heads=(4, 8, 16, 32), window_size=16),
}


# ------------------------------------------------------------------------------------------------
# Geometry and constant tables (shared with torch_impl)

def stage_geometry(cfg):
    """Per built stage: dict(dim, heads, resolution (h, w), window (wh, ww), shift (sh, sw)).

    As timm: a window larger than the map shrinks to the map, and such an axis is not shifted; the
    shift of odd blocks is window // 2.  Raises ValueError where the map cannot be tiled (timm would
    pad; we ask for sizes that divide).
    """
    H, W = cfg.img_size
    P = cfg.patch_size
    if H % P or W % P:
        raise ValueError(f"img_size {cfg.img_size} is not divisible by patch_size {P}")
    res = (H // P, W // P)
    out = []
    for s in range(cfg.num_stages):
        if s > 0:
            if res[0] % 2 or res[1] % 2:
                raise ValueError(f"stage {s}: patch merging needs an even map, got {res} (img_size {cfg.img_size})")
            res = (res[0] // 2, res[1] // 2)
        window = tuple(r if r <= w else w for r, w in zip(res, cfg.window_size))
        shift = tuple(0 if r <= w else w // 2 for r, w in zip(res, cfg.window_size))
        if res[0] % window[0] or res[1] % window[1]:
            raise ValueError(f"stage {s}: map {res} is not a whole number of {window} windows "
                             f"(img_size {cfg.img_size}, window_size {cfg.window_size})")
        out.append(dict(dim=cfg.embed_dim * 2 ** s, heads=cfg.num_heads[s], resolution=res,
                        window=window, shift=shift, pretrained_window=cfg.pretrained_window_sizes[s]))
    return out


def block_shift(geom, b):
    """Shift of block b of a stage: (0, 0) on even blocks, the stage's shift on odd ones."""
    return geom["shift"] if b % 2 else (0, 0)


def relative_coords_table(window, pretrained_window=0):
    """Log-spaced relative coordinates fed to the CPB MLP.  -> float32 [1, 2wh-1, 2ww-1, 2] ([..., 0] = dy).

    d in -(M-1)..(M-1), scaled to [-8, 8] by 8 / (M-1) (M = the pre-training window if given), then
    sign(d) log2(1 + |d|) / log2(8).  Computed in float64 and rounded once to float32, the dtype
    timm keeps it in; both halves cast it to the model dtype from there.
    """
    wh, ww = window
    ph, pw = _pair(pretrained_window, "pretrained_window")
    dh, dw = (ph - 1, pw - 1) if ph > 0 else (wh - 1, ww - 1)
    # a window 1 token wide (a map 1 token wide, e.g. the last stage at 32 px) has only d = 0: timm
    # divides 0 by 0 there and gets NaN; we keep the coordinate 0
    ch = np.arange(-(wh - 1), wh, dtype=np.float64) / max(dh, 1)
    cw = np.arange(-(ww - 1), ww, dtype=np.float64) / max(dw, 1)
    table = np.stack(np.meshgrid(ch, cw, indexing="ij"), axis=-1)[None] * 8   # [1, 2wh-1, 2ww-1, 2]
    table = np.sign(table) * np.log2(np.abs(table) + 1.0) / math.log2(8)
    return table.astype(np.float32)


def relative_position_index(window):
    """For tokens i, j of a window (row-major), the row of the flattened coordinates table holding
    their offset (y_i - y_j, x_i - x_j).  -> int64 [wh*ww, wh*ww]"""
    wh, ww = window
    yy, xx = np.meshgrid(np.arange(wh), np.arange(ww), indexing="ij")
    y, x = yy.reshape(-1), xx.reshape(-1)                          # [N]
    dy = y[:, None] - y[None, :] + (wh - 1)                        # [N, N] in 0 .. 2wh-2
    dx = x[:, None] - x[None, :] + (ww - 1)                        # [N, N] in 0 .. 2ww-2
    return (dy * (2 * ww - 1) + dx).astype(np.int64)


def window_partition(x, window):
    """[B, H, W, C] -> [B * nW, wh*ww, C], windows in row-major order, tokens row-major in a window."""
    B, H, W, C = x.shape
    wh, ww = window
    x = x.reshape(B, H // wh, wh, W // ww, ww, C).transpose(0, 1, 3, 2, 4, 5)  # [B, H/wh, W/ww, wh, ww, C]
    return x.reshape(-1, wh * ww, C)


def window_reverse(windows, window, resolution):
    """[B * nW, wh*ww, C] -> [B, H, W, C] (inverse of window_partition)."""
    (wh, ww), (H, W) = window, resolution
    C = windows.shape[-1]
    x = windows.reshape(-1, H // wh, W // ww, wh, ww, C).transpose(0, 1, 3, 2, 4, 5)  # [B, H/wh, wh, W/ww, ww, C]
    return x.reshape(-1, H, W, C)


def shifted_window_mask(resolution, window, shift):
    """Attention mask of a shifted-window block, or None without shift.  -> float32 [nW, N, N]

    After rolling the map by -shift, the last row / column of windows holds tokens from two (or
    four) regions of the unrolled map that are not neighbours.  Label each token of the rolled map
    by its region along each axis (0: [0, L-M), 1: [L-M, L-s), 2: [L-s, L)) and mask pairs whose
    labels differ with MASK_VALUE.
    """
    if not any(shift):
        return None
    H, W = resolution

    def labels(L, M, s):
        i = np.arange(L)
        return np.where(i < L - M, 0, np.where(i < L - s, 1, 2))

    region = labels(H, window[0], shift[0])[:, None] * 3 + labels(W, window[1], shift[1])[None, :]  # [H, W]
    region = window_partition(region[None, :, :, None].astype(np.float64), window)[..., 0]        # [nW, N]
    differ = region[:, :, None] != region[:, None, :]                                            # [nW, N, N]
    return np.where(differ, MASK_VALUE, 0.0).astype(np.float32)


# ------------------------------------------------------------------------------------------------
# Parameters

def param_shapes(cfg):
    """{state-dict key: shape}, in torch_impl's (and timm's) state-dict order."""
    C, P = cfg.embed_dim, cfg.patch_size
    shapes = {"patch_embed.proj.weight": (C, cfg.in_chans, P, P), "patch_embed.proj.bias": (C,),
              "patch_embed.norm.weight": (C,), "patch_embed.norm.bias": (C,)}
    for s, g in enumerate(stage_geometry(cfg)):
        d, h = g["dim"], g["heads"]
        if s > 0:
            shapes[f"layers.{s}.downsample.reduction.weight"] = (d, 2 * d)   # 4 * (d/2) -> d
            shapes[f"layers.{s}.downsample.norm.weight"] = (d,)
            shapes[f"layers.{s}.downsample.norm.bias"] = (d,)
        hidden = int(d * cfg.mlp_ratio)
        for b in range(cfg.depths[s]):
            p = f"layers.{s}.blocks.{b}"
            shapes[f"{p}.attn.logit_scale"] = (h, 1, 1)
            if cfg.qkv_bias:
                shapes[f"{p}.attn.q_bias"] = (d,)
                shapes[f"{p}.attn.v_bias"] = (d,)
            shapes.update({
                f"{p}.attn.cpb_mlp.0.weight": (512, 2), f"{p}.attn.cpb_mlp.0.bias": (512,),
                f"{p}.attn.cpb_mlp.2.weight": (h, 512),
                f"{p}.attn.qkv.weight": (3 * d, d),
                f"{p}.attn.proj.weight": (d, d), f"{p}.attn.proj.bias": (d,),
                f"{p}.norm1.weight": (d,), f"{p}.norm1.bias": (d,),
                f"{p}.mlp.fc1.weight": (hidden, d), f"{p}.mlp.fc1.bias": (hidden,),
                f"{p}.mlp.fc2.weight": (d, hidden), f"{p}.mlp.fc2.bias": (d,),
                f"{p}.norm2.weight": (d,), f"{p}.norm2.bias": (d,),
            })
    F = cfg.num_features
    shapes["norm.weight"], shapes["norm.bias"] = (F,), (F,)
    if cfg.num_classes:
        shapes["head.fc.weight"] = (cfg.num_classes, F)
        shapes["head.fc.bias"] = (cfg.num_classes,)
    return shapes


# ------------------------------------------------------------------------------------------------
# Forward

def layer_norm(x, p, eps):
    """LayerNorm over the last (channel) axis.  [..., C] -> [..., C]"""
    return ops.layer_norm(x, (x.shape[-1],), p["weight"], p["bias"], eps=eps)


def patch_embed(x, p, cfg):
    """4x4 stride-4 conv + LN.  [B, Cin, H, W] -> [B, H/4, W/4, C] (channels last from here on)"""
    with scope("proj"):
        x = ops.conv2d(x, p["proj"]["weight"], p["proj"]["bias"], stride=cfg.patch_size)  # -> [B, C, H/4, W/4]
    x = x.transpose(0, 2, 3, 1)                                                           # -> [B, H/4, W/4, C]
    with scope("norm"):
        return layer_norm(x, p["norm"], cfg.eps)


def patch_merging(x, p, eps):
    """Concatenate each 2x2 neighbourhood, Linear(4C -> 2C, no bias), LN(2C).
    [B, H, W, C] -> [B, H/2, W/2, 2C]; the 4C order is (0,0), (1,0), (0,1), (1,1) as (dy, dx), as timm."""
    B, H, W, C = x.shape
    x = x.reshape(B, H // 2, 2, W // 2, 2, C).transpose(0, 1, 3, 4, 2, 5)  # [B, H/2, W/2, dx, dy, C]
    x = x.reshape(B, H // 2, W // 2, 4 * C)                                 # -> [B, H/2, W/2, 4C]
    with scope("reduction"):
        x = ops.linear(x, p["reduction"]["weight"])                         # -> [B, H/2, W/2, 2C]
    with scope("norm"):
        return layer_norm(x, p["norm"], eps)


def continuous_position_bias(p, window, pretrained_window, dtype):
    """B = 16 sigmoid(G(log-spaced offsets)), G = Linear(2, 512) -> ReLU -> Linear(512, heads, no bias).
    -> [heads, N, N] for the N = wh*ww tokens of a window."""
    table = relative_coords_table(window, pretrained_window).astype(dtype)       # [1, 2wh-1, 2ww-1, 2]
    with scope("0"):
        h = ops.relu(ops.linear(table, p["0"]["weight"], p["0"]["bias"]))         # -> [1, 2wh-1, 2ww-1, 512]
    with scope("2"):
        h = ops.linear(h, p["2"]["weight"])                                       # -> [1, 2wh-1, 2ww-1, heads]
    N = window[0] * window[1]
    bias = h.reshape(-1, h.shape[-1])[relative_position_index(window).reshape(-1)]  # -> [N*N, heads]
    bias = bias.reshape(N, N, -1).transpose(2, 0, 1)                              # -> [heads, N, N]
    return 16 * ops.sigmoid(bias)


def l2_normalize(x, eps=1e-12):
    """x / max(||x||_2, eps) over the last axis (torch.nn.functional.normalize)."""
    norm = np.sqrt(np.sum(x * x, axis=-1, keepdims=True))
    return x / np.maximum(norm, x.dtype.type(eps))


def window_attention(x, p, heads, window, pretrained_window, mask):
    """Scaled cosine multi-head attention inside each window, plus continuous position bias.
    x: [B*nW, N, C] -> [B*nW, N, C]; mask: [nW, N, N] or None."""
    Bn, N, C = x.shape
    if "q_bias" in p:
        qkv_bias = np.concatenate([p["q_bias"], np.zeros_like(p["q_bias"]), p["v_bias"]])  # k bias fixed at 0
    else:
        qkv_bias = None
    with scope("qkv"):
        qkv = ops.linear(x, p["qkv"]["weight"], qkv_bias)                  # [Bn, N, C] -> [Bn, N, 3C]
    qkv = qkv.reshape(Bn, N, 3, heads, C // heads).transpose(2, 0, 3, 1, 4)  # -> [3, Bn, heads, N, d]
    q, k, v = qkv[0], qkv[1], qkv[2]
    # cos(q_i, k_j) scaled by 1/tau = exp(min(logit_scale, ln 100))
    attn = ops.matmul(l2_normalize(q), l2_normalize(k).swapaxes(-1, -2))    # -> [Bn, heads, N, N]
    attn = attn * np.exp(np.minimum(p["logit_scale"], x.dtype.type(LOGIT_SCALE_MAX)))  # logit_scale [heads, 1, 1]
    with scope("cpb_mlp"):
        attn = attn + continuous_position_bias(p["cpb_mlp"], window, pretrained_window, x.dtype)
    if mask is not None:
        nW = mask.shape[0]
        attn = attn.reshape(-1, nW, heads, N, N) + mask.astype(x.dtype)[None, :, None]  # [B, nW, heads, N, N]
        attn = attn.reshape(-1, heads, N, N)                                            # -> [Bn, heads, N, N]
    attn = ops.softmax(attn, -1)
    x = ops.matmul(attn, v)                                                 # -> [Bn, heads, N, d]
    x = x.transpose(0, 2, 1, 3).reshape(Bn, N, C)                           # -> [Bn, N, C]
    with scope("proj"):
        return ops.linear(x, p["proj"]["weight"], p["proj"]["bias"])


def swin_block(x, p, geom, shift, eps):
    """(S)W-MSA and MLP with residual post-norm.  [B, H, W, C] -> [B, H, W, C]"""
    B, H, W, C = x.shape
    window = geom["window"]
    shortcut = x
    if any(shift):
        x = np.roll(x, (-shift[0], -shift[1]), axis=(1, 2))               # cyclic shift
    windows = window_partition(x, window)                                 # -> [B*nW, N, C]
    mask = shifted_window_mask((H, W), window, shift)                     # [nW, N, N] or None
    with scope("attn"):
        windows = window_attention(windows, p["attn"], geom["heads"], window, geom["pretrained_window"], mask)
    x = window_reverse(windows, window, (H, W))                           # -> [B, H, W, C]
    if any(shift):
        x = np.roll(x, shift, axis=(1, 2))                                # undo the shift
    with scope("norm1"):
        x = shortcut + layer_norm(x, p["norm1"], eps)                     # x + LN(Attn(x))
    with scope("mlp"):
        with scope("fc1"):
            y = ops.gelu(ops.linear(x, p["mlp"]["fc1"]["weight"], p["mlp"]["fc1"]["bias"]))  # -> [B, H, W, 4C]
        with scope("fc2"):
            y = ops.linear(y, p["mlp"]["fc2"]["weight"], p["mlp"]["fc2"]["bias"])            # -> [B, H, W, C]
    with scope("norm2"):
        return x + layer_norm(y, p["norm2"], eps)                         # x + LN(MLP(x))


def forward_features(params, x, cfg):
    """[B, in_chans, H, W] -> [B, num_features, H/stride, W/stride] (output of stage out_stage after
    the final LayerNorm, channels first)."""
    x = check_array(x, "x", ndim=4)
    if x.shape[1] != cfg.in_chans or tuple(x.shape[2:]) != cfg.img_size:
        raise ValueError(f"x: expected [B, {cfg.in_chans}, {cfg.img_size[0]}, {cfg.img_size[1]}] "
                         f"(SwinV2 is built for a fixed size), got {x.shape}")
    with scope("patch_embed"):
        x = patch_embed(x, params["patch_embed"], cfg)                   # -> [B, H/4, W/4, C]
    for s, geom in enumerate(stage_geometry(cfg)):
        stage = params["layers"][str(s)]
        if s > 0:
            with scope(f"layers.{s}.downsample"):
                x = patch_merging(x, stage["downsample"], cfg.eps)       # -> [B, h/2, w/2, 2c]
        for b in range(cfg.depths[s]):
            with scope(f"layers.{s}.blocks.{b}"):
                x = swin_block(x, stage["blocks"][str(b)], geom, block_shift(geom, b), cfg.eps)
    with scope("norm"):
        x = layer_norm(x, params["norm"], cfg.eps)
    return x.transpose(0, 3, 1, 2)                                       # [B, h, w, F] -> [B, F, h, w]


def forward(params, x, cfg):
    """The feature map [B, num_features, h, w] (num_classes == 0, the teacher backbone), else the
    classifier logits [B, num_classes] (global average pool + head.fc)."""
    x = forward_features(params, x, cfg)
    if not cfg.num_classes:
        return x
    with scope("head.global_pool"):
        x = ops.adaptive_avg_pool2d(x, 1).reshape(x.shape[0], -1)       # -> [B, F]
    with scope("head.fc"):
        return ops.linear(x, params["head"]["fc"]["weight"], params["head"]["fc"]["bias"])  # -> [B, classes]
