"""Attention: MobileViT-v2 separable (linear) self-attention, and matmul.

Source of the attention: cvnets ``cvnets/layers/linear_attention.py`` ``LinearSelfAttention._forward_self_attn``
and timm ``timm/models/mobilevit.py`` ``LinearSelfAttention._forward_self_attn`` (identical maths):

    qkv = qkv_proj(x)                                      # 1x1 conv d -> 1 + 2d, bias
    query, key, value = qkv.split([1, d, d], dim=1)
    context_scores = softmax(query, dim=-1)                # over N, per batch and in-patch pixel p
    context_vector = (key * context_scores).sum(dim=-1, keepdim=True)
    out = relu(value) * context_vector.expand_as(value)
    out = out_proj(out)                                    # 1x1 conv d -> d, bias

(attention dropout and output dropout are identities at inference.) A faster kernel (the context
reduction as a matrix-vector product) is in ``lmref.fast.attention``.
"""
import numpy as np

from ..trace import op
from ._check import check_array, check_same_dtype

__all__ = ["separable_self_attention", "matmul"]


@op
def matmul(a, b):
    """``torch.matmul`` (= ``numpy.matmul``): a [..., n, k] @ b [..., k, m] -> [..., n, m] with batch
    dimensions broadcast; a 1-D operand is treated as a row (a) or column (b) vector and that dimension
    dropped from the result (two 1-D operands: their dot product as a 0-d array, not a NumPy scalar)."""
    check_array(a, "a", min_ndim=1)
    check_array(b, "b", min_ndim=1)
    check_same_dtype(("a", a), ("b", b))
    k_b = b.shape[0] if b.ndim == 1 else b.shape[-2]
    if a.shape[-1] != k_b:
        raise ValueError(f"matmul: inner dimensions differ, a {a.shape} vs b {b.shape}")
    try:
        return np.asarray(np.matmul(a, b))        # two 1-D operands: a 0-d array, as torch gives
    except ValueError as e:                       # batch dimensions that do not broadcast
        raise ValueError(f"matmul: batch dimensions of a {a.shape} and b {b.shape} do not broadcast") from e


def _pointwise(w, b, name, out_ch, in_ch):
    """A 1x1 conv weight [out, in, 1, 1] (or a plain [out, in] matrix) and bias [out] or None ->
    (w [out, in], b), checked; the errors name ``{name}_weight`` / ``{name}_bias``."""
    check_array(w, f"{name}_weight", ndim=(2, 4))
    if w.ndim == 4 and w.shape[2:] != (1, 1):
        raise ValueError(f"{name}_weight: expected a 1x1 kernel, got shape {w.shape}")
    if w.shape[:2] != (out_ch, in_ch):
        raise ValueError(f"{name}_weight: expected shape ({out_ch}, {in_ch}, 1, 1), got {w.shape}")
    if b is not None and check_array(b, f"{name}_bias").shape != (out_ch,):
        raise ValueError(f"{name}_bias: expected shape ({out_ch},), got {b.shape}")
    return w.reshape(out_ch, in_ch), b


def _conv1x1(x, w, bias):
    """1x1 convolution as a matrix product: x [B, Cin, P, N], w [Cout, Cin] -> [B, Cout, P, N]."""
    B, C, P, N = x.shape
    y = (w @ x.reshape(B, C, P * N)).reshape(B, w.shape[0], P, N)   # [B, Cin, P*N] -> [B, Cout, P, N]
    return y if bias is None else y + bias[:, None, None]


def _attention_args(x, qkv_weight, qkv_bias, out_weight, out_bias):
    """Checks; returns the weights as matrices (w_qkv [1+2d, d], b_qkv, w_out [d, d], b_out)."""
    d = check_array(x, "x", ndim=4).shape[1]
    w_qkv, b_qkv = _pointwise(qkv_weight, qkv_bias, "qkv", 1 + 2 * d, d)   # [1+2d, d], [1+2d]
    w_out, b_out = _pointwise(out_weight, out_bias, "out", d, d)           # [d, d], [d]
    check_same_dtype(("x", x), ("qkv_weight", w_qkv), ("qkv_bias", b_qkv),
                     ("out_weight", w_out), ("out_bias", b_out))
    return w_qkv, b_qkv, w_out, b_out


@op
def separable_self_attention(x, qkv_weight, qkv_bias, out_weight, out_bias):
    """MobileViT-v2 separable self-attention on patches x [B, d, P, N] -> [B, d, P, N] (cvnets/timm
    ``_forward_self_attn``, the module docstring): qkv_weight [1+2d, d, 1, 1], qkv_bias [1+2d],
    out_weight [d, d, 1, 1], out_bias [d] (``qkv_proj.*`` / ``out_proj.*``). Per batch element and
    in-patch pixel p:  I, K, V = split [1, d, d] of W x + b;  c_s = softmax_N(I);  c_v = sum_N K * c_s;
    y = W_o (ReLU(V) * c_v) + b_o. Linear in N, no heads."""
    w_qkv, b_qkv, w_out, b_out = _attention_args(x, qkv_weight, qkv_bias, out_weight, out_bias)
    d = x.shape[1]
    qkv = _conv1x1(x, w_qkv, b_qkv)                            # [B, d, P, N] -> [B, 1+2d, P, N]
    query, key, value = qkv[:, :1], qkv[:, 1:1 + d], qkv[:, 1 + d:]   # [B,1,P,N], [B,d,P,N], [B,d,P,N]
    e = np.exp(query - query.max(axis=-1, keepdims=True))
    context_scores = e / e.sum(axis=-1, keepdims=True)         # softmax over N: [B, 1, P, N]
    context_vector = (key * context_scores).sum(axis=-1, keepdims=True)   # [B, d, P, N] -> [B, d, P, 1]
    out = np.maximum(value, 0) * context_vector                # ReLU(V) * c_v: [B, d, P, N]
    return _conv1x1(out, w_out, b_out)                         # out_proj: [B, d, P, N]
