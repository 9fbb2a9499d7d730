"""Lite-HRNet / Lite-HRNet Plus: parameter counts against the fact sheet, parity of lmref with
torch_impl through exported random weights, the upstream fusion quirk, the two FLOP conventions
(Lite-HRNet README, Lite-HRNet Plus paper), the Plus sizes, decoding, targets, losses, training."""
import dataclasses
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from conftest import assert_close
from lmref import info, ops, weights
from lmref.models import litehrnet as L
from lmref.cost.litehrnet import PAPER_SIZES, block_of, cost_report, cost_table
from torch_impl.export import export, randomize_norms_
from torch_impl.heatmap_losses import HeatmapLoss, gaussian_targets
from torch_impl.losses import heatmap_bce, heatmap_mse
from torch_impl.models import litehrnet as T

# float32: ~100 layers deep, sums of up to 5 branches; measured max |error| <= 6e-7 x max |output|, so
# 1e-5 relative with an absolute floor of 1e-5 x max |output| (for the elements near zero)
F32 = dict(rtol=1e-5, atol=1e-5)


def tiny(**kw):
    """A small three-stage config (1 module, 1 unit per stage) for the fusion variants."""
    base = dict(num_points=5, stem_channels=16, stem_out_channels=16, num_modules=(1, 1, 1),
                num_blocks=(1, 1, 1), num_channels=((8, 16), (8, 16, 32), (8, 16, 32, 64)))
    return L.Config(**{**base, **kw})


def make(cfg, seed=0):
    torch.manual_seed(seed)
    return randomize_norms_(T.LiteHRNet(cfg), seed).eval()


def n_params(model):
    return sum(p.numel() for p in model.parameters())


def shape_params(cfg):
    return sum(math.prod(s) for k, s in L.param_shapes(cfg).items() if not k.endswith(("running_mean", "running_var")))


# ------------------------------------------------------------------------------------ structure

@pytest.mark.parametrize("cfg, expected", [
    (L.preset("litehrnet_18", num_points=17), 1_130_769),     # fact sheet §4.7: 1,130,072 + 17-point head
    (L.preset("litehrnet_18", num_points=68), 1_132_860),
    (L.preset("litehrnet_18", num_points=98), 1_134_090),
    (L.preset("litehrnet_30", num_points=17), 1_763_717),
])
def test_parameter_counts_match_the_fact_sheet(cfg, expected):
    assert n_params(T.LiteHRNet(cfg)) == expected
    assert shape_params(cfg) == expected
    head = cfg.num_points * 40 + cfg.num_points
    assert expected - head in (1_130_072, 1_763_020)          # backbone incl. IterativeHead


VARIANTS = {
    "pw": tiny(),
    "pw_upstream": tiny(upstream_fusion=True),
    "bottleneck": tiny(fusion="bottleneck"),
    "group": tiny(fusion="group"),
    "scaf": tiny(fusion="scaf", head="mr", iterative_head=False),
    "scaf_cascade_avgpool_bilinear": tiny(fusion="scaf", scaf_route="cascade", scaf_down="avgpool",
                                          scaf_up="bilinear", head="mr", mr_mode="nearest"),
    "scaf_pairwise_avgpool_r2": tiny(fusion="scaf", scaf_down="avgpool", scaf_reduction=2, head="mr",
                                     mr_align_corners=False),
    "stem_widen": tiny(stem_channels=16, stem_out_channels=24, stem_expand_ratio=2.0),
}


@pytest.mark.parametrize("name", list(VARIANTS) + list(L.PRESETS))
def test_param_shapes_equal_the_torch_state_dict(name):
    cfg = VARIANTS.get(name) or L.preset(name)
    sd = {k: tuple(v.shape) for k, v in T.LiteHRNet(cfg).state_dict().items() if not k.endswith("num_batches_tracked")}
    assert sd == L.param_shapes(cfg)


def test_upstream_keys_for_published_checkpoints():
    keys = set(L.param_shapes(L.preset("litehrnet_18", num_points=17)))
    for k in ("backbone.stem.conv1.conv.weight", "backbone.stem.branch1.1.bn.running_var",
              "backbone.transition0.0.2.weight", "backbone.transition1.2.0.3.weight",
              "backbone.stage0.0.layers.1.cross_resolution_weighting.conv2.bn.bias",
              "backbone.stage1.3.layers.0.spatial_weighting.2.conv1.conv.bias",
              "backbone.stage2.1.fuse_layers.0.3.0.weight", "backbone.stage2.1.fuse_layers.3.0.2.3.weight",
              "backbone.head_layer.projects.3.pointwise_conv.bn.weight", "keypoint_head.final_layer.bias"):
        assert k in keys, k


def test_config_validation_and_manifest_round_trip():
    for bad in (dict(fusion="conv"), dict(head="hrnetv2"), dict(fusion="scaf", upstream_fusion=True),
                dict(num_channels=((40, 80), (40, 80, 160, 320), (40,))), dict(num_modules=(2, 4)),
                dict(num_channels=((40, 81), (40, 80, 160), (40, 80, 160, 320))), dict(scaf_route="zigzag"),
                dict(scaf_reduction=0)):
        with pytest.raises(ValueError):
            L.Config(**bad)
    cfg = L.preset("litehrnet_plus_10m")
    as_json = {k: (list(map(list, v)) if k == "num_channels" else list(v) if isinstance(v, tuple) else v)
               for k, v in cfg.to_dict().items()}
    assert L.Config.from_dict(as_json) == cfg
    with pytest.raises(ValueError):
        L.Config.from_dict({**as_json, "width": 3})
    with pytest.raises(KeyError):
        L.preset("litehrnet_40")


# ------------------------------------------------------------------------------------ parity

def run_parity(cfg, size, tmp_path, batch=1, seed=0):
    """Export random weights (BN statistics randomised) in float64, load with lmref, compare
    float64 and float32 heatmaps with torch in the same dtype."""
    model = make(cfg, seed)
    path = tmp_path / "m.safetensors"
    export(model, path, "litehrnet", cfg, input={"size": list(size), "channels": 3, "color": "RGB",
                                                   "mean": [0.0] * 3, "std": [1.0] * 3},
           dtype=torch.float64)
    x = np.random.default_rng(seed).standard_normal((batch, 3, *size))
    out = {}
    for dt, tdt in ((np.float64, torch.float64), (np.float32, torch.float32)):
        lm = weights.load_model(path, dtype=dt)
        y = lm(x.astype(dt))
        with torch.no_grad():
            t = model.to(tdt)(torch.from_numpy(x.astype(dt)))
        assert y.shape == tuple(t.shape) == (batch, cfg.num_points, math.ceil(size[0] / 4), math.ceil(size[1] / 4))
        scale = float(t.abs().max())
        if dt is np.float64:
            assert_close(y, t, rtol=1e-10, atol=1e-12 * scale)
        else:
            assert_close(y, t, rtol=F32["rtol"], atol=F32["atol"] * scale)
        out[dt] = (y, t.numpy())
    assert out[np.float64][1].std() > 1e-3 * abs(out[np.float64][1]).max()   # not a constant map
    return model, path


FULL = {"litehrnet_18": L.preset("litehrnet_18"),
        "litehrnet_plus_10m": L.preset("litehrnet_plus_10m"),
        "litehrnet_plus_30m": L.preset("litehrnet_plus_30m"),
        "litehrnet_18_bottleneck": L.preset("litehrnet_18", fusion="bottleneck"),
        "litehrnet_18_group": L.preset("litehrnet_18", fusion="group"),
        "litehrnet_plus_10m_cascade": L.preset("litehrnet_plus_10m", scaf_route="cascade")}


@pytest.mark.parametrize("name", list(FULL))
@pytest.mark.parametrize("size", [(96, 96), (64, 80)])
def test_parity_full_size(name, size, tmp_path):
    run_parity(FULL[name], size, tmp_path)


def test_parity_lite_hrnet_18_upstream_fusion(tmp_path):
    run_parity(L.preset("litehrnet_18", num_points=17, upstream_fusion=True), (64, 80), tmp_path)


@pytest.mark.parametrize("name", list(VARIANTS))
@pytest.mark.parametrize("size", [(96, 96), (64, 80)])
def test_parity_fusion_variants(name, size, tmp_path):
    run_parity(VARIANTS[name], size, tmp_path, batch=2)


def test_every_scaf_weight_reaches_the_output(tmp_path):
    """Parity would hold trivially if SCAF's attention were dead: perturbing one fc changes the maps."""
    cfg = L.preset("litehrnet_plus_10m")
    model = make(cfg)
    x = torch.randn(1, 3, 96, 96, dtype=torch.float64)
    model = model.double()
    with torch.no_grad():
        y0 = model(x)
        unit = model.backbone.stage2[1].fuse_layers[0][3]          # branch 3 -> branch 0
        unit.fc2.bias += 0.5
        y1 = model(x)
    assert (y1 - y0).abs().max() > 1e-6 * y0.abs().max()


# ------------------------------------------------------------------------------------ fusion quirk

def upstream_fuse_loop(module, out):
    """HRNet/Lite-HRNet ``LiteHRModule.forward`` fusion, transcribed with its in-place ``+=``."""
    out = [o.clone() for o in out]
    out_fuse = []
    sizes = [o.shape[-2:] for o in out]
    for i in range(len(out)):
        f = lambda j, x: T.run_sequential(module.fuse_layers[i][j], x, sizes[i]) if j > i else \
            T.run_steps(module.fuse_layers[i][j], x)
        y = out[0] if i == 0 else f(0, out[0])
        for j in range(len(out)):
            if i == j:
                y += out[j]
            else:
                y += f(j, out[j])
        out_fuse.append(F.relu(y))
    return out_fuse


@pytest.mark.parametrize("fusion", ["pw", "group"])
def test_upstream_fusion_matches_the_in_place_loop(fusion):
    cfg = tiny(upstream_fusion=True, fusion=fusion)
    model = make(cfg).double()
    module = model.backbone.stage2[0]
    xs = [torch.randn(2, c, 16 >> k, 20 >> k, dtype=torch.float64) for k, c in enumerate(cfg.num_channels[-1])]
    xs[3] = torch.randn(2, 64, 2, 3, dtype=torch.float64)          # ceil(5 / 2) = 3
    with torch.no_grad():
        ours = T.conv_fusion(module.fuse_layers, xs, upstream=True)
        theirs = upstream_fuse_loop(module, xs)
        fixed = T.conv_fusion(module.fuse_layers, xs, upstream=False)
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    for a, b in zip(fixed, theirs):
        assert (a - b).abs().max() > 1e-3                          # every output branch differs


# ------------------------------------------------------------------------------------ cost

class AtenFlops(TorchDispatchMode):
    """FLOPs of the paper's convention counted on torch's aten ops (independent of the lmref trace)."""

    def __init__(self):
        super().__init__()
        self.flops = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        aten, p = torch.ops.aten, func.overloadpacket
        if p is aten.convolution:
            self.flops += out.numel() * args[1][0].numel() + (out.numel() if args[2] is not None else 0)
        elif p is aten.addmm:
            self.flops += out.numel() * args[1].shape[1] + out.numel()
        elif p in (aten._native_batch_norm_legit_no_training, aten.native_batch_norm):
            self.flops += 2 * args[0].numel()
        elif p is aten.relu:
            self.flops += out.numel()
        elif p in (aten.upsample_nearest2d, aten.upsample_bilinear2d):
            self.flops += out.numel()
        elif p in (aten._adaptive_avg_pool2d, aten.avg_pool2d, aten.mean):
            self.flops += args[0].numel()
        return out


def torch_flops(cfg, size=(96, 96)):
    model = T.LiteHRNet(cfg).eval()
    counter = AtenFlops()
    with torch.no_grad(), counter:
        model(torch.zeros(1, 3, *size))
    return counter.flops


@pytest.mark.parametrize("cfg", [L.preset("litehrnet_18"), L.preset("litehrnet_plus_10m"),
                                 L.preset("litehrnet_plus_30m"), VARIANTS["scaf_cascade_avgpool_bilinear"],
                                 VARIANTS["bottleneck"]])
def test_lmref_flops_equal_torch_aten_count(cfg):
    table = cost_table(cfg)
    assert table["total"]["flops"] == torch_flops(cfg)
    assert table["total"]["params"] == n_params(T.LiteHRNet(cfg))


@pytest.mark.parametrize("name", list(PAPER_SIZES))
def test_plus_sizes_within_10_percent_of_the_paper(name):
    params, flops = PAPER_SIZES[name]
    t = cost_table(L.preset(name))["total"]
    assert abs(t["params"] / params - 1) < 0.10, t
    assert abs(t["flops"] / flops - 1) < 0.10, t


def test_figure_2_fusion_share_falls():
    """SCAF takes about 80 % of the fusion's FLOPs away (paper §1); the fusion is the largest block of
    Lite-HRNet (Figure 2) and not of Lite-HRNet Plus."""
    for plus in ("litehrnet_plus_10m", "litehrnet_plus_30m"):
        cfg = L.preset(plus)
        lite = cost_table(dataclasses.replace(cfg, fusion="pw", head="simple", iterative_head=True))
        lite_plus = cost_table(cfg)
        drop = 1 - lite_plus["fusion"]["flops"] / lite["fusion"]["flops"]
        assert 0.75 < drop < 0.92, drop
        assert max(("stem", "ccw", "transition", "fusion", "head"), key=lambda b: lite[b]["flops"]) == "fusion"
        assert lite_plus["fusion"]["flops"] < lite_plus["ccw"]["flops"]
    report = cost_report(L.preset("litehrnet_plus_30m"))
    for b in ("stem", "ccw", "transition", "fusion", "head", "total"):
        assert b in report


def _hrnetv2_w18(num_points=98, w=18):
    """HRNetV2-W18 as mmpose builds it for WFLW (stem 2 x 3x3 s2, 4 bottlenecks, stages of 1/4/3
    modules with 4 basic blocks per branch, resize-concat head: 1x1 + BN + ReLU, 1x1 to K).  Only for
    the FLOP convention: the paper's Table 1 lists it with 9.66 M / 668.54 M."""
    def cbr(ci, co, k, s, relu=True):
        layers = [nn.Conv2d(ci, co, k, s, k // 2, bias=False), nn.BatchNorm2d(co)]
        return nn.Sequential(*layers, *([nn.ReLU()] if relu else []))

    class Res(nn.Module):
        def __init__(self, body, short=None):
            super().__init__()
            self.body, self.short = body, short

        def forward(self, x):
            return F.relu(self.body(x) + (x if self.short is None else self.short(x)))

    def basic(c):
        return Res(nn.Sequential(cbr(c, c, 3, 1), cbr(c, c, 3, 1, relu=False)))

    def bottleneck(ci):
        return Res(nn.Sequential(cbr(ci, 64, 1, 1), cbr(64, 64, 3, 1), cbr(64, 256, 1, 1, relu=False)),
                   None if ci == 256 else cbr(ci, 256, 1, 1, relu=False))

    class HRModule(nn.Module):
        def __init__(self, ch):
            super().__init__()
            self.branches = nn.ModuleList([nn.Sequential(*[basic(c) for _ in range(4)]) for c in ch])
            self.fuse = nn.ModuleList([nn.ModuleList([
                nn.Identity() if j == i else
                nn.Sequential(nn.Conv2d(ch[j], ch[i], 1, bias=False), nn.BatchNorm2d(ch[i]),
                              nn.Upsample(scale_factor=2 ** (j - i))) if j > i else
                nn.Sequential(*[cbr(ch[j], ch[i] if k == i - j - 1 else ch[j], 3, 2, relu=k != i - j - 1)
                                for k in range(i - j)]) for j in range(len(ch))]) for i in range(len(ch))])

        def forward(self, xs):
            xs = [b(x) for b, x in zip(self.branches, xs)]
            return [F.relu(sum(f(x) for f, x in zip(row, xs))) for row in self.fuse]

    class HRNetV2(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Sequential(cbr(3, 64, 3, 2), cbr(64, 64, 3, 2), bottleneck(64),
                                      *[bottleneck(256) for _ in range(3)])
            self.t1 = nn.ModuleList([cbr(256, w, 3, 1), cbr(256, 2 * w, 3, 2)])
            self.s2 = HRModule([w, 2 * w])
            self.t2, self.s3 = cbr(2 * w, 4 * w, 3, 2), nn.Sequential(*[HRModule([w, 2 * w, 4 * w]) for _ in range(4)])
            self.t3 = cbr(4 * w, 8 * w, 3, 2)
            self.s4 = nn.Sequential(*[HRModule([w, 2 * w, 4 * w, 8 * w]) for _ in range(3)])
            self.head = nn.Sequential(cbr(15 * w, 15 * w, 1, 1), nn.Conv2d(15 * w, num_points, 1))

        def forward(self, x):
            x = self.stem(x)
            xs = self.s2([t(x) for t in self.t1])
            xs = self.s3(xs + [self.t2(xs[-1])])
            xs = self.s4(xs + [self.t3(xs[-1])])
            up = [F.interpolate(v, size=xs[0].shape[-2:], mode="bilinear", align_corners=False) for v in xs[1:]]
            return self.head(torch.cat([xs[0]] + up, 1))

    return HRNetV2()


def test_paper_flop_convention_reproduces_hrnetv2_w18_row():
    """Table 1's HRNetV2-W18 row (9.66 M, 668.54 MFLOPs at 96x96) is the one architecture of the table
    that is fully specified: one FLOP per multiply-accumulate plus the elementwise terms of AtenFlops,
    in decimal millions, gives 668.53 M; MACs alone or 2 x MACs do not."""
    model = _hrnetv2_w18().eval()
    assert round(n_params(model) / 1e6, 2) == 9.66
    counter, macs = AtenFlops(), [0]
    hooks = [m.register_forward_hook(lambda m, i, o: macs.__setitem__(0, macs[0] + o.numel() * m.weight[0].numel()))
             for m in model.modules() if isinstance(m, nn.Conv2d)]
    with torch.no_grad(), counter:
        model(torch.zeros(1, 3, 96, 96))
    for h in hooks:
        h.remove()
    assert abs(counter.flops / 668.54e6 - 1) < 1e-4, counter.flops
    assert abs(macs[0] / 668.54e6 - 1) > 0.01 and abs(2 * macs[0] / 668.54e6 - 1) > 0.5


def test_block_names():
    assert block_of("backbone.stem.conv1.conv") == "stem"
    assert block_of("backbone.transition2.3.0.1") == "transition"
    assert block_of("backbone.stage1.0.layers.1.cross_resolution_weighting.conv1.bn") == "ccw"
    assert block_of("backbone.stage1.0.fuse_layers.2.0.1.3") == "fusion"
    assert block_of("backbone.stage1.0.fuse_layers") == "fusion"
    assert block_of("backbone.head_layer.projects.0.depthwise_conv.conv") == "head"
    assert block_of("keypoint_head.final_layers.2") == "head"


def torchstat_flops(cfg, size):
    """The Lite-HRNet README's count (its tools/torchstat): leaf-module hooks, each module's *last*
    call only -- conv MACs + bias, 2 per BN element (affine), ReLU modules (upstream's one shared fusion
    ReLU: the last branch), nn.Upsample B*H*W, AdaptiveAvgPool2d module B*C*(H+1)*(W+1) (SpatialWeighting);
    functional pools/resizes, sigmoid, sums uncounted."""
    model = T.LiteHRNet(cfg).eval()
    total, hooks = [0], []

    def hook(m, inputs, out):
        x = inputs[0]
        if isinstance(m, nn.Conv2d):
            total[0] += out.numel() * m.weight[0].numel() + (out.numel() if m.bias is not None else 0)
        elif isinstance(m, nn.BatchNorm2d):
            total[0] += 2 * out.numel()
        elif isinstance(m, nn.ReLU):
            total[0] += out.numel()
        elif isinstance(m, T.Resize):
            total[0] += out.shape[0] * out.shape[2] * out.shape[3]
        elif isinstance(m, T.SpatialWeighting):
            total[0] += x.shape[0] * x.shape[1] * (x.shape[2] + 1) * (x.shape[3] + 1)
        elif isinstance(m, T.LiteHRModule):
            total[0] += out[-1].numel()

    for m in model.modules():
        hooks.append(m.register_forward_hook(hook))
    with torch.no_grad():
        model(torch.zeros(1, 3, *size))
    return total[0] / 2 ** 20, n_params(model) / 1e6


@pytest.mark.parametrize("modules, joints, size, readme_flops, readme_params", [
    ((2, 4, 2), 17, (256, 192), 205.2, 1.1), ((2, 4, 2), 17, (384, 288), 461.6, 1.1),
    ((3, 8, 3), 17, (256, 192), 319.2, 1.8), ((3, 8, 3), 17, (384, 288), 717.8, 1.8),
    ((2, 4, 2), 16, (256, 256), 273.4, 1.1), ((3, 8, 3), 16, (256, 256), 425.3, 1.8)])
def test_lite_hrnet_readme_convention_is_torchstat_in_binary_millions(modules, joints, size, readme_flops,
                                                                     readme_params):
    flops, params = torchstat_flops(L.Config(num_points=joints, num_modules=modules), size)
    assert round(flops, 1) == readme_flops
    assert round(params, 1) == readme_params


def test_lmref_info_prints_the_cost_table(tmp_path, capsys):
    cfg = L.preset("litehrnet_plus_30m")
    path = tmp_path / "plus.safetensors"
    export(make(cfg), path, "litehrnet", cfg, input={"size": [96, 96], "channels": 3, "color": "RGB",
                                                      "mean": [0.0] * 3, "std": [1.0] * 3})
    text, rows, totals = info.info(path, depth=3)
    assert "Lite-HRNet Plus (this)" in text and "fusion" in text and "decimal M" in text
    assert totals["params"] == n_params(T.LiteHRNet(cfg))
    assert f"{cost_table(cfg)['total']['flops'] / 1e6:.2f} M" in text
    assert "paper Table 1 1.51 M params / 30.27 M FLOPs" in text


# ------------------------------------------------------------------------------------ decoding

def test_decode_lmref_equals_torch_and_finds_the_points():
    rng = np.random.default_rng(1)
    pts = rng.uniform(24, 72, (2, 7, 2))                    # input px, >= 3 sigma inside the 24x24 maps
    clean, _ = gaussian_targets(torch.from_numpy(pts), (24, 24), (96, 96), sigma=2.0, unbiased=True)
    noisy = clean + 0.05 * torch.from_numpy(rng.standard_normal(clean.shape))
    # argmax: the quarter-pixel rule leaves < 0.5 heatmap px = 2 input px; soft-argmax of a clean
    # Gaussian is exact but for its tails cut at the border (>= 2.5 sigma away); softmax(10 H) is pulled to the centre
    for method, tol in (("argmax", 2.0), ("soft_argmax", 0.1), ("soft_argmax_softmax", 3.0)):
        xy, _ = ops.decode_heatmaps(clean.numpy(), method, beta=10.0)
        assert np.abs(xy - pts).max() < tol, (method, np.abs(xy - pts).max())
        for dt in (np.float64, np.float32):
            xy, s = ops.decode_heatmaps(noisy.numpy().astype(dt), method, beta=10.0)
            txy, ts = T.decode(noisy.to(torch.float64 if dt is np.float64 else torch.float32), method, beta=10.0)
            assert xy.dtype == dt and s.dtype == dt
            assert_close(xy, txy, **({} if dt is np.float64 else dict(rtol=1e-5, atol=1e-4)))
            assert_close(s, ts)
    with pytest.raises(ValueError):
        ops.decode_heatmaps(noisy.numpy(), "mean")


def test_decode_input_size_scales_each_axis():
    hm = np.zeros((1, 1, 16, 20))
    hm[0, 0, 5, 7] = 1.0
    xy, s = ops.decode_heatmaps(hm, "argmax", input_size=(32, 80))
    assert xy.tolist() == [[[7 * 4.0, 5 * 2.0]]] and s.tolist() == [[1.0]]


# ------------------------------------------------------------------------------------ targets, losses

def test_gaussian_targets_msra():
    pts = torch.tensor([[[41.0, 30.0], [-40.0, 10.0], [95.0, 95.0]]])
    target, weight = gaussian_targets(pts, (24, 24), (96, 96), sigma=2.0)
    assert weight.tolist() == [[1.0, 0.0, 1.0]]
    assert target[0, 0].argmax().item() == 8 * 24 + 10            # mu = int(41/4 + .5) = 10, int(30/4 + .5) = 8
    assert target[0, 0, 8, 10] == 1.0 and target[0, 0, 8, 17] == 0.0 and target[0, 0, 8, 16] > 0
    assert target[0, 1].abs().sum() == 0
    assert math.isclose(target[0, 0, 9, 11].item(), math.exp(-2 / 8), rel_tol=1e-6)


def test_heatmap_losses_mse_and_bce():
    torch.manual_seed(0)
    pred, tgt = torch.randn(2, 3, 6, 5), torch.rand(2, 3, 6, 5)
    w = torch.tensor([[1.0, 0.0, 0.5], [1.0, 1.0, 1.0]])
    wk = w[..., None, None]
    torch.testing.assert_close(HeatmapLoss("mse")(pred, tgt, w), ((pred * wk - tgt * wk) ** 2).mean())
    torch.testing.assert_close(HeatmapLoss("mse", use_target_weight=False)(pred, tgt, w), ((pred - tgt) ** 2).mean())
    p = torch.sigmoid(pred)
    bce = -(tgt * torch.log(p) + (1 - tgt) * torch.log(1 - p))
    torch.testing.assert_close(HeatmapLoss("bce")(pred, tgt, w), (bce * wk).mean())
    assert HeatmapLoss("mse")(pred, tgt, w) == heatmap_mse(pred, tgt, w)
    assert HeatmapLoss("bce")(pred, tgt) == heatmap_bce(pred, tgt)
    with pytest.raises(ValueError):
        HeatmapLoss("l1")


# ------------------------------------------------------------------------------------ training

@pytest.mark.parametrize("name, kind", [("litehrnet_plus_10m", "bce"), ("litehrnet_plus_30m", "mse"),
                                        ("litehrnet_18", "mse")])
def test_a_few_adam_steps_reduce_the_loss(name, kind):
    torch.manual_seed(0)
    cfg = L.preset(name, num_points=8)
    model = T.LiteHRNet(cfg).train()
    x = torch.rand(4, 3, 96, 96)
    pts = 12 + 72 * torch.rand(4, 8, 2)
    target, weight = gaussian_targets(pts, (24, 24), (96, 96), sigma=2.0)
    loss_fn = HeatmapLoss(kind)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)      # the paper's optimiser and learning rate
    losses = []
    for _ in range(8):
        opt.zero_grad()
        loss = loss_fn(model(x), target, weight)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(math.isfinite(v) for v in losses)
    assert losses[-1] < 0.7 * losses[0], losses


@pytest.mark.parametrize("name", ["litehrnet_plus_10m", "litehrnet_plus_30m"])
def test_onnx_export_runs_in_onnxruntime(name, tmp_path):
    import onnxruntime as ort
    from torch_impl.export import export_onnx
    torch.manual_seed(0)
    model = T.LiteHRNet(L.preset(name)).eval()
    randomize_norms_(model)
    export_onnx(model, tmp_path / "m.onnx", (1, 3, 96, 96))
    x = torch.randn(1, 3, 96, 96)
    with torch.no_grad():
        y = model(x)
    y = y if torch.is_tensor(y) else y["heatmaps"]
    sess = ort.InferenceSession(str(tmp_path / "m.onnx"))
    (o,) = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})
    np.testing.assert_allclose(o, y.numpy(), rtol=1e-4, atol=1e-5 * float(y.abs().max()))
