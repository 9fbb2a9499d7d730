"""The constants lmref and torch_impl share, pinned against their upstream sources.

Parity tests compare lmref with torch_impl, and torch_impl takes these values from lmref (BN_EPS,
GN_EPS, the layouts and their E2P matrices): a wrong one is wrong in both halves at once and passes
every parity test. So this file lives outside both halves: each value is written out below from the
upstream source it cites (the citations are those of the project's fact sheet,
``reference/architectures.md``; section numbers in brackets), and both halves are checked against it
-- lmref by tracing its ops, torch_impl by inspecting its modules and buffers.
"""
import inspect

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import lmref
from lmref import landmarks, losses, ops, weights
from lmref.models import get as lmref_module
from torch_impl.models import build

# -------------------------------------------------------------------------------------- norm eps
# Every normalisation layer of every architecture uses eps = 1e-5 upstream:
#   MobileViT-v2  BatchNorm: timm ConvNormAct -> nn.BatchNorm2d(eps=1e-5); GroupNorm(1 group):
#                 timm GroupNorm1 / cvnets LayerNorm2D_NCHW, eps=1e-5 [1.6]
#   AAM head      InstanceNorm: STAR Activation("in+relu") -> nn.InstanceNorm2d, eps=1e-5 [2.2]
#   SwinV2        LayerNorm: timm norm_layer=nn.LayerNorm, eps=1e-5 [5.1]
#   Lite-HRNet    BatchNorm: mmcv norm_cfg=dict(type="BN") -> nn.BatchNorm2d, eps=1e-5 [4]
#   ResNet-50     BatchNorm: torchvision / timm -> nn.BatchNorm2d, eps=1e-5
#   Stud5         BatchNorm after each conv (compact-KD report) -> nn.BatchNorm2d, eps=1e-5
UPSTREAM_EPS = 1e-5
NORM_OPS = ("batch_norm", "group_norm", "instance_norm", "layer_norm")
TORCH_NORMS = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm, nn.modules.instancenorm._InstanceNorm)

SWIN_TINY = {"img_size": [32, 32], "embed_dim": 16, "depths": [1, 1], "num_heads": [1, 2], "window_size": [4, 4]}
MODELS = {   # arch, tiny config, input shape, the norm ops its upstream has
    "aam_mobilevitv2": ("aam", {"backbone": "mobilevitv2", "backbone_config": {"width_multiplier": 0.25},
                                "layout": "inner51"}, (1, 3, 32, 32), {"batch_norm", "group_norm", "instance_norm"}),
    "aam_swinv2": ("aam", {"backbone": "swinv2", "backbone_config": SWIN_TINY, "layout": "inner51"},
                   (1, 3, 32, 32), {"layer_norm", "instance_norm"}),
    "litehrnet": ("litehrnet", {"stem_channels": 8, "stem_out_channels": 8, "num_modules": (1, 1, 1),
                                "num_points": 5, "num_channels": ((8, 16), (8, 16, 32), (8, 16, 32, 64))},
                  (1, 3, 32, 32), {"batch_norm"}),
    "resnet": ("resnet", {"layers": [1, 1, 1, 1], "block": "basic", "stem_width": 4}, (1, 1, 32, 32), {"batch_norm"}),
    "stud5": ("stud5", {"channels": [4, 8, 8, 8, 8]}, (1, 1, 32, 32), {"batch_norm"}),
}


def test_the_cited_defaults_are_torchs():
    """The upstream layers above take torch's default eps, which is the pinned value."""
    for layer in (nn.BatchNorm2d(2), nn.GroupNorm(1, 2), nn.LayerNorm(2), nn.InstanceNorm2d(2)):
        assert layer.eps == UPSTREAM_EPS, layer
    assert inspect.signature(F.instance_norm).parameters["eps"].default == UPSTREAM_EPS


def _random_params(shapes, rng):
    return {k: (rng.uniform(0.5, 1.5, s) if k.endswith("running_var") else rng.standard_normal(s) * 0.1)
            for k, s in shapes.items()}


def lmref_norm_eps(arch, cfg, shape):
    """{norm op name: set of eps values} of one traced lmref forward pass (the op's default when a
    model does not pass eps)."""
    mod = lmref_module(arch)
    config = mod.Config(**cfg)
    params = weights.unflatten(_random_params(mod.param_shapes(config), np.random.default_rng(0)))
    with lmref.trace() as t:
        mod.forward(params, np.random.default_rng(1).standard_normal(shape), config)
    found = {}
    for r in t:
        if r.op in NORM_OPS:
            default = inspect.signature(getattr(ops, r.op)).parameters["eps"].default
            found.setdefault(r.op, set()).add(r.attrs.get("eps", default))
    return found


def torch_norm_eps(arch, cfg, shape, monkeypatch):
    """The same for torch_impl: every norm module's eps, and the eps of every F.instance_norm call."""
    model = build(arch, cfg).eval()
    calls = []
    plain = F.instance_norm
    monkeypatch.setattr(F, "instance_norm", lambda *a, **kw: calls.append(kw.get("eps", UPSTREAM_EPS)) or plain(*a, **kw))
    with torch.no_grad():
        model(torch.randn(shape))
    found = {}
    for m in model.modules():
        if isinstance(m, TORCH_NORMS):
            found.setdefault(type(m).__name__, set()).add(m.eps)
    if calls:
        found["F.instance_norm"] = set(calls)
    return found


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_norm_eps_is_upstreams_in_both_halves(name, monkeypatch):
    arch, cfg, shape, kinds = MODELS[name]
    got = lmref_norm_eps(arch, cfg, shape)
    assert set(got) == kinds, f"lmref {name}: norm ops {sorted(got)}, upstream has {sorted(kinds)}"
    assert all(v == {UPSTREAM_EPS} for v in got.values()), f"lmref {name}: eps {got}"
    got = torch_norm_eps(arch, cfg, shape, monkeypatch)
    assert got and all(v == {UPSTREAM_EPS} for v in got.values()), f"torch_impl {name}: eps {got}"


# ------------------------------------------------------------------------ MobileViT-v2 widths
# timm rounds channel counts with make_divisible(v, 8): the nearest multiple of 8 (halves round up),
# at least 8, and one step more when that lost over 10% of v (timm/layers/helpers.py). Both halves
# take their widths from lmref's stage_plan, so only these upstream values can tell a wrong rounding.
MAKE_DIVISIBLE_8 = {4: 8, 7: 8, 12: 16, 20: 24, 44: 48, 68: 72, 76: 80, 100: 104, 127.5: 128, 192: 192}


def test_mobilevitv2_width_rounding_is_timms():
    from lmref.models.mobilevitv2 import Config, make_divisible, stage_plan
    assert {v: make_divisible(v) for v in MAKE_DIVISIBLE_8} == MAKE_DIVISIBLE_8
    # width 0.6, not a timm preset, where the rounding shows: stages.1 has 38 and 76 input channels
    # (hidden = make_divisible(2 * in)), stages.2-4 have 153, 230, 307 (attention dim = make_divisible(in / 2))
    plan = stage_plan(Config(width_multiplier=0.6))
    assert [b["hidden"] for b in plan[1]] == [make_divisible(38 * 2.0), make_divisible(76 * 2.0)] == [80, 152]
    assert [blocks[1]["dim"] for blocks in plan[2:]] == [80, 112, 152]


# ------------------------------------------------------------------ layouts, edges, E2P, flips
# STAR conf/alignment.py edge_info (name, 0-based indices in drawing order, closed) [2.4];
# flip permutations of STAR flip_mapping / PIPNet points_flip [6.3]; NME normalisers [6.1].

def span(a, b):
    return tuple(range(a, b + 1))


STAR_EDGES = {
    "ibug68": (("FaceContour", span(0, 16), False), ("RightEyebrow", span(17, 21), False),
               ("LeftEyebrow", span(22, 26), False), ("NoseLine", span(27, 30), False), ("Nose", span(31, 35), False),
               ("RightEye", span(36, 41), True), ("LeftEye", span(42, 47), True), ("OuterLip", span(48, 59), True),
               ("InnerLip", span(60, 67), True)),
    "wflw98": (("FaceContour", span(0, 32), False), ("RightEyebrow", span(33, 41), True),
               ("LeftEyebrow", span(42, 50), True), ("NoseLine", span(51, 54), False), ("Nose", span(55, 59), False),
               ("RightEye", span(60, 67), True), ("LeftEye", span(68, 75), True), ("OuterLip", span(76, 87), True),
               ("InnerLip", span(88, 95), True)),
    "cofw29": (("RightEyebrow", (0, 4, 2, 5), True), ("LeftEyebrow", (1, 6, 3, 7), True),
               ("RightEye", (8, 12, 10, 13), True), ("LeftEye", (9, 14, 11, 15), False),
               ("Nose", (18, 20, 19, 21), True), ("LowerLip", (22, 26, 23, 27), True),
               ("UpperLip", (22, 24, 23, 25), True)),
}
# inner51 (the ICME 2024 layout) is iBUG 68 without the jaw: its 8 edges are 300W's without
# FaceContour, renumbered by -17
STAR_EDGES["inner51"] = tuple((n, tuple(i - 17 for i in idx), c) for n, idx, c in STAR_EDGES["ibug68"][1:])
NUM_POINTS = {"ibug68": 68, "wflw98": 98, "cofw29": 29, "inner51": 51}

FLIP = {
    "ibug68": (16, 15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0, 26, 25, 24, 23, 22, 21, 20, 19, 18, 17,
               27, 28, 29, 30, 35, 34, 33, 32, 31, 45, 44, 43, 42, 47, 46, 39, 38, 37, 36, 41, 40,
               54, 53, 52, 51, 50, 49, 48, 59, 58, 57, 56, 55, 64, 63, 62, 61, 60, 67, 66, 65),
    "wflw98": tuple(range(32, -1, -1)) + (46, 45, 44, 43, 42, 50, 49, 48, 47, 37, 36, 35, 34, 33, 41, 40, 39, 38,
                                          51, 52, 53, 54, 59, 58, 57, 56, 55, 72, 71, 70, 69, 68, 75, 74, 73,
                                          64, 63, 62, 61, 60, 67, 66, 65, 82, 81, 80, 79, 78, 77, 76, 87, 86, 85, 84, 83,
                                          92, 91, 90, 89, 88, 95, 94, 93, 97, 96),
    "cofw29": (1, 0, 3, 2, 6, 7, 4, 5, 9, 8, 11, 10, 14, 15, 12, 13, 17, 16, 19, 18, 20, 21, 23, 22, 24, 25, 26, 27, 28),
}
FLIP["inner51"] = tuple(FLIP["ibug68"][i] - 17 for i in range(17, 68))

NORMALISERS = {   # layout -> (default key, {key: (a, b)}); a tuple means the mean of those points
    "ibug68": ("ocular", {"ocular": (36, 45), "pupil": (span(36, 41), span(42, 47))}),
    "wflw98": ("ocular", {"ocular": (60, 72), "pupil": (96, 97)}),
    "cofw29": ("pupil", {"pupil": (16, 17), "ocular": (8, 9)}),
    "inner51": ("ocular", {"ocular": (19, 28), "pupil": (span(19, 24), span(25, 30))}),
}


def star_e2h(edges, n):
    """STAR E2HTransform.__init__: M[p, e] = 1 iff point p is on edge e; b = (M @ 1) < 0.5 [2.3]."""
    M = np.zeros((n, len(edges)))
    for e, (_, idx, _) in enumerate(edges):
        M[list(idx), e] = 1
    return M, (M @ np.ones(len(edges)) < 0.5).astype(np.float64)


@pytest.mark.parametrize("name", sorted(STAR_EDGES))
def test_layout_edges_flip_and_normalisers_are_upstreams(name):
    lay = landmarks.get(name)
    assert lay.num_points == NUM_POINTS[name]
    assert tuple((n, tuple(idx), bool(c)) for n, idx, c in lay.edges) == STAR_EDGES[name]
    assert tuple(lay.flip) == FLIP[name]
    default, norms = NORMALISERS[name]
    assert lay.default_norm == default
    for key, (a, b) in norms.items():
        assert tuple(np.atleast_1d(lay.norm_indices[key][0])) == tuple(np.atleast_1d(a)), key
        assert tuple(np.atleast_1d(lay.norm_indices[key][1])) == tuple(np.atleast_1d(b)), key


@pytest.mark.parametrize("name", sorted(STAR_EDGES))
def test_e2p_matrix_and_bias_are_stars_in_both_halves(name):
    M, b = star_e2h(STAR_EDGES[name], NUM_POINTS[name])
    got_M, got_b = landmarks.get(name).edge_matrix()
    np.testing.assert_array_equal(got_M, M)
    np.testing.assert_array_equal(got_b, b)
    from torch_impl.models.aam_head import AAMHead
    from lmref.models.aam_head import Config
    head = AAMHead(4, Config(backbone="stud5", backbone_config={"channels": [4]}, layout=name))
    np.testing.assert_array_equal(head.e2p.weight[:, :, 0, 0].numpy(), M)
    np.testing.assert_array_equal(head.e2p.bias.numpy(), b)


def test_e2p_bias_covers_exactly_the_points_on_no_edge():
    """The upstream facts the bias encodes [2.3]: every 300W point is on one edge; WFLW's pupils 96,
    97 and COFW's pupils 16, 17 and chin 28 are on none; COFW's mouth corners 22, 23 are on two."""
    expected = {"ibug68": [], "inner51": [], "wflw98": [96, 97], "cofw29": [16, 17, 28]}
    for name, no_edge in expected.items():
        M, b = landmarks.get(name).edge_matrix()
        assert np.flatnonzero(b).tolist() == no_edge, name
    M, _ = landmarks.get("cofw29").edge_matrix()
    assert np.flatnonzero(M.sum(axis=1) == 2).tolist() == [22, 23]


# -------------------------------------------------------------------- soft-argmax grid and pixels

def star_grid_exact(n):
    """STAR's decoder grid X_j = 2j/(n-1) - 1 [2.7], exactly (Python fractions rounded once)."""
    from fractions import Fraction
    return np.array([float(Fraction(2 * j, n - 1) - 1) for j in range(n)])


@pytest.mark.parametrize("n", [2, 3, 5, 16, 24, 63, 64])
def test_soft_argmax_grid_in_both_halves(n):
    """One-hot maps decode to the grid points themselves: lmref.ops.soft_argmax and torch_impl's AAM
    decoder (both methods' grids), and the grids of both halves' STAR losses."""
    from torch_impl.losses import star_grid as torch_star_grid
    from torch_impl.models.aam_head import soft_argmax as torch_soft_argmax
    exact = star_grid_exact(n)
    maps = np.zeros((1, n, 2, n))
    maps[0, np.arange(n), 0, np.arange(n)] = 1.0                   # map j: a 1 at column j
    for got in (ops.soft_argmax(maps)[0, :, 0], torch_soft_argmax(torch.from_numpy(maps))[0, :, 0].numpy(),
                losses.star_grid(2, n)[0], torch_star_grid(2, n, torch.float64)[0].numpy()):
        np.testing.assert_allclose(got, exact, rtol=0, atol=2e-16)
    # the softmax method: a very peaked map decodes to the grid point too
    np.testing.assert_allclose(ops.soft_argmax(maps * 200.0, method="softmax", beta=1.0)[0, :, 0], exact, atol=1e-12)
    np.testing.assert_allclose(torch_soft_argmax(torch.from_numpy(maps * 200.0), "softmax")[0, :, 0].numpy(),
                               exact, atol=1e-12)


def test_normalised_to_pixel_rule_in_both_halves():
    """STAR denorm_points [2.7]: x = ((x̂ + 1) W - 1) / 2, so -1, +1 map to -0.5, W - 0.5 (the outer
    pixel edges) and 0 to the image centre (W - 1) / 2."""
    from torch_impl.models.aam_head import normalized_to_pixels as torch_to_pixels
    from torch_impl.train import denormalize_points
    W, H = 96, 64
    coords = np.array([[[-1.0, -1.0], [1.0, 1.0], [0.0, 0.0]]])
    expected = np.array([[[-0.5, -0.5], [W - 0.5, H - 0.5], [(W - 1) / 2, (H - 1) / 2]]])
    np.testing.assert_array_equal(ops.normalized_to_pixels(coords, W, H), expected)
    np.testing.assert_array_equal(torch_to_pixels(torch.from_numpy(coords), W, H).numpy(), expected)
    np.testing.assert_array_equal(denormalize_points(torch.from_numpy(coords), H, W).numpy(), expected)
