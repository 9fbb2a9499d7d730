"""torch_impl.models: one file per architecture, mirroring lmref.models."""
import dataclasses
import importlib

# architecture name (lmref.models.MODULES) -> the nn.Module class in torch_impl.models.<same file>;
# every class takes the lmref Config as its one argument
CLASSES = {
    "mobilevitv2": "MobileViTv2",
    "aam": "AAM",
    "swinv2": "SwinTransformerV2",
    "litehrnet": "LiteHRNet",
    "stud5": "Stud5",
    "resnet": "ResNet",
}


def get(arch):
    """The torch_impl model module for an architecture name (same file name as its lmref module)."""
    from lmref.models import MODULES
    if arch not in MODULES:
        raise KeyError(f"unknown architecture {arch!r}; known: {sorted(MODULES)}")
    return importlib.import_module("torch_impl.models." + MODULES[arch].rsplit(".", 1)[1])


def build(arch, cfg=None):
    """The nn.Module ``CLASSES[arch]`` built from ``cfg``: its lmref Config, a dict of the Config's
    fields, or None for the defaults."""
    from lmref.models import get as lmref_get
    Config = lmref_get(arch).Config
    if cfg is None:
        cfg = Config()
    elif isinstance(cfg, dict):
        cfg = Config(**cfg)
    elif not (dataclasses.is_dataclass(cfg) and isinstance(cfg, Config)):
        raise TypeError(f"cfg for {arch!r}: expected {Config.__module__}.Config, a dict or None, "
                        f"got {type(cfg).__name__}")
    if arch not in CLASSES:
        raise KeyError(f"no torch_impl class registered for {arch!r} in torch_impl.models.CLASSES")
    return getattr(get(arch), CLASSES[arch])(cfg)
