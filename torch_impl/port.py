"""Port an lmref weights file's model to another runtime's format, with the facts a target needs.

    python -m torch_impl.port litert student student_r5.tflite                   # as the manifest says
    python -m torch_impl.port litert student student_r6.tflite --patches rank6   # timm's 6-D unfold/fold
    python -m torch_impl.port tiny tests/data/litert                             # the tests' tiny files

``litert`` rebuilds the torch_impl twin of a weights file (any shipped model name or path), converts
it with litert-torch (the optional extra: ``pip install 'lmref[litert]'``) for a one-image input of
the manifest's size, and writes ``OUT.tflite`` and ``OUT.facts.json``: the largest tensor rank, the
op codes with their versions, the converter's minimum runtime version, and the static check against
TFLite 2.11 (``lmref.ports.litert.fits_runtime``; the same check without torch:
``python -m lmref.ports.litert facts OUT.tflite``). ``--patches`` picks MobileViT-v2's unfold/fold
form: ``rank5`` (the ICME 2024 rewrite, no tensor above rank 5) or ``rank6`` (timm's reshape to 6-D
and 6-D transpose); the numbers are the same, the graphs are not. Check the port against lmref with
``lmref trace MODEL --out B && lmref compare B OUT.tflite``.
"""
from __future__ import annotations

import argparse
import hashlib
import importlib
import json
import logging
import os
import re
import sys
import tempfile
import time
import warnings

import torch
from torch import nn

from lmref.ports import litert

from .models.mobilevitv2 import fold_patches, unfold_patches

__all__ = ["torch_model", "convert_litert", "write_tiny", "TinyPatches", "main"]

PATCHES = ("rank5", "rank6")
EXTRA_HINT = "converting to LiteRT needs the litert extra: pip install 'lmref[litert]'"


def torch_model(path, patches=None):
    """The torch_impl twin of an lmref weights file (a path or shipped model name), eval mode, with
    its weights -> (model, manifest). patches: None (as the manifest says), "rank5" or "rank6"."""
    from lmref import weights
    from lmref.detect import resolve_model

    from .train import load_teacher
    path = resolve_model(path)
    model = load_teacher(path)                  # builds from the manifest, strict key check, eval, frozen
    manifest = weights.load(path)[1]
    if patches is not None:
        if patches not in PATCHES:
            raise ValueError(f"patches: expected one of {PATCHES}, got {patches!r}")
        switches = [m for m in model.modules() if hasattr(m, "set_rank5_patches")]
        if not switches:
            raise ValueError(f"{path}: {manifest['architecture']} has no MobileViT-v2 unfold/fold to switch")
        for m in switches:
            m.set_rank5_patches(patches == "rank5")
    return model, manifest


def _import_quietly():
    """litert_torch, without its progress lines and the log lines of what it loads (absl, torchao's
    optional CUDA kernels, torch's pytree notices): the port prints its own summary."""
    os.environ.setdefault("LITERT_TORCH_SHOW_PROGRESS", "n")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    for name in ("torchao", "torch.utils._pytree"):
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        import litert_torch
    except ImportError as e:
        raise SystemExit(f"{EXTRA_HINT} ({e})") from None
    return litert_torch


def _convert(model, x, out):
    """litert-torch: model(x) -> a .tflite at ``out`` (written under a temporary name, then moved)."""
    litert_torch = _import_quietly()
    out = os.fspath(out)
    fd, tmp = tempfile.mkstemp(prefix=".lmref-port-", suffix=".tflite", dir=os.path.dirname(os.path.abspath(out)))
    os.close(fd)
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")             # deprecation notices from inside torch.export
            litert_torch.convert(model.eval(), (x,)).export(tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return out


def _versions():
    from importlib.metadata import PackageNotFoundError, version
    out = {}
    for name in ("litert-torch", "ai-edge-litert", "torch"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


def facts_record(path, source=None):
    """The static facts of a .tflite (lmref.ports.litert.Facts.summary) plus the TFLite 2.11 check."""
    facts = litert.read(path)
    reasons = litert.fits_runtime(facts, "2.11")
    return {**facts.summary(), "fits_tflite_2.11": not reasons, "reasons_not_2.11": reasons,
            **({"source": source} if source else {})}


def _write_json(path, obj):
    """JSON with one key per line and lists of numbers kept on one line (shapes read as shapes)."""
    text = json.dumps(obj, indent=1)
    text = re.sub(r"\[[-\d.,\s]*\]", lambda m: "[" + ", ".join(m.group(0)[1:-1].replace(",", " ").split()) + "]", text)
    with open(path, "w") as f:
        f.write(text + "\n")


def facts_path(out):
    """student.tflite -> student.facts.json"""
    return os.path.splitext(os.fspath(out))[0] + ".facts.json"


def convert_litert(weights_path, out, patches=None):
    """Convert a weights file's model to ``out`` (.tflite) and write ``out``'s facts JSON -> facts."""
    model, manifest = torch_model(weights_path, patches)
    spec = manifest["input"]
    x = torch.zeros(1, spec["channels"], *spec["size"])
    t0 = time.perf_counter()
    _convert(model, x, out)
    seconds = time.perf_counter() - t0
    from lmref.detect import resolve_model
    src = resolve_model(weights_path)
    with open(src, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    cfg = manifest["config"].get("backbone_config") or manifest["config"]
    form = patches
    if form is None and "rank5_patches" in cfg:                  # MobileViT-v2: the form the manifest says
        form = "rank5" if cfg["rank5_patches"] else "rank6"
    record = facts_record(out, {"weights": os.path.basename(src), "sha256": digest,
                                "architecture": manifest["architecture"], "patches": form,
                                "input": [1, spec["channels"], *spec["size"]],
                                "converter": _versions(), "convert_seconds": round(seconds, 1)})
    _write_json(facts_path(out), record)
    return record


class TinyPatches(nn.Module):
    """A 1x1 conv, MobileViT-v2's unfold, x2, fold: the smallest graph that holds the unfold/fold of
    either form (for the committed static-gate test files)."""

    def __init__(self, rank5, channels=2):
        super().__init__()
        self.rank5 = rank5
        self.conv = nn.Conv2d(channels, channels, 1)

    def forward(self, x):
        h, w = x.shape[2:]
        p = unfold_patches(self.conv(x), 2, 2, self.rank5)                # [B, C, 4, N]
        return fold_patches(2 * p, h, w, 2, 2, self.rank5)                # [B, C, H, W]


def write_tiny(out_dir, seed=0):
    """Convert TinyPatches in both forms -> out_dir/patches_rank5.tflite, patches_rank6.tflite (+ facts)."""
    os.makedirs(out_dir, exist_ok=True)
    x = torch.zeros(1, 2, 4, 4)
    tiny_class = importlib.import_module("torch_impl.port").TinyPatches   # not __main__.TinyPatches:
    # litert-torch names tensors after the module's class, and the names should not depend on how we ran
    written = {}
    for form in PATCHES:
        torch.manual_seed(seed)
        out = os.path.join(out_dir, f"patches_{form}.tflite")
        _convert(tiny_class(form == "rank5").eval(), x, out)
        record = facts_record(out, {"model": "torch_impl.port.TinyPatches", "patches": form, "input": [1, 2, 4, 4],
                                    "seed": seed, "converter": _versions()})
        _write_json(facts_path(out), record)
        written[form] = record
    return written


def _summary_line(out, r):
    ops = ", ".join(o for o in r["op_codes"] if not o.endswith(" v1")) or "all version 1"
    verdict = "fits TFLite 2.11" if r["fits_tflite_2.11"] else "does NOT fit TFLite 2.11: " + "; ".join(r["reasons_not_2.11"])
    return (f"wrote {out} ({r['bytes']:,} bytes) and {facts_path(out)}: max tensor rank {r['max_tensor_rank']}, "
            f"min runtime {r['min_runtime_version']}, op versions > 1: {ops}\n{verdict}")


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m torch_impl.port", description=__doc__.split("\n\n")[0],
                                 epilog=__doc__.split("\n\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("litert", help="convert a weights file's model to .tflite (+ .facts.json)")
    c.add_argument("model", help="a weights file or a shipped model name")
    c.add_argument("out", help="output .tflite path")
    c.add_argument("--patches", choices=PATCHES, help="MobileViT-v2 unfold/fold form (default: the manifest's)")
    t = sub.add_parser("tiny", help="write the tiny unfold/fold files the static-gate tests read")
    t.add_argument("out_dir")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    try:
        if args.cmd == "litert":
            print(_summary_line(args.out, convert_litert(args.model, args.out, args.patches)))
        else:
            for form, r in write_tiny(args.out_dir).items():
                print(_summary_line(os.path.join(args.out_dir, f"patches_{form}.tflite"), r))
    except (ValueError, OSError) as e:
        print(f"torch_impl.port: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
