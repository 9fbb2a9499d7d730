"""lmref.ops.norm against torch.nn.functional: batch_norm, group_norm, instance_norm, layer_norm."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import assert_close
from hypothesis import given
from hypothesis import strategies as st

from lmref.ops import batch_norm, group_norm, instance_norm, layer_norm
from lmref.trace import trace

DTYPES = st.sampled_from([np.float32, np.float64])
SEEDS = st.integers(0, 2**32 - 1)
EPS = st.sampled_from([1e-5, 1e-6, 1e-3, 0.1])


def t(a):
    return None if a is None else torch.from_numpy(a)


def _x(rng, shape, dtype):
    """Inputs with a non-zero mean and a non-unit scale, so the statistics matter."""
    return (rng.uniform(0.3, 3.0) * rng.standard_normal(shape) + rng.uniform(-2, 2)).astype(dtype)


def _tol(x, axes, eps, w):
    """float32 tolerance: torch's float32 kernels compute x * (rstd * w) + (b - mean * rstd * w), which
    loses about one float32 ulp of |x| * rstd * |w| to cancellation.  When a group's variance is tiny
    next to eps (e.g. a single-element group, output exactly the bias) rstd = 1/sqrt(eps) ~ 316 and
    that loss exceeds the default atol, so atol grows by 8 ulps of that product.  float64: default."""
    if x.dtype != np.float32:
        return {}
    x64 = x.astype(np.float64)
    rstd = 1 / np.sqrt(x64.var(axis=axes) + eps)
    scale = np.abs(x64).max() * rstd.max() * max(1.0, np.abs(w).max() if w is not None and w.size else 1.0)
    return dict(atol=1e-5 + 8 * 2.0**-24 * scale)


def _affine(rng, shape, dtype, on):
    if not on:
        return None, None
    return rng.standard_normal(shape).astype(dtype), rng.standard_normal(shape).astype(dtype)


@given(B=st.integers(1, 3), C=st.integers(1, 5), spatial=st.lists(st.integers(1, 5), max_size=3),
       affine=st.booleans(), eps=EPS, dtype=DTYPES, seed=SEEDS)
def test_batch_norm_matches_torch(B, C, spatial, affine, eps, dtype, seed):
    rng = np.random.default_rng(seed)
    x = _x(rng, (B, C, *spatial), dtype)
    mean = rng.standard_normal(C).astype(dtype)
    var = rng.uniform(0.1, 3.0, C).astype(dtype)
    w, b = _affine(rng, C, dtype, affine)
    y = batch_norm(x, mean, var, w, b, eps=eps)
    assert_close(y, F.batch_norm(t(x), t(mean), t(var), t(w), t(b), training=False, eps=eps))


@given(B=st.integers(1, 3), G=st.integers(1, 4), cg=st.integers(1, 3),
       spatial=st.lists(st.integers(1, 5), max_size=3), affine=st.booleans(), eps=EPS, dtype=DTYPES,
       seed=SEEDS)
def test_group_norm_matches_torch(B, G, cg, spatial, affine, eps, dtype, seed):
    if B * cg * np.prod(spatial) == 1:
        B = 2                                # torch refuses B * C/G * H * W == 1 (a training-mode check)
    rng = np.random.default_rng(seed)
    C = G * cg
    x = _x(rng, (B, C, *spatial), dtype)
    w, b = _affine(rng, C, dtype, affine)
    assert_close(group_norm(x, G, w, b, eps=eps), F.group_norm(t(x), G, t(w), t(b), eps=eps),
                 **_tol(x.reshape(B, G, -1), 2, eps, w))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_group_norm_one_group_is_mobilevitv2_layernorm2d(dtype):
    # MobileViT-v2's norm: GroupNorm(1, C) = stats over C x H x W jointly per sample, per-channel affine
    rng = np.random.default_rng(3)
    x = _x(rng, (2, 6, 4, 5), dtype)
    w, b = _affine(rng, 6, dtype, True)
    gn = torch.nn.GroupNorm(1, 6, eps=1e-5).to(torch.float64 if dtype == np.float64 else torch.float32)
    with torch.no_grad():
        gn.weight.copy_(t(w))
        gn.bias.copy_(t(b))
        expected = gn(t(x))
    y = group_norm(x, 1, w, b)
    assert_close(y, expected)
    # and by hand: one mean / biased variance per sample over all of C, H, W
    x64 = x.astype(np.float64)
    m = x64.mean(axis=(1, 2, 3), keepdims=True)
    v = x64.var(axis=(1, 2, 3), keepdims=True)
    by_hand = (x64 - m) / np.sqrt(v + 1e-5) * w[:, None, None] + b[:, None, None]
    assert_close(y, by_hand.astype(dtype))
    # which is not a LayerNorm over the channels alone
    per_pixel = F.layer_norm(t(x).permute(0, 2, 3, 1), (6,), t(w), t(b)).permute(0, 3, 1, 2)
    assert not np.allclose(y, per_pixel.numpy(), atol=1e-3)


@given(B=st.integers(1, 3), C=st.integers(1, 4), spatial=st.lists(st.integers(1, 5), min_size=1, max_size=3),
       affine=st.booleans(), eps=EPS, dtype=DTYPES, seed=SEEDS)
def test_instance_norm_matches_torch(B, C, spatial, affine, eps, dtype, seed):
    if np.prod(spatial) == 1:
        spatial = spatial + [2]              # torch needs more than one spatial element
    rng = np.random.default_rng(seed)
    x = _x(rng, (B, C, *spatial), dtype)
    w, b = _affine(rng, C, dtype, affine)
    assert_close(instance_norm(x, w, b, eps=eps), F.instance_norm(t(x), weight=t(w), bias=t(b), eps=eps),
                 **_tol(x, tuple(range(2, x.ndim)), eps, w))


@given(shape=st.lists(st.integers(1, 5), min_size=1, max_size=4), data=st.data(), affine=st.booleans(),
       as_int=st.booleans(), eps=EPS, dtype=DTYPES, seed=SEEDS)
def test_layer_norm_matches_torch(shape, data, affine, as_int, eps, dtype, seed):
    k = data.draw(st.integers(1, len(shape)))
    ns = tuple(shape[len(shape) - k:])
    rng = np.random.default_rng(seed)
    x = _x(rng, tuple(shape), dtype)
    w, b = _affine(rng, ns, dtype, affine)
    arg = ns[0] if (as_int and k == 1) else ns
    assert_close(layer_norm(x, arg, w, b, eps=eps), F.layer_norm(t(x), ns, t(w), t(b), eps=eps),
                 **_tol(x, tuple(range(len(shape) - k, len(shape))), eps, w))


def test_eps_is_inside_the_sqrt_with_biased_variance():
    # x = [0, 2]: mean 1, biased var 1 -> (x - 1) / sqrt(1 + eps)
    x = np.array([[0.0, 2.0]])
    eps = 0.25
    expected = [-1 / np.sqrt(1.25), 1 / np.sqrt(1.25)]
    np.testing.assert_allclose(layer_norm(x, 2, eps=eps).ravel(), expected, rtol=1e-15)
    np.testing.assert_allclose(group_norm(x.reshape(1, 2, 1), 1, eps=eps).ravel(), expected, rtol=1e-15)


def test_norm_errors():
    x = np.zeros((2, 4, 3, 3))
    c = np.ones(4)
    for bad in (x.astype(np.int64), x.astype(np.float16)):
        with pytest.raises(TypeError, match="float32 or float64"):
            batch_norm(bad, c, c)
        with pytest.raises(TypeError, match="float32 or float64"):
            group_norm(bad, 2)
        with pytest.raises(TypeError, match="float32 or float64"):
            instance_norm(bad)
        with pytest.raises(TypeError, match="float32 or float64"):
            layer_norm(bad, 3)
    with pytest.raises(ValueError, match="running_mean has 3 entries"):
        batch_norm(x, np.zeros(3), c)
    with pytest.raises(TypeError, match="running_var: dtype"):
        batch_norm(x, c, c.astype(np.float32))
    with pytest.raises(ValueError, match="x: expected rank >= 2"):
        batch_norm(np.zeros(4), c, c)
    with pytest.raises(ValueError, match="num_groups=3 does not divide"):
        group_norm(x, 3)
    with pytest.raises(ValueError, match="num_groups must be a positive int"):
        group_norm(x, 0)
    with pytest.raises(ValueError, match="weight has 2 entries"):
        group_norm(x, 2, np.ones(2))
    with pytest.raises(ValueError, match="x: expected rank >= 3"):
        instance_norm(np.zeros((2, 4)))
    with pytest.raises(ValueError, match="more than 1 spatial element"):
        instance_norm(np.zeros((2, 4, 1, 1)))
    with pytest.raises(ValueError, match="does not match the trailing dims"):
        layer_norm(x, (4, 3))
    with pytest.raises(ValueError, match="bias has shape"):
        layer_norm(x, (3, 3), np.ones((3, 3)), np.ones(9))
    with pytest.raises(ValueError, match="eps must be"):
        layer_norm(x, 3, eps=-1.0)


def test_norm_ops_are_traced():
    x = np.random.default_rng(0).standard_normal((1, 2, 3, 3))
    with trace() as tr:
        y = group_norm(x, 1, eps=1e-6)
        layer_norm(y, (3,))
    assert tr.names() == ["group_norm", "layer_norm"]
    assert tr["group_norm"].attrs == {"eps": 1e-6} and tr["group_norm"].inputs == [[1, 2, 3, 3]]
    np.testing.assert_array_equal(tr["group_norm"].output, y)
