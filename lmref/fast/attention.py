"""separable_self_attention, fast: the definition's steps (``lmref.ops.attention``) with fewer
temporaries."""
import numpy as np

from ..ops import attention as D
from .registry import replaces


@replaces(D.separable_self_attention)
def separable_self_attention(x, qkv_weight, qkv_bias, out_weight, out_bias):
    """The context vector sum_N K * c_s as one stacked matrix-vector product per (batch, p) instead of
    a [B, d, P, N] product and a sum, and ReLU(V) * c_v computed in place.  x [B, d, P, N] -> [B, d, P, N]."""
    w_qkv, b_qkv, w_out, b_out = D._attention_args(x, qkv_weight, qkv_bias, out_weight, out_bias)
    d = x.shape[1]
    qkv = D._conv1x1(x, w_qkv, b_qkv)                          # [B, d, P, N] -> [B, 1+2d, P, N]
    query, key, value = qkv[:, 0], qkv[:, 1:1 + d], qkv[:, 1 + d:]   # [B,P,N], [B,d,P,N], [B,d,P,N]
    e = np.exp(query - query.max(axis=-1, keepdims=True))
    e /= e.sum(axis=-1, keepdims=True)                         # context scores c_s: [B, P, N]
    context_vector = np.matmul(key.transpose(0, 2, 1, 3), e[..., None])   # [B, P, d, N] @ [B, P, N, 1] -> [B, P, d, 1]
    out = np.maximum(value, 0)                                 # ReLU(V): [B, d, P, N]
    out *= context_vector.transpose(0, 2, 1, 3)                # * c_v [B, d, P, 1]
    return D._conv1x1(out, w_out, b_out)                       # out_proj: [B, d, P, N]
