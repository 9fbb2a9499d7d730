"""Building blocks shared by several torch_impl models (mirrors lmref/models/common.py)."""
from torch import nn

ACTIVATIONS = {None: nn.Identity, "identity": nn.Identity, "relu": nn.ReLU, "silu": nn.SiLU,
               "relu6": nn.ReLU6, "sigmoid": nn.Sigmoid, "gelu": nn.GELU}


class ConvNormAct(nn.Module):
    """conv (no bias unless ``bias=True``) -> BatchNorm -> activation; keys ``conv.weight`` (and
    ``conv.bias``) and ``bn.*``."""

    def __init__(self, cin, cout, kernel_size, stride=1, padding=None, groups=1, act=None, eps=1e-5,
                 bias=False):
        super().__init__()
        if padding is None:
            padding = kernel_size // 2
        self.conv = nn.Conv2d(cin, cout, kernel_size, stride, padding, groups=groups, bias=bias)
        self.bn = nn.BatchNorm2d(cout, eps=eps)
        self.act = ACTIVATIONS[act]()

    def forward(self, x):
        return self.act(self.bn(self.conv(x)))
