"""batch_norm, group_norm and instance_norm, fast: the definitions' formulas (``lmref.ops.norm``) with
the per-channel factors combined first and the big arrays touched fewer times."""
import numpy as np

from ..ops import norm as D
from . import threads
from .registry import replaces


@replaces(D.batch_norm)
def batch_norm(x, running_mean, running_var, weight=None, bias=None, eps=1e-5):
    """(x - mean) * s + bias with s = weight / sqrt(var + eps) precomputed per channel [C]:
    three passes over x into one output (the definition makes four, each into a new array),
    channels split over threads."""
    D._batch_norm_args(x, running_mean, running_var, weight, bias, eps)
    dt = x.dtype.type
    s = 1 / np.sqrt(running_var + dt(eps))                                 # [C]
    if weight is not None:
        s = s * weight
    y = np.empty_like(x)
    m, s = D._per_channel(running_mean, x.ndim), D._per_channel(s, x.ndim)     # [C, 1, ...]
    b = None if bias is None else D._per_channel(bias, x.ndim)

    def part(c0, c1):
        yc = y[:, c0:c1]
        np.subtract(x[:, c0:c1], m[c0:c1], out=yc)                         # [B, c, *]
        yc *= s[c0:c1]
        if b is not None:
            yc += b[c0:c1]

    threads.parallel(x.shape[1], part, x.size)
    return y


@replaces(D.group_norm)
def group_norm(x, num_groups, weight=None, bias=None, eps=1e-5):
    D._group_norm_args(x, num_groups, weight, bias, eps)
    if not x.size:
        return group_norm.definition(x, num_groups, weight, bias, eps)
    return _group_norm(x, int(num_groups), weight, bias, eps)


@replaces(D.instance_norm)
def instance_norm(x, weight=None, bias=None, eps=1e-5):
    D._instance_norm_args(x, weight, bias, eps)
    return _group_norm(x, x.shape[1], weight, bias, eps)                   # one group per channel


def _group_norm(x, num_groups, weight, bias, eps):
    """Group statistics as in the definition's ``_normalize`` (mean, then the biased variance of
    x - mean), with the sum of squares as a dot product (no squared temporary) and
    1/sqrt(var + eps) * weight folded into one factor per (sample, channel).  x [B, C, *] -> [B, C, *]."""
    B, C = x.shape[:2]
    dt = x.dtype.type
    g = x.reshape(B, num_groups, -1)                                       # [B, G, M]
    with np.errstate(over="ignore", invalid="ignore"):
        d = g - g.mean(axis=2, keepdims=True)                              # [B, G, M]
        ss = np.matmul(d[:, :, None, :], d[:, :, :, None])[:, :, 0, 0]     # sum of squares [B, G]
        var = D._overflow_to_nan((ss / dt(g.shape[2]))[:, :, None], d, 2)[:, :, 0]   # [B, G]
        rstd = 1 / np.sqrt(var + dt(eps))                                  # [B, G]
    scale = np.repeat(rstd, C // num_groups, axis=1)                       # [B, C]
    if weight is not None:
        scale = scale * weight
    y = d.reshape(x.shape)                                                 # [B, C, *], owns its data
    y *= scale.reshape((B, C) + (1,) * (x.ndim - 2))
    if bias is not None:
        y += D._per_channel(bias, x.ndim)
    return y
