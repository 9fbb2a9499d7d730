"""torch_impl.export: lmref weights files (function and command line) and ONNX (opset 17), including
the rank <= 5 graph of the TFLite-friendly unfold/fold."""
import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from conftest import assert_close

from lmref.models import aam_head as la
from lmref.weights import WeightsError, load, load_model
from torch_impl import export as ex
from torch_impl.models import aam_head as ta
from torch_impl.models import build


def student(rank5=False, seed=0, width=0.5):
    torch.manual_seed(seed)
    cfg = la.Config(backbone_config={"width_multiplier": width, "rank5_patches": rank5})
    return ex.randomize_norms_(ta.AAM(cfg), seed).eval()


def test_export_writes_state_dict_and_manifest(tmp_path):
    model = student()
    inp = {"size": [256, 256], "channels": 3, "color": "BGR", "mean": [0.5] * 3, "std": [0.5] * 3}
    manifest = ex.export(model, tmp_path / "s.safetensors", "aam", model.cfg, input=inp, training="test run",
                         note="kept")
    tensors, read = load(tmp_path / "s.safetensors")
    assert read == manifest
    assert read["architecture"] == "aam" and read["layout"] == "inner51" and read["input"] == inp
    assert read["training"] == "test run" and read["note"] == "kept" and read["format_version"] == 1
    assert read["config"]["backbone_config"]["width_multiplier"] == 0.5
    sd = {k: v for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    assert set(tensors) == set(sd)
    for k, v in sd.items():
        assert tensors[k].dtype == np.float32 and np.array_equal(tensors[k], v.numpy()), k
    m = load_model(tmp_path / "s.safetensors")
    assert m.arch == "aam" and m.config == model.cfg


def test_export_defaults_come_from_the_model(tmp_path):
    model = student()
    manifest = ex.export(model, tmp_path / "s.safetensors", dtype=torch.float64)
    assert manifest["architecture"] == "aam" and manifest["layout"] == "inner51"
    assert manifest["input"] == {"size": [256, 256], "channels": 3, "color": "RGB",
                                 "mean": [0.0] * 3, "std": [1.0] * 3}
    tensors, _ = load(tmp_path / "s.safetensors")
    assert {a.dtype for a in tensors.values()} == {np.dtype(np.float64)}


def test_export_checks_shapes_before_writing(tmp_path):
    model = student(width=0.5)
    path = tmp_path / "bad.safetensors"
    with pytest.raises(WeightsError, match="parameters do not fit"):
        ex.export(model, path, "aam", {"backbone_config": {"width_multiplier": 0.75}})
    assert not path.exists()
    with pytest.raises(TypeError):
        ex.export(model, path, "aam", "not a config")
    with pytest.raises(KeyError):
        ex.export(model, path, "no_such_arch", {})


def test_cli_random_weights_then_lmref_runs_them(tmp_path, capsys):
    out = tmp_path / "cli.safetensors"
    config = {"backbone_config": {"width_multiplier": 0.5, "rank5_patches": True}, "layout": "inner51"}
    assert ex.main(["aam", str(out), "--config", json.dumps(config), "--seed", "3", "--randomize-norms",
                    "--dtype", "float64", "--input-size", "64", "64"]) == 0
    assert "1,141,863 parameters" in capsys.readouterr().out
    # the same model rebuilt here
    torch.manual_seed(3)
    model = ex.randomize_norms_(build("aam", config), 3).double().eval()
    lmodel = load_model(out, dtype=np.float64)
    assert lmodel.manifest["input"]["size"] == [64, 64]
    x = np.random.default_rng(0).standard_normal((1, 3, 64, 64))
    with torch.no_grad():
        expected = model(torch.from_numpy(x))
    got = lmodel(x)
    assert_close(got["fusion_heatmaps"], expected["fusion_heatmaps"])
    assert_close(got["landmarks"], expected["landmarks"])


def test_cli_checkpoint_and_config_file(tmp_path):
    cfg_file = tmp_path / "cfg.json"
    cfg_file.write_text(json.dumps({"width_multiplier": 0.5, "in_chans": 1}))
    src = build("mobilevitv2", json.loads(cfg_file.read_text()))
    ex.randomize_norms_(src, 7)
    ckpt = tmp_path / "ckpt.pt"
    torch.save({"state_dict": src.state_dict(), "epoch": 3}, ckpt)
    out = tmp_path / "bb.safetensors"
    assert ex.main(["mobilevitv2", str(out), "--config", str(cfg_file), "--checkpoint", str(ckpt)]) == 0
    tensors, manifest = load(out)
    assert manifest["input"]["channels"] == 1 and manifest["input"]["color"] == "GRAY"
    assert manifest["training"] == "checkpoint ckpt.pt"
    for k, v in src.state_dict().items():
        if not k.endswith("num_batches_tracked"):
            assert np.array_equal(tensors[k], v.numpy()), k
    # a checkpoint of another model is refused, naming the problem
    torch.save(build("mobilevitv2", {"width_multiplier": 0.75}).state_dict(), ckpt)
    with pytest.raises((ValueError, RuntimeError)):
        ex.main(["mobilevitv2", str(out), "--config", str(cfg_file), "--checkpoint", str(ckpt)])


def test_build_rejects_bad_configs():
    with pytest.raises(KeyError):
        build("no_such_arch")
    with pytest.raises(TypeError):
        build("aam", 0.5)
    with pytest.raises(TypeError):
        build("mobilevitv2", {"no_such_field": 1})


def _run_onnx(path, x):
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(None, {"input": x})))


def test_rank5_onnx_has_no_tensor_above_rank_5_and_matches_torch(tmp_path):
    model = student(rank5=True, seed=1)
    path = tmp_path / "student_rank5.onnx"
    names = ex.export_onnx(model, path, (1, 3, 128, 128))
    assert names == ["fusion_heatmaps", "heatmaps", "pointmaps", "edgemaps", "coords", "landmarks", "features"]
    graph = onnx.load(str(path))
    assert graph.opset_import[0].version == 17
    ranks = ex.onnx_value_ranks(path)
    assert len(ranks) > 300 and max(ranks.values()) == 5, sorted(ranks.items(), key=lambda kv: -kv[1])[:5]
    x = np.random.default_rng(2).standard_normal((1, 3, 128, 128)).astype(np.float32)
    got = _run_onnx(path, x)
    with torch.no_grad():
        expected = model(torch.from_numpy(x))
    fused = expected["fusion_heatmaps"]
    assert_close(got["fusion_heatmaps"], fused, rtol=0, atol=1e-4 * float(fused.abs().max()))
    assert_close(got["landmarks"], expected["landmarks"], rtol=0, atol=1e-3)


def test_default_patch_form_onnx_has_rank_6_tensors_and_same_numbers(tmp_path):
    """The rank check can fail: timm's 6-D unfold/fold shows up as rank-6 values.  Both graphs,
    same weights, give the same outputs in onnxruntime."""
    m6 = student(rank5=False, seed=1)
    m5 = student(rank5=True, seed=1)
    ex.export_onnx(m6, tmp_path / "six.onnx", (1, 3, 64, 64))
    ex.export_onnx(m5, tmp_path / "five.onnx", (1, 3, 64, 64))
    r6, r5 = ex.onnx_value_ranks(tmp_path / "six.onnx"), ex.onnx_value_ranks(tmp_path / "five.onnx")
    assert max(r6.values()) == 6 and max(r5.values()) == 5
    x = np.random.default_rng(3).standard_normal((1, 3, 64, 64)).astype(np.float32)
    a, b = _run_onnx(tmp_path / "six.onnx", x), _run_onnx(tmp_path / "five.onnx", x)
    for k in a:
        np.testing.assert_allclose(a[k], b[k], rtol=1e-6, atol=1e-6 * float(np.abs(a[k]).max()))
