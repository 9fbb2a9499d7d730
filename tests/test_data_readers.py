"""lmref.data.readers on small files the tests write: 300W .pts, WFLW lines, COFW text / npz."""
import os

import numpy as np
import pytest

from lmref.data import readers as rd


def _pts_text(points, n=None):
    body = "\n".join(f"{x} {y}" for x, y in points)
    return f"version: 1\nn_points:  {len(points) if n is None else n}\n{{\n{body}\n}}\n"


def test_pts_round_trip_and_one_based(tmp_path):
    pts = np.random.default_rng(0).uniform(0, 500, (68, 2))
    p = tmp_path / "a.pts"
    rd.write_pts(p, pts)
    text = p.read_text()
    assert text.startswith("version: 1\nn_points:  68\n{\n") and text.endswith("}\n")
    first = [float(v) for v in text.splitlines()[3].split()]
    np.testing.assert_allclose(first, pts[0] + 1, atol=1e-6)            # stored 1-based
    np.testing.assert_allclose(rd.read_pts(p), pts, atol=1e-6)           # read back 0-based
    np.testing.assert_allclose(rd.read_pts(p, one_based=False), pts + 1, atol=1e-6)


def test_pts_as_ibug_writes_them(tmp_path):
    # the iBUG files: CRLF line ends, no trailing newline, integer-looking numbers
    p = tmp_path / "ibug.pts"
    p.write_bytes(b"version: 1\r\nn_points:  3\r\n{\r\n1.0 1.0\r\n10 20\r\n3.5 4.25\r\n}")
    np.testing.assert_allclose(rd.read_pts(p), [[0, 0], [9, 19], [2.5, 3.25]])


@pytest.mark.parametrize("text, line, msg", [
    ("version: 1\nn_points: 2\n{\n1 2\n}\n", 5, r"'\}' after 1 points"),
    ("version: 1\nn_points: 2\n{\n1 2\n3 x\n}\n", 5, "point 2 y: 'x' is not a number"),
    ("version: 1\nn_points: 2\n{\n1 2\n3 4 5\n}\n", 5, "expected 'x y'"),
    ("version: 1\nn_points: two\n{\n", 2, "not an integer"),
    ("version: 1\npoints: 2\n", 2, "expected 'n_points: N'"),
    ("version: 1\nn_points: 1\n[\n1 2\n]\n", 3, "expected '{'"),
    ("version: 1\nn_points: 1\n{\n1 2\n", 4, "unexpected end of file"),
    ("version: 1\nn_points: 1\n{\n1 2\n}\nextra\n", 6, "unexpected content"),
    ("version: 1\nn_points: 1\n{\n1 nan\n}\n", 4, "not finite"),
])
def test_pts_malformed(tmp_path, text, line, msg):
    p = tmp_path / "bad.pts"
    p.write_text(text)
    with pytest.raises(rd.FormatError, match=msg) as e:
        rd.read_pts(p)
    assert str(e.value).startswith(f"{p}:{line}:")
    assert e.value.line == line and isinstance(e.value, ValueError)


def test_read_300w_dir(tmp_path):
    rng = np.random.default_rng(1)
    for name in ("b", "a"):
        img = rng.integers(0, 255, (40, 30, 3), dtype=np.uint8)
        rd.write_image(tmp_path / f"{name}.png", img)
        rd.write_pts(tmp_path / f"{name}.pts", rng.uniform(0, 30, (68, 2)))
    rd.write_image(tmp_path / "no_pts.png", np.zeros((5, 5, 3), np.uint8))
    (tmp_path / "sub").mkdir()
    rd.write_image(tmp_path / "sub" / "c.jpg", np.zeros((8, 8, 3), np.uint8))
    rd.write_pts(tmp_path / "sub" / "c.pts", np.zeros((68, 2)))
    faces = rd.read_300w_dir(tmp_path)
    assert [os.path.relpath(f.path, tmp_path) for f in faces] == ["a.png", "b.png", os.path.join("sub", "c.jpg")]
    assert faces[0].landmarks.shape == (68, 2)
    img = faces[0].load_image()
    assert img.shape == (40, 30, 3) and img.dtype == np.uint8
    with pytest.raises(FileNotFoundError):
        rd.read_300w_dir(tmp_path / "missing")


def test_image_io_is_rgb(tmp_path):
    img = np.zeros((4, 4, 3), np.uint8)
    img[..., 0] = 200                                                   # red
    rd.write_image(tmp_path / "r.png", img)
    back = rd.read_image(tmp_path / "r.png")
    assert back[0, 0].tolist() == [200, 0, 0]
    with pytest.raises(FileNotFoundError, match="cannot read image"):
        rd.read_image(tmp_path / "nothing.png")


def _wflw_line(rng, attrs=(1, 0, 0, 1, 0, 1), name="51--Dresses/51_x.jpg"):
    pts = rng.uniform(0, 400, 196)
    box = [10, 20, 300, 340]
    return " ".join([f"{v:.6f}" for v in pts] + [str(b) for b in box] + [str(a) for a in attrs] + [name]), pts


def test_wflw(tmp_path):
    rng = np.random.default_rng(2)
    l1, p1 = _wflw_line(rng)
    l2, p2 = _wflw_line(rng, (0, 0, 1, 0, 0, 0), "x/y.jpg")
    f = tmp_path / "list_98pt_rect_attr_test.txt"
    f.write_text(l1 + "\n\n" + l2 + "\n")
    faces = rd.read_wflw(f, image_root="/data/WFLW_images")
    assert len(faces) == 2
    np.testing.assert_allclose(faces[0].landmarks, p1.reshape(98, 2), atol=1e-6)
    assert faces[0].box.tolist() == [10, 20, 300, 340]
    assert faces[0].attributes.tolist() == [1, 0, 0, 1, 0, 1]
    assert faces[1].path == os.path.join("/data/WFLW_images", "x/y.jpg")


@pytest.mark.parametrize("mutate, msg", [
    (lambda t: t[:-1], "expected 207 fields"),
    (lambda t: t[:5] + ["abc"] + t[6:], "field 6: 'abc' is not a number"),
    (lambda t: t[:200] + ["2"] + t[201:], "attribute pose: expected 0 or 1"),
    (lambda t: t[:196] + ["50", "20", "10", "340"] + t[200:], "x_max >= x_min"),
])
def test_wflw_malformed(tmp_path, mutate, msg):
    good, _ = _wflw_line(np.random.default_rng(3))
    f = tmp_path / "w.txt"
    f.write_text(good + "\n" + " ".join(mutate(good.split())) + "\n")
    with pytest.raises(rd.FormatError, match=msg) as e:
        rd.read_wflw(f)
    assert str(e.value).startswith(f"{f}:2:")


def _cofw_faces(rng, n=3, box=True):
    return [rd.Annotation(landmarks=rng.uniform(0, 200, (29, 2)), path=f"img{i}.png",
                          occluded=rng.random(29) < 0.3, box=np.array([5.0, 6.0, 150.0, 160.0]) if box else None)
            for i in range(n)]


@pytest.mark.parametrize("box", [True, False])
def test_cofw_txt_round_trip(tmp_path, box):
    faces = _cofw_faces(np.random.default_rng(4), box=box)
    f = tmp_path / "cofw.txt"
    rd.write_cofw_txt(f, faces)
    lines = f.read_text().splitlines()
    assert len(lines[0].split()) == (92 if box else 88)
    assert float(lines[0].split()[1]) == pytest.approx(faces[0].landmarks[0, 0] + 1, abs=1e-5)   # 1-based
    back = rd.read_cofw_txt(f)
    for a, b in zip(faces, back):
        np.testing.assert_allclose(b.landmarks, a.landmarks, atol=1e-5)
        assert np.array_equal(b.occluded, a.occluded) and b.path == a.path
        if box:
            np.testing.assert_allclose(b.box, a.box, atol=1e-5)


@pytest.mark.parametrize("mutate, msg", [
    (lambda t: t[:50], "expected 88 fields"),
    (lambda t: t[:60] + ["0.5"] + t[61:], "occlusion flag of point 2: expected 0 or 1"),
    (lambda t: t[:3] + ["?"] + t[4:], "field 4: '\\?' is not a number"),
])
def test_cofw_txt_malformed(tmp_path, mutate, msg):
    f = tmp_path / "c.txt"
    rd.write_cofw_txt(f, _cofw_faces(np.random.default_rng(5), 1, box=False))
    good = f.read_text().split()
    f.write_text("# a comment\n" + " ".join(mutate(good)) + "\n")
    with pytest.raises(rd.FormatError, match=msg) as e:
        rd.read_cofw_txt(f)
    assert str(e.value).startswith(f"{f}:2:")


def test_cofw_npz_round_trip_paths_and_images(tmp_path):
    rng = np.random.default_rng(6)
    faces = _cofw_faces(rng)
    rd.write_cofw_npz(tmp_path / "p.npz", faces)
    back = rd.read_cofw_npz(tmp_path / "p.npz")
    for a, b in zip(faces, back):
        np.testing.assert_allclose(b.landmarks, a.landmarks, atol=1e-9)
        np.testing.assert_allclose(b.box, a.box)
        assert np.array_equal(b.occluded, a.occluded) and b.path == a.path
    imgs = rng.integers(0, 255, (3, 16, 16), dtype=np.uint8)                 # grayscale COFW images
    rd.write_cofw_npz(tmp_path / "i.npz", faces, images=imgs, one_based=False)
    back = rd.read_cofw_npz(tmp_path / "i.npz")
    np.testing.assert_allclose(back[1].landmarks, faces[1].landmarks)
    assert back[2].load_image().shape == (16, 16, 3)
    assert np.array_equal(back[2].load_image()[..., 0], imgs[2])


@pytest.mark.parametrize("arrays, msg", [
    (dict(occluded=np.zeros((2, 29)), paths=np.array(["a", "b"])), "missing array 'landmarks'"),
    (dict(landmarks=np.zeros((2, 28, 2)), occluded=np.zeros((2, 29)), paths=np.array(["a", "b"])), r"\[N, 29, 2\]"),
    (dict(landmarks=np.zeros((2, 29, 2)), occluded=np.full((2, 29), 2), paths=np.array(["a", "b"])), "0/1"),
    (dict(landmarks=np.zeros((2, 29, 2)), occluded=np.zeros((2, 29))), "exactly one of"),
    (dict(landmarks=np.zeros((2, 29, 2)), occluded=np.zeros((2, 29)), paths=np.array(["a"])), "paths: expected 2"),
    (dict(landmarks=np.zeros((2, 29, 2)), occluded=np.zeros((2, 29)), paths=np.array(["a", "b"]),
          boxes=np.zeros((2, 3))), r"boxes: expected \[N, 4\]"),
])
def test_cofw_npz_malformed(tmp_path, arrays, msg):
    f = tmp_path / "bad.npz"
    np.savez(f, **arrays)
    with pytest.raises(rd.FormatError, match=msg) as e:
        rd.read_cofw_npz(f)
    assert str(e.value).startswith(str(f))


def test_cofw_npz_with_objects_is_refused(tmp_path):
    f = tmp_path / "obj.npz"
    np.savez(f, landmarks=np.zeros((1, 29, 2)), occluded=np.zeros((1, 29)),
             paths=np.array([{"evil": 1}], dtype=object))
    with pytest.raises(rd.FormatError, match="without pickle"):
        rd.read_cofw_npz(f)
