"""MobileViT-v2 backbone: timm's keys and parameter counts, both unfold/fold forms, and lmref <-> torch
parity through exported random weights.

The parameter counts are the ones derived in architectures.md §1.8 (and timm's published 1.37 M /
2.87 M / 4.90 M with the classifier); the representative keys and shapes are copied from §1.9, not
from our own code, so a change in either side shows.
"""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import assert_close
from hypothesis import given
from hypothesis import strategies as st

from lmref import ops
from lmref.models import mobilevitv2 as lm
from lmref.trace import trace
from lmref.weights import load_model, unflatten
from torch_impl.export import export, randomize_norms_
from torch_impl.models import mobilevitv2 as tm

# width -> (backbone parameters without classifier, classifier parameters in timm's 1000-class model)
COUNTS = {0.5: (1_113_593, 257_000), 0.75: (2_481_009, 385_000), 1.0: (4_388_841, 513_000)}


def n_params(model):
    return sum(p.numel() for p in model.parameters())


def random_backbone(cfg, dtype=torch.float64, seed=0):
    torch.manual_seed(seed)
    return randomize_norms_(tm.MobileViTv2(cfg), seed).to(dtype).eval()


@pytest.mark.parametrize("width", sorted(COUNTS))
def test_parameter_counts(width):
    net = tm.MobileViTv2(lm.Config(width_multiplier=width))
    backbone, classifier = COUNTS[width]
    assert n_params(net) == backbone
    # timm publishes 1.37 M / 2.87 M / 4.90 M with the 1000-class classifier
    assert round((backbone + classifier) / 1e6, 2) == {0.5: 1.37, 0.75: 2.87, 1.0: 4.90}[width]
    assert net.num_features == lm.num_features(net.cfg) == {0.5: 256, 0.75: 384, 1.0: 512}[width]


def test_parameter_count_per_stage_at_half_width():
    net = tm.MobileViTv2(lm.Config(width_multiplier=0.5))
    per_part = {"stem": n_params(net.stem), **{f"stages.{i}": n_params(s) for i, s in enumerate(net.stages)}}
    assert per_part == {"stem": 464, "stages.0": 2016, "stages.1": 25280, "stages.2": 103426,
                        "stages.3": 387460, "stages.4": 594947}


@pytest.mark.parametrize("width", sorted(COUNTS))
def test_state_dict_keys_match_lmref_param_shapes(width):
    cfg = lm.Config(width_multiplier=width)
    sd = tm.MobileViTv2(cfg).state_dict()
    shapes = {k: tuple(v.shape) for k, v in sd.items() if not k.endswith("num_batches_tracked")}
    assert shapes == lm.param_shapes(cfg)
    assert len(sd) == 267       # timm's 269 state-dict tensors minus head.fc.weight / head.fc.bias


def test_timm_keys_from_the_fact_sheet():
    """Keys and shapes of timm ``mobilevitv2_050`` as listed in architectures.md §1.9."""
    sd = tm.MobileViTv2(lm.Config(width_multiplier=0.5)).state_dict()
    expected = {
        "stem.conv.weight": (16, 3, 3, 3), "stem.bn.running_var": (16,),
        "stages.0.0.conv1_1x1.conv.weight": (32, 16, 1, 1),
        "stages.0.0.conv2_kxk.conv.weight": (32, 1, 3, 3),
        "stages.0.0.conv3_1x1.conv.weight": (32, 32, 1, 1),
        "stages.1.1.conv1_1x1.conv.weight": (128, 64, 1, 1),
        "stages.2.1.conv_kxk.conv.weight": (128, 1, 3, 3), "stages.2.1.conv_kxk.bn.weight": (128,),
        "stages.2.1.conv_1x1.weight": (64, 128, 1, 1),
        "stages.2.1.transformer.1.norm1.weight": (64,),
        "stages.2.1.transformer.1.attn.qkv_proj.weight": (129, 64, 1, 1),
        "stages.2.1.transformer.1.attn.qkv_proj.bias": (129,),
        "stages.2.1.transformer.0.attn.out_proj.weight": (64, 64, 1, 1),
        "stages.2.1.transformer.0.norm2.bias": (64,),
        "stages.2.1.transformer.0.mlp.fc1.weight": (128, 64, 1, 1),
        "stages.2.1.transformer.0.mlp.fc2.weight": (64, 128, 1, 1),
        "stages.2.1.norm.weight": (64,),
        "stages.2.1.conv_proj.conv.weight": (128, 64, 1, 1),
        "stages.3.1.transformer.3.attn.qkv_proj.weight": (193, 96, 1, 1),
        "stages.4.1.transformer.2.attn.qkv_proj.weight": (257, 128, 1, 1),
    }
    assert {k: tuple(sd[k].shape) for k in expected} == expected
    # no bias on conv_1x1, no fusion conv (MobileViT-v1 has one), no classifier, no transformer.3 in stage 4
    for absent in ("stages.2.1.conv_1x1.bias", "stages.2.1.conv_fusion.conv.weight", "head.fc.weight",
                   "stages.4.1.transformer.3.norm1.weight", "final_conv.conv.weight"):
        assert absent not in sd


def test_timm_state_dict_with_classifier_loads_after_dropping_it():
    cfg = lm.Config(width_multiplier=0.5)
    src = random_backbone(cfg, torch.float32, seed=3)
    timm_sd = {**src.state_dict(), "head.fc.weight": torch.zeros(1000, 256), "head.fc.bias": torch.zeros(1000)}
    dst = tm.MobileViTv2(cfg)
    with pytest.raises(RuntimeError):
        dst.load_state_dict(timm_sd)                       # strict: the classifier does not fit
    dst.load_state_dict(tm.without_classifier(timm_sd))    # strict, no renaming
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(dst.eval()(x), src(x), rtol=0, atol=0)


@given(ph=st.integers(1, 3), pw=st.integers(1, 3), nh=st.integers(1, 4), nw=st.integers(1, 4),
       c=st.integers(1, 3), seed=st.integers(0, 2**31), rank5=st.booleans())
def test_torch_unfold_fold_match_lmref_and_F_unfold(ph, pw, nh, nw, c, seed, rank5):
    x = np.random.default_rng(seed).standard_normal((2, c, nh * ph, nw * pw))
    t = torch.from_numpy(x)
    patches = tm.unfold_patches(t, ph, pw, rank5)
    reference = F.unfold(t, (ph, pw), stride=(ph, pw)).reshape(2, c, ph * pw, nh * nw)   # cvnets' path
    assert torch.equal(patches, reference)
    assert np.array_equal(patches.numpy(), ops.unfold_patches(x, ph, pw, rank5=rank5))
    assert torch.equal(tm.fold_patches(patches, nh * ph, nw * pw, ph, pw, rank5), t)


@pytest.mark.parametrize("size", [64, 97])
def test_rank5_and_6d_patch_forms_give_identical_outputs(size):
    cfg = lm.Config(width_multiplier=0.5)
    net = random_backbone(cfg)
    x = torch.randn(1, 3, size, size, dtype=torch.float64)
    with torch.no_grad():
        y6 = net(x)
        y5 = net.set_rank5_patches(True)(x)
    assert net.cfg.rank5_patches and not cfg.rank5_patches       # the caller's config is not changed
    assert torch.equal(y5, y6)


@pytest.mark.parametrize("size, expected", [(256, (8, 8)), (128, (4, 4)), (200, (8, 8)), (97, (4, 4)),
                                            ((250, 130), (8, 6))])
def test_output_size_and_upstream_resize_of_odd_maps(size, expected):
    h, w = (size, size) if isinstance(size, int) else size
    cfg = lm.Config(width_multiplier=0.5)
    assert lm.output_size(cfg, h, w) == expected
    net = tm.MobileViTv2(cfg).eval()
    with torch.no_grad():
        assert tuple(net(torch.zeros(1, 3, h, w)).shape) == (1, 256, *expected)


def _parity(cfg, size, dtype, tmp_path, seed=0, batch=1):
    tdt = torch.float64 if dtype == np.float64 else torch.float32
    net = random_backbone(cfg, tdt, seed)
    path = tmp_path / "backbone.safetensors"
    export(net, path, lm.ARCH, cfg, dtype=tdt)
    model = load_model(path, dtype=dtype)
    x = np.random.default_rng(seed).standard_normal((batch, cfg.in_chans, *size)).astype(dtype)
    with torch.no_grad():
        expected = net(torch.from_numpy(x))
    return model(x), expected


@pytest.mark.parametrize("width, size, rank5", [(0.5, (128, 128), False), (0.75, (97, 97), True),
                                                (1.0, (64, 96), False)])
def test_parity_float64(width, size, rank5, tmp_path):
    got, expected = _parity(lm.Config(width_multiplier=width, rank5_patches=rank5), size, np.float64, tmp_path)
    assert_close(got, expected)


def test_parity_float32_grayscale_batch2(tmp_path):
    got, expected = _parity(lm.Config(width_multiplier=0.5, in_chans=1), (96, 80), np.float32, tmp_path, batch=2)
    # float32: 45 layers deep; features agree to a few ulp of their scale
    assert_close(got, expected, rtol=1e-4, atol=1e-4 * float(expected.abs().max()))


def test_trace_names_are_state_dict_names():
    cfg = lm.Config(width_multiplier=0.5)
    params = {k: np.zeros(s) for k, s in lm.param_shapes(cfg).items()}
    with trace() as t:
        lm.forward(unflatten(params), np.zeros((1, 3, 64, 64)), cfg)
    names = [r.name for r in t if "/" not in r.name]
    expected = ["stem.conv:conv2d", "stem.bn:batch_norm", "stem:silu"]
    for i, blocks in enumerate(lm.stage_plan(cfg)):
        for j, b in enumerate(blocks):
            p = f"stages.{i}.{j}"
            if b["type"] == "mv2":
                expected += [f"{p}.conv1_1x1.conv:conv2d", f"{p}.conv1_1x1.bn:batch_norm", f"{p}.conv1_1x1:silu",
                             f"{p}.conv2_kxk.conv:conv2d", f"{p}.conv2_kxk.bn:batch_norm", f"{p}.conv2_kxk:silu",
                             f"{p}.conv3_1x1.conv:conv2d", f"{p}.conv3_1x1.bn:batch_norm"]
                continue
            expected += [f"{p}.conv_kxk.conv:conv2d", f"{p}.conv_kxk.bn:batch_norm", f"{p}.conv_kxk:silu",
                         f"{p}.conv_1x1:conv2d", f"{p}:unfold_patches"]
            for k in range(b["depth"]):
                q = f"{p}.transformer.{k}"
                expected += [f"{q}.norm1:group_norm", f"{q}.attn:separable_self_attention",
                             f"{q}.norm2:group_norm", f"{q}.mlp.fc1:conv2d", f"{q}.mlp:silu", f"{q}.mlp.fc2:conv2d"]
            expected += [f"{p}.norm:group_norm", f"{p}:fold_patches",
                         f"{p}.conv_proj.conv:conv2d", f"{p}.conv_proj.bn:batch_norm"]
    assert names == expected


def test_bad_input_raises():
    cfg = lm.Config(width_multiplier=0.5)
    params = {k: np.zeros(s, np.float32) for k, s in lm.param_shapes(cfg).items()}
    with pytest.raises(ValueError, match="input channels"):
        lm.forward(unflatten(params), np.zeros((1, 1, 32, 32), np.float32), cfg)
    with pytest.raises(ValueError):
        tm.MobileViTv2(cfg)(torch.zeros(1, 1, 32, 32))
    for bad in (dict(width_multiplier=0), dict(width_multiplier="0.5"), dict(patch_size=0),
                dict(rank5_patches=1), dict(in_chans=2.0)):
        with pytest.raises(ValueError):
            lm.Config(**bad)
