"""lmref.models: one file per architecture, built only from lmref.ops.

Each model module defines
    ARCH                  the architecture name written in weight manifests
    Config                a small dataclass (shared with torch_impl, which imports it from here)
    param_shapes(cfg)     {state-dict key: shape} the model expects (checked against torch_impl)
    forward(params, x, cfg)  params: nested dict from lmref.weights.unflatten; x: [B, C, H, W]
and is listed in ``MODULES`` so that ``get(arch)`` finds it from a manifest.
"""
import importlib

MODULES = {
    "mobilevitv2": "lmref.models.mobilevitv2",      # backbone alone
    "aam": "lmref.models.aam_head",                 # backbone (any of the above) + AAM heatmap head
    "swinv2": "lmref.models.swinv2",
    "litehrnet": "lmref.models.litehrnet",          # Lite-HRNet and Lite-HRNet Plus (config flags)
    "stud5": "lmref.models.stud5",
    "resnet": "lmref.models.resnet",
}


def get(arch):
    """The model module for an architecture name from a manifest."""
    if arch not in MODULES:
        raise KeyError(f"unknown architecture {arch!r}; known: {sorted(MODULES)}")
    return importlib.import_module(MODULES[arch])
