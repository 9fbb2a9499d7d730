"""The ``lmref`` command line: every subcommand's --help, detect / models / info / trace / compare /
eval on small models, and every bad-input case: one line ``lmref: error: ...`` on stderr, a
non-zero exit status, nothing half-written in --out."""
import json
import os
import subprocess
import sys

import cv2
import numpy as np
import onnx
import pytest
import torch
from _student import export_student

from lmref import bundle as B
from lmref import cli, detect, weights

COMMANDS = ["detect", "models", "info", "trace", "compare", "eval"]


@pytest.fixture(scope="module")
def student(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli_student")
    export_student(d / "s.safetensors", size=64, onnx_path=d / "s.onnx",
                   training={"data": "none (random weights)", "test": {"nme": 0.5, "fr": 1.0}})
    return d / "s.safetensors", d / "s.onnx"


def run(argv, capsys):
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code, err, *words):
    assert code != 0
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("lmref: error: "), err
    for w in words:
        assert w.lower() in lines[0].lower(), (w, lines[0])


# ---------------------------------------------------------------------------------------------
# help
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("command", COMMANDS)
def test_every_subcommand_has_help_with_examples(command, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main([command, "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "examples:" in out and f"lmref {command}" in out


def test_top_level_help_lists_commands(capsys):
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    out = capsys.readouterr().out
    for c in COMMANDS:
        assert c in out
    assert cli.main([]) == 2


def test_console_script_entry_point_runs():
    r = subprocess.run([sys.executable, "-m", "lmref.cli", "models", "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "examples:" in r.stdout


def test_usage_error_is_one_line(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["trace"])                    # missing FILE and --out
    assert e.value.code == 2
    assert_one_line_error(2, capsys.readouterr().err, "required")


# ---------------------------------------------------------------------------------------------
# models, info
# ---------------------------------------------------------------------------------------------

def test_models_with_none_shipped(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(detect, "MODELS_DIR", str(tmp_path))
    code, out, _ = run(["models"], capsys)
    assert code == 0 and "no models shipped" in out
    code, out, _ = run(["models", "--json"], capsys)
    assert code == 0 and json.loads(out) == []


def test_models_lists_accuracy_size_params(student, tmp_path, monkeypatch, capsys):
    weights_path, _ = student
    (tmp_path / "student.safetensors").write_bytes(weights_path.read_bytes())
    monkeypatch.setattr(detect, "MODELS_DIR", str(tmp_path))
    code, out, _ = run(["models"], capsys)
    assert code == 0
    line = next(ln for ln in out.splitlines() if ln.startswith("student"))
    assert "aam" in line and "inner51" in line and "1,141,863 params" in line
    assert "test.nme 0.5" in line and "test.fr 1" in line and "64x64x3" in line
    rows = json.loads(run(["models", "--json"], capsys)[1])
    assert rows[0]["params"] == 1_141_863 and rows[0]["size_bytes"] == weights_path.stat().st_size
    assert rows[0]["metrics"] == {"test.nme": 0.5, "test.fr": 1.0} and rows[0]["default"]


def test_models_marks_teachers(student, tmp_path, monkeypatch, capsys):
    from lmref import weights
    weights_path, _ = student
    tensors, manifest = weights.load(weights_path)
    manifest["training"] = {**manifest["training"], "role": "teacher"}
    weights.save(tmp_path / "teacher_x.safetensors", tensors, manifest)
    (tmp_path / "student.safetensors").write_bytes(weights_path.read_bytes())
    monkeypatch.setattr(detect, "MODELS_DIR", str(tmp_path))
    out = run(["models"], capsys)[1].splitlines()
    assert next(ln for ln in out if ln.startswith("teacher_x")).split()[1] == "teacher"
    assert next(ln for ln in out if ln.startswith("student")).split()[1:3] == ["*", "model"]
    rows = {r["name"]: r for r in json.loads(run(["models", "--json"], capsys)[1])}
    assert rows["teacher_x"]["role"] == "teacher" and not rows["teacher_x"]["default"]
    assert rows["student"]["default"] and rows["student"]["role"] == "model"


def test_info_prints_manifest_params_and_macs(student, capsys):
    weights_path, _ = student
    code, out, _ = run(["info", weights_path, "--depth", "3"], capsys)
    assert code == 0
    assert '"architecture": "aam"' in out and "total parameters  1,141,863" in out
    assert "backbone.stages.2" in out and "total MACs" in out


# ---------------------------------------------------------------------------------------------
# trace, compare
# ---------------------------------------------------------------------------------------------

def test_trace_then_compare_with_onnx_passes(student, tmp_path, capsys):
    weights_path, onnx_path = student
    code, out, _ = run(["trace", weights_path, "--random", "3", "--out", tmp_path / "b.npz"], capsys)
    assert code == 0 and "wrote" in out
    b = B.load(tmp_path / "b.npz")
    assert b.manifest["input_source"]["random_seed"] == 3
    np.testing.assert_array_equal(b.input, B.random_input(b.manifest["model"], 3))
    code, out, _ = run(["compare", tmp_path / "b.npz", onnx_path, "--json", tmp_path / "r.json"], capsys)
    assert code == 0, out
    assert out.strip().splitlines()[-1].startswith("PASS")
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["ok"] and report["first_failure"] is None


def test_compare_perturbed_onnx_fails_naming_first_diverging_op(student, tmp_path, capsys):
    weights_path, onnx_path = student
    run(["trace", weights_path, "--out", tmp_path / "b"], capsys)
    m = onnx.load(onnx_path)
    node = next(n for n in m.graph.node if n.name == "/stages/stages.3/stages.3.0/conv1_1x1/conv/Conv")
    init = next(i for i in m.graph.initializer if i.name == node.input[1])
    w = onnx.numpy_helper.to_array(init).copy()
    w[0] += 0.5
    init.CopyFrom(onnx.numpy_helper.from_array(w, init.name))
    onnx.save(m, tmp_path / "bad.onnx")
    code, out, _ = run(["compare", tmp_path / "b", tmp_path / "bad.onnx"], capsys)
    assert code == 1
    last = out.strip().splitlines()[-1]
    assert last.startswith("FAIL") and "first diverging op: backbone.stages.3.0.conv1_1x1" in last


def test_compare_npz_with_mapping(student, tmp_path, capsys):
    weights_path, _ = student
    run(["trace", weights_path, "--out", tmp_path / "b"], capsys)
    b = B.load(tmp_path / "b")
    name = b.names("op")[4]
    np.savez(tmp_path / "port.npz", mine=b.array(name, "float32"), landmarks=b.array("landmarks", "float32"))
    (tmp_path / "map.json").write_text(json.dumps({name: "mine"}))
    code, out, _ = run(["compare", tmp_path / "b", tmp_path / "port.npz", "--map", tmp_path / "map.json"], capsys)
    assert code == 0 and "compared 2 of" in out
    np.savez(tmp_path / "port.npz", mine=b.array(name, "float32") + 1, landmarks=b.array("landmarks", "float32"))
    code, out, _ = run(["compare", tmp_path / "b", tmp_path / "port.npz", "--map", tmp_path / "map.json"], capsys)
    assert code == 1 and f"first diverging op: {name}" in out


def test_compare_verdict_at_the_reported_tolerance(student, tmp_path, capsys):
    """A float32 port 10% inside the default tolerance it prints passes (exit 0), 10% outside fails
    (exit 1): the verdict is taken at the tolerance the report states."""
    weights_path, _ = student
    run(["trace", weights_path, "--out", tmp_path / "b"], capsys)
    b = B.load(tmp_path / "b")
    name = b.names("op")[4]
    ref = b.array(name, "float64")
    tol = B.DEFAULT_TOL["float32"]
    threshold = tol["atol"] + tol["rtol"] * np.abs(ref).max()
    for factor, code_expected in ((0.9, 0), (1.1, 1)):
        val = ref.copy()
        val.flat[np.argmax(np.abs(ref))] += factor * threshold
        np.savez(tmp_path / "port.npz", **{name: val.astype(np.float32)})
        code, out, _ = run(["compare", tmp_path / "b", tmp_path / "port.npz"], capsys)
        assert code == code_expected, (factor, out)
        assert f"tolerance max|diff| <= {tol['atol']:g} + {tol['rtol']:g} * max|ref|" in out


def test_trace_from_input_array(student, tmp_path, capsys):
    weights_path, _ = student
    x = np.random.default_rng(0).normal(size=(2, 3, 64, 64))
    np.save(tmp_path / "x.npy", x)
    code, _, _ = run(["trace", weights_path, "--input-array", tmp_path / "x.npy", "--out", tmp_path / "b"], capsys)
    assert code == 0
    np.testing.assert_array_equal(B.load(tmp_path / "b").input, x)
    np.save(tmp_path / "y.npy", x[:, :, :32])
    code, _, err = run(["trace", weights_path, "--input-array", tmp_path / "y.npy", "--out", tmp_path / "c"], capsys)
    assert_one_line_error(code, err, "expected [B, 3, 64, 64]")
    assert not (tmp_path / "c").exists()


# ---------------------------------------------------------------------------------------------
# bad input to trace / compare / info
# ---------------------------------------------------------------------------------------------

def test_trace_refuses_existing_out(student, tmp_path, capsys):
    weights_path, _ = student
    (tmp_path / "b").mkdir()
    code, _, err = run(["trace", weights_path, "--out", tmp_path / "b"], capsys)
    assert_one_line_error(code, err, "already exists")


def test_missing_weights_file(tmp_path, capsys):
    for argv in (["info", tmp_path / "nope.safetensors"],
                 ["trace", tmp_path / "nope.safetensors", "--out", tmp_path / "b"]):
        code, _, err = run(argv, capsys)
        assert_one_line_error(code, err, "nope.safetensors", "no such")
    assert list(tmp_path.iterdir()) == []


def test_truncated_weights_file(student, tmp_path, capsys):
    weights_path, _ = student
    data = weights_path.read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[: len(data) - 1000])
    for argv in (["info", tmp_path / "cut.safetensors"],
                 ["trace", tmp_path / "cut.safetensors", "--out", tmp_path / "b"]):
        code, _, err = run(argv, capsys)
        assert_one_line_error(code, err, "cut.safetensors", "truncated")
    assert not (tmp_path / "b").exists()


def test_weights_file_that_is_not_weights(tmp_path, capsys):
    (tmp_path / "x.safetensors").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(100))
    code, _, err = run(["info", tmp_path / "x.safetensors"], capsys)
    assert_one_line_error(code, err, "x.safetensors")


def test_compare_bad_inputs(student, tmp_path, capsys):
    weights_path, _ = student
    run(["trace", weights_path, "--out", tmp_path / "b"], capsys)
    (tmp_path / "junk.onnx").write_bytes(b"junk")
    (tmp_path / "junk.npz").write_bytes(b"junk")
    (tmp_path / "map.json").write_text("{not json")
    cases = [
        (["compare", tmp_path / "missing", tmp_path / "junk.npz"], ["missing", "no such"]),
        (["compare", tmp_path / "b", tmp_path / "missing.npz"], ["missing.npz", "no such"]),
        (["compare", tmp_path / "b", tmp_path / "junk.onnx"], ["junk.onnx", "onnx"]),
        (["compare", tmp_path / "b", tmp_path / "junk.npz"], ["junk.npz"]),
        (["compare", tmp_path / "b", tmp_path / "junk.npz", "--map", tmp_path / "map.json"], ["map.json", "json"]),
        (["compare", weights_path, tmp_path / "junk.npz"], ["not a bundle"]),
    ]
    for argv, words in cases:
        code, _, err = run(argv, capsys)
        assert code == 2
        assert_one_line_error(code, err, *words)


# ---------------------------------------------------------------------------------------------
# detect
# ---------------------------------------------------------------------------------------------

EXAMPLE = os.path.join(detect.ASSETS_DIR, "example.jpg")


def test_detect_example_writes_json_and_png(student, tmp_path, capsys):
    weights_path, _ = student
    out = tmp_path / "out"
    code, stdout, _ = run(["detect", "--example", "--model", weights_path, "--out", out, "--show-heatmaps"], capsys)
    assert code == 0, stdout
    assert sorted(os.listdir(out)) == ["example.json", "example.maps.png", "example.png"]
    doc = json.loads((out / "example.json").read_text())
    assert doc["width"] == 480 and doc["height"] == 480 and doc["layout"] == "inner51"
    assert doc["model"]["architecture"] == "aam" and doc["num_points"] == 51
    (face,) = doc["faces"]
    assert len(face["landmarks"]) == 51 and len(face["confidence"]) == 51 and len(face["box"]) == 4
    png = cv2.imread(str(out / "example.png"))
    assert png.shape == (480, 480, 3)
    assert not np.array_equal(png[:, :, ::-1], detect.read_image(EXAMPLE))     # something was drawn
    assert cv2.imread(str(out / "example.maps.png")) is not None


def test_detect_with_given_boxes_and_many_images(student, tmp_path, capsys):
    weights_path, _ = student
    img = detect.read_image(EXAMPLE)
    (tmp_path / "a").mkdir()
    cv2.imwrite(str(tmp_path / "a" / "face.png"), img[:, :, ::-1])
    cv2.imwrite(str(tmp_path / "face.png"), img[::-1, :, ::-1])                # same stem, flipped
    boxes = {"face.png": [[150, 160, 300, 310], [10, 10, 60, 60]]}
    (tmp_path / "boxes.json").write_text(json.dumps(boxes))
    code, _, _ = run(["detect", tmp_path / "a" / "face.png", tmp_path / "face.png", "--model", weights_path,
                      "--boxes", tmp_path / "boxes.json", "--detector", "none", "--out", tmp_path / "out"], capsys)
    assert code == 0
    assert sorted(os.listdir(tmp_path / "out")) == ["face-2.json", "face-2.png", "face.json", "face.png"]
    doc = json.loads((tmp_path / "out" / "face.json").read_text())
    assert [f["box"] for f in doc["faces"]] == boxes["face.png"]
    code, _, _ = run(["detect", tmp_path / "face.png", "--box", 150, 10, 300, 160, "--model", weights_path,
                      "--out", tmp_path / "out2"], capsys)
    assert code == 0
    doc = json.loads((tmp_path / "out2" / "face.json").read_text())
    assert doc["faces"][0]["box"] == [150, 10, 300, 160] and doc["detector"] == "given boxes"


def _bad_images(tmp_path):
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "empty.png").write_bytes(b"")
    cv2.imwrite(str(tmp_path / "tiny.png"), np.zeros((1, 1, 3), np.uint8))
    cv2.imwrite(str(tmp_path / "blank.png"), np.full((200, 240, 3), 128, np.uint8))
    return [
        (tmp_path / "missing.jpg", ["missing.jpg", "no such file"]),
        (tmp_path / "notes.txt", ["notes.txt", "not an image"]),
        (tmp_path / "empty.png", ["empty.png", "empty"]),
        (tmp_path / "tiny.png", ["tiny.png", "1x1"]),
        (tmp_path / "blank.png", ["blank.png", "no face found"]),
    ]


def test_detect_bad_images_one_line_error_nothing_written(student, tmp_path, capsys):
    weights_path, _ = student
    for path, words in _bad_images(tmp_path):
        out = tmp_path / f"out-{path.stem}"
        code, _, err = run(["detect", EXAMPLE, path, "--model", weights_path, "--out", out], capsys)
        assert code == 2
        assert_one_line_error(code, err, *words)
        assert not out.exists()                                  # not even the good image's files
    (tmp_path / "existing").mkdir()
    (tmp_path / "existing" / "keep.txt").write_text("mine")
    code, _, err = run(["detect", tmp_path / "blank.png", "--model", weights_path, "--out", tmp_path / "existing"],
                       capsys)
    assert code == 2 and os.listdir(tmp_path / "existing") == ["keep.txt"]


def test_detect_bad_models(student, tmp_path, capsys):
    weights_path, _ = student
    data = weights_path.read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[: len(data) // 2])
    tensors, manifest = weights.load(weights_path)
    manifest["layout"] = "wflw98"                         # the head has 51 points
    weights.save(tmp_path / "other_layout.safetensors", tensors, manifest)
    cases = [
        ("cut.safetensors", ["cut.safetensors", "truncated"]),
        ("nope.safetensors", ["nope.safetensors", "no such"]),
        ("other_layout.safetensors", ["51 points", "wflw98"]),
    ]
    for name, words in cases:
        out = tmp_path / f"out-{name}"
        code, _, err = run(["detect", EXAMPLE, "--model", tmp_path / name, "--out", out], capsys)
        assert_one_line_error(code, err, *words)
        assert not out.exists()


def test_detect_keep_going_writes_the_good_ones(student, tmp_path, capsys):
    weights_path, _ = student
    (tmp_path / "notes.txt").write_text("not an image")
    code, out, err = run(["detect", EXAMPLE, tmp_path / "notes.txt", "--model", weights_path, "--keep-going",
                          "--out", tmp_path / "out"], capsys)
    assert code == 1
    assert sorted(os.listdir(tmp_path / "out")) == ["example.json", "example.png"]
    assert "notes.txt" in err and err.startswith("lmref: error: ")


def test_detect_failure_while_writing_leaves_nothing(student, tmp_path, capsys, monkeypatch):
    weights_path, _ = student
    from lmref import viz
    real, calls = viz.save_png, []

    def failing(obj, path):
        calls.append(path)
        if len(calls) == 2:
            raise OSError("disk full")
        return real(obj, path)

    monkeypatch.setattr(viz, "save_png", failing)
    code, _, err = run(["detect", EXAMPLE, EXAMPLE, "--model", weights_path, "--out", tmp_path / "out"], capsys)
    assert_one_line_error(code, err, "disk full")
    assert not (tmp_path / "out").exists()


def test_detect_without_shipped_models_says_so(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(detect, "MODELS_DIR", str(tmp_path))
    code, _, err = run(["detect", "--example", "--out", tmp_path / "out"], capsys)
    assert_one_line_error(code, err, "no models are shipped")


# ---------------------------------------------------------------------------------------------
# eval
# ---------------------------------------------------------------------------------------------

def test_eval_on_300w_layout_dir(student, tmp_path, capsys):
    """A 300W-style directory written from synthetic faces; the random-weight model is far off, so
    the numbers are only checked for consistency with lmref.metrics."""
    from lmref import metrics
    from lmref.data import readers, synthetic
    weights_path, _ = student
    samples = [synthetic.generate(seed=0, index=i, split="test", size=128) for i in range(3)]
    synthetic.write_300w_layout(tmp_path / "data", samples)
    code, out, _ = run(["eval", "--model", weights_path, "--data", tmp_path / "data", "--out", tmp_path / "ev"], capsys)
    assert code == 0, out
    assert sorted(os.listdir(tmp_path / "ev")) == ["ced.png", "metrics.json", "nme.csv"]
    m = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert m["evaluated"] == 3 and m["layout"] == "inner51" and m["norm"] == "ocular"
    fr, auc = metrics.fr_auc(np.array(m["nmes"]), thr=0.1)
    assert m["fr"] == fr and m["auc"] == auc and np.isclose(m["nme"], np.mean(m["nmes"]))
    assert f"NME {100 * m['nme']:.3f}%" in out
    assert len(readers.read_300w_dir(tmp_path / "data")) == 3


def constant_stud5(path, size=32, seed=0):
    """A Stud5 whose output is one fixed shape whatever the image: every weight 0 except the final
    layer's bias, (x, y) per iBUG-68 point in [-0.5, 0.5] of the crop. -> that [68, 2] shape."""
    from lmref.models import stud5
    cfg = stud5.Config(channels=(4, 4, 4, 4, 4))
    tensors = {k: np.zeros(s, np.float32) for k, s in stud5.param_shapes(cfg).items()}
    for k in tensors:
        if k.endswith("running_var") or k.endswith("bn.weight"):
            tensors[k][:] = 1
    shape = np.random.default_rng(seed).uniform(-0.5, 0.5, (68, 2))
    tensors["fc.bias"] = shape.reshape(-1).astype(np.float32)
    import dataclasses
    manifest = {"format_version": 1, "architecture": "stud5", "config": json.loads(json.dumps(dataclasses.asdict(cfg))),
                "layout": "ibug68", "training": "constant output (test)",
                "input": {"size": [size, size], "channels": 1, "color": "GRAY", "mean": [0.0], "std": [1.0]}}
    weights.save(path, tensors, manifest)
    return shape.astype(np.float32).astype(np.float64)


def test_eval_nme_is_the_hand_computed_error(tmp_path, capsys):
    """eval on predictions whose error is known: a model that always outputs one shape s in [-1, 1]
    crop coordinates puts point k at crop pixel ((s_k + 1) S - 1)/2, i.e. at that point mapped back
    through the crop of the ground-truth box; the NME is then computed here by hand (mean point
    distance over the outer-eye-corner distance 36-45) and eval must report exactly it."""
    from lmref.data import readers, synthetic, transforms
    S = 32
    shape = constant_stud5(tmp_path / "const.safetensors", S)
    samples = [synthetic.generate(seed=0, index=i, split="test", size=128) for i in range(3)]
    synthetic.write_300w_layout(tmp_path / "data", samples)
    code, out, _ = run(["eval", "--model", tmp_path / "const.safetensors", "--data", tmp_path / "data",
                        "--out", tmp_path / "ev"], capsys)
    assert code == 0, out
    m = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    expected = []
    for ann in readers.read_300w_dir(tmp_path / "data"):
        gt = np.asarray(ann.landmarks, np.float64)
        M = transforms.crop_matrix(transforms.landmark_box(gt), S)
        in_crop = ((shape + 1) * S - 1) / 2                                     # [68, 2] crop pixels
        back = np.linalg.inv(np.vstack([M, [0, 0, 1]]))                         # crop -> image
        pred = in_crop @ back[:2, :2].T + back[:2, 2]                           # [68, 2] image pixels
        err = np.sqrt(((pred - gt) ** 2).sum(axis=1)).mean()
        expected.append(err / np.sqrt(((gt[36] - gt[45]) ** 2).sum()))
    assert m["layout"] == "ibug68" and m["norm"] == "ocular" and m["evaluated"] == 3
    np.testing.assert_allclose(m["nmes"], expected, rtol=1e-5)                  # float32 model, float64 maths
    np.testing.assert_allclose(m["nme"], np.mean(expected), rtol=1e-5)
    assert 0.05 < min(expected) and max(expected) < 2                            # a real, not a degenerate, error


def test_eval_bad_inputs(student, tmp_path, capsys):
    weights_path, _ = student
    (tmp_path / "empty").mkdir()
    tensors, manifest = weights.load(weights_path)
    code, _, err = run(["eval", "--model", weights_path, "--data", tmp_path / "nowhere"], capsys)
    assert_one_line_error(code, err, "no such directory")
    code, _, err = run(["eval", "--model", weights_path, "--data", tmp_path / "empty", "--out", tmp_path / "ev"],
                       capsys)
    assert_one_line_error(code, err, "no annotated images")
    assert not (tmp_path / "ev").exists()
    # a 98-point dataset for a 51-point model
    from lmref.data import readers
    img = np.zeros((64, 64, 3), np.uint8)
    readers.write_image(tmp_path / "w.png", img)
    pts = np.random.default_rng(0).uniform(10, 50, (98, 2))
    line = " ".join(f"{v:.3f}" for v in pts.ravel()) + " 10 10 50 50 0 0 0 0 0 0 w.png"
    (tmp_path / "wflw").mkdir()
    (tmp_path / "wflw" / "list_98pt_rect_attr_test.txt").write_text(line + "\n")
    readers.write_image(tmp_path / "wflw" / "w.png", img)
    code, _, err = run(["eval", "--model", weights_path, "--data", tmp_path / "wflw"], capsys)
    assert_one_line_error(code, err, "inner51", "98-point")


def test_eval_synthetic_version(student, tmp_path, capsys):
    """--version picks the synthetic renderer (version 3: the photographic faces); the summary names it, and
    a version that does not exist, or --version on a directory, is a one-line error."""
    weights_path, _ = student
    nmes = {}
    for v in (2, 3):
        code, out, _ = run(["eval", "--model", weights_path, "--data", "synthetic", "--n", 2, "--version", v,
                            "--out", tmp_path / f"v{v}"], capsys)
        assert code == 0 and f"v{v})" in out
        nmes[v] = json.loads((tmp_path / f"v{v}" / "metrics.json").read_text())["nmes"]
    assert nmes[2] != nmes[3]                   # the same faces, drawn by another renderer
    code, _, err = run(["eval", "--model", weights_path, "--data", "synthetic", "--n", 2, "--version", 9], capsys)
    assert_one_line_error(code, err, "synthetic versions are 2, 3")
    (tmp_path / "d").mkdir()
    code, _, err = run(["eval", "--model", weights_path, "--data", tmp_path / "d", "--version", 3], capsys)
    assert_one_line_error(code, err, "only for --data synthetic")


def test_trace_from_an_image_uses_the_landmarker_crop(student, tmp_path, capsys):
    weights_path, _ = student
    code, _, _ = run(["trace", weights_path, "--input", EXAMPLE, "--out", tmp_path / "b.npz"], capsys)
    assert code == 0
    b = B.load(tmp_path / "b.npz")
    x, faces = detect.Landmarker(weights_path).prepare(EXAMPLE)
    np.testing.assert_array_equal(b.input, x[:1])
    assert b.manifest["input_source"]["box"] == faces[0].box.tolist()
    cv2.imwrite(str(tmp_path / "blank.png"), np.full((100, 100, 3), 128, np.uint8))
    code, _, err = run(["trace", weights_path, "--input", tmp_path / "blank.png", "--out", tmp_path / "c"], capsys)
    assert_one_line_error(code, err, "no face found")
    assert not (tmp_path / "c").exists()
    code, _, _ = run(["trace", weights_path, "--input", tmp_path / "blank.png", "--box", 10, 10, 90, 90,
                      "--out", tmp_path / "c"], capsys)
    assert code == 0
