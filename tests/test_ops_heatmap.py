"""lmref.ops.heatmap: soft_argmax (STAR and softmax), e2p, aam_fusion, argmax_subpixel,
normalized_to_pixels.

None of these has a torch twin, so each is checked against an explicit Python loop over pixels and,
where upstream code exists, against that code re-typed in torch (STAR's get_coords_from_heatmap and
E2HTransform, which is a 1x1 conv2d).
"""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import assert_close
from hypothesis import example, given
from hypothesis import strategies as st

from lmref.ops import aam_fusion, argmax_subpixel, e2p, normalized_to_pixels, soft_argmax
from lmref.trace import trace

DTYPES = st.sampled_from([np.float32, np.float64])
SEEDS = st.integers(0, 2**32 - 1)
TORCH_DTYPE = {np.float32: torch.float32, np.float64: torch.float64}


def star_get_coords_from_heatmap(heatmap, grid_dtype=torch.float32):
    """STAR lib/dataset/decoder/decoder_default.py, re-typed. STAR builds the grid in float32
    (``torch.arange(h).float()``) and casts it to the heatmap dtype; ``grid_dtype`` lets the float64
    test build it in float64 instead, as lmref does (in float32 the two are the same)."""
    batch, npoints, h, w = heatmap.shape
    yy, xx = torch.meshgrid(torch.arange(h, dtype=grid_dtype) / (h - 1) * 2 - 1,
                            torch.arange(w, dtype=grid_dtype) / (w - 1) * 2 - 1, indexing="ij")
    yy = yy.view(1, 1, h, w).to(heatmap)
    xx = xx.view(1, 1, h, w).to(heatmap)
    heatmap_sum = torch.clamp(heatmap.sum([2, 3]), min=1e-6)
    yy_coord = (yy * heatmap).sum([2, 3]) / heatmap_sum
    xx_coord = (xx * heatmap).sum([2, 3]) / heatmap_sum
    return torch.stack([xx_coord, yy_coord], dim=-1)


def soft_argmax_loop(hm, method, beta=1.0):
    """Pixel-by-pixel reference in float64 Python arithmetic."""
    B, N, h, w = hm.shape
    out = np.zeros((B, N, 2))
    for b in range(B):
        for n in range(N):
            m = hm[b, n].astype(np.float64)
            if method == "softmax":
                mx = max(m.flat)
                weights = [[math.exp(beta * (m[i, j] - mx)) for j in range(w)] for i in range(h)]
                total = sum(sum(r) for r in weights)
            else:
                weights = m.tolist()
                total = max(sum(sum(r) for r in weights), 1e-6)
            sx = sum(weights[i][j] * (2 * j / (w - 1) - 1) for i in range(h) for j in range(w))
            sy = sum(weights[i][j] * (2 * i / (h - 1) - 1) for i in range(h) for j in range(w))
            out[b, n] = sx / total, sy / total
    return out


@st.composite
def heatmaps(draw, min_size=2):
    B, N = draw(st.integers(1, 2)), draw(st.integers(1, 3))
    h, w = draw(st.integers(min_size, 7)), draw(st.integers(min_size, 7))
    dtype = draw(DTYPES)
    rng = np.random.default_rng(draw(SEEDS))
    # non-negative maps as STAR's fused heatmaps are (ReLU times sigmoid masks), some with zeros
    hm = np.maximum(rng.standard_normal((B, N, h, w)), 0) * draw(st.sampled_from([1.0, 1e-3, 30.0]))
    return hm.astype(dtype)


@given(heatmaps())
@example(np.pad(np.full((1, 2, 1, 1), 1e-8), ((0, 0), (0, 0), (0, 2), (0, 3))))   # pinned: a total below
def test_star_soft_argmax_matches_star_code_and_loop(hm):                         # STAR's 1e-6 clamp, off centre
    got = soft_argmax(hm, method="star")
    grid = torch.float32 if hm.dtype == np.float32 else torch.float64
    assert_close(got, star_get_coords_from_heatmap(torch.from_numpy(hm), grid))
    assert_close(got, soft_argmax_loop(hm, "star").astype(hm.dtype), rtol=1e-4 if hm.dtype == np.float32 else 1e-10)


def test_star_soft_argmax_with_stars_float32_grid_in_float64():
    """STAR's float32 grid differs from an exact one by ~1e-8: the only difference in float64."""
    hm = np.random.default_rng(0).random((2, 3, 64, 64))
    assert_close(soft_argmax(hm), star_get_coords_from_heatmap(torch.from_numpy(hm)), rtol=1e-6, atol=1e-7)


def grid_read_through_soft_argmax(n, dtype):
    """soft_argmax's grid X_0..X_{n-1} and Y_0..Y_{n-1}, read through the op itself: map j holds a
    single 1 at column j (row j), whose expectation is X_j (Y_j) exactly."""
    eye = np.eye(n, dtype=dtype)
    along_w = np.zeros((1, n, 2, n), dtype)
    along_w[0, :, 0, :] = eye                                   # map j: 1 at (0, j)
    along_h = np.zeros((1, n, n, 2), dtype)
    along_h[0, :, :, 0] = eye                                   # map i: 1 at (i, 0)
    return soft_argmax(along_w)[0, :, 0], soft_argmax(along_h)[0, :, 1]


def test_soft_argmax_grid_every_size_up_to_256():
    """The grid in both dtypes for every map size 2..256: float32 is STAR's grid bit for bit
    (``arange(n).float() / (n - 1) * 2 - 1``); float64 is the same formula in float64, as torch_impl's
    AAM head builds it, and differs from STAR's float32-built grid by at most 6e-8 (the one deviation
    from STAR's code, stated in lmref.ops.heatmap)."""
    worst = 0.0
    for n in range(2, 257):
        star32 = (torch.arange(n).float() / (n - 1) * 2 - 1).numpy()
        own64 = (torch.arange(n, dtype=torch.float64) / (n - 1) * 2 - 1).numpy()
        for dtype, expected in ((np.float32, star32), (np.float64, own64)):
            xs, ys = grid_read_through_soft_argmax(n, dtype)
            np.testing.assert_array_equal(xs, expected, err_msg=f"{dtype.__name__} grid along w, n={n}")
            np.testing.assert_array_equal(ys, expected, err_msg=f"{dtype.__name__} grid along h, n={n}")
        worst = max(worst, np.abs(own64 - star32.astype(np.float64)).max())
    assert 0 < worst <= 6e-8


def test_star_soft_argmax_clamp_and_point_masses():
    hm = np.zeros((1, 3, 5, 9))
    hm[0, 1, 4, 8] = 1.0                              # all mass in the last pixel -> (+1, +1)
    hm[0, 2, 2, 4] = 1e-9                             # sum below the 1e-6 clamp -> scaled toward 0
    hm[0, 2, 0, 0] = 1e-9
    c = soft_argmax(hm)
    np.testing.assert_array_equal(c[0, 0], [0.0, 0.0])          # empty map: 0 / 1e-6
    np.testing.assert_allclose(c[0, 1], [1.0, 1.0], rtol=1e-15)
    np.testing.assert_allclose(c[0, 2], [-1e-9 / 1e-6, -1e-9 / 1e-6], rtol=1e-12)
    assert_close(c, star_get_coords_from_heatmap(torch.from_numpy(hm), torch.float64))


@given(heatmaps(), st.sampled_from([0.5, 1.0, 7.0, 100.0]))
def test_softmax_soft_argmax_matches_torch_and_loop(hm, beta):
    got = soft_argmax(hm, method="softmax", beta=beta)
    t = torch.from_numpy(hm)
    B, N, h, w = hm.shape
    p = F.softmax(beta * t.reshape(B, N, -1), dim=-1).reshape(B, N, h, w)
    xs = torch.arange(w, dtype=t.dtype) / (w - 1) * 2 - 1
    ys = torch.arange(h, dtype=t.dtype) / (h - 1) * 2 - 1
    expected = torch.stack([(p * xs).sum([2, 3]), (p * ys[:, None]).sum([2, 3])], dim=-1)
    assert_close(got, expected)
    assert_close(got, soft_argmax_loop(hm, "softmax", beta).astype(hm.dtype),
                 rtol=1e-4 if hm.dtype == np.float32 else 1e-10)


def star_edge_matrix(edges, num_points):
    """STAR E2HTransform.__init__: M[p, e] = 1 iff p in edge e; bias 1 for points on no edge."""
    m = np.zeros((num_points, len(edges)))
    for e, idx in enumerate(edges):
        m[list(idx), e] = 1
    bias = (m @ np.ones(len(edges)) < 0.5).astype(np.float64)
    return m, bias


EDGE_LISTS = [
    ([(0, 1, 2), (3, 4), (5, 6, 7)], 8),                       # every point on one edge
    ([(0, 1, 2), (2, 3, 4)], 6),                               # point 2 on two edges, point 5 on none
    ([(0, 4, 2, 5), (1, 6, 3, 7), (8, 9)], 11),                # COFW-like: point 10 on no edge
]


@given(st.sampled_from(EDGE_LISTS), st.integers(1, 2), st.integers(1, 6), st.integers(1, 6), DTYPES, SEEDS,
       st.booleans())
def test_e2p_matches_conv_and_loop(edges_n, B, h, w, dtype, seed, buffer_shape):
    edges, n = edges_n
    m, bias = star_edge_matrix(edges, n)
    m, bias = m.astype(dtype), bias.astype(dtype)
    em = np.random.default_rng(seed).random((B, len(edges), h, w)).astype(dtype)
    got = e2p(em, m[:, :, None, None] if buffer_shape else m, bias)
    assert_close(got, F.conv2d(torch.from_numpy(em), torch.from_numpy(m[:, :, None, None]), torch.from_numpy(bias)))
    loop = np.zeros((B, n, h, w))
    for b in range(B):
        for p in range(n):
            for i in range(h):
                for j in range(w):
                    loop[b, p, i, j] = sum(float(m[p, e]) * float(em[b, e, i, j]) for e in range(len(edges))) + bias[p]
    assert_close(got, loop.astype(dtype))


@given(st.sampled_from(EDGE_LISTS), DTYPES, SEEDS)
def test_aam_fusion_matches_star_forward(edges_n, dtype, seed):
    edges, n = edges_n
    m, bias = (a.astype(dtype) for a in star_edge_matrix(edges, n))
    rng = np.random.default_rng(seed)
    heat = np.maximum(rng.standard_normal((2, n, 5, 4)), 0).astype(dtype)
    points = rng.random((2, n, 5, 4)).astype(dtype)
    edge_maps = rng.random((2, len(edges), 5, 4)).astype(dtype)
    t = torch.from_numpy
    mask = F.conv2d(t(edge_maps), t(m[:, :, None, None]), t(bias)) * t(points)   # StackedHGNetV1.forward
    assert_close(aam_fusion(heat, points, edge_maps, m, bias), mask * t(heat))


def test_e2p_without_bias_and_traced_inside_fusion():
    m = np.eye(3, dtype=np.float32)
    em = np.random.default_rng(0).random((1, 3, 2, 2)).astype(np.float32)
    np.testing.assert_array_equal(e2p(em, m), em)
    with trace() as t:
        aam_fusion(em, em, em, m)
    assert t.names() == ["aam_fusion/e2p", "aam_fusion"]


def argmax_subpixel_loop(hm):
    """HRNet get_max_preds + get_final_preds post-processing, one map at a time (without HRNet's
    zeroing of maps whose maximum is <= 0)."""
    B, N, h, w = hm.shape
    coords, maxvals = np.zeros((B, N, 2)), np.zeros((B, N))
    for b in range(B):
        for n in range(N):
            m = hm[b, n]
            best, py, px = -np.inf, 0, 0
            for i in range(h):
                for j in range(w):
                    if m[i, j] > best:
                        best, py, px = m[i, j], i, j
            x, y = float(px), float(py)
            if 1 < px < w - 1 and 1 < py < h - 1:
                x += 0.25 * np.sign(m[py, px + 1] - m[py, px - 1])
                y += 0.25 * np.sign(m[py + 1, px] - m[py - 1, px])
            coords[b, n], maxvals[b, n] = (x, y), best
    return coords, maxvals


def peak_at(h, w, y, x):
    """One map [1, 1, h, w] with its peak at (y, x), the left neighbour at half height and zeros
    elsewhere: where the quarter-pixel refinement applies, it moves x to the left."""
    hm = np.zeros((1, 1, h, w))
    hm[0, 0, y, x], hm[0, 0, y, x - 1] = 1.0, 0.5
    return hm


@given(heatmaps(min_size=1), st.booleans())
@example(peak_at(5, 6, 2, 1), False)              # pinned: peaks at the strict border of the refinement
@example(peak_at(5, 6, 1, 2), False)
def test_argmax_subpixel_matches_loop(hm, integer_valued):
    if integer_valued:           # ties everywhere: first maximum wins, equal neighbours give no shift
        hm = np.round(hm * 2).astype(hm.dtype)
    coords, maxvals = argmax_subpixel(hm)
    ref_coords, ref_max = argmax_subpixel_loop(hm)
    assert coords.dtype == maxvals.dtype == hm.dtype
    np.testing.assert_array_equal(coords, ref_coords.astype(hm.dtype))
    np.testing.assert_array_equal(maxvals, ref_max.astype(hm.dtype))


def test_argmax_subpixel_by_hand():
    hm = np.zeros((1, 3, 6, 6))
    hm[0, 0, 3, 3], hm[0, 0, 3, 4], hm[0, 0, 2, 3] = 1.0, 0.5, 0.2    # right and up are higher
    hm[0, 1, 1, 3], hm[0, 1, 1, 4] = 1.0, 0.5                       # row 1: not strictly inside, no shift
    hm[0, 2] = -1.0
    hm[0, 2, 4, 2] = -0.5                                           # negative maximum: still located
    coords, maxvals = argmax_subpixel(hm)
    np.testing.assert_array_equal(coords[0], [[3.25, 2.75], [3.0, 1.0], [2.0, 4.0]])
    np.testing.assert_array_equal(maxvals[0], [1.0, 1.0, -0.5])


def test_normalized_to_pixels():
    W, H = 256, 128
    c = np.array([[-1.0, -1.0], [1.0, 1.0], [0.0, 0.0]])
    np.testing.assert_allclose(normalized_to_pixels(c, W, H), [[-0.5, -0.5], [255.5, 127.5], [127.5, 63.5]])
    # inverse of STAR's label rule x_n = (2x + 1)/W - 1
    px = np.random.default_rng(0).uniform(0, 255, (4, 5, 2))
    norm = (2 * px + 1) / np.array([W, H]) - 1
    assert_close(normalized_to_pixels(norm, W, H), px)
    assert normalized_to_pixels(c.astype(np.float32), W, H).dtype == np.float32


@pytest.mark.parametrize("call, err, match", [
    (lambda: soft_argmax(np.zeros((1, 1, 1, 4))), ValueError, "at least 2x2"),
    (lambda: soft_argmax(np.zeros((1, 1, 4, 4)), method="dsnt"), ValueError, "method"),
    (lambda: soft_argmax(np.zeros((1, 1, 4, 4)), beta=2.0), ValueError, "beta only applies"),
    (lambda: soft_argmax(np.zeros((1, 1, 4, 4)), method="softmax", beta=float("inf")), TypeError, "beta"),
    (lambda: soft_argmax(np.zeros((1, 4, 4))), ValueError, "rank"),
    (lambda: soft_argmax(np.zeros((1, 1, 4, 4), np.int32)), TypeError, "float32 or float64"),
    (lambda: e2p(np.zeros((1, 3, 4, 4)), np.zeros((5, 2)), np.zeros(5)), ValueError, "3 edge maps"),
    (lambda: e2p(np.zeros((1, 3, 4, 4)), np.zeros((5, 3)), np.zeros(4)), ValueError, "bias"),
    (lambda: e2p(np.zeros((1, 3, 4, 4)), np.zeros((5, 3, 3, 3)), None), ValueError, "matrix"),
    (lambda: e2p(np.zeros((1, 3, 4, 4)), np.zeros((5, 3), np.float32), None), TypeError, "matrix: dtype"),
    (lambda: aam_fusion(np.zeros((1, 5, 4, 4)), np.zeros((1, 4, 4, 4)), np.zeros((1, 3, 4, 4)), np.zeros((5, 3))),
     ValueError, "point_maps"),
    (lambda: aam_fusion(np.zeros((1, 5, 4, 4)), np.zeros((1, 5, 4, 4)), np.zeros((1, 3, 4, 3)), np.zeros((5, 3))),
     ValueError, "edge_maps"),
    (lambda: aam_fusion(np.zeros((1, 5, 4, 4)), np.zeros((1, 5, 4, 4)), np.zeros((1, 3, 4, 4)), np.zeros((6, 3))),
     ValueError, "6 points"),
    (lambda: argmax_subpixel(np.zeros((2, 4, 4))), ValueError, "rank"),
    (lambda: argmax_subpixel(np.zeros((1, 1, 0, 4))), ValueError, "empty"),
    (lambda: normalized_to_pixels(np.zeros((3, 3)), 4, 4), ValueError, "last dimension 2"),
    (lambda: normalized_to_pixels(np.zeros((3, 2)), 0, 4), ValueError, "width"),
])
def test_bad_arguments_raise(call, err, match):
    with pytest.raises(err, match=match):
        call()
