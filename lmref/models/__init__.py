"""lmref.models: one file per architecture, built only from lmref.ops.

Each model module defines
    ARCH      the architecture name written in weight manifests
    Config    a small dataclass (shared with torch_impl, which imports it from here)
    forward(params, x, cfg) -> dict of named outputs (or an array for backbones)
and is listed in ``MODULES`` so that ``get(arch)`` finds it from a manifest.
"""
import importlib

MODULES = {}   # ARCH -> module path; each model file adds itself below when it lands


def register(arch, module):
    MODULES[arch] = module


def get(arch):
    """The model module for an architecture name from a manifest."""
    if arch not in MODULES:
        raise KeyError(f"unknown architecture {arch!r}; known: {sorted(MODULES)}")
    return importlib.import_module(MODULES[arch])
