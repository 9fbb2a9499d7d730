"""Data for landmark models: readers for the public formats, crop geometry, training targets, and
the synthetic face generator.

    from lmref.data import readers, transforms, targets
    from lmref.data import synthetic            # NumPy + OpenCV face generator (imported lazily)

    faces = readers.read_300w_dir("300W/ibug")                 # images + .pts
    M = transforms.crop_matrix(transforms.landmark_box(pts), 256)
    heat = targets.point_heatmaps(transforms.apply_affine(pts, M))

Images are NumPy uint8 arrays [H, W, 3] in **RGB** order everywhere in this package (files are read
and written with OpenCV, which uses BGR; the readers and writers convert). Landmarks are float64
[N, 2] (x, y) in pixel coordinates with pixel centres at integers (0-based): the top-left pixel
covers [-0.5, 0.5] x [-0.5, 0.5].
"""
import importlib

from . import readers, targets, transforms  # noqa: F401

__all__ = ["readers", "targets", "transforms", "synthetic", "face3d"]


def __getattr__(name):
    # synthetic and face3d build their models on first use; import them only when asked for, which
    # also lets ``python -m lmref.data.synthetic`` run without a double import.
    if name in ("synthetic", "face3d", "paint", "scene"):
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
