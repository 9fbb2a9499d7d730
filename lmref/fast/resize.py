"""interpolate, fast: the definition's index and weight tables (``lmref.ops.resize``) built once per
size, nearest as two takes, and bilinear upsampling with each input row interpolated once."""
import numpy as np

from ..ops import resize as D
from . import buffers, threads
from .registry import replaces


@replaces(D.interpolate)
def interpolate(x, size=None, scale_factor=None, mode="nearest", align_corners=None,
                recompute_scale_factor=None):
    """Modes "nearest" and "bilinear" with cached tables; the other modes run the definition."""
    key = None
    if (type(x) is np.ndarray and scale_factor is None and recompute_scale_factor is None
            and type(mode) is str and (align_corners is None or type(align_corners) is bool)
            and (type(size) is int or (type(size) is tuple and all(type(v) is int for v in size)))):
        key = (x.shape, x.dtype, size, mode, align_corners)
    oh, ow, scales = buffers.remembered(D._interpolate_args, key, x, size, scale_factor, mode, align_corners,
                                        recompute_scale_factor)
    H, W = x.shape[2:]
    if mode == "nearest":                                      # cached indices, gather W then H
        om = D.nearest_opmath(x.dtype, oh, ow)
        rows = buffers.table(D.nearest_source_index, H, oh, scales[0], om)
        cols = buffers.table(D.nearest_source_index, W, ow, scales[1], om)
        return x.take(cols, axis=3).take(rows, axis=2)         # [B, C, H, W] -> [B, C, H, W_out] -> [B, C, H_out, W_out]
    if mode != "bilinear":
        return interpolate.definition(x, size, scale_factor, mode, align_corners, recompute_scale_factor)
    align = bool(align_corners)
    h0, h1, l0h, l1h = buffers.table(D.linear_source_weights, H, oh, align, scales[0], x.dtype.str)
    w0, w1, l0w, l1w = buffers.table(D.linear_source_weights, W, ow, align, scales[1], x.dtype.str)
    if oh >= H:                             # upsampling rows: interpolate along W before gathering rows
        return _bilinear_rows_first(x, (h0, h1, l0h, l1h), (w0, w1, l0w, l1w))
    return D.bilinear(x, (h0, h1, l0h, l1h), (w0, w1, l0w, l1w))


def _bilinear_rows_first(x, hw, ww):
    """Bit-identical to the definition: interpolate along W once for every *input* row, then gather
    those rows along H.  The definition interpolates along W after gathering the rows, i.e. once per
    output row; each output row's W-interpolation is the same arithmetic on the same numbers either
    way, so the results agree exactly while upsampling (H_out > H) does H/H_out of the W-work.
    Channels are split over threads.  x [B, C, H, W] -> [B, C, H_out, W_out]."""
    (h0, h1, l0h, l1h), (w0, w1, l0w, l1w) = hw, ww
    B, C = x.shape[:2]
    out = np.empty((B, C, len(h0), len(w0)), dtype=x.dtype)

    step = max(1, threads.BLOCK // (B * len(h0) * len(w0)))    # channels per block of work

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

    threads.parallel(C, part, out.size)
    return out
