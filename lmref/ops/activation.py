"""Element-wise activations and softmax, with torch.nn.functional's definitions.

    relu(x)        = max(x, 0)
    relu6(x)       = min(max(x, 0), 6)
    sigmoid(x)     = 1 / (1 + exp(-x))
    silu(x)        = x * sigmoid(x)                                   (a.k.a. swish)
    gelu(x)        = x/2 * (1 + erf(x / sqrt(2)))                     approximate="none"
                   = x/2 * (1 + tanh(sqrt(2/pi) * (x + 0.044715 x^3))) approximate="tanh"
    hardsigmoid(x) = min(max(x + 3, 0), 6) / 6
    hardswish(x)   = x * min(max(x + 3, 0), 6) / 6
    softmax(x)_i   = exp(x_i - max x) / sum_j exp(x_j - max x)        along ``dim``
    log_softmax(x)_i = (x_i - max x) - log sum_j exp(x_j - max x)

All take [*] and return [*] in x's dtype (softmax / log_softmax along one dim of [*]).
"""
import math

import numpy as np

from ..trace import op
from . import _fast
from ._check import check_array

__all__ = ["relu", "relu6", "silu", "gelu", "sigmoid", "tanh", "hardswish", "hardsigmoid",
           "softmax", "log_softmax"]

_math_erf = np.frompyfunc(math.erf, 1, 1)


def erf(x):
    """The error function erf(x) = 2/sqrt(pi) * int_0^x exp(-t^2) dt, element-wise, in float64.

    NumPy has no erf, so this applies the C library's erf (``math.erf``, correctly rounded or
    within 1 ulp) to each element: exact to float64 precision, about 0.1 us per element -- faster
    than a vectorised series / continued-fraction evaluation of the same precision would be in NumPy.
    x: any float array -> float64 array of the same shape."""
    return np.asarray(_math_erf(np.asarray(x, dtype=np.float64)), dtype=np.float64)


def _array(y):
    """NumPy ufuncs turn a 0-d array into a scalar; keep the ops' results ndarrays."""
    return np.asarray(y)


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
    return _array(np.maximum(x, x.dtype.type(0)))


@op
def relu6(x):
    """min(max(x, 0), 6), as ``F.relu6`` (= hardtanh(x, 0, 6)).  [*] -> [*]"""
    check_array(x)
    return _array(np.clip(x, x.dtype.type(0), x.dtype.type(6)))


@op
def sigmoid(x):
    """1 / (1 + exp(-x)), as ``torch.sigmoid``; no overflow for large |x|.  [*] -> [*]"""
    check_array(x)
    if _fast.ENABLED and x.ndim:
        return _sigmoid_fast(x)
    return _sigmoid(x)


def _sigmoid_fast(x):
    """The reference's formula with fewer temporaries, bit-identical: e = exp(-|x|) once,
    then (1 if x >= 0 else e) / (1 + e)."""
    e = np.abs(x)
    np.negative(e, out=e)
    np.exp(e, out=e)                                     # e = exp(-|x|) in (0, 1]
    d = e + 1
    np.copyto(e, 1, where=x >= 0)                        # numerator: 1 where x >= 0, else e
    return np.divide(e, d, out=e)


@op
def tanh(x):
    """Hyperbolic tangent, as ``torch.tanh``.  [*] -> [*]"""
    check_array(x)
    return _array(np.tanh(x))


@op
def silu(x, inplace=False):
    """x * sigmoid(x), as ``F.silu(x, inplace=...)`` (swish; MobileViT-v2's activation).  [*] -> [*]

    inplace=True writes the result into x (writeable and C-contiguous) and returns x: models pass
    their own fresh conv outputs, so that a large map's activation needs no second buffer."""
    check_array(x)
    if inplace and not (x.flags.writeable and x.flags.c_contiguous):
        raise ValueError(f"silu: inplace=True needs a writeable C-contiguous array, got shape {x.shape} "
                         f"(writeable={x.flags.writeable}, C-contiguous={x.flags.c_contiguous})")
    if _fast.ENABLED and x.ndim:
        return _silu_fast(x, inplace)
    y = _array(x * _sigmoid(x))
    if inplace:
        x[...] = y
        return x
    return y


def _silu_fast(x, inplace=False):
    """silu's fast path: x / (1 + exp(-x)), four passes over blocks that stay in cache (the reference
    makes about ten passes), split over threads for large arrays; inplace, the denominators go to a
    block-sized scratch buffer and the quotients into x. Where exp(-x) overflows (x < -88.7 in
    float32, -709.8 in float64) the quotient is -0.0 instead of the reference's tiny x * e^x, an
    absolute difference below 3e-37 (float32) / 4e-306 (float64); -inf gives nan in both."""
    x = x if inplace else np.ascontiguousarray(x)
    y = x if inplace else np.empty_like(x)
    xf, yf = x.reshape(-1), y.reshape(-1)

    def part(lo, hi):
        tmp = _fast.scratch("silu.denominator", (min(_fast.BLOCK, hi - lo),), x.dtype) if inplace else None
        with np.errstate(over="ignore"):
            for a in range(lo, hi, _fast.BLOCK):
                v, out = xf[a:min(hi, a + _fast.BLOCK)], yf[a:min(hi, a + _fast.BLOCK)]
                t = tmp[:v.size] if inplace else out
                np.negative(v, out=t)
                np.exp(t, out=t)
                t += 1
                np.divide(v, t, out=out)

    _fast.parallel(xf.size, part, xf.size)
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
        return _array(0.5 * x64 * (1.0 + erf(x64 * (1 / math.sqrt(2))))).astype(x.dtype)
    if approximate == "tanh":
        k = x.dtype.type(math.sqrt(2 / math.pi))
        inner = k * (x + x.dtype.type(0.044715) * x * x * x)
        return _array(x.dtype.type(0.5) * x * (1 + np.tanh(inner)))
    raise ValueError(f"gelu: approximate must be 'none' or 'tanh', got {approximate!r}")


@op
def hardsigmoid(x):
    """min(max(x + 3, 0), 6) / 6, as ``F.hardsigmoid``.  [*] -> [*]"""
    check_array(x)
    return _array(np.clip(x + 3, 0, 6) / 6)


@op
def hardswish(x):
    """x * min(max(x + 3, 0), 6) / 6, as ``F.hardswish`` (MobileNetV3).  [*] -> [*]"""
    check_array(x)
    return _array(x * np.clip(x + 3, 0, 6) / 6)


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
