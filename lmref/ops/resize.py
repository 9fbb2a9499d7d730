"""Resizing: ``interpolate`` with torch's index rules for modes "nearest" and "bilinear".

Sources: ``torch.nn.functional.interpolate`` (output size, which scale reaches the kernel) and the
CPU kernels ``aten/src/ATen/native/UpSample.h`` (``compute_scales_value``,
``area_pixel_compute_scale``, ``area_pixel_compute_source_index``, ``nearest_idx``,
``guard_index_and_lambda``) and ``cpu/UpSampleKernel.cpp``.
"""
import functools
import math
import numbers

import numpy as np

from ..trace import op
from . import _fast
from ._check import check_array, remembered

__all__ = ["interpolate"]

MODES = ("nearest", "bilinear")


def output_size(in_size, size=None, scale_factor=None):
    """(H_out, W_out) as torch computes it: ``size`` as given, else floor(in * scale_factor) (double
    precision, ``upsample::compute_output_size``)."""
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


def linear_source_weights(n_in, n_out, align_corners, scale, dtype):
    """Per output index: the two source indices (i0, i1) and weights (l0, l1), torch's bilinear rule
    computed in the input dtype (torch's opmath type for float32/float64):

    align_corners=True:  src = dst * (n_in - 1)/(n_out - 1)   (0 when n_out == 1; scale factor unused)
    align_corners=False: src = max(r * (dst + 0.5) - 0.5, 0), r = 1/scale_factor if one reaches the
                         kernel, else n_in/n_out
    i0 = min(floor(src), n_in - 1), l1 = clip(src - i0, 0, 1), l0 = 1 - l1,
    i1 = i0 + 1 unless i0 is the last index.
    An axis whose size does not change is copied (torch 2.x's CPU kernel skips it, so a scale factor
    like 1.3 on a 3-pixel axis, floor(3.9) = 3, leaves that axis untouched)."""
    dt = np.dtype(dtype).type
    dst = np.arange(n_out, dtype=dtype)
    if n_out == n_in:
        idx = np.arange(n_in)
        return idx, idx, np.ones(n_out, dtype), np.zeros(n_out, dtype)
    if align_corners:
        r = dt(n_in - 1) / dt(n_out - 1) if n_out > 1 else dt(0)
        src = r * dst
    else:
        r = dt(1.0 / scale) if scale is not None else dt(n_in) / dt(n_out)
        src = np.maximum(r * (dst + dt(0.5)) - dt(0.5), dt(0))
    i0 = np.minimum(np.floor(src).astype(np.int64), n_in - 1)
    l1 = np.clip(src - i0.astype(dtype), dt(0), dt(1))
    l0 = dt(1) - l1
    i1 = i0 + (i0 < n_in - 1)
    return i0, i1, l0, l1


def _interpolate_args(x, size, scale_factor, mode, align_corners, recompute_scale_factor):
    """interpolate's argument checks; returns (H_out, W_out, the scale factors that reach the kernel)."""
    check_array(x, "x", ndim=4)
    if mode not in MODES:
        raise ValueError(f"interpolate: mode must be one of {MODES}, got {mode!r}")
    if mode == "nearest" and align_corners is not None:
        raise ValueError("interpolate: align_corners can only be set with mode='bilinear'")
    if recompute_scale_factor and size is not None:
        raise ValueError("interpolate: recompute_scale_factor is not meaningful with an explicit size")
    oh, ow = output_size(x.shape[2:], size, scale_factor)
    # the scale factors that reach the kernel (torch drops them when it recomputes them from sizes)
    scales = (None, None)
    if scale_factor is not None and not recompute_scale_factor:
        scales = _pair(scale_factor, "scale_factor", float)
    return oh, ow, scales


@op
def interpolate(x, size=None, scale_factor=None, mode="nearest", align_corners=None,
                recompute_scale_factor=None):
    """``torch.nn.functional.interpolate`` for 4-D input, modes "nearest" (torch's legacy rule, not
    "nearest-exact") and "bilinear" (antialias=False).

    x: [B, C, H, W] -> [B, C, H_out, W_out]. Give exactly one of ``size`` (int or pair) and
    ``scale_factor`` (number or pair, H_out = floor(H * scale_factor)).

    Which scale the index rule uses (as in torch): when ``scale_factor`` is given and
    ``recompute_scale_factor`` is None/False, the kernel uses 1/scale_factor, not H/H_out (these differ
    whenever H * scale_factor is not an integer); with ``recompute_scale_factor=True`` it uses H/H_out.
    For bilinear with align_corners=True the scale is always (H-1)/(H_out-1).

    nearest:  out[i, j] = x[min(floor(i * sh), H-1), min(floor(j * sw), W-1)], in float32 index
              arithmetic with torch's two special cases when H_out + W_out <= 128, else in the input
              dtype rounded to float32 before the floor, as torch's two CPU kernels do
              (:func:`nearest_source_index`).
    bilinear: out[i, j] = l0h (l0w x[h0, w0] + l1w x[h0, w1]) + l1h (l0w x[h1, w0] + l1w x[h1, w1])
              with (h0, h1, l0h, l1h) from :func:`linear_source_weights`.
    align_corners: only for "bilinear" (None means False, torch's default); torch raises when it is
    set with "nearest", and so does this.
    """
    key = None
    if (type(x) is np.ndarray and scale_factor is None and recompute_scale_factor is None
            and type(mode) is str and (align_corners is None or type(align_corners) is bool)
            and (type(size) is int or (type(size) is tuple and all(type(v) is int for v in size)))):
        key = (x.shape, x.dtype, size, mode, align_corners)
    oh, ow, scales = remembered(_interpolate_args, key, x, size, scale_factor, mode, align_corners,
                                recompute_scale_factor)
    H, W = x.shape[2:]

    if mode == "nearest" and _fast.ENABLED:                    # cached indices, gather W then H
        om = nearest_opmath(x.dtype, oh, ow)
        rows, cols = _cached(nearest_source_index, H, oh, scales[0], om), _cached(nearest_source_index, W, ow, scales[1], om)
        return x.take(cols, axis=3).take(rows, axis=2)         # [B, C, H, W] -> [B, C, H, W_out] -> [B, C, H_out, W_out]
    if mode == "nearest":
        om = nearest_opmath(x.dtype, oh, ow)                   # which of torch's two index rules
        rows = nearest_source_index(H, oh, scales[0], om)      # [H_out]
        cols = nearest_source_index(W, ow, scales[1], om)      # [W_out]
        return x[:, :, rows[:, None], cols[None, :]]           # [B, C, H, W] -> [B, C, H_out, W_out]

    align = bool(align_corners)
    if _fast.ENABLED:
        h0, h1, l0h, l1h = _cached(linear_source_weights, H, oh, align, scales[0], x.dtype.str)
        w0, w1, l0w, l1w = _cached(linear_source_weights, W, ow, align, scales[1], x.dtype.str)
    else:
        h0, h1, l0h, l1h = linear_source_weights(H, oh, align, scales[0], x.dtype)
        w0, w1, l0w, l1w = linear_source_weights(W, ow, align, scales[1], x.dtype)
    if _fast.ENABLED and oh >= H:           # upsampling rows: interpolate along W before gathering rows
        return _bilinear_fast(x, (h0, h1, l0h, l1h), (w0, w1, l0w, l1w))
    rows0, rows1 = x[:, :, h0, :], x[:, :, h1, :]               # [B, C, H, W] -> [B, C, H_out, W]
    top = l0w * rows0[..., w0] + l1w * rows0[..., w1]           # -> [B, C, H_out, W_out]
    bottom = l0w * rows1[..., w0] + l1w * rows1[..., w1]
    return l0h[:, None] * top + l1h[:, None] * bottom


@functools.lru_cache(maxsize=512)
def _cached(fn, *args):
    """fn(*args) (an index / weight table above) computed once per argument tuple and kept read-only:
    the fast paths' tables are the reference's, just not rebuilt on every call."""
    out = fn(*args)
    for a in (out if isinstance(out, tuple) else (out,)):
        a.flags.writeable = False
    return out


def _bilinear_fast(x, hw, ww):
    """Bilinear's fast path, bit-identical to the reference: interpolate along W once for every
    *input* row, then gather those rows along H.  The reference interpolates along W after gathering
    the rows, i.e. once per output row; each output row's W-interpolation is the same arithmetic on
    the same numbers either way, so the results agree exactly while upsampling (H_out > H) does
    H/H_out of the W-work.  Channels are split over threads.  x [B, C, H, W] -> [B, C, H_out, W_out]."""
    (h0, h1, l0h, l1h), (w0, w1, l0w, l1w) = hw, ww
    B, C = x.shape[:2]
    out = np.empty((B, C, len(h0), len(w0)), dtype=x.dtype)

    step = max(1, _fast.BLOCK // (B * len(h0) * len(w0)))      # channels per block of work

    def part(c0, c1):
        for a in range(c0, c1, step):                           # temporaries of one block, in cache
            xc = x[:, a:min(c1, a + step)]
            r = l0w * xc[..., w0]                               # [B, c, H, W] -> [B, c, H, W_out]
            r += l1w * xc[..., w1]                              # r = l0w x[., w0] + l1w x[., w1]
            o = out[:, a:min(c1, a + step)]
            np.take(r, h0, axis=2, out=o, mode="clip")          # -> [B, c, H_out, W_out] (take, unlike r[:, :, h0],
            o *= l0h[:, None]                                   #    gives C order: fast to write into o)
            t = np.take(r, h1, axis=2)
            t *= l1h[:, None]
            o += t

    _fast.parallel(C, part, out.size)
    return out
