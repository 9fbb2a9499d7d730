"""lmref.metrics: NME normalisers on hand-built faces, CED / FR / AUC against hand-computed values
and a transcription of STAR's fr_and_auc.py on SciPy, Simpson against scipy.integrate.simpson."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy.integrate import simpson as scipy_simpson

from lmref import metrics as M


def face(n, points, fill=(50.0, 50.0)):
    """[1, n, 2] ground truth: all points at ``fill`` except those given {index: (x, y)}."""
    gt = np.zeros((1, n, 2)) + fill
    for k, xy in points.items():
        gt[0, k] = xy
    return gt


def moved(gt, k, dxy):
    pred = gt.copy()
    pred[:, k] += dxy
    return pred


# ---------------------------------------------------------------------------------------------
# NME
# ---------------------------------------------------------------------------------------------

def test_nme_ocular_ibug68():
    gt = face(68, {36: (10, 20), 45: (50, 20)})                      # outer corners 40 apart
    pred = moved(gt, 0, (6, 8))                                       # one point off by 10
    assert M.nme(pred, gt) == pytest.approx([10 / 68 / 40], rel=1e-15)
    assert M.nme(pred, gt, layout="300w", norm="ocular") == pytest.approx([10 / 68 / 40], rel=1e-15)
    # all points off by (3, 4): NME = 5 / 40
    assert M.nme(gt + [3, 4], gt) == pytest.approx([0.125], rel=1e-15)


def test_nme_pupil_ibug68():
    pts = {k: (10 + (k - 36), 20) for k in range(36, 42)}           # right eye x = 10..15, mean 12.5
    pts.update({k: (40 + (k - 42), 26) for k in range(42, 48)})       # left eye x = 40..45, mean 42.5, y 26
    gt = face(68, pts)
    # eye centres (12.5, 20) and (42.5, 26): distance sqrt(30^2 + 6^2)
    d = np.sqrt(30 ** 2 + 6 ** 2)
    assert M.norm_distance(gt, norm="pupil") == pytest.approx([d], rel=1e-15)
    assert M.nme(gt + [0, 2], gt, norm="pupil") == pytest.approx([2 / d], rel=1e-15)


def test_nme_wflw_and_cofw_indices():
    gt = face(98, {60: (0, 0), 72: (30, 40), 96: (5, 0), 97: (25, 0)})
    assert M.norm_distance(gt) == pytest.approx([50.0])                       # ocular 60, 72
    assert M.norm_distance(gt, norm="pupil") == pytest.approx([20.0])         # pupils 96, 97
    gt = face(29, {8: (0, 0), 9: (40, 0), 16: (8, 3), 17: (32, 3)})
    assert M.norm_distance(gt) == pytest.approx([24.0])                       # COFW default: pupils
    assert M.norm_distance(gt, norm="ocular") == pytest.approx([40.0])
    assert M.nme(moved(gt, 28, (0, 29)), gt) == pytest.approx([1 / 24])     # 29 px at one of 29 points


def test_nme_inner51_uses_its_own_eye_indices():
    rng = np.random.default_rng(0)
    gt68 = rng.uniform(0, 100, (4, 68, 2))
    pred68 = gt68 + rng.normal(0, 2, gt68.shape)
    gt51, pred51 = gt68[:, 17:], pred68[:, 17:]
    for norm in ("ocular", "pupil"):
        np.testing.assert_array_equal(M.norm_distance(gt51, "inner51", norm), M.norm_distance(gt68, "ibug68", norm))
    err51 = np.linalg.norm(pred51 - gt51, axis=-1).mean(1)
    np.testing.assert_allclose(M.nme(pred51, gt51), err51 / np.linalg.norm(gt68[:, 36] - gt68[:, 45], axis=-1),
                               rtol=1e-14)


def test_nme_bbox_and_diagonal():
    gt = face(68, {0: (10, 10), 1: (40, 50)}, fill=(20, 30))         # landmark box 30 x 40
    pred = moved(gt, 5, (0, 68))                                       # mean error 1 px
    assert M.nme(pred, gt, norm="diagonal") == pytest.approx([1 / 50])
    assert M.nme(pred, gt, norm="bbox") == pytest.approx([1 / np.sqrt(1200)])
    boxes = np.array([[0, 0, 90, 40]])                                # given box 90 x 40
    assert M.nme(pred, gt, norm="bbox", boxes=boxes) == pytest.approx([1 / 60])
    assert M.nme(pred, gt, norm=1.0) == pytest.approx([1.0])          # plain pixels
    assert M.nme(np.concatenate([pred, pred]), np.concatenate([gt, gt]), norm=np.array([1.0, 4.0])) \
        == pytest.approx([1.0, 0.25])


def test_nme_batch_independent():
    rng = np.random.default_rng(1)
    gt = rng.uniform(0, 100, (5, 98, 2))
    pred = gt + rng.normal(0, 1, gt.shape)
    whole = M.nme(pred, gt)
    assert whole.shape == (5,) and whole.dtype == np.float64
    for i in range(5):
        assert M.nme(pred[i:i + 1], gt[i:i + 1])[0] == whole[i]


def test_nme_errors():
    gt = face(68, {36: (10, 20), 45: (50, 20)})
    with pytest.raises(ValueError, match=r"shape \[B, N, 2\]"):
        M.nme(gt[0], gt[0])
    with pytest.raises(ValueError, match="!= gt shape"):
        M.nme(gt[:, :51], gt)
    with pytest.raises(ValueError, match="NaN"):
        M.nme(gt * np.nan, gt)
    with pytest.raises(ValueError, match="zero or invalid for image"):
        M.nme(gt, np.zeros_like(gt))
    with pytest.raises(ValueError, match="norm 'nose'"):
        M.nme(gt, gt, norm="nose")
    with pytest.raises(ValueError, match="layout wflw98 has 98 points"):
        M.nme(gt, gt, layout="wflw98")
    with pytest.raises(ValueError, match="no layout with 10 points"):
        M.nme(gt[:, :10], gt[:, :10])
    with pytest.raises(ValueError, match="boxes"):
        M.nme(gt, gt, norm="bbox", boxes=np.zeros((2, 4)))
    with pytest.raises(TypeError):
        M.nme(gt.astype(object), gt)


# ---------------------------------------------------------------------------------------------
# CED, FR, AUC
# ---------------------------------------------------------------------------------------------

def star_fr_auc(nmes, thres, step=0.0001):
    """STAR lib/metric/fr_and_auc.py FR_AUC.test, without its rounding, on SciPy."""
    nmes = np.asarray(nmes)
    xs = np.arange(0, thres + step, step)
    ys = np.array([np.count_nonzero(nmes <= x) for x in xs]) / float(len(nmes))
    return 1.0 - ys[-1], scipy_simpson(ys, x=xs) / thres


def test_fr_auc_hand_values():
    # h = 1e-4, samples x_i = i h, i = 0..1000. Simpson = h/3 sum over pairs (y_2j + 4 y_2j+1 + y_2j+2).
    assert M.fr_auc([0.0, 0.0]) == pytest.approx((0.0, 1.0), abs=1e-12)
    assert M.fr_auc([0.5]) == (1.0, 0.0)
    # one image at 0.05: y_i = 1 for i >= 500 (an even index). Pairs 0..249: only the last has
    # y2 = 1 -> h/3; pairs 250..499: 6h/3 each -> 500 h. AUC = (500 + 1/3) h / 0.1
    fr, auc = M.fr_auc([0.05])
    assert fr == 0.0 and auc == pytest.approx((500 + 1 / 3) / 1000, rel=1e-12)
    # images at 0.02005 and 0.2: y = 0.5 from i = 201 (odd). Pair 100 (i 200..202): h/3 (0 + 4 + 1)/2;
    # pairs 101..499: 399 * 6h/3 / 2. AUC = 0.5 (5/3 + 798) h / 0.1; FR = 0.5
    fr, auc = M.fr_auc([0.02005, 0.2])
    assert fr == 0.5 and auc == pytest.approx(0.5 * (5 / 3 + 798) / 1000, rel=1e-12)


def test_nme_at_threshold_is_success():
    xs, ys = M.ced([0.1, 0.1000001])
    assert xs.size == 1001 and xs[-1] == 0.1
    assert ys[-1] == 0.5
    assert M.fr_auc([0.1])[0] == 0.0


def test_thr_005_float_artefact():
    """np.arange(0, 0.05 + 1e-4, 1e-4) has 502 samples ending at 0.0501: STAR's 300W 'FR@0.05'
    counts an NME of 0.05005 as a success."""
    xs, ys = M.ced([0.05005], thr=0.05)
    assert xs.size == 502 and xs[-1] == pytest.approx(0.0501, abs=1e-12) and xs[-1] > 0.05
    assert M.fr_auc([0.05005], thr=0.05)[0] == 0.0
    assert M.fr_auc([0.0502], thr=0.05)[0] == 1.0


def test_ced_definition():
    nmes = np.array([0.0, 0.03, 0.03, 0.07, 0.5])
    xs, ys = M.ced(nmes, thr=0.1, step=0.01)
    assert xs.size == 11
    want = [np.mean(nmes <= x) for x in xs]
    np.testing.assert_array_equal(ys, want)
    assert ys[0] == 0.2 and ys[3] == 0.6 and ys[-1] == 0.8


@pytest.mark.parametrize("thr", [0.1, 0.05, 0.08])
def test_fr_auc_matches_star_on_scipy(thr):
    rng = np.random.default_rng(int(thr * 1000))
    nmes = np.abs(rng.normal(0.04, 0.03, 300))
    fr, auc = M.fr_auc(nmes, thr=thr)
    fr_ref, auc_ref = star_fr_auc(nmes, thr)
    assert fr == fr_ref
    assert auc == pytest.approx(auc_ref, rel=1e-12)


@given(st.lists(st.floats(0, 0.3), min_size=1, max_size=40), st.sampled_from([0.1, 0.05, 0.02]))
def test_fr_auc_property(nmes, thr):
    fr, auc = M.fr_auc(nmes, thr=thr)
    fr_ref, auc_ref = star_fr_auc(nmes, thr)
    assert fr == fr_ref and auc == pytest.approx(auc_ref, rel=1e-11, abs=1e-14)
    # the grid ends at xs[-1] (0.0501 for thr 0.05), so AUC can reach xs[-1] / thr > 1
    xs, _ = M.ced(nmes, thr=thr)
    assert 0 <= fr <= 1 and -1e-12 <= auc <= xs[-1] / thr + 1e-12


def test_ced_errors():
    with pytest.raises(ValueError, match="empty"):
        M.ced([])
    with pytest.raises(ValueError, match="non-negative"):
        M.ced([0.1, -0.1])
    with pytest.raises(ValueError, match="non-negative"):
        M.ced([np.nan])
    with pytest.raises(ValueError, match="step"):
        M.ced([0.1], thr=0.1, step=0.2)
    with pytest.raises(ValueError, match="step"):
        M.fr_auc([0.1], thr=0.0)


# ---------------------------------------------------------------------------------------------
# Simpson
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("n", [2, 3, 4, 5, 6, 7, 8, 9, 101, 502, 1001])
def test_simpson_matches_scipy(n):
    rng = np.random.default_rng(n)
    x = np.cumsum(rng.uniform(0.05, 1.0, n))                          # irregular spacing
    y = rng.normal(size=n)
    assert M.simpson(y, x) == pytest.approx(scipy_simpson(y, x=x), rel=1e-12, abs=1e-14)
    xs = np.arange(0, (n - 1) * 1e-4 + 1e-4 / 2, 1e-4)[:n]          # the CED grid
    assert M.simpson(y, xs) == pytest.approx(scipy_simpson(y, x=xs), rel=1e-12, abs=1e-16)


def test_simpson_exact_for_polynomials():
    # irregular spacing: each parabola (and Cartwright's end correction) is exact for quadratics
    for n in (3, 4, 5, 6):
        x = np.array([0.0, 0.3, 1.0, 1.2, 2.0, 2.5])[:n]
        y = 3 * x ** 2 - 2 * x + 1
        assert M.simpson(y, x) == pytest.approx(x[-1] ** 3 - x[-1] ** 2 + x[-1], rel=1e-13)
    # regular spacing, odd sample count: exact for cubics
    x = np.linspace(0, 2, 9)
    assert M.simpson(x ** 3, x) == pytest.approx(4.0, rel=1e-14)


def test_simpson_errors():
    with pytest.raises(ValueError, match="at least 2"):
        M.simpson([1.0], [0.0])
    with pytest.raises(ValueError, match="increasing"):
        M.simpson([1.0, 2.0, 3.0], [0.0, 1.0, 1.0])
    with pytest.raises(ValueError, match="same length"):
        M.simpson([1.0, 2.0], [0.0, 1.0, 2.0])


def _crop_frame_baseline(test, train, size=96):
    """The baseline as a training pipeline computes it: crop every face around its landmark box
    (transforms.crop_matrix), average the training crops' landmarks in crop pixels, map that average
    back through each test face's own crop."""
    from lmref.data import transforms as T
    crops = [T.apply_affine(p, T.crop_matrix(T.landmark_box(p), size)) for p in train]
    avg = np.mean(crops, axis=0)                                      # [N, 2] crop pixels
    return np.stack([T.apply_affine(avg, T.invert_affine(T.crop_matrix(T.landmark_box(p), size))) for p in test])


def _random_faces(rng, b, n=68):
    base = rng.uniform(0, 1, (n, 2))
    faces = base + 0.05 * rng.standard_normal((b, n, 2))              # one shape, jittered
    scale = rng.uniform(20, 200, (b, 1, 1))
    return faces * scale + rng.uniform(-50, 300, (b, 1, 2))           # anywhere, any size


def test_mean_shape_prediction_equals_the_crop_pipeline():
    rng = np.random.default_rng(0)
    train, test = _random_faces(rng, 30), _random_faces(rng, 7)
    got = M.mean_shape_prediction(test, train)
    np.testing.assert_allclose(got, _crop_frame_baseline(test, train), rtol=0, atol=1e-9)
    # leave-one-out: face i predicted from the other faces only
    loo = M.mean_shape_prediction(test)
    for i in range(len(test)):
        others = np.delete(test, i, axis=0)
        np.testing.assert_allclose(loo[i], _crop_frame_baseline(test[i:i + 1], others)[0], atol=1e-9)


def test_mean_shape_baseline_scale_and_position_free():
    rng = np.random.default_rng(1)
    train, test = _random_faces(rng, 20), _random_faces(rng, 5)
    nme = M.nme(M.mean_shape_prediction(test, train), test)
    moved_test = test * 3.0 + np.array([17.0, -5.0])
    moved_train = train * 0.5 + 100.0
    np.testing.assert_allclose(M.nme(M.mean_shape_prediction(moved_test, moved_train), moved_test), nme, rtol=1e-12)
    assert np.all(nme > 0)
    # the baseline of faces that all have one shape is exact
    same = np.broadcast_to(test[0], (4, 68, 2)) * np.array([1.0, 2.0, 0.5, 3.0])[:, None, None]
    np.testing.assert_allclose(M.mean_shape_prediction(same), same, atol=1e-9)
    assert M.mean_shape(train).shape == (68, 2)


def test_mean_shape_errors():
    pts = _random_faces(np.random.default_rng(2), 3)
    with pytest.raises(ValueError, match="leave-one-out"):
        M.mean_shape_prediction(pts[:1])
    with pytest.raises(ValueError, match="points per face"):
        M.mean_shape_prediction(pts, pts[:, :51])
    with pytest.raises(ValueError, match="no box"):
        M.mean_shape(np.zeros((2, 68, 2)))
    with pytest.raises(ValueError, match="shape"):
        M.mean_shape_prediction(pts[0])
