"""Element-wise activations and softmax, with torch.nn.functional's definitions.

    relu(x)        = max(x, 0)
    relu6(x)       = min(max(x, 0), 6)
    sigmoid(x)     = 1 / (1 + exp(-x))
    silu(x)        = x * sigmoid(x)                                   (a.k.a. swish)
    gelu(x)        = x/2 * (1 + erf(x / sqrt(2)))                     approximate="none"
                   = x/2 * (1 + tanh(sqrt(2/pi) * (x + 0.044715 x^3))) approximate="tanh"
    hardsigmoid(x) = min(max(x + 3, 0), 6) / 6
    hardswish(x)   = x * min(max(x + 3, 0), 6) / 6
    leaky_relu(x)  = x if x > 0 else negative_slope * x
    prelu(x, w)    = x if x > 0 else w_c * x                          w per channel (dim 1) or one
    clamp(x)       = min(max(x, min), max)                            either bound may be None
    softmax(x)_i   = exp(x_i - max x) / sum_j exp(x_j - max x)        along ``dim``
    log_softmax(x)_i = (x_i - max x) - log sum_j exp(x_j - max x)

All take [*] and return [*] in x's dtype (softmax / log_softmax along one dim of [*]), always an
ndarray (``np.asarray``: NumPy ufuncs turn a 0-d array into a scalar).
Faster sigmoid and silu kernels (fewer temporaries, threads) are in ``lmref.fast.activation``.
"""
import math

import numpy as np

from ..trace import op
from ._check import check_array, check_same_dtype

__all__ = ["relu", "relu6", "silu", "gelu", "sigmoid", "tanh", "hardswish", "hardsigmoid",
           "leaky_relu", "prelu", "clamp", "softmax", "log_softmax"]

_math_erf = np.frompyfunc(math.erf, 1, 1)


def erf(x):
    """The error function erf(x) = 2/sqrt(pi) * int_0^x exp(-t^2) dt, element-wise, in float64.

    NumPy has no erf, so this applies the C library's erf (``math.erf``, correctly rounded or
    within 1 ulp) to each element: exact to float64 precision, about 0.1 us per element -- faster
    than a vectorised series / continued-fraction evaluation of the same precision would be in NumPy.
    x: any float array -> float64 array of the same shape."""
    return np.asarray(_math_erf(np.asarray(x, dtype=np.float64)), dtype=np.float64)


def _sigmoid(x):
    """1 / (1 + exp(-x)) without overflow: with e = exp(-|x|) in (0, 1],
    sigmoid(x) = 1 / (1 + e) for x >= 0 and e / (1 + e) for x < 0."""
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e))


def _check_dim(dim, ndim, fn):
    if not isinstance(dim, (int, np.integer)) or isinstance(dim, bool):
        raise TypeError(f"{fn}: dim must be an int, got {dim!r}")
    if not -ndim <= dim < ndim:
        raise ValueError(f"{fn}: dim {dim} out of range for an array of rank {ndim}")
    return int(dim) % ndim


@op
def relu(x):
    """max(x, 0), as ``F.relu``.  [*] -> [*]"""
    check_array(x)
    return np.asarray(np.maximum(x, x.dtype.type(0)))


@op
def relu6(x):
    """min(max(x, 0), 6), as ``F.relu6`` (= hardtanh(x, 0, 6)).  [*] -> [*]"""
    check_array(x)
    return np.asarray(np.clip(x, x.dtype.type(0), x.dtype.type(6)))


@op
def sigmoid(x):
    """1 / (1 + exp(-x)), as ``torch.sigmoid``; no overflow for large |x|.  [*] -> [*]"""
    check_array(x)
    return np.asarray(_sigmoid(x))


@op
def tanh(x):
    """Hyperbolic tangent, as ``torch.tanh``.  [*] -> [*]"""
    check_array(x)
    return np.asarray(np.tanh(x))


def _silu_args(x, inplace):
    check_array(x)
    if inplace and not (x.flags.writeable and x.flags.c_contiguous):
        raise ValueError(f"silu: inplace=True needs a writeable C-contiguous array, got shape {x.shape} "
                         f"(writeable={x.flags.writeable}, C-contiguous={x.flags.c_contiguous})")


@op
def silu(x, inplace=False):
    """x * sigmoid(x), as ``F.silu`` (swish).  [*] -> [*]; inplace=True writes the result into x (a
    model's own fresh conv output, writeable and C-contiguous) and returns x."""
    _silu_args(x, inplace)
    y = np.asarray(x * _sigmoid(x))
    if inplace:
        x[...] = y
        return x
    return y


@op
def gelu(x, approximate="none"):
    """Gaussian error linear unit, as ``F.gelu(x, approximate=...)``.  [*] -> [*]

    approximate="none": x/2 * (1 + erf(x / sqrt(2)))  -- x times the standard normal CDF.
        erf is evaluated in float64 (see :func:`erf`) and the result rounded to x's dtype, so the
        float32 result is the float64 one rounded (torch's float32 kernel differs by ~1 ulp).
    approximate="tanh": x/2 * (1 + tanh(sqrt(2/pi) * (x + 0.044715 x^3)))  (Hendrycks & Gimpel),
        computed in x's dtype."""
    check_array(x)
    if approximate == "none":
        x64 = x.astype(np.float64)
        return np.asarray(0.5 * x64 * (1.0 + erf(x64 * (1 / math.sqrt(2))))).astype(x.dtype)
    if approximate == "tanh":
        k = x.dtype.type(math.sqrt(2 / math.pi))
        inner = k * (x + x.dtype.type(0.044715) * x * x * x)
        return np.asarray(x.dtype.type(0.5) * x * (1 + np.tanh(inner)))
    raise ValueError(f"gelu: approximate must be 'none' or 'tanh', got {approximate!r}")


@op
def hardsigmoid(x):
    """min(max(x + 3, 0), 6) / 6, as ``F.hardsigmoid``.  [*] -> [*]"""
    check_array(x)
    return np.asarray(np.clip(x + 3, 0, 6) / 6)


@op
def hardswish(x):
    """x * min(max(x + 3, 0), 6) / 6, as ``F.hardswish`` (MobileNetV3).  [*] -> [*]"""
    check_array(x)
    return np.asarray(x * np.clip(x + 3, 0, 6) / 6)


@op
def leaky_relu(x, negative_slope=0.01):
    """x where x > 0, else negative_slope * x, as ``F.leaky_relu`` (PFLD, MediaPipe-style nets).  [*] -> [*]"""
    check_array(x)
    return np.asarray(np.where(x > 0, x, x.dtype.type(negative_slope) * x))


@op
def prelu(x, weight):
    """x where x > 0, else weight * x, as ``F.prelu``: weight [1] (one slope) or [C], the slope of
    channel c = x's dim 1 (x of rank >= 2; a rank-0/1 x takes one slope).  [*] -> [*]"""
    check_array(x)
    check_array(weight, "weight", ndim=1)
    check_same_dtype(("x", x), ("weight", weight))
    C = x.shape[1] if x.ndim >= 2 else 1
    if weight.shape[0] not in (1, C):
        raise ValueError(f"prelu: weight has {weight.shape[0]} slopes, expected 1 or the {C} channels of x {x.shape}")
    w = weight.reshape((1, -1) + (1,) * (x.ndim - 2)) if x.ndim >= 2 else weight.reshape(())   # [1, C|1, 1, ...]
    return np.asarray(np.where(x > 0, x, w * x))


@op
def clamp(x, min=None, max=None):
    """min(max(x, min), max) element-wise, as ``torch.clamp``: either bound may be None (not both); a
    bound is a number or an array broadcasting against x; when min > max every value is max, and NaN
    stays NaN, as in torch.  [*] -> [*]"""
    check_array(x)
    if min is None and max is None:
        raise ValueError("clamp: give at least one of min and max")
    bounds = [np.asarray(b, dtype=x.dtype) if b is not None else None for b in (min, max)]
    y = x if bounds[0] is None else np.maximum(x, bounds[0])
    y = y if bounds[1] is None else np.minimum(y, bounds[1])
    if y.shape != x.shape:
        raise ValueError(f"clamp: bounds of shape {[None if b is None else b.shape for b in bounds]} "
                         f"do not broadcast to x's shape {x.shape}")
    return np.asarray(y)


@op
def softmax(x, dim):
    """exp(x - max) / sum exp(x - max) along ``dim`` (any, negative counts from the end), as
    ``F.softmax(x, dim)``.  Subtracting the max changes nothing mathematically and keeps exp <= 1.
    [*] -> [*]"""
    check_array(x, min_ndim=1)
    dim = _check_dim(dim, x.ndim, "softmax")
    if x.size == 0:
        return x.copy()
    e = np.exp(x - x.max(axis=dim, keepdims=True))       # [*], each slice along dim has max 1
    return e / e.sum(axis=dim, keepdims=True)


@op
def log_softmax(x, dim):
    """log(softmax(x, dim)) computed as (x - max) - log sum exp(x - max), as ``F.log_softmax(x, dim)``.
    [*] -> [*]"""
    check_array(x, min_ndim=1)
    dim = _check_dim(dim, x.ndim, "log_softmax")
    if x.size == 0:
        return x.copy()
    z = x - x.max(axis=dim, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=dim, keepdims=True))
