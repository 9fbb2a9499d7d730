"""Resizing: ``interpolate`` with torch's index rules for modes "nearest", "nearest-exact", "bilinear"
and "bicubic".

Sources: ``torch.nn.functional.interpolate`` (output size, which scale reaches the kernel) and the
CPU kernels ``aten/src/ATen/native/UpSample.h`` (``compute_scales_value``,
``area_pixel_compute_scale``, ``area_pixel_compute_source_index``, ``nearest_idx``,
``guard_index_and_lambda``, ``nearest_neighbor_exact_compute_source_index``,
``get_cubic_upsample_coefficients``) and ``cpu/UpSampleKernel.cpp``. A faster kernel (tables cached,
bilinear rows interpolated before they are gathered) is in ``lmref.fast.resize``.
"""
import math
import numbers

import numpy as np

from ..trace import op
from ._check import check_array

__all__ = ["interpolate"]

MODES = ("nearest", "nearest-exact", "bilinear", "bicubic")
CUBIC_A = -0.75          # the cubic convolution coefficient torch uses (Keys' a; OpenCV's too)


def output_size(in_size, size=None, scale_factor=None):
    """(H_out, W_out) as torch computes it: ``size``, else floor(in * scale_factor) in double precision."""
    if (size is None) == (scale_factor is None):
        raise ValueError("interpolate: give exactly one of size or scale_factor")
    if size is not None:
        out = _pair(size, "size", int)
    else:
        out = tuple(int(math.floor(float(n) * float(f)))
                    for n, f in zip(in_size, _pair(scale_factor, "scale_factor", float)))
    if min(out) < 1:
        raise ValueError(f"interpolate: input size {tuple(in_size)} and output size {out} must be > 0")
    return out


def _pair(v, name, kind):
    vals = tuple(v) if isinstance(v, (tuple, list)) else (v, v)
    if len(vals) != 2:
        raise ValueError(f"{name}: expected a number or a pair for a 4-D input, got {v!r}")
    for a in vals:
        ok = isinstance(a, numbers.Integral) if kind is int else isinstance(a, numbers.Real)
        if not ok or isinstance(a, bool):
            raise TypeError(f"{name}: expected {'ints' if kind is int else 'numbers'}, got {v!r}")
    if kind is float and not all(math.isfinite(a) and a > 0 for a in vals):
        raise ValueError(f"{name}: expected finite positive values, got {v!r}")
    return tuple(kind(a) for a in vals)


# torch's CPU nearest kernel for NCHW input depends on the output size (``_use_channels_last_kernel_2d``
# in ``cpu/UpSampleKernel.cpp``): with H_out + W_out <= 128 it runs the channels-last kernel, whose
# index rule ``nearest_idx`` is float32 with two special cases for every dtype; above, the generic
# kernel (``HelperInterpNearest``), whose rule runs in the op's math type (float64 for float64 input)
# without special cases. (A channels-last tensor with C > 3 always takes the first; lmref's arrays
# are NCHW.)
NEAREST_SMALL_OUTPUT = 128


def nearest_source_index(n_in, n_out, scale=None, opmath=None):
    """Source index of every output index, torch's legacy "nearest" rule, src = min(floor(dst * s),
    n_in - 1) with s = 1/scale_factor when a scale factor reaches the kernel, else n_in/n_out:

    opmath None (``nearest_idx``, small outputs): s and dst * s in float32; n_out == n_in copies and
        n_out == 2*n_in takes dst >> 1 (special cases, whatever the scale factor).
    opmath float32 / float64 (the generic kernel): s and dst * s in that type, then ``floorf``: a
        float64 product is rounded to float32 before the floor, so 82 * (2/164) = 1.0 gives 1 where the
        float32 rule gives floor(0.99999994) = 0. No special cases.

    Which one torch runs is :func:`nearest_opmath`'s rule."""
    dst = np.arange(n_out)
    if opmath is None and n_out == n_in:
        return dst
    if opmath is None and n_out == 2 * n_in:
        return dst >> 1
    dt = np.dtype(opmath or np.float32).type
    s = dt(1.0 / scale) if scale is not None else dt(n_in) / dt(n_out)
    src = np.floor((dst.astype(dt) * s).astype(np.float32))     # product in opmath, floorf
    return np.minimum(src.astype(np.int64), n_in - 1)


def nearest_opmath(dtype, out_h, out_w):
    """The index arithmetic torch's CPU nearest kernel uses for an NCHW input of ``dtype`` resized to
    out_h x out_w: None (``nearest_idx``, float32) when H_out + W_out <= 128, else the input dtype."""
    return None if out_h + out_w <= NEAREST_SMALL_OUTPUT else np.dtype(dtype).type


def _half_pixel_source(dst, n_in, n_out, scale, dt):
    """align_corners=False: source coordinate r * (dst + 0.5) - 0.5 of output pixel centres (r below)."""
    r = dt(1.0 / scale) if scale is not None else dt(n_in) / dt(n_out)
    return r * (dst + dt(0.5)) - dt(0.5)


def linear_source_weights(n_in, n_out, align_corners, scale, dtype):
    """Per output index: source indices (i0, i1) and weights (l0, l1), torch's bilinear rule in the
    input dtype: src = dst * (n_in - 1)/(n_out - 1) with align_corners (0 if n_out == 1), else
    max(r * (dst + 0.5) - 0.5, 0), r = 1/scale_factor if one reaches the kernel, else n_in/n_out;
    i0 = min(floor(src), n_in - 1), i1 = i0 + 1 unless last, l1 = clip(src - i0, 0, 1), l0 = 1 - l1.
    An axis that keeps its size is copied (as torch 2.x: a scale 1.3 on 3 pixels leaves it alone)."""
    dt = np.dtype(dtype).type
    dst = np.arange(n_out, dtype=dtype)
    if n_out == n_in:
        idx = np.arange(n_in)
        return idx, idx, np.ones(n_out, dtype), np.zeros(n_out, dtype)
    if align_corners:
        r = dt(n_in - 1) / dt(n_out - 1) if n_out > 1 else dt(0)
        src = r * dst
    else:
        src = np.maximum(_half_pixel_source(dst, n_in, n_out, scale, dt), dt(0))
    i0 = np.minimum(np.floor(src).astype(np.int64), n_in - 1)
    l1 = np.clip(src - i0.astype(dtype), dt(0), dt(1))
    l0 = dt(1) - l1
    i1 = i0 + (i0 < n_in - 1)
    return i0, i1, l0, l1


def nearest_exact_source_index(n_in, n_out, scale=None):
    """Source index of every output index, torch's "nearest-exact" rule (the pixel whose centre is
    nearest): src = min(floor((dst + 0.5) * s), n_in - 1), s = 1/scale_factor when a scale factor
    reaches the kernel, else n_in/n_out, s in float32 (``compute_scales_value<float>``), the product in
    float64 rounded to float32 before the floor (``floorf``). No special cases."""
    s = np.float32(1.0 / scale) if scale is not None else np.float32(n_in) / np.float32(n_out)
    src = np.floor(((np.arange(n_out) + 0.5) * np.float64(s)).astype(np.float32))
    return np.minimum(src.astype(np.int64), n_in - 1)


def cubic_coefficients(t, a=CUBIC_A):
    """The 4 weights of taps i0-1, i0, i0+1, i0+2 for the fraction t = src - i0 in [0, 1] (Keys' cubic
    convolution, torch's ``get_cubic_upsample_coefficients``):
        W(d) = (a+2)|d|^3 - (a+3)|d|^2 + 1          |d| <= 1
        W(d) = a|d|^3 - 5a|d|^2 + 8a|d| - 4a        1 < |d| < 2
    at distances d = t+1, t, 1-t, 2-t.  t [n] -> [n, 4]; the rows sum to 1."""
    near = lambda d: ((a + 2) * d - (a + 3)) * d * d + 1
    far = lambda d: ((a * d - 5 * a) * d + 8 * a) * d - 4 * a
    return np.stack([far(t + 1), near(t), near(1 - t), far(2 - t)], axis=-1)


def cubic_source_weights(n_in, n_out, align_corners, scale, dtype):
    """Per output index: the 4 source indices [n_out, 4] and their weights [n_out, 4], torch's bicubic
    rule in the input dtype: src as in :func:`linear_source_weights` but not clamped at 0
    (align_corners=False: src = r * (dst + 0.5) - 0.5 may be negative), i0 = min(floor(src), n_in - 1),
    t = clip(src - i0, 0, 1), taps i0-1 .. i0+2 clamped to [0, n_in - 1] (the border pixel repeats)."""
    dt = np.dtype(dtype).type
    dst = np.arange(n_out, dtype=dtype)
    if align_corners:
        src = (dt(n_in - 1) / dt(n_out - 1) if n_out > 1 else dt(0)) * dst
    else:
        src = _half_pixel_source(dst, n_in, n_out, scale, dt)
    i0 = np.minimum(np.floor(src).astype(np.int64), n_in - 1)
    t = np.clip(src - i0.astype(dtype), dt(0), dt(1))
    taps = np.clip(i0[:, None] + np.arange(-1, 3), 0, n_in - 1)            # [n_out, 4]
    return taps, cubic_coefficients(t, dt(CUBIC_A)).astype(dtype)         # [n_out, 4], [n_out, 4]


def _interpolate_args(x, size, scale_factor, mode, align_corners, recompute_scale_factor):
    """interpolate's argument checks; returns (H_out, W_out, the scale factors that reach the kernel:
    torch drops those it recomputes from the sizes)."""
    check_array(x, "x", ndim=4)
    if mode not in MODES:
        raise ValueError(f"interpolate: mode must be one of {MODES}, got {mode!r}")
    if mode in ("nearest", "nearest-exact") and align_corners is not None:
        raise ValueError("interpolate: align_corners can only be set with mode='bilinear' or 'bicubic'")
    if recompute_scale_factor and size is not None:
        raise ValueError("interpolate: recompute_scale_factor is not meaningful with an explicit size")
    oh, ow = output_size(x.shape[2:], size, scale_factor)
    scales = (None, None)
    if scale_factor is not None and not recompute_scale_factor:
        scales = _pair(scale_factor, "scale_factor", float)
    return oh, ow, scales


@op
def interpolate(x, size=None, scale_factor=None, mode="nearest", align_corners=None,
                recompute_scale_factor=None):
    """``F.interpolate`` for 4-D input (antialias=False): x [B, C, H, W] -> [B, C, H_out, W_out] for
    ``size`` (int or pair) or ``scale_factor`` (H_out = floor(H * scale_factor)). The source pixels and
    weights of each output pixel follow one rule per mode, rows and columns alike: "nearest" (torch's
    legacy rule), "nearest-exact" (the nearest pixel centre), "bilinear" (2 x 2 taps) or "bicubic" (4 x 4
    taps, a = -0.75). The rule's scale is 1/scale_factor when given and not recomputed, else H/H_out;
    (H-1)/(H_out-1) with align_corners=True (bilinear and bicubic only; None means False)."""
    oh, ow, scales = _interpolate_args(x, size, scale_factor, mode, align_corners, recompute_scale_factor)
    H, W = x.shape[2:]
    align = bool(align_corners)
    if mode == "nearest":
        om = nearest_opmath(x.dtype, oh, ow)                   # which of torch's two index rules
        rows = nearest_source_index(H, oh, scales[0], om)      # [H_out]
        cols = nearest_source_index(W, ow, scales[1], om)      # [W_out]
        return x[:, :, rows[:, None], cols[None, :]]           # [B, C, H, W] -> [B, C, H_out, W_out]
    if mode == "nearest-exact":
        rows, cols = nearest_exact_source_index(H, oh, scales[0]), nearest_exact_source_index(W, ow, scales[1])
        return x[:, :, rows[:, None], cols[None, :]]
    if mode == "bicubic":
        return bicubic(x, cubic_source_weights(H, oh, align, scales[0], x.dtype),
                       cubic_source_weights(W, ow, align, scales[1], x.dtype))
    return bilinear(x, linear_source_weights(H, oh, align, scales[0], x.dtype),
                    linear_source_weights(W, ow, align, scales[1], x.dtype))


def bilinear(x, hw, ww):
    """Bilinear resampling with the tables (h0, h1, l0h, l1h) and (w0, w1, l0w, l1w) of
    :func:`linear_source_weights`: rows gathered, then interpolated along W, then along H.
    x [B, C, H, W] -> [B, C, H_out, W_out]"""
    (h0, h1, l0h, l1h), (w0, w1, l0w, l1w) = hw, ww
    rows0, rows1 = x[:, :, h0, :], x[:, :, h1, :]               # [B, C, H, W] -> [B, C, H_out, W]
    top = l0w * rows0[..., w0] + l1w * rows0[..., w1]           # -> [B, C, H_out, W_out]
    bottom = l0w * rows1[..., w0] + l1w * rows1[..., w1]
    return l0h[:, None] * top + l1h[:, None] * bottom


def bicubic(x, hw, ww):
    """Bicubic resampling with the tables (taps [H_out, 4], weights [H_out, 4]) and (taps [W_out, 4],
    weights [W_out, 4]) of :func:`cubic_source_weights`: along W, then along H (may overshoot).
    x [B, C, H, W] -> [B, C, H_out, W_out]"""
    (rows, wh), (cols, ww) = hw, ww
    along_w = (x[..., cols] * ww).sum(axis=-1)                        # [B, C, H, W_out, 4] -> [B, C, H, W_out]
    return (along_w[:, :, rows, :] * wh[:, :, None]).sum(axis=3)      # [B, C, H_out, 4, W_out] -> [B, C, H_out, W_out]
