"""Building blocks shared by several lmref models (mirrors torch_impl/models/common.py)."""
from .. import ops
from ..trace import replaceable, scope



def act(x, name, inplace=False):
    """Apply an activation by name (None = identity); inplace=True lets silu overwrite an x the caller owns."""
    if name is None or name == "identity":
        return x
    if inplace and name == "silu":
        return ops.silu(x, inplace=True)
    return getattr(ops, name)(x)


@replaceable
def conv_norm_act(x, p, stride=1, padding=None, groups=1, act_name=None, eps=1e-5):
    """conv (no bias) -> BatchNorm -> activation; keys ``conv.weight`` and ``bn.*`` (timm ConvNormAct,
    mmcv ConvModule).  padding=None means 'same' for odd kernels: k // 2.  (``lmref.fast`` runs it as
    one conv with the BatchNorm folded in.)
    x: [B, Cin, H, W] -> [B, Cout, H/stride, W/stride]"""
    w = p["conv"]["weight"]
    if padding is None:
        padding = (w.shape[2] // 2, w.shape[3] // 2)
    with scope("conv"):
        x = ops.conv2d(x, w, p["conv"].get("bias"), stride=stride, padding=padding, groups=groups)
    with scope("bn"):
        bn = p["bn"]
        x = ops.batch_norm(x, bn["running_mean"], bn["running_var"], bn["weight"], bn["bias"], eps=eps)
    return act(x, act_name, inplace=True)                                    # x: this call's own output
