"""Stud5 (the Compact-KD report's student): the 3,982,344-parameter configuration, torch <-> lmref
parity through a weight file, trace names, bad input."""
import math

import numpy as np
import pytest
import torch

from lmref import trace, weights
from lmref.models import stud5 as L
from tests.conftest import assert_close
from torch_impl.export import export, randomize_norms_
from torch_impl.models.stud5 import Stud5


def state(model):
    return {k: v.detach().cpu().numpy() for k, v in model.state_dict().items()
            if not k.endswith("num_batches_tracked")}


def test_parameter_count_is_the_reports():
    """Table 2: 3,982,344 trainable parameters = conv weights 3,908,160 + conv biases 1,472 +
    BN affine 2,944 + fc 69,768 (derivation in lmref.models.stud5)."""
    cfg = L.Config()
    model = Stud5(cfg)
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == 3_982_344
    shapes = L.param_shapes(cfg)
    sd = {k: tuple(v.shape) for k, v in state(model).items()}
    assert sd == shapes and list(sd) == list(shapes)
    conv_w = sum(math.prod(s) for k, s in shapes.items() if k.endswith("conv.weight"))
    conv_b = sum(math.prod(s) for k, s in shapes.items() if k.endswith("conv.bias"))
    bn = sum(math.prod(s) for k, s in shapes.items() if k.endswith(("bn.weight", "bn.bias")))
    fc = sum(math.prod(s) for k, s in shapes.items() if k.startswith("fc."))
    assert (conv_w, conv_b, bn, fc) == (3_908_160, 1_472, 2_944, 69_768)
    # Table 1: five 3x3 convs 64-128-256-512-512 on one grayscale channel, fc [512, 136]
    assert [shapes[f"blocks.{i}.conv.weight"] for i in range(5)] == [
        (64, 1, 3, 3), (128, 64, 3, 3), (256, 128, 3, 3), (512, 256, 3, 3), (512, 512, 3, 3)]
    assert shapes["fc.weight"] == (136, 512)
    assert L.num_features(cfg) == model.num_features == 512


@pytest.mark.parametrize("size, feature_hw", [((32, 32), (1, 1)), ((63, 40), (1, 1)), ((64, 96), (2, 3))])
def test_feature_map_sizes(size, feature_hw):
    """5 floor max-pools: 32..63 px leave a 1x1 map (the fc sees exactly the 512 channels); larger
    inputs give H/32 x W/32, globally averaged."""
    model = Stud5().eval()
    with torch.no_grad():
        f = model.forward_features(torch.zeros(2, 1, *size))
        assert f.shape == (2, 512, *feature_hw)
        assert model(torch.zeros(2, 1, *size)).shape == (2, 136)


@pytest.mark.parametrize("size", [(40, 40), (64, 48)])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_parity_with_torch(size, dtype, tmp_path):
    cfg = L.Config()
    tdtype = torch.float64 if dtype == np.float64 else torch.float32
    torch.manual_seed(0)
    model = randomize_norms_(Stud5(cfg)).to(tdtype).eval()
    export(model, tmp_path / "s.safetensors", layout="ibug68", dtype=tdtype,
           input=dict(size=list(size), channels=1, color="GRAY", mean=[0.5], std=[0.5]))
    lm = weights.load_model(tmp_path / "s.safetensors", dtype=dtype)
    assert lm.config == cfg
    x = torch.randn(2, 1, *size, dtype=tdtype)
    with torch.no_grad():
        feats = model.forward_features(x)
        expected = model.forward_head(feats)
    assert_close(lm(x.numpy()), expected, dtype)
    assert_close(L.forward_features(lm.params, x.numpy(), cfg), feats, dtype)


def test_parity_after_training_steps():
    """BatchNorm statistics made by training (not set by hand), then eval-mode parity in float64."""
    cfg = L.Config(channels=(8, 8, 16, 16, 16), num_outputs=6)
    torch.manual_seed(0)
    model = Stud5(cfg).double()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    x, y = torch.randn(4, 1, 32, 32, dtype=torch.float64), torch.randn(4, 6, dtype=torch.float64)
    losses = []
    for _ in range(3):
        loss = torch.nn.functional.mse_loss(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert model.blocks[0].bn.num_batches_tracked.item() == 3
    assert losses[-1] < losses[0]
    model.eval()
    with torch.no_grad():
        expected = model(x)
    assert_close(L.forward(weights.unflatten(state(model)), x.numpy(), cfg), expected, np.float64)


def test_trace_names_follow_state_dict_keys():
    cfg = L.Config(channels=(4, 4, 4, 4, 4), num_outputs=2)
    params = weights.unflatten(state(Stud5(cfg).double().eval()))
    with trace() as t:
        L.forward(params, np.zeros((1, 1, 32, 32)), cfg)
    names = t.names()
    for n in ("blocks.0.conv:conv2d", "blocks.0.bn:batch_norm", "blocks.0:relu", "blocks.4:max_pool2d",
              "global_pool:adaptive_avg_pool2d", "fc:linear"):
        assert n in names, n
    assert t["blocks.4:max_pool2d"].output.shape == (1, 4, 1, 1)


def test_bad_input_and_config():
    cfg = L.Config()
    model = Stud5(cfg)
    params = weights.unflatten(state(model))
    with pytest.raises(ValueError, match="empty map"):
        L.forward(params, np.zeros((1, 1, 31, 64), np.float32), cfg)
    with pytest.raises(ValueError, match="empty map"):
        model(torch.zeros(1, 1, 31, 64))
    with pytest.raises(ValueError, match="input channels"):
        L.forward(params, np.zeros((1, 3, 40, 40), np.float32), cfg)
    with pytest.raises(ValueError):
        model(torch.zeros(1, 3, 40, 40))
    with pytest.raises(TypeError):
        L.forward(params, np.zeros((1, 1, 40, 40), np.uint8), cfg)
    with pytest.raises(ValueError, match="kernel_size"):
        L.Config(kernel_size=2)
    with pytest.raises(ValueError, match="channels"):
        L.Config(channels=(64, 0, 256, 512, 512))
