"""SwinV2 (the ICME 2024 teacher backbone): timm's keys and parameter counts, shifted-window masks
against a brute-force rule, torch <-> lmref parity through a weight file, and a training smoke test
of the teacher (SwinV2 + AAM head)."""
import math

import numpy as np
import pytest
import torch

from lmref import trace, weights
from lmref.models import swinv2 as L
from tests.conftest import assert_close
from torch_impl.export import export
from torch_impl.models.swinv2 import SwinTransformerV2, SwinTransformerV2Block

TINY = dict(img_size=64, embed_dim=16, depths=(2, 2, 2, 2), num_heads=(2, 2, 4, 4), window_size=4)
# non-square, one-axis shift in stage 1 (map 4 x 8, window 4: shift (0, 2)), with a classifier
TINY_CLS = dict(img_size=(32, 64), embed_dim=8, depths=(2, 2), num_heads=(1, 2), window_size=4, num_classes=5)


def randomize(model, seed=0):
    """Every float parameter and buffer random (the fresh model has zero post-norms, i.e. identity blocks)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * 0.5)
            if name.endswith("logit_scale"):
                p.add_(math.log(10.0))
    return model


# ------------------------------------------------------------------------------------------------
# sizes and keys

@pytest.mark.parametrize("num_classes, expected", [(1000, 87_918_816), (0, 86_893_816)])
def test_swinv2_base_parameter_count(num_classes, expected):
    """SwinV2-B: 87,918,816 parameters with the ImageNet head (timm's published 87.92 M), 86,893,816
    without (the teacher backbone); lmref's param_shapes agree key for key."""
    cfg = L.Config(num_classes=num_classes)
    with torch.device("meta"):
        model = SwinTransformerV2(cfg)
    assert sum(p.numel() for p in model.parameters()) == expected
    sd = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert sd == L.param_shapes(cfg)
    assert list(sd) == list(L.param_shapes(cfg))          # same order as well
    assert sum(math.prod(s) for s in L.param_shapes(cfg).values()) == expected


@pytest.mark.parametrize("name, expected", [("swinv2_tiny_window8_256", 28_347_154),
                                            ("swinv2_tiny_window16_256", 28_347_154),
                                            ("swinv2_small_window8_256", 49_728_418),
                                            ("swinv2_base_window16_256", 87_918_816)])
def test_presets_match_timm_counts(name, expected):
    cfg = L.Config(num_classes=1000, **L.PRESETS[name])
    assert sum(math.prod(s) for s in L.param_shapes(cfg).values()) == expected


def test_timm_key_names_and_non_persistent_buffers():
    cfg = L.Config(num_classes=1000)
    with torch.device("meta"):
        model = SwinTransformerV2(cfg)
    sd = model.state_dict()
    expected = {
        "patch_embed.proj.weight": (128, 3, 4, 4), "patch_embed.norm.bias": (128,),
        "layers.0.blocks.1.attn.logit_scale": (4, 1, 1), "layers.0.blocks.1.attn.q_bias": (128,),
        "layers.0.blocks.1.attn.v_bias": (128,), "layers.0.blocks.1.attn.qkv.weight": (384, 128),
        "layers.0.blocks.1.attn.cpb_mlp.0.weight": (512, 2), "layers.0.blocks.1.attn.cpb_mlp.0.bias": (512,),
        "layers.3.blocks.1.attn.cpb_mlp.2.weight": (32, 512), "layers.3.blocks.1.attn.proj.bias": (1024,),
        "layers.2.blocks.17.mlp.fc1.weight": (2048, 512), "layers.2.blocks.17.norm2.weight": (512,),
        "layers.1.downsample.reduction.weight": (256, 512), "layers.3.downsample.norm.weight": (1024,),
        "norm.weight": (1024,), "head.fc.weight": (1000, 1024), "head.fc.bias": (1000,),
    }
    for k, shape in expected.items():
        assert tuple(sd[k].shape) == shape, k
    assert "layers.0.downsample.reduction.weight" not in sd            # merging starts stages 1..3
    assert "layers.0.blocks.0.attn.cpb_mlp.2.bias" not in sd           # second CPB layer has no bias
    buffers = dict(model.named_buffers())
    for k in ("layers.0.blocks.1.attn.k_bias", "layers.0.blocks.1.attn.relative_coords_table",
              "layers.0.blocks.1.attn.relative_position_index", "layers.0.blocks.1.attn_mask"):
        assert k in buffers and k not in sd
    assert buffers["layers.0.blocks.1.attn_mask"].shape == (64, 64, 64)  # 8x8 windows of 8x8 tokens
    assert model.layers[0].blocks[0].attn_mask is None                   # even blocks do not shift


def test_stage_geometry_swinv2_base_256():
    """At 256 px, window 8: maps 64, 32, 16, 8; the last stage fits one window, so it does not shift.
    Window 16: stages 3 and 4 fit one window (16, 8 -> window 16, 8), no shift there."""
    g = L.stage_geometry(L.Config())
    assert [x["resolution"] for x in g] == [(64, 64), (32, 32), (16, 16), (8, 8)]
    assert [x["window"] for x in g] == [(8, 8)] * 4
    assert [x["shift"] for x in g] == [(4, 4), (4, 4), (4, 4), (0, 0)]
    g = L.stage_geometry(L.Config(window_size=16))
    assert [x["window"] for x in g] == [(16, 16), (16, 16), (16, 16), (8, 8)]
    assert [x["shift"] for x in g] == [(8, 8), (8, 8), (0, 0), (0, 0)]
    assert (L.Config().num_features, L.Config().feature_stride) == (1024, 32)
    assert (L.Config(out_stage=2).num_features, L.Config(out_stage=2).feature_stride) == (512, 16)


# ------------------------------------------------------------------------------------------------
# constant tables against brute force

def brute_force_allowed(resolution, window, shift):
    """allowed[p, q] for tokens p, q of the unrolled map (row-major): may p attend to q?

    The block rolls the map by -shift and attends inside windows of the rolled map.  p and q are in
    one rolled window, and that window did not wrap between them: their rolled offset equals their
    true offset."""
    H, W = resolution
    ii, jj = np.meshgrid(np.arange(H), np.arange(W), indexing="ij")
    i, j = ii.reshape(-1), jj.reshape(-1)                         # true coordinates
    ri, rj = (i - shift[0]) % H, (j - shift[1]) % W               # coordinates in the rolled map
    same_window = ((ri[:, None] // window[0]) == (ri[None, :] // window[0])) & \
                  ((rj[:, None] // window[1]) == (rj[None, :] // window[1]))
    no_wrap = ((ri[:, None] - ri[None, :]) == (i[:, None] - i[None, :])) & \
              ((rj[:, None] - rj[None, :]) == (j[:, None] - j[None, :]))
    return same_window & no_wrap


CASES = [((8, 8), (4, 4), (2, 2)), ((16, 16), (8, 8), (4, 4)), ((8, 4), (4, 4), (2, 0)),
         ((4, 12), (2, 4), (1, 2)), ((6, 6), (3, 3), (1, 1))]


@pytest.mark.parametrize("resolution, window, shift", CASES)
def test_shifted_window_mask_brute_force(resolution, window, shift):
    """mask[w, a, b] == 0 exactly where tokens a, b of rolled window w may attend (else -100)."""
    H, W = resolution
    mask = L.shifted_window_mask(resolution, window, shift)
    nW, N = (H // window[0]) * (W // window[1]), window[0] * window[1]
    assert mask.shape == (nW, N, N) and mask.dtype == np.float32
    assert set(np.unique(mask)) <= {0.0, L.MASK_VALUE}
    allowed = brute_force_allowed(resolution, window, shift)
    # true (unrolled) index of token a of rolled window w
    rolled = np.arange(H * W).reshape(H, W)
    true_index = np.roll(rolled, (-shift[0], -shift[1]), axis=(0, 1))       # rolled map holds these tokens
    tok = L.window_partition(true_index[None, :, :, None], window)[..., 0]  # [nW, N]
    expected = np.where(allowed[tok[:, :, None], tok[:, None, :]], 0.0, L.MASK_VALUE)
    np.testing.assert_array_equal(mask, expected)
    assert (mask != 0).any()                                                # the shift does cut windows


def test_no_shift_no_mask():
    assert L.shifted_window_mask((8, 8), (4, 4), (0, 0)) is None


@pytest.mark.parametrize("window", [(3, 4), (8, 8), (2, 2)])
def test_relative_position_index_and_coords_table(window):
    wh, ww = window
    idx = L.relative_position_index(window)
    table = L.relative_coords_table(window)
    assert table.shape == (1, 2 * wh - 1, 2 * ww - 1, 2) and table.dtype == np.float32
    flat = table.reshape(-1, 2)

    def f(d, m):   # log-spaced coordinate: sign(d) log2(1 + 8|d|/(M-1)) / 3
        return math.copysign(math.log2(1 + 8 * abs(d) / (m - 1)), d) / 3 if d else 0.0

    tokens = [(y, x) for y in range(wh) for x in range(ww)]
    for a, (ya, xa) in enumerate(tokens):
        for b, (yb, xb) in enumerate(tokens):
            dy, dx = ya - yb, xa - xb
            assert idx[a, b] == (dy + wh - 1) * (2 * ww - 1) + (dx + ww - 1)
            np.testing.assert_allclose(flat[idx[a, b]], [f(dy, wh), f(dx, ww)], rtol=1e-6)
    assert abs(table).max() <= math.log2(9) / 3 + 1e-6                     # range +-1.06
    # a pretrained window M' rescales the coordinates: the largest offset M-1 maps to 8 (M-1)/(M'-1)
    t12 = L.relative_coords_table(window, pretrained_window=12)
    np.testing.assert_allclose(t12[0, -1, -1], [math.log2(1 + 8 * (wh - 1) / 11) / 3,
                                                math.log2(1 + 8 * (ww - 1) / 11) / 3], rtol=1e-6)


@pytest.mark.parametrize("resolution, window, shift", [((8, 8), (4, 4), (2, 2)), ((8, 8), (4, 4), (0, 0)),
                                                      ((8, 4), (4, 4), (2, 0))])
def test_block_attends_only_inside_regions(resolution, window, shift):
    """Functional check of roll + partition + mask + reverse: perturbing token q of the block's input
    changes output token p exactly when the brute-force rule lets p attend to q."""
    torch.manual_seed(0)
    H, W = resolution
    C = 8
    geom = dict(dim=C, heads=2, resolution=resolution, window=window, pretrained_window=0)
    blk = randomize(SwinTransformerV2Block(geom, shift)).double().eval()
    x = torch.randn(1, H, W, C, dtype=torch.float64)
    xs = x.repeat(H * W + 1, 1, 1, 1)
    for q in range(H * W):                           # sample q + 1 has token q perturbed
        xs[q + 1, q // W, q % W] += 1.0
    with torch.no_grad():
        y = blk(xs)
    changed = (y[1:] != y[:1]).any(dim=-1).reshape(H * W, H * W).numpy()   # changed[q, p]
    np.testing.assert_array_equal(changed.T, brute_force_allowed(resolution, window, shift))


def test_fresh_blocks_are_identity():
    """timm's init puts the residual post-norms at zero: a fresh block returns its input."""
    model = SwinTransformerV2(L.Config(**TINY)).eval()
    blk = model.layers[0].blocks[1]
    x = torch.randn(2, 16, 16, 16)
    with torch.no_grad():
        assert torch.equal(blk(x), x)


# ------------------------------------------------------------------------------------------------
# parity torch <-> lmref

@pytest.mark.parametrize("kw", [TINY, TINY_CLS], ids=["tiny", "tiny_cls"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_parity_with_torch(kw, dtype, tmp_path):
    cfg = L.Config(**kw)
    tdtype = torch.float64 if dtype == np.float64 else torch.float32
    model = randomize(SwinTransformerV2(cfg)).to(tdtype).eval()
    export(model, tmp_path / "swin.safetensors", dtype=tdtype, input=dict(
        size=list(cfg.img_size), channels=3, color="RGB", mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225]))
    lm = weights.load_model(tmp_path / "swin.safetensors", dtype=dtype)
    assert lm.config == cfg
    x = torch.randn(2, 3, *cfg.img_size, dtype=tdtype)
    with torch.no_grad():
        expected = model(x)
    out = lm(x.numpy())
    # float32: about 30 matmuls/normalisations deep on O(1) random weights; rtol 1e-4 is conftest's
    assert_close(out, expected, dtype)
    if cfg.num_classes:
        assert out.shape == (2, cfg.num_classes)
    else:
        assert out.shape == (2, cfg.num_features, *(s // cfg.feature_stride for s in cfg.img_size))


def test_one_token_wide_map_stays_finite():
    """At 32 px the last map is 1x1 (a 1x1 window): timm's coordinate table would be 0/0 there."""
    cfg = L.Config(img_size=32, embed_dim=8, depths=(1, 1, 1, 2), num_heads=(1, 1, 2, 2), window_size=4)
    assert L.stage_geometry(cfg)[-1]["window"] == (1, 1)
    assert np.array_equal(L.relative_coords_table((1, 1)), np.zeros((1, 1, 1, 2), np.float32))
    model = randomize(SwinTransformerV2(cfg)).double().eval()
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    with torch.no_grad():
        expected = model(x)
    assert expected.shape == (2, 64, 1, 1) and torch.isfinite(expected).all()
    params = weights.unflatten({k: v.numpy() for k, v in model.state_dict().items()})
    assert_close(L.forward(params, x.numpy(), cfg), expected, np.float64)


def test_out_stage_selects_an_earlier_map(tmp_path):
    cfg = L.Config(**{**TINY, "out_stage": 1})
    model = randomize(SwinTransformerV2(cfg)).double().eval()
    assert len(model.layers) == 2 and model.num_features == 32 and model.feature_stride == 8
    x = torch.randn(1, 3, 64, 64, dtype=torch.float64)
    with torch.no_grad():
        expected = model(x)
    assert expected.shape == (1, 32, 8, 8)
    params = weights.unflatten({k: v.numpy() for k, v in model.state_dict().items()})
    assert_close(L.forward(params, x.numpy(), cfg), expected, np.float64)


def test_trace_names_follow_state_dict_keys():
    cfg = L.Config(**TINY)
    model = randomize(SwinTransformerV2(cfg)).double().eval()
    params = weights.unflatten({k: v.numpy() for k, v in model.state_dict().items()})
    with trace() as t:
        L.forward(params, np.zeros((1, 3, 64, 64)), cfg)
    names = t.names()
    for n in ("patch_embed.proj:conv2d", "layers.0.blocks.1.attn.qkv:linear",
              "layers.0.blocks.1.attn.cpb_mlp.0:linear", "layers.1.downsample.reduction:linear",
              "layers.3.blocks.1.mlp.fc1:gelu", "norm:layer_norm"):
        assert n in names, n


# ------------------------------------------------------------------------------------------------
# errors

def test_bad_input_and_config():
    cfg = L.Config(**TINY)
    model = SwinTransformerV2(cfg)
    params = weights.unflatten({k: v.numpy() for k, v in model.state_dict().items()})
    with pytest.raises(ValueError, match="fixed size"):
        model(torch.zeros(1, 3, 96, 96))
    with pytest.raises(ValueError, match="fixed size"):
        L.forward(params, np.zeros((1, 3, 96, 96), np.float32), cfg)
    with pytest.raises(ValueError, match="fixed size"):
        L.forward(params, np.zeros((1, 1, 64, 64), np.float32), cfg)
    with pytest.raises(TypeError):
        L.forward(params, np.zeros((1, 3, 64, 64), np.int64), cfg)
    with pytest.raises(ValueError, match="divisible by num_heads"):
        L.Config(**{**TINY, "num_heads": (3, 2, 4, 4)})
    with pytest.raises(ValueError, match="whole number"):
        L.Config(**{**TINY, "img_size": 48, "window_size": 5})
    with pytest.raises(ValueError, match="even map"):
        L.Config(**{**TINY, "img_size": 40, "window_size": 5})   # maps 10, 5: no merging of 5
    with pytest.raises(ValueError, match="one length"):
        L.Config(**{**TINY, "num_heads": (2, 2, 4)})
    with pytest.raises(ValueError, match="out_stage"):
        L.Config(**{**TINY, "out_stage": 4})


# ------------------------------------------------------------------------------------------------
# the teacher trains

def test_teacher_swinv2_aam_trains_on_cpu():
    """SwinV2 (tiny) + AAM head, a few AdamW steps on one random batch with an MSE loss on the
    soft-argmax coordinates: the loss falls and the backbone's attention weights move (their
    gradient is zero at step 0 because of the zero post-norms, so this checks it flows after)."""
    from lmref.models import aam_head as LA
    from torch_impl.models.aam_head import AAM

    torch.manual_seed(0)
    cfg = LA.Config(backbone="swinv2", backbone_config=TINY, layout="ibug68")
    model = AAM(cfg)
    x, target = torch.randn(2, 3, 64, 64), torch.rand(2, 68, 2) - 0.5
    qkv0 = model.backbone.layers[0].blocks[1].attn.qkv.weight.detach().clone()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(6):
        loss = torch.nn.functional.mse_loss(model(x)["coords"], target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(np.isfinite(losses))
    assert losses[-1] < 0.8 * losses[0], losses
    assert not torch.equal(model.backbone.layers[0].blocks[1].attn.qkv.weight, qkv0)
