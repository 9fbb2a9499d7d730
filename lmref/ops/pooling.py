"""Pooling: max_pool2d, avg_pool2d, adaptive_avg_pool2d with torch's exact window and divisor rules.

Sources: ``torch.nn.functional.max_pool2d`` / ``avg_pool2d`` / ``adaptive_avg_pool2d`` and their CPU
kernels (``aten/src/ATen/native/Pool.h`` ``pooling_output_shape``, ``AvgPoolKernel.cpp``,
``AdaptivePooling.h`` ``start_index`` / ``end_index``). Faster max_pool2d and adaptive_avg_pool2d
kernels are in ``lmref.fast.pooling``.
"""
import numpy as np

from ..trace import op
from ._check import check_array, pair

__all__ = ["max_pool2d", "avg_pool2d", "adaptive_avg_pool2d"]


def _int_pair(v, name, minimum):
    """int or pair of ints, each >= minimum -> (int, int)."""
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer, tuple, list)):
        raise TypeError(f"{name}: expected an int or a pair of ints, got {v!r}")
    if isinstance(v, (tuple, list)) and not all(isinstance(i, (int, np.integer)) and not isinstance(i, bool)
                                                for i in v):
        raise TypeError(f"{name}: expected an int or a pair of ints, got {v!r}")
    v = pair(v, name)
    if min(v) < minimum:
        raise ValueError(f"{name}: expected values >= {minimum}, got {v}")
    return v


def pool_output_size(size, kernel, stride, pad, dilation, ceil_mode):
    """torch's ``pooling_output_shape``: floor (or ceil) of the window count, and in ceil mode the
    last window must start inside the input or the left padding, else it is dropped."""
    out = (size + 2 * pad - dilation * (kernel - 1) - 1 + (stride - 1 if ceil_mode else 0)) // stride + 1
    if ceil_mode and (out - 1) * stride >= size + pad:
        out -= 1
    return out


def _pool_args(x, kernel_size, stride, padding, dilation, ceil_mode, opname):
    """Validate and return (kh, kw), (sh, sw), (ph, pw), (dh, dw), (oh, ow)."""
    check_array(x, "x", ndim=4)
    k = _int_pair(kernel_size, "kernel_size", 1)
    s = k if stride is None or (isinstance(stride, (tuple, list)) and len(stride) == 0) \
        else _int_pair(stride, "stride", 1)
    p = _int_pair(padding, "padding", 0)
    d = _int_pair(dilation, "dilation", 1)
    if p[0] > k[0] // 2 or p[1] > k[1] // 2:
        raise ValueError(f"{opname}: padding {p} must be at most half of kernel_size {k} (torch's rule)")
    H, W = x.shape[2:]
    out = tuple(pool_output_size(n, k[i], s[i], p[i], d[i], bool(ceil_mode)) for i, n in enumerate((H, W)))
    if min(out) < 1:
        raise ValueError(f"{opname}: input {H}x{W} with kernel {k}, stride {s}, padding {p}, dilation {d} "
                         f"gives output size {out[0]}x{out[1]}, which is too small")
    return k, s, p, d, out


def _pad_for_windows(x, k, s, p, d, out, value):
    """Pad H and W with ``value``: ``p`` on the left/top and on the right/bottom as much as the last
    window reaches (in ceil mode it can reach past the padded input)."""
    pads = [(0, 0), (0, 0)]
    for i, n in enumerate(x.shape[2:]):
        reach = (out[i] - 1) * s[i] + d[i] * (k[i] - 1) + 1       # extent covered by all windows
        pads.append((p[i], max(0, reach - n - p[i])))
    return np.pad(x, pads, constant_values=value)


def _window_slices(k, s, d, out):
    """Yield (rows, cols) slices of the padded input, one per kernel tap (ki, kj)."""
    for ki in range(k[0]):
        for kj in range(k[1]):
            r0, c0 = ki * d[0], kj * d[1]
            yield (slice(r0, r0 + (out[0] - 1) * s[0] + 1, s[0]), slice(c0, c0 + (out[1] - 1) * s[1] + 1, s[1]))


@op
def max_pool2d(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False):
    """2-D max pooling, ``torch.nn.functional.max_pool2d`` semantics.

    x: [B, C, H, W] -> [B, C, H_out, W_out] with
    H_out = floor((H + 2p - d(k-1) - 1) / s) + 1   (ceil instead of floor when ceil_mode), and in
    ceil mode the last window is dropped when it would start at or beyond H + p (torch's rule: it must
    start inside the input or the left padding). Padding counts as -inf, so it never wins; NaN
    propagates like torch's CPU kernel. stride=None means stride = kernel_size. torch requires
    padding <= kernel_size // 2 and raises otherwise; so does this.
    """
    k, s, p, d, out = _pool_args(x, kernel_size, stride, padding, dilation, ceil_mode, "max_pool2d")
    xp = _pad_for_windows(x, k, s, p, d, out, -np.inf)          # [B, C, H, W] -> [B, C, H+.., W+..]
    y = np.full(x.shape[:2] + out, -np.inf, dtype=x.dtype)      # [B, C, H_out, W_out]
    for rows, cols in _window_slices(k, s, d, out):
        y = np.maximum(y, xp[:, :, rows, cols])                  # one kernel tap for every window
    return y


def _avg_divisor(size, n_out, k, s, p, count_include_pad):
    """torch's avg-pool divisor along one axis (CPU ``AvgPoolKernel.cpp``): a window [start, end) with
    start = o*s - p, end = min(start + k, size + p); with count_include_pad the divisor is end - start
    (padding counts, the part beyond the right padding in ceil mode does not), else the number of
    real input pixels in the window."""
    start = np.arange(n_out) * s - p
    end = np.minimum(start + k, size + p)
    if count_include_pad:
        return end - start
    return np.minimum(end, size) - np.maximum(start, 0)


@op
def avg_pool2d(x, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True):
    """2-D average pooling, ``torch.nn.functional.avg_pool2d`` semantics (no divisor_override).

    x: [B, C, H, W] -> [B, C, H_out, W_out], output size as in :func:`max_pool2d` with dilation 1.
    Each output is (sum of the real input pixels in its window) / divisor, where the divisor is
    (h_end - h_start)(w_end - w_start) with the window clipped to the padded input [-p, size + p)
    when count_include_pad, else clipped to the input [0, size) (torch's rule; in ceil mode the last
    window may stick out past the padding, and that part never counts).
    """
    k, s, p, d, out = _pool_args(x, kernel_size, stride, padding, 1, ceil_mode, "avg_pool2d")
    xp = _pad_for_windows(x, k, s, p, d, out, 0.0)               # [B, C, H, W] -> [B, C, H+.., W+..]
    total = np.zeros(x.shape[:2] + out, dtype=x.dtype)          # [B, C, H_out, W_out]
    for rows, cols in _window_slices(k, s, d, out):
        total += xp[:, :, rows, cols]
    H, W = x.shape[2:]
    div_h = _avg_divisor(H, out[0], k[0], s[0], p[0], count_include_pad)   # [H_out]
    div_w = _avg_divisor(W, out[1], k[1], s[1], p[1], count_include_pad)   # [W_out]
    return total / (div_h[:, None] * div_w[None, :]).astype(x.dtype)


def adaptive_bins(size, n_out):
    """torch's adaptive-pooling bins along one axis: bin i covers [floor(i*size/n_out),
    ceil((i+1)*size/n_out)) (integer arithmetic, ``AdaptivePooling.h``). Returns (starts, ends)."""
    i = np.arange(n_out)
    return (i * size) // n_out, ((i + 1) * size + n_out - 1) // n_out


def _bin_matrix(size, n_out, dtype):
    """[n_out, size] 0/1 matrix summing each adaptive bin, and the bin lengths [n_out]."""
    starts, ends = adaptive_bins(size, n_out)
    idx = np.arange(size)
    m = ((idx[None, :] >= starts[:, None]) & (idx[None, :] < ends[:, None])).astype(dtype)
    return m, (ends - starts)


def _adaptive_args(x, output_size):
    """adaptive_avg_pool2d's argument checks; returns (oh, ow)."""
    check_array(x, "x", ndim=4)
    H, W = x.shape[2:]
    if output_size is None:
        raise TypeError("output_size: expected an int or a pair, got None")
    if isinstance(output_size, (tuple, list)):
        if len(output_size) != 2:
            raise ValueError(f"output_size: expected an int or a pair, got {output_size!r}")
        output_size = tuple(n if o is None else o for o, n in zip(output_size, (H, W)))
    oh, ow = _int_pair(output_size, "output_size", 1)
    if H < 1 or W < 1:
        raise ValueError(f"x: expected non-empty spatial size, got shape {x.shape}")
    return oh, ow


@op
def adaptive_avg_pool2d(x, output_size):
    """``torch.nn.functional.adaptive_avg_pool2d``: x [B, C, H, W] -> [B, C, oh, ow].

    Output (i, j) is the mean of x over rows [floor(i*H/oh), ceil((i+1)*H/oh)) and columns
    [floor(j*W/ow), ceil((j+1)*W/ow)) (bins may overlap when the size does not divide). output_size is
    an int or a pair; None in the pair keeps that input size, as in torch.
    """
    oh, ow = _adaptive_args(x, output_size)
    H, W = x.shape[2:]
    mh, nh = _bin_matrix(H, oh, x.dtype)                         # [oh, H], [oh]
    mw, nw = _bin_matrix(W, ow, x.dtype)                         # [ow, W], [ow]
    total = mh @ x @ mw.T                                        # [B, C, H, W] -> [B, C, oh, ow] bin sums
    return total / (nh[:, None] * nw[None, :]).astype(x.dtype)
