"""benchmarks.real_photos' plumbing (issue 16), offline: an npm tarball is fetched once, checked against its
pinned sha256 and read from the cache; a tarball that does not match is refused and not kept; the
paired comparison of two models' per-face NMEs."""
import hashlib
import io
import tarfile

import cv2
import numpy as np
import pytest

from benchmarks import real_photos


def _tarball(path, member, data):
    with tarfile.open(path, "w:gz") as t:
        info = tarfile.TarInfo(member)
        info.size = len(data)
        t.addfile(info, io.BytesIO(data))
    return path.read_bytes()


@pytest.fixture
def registry(tmp_path, monkeypatch):
    """A file:// npm registry holding one package, @scope/pkg 1.0.0, with one PNG in it."""
    img = np.zeros((20, 24, 3), np.uint8)
    img[:, :, 2] = 200                                              # red, in OpenCV's BGR
    png = cv2.imencode(".png", img)[1].tobytes()
    (tmp_path / "reg" / "@scope" / "pkg" / "-").mkdir(parents=True)
    data = _tarball(tmp_path / "reg" / "@scope" / "pkg" / "-" / "pkg-1.0.0.tgz", "package/a.png", png)
    monkeypatch.setattr(real_photos, "cache_dir", lambda: str(tmp_path / "cache"))
    monkeypatch.setitem(real_photos.NPM_SHA256, ("@scope/pkg", "1.0.0"), hashlib.sha256(data).hexdigest())
    monkeypatch.setattr(real_photos, "NPM_REGISTRY", (tmp_path / "reg").as_uri())
    return tmp_path


def test_npm_photo_is_fetched_once_checked_and_read(registry, monkeypatch):
    path = real_photos.npm_tarball("@scope/pkg", "1.0.0", real_photos.NPM_REGISTRY)
    assert path.startswith(str(registry / "cache")) and path.endswith("pkg-1.0.0.tgz")
    monkeypatch.setattr(real_photos, "NPM_REGISTRY", "file:///nowhere")      # cached: no second fetch
    img = real_photos.photo("npm", "@scope/pkg", "1.0.0", "package/a.png")
    assert img.shape == (20, 24, 3) and (img[..., 0] == 200).all() and (img[..., 2] == 0).all()   # RGB
    assert real_photos.photo_name("npm", "@scope/pkg", "1.0.0", "package/a.png").startswith("npm @scope/pkg")


def test_npm_tarball_with_another_sha256_is_refused_and_not_kept(registry, monkeypatch):
    monkeypatch.setitem(real_photos.NPM_SHA256, ("@scope/pkg", "1.0.0"), "0" * 64)
    with pytest.raises(SystemExit, match="expected 0000"):
        real_photos.npm_tarball("@scope/pkg", "1.0.0", real_photos.NPM_REGISTRY)
    assert not list((registry / "cache").rglob("*.tgz*"))


def test_photo_list_is_pinned_and_never_menpo():
    for registry, package, version, member, licence in real_photos.PHOTOS:
        assert registry in ("pypi", "npm") and licence and "menpo" not in package.lower()
        assert registry == "pypi" or (package, version) in real_photos.NPM_SHA256


def test_paired_comparison():
    c = real_photos.paired([0.05, 0.04, 0.10], [0.06, 0.04, 0.08])
    assert c["n"] == 3 and c["lower"] == 1 and c["higher"] == 1
    assert c["mean_diff"] == pytest.approx(np.mean([-0.01, 0.0, 0.02]))
    assert c["sd_diff"] == pytest.approx(np.std([-0.01, 0.0, 0.02], ddof=1))


def test_synthetic_mode_scores_each_model_against_labels_and_truth(monkeypatch, tmp_path):
    """--synthetic: every model against dlib's labels and against the truth, from each one's own box; with
    labels equal to the truth both scores agree, and dlib's own NME is its labels' offset from the truth."""
    import json
    from lmref.data import synthetic
    s = synthetic.generate(0, 1, 256, "test")
    io = np.linalg.norm(s.landmarks[36] - s.landmarks[45])
    faces = [{"photo": "a", "image": s.image, "labels": s.landmarks.copy(), "truth": s.landmarks},
             {"photo": "b", "image": s.image, "labels": s.landmarks + [3.0, 4.0], "truth": s.landmarks}]
    monkeypatch.setattr(real_photos, "synthetic_faces", lambda n, version, progress=False: faces)
    out = tmp_path / "o.json"
    assert real_photos.main(["--synthetic", "2", "--model", "student", "--against", "student", "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["faces"] == 2 and res["dlib_nme"] == pytest.approx(5.0 / io / 2)
    m = res["models"]["student"]
    assert m["labels"]["per_face"][0] == pytest.approx(m["truth"]["per_face"][0], abs=1e-12)
    assert m["labels"]["per_face"][1] != m["truth"]["per_face"][1]
    with pytest.raises(SystemExit, match="--version goes with --synthetic"):
        real_photos.main(["--version", "5"])
