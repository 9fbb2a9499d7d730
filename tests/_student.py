"""Small models for the detect / bundle / CLI tests: the MobileViT-v2 x0.5 + AAM student with random
weights (randomised norm statistics) exported from torch_impl at a small input size, its ONNX graph,
and the torch model rebuilt from any lmref weights file (to export a shipped model to ONNX)."""
import os

import numpy as np
import torch

from lmref import weights
from torch_impl import export as ex
from torch_impl.models import build

STUDENT_CONFIG = {"backbone_config": {"width_multiplier": 0.5, "rank5_patches": True}, "layout": "inner51"}


def export_student(path, size=64, seed=0, onnx_path=None, color="RGB", mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0),
                   training=None):
    """Random-weight student at ``size`` x ``size`` -> lmref weights at ``path`` (and ONNX)."""
    torch.manual_seed(seed)
    model = ex.randomize_norms_(build("aam", STUDENT_CONFIG), seed).eval()
    inp = {"size": [size, size], "channels": 3, "color": color, "mean": list(mean), "std": list(std)}
    ex.export(model, path, "aam", STUDENT_CONFIG, input=inp,
              training=training or f"untrained (random initialisation, seed {seed})")
    if onnx_path is not None:
        ex.export_onnx(model, onnx_path, (1, 3, size, size))
    return model


def torch_from_lmref(path):
    """The torch_impl model of an lmref weights file, with its weights (strict key check)."""
    tensors, manifest = weights.load(path, dtype=np.float32)
    model = build(manifest["architecture"], manifest["config"]).eval()
    sd = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in tensors.items()}
    result = model.load_state_dict(sd, strict=False)
    missing = [k for k in result.missing_keys if not k.endswith("num_batches_tracked")]
    assert not missing and not result.unexpected_keys, (missing, result.unexpected_keys)
    return model, manifest


def onnx_from_lmref(path, onnx_path):
    """Export an lmref weights file's model to ONNX at its manifest's input size."""
    model, manifest = torch_from_lmref(path)
    h, w = manifest["input"]["size"]
    ex.export_onnx(model, os.fspath(onnx_path), (1, manifest["input"]["channels"], h, w))
    return manifest
