"""lmref.data.targets: STAR's point / edge map targets and the normalised coordinates."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, strategies as st

from lmref import landmarks as lm
from lmref.data import targets as tg


def _star_curve(points, closed, density=5):
    """STAR's _fit_curve with scipy (the reference our spline replaces)."""
    from scipy import interpolate
    x, y = points[:, 0].copy(), points[:, 1].copy()
    if closed:
        x, y = np.append(x, x[0]), np.append(y, y[0])
    tck, u = interpolate.splprep([x, y], s=0, per=closed, k=3)
    t = np.concatenate([np.linspace(u[i], u[i + 1], density, endpoint=False) for i in range(len(u) - 1)])
    if not closed:
        t = np.concatenate([t, [u[-1]]])
    return np.stack(interpolate.splev(t, tck, der=0), -1)


@given(n=st.integers(4, 33), closed=st.booleans(), seed=st.integers(0, 2 ** 31))
def test_fit_curve_matches_scipy_splprep(n, closed, seed):
    pts = np.random.default_rng(seed).uniform(0, 256, (n, 2))
    ours = tg.fit_curve(pts, closed)
    np.testing.assert_allclose(ours, _star_curve(pts, closed), atol=1e-8)
    assert len(ours) == (n if closed else n - 1) * 5 + (0 if closed else 1)
    np.testing.assert_allclose(ours[::5][:n], pts, atol=1e-9)          # it interpolates the points


def test_fit_curve_falls_back_to_the_points():
    three = np.array([[0.0, 0], [1, 1], [2, 0]])
    assert np.array_equal(tg.fit_curve(three, False), three)             # too few for a cubic
    dup = np.array([[0.0, 0], [1, 1], [1, 1], [3, 0], [4, 2]])
    assert np.array_equal(tg.fit_curve(dup, False), dup)                 # splprep would fail


def _star_point_maps_torch(points, size=256, sigma=1.5):
    """STAR encoder_default.generate_heatmap, torch resize and all."""
    maps = np.zeros((len(points), size, size), np.float32)
    for k, p in enumerate(np.clip(points, 0, size - 1)):
        tg._gaussian_window(maps[k], p, sigma)
    t = torch.from_numpy(maps).unsqueeze(0)
    return F.interpolate(t, size=(size // 4, size // 4), mode="bilinear", align_corners=False)[0].numpy()


@given(seed=st.integers(0, 2 ** 31), size=st.sampled_from([64, 128, 256]))
def test_point_heatmaps_equal_star(seed, size):
    pts = np.random.default_rng(seed).uniform(-10, size + 10, (17, 2))
    pts[:3] = [[0, 0], [size - 1, size - 1], [2.4, 4.6]]                 # corners, truncation near 0
    ours = tg.point_heatmaps(pts, size)
    assert ours.shape == (17, size // 4, size // 4) and ours.dtype == np.float32
    np.testing.assert_allclose(ours, _star_point_maps_torch(pts, size), atol=2e-7)
    np.testing.assert_allclose(tg.point_heatmaps_reference(pts, size), _star_point_maps_torch(pts, size), atol=1e-7)


def test_resize_quarter_is_torch_bilinear():
    x = np.random.default_rng(0).random((3, 64, 48)).astype(np.float32)
    ref = F.interpolate(torch.from_numpy(x)[None], size=(16, 12), mode="bilinear", align_corners=False)[0].numpy()
    np.testing.assert_allclose(tg.resize_quarter(x), ref, atol=1e-7)


@pytest.mark.parametrize("layout", ["ibug68", "wflw98", "inner51", "cofw29"])
def test_edge_maps_equal_star_reference(layout):
    lay = lm.get(layout)
    rng = np.random.default_rng(lay.num_points)
    pts = rng.uniform(20, 236, (lay.num_points, 2))
    ours = tg.edge_maps(pts, layout)
    ref = tg.edge_maps_reference(pts, layout)
    assert ours.shape == (lay.num_edges, 64, 64)
    np.testing.assert_array_equal(ours, ref)
    # the reference is STAR's pipeline: 4x polylines, INTER_AREA, torch bilinear 1/4
    big = np.stack([tg._polyline_4x(np.zeros((256, 256), np.float32),
                                    np.clip(tg.fit_curve(pts[list(i)], c), 0, 255), c) for _, i, c in lay.edges])
    star = F.interpolate(torch.from_numpy(big / 255.0)[None], size=(64, 64), mode="bilinear", align_corners=False)[0]
    np.testing.assert_allclose(ref, star.numpy(), atol=1e-6)
    assert ours.max() <= 1.0 and ours.min() >= 0.0


def test_edge_maps_near_the_border_and_degenerate():
    lay = lm.get("ibug68")
    pts = np.random.default_rng(3).uniform(-30, 290, (68, 2))
    np.testing.assert_array_equal(tg.edge_maps(pts, lay), tg.edge_maps_reference(pts, lay))
    same = np.full((68, 2), 100.0)                                        # all points coincide
    np.testing.assert_array_equal(tg.edge_maps(same, lay), tg.edge_maps_reference(same, lay))


def test_normalised_coordinates_follow_star():
    pts = np.array([[-0.5, -0.5], [255.5, 255.5], [127.5, 63.75], [300, -20]])
    n = tg.normalize_points(pts, 256, 256)
    np.testing.assert_allclose(n[:3], [[-1, -1], [1, 1], [0, (2 * 63.75 + 1) / 256 - 1]])
    np.testing.assert_allclose(n[3], [1, -1])                                          # clamped
    np.testing.assert_allclose(tg.denormalize_points(tg.normalize_points(pts, 256, 128, clamp=False), 256, 128), pts)
    r = tg.regression_target(pts[:3], 256, 256)
    assert r.shape == (6,) and r.dtype == np.float32
    np.testing.assert_allclose(r.reshape(3, 2), n[:3], atol=1e-7)


@pytest.mark.parametrize("call, msg", [
    (lambda: tg.point_heatmaps(np.zeros((3, 3))), r"\[N, 2\]"),
    (lambda: tg.point_heatmaps(np.full((2, 2), np.nan)), "NaN"),
    (lambda: tg.point_heatmaps(np.zeros((2, 2)), size=0), "size"),
    (lambda: tg.point_heatmaps(np.zeros((2, 2)), sigma=0), "sigma"),
    (lambda: tg.edge_maps(np.zeros((51, 2)), "ibug68"), "68 points"),
])
def test_bad_input_is_rejected(call, msg):
    with pytest.raises(ValueError, match=msg):
        call()
