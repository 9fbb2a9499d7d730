"""Normalisation layers: batch_norm (inference), group_norm, instance_norm, layer_norm.

All follow torch's convention for eps and the variance:

    y = (x - mean) / sqrt(var + eps) * weight + bias,   var = mean((x - mean)^2)   (biased, divide by n)

eps sits *inside* the square root, and the variance is the biased one (torch uses the biased
variance for normalising; only the running_var update of training-mode BatchNorm is unbiased).
They differ only in which axes the statistics run over:

    batch_norm     precomputed running_mean / running_var per channel        (inference)
    group_norm     per sample, over (C/G channels of a group) x spatial
                   (num_groups=1: over C x H x W jointly -- MobileViT-v2's "LayerNorm2d")
    instance_norm  per sample and channel, over spatial
    layer_norm     per position, over the trailing normalized_shape dims

A variance whose sum of squares overflows is recomputed scaled by max|x - mean|; one beyond the
dtype's range gives NaN, as torch does (float32 ~1e20 and up; tests/test_hostile.py, F19), never
the plausible zeros of d / sqrt(inf).

Faster batch_norm, group_norm and instance_norm kernels (per-channel factors combined first) are in
``lmref.fast.norm``.
"""
import numpy as np

from ..trace import op
from ._check import check_array, check_same_dtype

__all__ = ["batch_norm", "group_norm", "instance_norm", "layer_norm"]


def _check_eps(eps, fn):
    if not isinstance(eps, (int, float, np.floating, np.integer)) or not eps >= 0:
        raise ValueError(f"{fn}: eps must be a number >= 0, got {eps!r}")


def _check_channel_params(fn, x, C, **params):
    """Each non-None param must be a 1-D array of C entries with x's dtype."""
    for name, v in params.items():
        if v is None:
            continue
        check_array(v, name, ndim=1)
        if v.shape[0] != C:
            raise ValueError(f"{fn}: {name} has {v.shape[0]} entries, x {x.shape} has {C} channels")
    check_same_dtype(("x", x), *params.items())


def _per_channel(v, ndim):
    """[C] -> [C, 1, ..., 1] so it broadcasts against [B, C, *spatial] of rank ndim."""
    return v.reshape(v.shape + (1,) * (ndim - 2))


def _overflow_to_nan(var, d, axes):
    """``var`` with overflow made visible: an inf sum of squares is recomputed scaled by max|d|, and a
    variance still beyond the dtype's range becomes NaN (as torch's), not a silent d / sqrt(inf) = 0."""
    over = np.isinf(var)
    if not over.any():
        return var
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        s = np.abs(d).max(axis=axes, keepdims=True)        # per group scale
        r = d / s
        scaled = (r * r).mean(axis=axes, keepdims=True) * s * s
        var = np.where(over, scaled, var)
    return np.where(np.isinf(var), var.dtype.type(np.nan), var)


def _normalize(x, axes, eps):
    """(x - mean) / sqrt(var + eps), mean and biased var over ``axes`` (kept as size 1)."""
    with np.errstate(over="ignore", invalid="ignore"):
        mean = x.mean(axis=axes, keepdims=True)
        d = x - mean
        var = (d * d).mean(axis=axes, keepdims=True)      # biased: divide by n
        var = _overflow_to_nan(var, d, axes)
        return d / np.sqrt(var + x.dtype.type(eps))


def _affine_per_channel(y, weight, bias):
    if weight is not None:
        y = y * _per_channel(weight, y.ndim)
    if bias is not None:
        y = y + _per_channel(bias, y.ndim)
    return y


def _batch_norm_args(x, running_mean, running_var, weight, bias, eps):
    check_array(x, "x", min_ndim=2)
    if running_mean is None or running_var is None:
        raise ValueError("batch_norm: running_mean and running_var are required (inference only)")
    _check_channel_params("batch_norm", x, x.shape[1], running_mean=running_mean, running_var=running_var,
                          weight=weight, bias=bias)
    _check_eps(eps, "batch_norm")


def _group_norm_args(x, num_groups, weight, bias, eps):
    check_array(x, "x", min_ndim=2)
    if not isinstance(num_groups, (int, np.integer)) or num_groups < 1:
        raise ValueError(f"group_norm: num_groups must be a positive int, got {num_groups!r}")
    if x.shape[1] % num_groups:
        raise ValueError(f"group_norm: num_groups={num_groups} does not divide the {x.shape[1]} channels of x {x.shape}")
    _check_channel_params("group_norm", x, x.shape[1], weight=weight, bias=bias)
    _check_eps(eps, "group_norm")


def _instance_norm_args(x, weight, bias, eps):
    check_array(x, "x", min_ndim=3)
    if int(np.prod(x.shape[2:])) <= 1:
        raise ValueError(f"instance_norm: expected more than 1 spatial element, got x of shape {x.shape}")
    _check_channel_params("instance_norm", x, x.shape[1], weight=weight, bias=bias)
    _check_eps(eps, "instance_norm")


@op
def batch_norm(x, running_mean, running_var, weight=None, bias=None, eps=1e-5):
    """Inference BatchNorm, as ``F.batch_norm(..., training=False)``: x [B, C, *], running_mean /
    running_var / weight / bias [C] -> (x - running_mean) / sqrt(running_var + eps) * weight + bias."""
    _batch_norm_args(x, running_mean, running_var, weight, bias, eps)
    y = (x - _per_channel(running_mean, x.ndim)) / np.sqrt(_per_channel(running_var, x.ndim) + x.dtype.type(eps))
    return _affine_per_channel(y, weight, bias)


@op
def group_norm(x, num_groups, weight=None, bias=None, eps=1e-5):
    """GroupNorm, as ``F.group_norm``: x [B, C, *] -> [B, C, *], statistics per sample over each of
    num_groups consecutive channel groups and all positions, then weight / bias [C] per channel.
    num_groups=1 (MobileViT-v2's LayerNorm2d) is over C x H x W jointly, *not* layer_norm over C."""
    _group_norm_args(x, num_groups, weight, bias, eps)
    g = x.reshape(x.shape[0], int(num_groups), -1)                  # [B, C, *] -> [B, G, C/G * prod(*)]
    y = _normalize(g, axes=2, eps=eps).reshape(x.shape)   # -> [B, C, *]
    return _affine_per_channel(y, weight, bias)


@op
def instance_norm(x, weight=None, bias=None, eps=1e-5):
    """InstanceNorm, as ``F.instance_norm`` without running stats: statistics per (sample, channel)
    over the positions of x [B, C, *spatial] (more than one); weight / bias [C] optional."""
    _instance_norm_args(x, weight, bias, eps)
    y = _normalize(x, axes=tuple(range(2, x.ndim)), eps=eps)   # [B, C, *] -> [B, C, *]
    return _affine_per_channel(y, weight, bias)


@op
def layer_norm(x, normalized_shape, weight=None, bias=None, eps=1e-5):
    """LayerNorm, as ``torch.nn.functional.layer_norm``.

    normalized_shape: int or tuple, must equal the trailing dims of x; weight / bias have exactly that
    shape (optional).  Mean and biased variance are taken over those trailing dims, per leading index.
    x [..., *normalized_shape] -> same shape."""
    check_array(x, "x", min_ndim=1)
    if isinstance(normalized_shape, (int, np.integer)):
        normalized_shape = (normalized_shape,)
    ns = tuple(int(n) for n in normalized_shape)
    k = len(ns)
    if k == 0 or k > x.ndim or tuple(x.shape[x.ndim - k:]) != ns:
        raise ValueError(f"layer_norm: normalized_shape {ns} does not match the trailing dims of x {x.shape}")
    for name, v in (("weight", weight), ("bias", bias)):
        if v is not None:
            check_array(v, name)
            if v.shape != ns:
                raise ValueError(f"layer_norm: {name} has shape {v.shape}, expected normalized_shape {ns}")
    check_same_dtype(("x", x), ("weight", weight), ("bias", bias))
    _check_eps(eps, "layer_norm")
    y = _normalize(x, axes=tuple(range(x.ndim - k, x.ndim)), eps=eps)   # [..., *ns] -> [..., *ns]
    if weight is not None:
        y = y * weight
    if bias is not None:
        y = y + bias
    return y
