"""Stud5: the compact student of "Knowledge Distillation for Compact Facial Landmark Detection"
(Shukla & Huang 2021), in plain NumPy ops.

What the report says (section 3.2.2, Tables 1 and 2):
  * 5 convolution blocks, each ONE 3x3 conv with 64, 128, 256, 512, 512 output channels (VGG-like,
    after TCDNN), each conv followed by a 2x2 max-pool; then one fully connected layer [512, 136];
  * grayscale input, 136 = 68 x 2 outputs; 3,982,344 trainable parameters; BatchNorm after each conv
    (the project brief; the count below confirms it).

Derivation of the exact configuration from the count 3,982,344:

    conv weights  3*3*(1*64 + 64*128 + 128*256 + 256*512 + 512*512) = 3,908,160
    conv biases   64 + 128 + 256 + 512 + 512                         =     1,472
    BN gamma/beta 2 * 1,472                                          =     2,944
    fc            512*136 + 136                                      =    69,768
    total                                                            = 3,982,344   (exact)

so every conv keeps its bias (PyTorch's ``nn.Conv2d`` default) even though BatchNorm follows it
(without the biases: 3,980,872; without BN: 3,979,400 -- neither is the reported number), BN is
affine, and the running statistics are not counted (not trainable).  The fc has 512 inputs, i.e.
the 512-channel map of block 5 is reduced to one vector; the report does not give the input size.
With 5 max-pools (floor) any side from 32 to 63 px leaves a 1x1 map; we take a global average
pool before the fc, which equals flattening that 1x1 map and also accepts larger faces (the map is
then H/32 x W/32, the same stride as ResNet-50's last map, so the two line up for CKD).
Choices not stated in the report: padding 1 ("same"), ReLU after BN, order conv-BN-ReLU-pool.

Keys: ``blocks.{i}.conv.{weight,bias}``, ``blocks.{i}.bn.*`` (the shared ConvNormAct layout) and
``fc.{weight,bias}``.
"""
from dataclasses import dataclass

from .. import ops
from ..ops._check import check_array
from ..trace import scope
from .common import conv_norm_act

ARCH = "stud5"


@dataclass(frozen=True)
class Config:
    channels: tuple = (64, 128, 256, 512, 512)   # out channels of the 5 conv blocks (Table 1)
    kernel_size: int = 3
    in_chans: int = 1                            # grayscale
    num_outputs: int = 136                       # 68 landmarks x (x, y)
    eps: float = 1e-5                            # BatchNorm epsilon

    def __post_init__(self):
        object.__setattr__(self, "channels", tuple(int(c) for c in self.channels))
        if not self.channels or any(c < 1 for c in self.channels):
            raise ValueError(f"channels: expected positive widths, got {self.channels}")
        if self.kernel_size < 1 or self.kernel_size % 2 == 0:
            raise ValueError(f"kernel_size: expected a positive odd int, got {self.kernel_size}")
        for name in ("in_chans", "num_outputs"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name}: expected a positive int, got {getattr(self, name)}")


def num_features(cfg):
    """Channels of the last conv feature map (512)."""
    return cfg.channels[-1]


def param_shapes(cfg):
    """{state-dict key: shape}, in torch_impl's state-dict order."""
    shapes, cin, k = {}, cfg.in_chans, cfg.kernel_size
    for i, c in enumerate(cfg.channels):
        shapes[f"blocks.{i}.conv.weight"] = (c, cin, k, k)
        shapes[f"blocks.{i}.conv.bias"] = (c,)
        for name in ("weight", "bias", "running_mean", "running_var"):
            shapes[f"blocks.{i}.bn.{name}"] = (c,)
        cin = c
    shapes["fc.weight"] = (cfg.num_outputs, cin)
    shapes["fc.bias"] = (cfg.num_outputs,)
    return shapes


def forward_features(params, x, cfg):
    """5 x (conv 3x3 + bias -> BN -> ReLU -> max-pool 2x2).
    [B, 1, H, W] -> [B, 512, H/32, W/32] (floor at each pool): the map CKD distils."""
    x = check_array(x, "x", ndim=4)
    if x.shape[1] != cfg.in_chans:
        raise ValueError(f"x: expected {cfg.in_chans} input channels, got shape {x.shape}")
    n = len(cfg.channels)
    if min(x.shape[2:]) < 2 ** n:
        raise ValueError(f"x: spatial size {x.shape[2:]} is below {2 ** n}, the {n} max-pools "
                         f"would leave an empty map")
    for i in range(n):
        with scope(f"blocks.{i}"):
            x = conv_norm_act(x, params["blocks"][str(i)], act_name="relu", eps=cfg.eps)  # [B, c_i, h, w]
            x = ops.max_pool2d(x, 2)                                       # -> [B, c_i, h/2, w/2]
    return x


def forward(params, x, cfg):
    """[B, 1, H, W] -> [B, 136]."""
    x = forward_features(params, x, cfg)          # [B, 512, h, w]   (1x1 for 32..63 px input)
    with scope("global_pool"):
        x = ops.adaptive_avg_pool2d(x, 1)         # -> [B, 512, 1, 1]
    x = x.reshape(x.shape[0], -1)                 # -> [B, 512]
    with scope("fc"):
        return ops.linear(x, params["fc"]["weight"], params["fc"]["bias"])  # -> [B, 136]
