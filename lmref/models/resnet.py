"""ResNet (He et al. 2016) in plain NumPy ops; the Compact-KD report's ResNet-50 teacher.

"Knowledge Distillation for Compact Facial Landmark Detection" (Shukla & Huang 2021), Table 1: a
ResNet-50 (bottleneck blocks 3-4-6-3) reading a grayscale face and regressing 136 = 68 x 2 numbers
through fc [2048, 136].  Table 2 gives 23,780,424 trainable parameters, which is exactly the
ImageNet ResNet-50 count (25,557,032 with a 3-channel conv1 and a 1000-way fc) with

    conv1  7*7*3*64 = 9,408  ->  7*7*1*64 = 3,136          (-6,272)
    fc     2048*1000 + 1000  ->  2048*136 + 136 = 278,664  (-1,770,336)

Keys are timm's / torchvision's: ``conv1``, ``bn1``, ``layer{1..4}.{j}.conv{1,2,3}``,
``.bn{1,2,3}``, ``.downsample.0`` (1x1 conv) / ``.downsample.1`` (BN), ``fc``.  Stride sits on the
3x3 conv of a bottleneck ("v1.5", torchvision >= 0.5, timm ``resnet50``).
"""
from dataclasses import dataclass

from .. import ops
from ..ops._check import check_array
from ..trace import scope

ARCH = "resnet"

EXPANSION = {"basic": 1, "bottleneck": 4}


@dataclass(frozen=True)
class Config:
    layers: tuple = (3, 4, 6, 3)    # blocks per stage; (3, 4, 6, 3) + bottleneck = ResNet-50
    block: str = "bottleneck"       # "basic" (ResNet-18/34) or "bottleneck" (ResNet-50/101/152)
    in_chans: int = 1               # grayscale input (the report's teacher)
    num_outputs: int = 136          # 68 landmarks x (x, y)
    stem_width: int = 64            # conv1 width; stage i has stem_width * 2**i planes
    eps: float = 1e-5               # BatchNorm epsilon

    def __post_init__(self):
        object.__setattr__(self, "layers", tuple(int(d) for d in self.layers))
        if self.block not in EXPANSION:
            raise ValueError(f"block: expected one of {sorted(EXPANSION)}, got {self.block!r}")
        if not self.layers or any(d < 1 for d in self.layers):
            raise ValueError(f"layers: expected positive block counts, got {self.layers}")
        for name in ("in_chans", "num_outputs", "stem_width"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name}: expected a positive int, got {getattr(self, name)}")


def stage_widths(cfg):
    """Planes of each stage: 64, 128, 256, 512 for ResNet-50 (outputs are 4x that for bottlenecks)."""
    return [cfg.stem_width * 2 ** i for i in range(len(cfg.layers))]


def num_features(cfg):
    """Channels of the last feature map (2048 for ResNet-50)."""
    return stage_widths(cfg)[-1] * EXPANSION[cfg.block]


def _bn_shapes(prefix, c):
    return {f"{prefix}.{k}": (c,) for k in ("weight", "bias", "running_mean", "running_var")}


def param_shapes(cfg):
    """{state-dict key: shape}, in torch_impl's state-dict order."""
    shapes = {"conv1.weight": (cfg.stem_width, cfg.in_chans, 7, 7), **_bn_shapes("bn1", cfg.stem_width)}
    cin, e = cfg.stem_width, EXPANSION[cfg.block]
    for i, (depth, planes) in enumerate(zip(cfg.layers, stage_widths(cfg))):
        for j in range(depth):
            p = f"layer{i + 1}.{j}"
            stride = 2 if (i > 0 and j == 0) else 1
            if cfg.block == "basic":
                convs = [(planes, cin, 3), (planes, planes, 3)]
            else:
                convs = [(planes, cin, 1), (planes, planes, 3), (planes * e, planes, 1)]
            for k, (co, ci, ks) in enumerate(convs, start=1):
                shapes[f"{p}.conv{k}.weight"] = (co, ci, ks, ks)
                shapes.update(_bn_shapes(f"{p}.bn{k}", co))
            if stride != 1 or cin != planes * e:
                shapes[f"{p}.downsample.0.weight"] = (planes * e, cin, 1, 1)
                shapes.update(_bn_shapes(f"{p}.downsample.1", planes * e))
            cin = planes * e
    shapes["fc.weight"] = (cfg.num_outputs, cin)
    shapes["fc.bias"] = (cfg.num_outputs,)
    return shapes


def conv_bn(x, conv, bn, stride=1, padding=0, eps=1e-5):
    """conv (no bias) -> inference BatchNorm.  [B, Cin, H, W] -> [B, Cout, H/stride, W/stride]"""
    x = ops.conv2d(x, conv["weight"], None, stride=stride, padding=padding)
    return ops.batch_norm(x, bn["running_mean"], bn["running_var"], bn["weight"], bn["bias"], eps=eps)


def block(x, p, stride, kind, eps):
    """One residual block: y = ReLU(F(x) + shortcut(x)).  [B, Cin, H, W] -> [B, Cout, H/s, W/s]"""
    if "downsample" in p:
        with scope("downsample"):
            shortcut = conv_bn(x, p["downsample"]["0"], p["downsample"]["1"], stride, 0, eps)
    else:
        shortcut = x
    if kind == "basic":
        # 3x3 (stride s) -> 3x3
        with scope("conv1"):
            x = ops.relu(conv_bn(x, p["conv1"], p["bn1"], stride, 1, eps))
        with scope("conv2"):
            x = conv_bn(x, p["conv2"], p["bn2"], 1, 1, eps)
    else:
        # 1x1 reduce -> 3x3 (stride s) -> 1x1 expand x4
        with scope("conv1"):
            x = ops.relu(conv_bn(x, p["conv1"], p["bn1"], 1, 0, eps))   # [B, Cin, H, W] -> [B, P, H, W]
        with scope("conv2"):
            x = ops.relu(conv_bn(x, p["conv2"], p["bn2"], stride, 1, eps))  # -> [B, P, H/s, W/s]
        with scope("conv3"):
            x = conv_bn(x, p["conv3"], p["bn3"], 1, 0, eps)             # -> [B, 4P, H/s, W/s]
    return ops.relu(x + shortcut)


def forward_features(params, x, cfg):
    """[B, in_chans, H, W] -> [B, num_features, H/32, W/32] (the last conv feature map)."""
    x = check_array(x, "x", ndim=4)
    if x.shape[1] != cfg.in_chans:
        raise ValueError(f"x: expected {cfg.in_chans} input channels, got shape {x.shape}")
    with scope("conv1"):
        x = ops.relu(conv_bn(x, params["conv1"], params["bn1"], 2, 3, cfg.eps))  # -> [B, 64, H/2, W/2]
    with scope("maxpool"):
        x = ops.max_pool2d(x, 3, 2, 1)                                          # -> [B, 64, H/4, W/4]
    for i, depth in enumerate(cfg.layers):
        name = f"layer{i + 1}"
        for j in range(depth):
            with scope(f"{name}.{j}"):
                stride = 2 if (i > 0 and j == 0) else 1
                x = block(x, params[name][str(j)], stride, cfg.block, cfg.eps)
    return x


def forward(params, x, cfg):
    """[B, in_chans, H, W] -> [B, num_outputs] (136 = 68 landmarks x 2 for the report's teacher)."""
    x = forward_features(params, x, cfg)                  # [B, 2048, h, w]
    with scope("global_pool"):
        x = ops.adaptive_avg_pool2d(x, 1)                 # -> [B, 2048, 1, 1]
    x = x.reshape(x.shape[0], -1)                         # -> [B, 2048]
    with scope("fc"):
        return ops.linear(x, params["fc"]["weight"], params["fc"]["bias"])  # -> [B, 136]
