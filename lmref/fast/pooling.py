"""max_pool2d and adaptive_avg_pool2d, fast: the definitions (``lmref.ops.pooling``) without the padded
copy (max), with the bin matrices built once per size, and small pools as one product (adaptive)."""
import functools

import numpy as np

from ..ops import pooling as D
from . import buffers, threads
from .registry import replaces

KRON_MAX = 1 << 16     # pools with H*W*oh*ow up to this take the one-product route (and every global pool)


@replaces(D.max_pool2d)
def max_pool2d(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False):
    """Bit-identical (a max is exact): no padded copy when the windows lie inside x (no padding, no
    ceil-mode overhang), the maximum taken in place into one output, and channels split over
    threads.  x [B, C, H, W] -> [B, C, H_out, W_out]."""
    k, s, p, d, out = D._pool_args(x, kernel_size, stride, padding, dilation, ceil_mode, "max_pool2d")
    reach = [(out[i] - 1) * s[i] + d[i] * (k[i] - 1) + 1 for i in range(2)]
    inside = p == (0, 0) and reach[0] <= x.shape[2] and reach[1] <= x.shape[3]
    xp = x if inside else D._pad_for_windows(x, k, s, p, d, out, -np.inf)
    taps = list(D._window_slices(k, s, d, out))
    y = np.empty(x.shape[:2] + out, dtype=x.dtype)              # [B, C, H_out, W_out]

    def part(c0, c1):
        yc, xc = y[:, c0:c1], xp[:, c0:c1]
        np.copyto(yc, xc[:, :, taps[0][0], taps[0][1]])
        for rows, cols in taps[1:]:
            np.maximum(yc, xc[:, :, rows, cols], out=yc)

    threads.parallel(x.shape[1], part, y.size * len(taps))
    return y


def _checked_adaptive_args(x, output_size):
    """The definition's checks, skipped for a signature (x's shape and dtype, an int or a tuple of
    ints) that passed before; other argument types are checked every time."""
    key = None
    if type(x) is np.ndarray and (type(output_size) is int or (
            type(output_size) is tuple and all(type(v) is int for v in output_size))):
        key = (x.shape, x.dtype, output_size)
    return buffers.remembered(D._adaptive_args, key, x, output_size)


@replaces(D.adaptive_avg_pool2d)
def adaptive_avg_pool2d(x, output_size):
    """The definition's products with the bin matrices cached; a small output (or a global pool) of a
    contiguous x sums every bin in one product."""
    oh, ow = _checked_adaptive_args(x, output_size)
    H, W = x.shape[2:]
    if x.flags.c_contiguous and (oh * ow == 1 or H * W * oh * ow <= KRON_MAX):
        B, C = x.shape[:2]                                       # small output: one product, all bins
        k, count = _pool_kron(H, W, oh, ow, x.dtype.str)
        return (x.reshape(B, C, H * W) @ k / count).reshape(B, C, oh, ow)
    mh, mw, count = _pool_matrices(H, W, oh, ow, x.dtype.str)
    if ow == W:                                                  # mw is the identity: x @ I == x
        return mh @ x / count
    if oh == H:
        return x @ mw.T / count
    return mh @ x @ mw.T / count


@functools.lru_cache(maxsize=256)
def _pool_kron(H, W, oh, ow, dtype):
    """The 0/1 matrix [H*W, oh*ow] whose column (i, j) marks the pixels of bin (i, j) (the Kronecker
    product of the row and column bin matrices) and the divisors [oh*ow], so that one product sums
    every bin (in another order than the definition's rows-then-columns products: equal to rounding,
    not bit for bit). Read-only."""
    mh, nh = D._bin_matrix(H, oh, np.dtype(dtype))               # [oh, H], [oh]
    mw, nw = D._bin_matrix(W, ow, np.dtype(dtype))               # [ow, W], [ow]
    k = np.ascontiguousarray(np.kron(mh, mw).T)                  # [H*W, oh*ow]
    count = (nh[:, None] * nw[None, :]).reshape(-1).astype(dtype)
    for a in (k, count):
        a.flags.writeable = False
    return k, count


@functools.lru_cache(maxsize=256)
def _pool_matrices(H, W, oh, ow, dtype):
    """The definition's bin matrices and divisors, built once per size (building them is most of the
    op's time on the small maps of Lite-HRNet; the arithmetic is unchanged, so the results are
    bit-identical, except that an axis whose size does not change skips its product with the
    identity: BLAS then sums the input as it is laid out instead of the definition's contiguous
    product, which can differ in the last bit). Read-only: they are shared between calls."""
    mh, nh = D._bin_matrix(H, oh, np.dtype(dtype))               # [oh, H], [oh]
    mw, nw = D._bin_matrix(W, ow, np.dtype(dtype))               # [ow, W], [ow]
    count = (nh[:, None] * nw[None, :]).astype(dtype)            # [oh, ow]
    for a in (mh, mw, count):
        a.flags.writeable = False
    return mh, mw, count
