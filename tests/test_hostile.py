"""Hostile and careless input (issue 18): one test per finding F1-F19 of the hostile-input review,
and the closed pipe. Each builds the bad input the review used (from the shipped student ``S`` and
the shipped example photo ``EX``), runs the library or the ``lmref`` command on it, and checks the
careful answer: one line ``lmref: error: ...`` with exit status 2, nothing half-written, no
traceback, no log noise, and numbers that never hide an overflow."""
import json
import os
import shutil
import stat
import subprocess
import sys
import zipfile

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

from lmref import bundle as B
from lmref import cli, ops, weights
from lmref.detect import ASSETS_DIR, shipped_models

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

HUGE = {np.float32: 1e22, np.float64: 1e160}     # per-group variance far beyond the dtype's range


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
