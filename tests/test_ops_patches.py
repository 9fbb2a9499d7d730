"""lmref.ops.patches: unfold_patches / fold_patches in timm's 6-D form and in the rank-5 rewrite.

No torch op is called unfold_patches, so the references are: torch's F.unfold / F.fold with
kernel = stride = patch (cvnets' default path), timm's 6-D reshape/permute written in torch, timm's
CoreML fold (reshape + pixel_shuffle), and the ICME 2024 paper's split/permute/concat code re-typed
in torch. The rank-5 path is also checked for its promise: no intermediate tensor of rank > 5.
"""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import assert_close
from hypothesis import given
from hypothesis import strategies as st

import lmref.ops.patches as patches_mod
from lmref.ops import fold_patches, unfold_patches
from lmref.trace import trace

DTYPES = st.sampled_from([np.float32, np.float64])
SEEDS = st.integers(0, 2**32 - 1)


def exact(got, expected):
    assert_close(got, expected, rtol=0, atol=0)      # pure data movement: bit-exact


@st.composite
def maps(draw):
    ph, pw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    nh, nw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    B, C = draw(st.integers(1, 2)), draw(st.integers(1, 3))
    x = np.random.default_rng(draw(SEEDS)).standard_normal((B, C, nh * ph, nw * pw)).astype(draw(DTYPES))
    return x, ph, pw


def timm_unfold(x, ph, pw):
    """timm MobileVitV2Block.forward, default (non-CoreML) path."""
    B, C, H, W = x.shape
    nh, nw = H // ph, W // pw
    x = x.reshape(B, C, nh, ph, nw, pw).permute(0, 1, 3, 5, 2, 4)
    return x.reshape(B, C, -1, nh * nw)


def timm_fold(x, H, W, ph, pw):
    B, C = x.shape[:2]
    nh, nw = H // ph, W // pw
    x = x.reshape(B, C, ph, pw, nh, nw).permute(0, 1, 4, 2, 5, 3)
    return x.reshape(B, C, nh * ph, nw * pw)


def paper_unfold(x, ph, pw):
    """The ICME 2024 paper's unfolding_pytorch: 6-D reshape, split the last axis, squeeze, 5-D permute
    (0, 1, 3, 2, 4), unsqueeze at 3, concatenate at 3."""
    B, C, H, W = x.shape
    x = x.reshape(B, C, H // ph, ph, W // pw, pw)
    parts = [torch.unsqueeze(torch.squeeze(s, dim=-1).permute(0, 1, 3, 2, 4), dim=3)
             for s in torch.split(x, 1, dim=-1)]
    return torch.cat(parts, dim=3).reshape(B, C, ph * pw, -1)


def paper_fold(p, H, W):
    """The paper's folding_pytorch (it assumes square patches and a square patch grid)."""
    B, C, P, N = p.shape
    ps, ns = int(P ** 0.5), int(N ** 0.5)
    x = p.reshape(B, C, ps, ps, ns, ns)
    parts = [torch.unsqueeze(torch.squeeze(s, dim=-1).permute(0, 1, 4, 2, 3), dim=4)
             for s in torch.split(x, 1, dim=-1)]
    return torch.cat(parts, dim=4).reshape(B, C, H, W)


@given(maps())
def test_unfold_matches_torch_unfold_and_timm(case):
    x, ph, pw = case
    B, C, H, W = x.shape
    xt = torch.from_numpy(x)
    by_unfold = F.unfold(xt, kernel_size=(ph, pw), stride=(ph, pw)).reshape(B, C, ph * pw, -1)
    for rank5 in (False, True):
        got = unfold_patches(x, ph, pw, rank5=rank5)
        exact(got, by_unfold)
        exact(got, timm_unfold(xt, ph, pw))


@given(maps())
def test_fold_matches_torch_fold_and_timm_and_inverts_unfold(case):
    x, ph, pw = case
    B, C, H, W = x.shape
    p = np.random.default_rng(0).standard_normal((B, C, ph * pw, (H // ph) * (W // pw))).astype(x.dtype)
    pt = torch.from_numpy(p)
    by_fold = F.fold(pt.reshape(B, C * ph * pw, -1), output_size=(H, W), kernel_size=(ph, pw), stride=(ph, pw))
    for rank5 in (False, True):
        got = fold_patches(p, H, W, ph, pw, rank5=rank5)
        exact(got, by_fold)
        exact(got, timm_fold(pt, H, W, ph, pw))
        exact(fold_patches(unfold_patches(x, ph, pw, rank5=rank5), H, W, ph, pw, rank5=rank5), x)


@given(st.integers(1, 3), st.integers(1, 4), DTYPES, SEEDS)
def test_square_case_matches_paper_code_and_pixel_shuffle_fold(ps, ns, dtype, seed):
    """Square patches on a square grid (the paper's assumption, and timm's CoreML fold's)."""
    x = np.random.default_rng(seed).standard_normal((2, 3, ps * ns, ps * ns)).astype(dtype)
    H = W = ps * ns
    xt = torch.from_numpy(x)
    p = unfold_patches(x, ps, ps, rank5=True)
    exact(p, paper_unfold(xt, ps, ps))
    pt = torch.from_numpy(p)
    exact(fold_patches(p, H, W, ps, ps, rank5=True), paper_fold(pt, H, W))
    coreml = F.pixel_shuffle(pt.reshape(2, 3 * ps * ps, ns, ns), upscale_factor=ps)
    exact(fold_patches(p, H, W, ps, ps), coreml)


def test_rank5_path_never_builds_a_tensor_above_rank_5(monkeypatch):
    """Record every intermediate of the rank-5 path through its _rank5 hook."""
    shapes = []
    original = patches_mod._rank5

    def record(t):
        shapes.append(t.shape)
        return original(t)

    monkeypatch.setattr(patches_mod, "_rank5", record)
    B, C, ph, pw, nh, nw = 2, 3, 2, 3, 4, 5
    x = np.random.default_rng(3).standard_normal((B, C, nh * ph, nw * pw))
    p = unfold_patches(x, ph, pw, rank5=True)
    n_unfold = len(shapes)
    y = fold_patches(p, nh * ph, nw * pw, ph, pw, rank5=True)
    np.testing.assert_array_equal(y, x)
    # per direction: the first reshape, 6 steps per split (slice, squeeze, reshape, permute, reshape,
    # unsqueeze), the concat and the final reshape
    assert n_unfold == len(shapes) - n_unfold == 3 + 6 * pw
    assert max(len(s) for s in shapes) == 5
    assert (B, C, ph, nh, nw) in shapes and (B, C, nh, ph, nw) in shapes     # the 5-D permute, both ways
    # and the default path goes through 6-D, which is what rank5=True avoids
    shapes.clear()
    unfold_patches(x, ph, pw)
    assert shapes == []


def test_rank_guard_raises():
    with pytest.raises(RuntimeError, match="rank-6"):
        patches_mod._rank5(np.zeros((1,) * 6))


def test_layout_by_hand():
    """patches[b, c, i*pw + j, a*nw + b'] = x[b, c, a*ph + i, b'*pw + j]."""
    x = np.arange(4 * 6, dtype=np.float64).reshape(1, 1, 4, 6)
    p = unfold_patches(x, 2, 3)
    assert p.shape == (1, 1, 6, 4)
    for i in range(2):
        for j in range(3):
            for a in range(2):
                for b in range(2):
                    assert p[0, 0, i * 3 + j, a * 2 + b] == x[0, 0, a * 2 + i, b * 3 + j]


def test_traced():
    x = np.zeros((1, 2, 4, 4), np.float32)
    with trace() as t:
        fold_patches(unfold_patches(x, 2, 2, rank5=True), 4, 4, 2, 2)
    assert [r.op for r in t] == ["unfold_patches", "fold_patches"]
    assert t["unfold_patches"].attrs == {"rank5": True}
    assert t["unfold_patches"].output.dtype == np.float32


@pytest.mark.parametrize("call, err, match", [
    (lambda x: unfold_patches(x, 2, 4), ValueError, "multiple"),                 # W = 6
    (lambda x: unfold_patches(x, 0, 2), ValueError, "patch_h"),
    (lambda x: unfold_patches(x, 2, 2.0), TypeError, "patch_w"),
    (lambda x: unfold_patches(x, 2, 2, rank5="yes"), TypeError, "rank5"),
    (lambda x: unfold_patches(x[0], 2, 2), ValueError, "rank"),
    (lambda x: fold_patches(x, 4, 4, 2, 2), ValueError, "expected P = 4, N = 4"),   # N = 6 given
    (lambda x: fold_patches(np.zeros((1, 2, 4, 6)), 4, 6, 2, 3), ValueError, "expected P = 6"),
    (lambda x: fold_patches(np.zeros((1, 2, 4, 6)), 5, 6, 2, 2), ValueError, "multiple"),
    (lambda x: fold_patches(np.zeros((1, 2, 4, 6), np.int64), 4, 12, 2, 2), TypeError, "float32 or float64"),
])
def test_bad_arguments_raise(call, err, match):
    with pytest.raises(err, match=match):
        call(np.zeros((1, 2, 4, 6)))


def test_default_and_rank5_agree_on_a_mobilevit_sized_map():
    """Stage-3 size of MobileViT-v2-0.5 at 256 px: d=64 (here fewer channels), 32x32 map, 2x2 patches."""
    x = np.random.default_rng(5).standard_normal((1, 8, 32, 32)).astype(np.float32)
    a, b = unfold_patches(x, 2, 2), unfold_patches(x, 2, 2, rank5=True)
    assert a.shape == (1, 8, 4, 256) and math.prod(a.shape) == x.size
    np.testing.assert_array_equal(a, b)
