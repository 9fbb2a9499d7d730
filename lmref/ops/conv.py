"""Convolution and fully connected layers: conv2d, linear, and folding an inference BatchNorm into the
layer before it.

conv2d is written the textbook way, im2col + one matrix product per group: pad, gather every
kernel tap's shifted view of the input into columns, multiply by the flattened filters.
"""
import numpy as np

from ..trace import op
from ._check import check_array, check_same_dtype, pair

__all__ = ["conv2d", "linear", "fold_batch_norm"]


def _conv_padding(padding, kernel, dilation, stride):
    """padding argument -> ((top, bottom), (left, right)), following torch.nn.functional.conv2d.

    int or (ph, pw): that many zeros on both sides.  "valid": none.  "same": total
    dilation*(k-1) per axis, the odd one extra on the bottom/right (torch's rule, stride 1 only)."""
    if isinstance(padding, str):
        if padding == "valid":
            return (0, 0), (0, 0)
        if padding == "same":
            if stride != (1, 1):
                raise ValueError(f"conv2d: padding='same' is not supported for strided convolutions (stride={stride})")
            total = [d * (k - 1) for d, k in zip(dilation, kernel)]
            return tuple((t // 2, t - t // 2) for t in total)
        raise ValueError(f"conv2d: padding must be an int, a pair, 'same' or 'valid', got {padding!r}")
    ph, pw = pair(padding, "padding")
    if ph < 0 or pw < 0:
        raise ValueError(f"conv2d: padding must be >= 0, got {(ph, pw)}")
    return (ph, ph), (pw, pw)


def _im2col(x, kernel, stride, dilation, out_hw):
    """Gather the kernel taps: x [B, C, Hp, Wp] (already padded) -> cols [B, C, kh, kw, Ho, Wo].

    cols[b, c, i, j, y, x] = x[b, c, y*sh + i*dh, x*sw + j*dw]."""
    (kh, kw), (sh, sw), (dh, dw), (ho, wo) = kernel, stride, dilation, out_hw
    cols = np.empty(x.shape[:2] + (kh, kw, ho, wo), dtype=x.dtype)
    for i in range(kh):
        for j in range(kw):
            top, left = i * dh, j * dw
            cols[:, :, i, j] = x[:, :, top:top + sh * (ho - 1) + 1:sh, left:left + sw * (wo - 1) + 1:sw]
    return cols


@op
def conv2d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """2-D cross-correlation, as ``torch.nn.functional.conv2d`` (zero padding).

    x       [B, Cin, H, W]
    weight  [Cout, Cin/groups, kh, kw]
    bias    [Cout] or None
    stride, dilation: int or (h, w), >= 1
    padding: int or (h, w) zeros on both sides, or "valid" (none), or "same" (stride 1 only; total
             dilation*(k-1) per axis, the extra one at the bottom/right as torch does)
    groups:  Cin and Cout split into ``groups`` independent convolutions; groups == Cin == Cout is
             the depthwise convolution
    returns [B, Cout, Ho, Wo], Ho = floor((H + pad_top + pad_bottom - dh*(kh-1) - 1) / sh) + 1 (W alike)

    out[b, o, y, x] = bias[o] + sum_{c, i, j} weight[o, c, i, j] * xpad[b, g*Cin/G + c, y*sh + i*dh, x*sw + j*dw]
    with g = o // (Cout/G) the group of output channel o.
    """
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

    xp = np.pad(x, ((0, 0), (0, 0), (pt, pb), (pl, pr)))                   # [B, Cin, H, W] -> [B, Cin, Hp, Wp]
    cols = _im2col(xp, (kh, kw), stride, dilation, (Ho, Wo))              # -> [B, Cin, kh, kw, Ho, Wo]
    cols = cols.reshape(B, G, C_in_g * kh * kw, Ho * Wo)                  # -> [B, G, K = Cin/G*kh*kw, Ho*Wo]
    w = weight.reshape(G, C_out // G, C_in_g * kh * kw)                   # [Cout, Cin/G, kh, kw] -> [G, Cout/G, K]
    out = np.matmul(w, cols)                                              # per group -> [B, G, Cout/G, Ho*Wo]
    out = out.reshape(B, C_out, Ho, Wo)                                   # -> [B, Cout, Ho, Wo]
    if bias is not None:
        out += bias[:, None, None]
    return out


@op
def linear(x, weight, bias=None):
    """Fully connected layer, as ``torch.nn.functional.linear``: y = x W^T + b.

    x [..., in], weight [out, in], bias [out] or None -> [..., out]"""
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
