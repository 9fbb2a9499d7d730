"""ResNet (the Compact-KD report's grayscale ResNet-50 teacher): parameter counts, timm key names,
torch <-> lmref parity through a weight file, bad input."""
import math

import numpy as np
import pytest
import torch

from lmref import trace, weights
from lmref.models import resnet as L
from tests.conftest import assert_close
from torch_impl.export import export, randomize_norms_
from torch_impl.models.resnet import ResNet


def state(model):
    return {k: v.detach().cpu().numpy() for k, v in model.state_dict().items()
            if not k.endswith("num_batches_tracked")}


def count(model):
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("kw, expected", [
    (dict(), 23_780_424),                                                  # the report's teacher (Table 2)
    (dict(in_chans=3, num_outputs=1000), 25_557_032),                      # ImageNet ResNet-50
    (dict(layers=(2, 2, 2, 2), block="basic", in_chans=3, num_outputs=1000), 11_689_512),  # ResNet-18
    (dict(layers=(3, 4, 6, 3), block="basic", in_chans=3, num_outputs=1000), 21_797_672),  # ResNet-34
])
def test_parameter_counts(kw, expected):
    cfg = L.Config(**kw)
    with torch.device("meta"):
        model = ResNet(cfg)
    assert count(model) == expected
    sd = {k: tuple(v.shape) for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    assert sd == L.param_shapes(cfg) and list(sd) == list(L.param_shapes(cfg))
    trainable = sum(math.prod(s) for k, s in L.param_shapes(cfg).items() if "running_" not in k)
    assert trainable == expected


def test_timm_key_names():
    sd = ResNet(L.Config()).state_dict()
    expected = {
        "conv1.weight": (64, 1, 7, 7), "bn1.running_var": (64,),
        "layer1.0.conv1.weight": (64, 64, 1, 1), "layer1.0.conv2.weight": (64, 64, 3, 3),
        "layer1.0.conv3.weight": (256, 64, 1, 1), "layer1.0.bn3.weight": (256,),
        "layer1.0.downsample.0.weight": (256, 64, 1, 1), "layer1.0.downsample.1.running_mean": (256,),
        "layer2.0.downsample.0.weight": (512, 256, 1, 1), "layer3.5.conv2.weight": (256, 256, 3, 3),
        "layer4.2.conv3.weight": (2048, 512, 1, 1), "fc.weight": (136, 2048), "fc.bias": (136,),
    }
    for k, shape in expected.items():
        assert tuple(sd[k].shape) == shape, k
    assert "layer1.1.downsample.0.weight" not in sd and "layer3.6.conv1.weight" not in sd
    assert L.num_features(L.Config()) == 2048


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_parity_through_weight_file(dtype, tmp_path):
    """A small basic-block ResNet, 3-channel, non-square input: export -> load_model -> same output."""
    cfg = L.Config(layers=(1, 2), block="basic", stem_width=8, num_outputs=10, in_chans=3)
    tdtype = torch.float64 if dtype == np.float64 else torch.float32
    model = randomize_norms_(ResNet(cfg)).to(tdtype).eval()
    export(model, tmp_path / "r.safetensors", dtype=tdtype, training="random weights (test)")
    lm = weights.load_model(tmp_path / "r.safetensors", dtype=dtype)
    assert lm.config == cfg
    x = torch.randn(2, 3, 40, 56, dtype=tdtype)
    with torch.no_grad():
        expected = model(x)
    assert_close(lm(x.numpy()), expected, dtype)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_parity_resnet50_teacher(dtype):
    """The report's teacher itself (23.8 M parameters), logits and last feature map.  In memory (a
    float64 file of it is 190 MB; the file path is covered above)."""
    cfg = L.Config()
    tdtype = torch.float64 if dtype == np.float64 else torch.float32
    model = randomize_norms_(ResNet(cfg)).to(tdtype).eval()
    params = weights.unflatten(state(model))
    weights.check_params(params, L.param_shapes(cfg))
    x = torch.randn(1, 1, 64, 64, dtype=tdtype)
    with torch.no_grad():
        feats = model.forward_features(x)
        expected = model.forward_head(feats)
    with trace() as t:
        out = L.forward(params, x.numpy(), cfg)
    f = t["layer4.2:relu"].output                   # the last feature map, what CKD distils
    assert f.shape == tuple(feats.shape) == (1, 2048, 2, 2)
    # float32, 53 conv/BN layers deep with outputs in the hundreds: the error scales with the largest
    # value, so atol = 1e-5 * max|y| on top of conftest's rtol 1e-4
    tol = {} if dtype == np.float64 else dict(atol=1e-5 * float(expected.abs().max()))
    assert_close(out, expected, dtype, **tol)
    tol = {} if dtype == np.float64 else dict(atol=1e-5 * float(feats.abs().max()))
    assert_close(f, feats, dtype, **tol)


def test_feature_stride_is_32():
    with torch.device("meta"):
        model = ResNet(L.Config())
        assert model.forward_features(torch.zeros(1, 1, 96, 64)).shape == (1, 2048, 3, 2)
        assert model(torch.zeros(5, 1, 64, 64)).shape == (5, 136)
    assert model.feature_stride == 32 and model.num_features == 2048


def test_trace_names_follow_state_dict_keys():
    cfg = L.Config(layers=(1, 1), stem_width=8, num_outputs=4)
    model = randomize_norms_(ResNet(cfg)).double().eval()
    params = weights.unflatten(state(model))
    with trace() as t:
        L.forward(params, np.zeros((1, 1, 32, 32)), cfg)
    names = t.names()
    for n in ("conv1:conv2d", "conv1:batch_norm", "maxpool:max_pool2d", "layer1.0.conv3:conv2d",
              "layer2.0.downsample:conv2d", "fc:linear"):
        assert n in names, n


def test_bad_input_and_config():
    cfg = L.Config(layers=(1, 1), stem_width=8, num_outputs=4)
    model = ResNet(cfg)
    params = weights.unflatten(state(model))
    with pytest.raises(ValueError, match="input channels"):
        L.forward(params, np.zeros((1, 3, 32, 32), np.float32), cfg)
    with pytest.raises(ValueError):
        model(torch.zeros(1, 3, 32, 32))
    with pytest.raises(ValueError, match="rank"):
        L.forward(params, np.zeros((1, 32, 32), np.float32), cfg)
    with pytest.raises(TypeError):
        L.forward(params, np.zeros((1, 1, 32, 32), np.int32), cfg)
    with pytest.raises(ValueError, match="block"):
        L.Config(block="wide")
    with pytest.raises(ValueError, match="layers"):
        L.Config(layers=(3, 0, 6, 3))
