"""Export a torch_impl model to the lmref weights format (safetensors + manifest) and to ONNX.

    export(model, "student.safetensors", "aam", model.cfg, layout="inner51")
    export_onnx(model, "student.onnx", (1, 3, 256, 256))

Command line (a model built from an architecture name and a config, random or checkpoint weights):

    python -m torch_impl.export aam student.safetensors \\
        --config '{"backbone_config": {"width_multiplier": 0.5, "rank5_patches": true}}' \\
        [--checkpoint ckpt.pt] [--seed 0] [--randomize-norms] [--dtype float64] \\
        [--input-size 256 256] [--color BGR --mean 0.5 0.5 0.5 --std 0.5 0.5 0.5] [--onnx student.onnx]

``lmref.weights.load_model(path)`` then finds the model by the manifest's architecture name.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import warnings

import torch
from torch import nn

from lmref import landmarks, weights
from lmref.models import get as lmref_model

from .models import build

__all__ = ["export", "export_onnx", "onnx_value_ranks", "state_dict_arrays", "default_input",
           "randomize_norms_", "load_checkpoint", "main"]

SKIPPED_SUFFIXES = ("num_batches_tracked",)


def _config_dict(arch, config):
    """A model Config (or dict of its fields, or None for defaults) -> a validated plain dict."""
    Config = lmref_model(arch).Config
    if config is None:
        config = Config()
    elif isinstance(config, dict):
        config = Config(**config)
    elif not isinstance(config, Config):
        raise TypeError(f"config for {arch!r}: expected {Config.__module__}.Config, a dict or None, "
                        f"got {type(config).__name__}")
    return json.loads(json.dumps(dataclasses.asdict(config)))          # tuples -> lists, as in a manifest


def _in_chans(config):
    """Input channels named in a config dict (also inside a backbone_config), default 3."""
    for d in (config, config.get("backbone_config") or {}):
        if "in_chans" in d:
            return int(d["in_chans"])
    return 3


def default_input(config, size=(256, 256)):
    """The manifest's input spec when none is given: pixels scaled to [0, 1] (mean 0, std 1, timm's
    MobileViT preprocessing), RGB or GRAY by the config's channel count."""
    c = _in_chans(config)
    return {"size": [int(size[0]), int(size[1])], "channels": c, "color": "RGB" if c == 3 else "GRAY",
            "mean": [0.0] * c, "std": [1.0] * c}


def state_dict_arrays(model: nn.Module, dtype=torch.float32):
    """model.state_dict() as {key: float ndarray} in ``dtype``, without num_batches_tracked."""
    if dtype not in (torch.float32, torch.float64):
        raise TypeError(f"dtype: expected torch.float32 or torch.float64, got {dtype}")
    out = {}
    for k, v in model.state_dict().items():
        if k.rsplit(".", 1)[-1] in SKIPPED_SUFFIXES:
            continue
        if not v.is_floating_point():
            raise weights.WeightsError(f"state_dict[{k!r}] has dtype {v.dtype}; lmref weights are floating point")
        out[k] = v.detach().to("cpu", dtype).contiguous().numpy()
    return out


def export(model: nn.Module, path, arch: str = None, config=None, layout=None, input=None, training=None,
           dtype=torch.float32, **extra):
    """Write ``model``'s weights and an lmref manifest to ``path`` (safetensors).

    arch      architecture name (a key of lmref.models.MODULES); default ``model.arch``
    config    the model's Config (or a dict of its fields); default ``model.cfg``
    layout    landmark layout name; default: the config's ``layout`` field if it has one
    input     manifest input spec (see lmref.weights); default :func:`default_input`
    training  dict or str saying how the weights were made; default "untrained (random initialisation)"
    extra     further manifest keys, kept as they are
    The state dict is checked against lmref's ``param_shapes(config)`` before anything is written.
    Returns the manifest."""
    arch = arch or getattr(model, "arch", None)
    if not arch:
        raise ValueError("export: arch is required (the model has no .arch attribute)")
    config = _config_dict(arch, config if config is not None else getattr(model, "cfg", None))
    if layout is None and isinstance(config.get("layout"), str):
        layout = config["layout"]
    if layout is not None:
        layout = landmarks.get(layout).name
    tensors = state_dict_arrays(model, dtype)
    cfg_obj = weights._make_config(lmref_model(arch).Config, config, "export: config")   # as load_model reads it
    weights.check_params(tensors, lmref_model(arch).param_shapes(cfg_obj))
    manifest = {
        "format_version": weights.FORMAT_VERSION,
        "architecture": arch,
        "config": config,
        "layout": layout,
        "input": input if input is not None else default_input(config),
        "training": training if training is not None else "untrained (random initialisation)",
        **extra,
    }
    weights.save(path, tensors, manifest)
    return manifest


def export_onnx(model: nn.Module, path, input_shape, opset=17, dtype=torch.float32):
    """Export ``model`` (eval mode) to ONNX with a fixed input shape; returns the output names.

    The TorchScript exporter is used (``dynamo=False``: no onnxscript needed).  A dict output becomes
    one graph output per key, in order; the input is named "input"."""
    model = model.eval()
    x = torch.zeros(tuple(int(s) for s in input_shape), dtype=dtype)
    with torch.no_grad():
        out = model(x)
    if isinstance(out, dict):
        names = list(out)
    elif isinstance(out, (tuple, list)):
        names = [f"output{i}" for i in range(len(out))]
    else:
        names = ["output"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")        # tracer warnings about shapes turned into constants
        torch.onnx.export(model, (x,), os.fspath(path), opset_version=opset, dynamo=False,
                          input_names=["input"], output_names=names, do_constant_folding=True)
    return names


def onnx_value_ranks(path):
    """{name: rank} of every tensor of an ONNX graph after shape inference: graph inputs, outputs,
    initializers and every intermediate value.  Raises if some value's rank stays unknown."""
    import onnx
    g = onnx.shape_inference.infer_shapes(onnx.load(os.fspath(path)), strict_mode=True).graph
    ranks = {}
    for v in list(g.input) + list(g.output) + list(g.value_info):
        if not v.type.tensor_type.HasField("shape"):
            raise ValueError(f"{path}: shape inference left the rank of {v.name!r} unknown")
        ranks[v.name] = len(v.type.tensor_type.shape.dim)
    for t in g.initializer:
        ranks[t.name] = len(t.dims)
    produced = {o for n in g.node for o in n.output if o}
    unknown = produced - set(ranks)
    if unknown:
        raise ValueError(f"{path}: shape inference gave no shape for {sorted(unknown)[:5]}")
    return ranks


def randomize_norms_(model: nn.Module, seed=0):
    """Give every norm layer non-trivial statistics and affine parameters (in place), so that a
    randomly initialised export exercises them: BatchNorm running_mean ~ N(0, 0.1^2),
    running_var ~ U(0.5, 1.5); norm weight ~ U(0.5, 1.5), bias ~ N(0, 0.1^2)."""
    g = torch.Generator().manual_seed(seed)
    norms = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)
    with torch.no_grad():
        for m in model.modules():
            if not isinstance(m, norms):
                continue
            if getattr(m, "running_mean", None) is not None:
                m.running_mean.copy_(0.1 * torch.randn(m.running_mean.shape, generator=g))
                m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=g))
            if getattr(m, "weight", None) is not None:
                m.weight.copy_(0.5 + torch.rand(m.weight.shape, generator=g))
            if getattr(m, "bias", None) is not None:
                m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=g))
    return model


def load_checkpoint(model: nn.Module, path):
    """Load a checkpoint (a state dict, or a dict holding one under "state_dict", "model" or "ema")
    strictly, never unpickling arbitrary objects (``weights_only=True``); num_batches_tracked may be
    absent."""
    ckpt = torch.load(os.fspath(path), map_location="cpu", weights_only=True)
    for key in ("state_dict", "model", "ema"):
        if isinstance(ckpt, dict) and isinstance(ckpt.get(key), dict):
            ckpt = ckpt[key]
            break
    if not isinstance(ckpt, dict):
        raise ValueError(f"{path}: expected a state dict, got {type(ckpt).__name__}")
    result = model.load_state_dict(ckpt, strict=False)
    missing = [k for k in result.missing_keys if not k.endswith(SKIPPED_SUFFIXES)]
    if missing or result.unexpected_keys:
        raise ValueError(f"{path}: checkpoint does not fit the model: missing {missing[:8]}, "
                         f"unexpected {list(result.unexpected_keys)[:8]}")
    return model


def _parse_config(text):
    if text is None:
        return {}
    if os.path.exists(text):
        with open(text) as f:
            return json.load(f)
    try:
        return json.loads(text)
    except ValueError as e:
        raise SystemExit(f"--config: neither a file nor JSON ({e})")


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m torch_impl.export",
                                 description="Build a torch_impl model and write it in the lmref weights format.")
    ap.add_argument("arch", help="architecture name (a key of lmref.models.MODULES), e.g. aam, mobilevitv2")
    ap.add_argument("out", help="output .safetensors path")
    ap.add_argument("--config", help="the model's Config as JSON, or a path to a JSON file (default: its defaults)")
    ap.add_argument("--checkpoint", help="torch state dict to load (default: random initialisation)")
    ap.add_argument("--seed", type=int, default=0, help="torch seed for the random initialisation")
    ap.add_argument("--randomize-norms", action="store_true",
                    help="random BatchNorm statistics and norm affine parameters (for parity tests)")
    ap.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    ap.add_argument("--layout", help="landmark layout name (default: the config's layout, if any)")
    ap.add_argument("--input-size", type=int, nargs=2, metavar=("H", "W"), default=(256, 256))
    ap.add_argument("--color", choices=("RGB", "BGR", "GRAY"))
    ap.add_argument("--mean", type=float, nargs="+")
    ap.add_argument("--std", type=float, nargs="+")
    ap.add_argument("--training", help="how the weights were made (free text for the manifest)")
    ap.add_argument("--onnx", help="also write an ONNX graph (opset 17) for a 1-image input of --input-size")
    args = ap.parse_args(argv)

    config = _parse_config(args.config)
    torch.manual_seed(args.seed)
    model = build(args.arch, config).eval()
    if args.checkpoint:
        load_checkpoint(model, args.checkpoint)
    elif args.randomize_norms:
        randomize_norms_(model, args.seed)
    cfg_dict = _config_dict(args.arch, config)
    inp = default_input(cfg_dict, args.input_size)
    if args.color:
        inp["color"] = args.color
    if args.mean:
        inp["mean"] = args.mean
    if args.std:
        inp["std"] = args.std
    training = args.training or (f"checkpoint {os.path.basename(args.checkpoint)}" if args.checkpoint
                                 else f"untrained (random initialisation, seed {args.seed})")
    dtype = torch.float64 if args.dtype == "float64" else torch.float32
    manifest = export(model, args.out, args.arch, cfg_dict, layout=args.layout, input=inp,
                      training=training, dtype=dtype)
    n = sum(p.numel() for p in model.parameters())
    print(f"wrote {args.out}: {args.arch}, {n:,} parameters, {args.dtype}, layout {manifest['layout']}")
    if args.onnx:
        model = model.to(dtype)
        names = export_onnx(model, args.onnx, (1, inp["channels"], *args.input_size), dtype=dtype)
        print(f"wrote {args.onnx}: outputs {names}, max tensor rank {max(onnx_value_ranks(args.onnx).values())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
