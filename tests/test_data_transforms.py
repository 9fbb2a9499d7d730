"""lmref.data.transforms: crop matrices, exact inverses, flips, warping consistent with the points."""
import numpy as np
import pytest
from hypothesis import given, strategies as st

from lmref import landmarks as lm
from lmref.data import transforms as tf

finite = dict(allow_nan=False, allow_infinity=False)


@given(x0=st.floats(-500, 2000, **finite), y0=st.floats(-500, 2000, **finite),
       w=st.floats(5, 1500, **finite), h=st.floats(5, 1500, **finite),
       margin=st.floats(0.8, 2.0), angle=st.floats(-180, 180), scale=st.floats(0.5, 2.0),
       sx=st.floats(-40, 40), sy=st.floats(-40, 40), size=st.sampled_from([64, 96, 256]),
       seed=st.integers(0, 2 ** 31))
def test_crop_round_trip_recovers_landmarks(x0, y0, w, h, margin, angle, scale, sx, sy, size, seed):
    """image -> crop -> inverse gives the landmarks back to 1e-6 px (float64 affine algebra)."""
    pts = np.random.default_rng(seed).uniform([x0, y0], [x0 + w, y0 + h], (68, 2))
    M = tf.crop_matrix(tf.landmark_box(pts), size, margin, angle, scale, (sx, sy))
    back = tf.apply_affine(tf.apply_affine(pts, M), tf.invert_affine(M))
    assert np.abs(back - pts).max() < 1e-6
    assert np.allclose(tf.compose_affine(tf.invert_affine(M), M), [[1, 0, 0], [0, 1, 0]], atol=1e-9)


def test_crop_puts_box_centre_at_crop_centre_and_side_to_size():
    box = [10.0, 20.0, 110.0, 60.0]                    # 100 x 40, centre (60, 40)
    M = tf.crop_matrix(box, 256, margin=1.0)
    c = tf.apply_affine([[60.0, 40.0]], M)[0]
    assert np.allclose(c, [127.5, 127.5])
    # the square's left and right edges land on the crop's outer pixel boundaries
    edges = tf.apply_affine([[10.0, 40.0], [110.0, 40.0]], M)
    assert np.allclose(edges[:, 0], [-0.5, 255.5])


def test_rotation_is_counter_clockwise_as_displayed():
    M = tf.similarity_matrix((0.0, 0.0), 100, 101, angle_deg=90)      # crop centre 50
    right = tf.apply_affine([[10.0, 0.0]], M)[0]
    assert np.allclose(right, [50.0, 50.0 - 10.0 * 101 / 100])          # right of centre goes up


def test_warp_moves_a_dot_where_apply_affine_says():
    img = np.zeros((200, 300), np.float32)
    yy, xx = np.mgrid[0:200, 0:300]
    p = np.array([183.3, 71.8])
    img = np.exp(-((xx - p[0]) ** 2 + (yy - p[1]) ** 2) / (2 * 3.0 ** 2)).astype(np.float32)
    M = tf.crop_matrix([120, 40, 220, 130], 128, 1.3, angle_deg=23, scale=1.1, shift=(4, -7))
    out = tf.warp_image(img, M, 128)
    ys, xs = np.mgrid[0:128, 0:128]
    centroid = np.array([(out * xs).sum(), (out * ys).sum()]) / out.sum()
    assert np.abs(centroid - tf.apply_affine(p[None], M)[0]).max() < 0.02


def test_warp_many_channels_and_gray():
    img = np.random.default_rng(0).random((40, 50, 7)).astype(np.float32)
    M = tf.crop_matrix([5, 5, 40, 30], 32)
    out = tf.warp_image(img, M, 32)
    assert out.shape == (32, 32, 7)
    for c in range(7):
        assert np.allclose(out[..., c], tf.warp_image(img[..., c], M, 32))


def test_flip_twice_is_identity():
    lay = lm.get("ibug68")
    pts = np.random.default_rng(1).uniform(0, 255, (68, 2))
    once = tf.flip_landmarks(pts, 256, lay.flip)
    assert not np.allclose(once, pts)
    assert np.allclose(tf.flip_landmarks(once, 256, lay.flip), pts, atol=1e-12)
    assert np.allclose(once, lay.mirror(pts, 256))
    F = tf.flip_matrix(256)
    assert np.allclose(tf.compose_affine(F, F), [[1, 0, 0], [0, 1, 0]])
    img = np.random.default_rng(2).integers(0, 255, (256, 256, 3), dtype=np.uint8)
    assert np.array_equal(tf.warp_image(img, F, 256), img[:, ::-1])


def test_square_box_and_landmark_box():
    pts = np.array([[10.0, 20.0], [30.0, 80.0], [50.0, 40.0]])
    assert np.allclose(tf.landmark_box(pts), [10, 20, 50, 80])
    assert np.allclose(tf.landmark_box(pts, occluded=[False, True, False]), [10, 20, 50, 40])
    assert np.allclose(tf.landmark_box(pts, occluded=[True, True, True]), [10, 20, 50, 80])
    assert tf.square_box([0, 0, 40, 80], 1.5) == (20.0, 40.0, 120.0)


@pytest.mark.parametrize("call, msg", [
    (lambda: tf.invert_affine([[1, 2, 0], [2, 4, 0]]), "singular"),
    (lambda: tf.apply_affine(np.zeros((3, 3)), np.eye(2, 3)), r"\[\.\.\., 2\]"),
    (lambda: tf.apply_affine(np.zeros((3, 2)), np.eye(3)[:, :2]), "2x3"),
    (lambda: tf.crop_matrix([10, 10, 5, 20], 64), "x1 >= x0"),
    (lambda: tf.crop_matrix([0, 0, 0, 0], 64), "no size"),
    (lambda: tf.similarity_matrix((0, 0), 10, 0), "out_size"),
    (lambda: tf.landmark_box(np.zeros((3, 3))), r"\[N, 2\]"),
    (lambda: tf.flip_landmarks(np.zeros((3, 2)), 10, [0, 0, 1]), "permutation"),
])
def test_bad_input_is_rejected(call, msg):
    with pytest.raises(ValueError, match=msg):
        call()
