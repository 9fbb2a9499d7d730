"""Lite-HRNet and Lite-HRNet Plus in PyTorch (mirrors lmref/models/litehrnet.py; same state-dict keys).

Lite-HRNet follows HRNet/Lite-HRNet ``models/backbones/litehrnet.py`` (mmcv ``ConvModule`` keys
``conv``/``bn``; convs have a bias only where there is no norm), wrapped like an mmpose ``TopDown``
model (``backbone``, ``keypoint_head``) so published checkpoints load with ``upstream_fusion=True``.
Lite-HRNet Plus (Kato et al. §3) adds the SCAF fusion and the MR head; see the Config in lmref.

Fusion: the default is the corrected sum y_i = ReLU(sum_j f_ij(x_j)).  ``upstream_fusion=True``
reproduces the upstream forward exactly (branch 0 counted twice, and the outputs i > 0 fed from the
in-place-modified branch-0 sum), written without in-place ops so autograd stays safe.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lmref.models.litehrnet import (ARCH, Config, branch_widths, fuse_spec, scaf_down_spec, scaf_hidden,
                                    scaf_pairs, stem_widths, transition_spec)
from .common import ConvNormAct


def channel_shuffle(x, groups):
    """ShuffleNet channel shuffle (mmpose ``channel_shuffle``): [B, g*c, H, W] -> [B, c*g, H, W]."""
    b, c, h, w = x.shape
    return x.view(b, groups, c // groups, h, w).transpose(1, 2).contiguous().view(b, c, h, w)


class ChannelShuffle(nn.Module):
    def __init__(self, groups):
        super().__init__()
        self.groups = groups

    def forward(self, x):
        return channel_shuffle(x, self.groups)


class Resize(nn.Module):
    """Nearest upsampling to a target size given at call time (the upstream ``nn.Upsample(scale_factor=
    2**(j-i))`` gives the same indices when the sizes divide, and also works when they do not)."""

    def forward(self, x, size):
        return F.interpolate(x, size=size, mode="nearest")


def build_sequential(spec, eps):
    """nn.Sequential from an lmref layer spec (see lmref.models.litehrnet)."""
    layers = []
    for item in spec:
        kind = item[0]
        if kind == "conv":
            _, cin, cout, k, stride, groups = item
            layers.append(nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False))
        elif kind == "bn":
            layers.append(nn.BatchNorm2d(item[1], eps=eps))
        elif kind == "relu":
            layers.append(nn.ReLU())
        elif kind == "shuffle":
            layers.append(ChannelShuffle(item[1]))
        elif kind == "upsample":
            layers.append(Resize())
        else:
            raise ValueError(f"unknown layer spec {item!r}")
    return nn.Sequential(*layers)


def run_sequential(seq, x, size=None):
    for layer in seq:
        x = layer(x, size) if isinstance(layer, Resize) else layer(x)
    return x


# ---------------------------------------------------------------------------------------------- stem

class Stem(nn.Module):
    """3x3 s2 conv + BN + ReLU, split in halves; half 1: dw 3x3 s2 + BN, 1x1 + BN + ReLU; half 2:
    1x1 expand + BN + ReLU, dw 3x3 s2 + BN, 1x1 + BN + ReLU; concat, channel shuffle (2).
    [B, 3, H, W] -> [B, C_out, H/4, W/4]"""

    def __init__(self, cfg):
        super().__init__()
        c, eps = cfg.stem_channels, cfg.bn_eps
        half = c // 2
        inc, mid, lin = stem_widths(cfg)
        self.conv1 = ConvNormAct(cfg.in_channels, c, 3, 2, act="relu", eps=eps)
        self.branch1 = nn.Sequential(ConvNormAct(half, half, 3, 2, groups=half, eps=eps),
                                     ConvNormAct(half, inc, 1, act="relu", eps=eps))
        self.expand_conv = ConvNormAct(half, mid, 1, act="relu", eps=eps)
        self.depthwise_conv = ConvNormAct(mid, mid, 3, 2, groups=mid, eps=eps)
        self.linear_conv = ConvNormAct(mid, lin, 1, act="relu", eps=eps)

    def forward(self, x):
        x = self.conv1(x)                                          # [B, C, H/2, W/2]
        x1, x2 = x.chunk(2, dim=1)
        x2 = self.linear_conv(self.depthwise_conv(self.expand_conv(x2)))  # [B, lin, H/4, W/4]
        out = torch.cat((self.branch1(x1), x2), dim=1)             # [B, C_out, H/4, W/4]
        return channel_shuffle(out, 2)


# ---------------------------------------------------------------- conditional channel weighting

class ConvAct(nn.Module):
    """mmcv ConvModule without norm: 1x1 conv with bias + activation (keys ``conv.weight/bias``)."""

    def __init__(self, cin, cout, act):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 1, bias=True)
        self.act = act

    def forward(self, x):
        return self.act(self.conv(x))


class SpatialWeighting(nn.Module):
    """SE-style: GAP -> 1x1 (bias) C -> C/4 + ReLU -> 1x1 (bias) -> C + Sigmoid -> x * w."""

    def __init__(self, c, ratio=4):
        super().__init__()
        self.conv1 = ConvAct(c, int(c / ratio), nn.ReLU())
        self.conv2 = ConvAct(int(c / ratio), c, nn.Sigmoid())

    def forward(self, x):
        w = self.conv2(self.conv1(x.mean((2, 3), keepdim=True)))    # [B, C, 1, 1] global average pool
        return x * w


class CrossResolutionWeighting(nn.Module):
    """Pool every branch to the smallest size, concat, 1x1 + BN + ReLU (sum/r), 1x1 + BN + Sigmoid,
    split, nearest-upsample each weight map to its branch and multiply."""

    def __init__(self, chans, ratio, eps):
        super().__init__()
        self.chans = list(chans)
        total = sum(chans)
        self.conv1 = ConvNormAct(total, int(total / ratio), 1, act="relu", eps=eps)
        self.conv2 = ConvNormAct(int(total / ratio), total, 1, act="sigmoid", eps=eps)

    def forward(self, xs):
        size = xs[-1].shape[-2:]
        out = [adaptive_avg_pool(s, size) for s in xs[:-1]] + [xs[-1]]
        w = self.conv2(self.conv1(torch.cat(out, dim=1)))          # [B, sum C_s, h, w]
        ws = torch.split(w, self.chans, dim=1)
        return [s * F.interpolate(a, size=s.shape[-2:], mode="nearest") for s, a in zip(xs, ws)]


class ConditionalChannelWeighting(nn.Module):
    """Split every branch in halves; the second halves go through cross-resolution weighting, a
    dw 3x3 + BN and spatial weighting; concat with the first halves, channel shuffle (2)."""

    def __init__(self, chans, reduce_ratio, eps):
        super().__init__()
        half = [c // 2 for c in chans]
        self.cross_resolution_weighting = CrossResolutionWeighting(half, reduce_ratio, eps)
        self.depthwise_convs = nn.ModuleList([ConvNormAct(c, c, 3, 1, groups=c, eps=eps) for c in half])
        self.spatial_weighting = nn.ModuleList([SpatialWeighting(c, 4) for c in half])

    def forward(self, xs):
        parts = [s.chunk(2, dim=1) for s in xs]
        x1 = [p[0] for p in parts]
        x2 = self.cross_resolution_weighting([p[1] for p in parts])
        x2 = [dw(s) for s, dw in zip(x2, self.depthwise_convs)]
        x2 = [sw(s) for s, sw in zip(x2, self.spatial_weighting)]
        return [channel_shuffle(torch.cat([a, b], dim=1), 2) for a, b in zip(x1, x2)]


# -------------------------------------------------------------------------------------------- fusion

def conv_fusion(fuse_layers, xs, upstream):
    """Output i = ReLU(sum_j f_ij(x_j)), f_ii the identity (lmref ``conv_fusion``).

    upstream=True reproduces HRNet/Lite-HRNet ``LiteHRModule.forward``: the sum of output 0 starts from
    x_0 and adds x_0 again, in place, so x_0 becomes S_0 = 2 x_0 + sum_{j>0} f_0j(x_j); every later
    output i starts from f_i0(S_0) and adds f_i0(S_0) again.  Written without in-place ops."""
    sizes = [x.shape[-2:] for x in xs]

    def f(i, j, x):
        return run_sequential(fuse_layers[i][j], x, sizes[i]) if j > i else run_steps(fuse_layers[i][j], x)

    out = []
    for i in range(len(xs)):
        y = xs[0] if i == 0 else f(i, 0, xs[0])
        if upstream:
            y = y + y                                              # branch 0 counted twice
        for j in range(1, len(xs)):
            y = y + (xs[j] if j == i else f(i, j, xs[j]))
        if upstream and i == 0:
            xs = [y] + list(xs[1:])                                # the in-place alias of x_0
        out.append(F.relu(y))
    return out


def run_steps(steps, x):
    """A nested Sequential of steps (high->low fusion paths, new-branch transitions)."""
    for step in steps:
        x = run_sequential(step, x)
    return x


class ScafUnit(nn.Module):
    """One SCAF merge of branch j into branch i (Lite-HRNet Plus Fig. 3, lmref ``scaf_unit``); returns
    the map added to x_i:  a_i = sigmoid(fc2(ReLU(fc1(g_i)))) with g_i = GAP(x_i) [B, C_i];
    m_j = channel mean of x_j [B, 1, h_j, w_j];  new = resize(m_j) * a_i [B, C_i, h_i, w_i]."""

    def __init__(self, ci, cj, down_steps, cfg):
        super().__init__()
        hidden = scaf_hidden(ci, cfg)
        self.fc1 = nn.Linear(ci, hidden)
        self.fc2 = nn.Linear(hidden, ci)
        self.cfg, self.down_steps = cfg, down_steps
        if down_steps and cfg.scaf_down == "dwconv":     # Lite-HRNet's dw 3x3 s2 + BN steps, no 1x1 convs
            self.down = nn.Sequential(*[build_sequential(st, cfg.bn_eps) for st in scaf_down_spec(cj, down_steps)])

    def forward(self, g_i, x_j, size_i):
        cfg = self.cfg
        if self.down_steps and cfg.scaf_down == "dwconv":
            x_j = self.down(x_j)                                   # [B, C_j, h_i, w_i]
        m = x_j.mean(dim=1, keepdim=True)                          # [B, 1, h, w]  channel average
        if not self.down_steps:                                    # low -> high
            kw = {"align_corners": True} if cfg.scaf_up == "bilinear" else {}
            m = F.interpolate(m, size=size_i, mode=cfg.scaf_up, **kw)
        elif cfg.scaf_down == "avgpool":
            m = adaptive_avg_pool(m, size_i)                       # [B, 1, h_i, w_i]
        a = torch.sigmoid(self.fc2(F.relu(self.fc1(g_i))))        # [B, C_i]
        return m * a[:, :, None, None]                             # [B, C_i, h_i, w_i]


def gap(x):
    return x.mean((2, 3))                                          # [B, C, H, W] -> [B, C]


def adaptive_avg_pool(x, size):
    """F.adaptive_avg_pool2d(x, size).  When the input is a whole multiple of ``size`` (always, for
    inputs divisible by 32) it is written as avg_pool2d with kernel = stride = the ratio, the same
    numbers, because torch's ONNX exporter cannot read the input size of a chunked tensor."""
    (H, W), (h, w) = (int(n) for n in x.shape[-2:]), (int(n) for n in size)   # static under tracing
    if H % h == 0 and W % w == 0:
        return F.avg_pool2d(x, (H // h, W // w))
    return F.adaptive_avg_pool2d(x, size)


def scaf_fusion(fuse_layers, xs, cfg):
    """Stepped channel attention fusion, then ReLU (lmref ``scaf_fusion``).  pairwise:
    y_i = x_i + sum_{j != i} unit_ij(GAP(x_i), x_j) from the fusion's inputs; cascade: the sweeps of
    ``scaf_pairs`` update the branches in turn."""
    xs = list(xs)
    sizes = [x.shape[-2:] for x in xs]
    if cfg.scaf_route == "cascade":
        for i, j in scaf_pairs(len(xs), cfg):
            xs[i] = xs[i] + fuse_layers[i][j](gap(xs[i]), xs[j], sizes[i])
        return [F.relu(x) for x in xs]
    out = []
    for i in range(len(xs)):
        g, y = gap(xs[i]), xs[i]
        for j in range(len(xs)):
            if j != i:
                y = y + fuse_layers[i][j](g, xs[j], sizes[i])
        out.append(F.relu(y))
    return out


class LiteHRModule(nn.Module):
    """num_blocks conditional channel weighting units, then the fusion."""

    def __init__(self, chans, num_blocks, reduce_ratio, cfg):
        super().__init__()
        self.cfg = cfg
        S = len(chans)
        self.layers = nn.Sequential(*[ConditionalChannelWeighting(chans, reduce_ratio, cfg.bn_eps)
                                      for _ in range(num_blocks)])
        rows = [[None] * S for _ in range(S)]
        if cfg.fusion == "scaf":
            for i, j in scaf_pairs(S, cfg):
                rows[i][j] = ScafUnit(chans[i], chans[j], max(0, i - j), cfg)
        else:
            for i in range(S):
                for j in range(S):
                    if j > i:
                        rows[i][j] = build_sequential(fuse_spec(chans, i, j, cfg), cfg.bn_eps)
                    elif j < i:
                        rows[i][j] = nn.Sequential(*[build_sequential(step, cfg.bn_eps)
                                                     for step in fuse_spec(chans, i, j, cfg)])
        self.fuse_layers = nn.ModuleList([nn.ModuleList(r) for r in rows])

    def forward(self, xs):
        xs = self.layers(xs)
        if self.cfg.fusion == "scaf":
            return scaf_fusion(self.fuse_layers, xs, self.cfg)
        return conv_fusion(self.fuse_layers, xs, self.cfg.upstream_fusion)


# ---------------------------------------------------------------------------------------------- heads

class DepthwiseSeparable(nn.Module):
    """mmcv DepthwiseSeparableConvModule as IterativeHead uses it: dw 3x3 + BN, 1x1 + BN + ReLU."""

    def __init__(self, cin, cout, eps):
        super().__init__()
        self.depthwise_conv = ConvNormAct(cin, cin, 3, 1, groups=cin, eps=eps)
        self.pointwise_conv = ConvNormAct(cin, cout, 1, act="relu", eps=eps)

    def forward(self, x):
        return self.pointwise_conv(self.depthwise_conv(x))


class IterativeHead(nn.Module):
    """From the lowest resolution up: add the bilinearly upsampled (align_corners=True) previous output,
    then a depthwise-separable conv C_k -> C_{k-1} (C_0 -> C_0 at the top).  Returns all levels,
    highest resolution first: widths (C_0, C_0, C_1, ..., C_{S-2})."""

    def __init__(self, chans, eps):
        super().__init__()
        rev = list(chans)[::-1]
        self.projects = nn.ModuleList([DepthwiseSeparable(rev[i], rev[min(i + 1, len(rev) - 1)], eps)
                                       for i in range(len(rev))])

    def forward(self, xs):
        y, last = [], None
        for s, project in zip(xs[::-1], self.projects):
            if last is not None:
                s = s + F.interpolate(last, size=s.shape[-2:], mode="bilinear", align_corners=True)
            last = project(s)
            y.append(last)
        return y[::-1]


class SimpleHead(nn.Module):
    """mmpose TopDownSimpleHead without deconvolutions: one 1x1 conv (bias) on the highest branch."""

    def __init__(self, cfg):
        super().__init__()
        self.final_layer = nn.Conv2d(branch_widths(cfg)[0], cfg.num_points, 1)

    def forward(self, xs):
        return self.final_layer(xs[0])


class MRHead(nn.Module):
    """Multi-resolution output module (Lite-HRNet Plus §3.2): a 1x1 conv (bias) per resolution to K
    heatmaps, each upsampled to the highest resolution, summed."""

    def __init__(self, cfg):
        super().__init__()
        self.final_layers = nn.ModuleList([nn.Conv2d(c, cfg.num_points, 1) for c in branch_widths(cfg)])
        self.mode, self.align_corners = cfg.mr_mode, cfg.mr_align_corners

    def forward(self, xs):
        size = xs[0].shape[-2:]
        out = self.final_layers[0](xs[0])                          # [B, K, H/4, W/4]
        kw = {"align_corners": self.align_corners} if self.mode == "bilinear" else {}
        for x, conv in zip(xs[1:], self.final_layers[1:]):
            out = out + F.interpolate(conv(x), size=size, mode=self.mode, **kw)
        return out


# ---------------------------------------------------------------------------------------------- model

class LiteHRNetBackbone(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        self.stem = Stem(cfg)
        prev = [cfg.stem_out_channels]
        for s, chans in enumerate(cfg.num_channels):
            trans = []
            for k in range(len(chans)):
                spec = transition_spec(prev, chans, k)
                if spec is None:
                    trans.append(None)
                elif k < len(prev):
                    trans.append(build_sequential(spec, cfg.bn_eps))
                else:
                    trans.append(nn.Sequential(*[build_sequential(st, cfg.bn_eps) for st in spec]))
            setattr(self, f"transition{s}", nn.ModuleList(trans))
            setattr(self, f"stage{s}", nn.Sequential(*[
                LiteHRModule(chans, cfg.num_blocks[s], cfg.reduce_ratios[s], cfg)
                for _ in range(cfg.num_modules[s])]))
            prev = list(chans)
        if cfg.iterative_head:
            self.head_layer = IterativeHead(cfg.num_channels[-1], cfg.bn_eps)

    def forward(self, x):
        """[B, 3, H, W] -> list of branches, highest resolution first."""
        ys = [self.stem(x)]
        for s, chans in enumerate(self.cfg.num_channels):
            trans = getattr(self, f"transition{s}")
            xs = []
            for k in range(len(chans)):
                if trans[k] is None:
                    xs.append(ys[k])
                else:
                    xs.append(trans[k](ys[k] if k < len(ys) else ys[-1]))
            ys = getattr(self, f"stage{s}")(xs)
        return self.head_layer(ys) if self.cfg.iterative_head else ys


class LiteHRNet(nn.Module):
    """Backbone + keypoint head: [B, 3, H, W] -> heatmaps [B, K, H/4, W/4] (the raw head output:
    train with MSE on it, or BCE with it as logits)."""

    arch = ARCH

    def __init__(self, cfg: Config = None):
        super().__init__()
        self.cfg = cfg or Config()
        self.backbone = LiteHRNetBackbone(self.cfg)
        self.keypoint_head = MRHead(self.cfg) if self.cfg.head == "mr" else SimpleHead(self.cfg)

    def forward(self, x):
        return self.keypoint_head(self.backbone(x))


# -------------------------------------------------------------------------------------------- decoding

def argmax_subpixel(heatmaps):
    """[B, K, h, w] -> (heatmap-pixel (x, y) [B, K, 2], maxima [B, K]): the first maximum (row-major),
    moved a quarter pixel toward the higher neighbour when 1 < x < w-1 and 1 < y < h-1 (HRNet / mmpose
    post-processing; ``lmref.ops.argmax_subpixel``)."""
    B, K, h, w = heatmaps.shape
    flat = heatmaps.reshape(B, K, h * w)
    maxvals, idx = flat.max(dim=-1)                                # torch returns the first maximum
    y, x = idx // w, idx % w

    def at(yy, xx):
        return torch.gather(flat, 2, (yy.clamp(0, h - 1) * w + xx.clamp(0, w - 1))[..., None])[..., 0]

    inside = (x > 1) & (x < w - 1) & (y > 1) & (y < h - 1)
    dx = torch.sign(at(y, x + 1) - at(y, x - 1))
    dy = torch.sign(at(y + 1, x) - at(y - 1, x))
    coords = torch.stack([x, y], dim=-1).to(heatmaps.dtype)
    return coords + torch.where(inside[..., None], 0.25 * torch.stack([dx, dy], dim=-1), 0.0), maxvals


def decode(heatmaps, method="argmax", input_size=None, beta=1.0):
    """Heatmaps [B, K, h, w] -> (landmarks [B, K, 2] as input-pixel (x, y), scores [B, K]); the
    methods and the pixel convention are those of ``lmref.models.litehrnet.decode``."""
    from .aam_head import soft_argmax
    B, K, h, w = heatmaps.shape
    H, W = input_size if input_size is not None else (4 * h, 4 * w)
    scores = heatmaps.reshape(B, K, h * w).amax(dim=-1)
    if method == "argmax":
        uv, scores = argmax_subpixel(heatmaps)
    elif method in ("soft_argmax", "soft_argmax_softmax"):
        xy = soft_argmax(F.relu(heatmaps), "star") if method == "soft_argmax" else \
            soft_argmax(heatmaps, "softmax", beta)                  # [B, K, 2] in [-1, 1]
        uv = (xy + 1) * xy.new_tensor([(w - 1) / 2, (h - 1) / 2])
    else:
        raise ValueError(f"decode: method must be 'argmax', 'soft_argmax' or 'soft_argmax_softmax', got {method!r}")
    return uv * uv.new_tensor([W / w, H / h]), scores
