"""Backbone + AAM head (the ICME 2024 student): parameter count, outputs and their conventions,
lmref <-> torch parity through exported random weights, trace names.

Tolerances.  float64: rtol 1e-10 (conftest).  float32: the two implementations sum in different
orders through ~50 layers and an InstanceNorm, so fused heatmaps are compared with
|Δ| <= 1e-4 · max|H'| and coordinates with |Δ| <= 1e-3 input pixels (measured: <= 5e-4 px at
256x256 with random weights, whose flat heatmaps make the soft-argmax ratio most sensitive).
"""
import numpy as np
import pytest
import torch
from conftest import assert_close
from hypothesis import given
from hypothesis import strategies as st

from lmref import landmarks, ops
from lmref.models import aam_head as la
from lmref.models import mobilevitv2 as lm
from lmref.trace import trace
from lmref.weights import load_model
from torch_impl.export import export, randomize_norms_
from torch_impl.models import aam_head as ta

PX_TOL_F32 = 1e-3        # input pixels
MAP_TOL_F32 = 1e-4       # relative to the map's largest value


def student_config(width=0.5, **kw):
    kw.setdefault("layout", "inner51")
    return la.Config(backbone="mobilevitv2", backbone_config={"width_multiplier": width}, **kw)


def random_model(cfg, dtype=torch.float64, seed=0):
    torch.manual_seed(seed)
    return randomize_norms_(ta.AAM(cfg), seed).to(dtype).eval()


def run_both(cfg, size, dtype, tmp_path, seed=0, batch=1):
    """Export a random torch model, load it in lmref, run both on the same input."""
    tdt = torch.float64 if dtype == np.float64 else torch.float32
    model = random_model(cfg, tdt, seed)
    path = tmp_path / "aam.safetensors"
    export(model, path, "aam", cfg, dtype=tdt)
    lmodel = load_model(path, dtype=dtype)
    channels = lmodel.manifest["input"]["channels"]
    x = np.random.default_rng(seed + 1).standard_normal((batch, channels, *size)).astype(dtype)
    with torch.no_grad():
        expected = model(torch.from_numpy(x))
    return lmodel(x), expected


def test_student_parameter_count_is_the_papers():
    model = ta.AAM(student_config())
    assert sum(p.numel() for p in model.parameters()) == 1_141_863          # the paper's 1.1419 M
    head = sum(p.numel() for p in model.head.parameters())
    assert head == (256 + 1) * (51 + 51 + 8) == 28_270
    assert sum(p.numel() for p in model.backbone.parameters()) == 1_113_593
    sd = model.state_dict()
    assert {k: tuple(v.shape) for k, v in sd.items() if not k.endswith("num_batches_tracked")} \
        == la.param_shapes(student_config())
    assert not any(k.startswith("head.e2p") for k in sd)      # the E2P matrix comes from the layout


@pytest.mark.parametrize("size, grid", [((256, 256), (64, 64)), ((128, 128), (32, 32)),
                                        ((97, 97), (25, 25)), ((250, 130), (63, 33))])
def test_heatmap_grid_is_stride_4(size, grid):
    cfg = student_config()
    assert la.heatmap_size(cfg, *size) == grid
    assert la.heatmap_size(student_config(heatmap_size=(48, 40)), *size) == (48, 40)
    if size == (97, 97):
        with torch.no_grad():
            out = ta.AAM(cfg).eval()(torch.zeros(1, 3, *size))
        assert tuple(out["fusion_heatmaps"].shape) == (1, 51, *grid)
        assert tuple(out["edgemaps"].shape) == (1, 8, *grid)


@pytest.mark.parametrize("width", [0.5, 0.75, 1.0])
@pytest.mark.parametrize("size", [(256, 256), (128, 128), (97, 97)])
def test_student_parity_float64(width, size, tmp_path):
    got, expected = run_both(student_config(width), size, np.float64, tmp_path)
    assert_close(got["fusion_heatmaps"], expected["fusion_heatmaps"])
    assert_close(got["coords"], expected["coords"])
    assert_close(got["landmarks"], expected["landmarks"])
    for k in ("heatmaps", "pointmaps", "edgemaps", "features"):
        assert_close(got[k], expected[k])


@pytest.mark.parametrize("width", [0.5, 0.75, 1.0])
@pytest.mark.parametrize("size", [(256, 256), (128, 128), (97, 97)])
def test_student_parity_float32(width, size, tmp_path):
    got, expected = run_both(student_config(width), size, np.float32, tmp_path)
    fused = expected["fusion_heatmaps"]
    assert_close(got["fusion_heatmaps"], fused, rtol=0, atol=MAP_TOL_F32 * float(fused.abs().max()))
    assert_close(got["landmarks"], expected["landmarks"], rtol=0, atol=PX_TOL_F32)


def test_float32_lmref_is_as_close_to_float64_as_torch_float32(tmp_path):
    """The float32 differences are float32 rounding, not a discrepancy: against the float64 result,
    lmref's float32 landmarks are no further off than torch's own float32 ones (x2 slack)."""
    cfg = student_config()
    truth = random_model(cfg, torch.float64)
    got, t32 = run_both(cfg, (128, 128), np.float32, tmp_path)
    x = np.random.default_rng(1).standard_normal((1, 3, 128, 128)).astype(np.float32)   # run_both's input
    with torch.no_grad():
        t64 = truth(torch.from_numpy(x.astype(np.float64)))["landmarks"].numpy()
    err_torch = np.abs(t32["landmarks"].numpy() - t64).max()
    err_lmref = np.abs(got["landmarks"] - t64).max()
    assert 0 < err_lmref <= 2 * err_torch < PX_TOL_F32


def test_parity_rank5_batch2_odd_rectangle(tmp_path):
    cfg = la.Config(backbone_config={"width_multiplier": 0.5, "rank5_patches": True})
    got, expected = run_both(cfg, (75, 101), np.float64, tmp_path, seed=4, batch=2)
    assert_close(got["fusion_heatmaps"], expected["fusion_heatmaps"])
    assert_close(got["landmarks"], expected["landmarks"])


@pytest.mark.parametrize("options", [
    dict(upsample_mode="nearest"),
    dict(align_corners=True),
    dict(soft_argmax="softmax", softmax_beta=3.0),
    dict(heatmap_size=(20, 24)),
    dict(layout="wflw98"),          # pupils on no edge: E2P bias 1
    dict(layout="cofw29"),          # mouth corners on two edges: E2P weight 2
])
def test_head_options_parity(options, tmp_path):
    got, expected = run_both(student_config(**options), (64, 64), np.float64, tmp_path, seed=2)
    for k in ("fusion_heatmaps", "coords", "landmarks"):
        assert_close(got[k], expected[k])


def test_outputs_follow_the_written_conventions():
    """Fused maps = E2P(E)·P·H with E2P from the layout; coordinates = STAR's decoder on the fused
    maps; landmarks = ((x̂ + 1)·W − 1)/2 — each recomputed here from the other outputs."""
    cfg = student_config(layout="wflw98")
    model = random_model(cfg, seed=5)
    x = torch.randn(2, 3, 64, 96, dtype=torch.float64)
    with torch.no_grad():
        out = {k: v.numpy() for k, v in model(x).items()}
    M, b = landmarks.get("wflw98").edge_matrix()
    e2p = np.einsum("pe,behw->bphw", M, out["edgemaps"]) + b[:, None, None]
    np.testing.assert_allclose(out["fusion_heatmaps"], e2p * out["pointmaps"] * out["heatmaps"], rtol=1e-12)
    h, w = out["fusion_heatmaps"].shape[2:]
    assert (h, w) == (16, 24)
    X, Y = np.meshgrid(np.linspace(-1, 1, w), np.linspace(-1, 1, h))
    H = out["fusion_heatmaps"]
    S = np.maximum(H.sum(axis=(2, 3)), 1e-6)
    star = np.stack([(H * X).sum(axis=(2, 3)) / S, (H * Y).sum(axis=(2, 3)) / S], axis=-1)
    np.testing.assert_allclose(out["coords"], star, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(out["landmarks"][..., 0], ((out["coords"][..., 0] + 1) * 96 - 1) / 2, rtol=1e-12)
    np.testing.assert_allclose(out["landmarks"][..., 1], ((out["coords"][..., 1] + 1) * 64 - 1) / 2, rtol=1e-12)
    assert out["heatmaps"].min() >= 0 and 0 < out["pointmaps"].min() and out["edgemaps"].max() < 1
    # 96 px -> 3 columns at stage 4, resized up to 4 by the MobileViTv2 block (upstream behaviour)
    assert out["features"].shape == (2, 256, 2, 4) == (2, 256, *lm.output_size(lm.Config(), 64, 96))


@given(b=st.integers(1, 2), n=st.integers(1, 3), h=st.integers(2, 7), w=st.integers(2, 7),
       seed=st.integers(0, 2**31), method=st.sampled_from(["star", "softmax"]),
       dtype=st.sampled_from([np.float32, np.float64]))
def test_torch_soft_argmax_matches_lmref_op(b, n, h, w, seed, method, dtype):
    hm = np.abs(np.random.default_rng(seed).standard_normal((b, n, h, w))).astype(dtype)
    beta = 2.0 if method == "softmax" else 1.0
    got = ta.soft_argmax(torch.from_numpy(hm), method, beta)
    assert_close(ops.soft_argmax(hm, method=method, beta=beta), got)
    coords = np.random.default_rng(seed).uniform(-1, 1, (b, n, 2)).astype(dtype)
    assert_close(ops.normalized_to_pixels(coords, w * 4, h * 4),
                 ta.normalized_to_pixels(torch.from_numpy(coords), w * 4, h * 4))


def test_any_backbone_tiny_swinv2(tmp_path):
    """The head is generic: a (tiny) SwinV2 backbone, 68 points / 9 edges."""
    swin = {"img_size": [64, 64], "embed_dim": 8, "depths": [1, 1], "num_heads": [1, 2], "window_size": [4, 4]}
    cfg = la.Config(backbone="swinv2", backbone_config=swin, layout="ibug68")
    assert la.num_features(cfg) == 16
    got, expected = run_both(cfg, (64, 64), np.float64, tmp_path, seed=6)
    assert got["fusion_heatmaps"].shape == (1, 68, 16, 16)
    assert_close(got["fusion_heatmaps"], expected["fusion_heatmaps"])
    assert_close(got["landmarks"], expected["landmarks"])


def test_student_trace_lists_every_op_with_state_dict_names():
    cfg = student_config()
    shapes = la.param_shapes(cfg)
    params = {k: np.full(s, 0.01) for k, s in shapes.items()}
    from lmref.weights import unflatten
    with trace() as t:
        la.forward(unflatten(params), np.zeros((1, 3, 64, 64)), cfg)
    with trace() as tb:
        lm.forward(unflatten({k[9:]: v for k, v in params.items() if k.startswith("backbone.")}),
                   np.zeros((1, 3, 64, 64)), lm.Config(width_multiplier=0.5))
    top = [r for r in t if "/" not in r.name]
    names = [r.name for r in top]
    assert names == ["backbone." + n for n in tb.names() if "/" not in n] + [
        "head:interpolate", "head.out_heatmaps:conv2d", "head.heatmap_act:instance_norm",
        "head.heatmap_act:relu", "head.out_pointmaps:conv2d", "head.out_pointmaps:sigmoid",
        "head.out_edgemaps:conv2d", "head.out_edgemaps:sigmoid", "head.e2p:aam_fusion",
        "head.decoder:soft_argmax"]
    # every weight-carrying op is named after the state-dict keys it reads, with their shapes
    suffix = {"conv2d": "weight", "batch_norm": "running_mean", "group_norm": "weight",
              "separable_self_attention": "qkv_proj.weight"}
    used = set()
    for r in top:
        if r.op in suffix:
            key = r.name.split(":")[0] + "." + suffix[r.op]
            assert key in shapes, r.name
            assert list(shapes[key]) in r.inputs, (r.name, r.inputs)
            used.add(key.rsplit(".", 2 if r.op == "separable_self_attention" else 1)[0])
    # ... and every state-dict key belongs to one of those ops
    assert all(k.rsplit(".", 1)[0] in used or k.rsplit(".", 2)[0] in used for k in shapes)


def test_config_errors():
    with pytest.raises(ValueError, match="backbone"):
        la.Config(backbone="nope")
    with pytest.raises(KeyError, match="layout"):
        la.Config(layout="nope")
    for bad in (dict(upsample_mode="bicubic"), dict(upsample_mode="nearest", align_corners=True),
                dict(soft_argmax="argmax"), dict(heatmap_stride=0), dict(heatmap_size=(1, 8)),
                dict(softmax_beta=0.0), dict(backbone_config={"width_multiplier": -1})):
        with pytest.raises(ValueError):
            la.Config(**bad)
    with pytest.raises(TypeError):
        la.Config(backbone_config={"no_such_field": 1})
    # a dataclass backbone config is stored as a dict (JSON-ready for the manifest)
    cfg = la.Config(backbone_config=lm.Config(width_multiplier=0.75))
    assert cfg.backbone_config == {"width_multiplier": 0.75, "in_chans": 3, "patch_size": 2, "rank5_patches": False}
    with pytest.raises(ValueError, match="heatmap grid"):
        la.heatmap_size(student_config(), 4, 64)
