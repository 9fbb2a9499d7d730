"""Hostile and careless input (issue 18): one test per finding F1-F19 of the hostile-input review,
and the closed pipe. Each builds the bad input the review used (from the shipped student ``S`` and
the shipped example photo ``EX``), runs the library or the ``lmref`` command on it, and checks the
careful answer: one line ``lmref: error: ...`` with exit status 2, nothing half-written, no
traceback, no log noise, and numbers that never hide an overflow."""
import io
import json
import os
import shutil
import stat
import struct
import subprocess
import sys
import tracemalloc
import zipfile
import zlib

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

from lmref import bundle as B
from lmref import cli, ops, weights
from lmref.detect import ASSETS_DIR, DetectError, read_image, shipped_models

S = shipped_models()["student"]
EX = os.path.join(ASSETS_DIR, "example.jpg")


def run(argv, capsys):
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code, err, *words):
    assert code == 2, (code, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("lmref: error: "), err
    for w in words:
        assert w.lower() in lines[0].lower(), (w, lines[0])


def header_span(raw):
    """(start, end) of the JSON header in a safetensors file's bytes."""
    n = int.from_bytes(raw[:8], "little")
    return 8, 8 + n


def rewrite_manifest(path, out, **changes):
    """S's tensors with a changed manifest, written with a valid checksum (bypassing save's checks)."""
    tensors, manifest = weights.load(path)
    manifest.update(changes)
    weights.write_safetensors(out, tensors, {weights.MANIFEST_KEY: json.dumps(manifest)})
    return out


# ---------------------------------------------------------------------------------------------
# weights: F1 - F3
# ---------------------------------------------------------------------------------------------

def test_F1_flipped_checksum_key_does_not_switch_the_check_off(tmp_path, capsys):
    raw = bytearray(open(S, "rb").read())
    h0, h1 = header_span(raw)
    key = raw.index(b'"lmref_sha256"', h0, h1) + 2              # the 'm' of lmref_sha256
    raw[key] ^= 0x04                                               # 'm' -> 'i': liref_sha256
    assert b'"liref_sha256"' in raw[h0:h1]
    (tmp_path / "key.safetensors").write_bytes(bytes(raw))
    with pytest.raises(weights.WeightsError, match="no lmref_sha256 checksum.*'liref_sha256'"):
        weights.load(tmp_path / "key.safetensors")
    raw[len(raw) - 1001] ^= 0x10                                   # and a weight bit: the review's case
    (tmp_path / "both.safetensors").write_bytes(bytes(raw))
    code, out, err = run(["detect", "--example", "--model", tmp_path / "both.safetensors",
                          "--out", tmp_path / "o"], capsys)
    assert_one_line_error(code, err, "checksum")
    assert not (tmp_path / "o").exists()


def test_F2_huge_manifest_input_size_is_refused(tmp_path, capsys):
    big = rewrite_manifest(S, tmp_path / "big.safetensors",
                           input={**weights.load(S)[1]["input"], "size": [60000, 60000]})
    with pytest.raises(weights.WeightsError, match="exceeds the limit"):
        weights.load(big)
    for argv in (["info", big], ["detect", "--example", "--model", big, "--out", tmp_path / "o"]):
        code, _, err = run(argv, capsys)
        assert_one_line_error(code, err, "input.size", str(weights.MAX_INPUT_SIDE))
    tensors, manifest = weights.load(S)
    with pytest.raises(weights.WeightsError, match="exceeds the limit"):       # save refuses too
        weights.save(tmp_path / "x.safetensors", tensors, {**manifest, "input": {**manifest["input"],
                                                                                  "size": [1025, 96]}})


def test_F3_nan_weights_with_a_valid_checksum_are_reported(tmp_path, capsys):
    tensors, manifest = weights.load(S)
    key = sorted(tensors)[3]
    tensors[key] = tensors[key].copy()
    tensors[key].flat[0] = np.nan
    weights.save(tmp_path / "nan.safetensors", tensors, manifest)         # a valid checksum
    with pytest.raises(weights.WeightsError, match=f"NaN or inf.*{key}"):
        weights.load_model(tmp_path / "nan.safetensors")
    code, out, err = run(["detect", "--example", "--model", tmp_path / "nan.safetensors",
                          "--out", tmp_path / "o"], capsys)
    assert_one_line_error(code, err, "NaN or inf", key)
    # float64 weights beyond float32's range become inf when a float32 Model casts them
    t64 = {k: a.astype(np.float64) for k, a in weights.load(S)[0].items()}
    t64[key] = t64[key] * 1e300
    weights.save(tmp_path / "big.safetensors", t64, manifest)
    weights.load_model(tmp_path / "big.safetensors", dtype=np.float64)        # fine in float64
    with pytest.raises(weights.WeightsError, match="NaN or inf values in float32"):
        weights.load_model(tmp_path / "big.safetensors", dtype=np.float32)


# ---------------------------------------------------------------------------------------------
# F19: normalisation ops propagate overflow as torch does
# ---------------------------------------------------------------------------------------------

# a group at this scale has a variance beyond the dtype's range for any spread above 1e-11 of the
# standard normal draws (float32 max 3.4e38, float64 1.8e308), with values still well inside it
HUGE = {np.float32: 1e30, np.float64: 1e200}


def test_F19_layer_and_group_norm_overflow_is_nan_like_torch():
    """The review's case: float32 inputs around 1e30. torch returns NaN; zeros would hide it."""
    x = np.random.default_rng(0).standard_normal((2, 3, 4, 4)).astype(np.float32)
    x[0] *= 1e30
    t = torch.from_numpy(x)
    for ours, theirs in ((ops.layer_norm(x, (4, 4)), F.layer_norm(t, (4, 4))),
                         (ops.group_norm(x, 1), F.group_norm(t, 1)),
                         (ops.layer_norm(x, (3, 4, 4)), F.layer_norm(t, (3, 4, 4)))):
        theirs = theirs.numpy()
        assert np.isnan(theirs[0]).all() and np.isnan(ours[0]).all()
        assert np.array_equal(np.isnan(ours), np.isnan(theirs))
        np.testing.assert_allclose(ours[1], theirs[1], rtol=1e-4, atol=1e-5)


@given(st.data())
def test_F19_overflow_property_against_torch(data):
    """Random shapes and dtypes, each normalisation group at scale 1 or HUGE: ours is NaN on exactly
    the HUGE groups and equal to torch elsewhere; torch is NaN there as well, except that its
    GroupNorm kernel returns 0 for some small groups (which is why a reference must not copy it)."""
    dt = data.draw(st.sampled_from([np.float32, np.float64]))
    B_, C = data.draw(st.integers(1, 3)), data.draw(st.sampled_from([2, 4, 6]))
    H, W = data.draw(st.integers(1, 5)), data.draw(st.integers(2, 6))
    kind = data.draw(st.sampled_from(["layer", "group"]))
    G = data.draw(st.sampled_from([g for g in (1, 2, C) if C % g == 0]))
    rng = np.random.default_rng(data.draw(st.integers(0, 2**31)))
    x = rng.standard_normal((B_, C, H, W)).astype(dt)
    groups = x.reshape(B_ * C, H * W) if kind == "layer" else x.reshape(B_ * G, -1)   # views into x
    huge = rng.random(len(groups)) < 0.5
    groups[huge] *= dt(HUGE[dt])
    t = torch.from_numpy(x)
    ours = ops.layer_norm(x, (H, W)) if kind == "layer" else ops.group_norm(x, G)
    theirs = (F.layer_norm(t, (H, W)) if kind == "layer" else F.group_norm(t, G)).numpy()
    ours_g, theirs_g = ours.reshape(len(groups), -1), theirs.reshape(len(groups), -1)
    assert np.isnan(ours_g[huge]).all()
    assert not np.isnan(ours_g[~huge]).any()
    assert (np.isnan(theirs_g[huge]) | (theirs_g[huge] == 0)).all()
    tol = dict(rtol=1e-10, atol=1e-12) if dt == np.float64 else dict(rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(ours_g[~huge], theirs_g[~huge], **tol)


# ---------------------------------------------------------------------------------------------
# images: F4 - F7, and outputs that overflow
# ---------------------------------------------------------------------------------------------

def png_chunk(tag, data):
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))


def png_claiming(w, h, idat):
    """A gray 8-bit PNG whose header says w x h, with the given IDAT payload."""
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))
            + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b""))


def no_decoding(monkeypatch):
    """cv2.imdecode replaced by a function that fails the test: proves a refusal came first."""
    def fail(*a, **k):
        raise AssertionError("the image was decoded")
    monkeypatch.setattr(cv2, "imdecode", fail)


def test_F4_tiny_png_claiming_a_huge_size_is_refused_from_its_header(tmp_path, capsys, monkeypatch):
    p = tmp_path / "claims.png"
    p.write_bytes(png_claiming(60000, 60000, zlib.compress(b"\0" * 64)))
    assert len(p.read_bytes()) < 100
    no_decoding(monkeypatch)
    with pytest.raises(DetectError, match="60000x60000 pixels"):
        read_image(p)
    code, _, err = run(["detect", p, "--out", tmp_path / "o"], capsys)
    assert_one_line_error(code, err, "60000x60000", "MP")


def test_F5_small_png_that_inflates_to_a_huge_image_is_not_decoded(tmp_path, capsys, monkeypatch):
    w = h = 10000                                         # 100 MP of zeros in a ~100 kB file
    z = zlib.compressobj(9)
    row = b"\0" * (w + 1)                                 # filter byte + w gray pixels
    idat = b"".join(z.compress(row) for _ in range(h)) + z.flush()
    p = tmp_path / "bomb.png"
    p.write_bytes(png_claiming(w, h, idat))
    assert p.stat().st_size < 1_000_000
    no_decoding(monkeypatch)
    code, _, err = run(["detect", p, "--out", tmp_path / "o"], capsys)
    assert_one_line_error(code, err, "10000x10000", "max_pixels")
    # the limit is a parameter: a 2 MP image passes a 2 MP limit and not a 1 MP one
    monkeypatch.undo()
    ok = tmp_path / "ok.png"
    cv2.imwrite(str(ok), np.full((1000, 2000), 128, np.uint8))
    assert read_image(ok, max_pixels=2_000_000).shape == (1000, 2000, 3)
    with pytest.raises(DetectError, match="1000 pixels"):
        read_image(ok, max_pixels=1_000_000)


def exif_app1(orientation, big_endian=False):
    """A JPEG APP1 segment holding an EXIF block with one IFD0 entry: Orientation (274)."""
    o = ">" if big_endian else "<"
    tiff = ((b"MM\0*" if big_endian else b"II*\0") + struct.pack(o + "I", 8) + struct.pack(o + "H", 1)
            + struct.pack(o + "HHIHH", 274, 3, 1, orientation, 0) + struct.pack(o + "I", 0))
    body = b"Exif\0\0" + tiff
    return b"\xff\xe1" + struct.pack(">H", len(body) + 2) + body


def jpeg_with_orientation(stored_rgb, orientation, big_endian=False, quality=95):
    ok, buf = cv2.imencode(".jpg", stored_rgb[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality])
    jpg = buf.tobytes()
    return jpg[:2] + exif_app1(orientation, big_endian) + jpg[2:]


def test_F6_exif_orientation_6_jpeg_is_read_upright(tmp_path):
    """A camera's portrait photo: the pixels are stored turned 90 degrees counter-clockwise and
    EXIF orientation 6 says 'rotate 90 clockwise to view'. read_image returns the upright image,
    the one cv2.imread (which applies the orientation) and photo viewers show."""
    up = np.zeros((64, 48, 3), np.uint8)                           # upright: portrait, 48 wide
    up[:16, :16] = (255, 0, 0)                                       # a red square top-left
    up[-16:, -16:] = (0, 0, 255)                                     # a blue square bottom-right
    p = tmp_path / "portrait.jpg"
    p.write_bytes(jpeg_with_orientation(np.rot90(up, 1), 6))         # stored sideways: 64 wide
    assert cv2.imdecode(np.fromfile(p, np.uint8), cv2.IMREAD_UNCHANGED).shape == (48, 64, 3)
    img = read_image(p)
    assert img.shape == (64, 48, 3)
    assert np.abs(img.astype(int) - up).mean() < 3                   # JPEG rounding only
    assert img[:16, :16].mean(axis=(0, 1))[0] > 200 and img[-16:, -16:].mean(axis=(0, 1))[2] > 200
    np.testing.assert_array_equal(img, cv2.imread(str(p))[:, :, ::-1])


@pytest.mark.parametrize("orientation", range(1, 9))
@pytest.mark.parametrize("big_endian", [False, True])
def test_F6_every_exif_orientation_matches_opencv_imread(tmp_path, orientation, big_endian):
    stored = np.random.default_rng(orientation).integers(0, 256, (24, 40, 3), dtype=np.uint8)
    p = tmp_path / "o.jpg"
    p.write_bytes(jpeg_with_orientation(stored, orientation, big_endian))
    np.testing.assert_array_equal(read_image(p), cv2.imread(str(p))[:, :, ::-1])


def test_F6_landmarks_of_a_sideways_photo_come_back_upright(tmp_path, capsys):
    """The example photo stored sideways with orientation 6 gives the landmarks of the upright photo,
    in the upright photo's coordinates (same face box, so only the pixels' storage differs)."""
    ex = cv2.imread(EX)[:, :, ::-1]
    (tmp_path / "up.jpg").write_bytes(jpeg_with_orientation(ex, 1, quality=100))
    (tmp_path / "side.jpg").write_bytes(jpeg_with_orientation(np.rot90(ex, 1), 6, quality=100))
    box = ["--box", 150, 130, 330, 350]
    code, _, err = run(["detect", tmp_path / "up.jpg", tmp_path / "side.jpg", *box, "--out", tmp_path / "o"], capsys)
    assert code == 0, err
    up, side = (json.loads((tmp_path / "o" / f"{s}.json").read_text()) for s in ("up", "side"))
    assert (side["width"], side["height"]) == (up["width"], up["height"])
    d = np.abs(np.array(side["faces"][0]["landmarks"]) - np.array(up["faces"][0]["landmarks"]))
    assert d.max() < 1.0, d.max()


def test_F7_truncated_png_gives_one_line_without_codec_log_noise(tmp_path, capfd):
    ok, buf = cv2.imencode(".png", np.random.default_rng(0).integers(0, 256, (120, 120, 3), dtype=np.uint8))
    raw = buf.tobytes()
    (tmp_path / "cut.png").write_bytes(raw[:len(raw) // 2])
    bad_crc = bytearray(raw)
    bad_crc[raw.index(b"IDAT") + 40] ^= 0xFF                         # IDAT: CRC error
    (tmp_path / "crc.png").write_bytes(bytes(bad_crc))
    for name in ("cut.png", "crc.png"):
        code = cli.main(["detect", str(tmp_path / name), "--out", str(tmp_path / "o")])
        out, err = capfd.readouterr()
        assert_one_line_error(code, err, name, "PNG", "libpng")


def test_F3_output_overflow_is_reported_not_warned(tmp_path, capfd):
    """Finite weights that overflow float32 inside the network: an error line, no RuntimeWarnings,
    no 'Out of range float values are not JSON compliant'."""
    tensors, manifest = weights.load(S)
    tensors = {k: v.astype(np.float32) for k, v in tensors.items()}    # (a float16 file cannot hold 1e36)
    stem = next(k for k in sorted(tensors) if k.endswith("conv.weight"))
    tensors[stem] = tensors[stem] * np.float32(1e36)
    weights.save(tmp_path / "hot.safetensors", tensors, manifest)
    code = cli.main(["detect", "--example", "--model", str(tmp_path / "hot.safetensors"),
                     "--out", str(tmp_path / "o")])
    out, err = capfd.readouterr()
    assert_one_line_error(code, err, "NaN or inf")
    assert not (tmp_path / "o").exists()


# ---------------------------------------------------------------------------------------------
# outputs: F8 - F12
# ---------------------------------------------------------------------------------------------

BOX = ["--box", 150, 130, 330, 350]          # a face box on EX: no detector run needed


def test_F8_a_commit_that_fails_part_way_leaves_nothing_and_restores_what_was_there(tmp_path, capsys, monkeypatch):
    out = tmp_path / "o"
    (out / "example.png").mkdir(parents=True)                  # the PNG's name is taken by a directory
    code, _, err = run(["detect", "--example", *BOX, "--out", out], capsys)
    assert_one_line_error(code, err, "is a directory")
    assert sorted(os.listdir(out)) == ["example.png"]          # no example.json left behind
    os.rmdir(out / "example.png")
    (out / "example.json").write_text("old result\n")
    real_replace = os.replace

    def failing_replace(src, dst):                             # the second file's rename fails
        if os.fspath(dst) == os.fspath(out / "example.png"):
            raise OSError(28, "No space left on device")
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", failing_replace)
    code, _, err = run(["detect", "--example", *BOX, "--out", out], capsys)
    assert_one_line_error(code, err, "nothing was written")
    assert sorted(os.listdir(out)) == ["example.json"]         # no staging directory, no new PNG
    assert (out / "example.json").read_text() == "old result\n"


def test_F9_an_output_never_replaces_an_input(tmp_path, capsys):
    ph = tmp_path / "ph"
    ph.mkdir()
    shutil.copy(EX, ph / "example.png")                        # a JPEG named .png: still read by signature
    before = (ph / "example.png").read_bytes()
    code, _, err = run(["detect", ph / "example.png", *BOX, "--out", ph], capsys)
    assert_one_line_error(code, err, "would replace the input")
    assert (ph / "example.png").read_bytes() == before and sorted(os.listdir(ph)) == ["example.png"]
    # the same file through another name (a symlink) is the same input
    (tmp_path / "link.png").symlink_to(ph / "example.png")
    code, _, err = run(["detect", tmp_path / "link.png", *BOX, "--out", ph], capsys)
    assert code == 0                                           # link.png/.json do not replace example.png
    (tmp_path / "o").mkdir()                                   # the --boxes file is an input too
    (tmp_path / "o" / "example.json").write_text(json.dumps({"example.png": [[150, 130, 330, 350]]}))
    code, _, err = run(["detect", ph / "example.png", "--boxes", tmp_path / "o" / "example.json",
                        "--out", tmp_path / "o"], capsys)
    assert_one_line_error(code, err, "would replace the input", "example.json")
    # compare --json onto the bundle it reads
    code, _, err = run(["trace", "stud5", "--out", tmp_path / "b.npz"], capsys)
    size = (tmp_path / "b.npz").stat().st_size
    code, _, err = run(["compare", tmp_path / "b.npz", tmp_path / "b.npz", "--json", tmp_path / "b.npz"], capsys)
    assert_one_line_error(code, err, "would replace the input")
    assert (tmp_path / "b.npz").stat().st_size == size


def test_F10_every_image_gets_its_own_stem(tmp_path, capsys):
    for name in ("foo.jpg", "foo.png", "foo-2.jpg", "FOO.jpeg"):
        shutil.copy(EX, tmp_path / name)
    names = ["foo.jpg", "foo.png", "foo-2.jpg", "FOO.jpeg"]
    code, out, err = run(["detect", *[tmp_path / n for n in names], *BOX, "--out", tmp_path / "o"], capsys)
    assert code == 0, err
    files = sorted(os.listdir(tmp_path / "o"))
    assert files == sorted(f"{s}.{e}" for s in ("foo", "foo-3", "foo-2", "FOO-4") for e in ("json", "png"))
    images = {s: json.loads((tmp_path / "o" / f"{s}.json").read_text())["image"]
              for s in ("foo", "foo-3", "foo-2", "FOO-4")}
    assert images == {s: str(tmp_path / n) for s, n in zip(("foo", "foo-3", "foo-2", "FOO-4"), names)}
    assert cli._unique_stems(["a/x.png", "b/x.png", "x-2.png", "x-3.png"]) == ["x", "x-4", "x-2", "x-3"]


@pytest.mark.parametrize("argv, words", [
    (["detect", "--example", "--max-faces", "-1"], ["--max-faces", ">= 0", "-1"]),
    (["detect", "--example", "--batch-size", "0"], ["--batch-size", ">= 1"]),
    (["detect", "--example", "--face", "-2"], ["--face", ">= 0"]),
    (["eval", "--data", "synthetic", "--thr", "nan"], ["--thr", "> 0"]),
])
def test_F11_counts_are_validated(tmp_path, capsys, argv, words):
    with pytest.raises(SystemExit) as e:
        cli.main([*argv, "--out", str(tmp_path / "o")])
    assert_one_line_error(e.value.code, capsys.readouterr().err, *words)
    assert not (tmp_path / "o").exists()


def modes(root):
    """{relative path: permission bits} of root and everything under it."""
    out = {".": stat.S_IMODE(os.stat(root).st_mode)}
    for dirpath, dirs, files in os.walk(root):
        for n in dirs + files:
            p = os.path.join(dirpath, n)
            out[os.path.relpath(p, root)] = stat.S_IMODE(os.stat(p).st_mode)
    return out


@pytest.mark.parametrize("mask", [0o027])          # not the usual 0o022: the modes must follow it
def test_F12_file_modes_follow_the_umask(tmp_path, capsys, mask):
    old = os.umask(mask)
    try:
        assert run(["detect", "--example", *BOX, "--out", tmp_path / "o"], capsys)[0] == 0
        assert run(["trace", "stud5", "--out", tmp_path / "b.npz"], capsys)[0] == 0
        assert run(["trace", "stud5", "--out", tmp_path / "bdir"], capsys)[0] == 0
        run(["compare", tmp_path / "b.npz", tmp_path / "bdir", "--json", tmp_path / "r.json"], capsys)
    finally:
        os.umask(old)
    f, d = 0o666 & ~mask, 0o777 & ~mask
    assert modes(tmp_path / "o") == {".": d, "example.json": f, "example.png": f}
    bdir = modes(tmp_path / "bdir")
    assert bdir.pop(".") == d and bdir.pop("tensors") == d and set(bdir.values()) == {f}
    assert stat.S_IMODE((tmp_path / "b.npz").stat().st_mode) == f
    assert stat.S_IMODE((tmp_path / "r.json").stat().st_mode) == f


# ---------------------------------------------------------------------------------------------
# bundles and arrays: F13 - F18
# ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("hostile_bundle")
    assert cli.main(["trace", "stud5", "--random", "0", "--out", str(d / "b")]) == 0
    return d / "b"


@pytest.mark.parametrize("flag, value", [("--rtol", "inf"), ("--rtol", "-1"), ("--atol", "nan"), ("--atol", "1e999")])
def test_F13_tolerances_are_finite_and_not_negative(bundle_dir, capsys, flag, value):
    with pytest.raises(SystemExit) as e:
        cli.main(["compare", str(bundle_dir), str(bundle_dir), flag, value])
    assert_one_line_error(e.value.code, capsys.readouterr().err, flag, "finite number >= 0")
    b = B.load(bundle_dir)
    out = {n: b.array(n, "float32") + 0.5 for n in b.names("output")}    # a 0.5 px error
    with pytest.raises(B.BundleError, match="finite number >= 0"):
        B.compare(b, out, rtol=float("inf"))
    assert not B.compare(b, out, rtol=1e-3).ok                              # a finite one sees the error


def test_F14_bundle_member_paths_stay_inside_the_bundle(bundle_dir, tmp_path, capsys):
    evil = tmp_path / "evil"
    shutil.copytree(bundle_dir, evil)
    index = json.loads((evil / "index.json").read_text())
    index["entries"][1]["files"]["float32"] = "../../../../../etc/passwd"
    (evil / "index.json").write_text(json.dumps(index))
    for argv in (["compare", bundle_dir, evil], ["compare", evil, bundle_dir]):
        code, out, err = run(argv, capsys)
        assert_one_line_error(code, err, "member path", "inside the bundle")
        assert "root:" not in out + err
    # a member that is a symlink out of the bundle
    shutil.rmtree(evil)
    shutil.copytree(bundle_dir, evil)
    victim = evil / "tensors" / "op0000.f32.npy"
    victim.unlink()
    victim.symlink_to("/etc/passwd")
    code, out, err = run(["compare", bundle_dir, evil], capsys)
    assert_one_line_error(code, err, "leads outside the bundle")
    assert "root:" not in out + err


def npy_header(shape, dtype="<f4"):
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": dtype, "fortran_order": False, "shape": shape})
    return buf.getvalue()


def test_F15_zip_bomb_npz_is_refused_from_its_headers(bundle_dir, tmp_path, capsys):
    """Two members of 60 MB of zeros each, deflated to ~0.5 MB: more than compare allows for a port
    of this bundle (twice its float64 size, 26 MB, + 64 MiB); refused with no big allocation."""
    bomb = tmp_path / "bomb.npz"
    with zipfile.ZipFile(bomb, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as z:
        for k in range(2):
            with z.open(f"t{k}.npy", "w", force_zip64=True) as f:
                f.write(npy_header((15_000_000,)))
                for _ in range(15):
                    f.write(bytes(4_000_000))
    assert bomb.stat().st_size < 1_000_000
    tracemalloc.start()
    code, _, err = run(["compare", bundle_dir, bomb], capsys)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert_one_line_error(code, err, "exceed this read's limit")
    assert peak < 30e6, peak                                   # the bundle's index, not 200 MB
    with pytest.raises(B.BundleError, match="limit"):
        B.read_tensors(bomb, max_bytes=100_000_000)
    assert sorted(B.read_tensors(bomb, max_bytes=130_000_000)) == ["t0", "t1"]   # a real budget reads it


def test_F16_npy_header_claiming_more_than_the_file_holds(tmp_path, capsys):
    (tmp_path / "x.npy").write_bytes(npy_header((10**10,)))  # 40 GB claimed, no data
    tracemalloc.start()
    code, _, err = run(["trace", "student", "--input-array", tmp_path / "x.npy", "--out", tmp_path / "b"], capsys)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert_one_line_error(code, err, "10000000000", "truncated or forged")
    assert peak < 50e6 and not (tmp_path / "b").exists()
    (tmp_path / "port").mkdir()
    os.replace(tmp_path / "x.npy", tmp_path / "port" / "x.npy")
    with pytest.raises(B.BundleError, match="truncated or forged"):
        B.read_tensors(tmp_path / "port")
    (tmp_path / "port" / "x.npy").write_bytes(b"root:x:0:0:root:/root:/bin/bash\n")   # never echoed
    with pytest.raises(B.BundleError) as e:
        B.read_tensors(tmp_path / "port")
    assert "root:" not in str(e.value).replace(str(tmp_path), "")


def test_F17_trace_batch_is_limited_and_memory_errors_are_one_line(tmp_path, capsys, monkeypatch):
    with pytest.raises(SystemExit) as e:
        cli.main(["trace", "student", "--batch", "100000", "--out", str(tmp_path / "b")])
    assert_one_line_error(e.value.code, capsys.readouterr().err, "--batch", f"between 1 and {cli.MAX_TRACE_BATCH}")
    np.save(tmp_path / "x.npy", np.zeros((cli.MAX_TRACE_BATCH + 1, 3, 96, 96), np.float32))
    code, _, err = run(["trace", "student", "--input-array", tmp_path / "x.npy", "--out", tmp_path / "b"], capsys)
    assert_one_line_error(code, err, "batch of 17")
    # whatever still runs out of memory, or fails inside OpenCV, or anywhere: one line, exit 2
    for exc, words in ((MemoryError(), ["out of memory"]),
                       (cv2.error("OpenCV(4.x) foo.cpp:1: error: (-215:Assertion failed) size.width>0\n"),
                        ["OpenCV"]),
                       (ZeroDivisionError("division by zero"), ["unexpected ZeroDivisionError"])):
        def boom(*a, exc=exc, **k):
            raise exc
        monkeypatch.setattr(B, "record", boom)
        code, _, err = run(["trace", "student", "--out", tmp_path / "b"], capsys)
        assert_one_line_error(code, err, *words)
    assert not (tmp_path / "b").exists()


def test_F18_an_input_that_overflows_the_model_writes_no_bundle(tmp_path, capsys):
    for value, words in ((1e300, ["do not fit float32"]), (1e30, ["float32 run gives NaN or inf first at"])):
        np.save(tmp_path / "x.npy", np.full((1, 3, 96, 96), value))
        code, _, err = run(["trace", "student", "--input-array", tmp_path / "x.npy", "--out", tmp_path / "b"], capsys)
        assert_one_line_error(code, err, *words)
        assert not (tmp_path / "b").exists() and "RuntimeWarning" not in err


# ---------------------------------------------------------------------------------------------
# a closed pipe
# ---------------------------------------------------------------------------------------------

def test_closed_stdout_is_a_quiet_exit():
    """``lmref info student | head -1``: the reader goes away. The read end is closed before lmref
    writes, so the write fails every time (not only when the output outgrows the pipe buffer)."""
    p = subprocess.Popen([sys.executable, "-m", "lmref.cli", "info", "student"], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE)
    p.stdout.close()
    err = p.stderr.read().decode()
    assert p.wait() == cli.EXIT_PIPE and err == "", err
