"""Convolution and fully connected layers: conv2d, conv_transpose2d, linear, and folding an inference
BatchNorm into the layer before it.

conv2d is written the textbook way, im2col + one matrix product per group: pad, gather every
kernel tap's shifted view of the input into columns, multiply by the flattened filters.
A faster conv2d kernel (same sums, arranged for BLAS) is in ``lmref.fast.conv``.
"""
import numpy as np

from ..trace import op
from ._check import check_array, check_same_dtype, pair

__all__ = ["conv2d", "conv_transpose2d", "linear", "fold_batch_norm"]


def _conv_padding(padding, kernel, dilation, stride):
    """padding argument -> ((top, bottom), (left, right)), following torch.nn.functional.conv2d."""
    if isinstance(padding, str):
        return _named_padding(padding, kernel, dilation, stride)
    ph, pw = pair(padding, "padding")
    if ph < 0 or pw < 0:
        raise ValueError(f"conv2d: padding must be >= 0, got {(ph, pw)}")
    return (ph, ph), (pw, pw)


def _named_padding(padding, kernel, dilation, stride):
    """"valid": none. "same": total dilation*(k-1) per axis, the odd one extra on the bottom/right
    (torch's rule, stride 1 only)."""
    if padding == "valid":
        return (0, 0), (0, 0)
    if padding == "same":
        if stride != (1, 1):
            raise ValueError(f"conv2d: padding='same' is not supported for strided convolutions (stride={stride})")
        total = [d * (k - 1) for d, k in zip(dilation, kernel)]
        return tuple((t // 2, t - t // 2) for t in total)
    raise ValueError(f"conv2d: padding must be an int, a pair, 'same' or 'valid', got {padding!r}")


def _im2col(x, kernel, stride, dilation, out_hw):
    """Gather the kernel taps: x [B, C, Hp, Wp] (padded) -> cols [B, C, kh, kw, Ho, Wo],
    cols[b, c, i, j, y, x] = x[b, c, y*sh + i*dh, x*sw + j*dw]."""
    (kh, kw), (sh, sw), (dh, dw), (ho, wo) = kernel, stride, dilation, out_hw
    cols = np.empty(x.shape[:2] + (kh, kw, ho, wo), dtype=x.dtype)
    for i in range(kh):
        for j in range(kw):
            top, left = i * dh, j * dw
            cols[:, :, i, j] = x[:, :, top:top + sh * (ho - 1) + 1:sh, left:left + sw * (wo - 1) + 1:sw]
    return cols


def _conv_args(x, weight, bias, stride, padding, dilation, groups):
    """conv2d's argument checks; returns (stride, ((pt, pb), (pl, pr)), dilation, groups, (Ho, Wo))."""
    check_array(x, "x", ndim=4)
    check_array(weight, "weight", ndim=4)
    if bias is not None:
        check_array(bias, "bias", ndim=1)
    check_same_dtype(("x", x), ("weight", weight), ("bias", bias))
    if not isinstance(groups, (int, np.integer)) or groups < 1:
        raise ValueError(f"conv2d: groups must be a positive int, got {groups!r}")
    B, C_in, H, W = x.shape
    C_out, C_in_g, kh, kw = weight.shape
    G = int(groups)
    if C_in % G or C_out % G:
        raise ValueError(f"conv2d: groups={G} must divide in_channels={C_in} and out_channels={C_out}")
    if C_in_g * G != C_in:
        raise ValueError(f"conv2d: weight {weight.shape} expects {C_in_g * G} input channels "
                         f"(weight.shape[1]={C_in_g} x groups={G}), x has {C_in} (shape {x.shape})")
    if bias is not None and bias.shape[0] != C_out:
        raise ValueError(f"conv2d: bias has {bias.shape[0]} entries, weight has {C_out} output channels")
    if min(kh, kw) < 1:
        raise ValueError(f"conv2d: empty kernel, weight shape {weight.shape}")
    stride, dilation = pair(stride, "stride"), pair(dilation, "dilation")
    if min(stride) < 1 or min(dilation) < 1:
        raise ValueError(f"conv2d: stride and dilation must be >= 1, got stride={stride} dilation={dilation}")
    (pt, pb), (pl, pr) = _conv_padding(padding, (kh, kw), dilation, stride)
    Hp, Wp = H + pt + pb, W + pl + pr
    ekh, ekw = dilation[0] * (kh - 1) + 1, dilation[1] * (kw - 1) + 1   # dilated kernel extent
    if ekh > Hp or ekw > Wp:
        raise ValueError(f"conv2d: padded input {Hp}x{Wp} is smaller than the (dilated) kernel {ekh}x{ekw}")
    Ho, Wo = (Hp - ekh) // stride[0] + 1, (Wp - ekw) // stride[1] + 1
    return stride, ((pt, pb), (pl, pr)), dilation, G, (Ho, Wo)


@op
def conv2d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """2-D cross-correlation, as ``torch.nn.functional.conv2d`` (zero padding): x [B, Cin, H, W],
    weight [Cout, Cin/G, kh, kw], bias [Cout] or None -> [B, Cout, Ho, Wo]; stride, dilation, padding
    an int or (h, w) pair, padding also "valid" or "same"; G = groups (G == Cin == Cout: depthwise).

    out[b, o, y, x] = bias[o] + sum_{c, i, j} weight[o, c, i, j] * xpad[b, g*Cin/G + c, y*sh + i*dh, x*sw + j*dw],
    g = o // (Cout/G);  Ho = (H + pad_top + pad_bottom - dh*(kh-1) - 1) // sh + 1 (W alike)."""
    stride, pads, dilation, G, (Ho, Wo) = _conv_args(x, weight, bias, stride, padding, dilation, groups)
    B, (C_out, C_in_g, kh, kw) = x.shape[0], weight.shape
    xp = np.pad(x, ((0, 0), (0, 0), *pads))                               # [B, Cin, H, W] -> [B, Cin, Hp, Wp]
    cols = _im2col(xp, (kh, kw), stride, dilation, (Ho, Wo))              # -> [B, Cin, kh, kw, Ho, Wo]
    cols = cols.reshape(B, G, C_in_g * kh * kw, Ho * Wo)                  # -> [B, G, K = Cin/G*kh*kw, Ho*Wo]
    w = weight.reshape(G, C_out // G, C_in_g * kh * kw)                   # [Cout, Cin/G, kh, kw] -> [G, Cout/G, K]
    out = np.matmul(w, cols)                                              # per group -> [B, G, Cout/G, Ho*Wo]
    out = out.reshape(B, C_out, Ho, Wo)                                   # -> [B, Cout, Ho, Wo]
    if bias is not None:
        out += bias[:, None, None]
    return out


def _conv_transpose_args(x, weight, bias, stride, padding, output_padding, groups, dilation):
    """conv_transpose2d's argument checks; returns (stride, padding, output_padding, dilation, G, (Ho, Wo))."""
    check_array(x, "x", ndim=4)
    check_array(weight, "weight", ndim=4)
    if bias is not None:
        check_array(bias, "bias", ndim=1)
    check_same_dtype(("x", x), ("weight", weight), ("bias", bias))
    if not isinstance(groups, (int, np.integer)) or isinstance(groups, bool) or groups < 1:
        raise ValueError(f"conv_transpose2d: groups must be a positive int, got {groups!r}")
    G = int(groups)
    C_in, C_out_g, kh, kw = weight.shape
    if x.shape[1] != C_in or C_in % G:
        raise ValueError(f"conv_transpose2d: weight {weight.shape} expects {C_in} input channels "
                         f"(divisible by groups={G}), x has shape {x.shape}")
    if bias is not None and bias.shape[0] != C_out_g * G:
        raise ValueError(f"conv_transpose2d: bias has {bias.shape[0]} entries, expected {C_out_g * G}")
    s, p, op_, d = (pair(v, n) for v, n in ((stride, "stride"), (padding, "padding"),
                                             (output_padding, "output_padding"), (dilation, "dilation")))
    if min(s) < 1 or min(d) < 1 or min(p) < 0 or min(op_) < 0:
        raise ValueError(f"conv_transpose2d: stride {s} and dilation {d} must be >= 1, padding {p} and "
                         f"output_padding {op_} >= 0")
    if any(o >= max(si, di) for o, si, di in zip(op_, s, d)):
        raise ValueError(f"conv_transpose2d: output_padding {op_} must be smaller than stride {s} or dilation {d}")
    out = tuple((n - 1) * si - 2 * pi + di * (k - 1) + oi + 1
                for n, si, pi, di, k, oi in zip(x.shape[2:], s, p, d, (kh, kw), op_))
    if min(out) < 1:
        raise ValueError(f"conv_transpose2d: output size {out} is not positive")
    return s, p, op_, d, G, out


@op
def conv_transpose2d(x, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1):
    """Transposed convolution ("deconvolution"), as ``torch.nn.functional.conv_transpose2d``: the
    adjoint of conv2d, every input pixel scattering a weighted copy of the kernel.

    x       [B, Cin, H, W]
    weight  [Cin, Cout/groups, kh, kw]   (input channels first, as torch stores it)
    bias    [Cout] or None
    returns [B, Cout, Ho, Wo], Ho = (H - 1)*sh - 2*ph + dh*(kh - 1) + output_padding_h + 1 (W alike)

    full[b, o, y*sh + i*dh, x*sw + j*dw] += sum_c x[b, c, y, x] * weight[c, o', i, j]   (c in o's group,
    o' = o mod Cout/G); out = full cropped by ``padding`` on every side (output_padding adds rows and
    columns at the bottom/right that only the bias reaches) + bias.
    """
    (sh, sw), (ph, pw), _, (dh, dw), G, (Ho, Wo) = _conv_transpose_args(
        x, weight, bias, stride, padding, output_padding, groups, dilation)
    B, C_in, H, W = x.shape
    _, C_out_g, kh, kw = weight.shape
    w = weight.reshape(G, C_in // G, C_out_g * kh * kw)                      # [G, Cin/G, Cout/G*kh*kw]
    cols = np.matmul(w.transpose(0, 2, 1), x.reshape(B, G, C_in // G, H * W))   # -> [B, G, Cout/G*kh*kw, H*W]
    cols = cols.reshape(B, G * C_out_g, kh, kw, H, W)                        # -> [B, Cout, kh, kw, H, W]
    full = np.zeros((B, G * C_out_g, ph + Ho + ph, pw + Wo + pw), dtype=x.dtype)   # every tap lands inside
    for i in range(kh):
        for j in range(kw):                                                  # tap (i, j) of every input pixel
            full[:, :, i * dh:i * dh + (H - 1) * sh + 1:sh, j * dw:j * dw + (W - 1) * sw + 1:sw] += cols[:, :, i, j]
    out = full[:, :, ph:ph + Ho, pw:pw + Wo]                                 # crop the padding
    if bias is not None:
        out = out + bias[:, None, None]
    return np.ascontiguousarray(out)


def _linear_args(x, weight, bias):
    """linear's argument checks (True when they pass)."""
    check_array(x, "x", min_ndim=1)
    check_array(weight, "weight", ndim=2)
    if bias is not None:
        check_array(bias, "bias", ndim=1)
    check_same_dtype(("x", x), ("weight", weight), ("bias", bias))
    if x.shape[-1] != weight.shape[1]:
        raise ValueError(f"linear: x has {x.shape[-1]} input features (shape {x.shape}), "
                         f"weight {weight.shape} expects {weight.shape[1]}")
    if bias is not None and bias.shape[0] != weight.shape[0]:
        raise ValueError(f"linear: bias has {bias.shape[0]} entries, weight has {weight.shape[0]} outputs")
    return True


@op
def linear(x, weight, bias=None):
    """Fully connected layer, as ``torch.nn.functional.linear``: y = x W^T + b.

    x [..., in], weight [out, in], bias [out] or None -> [..., out]"""
    _linear_args(x, weight, bias)
    y = x @ weight.T                                                      # [..., in] -> [..., out]
    if bias is not None:
        y = y + bias
    return y


def fold_batch_norm(weight, bias, running_mean, running_var, gamma, beta, eps=1e-5):
    """Fold an inference BatchNorm into the conv / linear layer before it (plain function, not traced).

    BN(conv(x)) = gamma * (W*x + b - mean) / sqrt(var + eps) + beta = W'*x + b'  with
        s  = gamma / sqrt(var + eps)            [Cout]
        W' = W * s  (per output channel)        [Cout, ...] (conv [Cout, Cin/G, kh, kw] or linear [Cout, in])
        b' = (b - mean) * s + beta              [Cout]   (b = 0 when the layer has no bias)
    gamma / beta may be None (BatchNorm without affine: 1 / 0).  Returns (W', b') in weight's dtype.
    """
    check_array(weight, "weight", min_ndim=2)
    C = weight.shape[0]
    named = {"bias": bias, "running_mean": running_mean, "running_var": running_var,
             "gamma": gamma, "beta": beta}
    for name, v in named.items():
        if v is not None:
            check_array(v, name, ndim=1)
            if v.shape[0] != C:
                raise ValueError(f"fold_batch_norm: {name} has {v.shape[0]} entries, weight has {C} output channels")
    if running_mean is None or running_var is None:
        raise ValueError("fold_batch_norm: running_mean and running_var are required")
    check_same_dtype(("weight", weight), *named.items())
    if eps < 0:
        raise ValueError(f"fold_batch_norm: eps must be >= 0, got {eps}")
    dt = weight.dtype.type
    gamma = np.ones(C, dt) if gamma is None else gamma
    beta = np.zeros(C, dt) if beta is None else beta
    bias = np.zeros(C, dt) if bias is None else bias
    s = gamma / np.sqrt(running_var + dt(eps))                             # [Cout]
    w = weight * s.reshape((C,) + (1,) * (weight.ndim - 1))                # [Cout, ...]
    b = (bias - running_mean) * s + beta                                   # [Cout]
    return w, b
