"""BatchNorm folding: an inference BatchNorm after a convolution is an affine map per output channel,

    BN(conv(x, W) + b) = conv(x, W * s) + (b - mean) * s + beta,   s = gamma / sqrt(var + eps)

(``lmref.ops.fold_batch_norm``), so the fast layer runs the models' conv + BatchNorm blocks as one conv
with the folded weights, computed once per parameter array (``buffers.derived``) from the parameters
the model was given: nothing in the model's parameter dict changes, and a trace (which runs the
blocks themselves) shows every BatchNorm with its own output.
"""
from ..models import common, litehrnet
from ..ops import conv2d, fold_batch_norm
from . import buffers
from .registry import replaces


def folded(conv, bn, eps):
    """(W', b') of a conv ({"weight", ["bias"]}) followed by a BatchNorm (running statistics and
    optional affine), computed once per conv weight and eps."""
    return buffers.derived(conv["weight"], ("fold", eps), lambda: fold_batch_norm(
        conv["weight"], conv.get("bias"), bn["running_mean"], bn["running_var"], bn.get("weight"),
        bn.get("bias"), eps=eps))


@replaces(common.conv_norm_act)
def conv_norm_act(x, p, stride=1, padding=None, groups=1, act_name=None, eps=1e-5):
    """conv with the BatchNorm folded in -> activation (``common.conv_norm_act`` in one op less)."""
    w, b = folded(p["conv"], p["bn"], eps)
    if padding is None:
        padding = (w.shape[2] // 2, w.shape[3] // 2)
    return common.act(conv2d(x, w, b, stride=stride, padding=padding, groups=groups), act_name, inplace=True)


@replaces(litehrnet.conv_bn)
def conv_bn(x, p, stride=1, groups=1, act=None, eps=1e-5):
    """Lite-HRNet's conv + BN (+ activation) as one conv with the BatchNorm folded in."""
    w, b = folded(p["conv"], p["bn"], eps)
    x = conv2d(x, w, b, stride=stride, padding=w.shape[2] // 2, groups=groups)
    return x if act is None else common.act(x, act)


def folded_spec(p, spec, eps):
    """A layer spec (``litehrnet.fuse_spec``) and its parameters with every conv + BatchNorm pair
    replaced by the folded conv (a bias, and no "bn" item): (spec', p'), computed once."""
    def fold():
        out_spec, out_p, k = [], {}, 0
        while k < len(spec):
            item, q = spec[k], p.get(str(k))
            if item[0] == "conv" and k + 1 < len(spec) and spec[k + 1][0] == "bn":
                w, b = fold_batch_norm(q["weight"], q.get("bias"), p[str(k + 1)]["running_mean"],
                                       p[str(k + 1)]["running_var"], p[str(k + 1)]["weight"],
                                       p[str(k + 1)]["bias"], eps=eps)
                q, k = {"weight": w, "bias": b}, k + 1                       # the BN item is dropped
            out_p[str(len(out_spec))] = q
            out_spec.append(item)
            k += 1
        return out_spec, out_p
    return buffers.derived(p["0"]["weight"], ("fold spec", eps), fold)


@replaces(litehrnet.sequential)
def sequential(x, p, spec, size=None, eps=1e-5):
    """``litehrnet.sequential`` on the folded spec: one conv where the spec has conv + BN."""
    spec, p = folded_spec(p, spec, eps)
    return sequential.definition(x, p, spec, size=size, eps=eps)
