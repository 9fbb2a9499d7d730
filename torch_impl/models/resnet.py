"""ResNet (He et al. 2016) with timm's module and state-dict names; the Compact-KD report's teacher.

The teacher of "Knowledge Distillation for Compact Facial Landmark Detection" (Shukla & Huang 2021,
Table 1) is a ResNet-50 that reads a 1-channel (grayscale) face and regresses 68 x 2 = 136 numbers:
``Config()`` builds it, 23,780,424 parameters (Table 2).  Keys are timm's / torchvision's
(``conv1``, ``bn1``, ``layer1.0.conv1`` ..., ``layer1.0.downsample.0/.1``, ``fc``), so ImageNet
ResNet weights load after summing conv1 over its RGB input channels (done by the caller).

The configuration dataclass lives in :mod:`lmref.models.resnet` (one definition for both halves).
"""
import torch
from torch import nn

from lmref.models.resnet import ARCH, Config, stage_widths  # noqa: F401  (Config shared with lmref)


class BasicBlock(nn.Module):
    """3x3 -> 3x3 residual block (ResNet-18/34).  x: [B, Cin, H, W] -> [B, planes, H/s, W/s]"""
    expansion = 1

    def __init__(self, cin, planes, stride=1, eps=1e-5):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes, eps=eps)
        self.act1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes, eps=eps)
        self.act2 = nn.ReLU(inplace=True)
        self.downsample = _downsample(cin, planes, stride, eps)

    def forward(self, x):
        shortcut = x if self.downsample is None else self.downsample(x)
        x = self.act1(self.bn1(self.conv1(x)))
        x = self.bn2(self.conv2(x))
        return self.act2(x + shortcut)


class Bottleneck(nn.Module):
    """1x1 -> 3x3 (stride here, "ResNet v1.5") -> 1x1 x4 residual block (ResNet-50/101/152).
    x: [B, Cin, H, W] -> [B, 4 planes, H/s, W/s]"""
    expansion = 4

    def __init__(self, cin, planes, stride=1, eps=1e-5):
        super().__init__()
        cout = planes * self.expansion
        self.conv1 = nn.Conv2d(cin, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes, eps=eps)
        self.act1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes, eps=eps)
        self.act2 = nn.ReLU(inplace=True)
        self.conv3 = nn.Conv2d(planes, cout, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout, eps=eps)
        self.act3 = nn.ReLU(inplace=True)
        self.downsample = _downsample(cin, cout, stride, eps)

    def forward(self, x):
        shortcut = x if self.downsample is None else self.downsample(x)
        x = self.act1(self.bn1(self.conv1(x)))
        x = self.act2(self.bn2(self.conv2(x)))
        x = self.bn3(self.conv3(x))
        return self.act3(x + shortcut)


def _downsample(cin, cout, stride, eps):
    """Projection shortcut (1x1 conv, stride s, + BN) where the shape changes; keys downsample.0/.1."""
    if stride == 1 and cin == cout:
        return None
    return nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout, eps=eps))


BLOCKS = {"basic": BasicBlock, "bottleneck": Bottleneck}


class ResNet(nn.Module):
    """stem (7x7/2 conv, BN, ReLU, 3x3/2 max-pool) -> layer1..4 -> global average pool -> fc.

    forward(x): [B, in_chans, H, W] -> [B, num_outputs]; forward_features(x): -> [B, num_features,
    H/32, W/32] (the last conv feature map, what CKD distils).
    """

    arch = ARCH

    def __init__(self, cfg: Config = Config()):
        super().__init__()
        self.cfg = cfg
        block = BLOCKS[cfg.block]
        eps = cfg.eps
        self.conv1 = nn.Conv2d(cfg.in_chans, cfg.stem_width, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(cfg.stem_width, eps=eps)
        self.act1 = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        cin = cfg.stem_width
        for i, (depth, planes) in enumerate(zip(cfg.layers, stage_widths(cfg))):
            blocks = []
            for j in range(depth):
                stride = 2 if (i > 0 and j == 0) else 1
                blocks.append(block(cin, planes, stride, eps))
                cin = planes * block.expansion
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
        self.num_features = cin
        self.feature_stride = 2 ** (len(cfg.layers) + 1)
        self.fc = nn.Linear(cin, cfg.num_outputs)
        self.reset_parameters()

    def reset_parameters(self):
        """torchvision/timm init: Kaiming-normal (fan_out) convs, BN weight 1 / bias 0, default fc."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    @property
    def stages(self):
        return [getattr(self, f"layer{i + 1}") for i in range(len(self.cfg.layers))]

    def forward_features(self, x):
        if x.ndim != 4 or x.shape[1] != self.cfg.in_chans:
            raise ValueError(f"x: expected [B, {self.cfg.in_chans}, H, W], got {tuple(x.shape)}")
        x = self.maxpool(self.act1(self.bn1(self.conv1(x))))    # [B, C, H, W] -> [B, 64, H/4, W/4]
        for stage in self.stages:
            x = stage(x)                                        # -> [B, 256 .. 2048, H/4 .. H/32, ..]
        return x

    def forward_head(self, x):
        x = torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1)  # [B, F, h, w] -> [B, F]
        return self.fc(x)                                              # [B, F] -> [B, num_outputs]

    def forward(self, x):
        return self.forward_head(self.forward_features(x))
