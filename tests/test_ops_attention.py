"""lmref.ops.attention: separable_self_attention against a torch module written after timm's
LinearSelfAttention (1x1 convs + softmax), and matmul against torch.matmul."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import assert_close
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from lmref.ops import matmul, separable_self_attention
from lmref.trace import trace

DTYPES = st.sampled_from([np.float32, np.float64])
SEEDS = st.integers(0, 2**32 - 1)
TORCH_DTYPE = {np.float32: torch.float32, np.float64: torch.float64}


class LinearSelfAttention(nn.Module):
    """timm.models.mobilevit.LinearSelfAttention at inference (dropouts are identities)."""

    def __init__(self, embed_dim, bias=True):
        super().__init__()
        self.embed_dim = embed_dim
        self.qkv_proj = nn.Conv2d(embed_dim, 1 + 2 * embed_dim, kernel_size=1, bias=bias)
        self.out_proj = nn.Conv2d(embed_dim, embed_dim, kernel_size=1, bias=bias)

    def forward(self, x):                                     # x: [B, d, P, N]
        qkv = self.qkv_proj(x)
        query, key, value = qkv.split([1, self.embed_dim, self.embed_dim], dim=1)
        context_scores = F.softmax(query, dim=-1)
        context_vector = (key * context_scores).sum(dim=-1, keepdim=True)
        out = F.relu(value) * context_vector.expand_as(value)
        return self.out_proj(out)


def params(m, dtype, as_matrix=False):
    """lmref arguments from the module's state dict (optionally squeezed to [out, in] matrices)."""
    sd = {k: v.detach().numpy().astype(dtype) for k, v in m.state_dict().items()}
    w_qkv, w_out = sd["qkv_proj.weight"], sd["out_proj.weight"]
    if as_matrix:
        w_qkv, w_out = w_qkv[:, :, 0, 0], w_out[:, :, 0, 0]
    return w_qkv, sd.get("qkv_proj.bias"), w_out, sd.get("out_proj.bias")


@given(st.integers(1, 2), st.integers(1, 8), st.integers(1, 4), st.integers(1, 20), DTYPES, SEEDS,
       st.booleans(), st.booleans(), st.floats(0.1, 5.0))
def test_matches_timm_linear_self_attention(B, d, P, N, dtype, seed, bias, as_matrix, spread):
    torch.manual_seed(seed % 2**31)
    m = LinearSelfAttention(d, bias=bias).to(TORCH_DTYPE[dtype]).eval()
    x = (spread * np.random.default_rng(seed).standard_normal((B, d, P, N))).astype(dtype)
    with torch.no_grad():
        expected = m(torch.from_numpy(x))
    assert_close(separable_self_attention(x, *params(m, dtype, as_matrix)), expected)


def test_mobilevit_stage_sizes_and_large_logits():
    """d = 64, P = 4, N = 256 (stage 3 of MobileViT-v2-0.5 at 256 px) with large query logits, where a
    softmax without the max shift would overflow."""
    torch.manual_seed(0)
    m = LinearSelfAttention(64).double().eval()
    with torch.no_grad():
        m.qkv_proj.weight[0] *= 1000.0                     # query row: |logits| up to ~1800 > 709
    x = np.random.default_rng(0).standard_normal((1, 64, 4, 256))
    with torch.no_grad():
        expected = m(torch.from_numpy(x))
    got = separable_self_attention(x, *params(m, np.float64))
    assert np.isfinite(got).all()
    assert_close(got, expected)


def test_formula_by_hand():
    """d = 1, identity projections, zero biases: query = key = value = x, so
    y = relu(x) * sum_n x_n softmax(x)_n."""
    x = np.array([1.0, -2.0, 0.5]).reshape(1, 1, 1, 3)
    w_qkv = np.ones((3, 1, 1, 1))
    out = separable_self_attention(x, w_qkv, np.zeros(3), np.ones((1, 1, 1, 1)), np.zeros(1))
    s = np.exp(x[0, 0, 0]) / np.exp(x[0, 0, 0]).sum()
    np.testing.assert_allclose(out[0, 0, 0], np.maximum(x[0, 0, 0], 0) * (x[0, 0, 0] * s).sum(), rtol=1e-14)


def test_traced_and_dtype_kept():
    m = LinearSelfAttention(4).eval()
    x = np.random.default_rng(1).standard_normal((1, 4, 4, 6)).astype(np.float32)
    with trace() as t:
        y = separable_self_attention(x, *params(m, np.float32))
    assert y.dtype == np.float32
    assert t["separable_self_attention"].inputs == [[1, 4, 4, 6], [9, 4, 1, 1], [9], [4, 4, 1, 1], [4]]


@pytest.mark.parametrize("change, err, match", [
    (lambda a: {**a, "qkv_weight": np.zeros((8, 4, 1, 1))}, ValueError, "qkv_weight: expected shape"),
    (lambda a: {**a, "qkv_weight": np.zeros((9, 4, 3, 3))}, ValueError, "1x1 kernel"),
    (lambda a: {**a, "out_weight": np.zeros((4, 5))}, ValueError, "out_weight"),
    (lambda a: {**a, "qkv_bias": np.zeros(8)}, ValueError, "qkv_bias"),
    (lambda a: {**a, "out_bias": np.zeros((4, 1))}, ValueError, "out_bias"),
    (lambda a: {**a, "x": np.zeros((4, 4, 6))}, ValueError, "x: expected rank 4"),
    (lambda a: {**a, "out_bias": np.zeros(4, np.float32)}, TypeError, "out_bias: dtype"),
    (lambda a: {**a, "x": np.zeros((1, 4, 4, 6), np.int64)}, TypeError, "float32 or float64"),
])
def test_bad_arguments_raise(change, err, match):
    args = dict(x=np.zeros((1, 4, 4, 6)), qkv_weight=np.zeros((9, 4, 1, 1)), qkv_bias=np.zeros(9),
                out_weight=np.zeros((4, 4, 1, 1)), out_bias=np.zeros(4))
    with pytest.raises(err, match=match):
        separable_self_attention(**change(args))


MATMUL_SHAPES = st.sampled_from([
    ((3,), (3,)), ((3,), (3, 4)), ((2, 3), (3,)), ((2, 3), (3, 4)), ((5, 2, 3), (3, 4)),
    ((2, 3), (5, 3, 4)), ((2, 1, 2, 3), (5, 3, 4)), ((1, 4, 3), (2, 1, 3, 2)),
])


@given(MATMUL_SHAPES, DTYPES, SEEDS)
def test_matmul_matches_torch(shapes, dtype, seed):
    rng = np.random.default_rng(seed)
    a, b = (rng.standard_normal(s).astype(dtype) for s in shapes)
    assert_close(matmul(a, b), torch.matmul(torch.from_numpy(a), torch.from_numpy(b)))


@pytest.mark.parametrize("a, b, err, match", [
    (np.zeros((2, 3)), np.zeros((4, 2)), ValueError, "inner dimensions"),
    (np.zeros((2, 2, 3)), np.zeros((3, 3, 4)), ValueError, "broadcast"),
    (np.zeros((2, 3)), np.zeros((3, 4), np.float32), TypeError, "dtype"),
    (np.zeros(()), np.zeros(3), ValueError, "rank"),
    (np.zeros((2, 3)), [[1.0]] * 3, TypeError, "ndarray"),
])
def test_matmul_bad_arguments_raise(a, b, err, match):
    with pytest.raises(err, match=match):
        matmul(a, b)


@given(st.integers(1, 6), DTYPES, SEEDS)
def test_matmul_of_two_vectors_is_a_0d_array(n, dtype, seed):
    rng = np.random.default_rng(seed)
    a, b = rng.standard_normal(n).astype(dtype), rng.standard_normal(n).astype(dtype)
    y = matmul(a, b)
    assert isinstance(y, np.ndarray) and y.shape == () and y.dtype == dtype
    assert_close(y, torch.matmul(torch.from_numpy(a), torch.from_numpy(b)))
