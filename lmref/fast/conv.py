"""conv2d and linear, fast: the sums of ``lmref.ops.conv``'s definitions arranged so that BLAS does the
work and nothing large is allocated per call (tests/test_fast_layer.py checks them against the
definitions):

* 1x1 convolution (unpadded): one matrix product W [Cout, Cin] @ x [Cin, H*W], no im2col at all
  (one image, groups 1, stride 1: just that product, ``_pointwise_single``);
* depthwise convolution (groups == Cin == Cout): the k*k taps gathered per channel into a reused
  buffer, then one stacked matrix-vector product w_c [1, k*k] @ taps_c [k*k, Ho*Wo] over channels
  (in one piece, ``_depthwise_single``, when all taps fit one block and no thread split is due);
* any other convolution: im2col through a zero-copy strided view of the padded input, copied
  into a reused buffer in blocks of about ``CHUNK_BYTES`` (whole images, or bands of output
  rows of a large image), one GEMM per block; small maps of a batch are folded into one GEMM.

The argument checks of conv2d and linear run once per signature (``buffers.remembered``): Lite-HRNet
makes hundreds of calls per image with a few dozen signatures, on maps where the checks would cost
as much as the arithmetic.
"""
import math

import numpy as np

from ..ops import conv as D
from . import buffers, threads
from .registry import replaces

CHUNK_BYTES = 1 << 20       # im2col blocks of about this many bytes (~ L2)

FOLD_BATCH_BELOW = 256      # 1x1 convs on maps with fewer output pixels fold the batch into one GEMM
GEMM_COLUMNS = 4096         # kxk convs gather at least this many output pixels per GEMM (if there are)
WIDE_BELOW = 1024           # strided convs with fewer output pixels also use the wide grid (below)
PAD_CHUNK_BYTES = 8 << 20   # a batch is zero-padded this many bytes of images at a time
NARROW_FROM_K = 256         # convs with this many taps per output (C/G*kh*kw) use the exact grid
SMALL_PAD_BYTES = 64 << 10  # padded images up to this size are fresh zeroed arrays, not scratch


def _conv2d(x, weight, bias, stride, pads, dilation, groups, out_hw):
    """conv2d after validation: x [B, Cin, H, W], weight [Cout, Cin/G, kh, kw] -> [B, Cout, Ho, Wo].

    Taps are read on a *wide* output grid when the strides are equal: Wq = Wp columns per output row
    instead of Wo, so that tap (i, j) of output row y is one contiguous run of the padded input
    (stride 1) and gathering the taps copies long runs instead of Wo-element pieces. The extra
    Wq - Wo columns per row are computed and dropped (few for stride 1; about half for stride 2,
    where the wide grid is used on small maps only, and not for depthwise convs: their one-tap-per-
    output copy is cheaper on the exact grid). Convs with many taps per output (K >=
    NARROW_FROM_K: Stud5, ResNet) are GEMM-bound, so they keep the exact grid and write their GEMMs
    straight into the output."""
    B, C_in, H, W = x.shape
    C_out, C_in_g, kh, kw = weight.shape
    if B == 1 and groups == 1 and (kh, kw) == (1, 1) and stride == (1, 1) and pads == ((0, 0), (0, 0)):
        return _pointwise_single(x, weight, bias)                             # the many tiny 1x1 convs
    Ho, Wo = out_hw
    (pt, pb), (pl, pr) = pads
    Wp = W + pl + pr
    per_channel = groups == C_in and C_in_g == 1                            # depthwise, maybe a multiplier
    depthwise = per_channel and C_out == C_in
    wide = (stride[0] == stride[1] and (stride[0] == 1 or (Ho * Wo < WIDE_BELOW and not per_channel))
            and C_in_g * kh * kw < NARROW_FROM_K)
    Wq = Wp if wide else Wo                                                   # output columns computed
    # furthest element a tap reads on the Wq grid, from the start of a channel's padded image
    reach = ((Ho - 1) * stride[0] + (kh - 1) * dilation[0]) * Wp + (Wq - 1) * stride[1] + (kw - 1) * dilation[1]
    if per_channel and B * C_in * kh * kw * Ho * Wq * x.itemsize <= CHUNK_BYTES and (
            threads.THREADS == 1 or B * C_out * Ho * Wo * kh * kw < threads.PARALLEL_MIN):   # one block, one thread
        return _depthwise_single(x, weight, bias, stride, pads, dilation, (Ho, Wo), Wq, reach + 1)
    out = np.empty((B, C_out, Ho, Wo), dtype=x.dtype)
    og = C_out // groups                                                      # output channels per group
    b = None if bias is None else bias.reshape(groups, og, 1)                 # [G, Cout/G, 1]
    if (kh, kw) == (1, 1) and pt == pb == pl == pr == 0:
        xs = x[:, :, ::stride[0], ::stride[1]]                                # [B, Cin, Ho, Wo]
        w = weight.reshape(groups, og, C_in_g)                                # [G, Cout/G, Cin/G]
        for g in range(groups):
            _pointwise(xs[:, g * C_in_g:(g + 1) * C_in_g], w[g], None if b is None else b[g],
                       out[:, g * og:(g + 1) * og])
        return out
    w = weight.reshape(groups, og, C_in_g * kh * kw)                          # [G, Cout/G, K]
    step = max(1, PAD_CHUNK_BYTES // (C_in * (reach + 1) * x.itemsize))      # images padded at a time
    for b0 in range(0, B, step):
        xb, ob = x[b0:b0 + step], out[b0:b0 + step]
        planes = _pad_scratch(xb, pads, reach + 1)                            # [b, Cin, >= Hp*Wp]
        taps = _tap_view(planes, Wp, (kh, kw), stride, dilation, (Ho, Wq))    # [b, Cin, kh, kw, Ho, Wq], no copy
        if depthwise:                                                         # channels split over threads
            wd = w.reshape(C_in, 1, kh * kw)                                  # [C, 1, K]
            threads.parallel(C_in, lambda c0, c1: _depthwise(taps[:, c0:c1], wd[c0:c1],
                                                           None if b is None else b[c0:c1, :, 0], ob[:, c0:c1]),
                           ob.size * kh * kw)
            continue
        for g in range(groups):
            _im2col_gemm(taps[:, g * C_in_g:(g + 1) * C_in_g], w[g], None if b is None else b[g],
                         ob[:, g * og:(g + 1) * og])
    return out


def _pad_scratch(x, pads, plane_size):
    """x zero-padded to [B, C, Hp, Wp] = [B, C, H+pt+pb, W+pl+pr], returned as its channel planes
    [B, C, P] (C-contiguous, each plane's first Hp*Wp elements the padded image in row-major order)
    with P >= plane_size: the wide tap grid reads a little past the image, and that tail is zero.
    x itself (reshaped) when it needs no padding and no tail; when small (SMALL_PAD_BYTES) a buffer
    kept for this padding of this shape, whose border and tail are zero from its creation on (each
    call writes the same interior); else a reused buffer with its border cleared."""
    (pt, pb), (pl, pr) = pads
    B, C, H, W = x.shape
    Hp, Wp = H + pt + pb, W + pl + pr
    if pt == pb == pl == pr == 0 and plane_size <= Hp * Wp and x.flags.c_contiguous:
        return x.reshape(B, C, H * W)
    shape = (B, C, max(plane_size, Hp * Wp))
    if math.prod(shape) * x.itemsize <= SMALL_PAD_BYTES:
        planes = buffers.zeroed(("conv2d.pad", x.shape, pads, shape[2], x.dtype.str), shape, x.dtype)
        planes[:, :, :Hp * Wp].reshape(B, C, Hp, Wp)[:, :, pt:pt + H, pl:pl + W] = x
        return planes
    planes = buffers.scratch("conv2d.pad", shape, x.dtype)
    xp = planes[:, :, :Hp * Wp].reshape(B, C, Hp, Wp, copy=False)            # the padded image, a view
    if planes.size <= 1 << 16:                       # small: two calls beat five
        planes.fill(0)
    else:                                            # large: zero only the border and the tail
        xp[:, :, :pt] = 0
        xp[:, :, pt + H:] = 0
        xp[:, :, pt:pt + H, :pl] = 0
        xp[:, :, pt:pt + H, pl + W:] = 0
        planes[:, :, Hp * Wp:] = 0
    xp[:, :, pt:pt + H, pl:pl + W] = x
    return planes


def _tap_view(planes, Wp, kernel, stride, dilation, out_hw):
    """The reference's cols without copying: a strided view [B, C, kh, kw, Ho, Wq] of the padded
    image (rows of Wp elements in ``planes`` [B, C, P]) with
    view[b, c, i, j, y, x] = xp[b, c, y*sh + i*dh, x*sw + j*dw]; x past the row's end runs on into the
    next row (the wide grid's dropped columns). ``np.ndarray`` checks that every read is inside
    ``planes``."""
    B, C, P = planes.shape
    it = planes.itemsize
    (dh, dw), (sh, sw) = dilation, stride
    return np.ndarray((B, C) + tuple(kernel) + tuple(out_hw), planes.dtype, buffer=planes,
                      strides=(C * P * it, P * it, dh * Wp * it, dw * it, sh * Wp * it, sw * it))


def _depthwise_single(x, weight, bias, stride, pads, dilation, out_hw, Wq, plane_size):
    """Depthwise convolution whose taps fit one block (:func:`_depthwise`'s sums, in one piece):
    x [B, C, H, W] zero-padded into planes of ``plane_size`` >= Hp*Wp elements, all taps on the
    Wq-column grid copied at once, one stacked product w_c [m, K] @ taps_c [K, Ho*Wq] (m = Cout/C
    outputs per channel: 1 for the depthwise conv, more for a channel multiplier, whose output
    channel c*m + u is filter u of input channel c, as in torch), the bias (added while cropping to
    Wo columns) -> [B, C*m, Ho, Wo]. Lite-HRNet runs ~70 depthwise convs per image on maps of 24x24
    and smaller, where the blocking and thread-split bookkeeping of the general path costs about as
    much as the arithmetic."""
    B, C, _, W = x.shape
    kh, kw = weight.shape[2:]
    m = weight.shape[0] // C                                                  # outputs per channel
    Ho, Wo = out_hw
    Wp = W + sum(pads[1])                                                     # padded width
    planes = _pad_scratch(x, pads, plane_size)                                # [B, C, >= Hp*Wp]
    taps = _tap_view(planes, Wp, (kh, kw), stride, dilation, (Ho, Wq))        # [B, C, kh, kw, Ho, Wq], no copy
    cols = taps.reshape(B, C, kh * kw, Ho * Wq)                               # the copy: [B, C, K, Ho*Wq]
    y = np.matmul(weight.reshape(C, m, kh * kw), cols).reshape(B, C * m, Ho, Wq)   # [B, C*m, Ho, Wq]
    if Wq != Wo:                                                              # crop the wide grid
        return y[..., :Wo] + bias[:, None, None] if bias is not None else y[..., :Wo].copy()
    if bias is not None:
        y += bias[:, None, None]
    return y


def _blocks(B, Ho, row_bytes, chunk=None):
    """Split B images of Ho output rows into blocks (b0, b1, y0, y1) whose gathered taps take about
    ``chunk`` bytes (default CHUNK_BYTES): several whole images when one is small, else bands of rows
    of one image."""
    chunk = chunk or CHUNK_BYTES
    if row_bytes * Ho <= chunk:
        nb = max(1, chunk // (row_bytes * Ho))
        for b0 in range(0, B, nb):
            yield b0, min(B, b0 + nb), 0, Ho
    else:
        bands = -(-Ho // max(1, chunk // row_bytes))             # as many bands as the chunk needs,
        rows = -(-Ho // bands)                                   # of equal height (no thin last band)
        for b in range(B):
            for y0 in range(0, Ho, rows):
                yield b, b + 1, y0, min(Ho, y0 + rows)


def _pointwise_single(x, weight, bias):
    """1x1 convolution of one image, groups 1, as one matrix product with nothing else around it:
    x [1, C, H, W], weight [O, C, 1, 1], bias [O] or None -> [1, O, H, W]. The same product as
    :func:`_pointwise`; Lite-HRNet's attention branches make ~100 such calls per image on maps of
    1x1 .. 24x24, where the bookkeeping of the general path costs more than the product."""
    _, C, H, W = x.shape
    O = weight.shape[0]
    y = weight.reshape(O, C) @ x.reshape(C, H * W)                            # [O, C] @ [C, H*W]
    if bias is not None:
        y += bias[:, None]
    return y.reshape(1, O, H, W)


def _pointwise(x, w, bias, out):
    """1x1 convolution as one matrix product: x [B, C, H, W] (may be a strided view), w [O, C],
    bias [O, 1] or None; writes out [B, O, H, W]."""
    B, C, H, W = x.shape
    O, N = w.shape[0], H * W
    if B > 1 and N < FOLD_BATCH_BELOW:               # small maps: one GEMM over the whole batch
        cols = buffers.scratch("conv2d.cols", (C, B, H, W), x.dtype)
        np.copyto(cols, x.transpose(1, 0, 2, 3))                                # [C, B, H, W]
        y = buffers.scratch("conv2d.wide", (O, B * N), x.dtype)
        np.matmul(w, cols.reshape(C, B * N), out=y)                             # -> [O, B*H*W]
        if bias is not None:
            y += bias
        np.copyto(out, y.reshape(O, B, H, W).transpose(1, 0, 2, 3))             # -> [B, O, H, W]
        return
    for b in range(B):
        o = out[b].reshape(O, N, copy=False)
        np.matmul(w, x[b].reshape(C, N), out=o)                                 # [O, C] @ [C, H*W]
        if bias is not None:
            o += bias


def _im2col_gemm(taps, w, bias, out):
    """Convolution as GEMMs: taps [B, C, kh, kw, Ho, Wq] (a view, Wq >= Wo), w [O, K = C*kh*kw],
    bias [O, 1] or None; writes out [B, O, Ho, Wo] = (w @ im2col + bias)[..., :Wo] block by block.
    A block holds at least GEMM_COLUMNS output pixels where the batch has them (several small images
    side by side in one GEMM), so that BLAS runs at speed on the big-K layers (Stud5, ResNet)."""
    B, C, kh, kw, Ho, Wq = taps.shape
    O, K = w.shape
    Wo = out.shape[3]
    per_row = (K if Wq == Wo else max(K, O)) * Wq * taps.itemsize   # the wide grid's GEMM result is a block too
    chunk = max(CHUNK_BYTES, per_row * GEMM_COLUMNS // Wq)
    for b0, b1, y0, y1 in _blocks(B, Ho, per_row, chunk):
        nb, rows = b1 - b0, y1 - y0
        if nb > 1 and Ho * Wq < GEMM_COLUMNS:        # small maps: the block's images side by side
            cols = buffers.scratch("conv2d.cols", (C, kh, kw, nb, Ho, Wq), taps.dtype)
            np.copyto(cols, taps[b0:b1].transpose(1, 2, 3, 0, 4, 5))            # [K, nb, Ho, Wq]
            y = buffers.scratch("conv2d.wide", (O, nb * Ho * Wq), taps.dtype)
            np.matmul(w, cols.reshape(K, nb * Ho * Wq), out=y)                  # -> [O, nb*Ho*Wq]
            if bias is not None:
                y += bias
            np.copyto(out[b0:b1], y.reshape(O, nb, Ho, Wq)[..., :Wo].transpose(1, 0, 2, 3))
            continue
        cols = buffers.scratch("conv2d.cols", (nb, C, kh, kw, rows, Wq), taps.dtype)
        np.copyto(cols, taps[b0:b1, :, :, :, y0:y1])                            # [nb, K, rows, Wq]
        for i in range(nb):
            o = out[b0 + i, :, y0:y1]                                           # [O, rows, Wo] view
            if Wq == Wo:                                                        # straight into out
                o = o.reshape(O, rows * Wo, copy=False)
                np.matmul(w, cols[i].reshape(K, rows * Wo), out=o)             # [O, rows*Wo]
                if bias is not None:
                    o += bias
            else:                                                               # wide grid: crop
                y = buffers.scratch("conv2d.wide", (O, rows * Wq), taps.dtype)
                np.matmul(w, cols[i].reshape(K, rows * Wq), out=y)             # [O, rows*Wq]
                if bias is not None:
                    y += bias
                np.copyto(o, y.reshape(O, rows, Wq)[..., :Wo])


def _depthwise(taps, w, bias, out):
    """Depthwise convolution: taps [B, C, kh, kw, Ho, Wq] (a view, Wq >= Wo), w [C, 1, kh*kw], bias
    [C, 1] or None; writes out[b, c] = (w_c @ taps[b, c] + bias_c)[..., :Wo] (a [1, k*k] @ [k*k, Ho*Wq]
    product per channel, stacked). Faster in NumPy than summing k*k shifted slices: each of those is
    a broadcast multiply plus an add over the whole output, while here the taps are copied once and
    BLAS does the sums."""
    B, C, kh, kw, Ho, Wq = taps.shape
    K, Wo = kh * kw, out.shape[3]
    for b0, b1, y0, y1 in _blocks(B, Ho, C * K * Wq * taps.itemsize):
        nb, rows = b1 - b0, y1 - y0
        cols = buffers.scratch("conv2d.cols", (nb, C, kh, kw, rows, Wq), taps.dtype)
        np.copyto(cols, taps[b0:b1, :, :, :, y0:y1])                            # [nb, C, K, rows, Wq]
        o = out[b0:b1, :, y0:y1]                                                # [nb, C, rows, Wo] view
        y = (o.reshape(nb, C, 1, rows * Wo, copy=False) if Wq == Wo else        # straight into out
             buffers.scratch("conv2d.wide", (nb, C, 1, rows * Wq), taps.dtype))
        np.matmul(w, cols.reshape(nb, C, K, rows * Wq), out=y)                  # [nb, C, 1, rows*Wq]
        if bias is not None:
            y += bias[:, None]
        if Wq != Wo:
            np.copyto(o, y.reshape(nb, C, rows, Wq)[..., :Wo])


def _checked_conv_args(x, weight, bias, stride, padding, dilation, groups):
    """The definition's argument checks, skipped for a signature (shapes, dtypes, int arguments) that
    passed before; arguments of other types (tuples, strings, array subclasses) are checked every time."""
    key = None
    if (type(x) is type(weight) is np.ndarray and (bias is None or type(bias) is np.ndarray)
            and type(stride) is type(padding) is type(dilation) is type(groups) is int):
        key = (x.shape, x.dtype, weight.shape, weight.dtype, None if bias is None else (bias.shape, bias.dtype),
               stride, padding, dilation, groups)
    return buffers.remembered(D._conv_args, key, x, weight, bias, stride, padding, dilation, groups)


@replaces(D.conv2d)
def conv2d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """``lmref.ops.conv2d``, arranged for BLAS (module docstring)."""
    stride, pads, dilation, G, out_hw = _checked_conv_args(x, weight, bias, stride, padding, dilation, groups)
    return _conv2d(x, weight, bias, stride, pads, dilation, G, out_hw)


@replaces(D.linear)
def linear(x, weight, bias=None):
    """``lmref.ops.linear`` with its checks run once per signature."""
    key = None
    if type(x) is type(weight) is np.ndarray and (bias is None or type(bias) is np.ndarray):
        key = (x.shape, x.dtype, weight.shape, weight.dtype, None if bias is None else (bias.shape, bias.dtype))
    buffers.remembered(D._linear_args, key, x, weight, bias)
    y = x @ weight.T                                                      # [..., in] -> [..., out]
    return y if bias is None else y + bias
