"""Semi-supervised video object segmentation (VOS) evaluation, DAVIS-style.

Metrics (per frame, per object):

* **J** (region similarity): intersection over union of the predicted and ground-truth
  masks; 1.0 when both are empty.
* **F** (boundary accuracy): the F-measure of the masks' boundaries. A mask's boundary is its
  inner 1-pixel contour: the mask pixels with at least one 4-neighbour outside the mask, where
  pixels beyond the image edge count as outside (so a mask cut by the frame has a boundary
  along the frame). A predicted boundary pixel is correct when it lies within a disk of radius
  ``ceil(bound_th * image diagonal)`` pixels of a ground-truth boundary pixel (precision), and
  symmetrically for recall; F = 2PR / (P + R). 1.0 when both boundaries are empty, 0.0 when
  exactly one is.

A clip is scored by :func:`score_clip`: every object of the ground truth, on every annotated
frame except the prompt frames; an object absent from both the ground truth and the
prediction scores 1 on that frame (DAVIS convention). :func:`summarize` averages over all
objects of all clips, as the DAVIS 2017 benchmark does.

Data: :func:`load_mask_folder` reads DAVIS-style folders, :func:`read_label_map` /
:func:`read_masks` decode annotation PNGs (indexed, grayscale or colour), and
:func:`run_tracker_on_clip` runs a :class:`~streamtrack.tracker.Tracker` prompted with the
first ground-truth mask of each object.
"""

from __future__ import annotations

import math
import re
import struct
import time
from collections import abc
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Union

import cv2
import numpy as np

DEFAULT_BOUND_TH = 0.008
"""DAVIS boundary tolerance: 0.8% of the image diagonal (8 px at 480x854)."""

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

ObjectMasks = dict[int, np.ndarray]
"""obj_id -> bool[H, W] for one frame."""
GroundTruth = Union[abc.Sequence[Union[ObjectMasks, None]], Mapping[int, ObjectMasks]]
"""Per-frame ground truth: a list with ``None`` for frames without annotation, or a sparse
``{frame_index: {obj_id: mask}}``. An annotated frame labels every object: an object missing
from it is absent (empty mask) on that frame."""


class DatasetError(ValueError):
    """A dataset folder or annotation file cannot be used; the message says why."""


# ------------------------------------------------------------------------------ metrics


def region_similarity(pred: np.ndarray, gt: np.ndarray) -> float:
    """J: IoU of two ``bool[H, W]`` masks; 1.0 when both are empty."""
    pred, gt = _pair(pred, gt)
    union = np.count_nonzero(pred | gt)
    if union == 0:
        return 1.0
    return np.count_nonzero(pred & gt) / union


def mask_boundary(mask: np.ndarray) -> np.ndarray:
    """``bool[H, W]`` inner contour of ``bool[H, W]`` ``mask``: mask pixels with a 4-neighbour
    outside the mask or outside the image."""
    m = np.ascontiguousarray(mask, dtype=np.uint8)
    cross = cv2.getStructuringElement(cv2.MORPH_CROSS, (3, 3))
    inner = cv2.erode(m, cross, borderType=cv2.BORDER_CONSTANT, borderValue=0)
    return (m > inner)


def boundary_radius(shape: tuple[int, int], bound_th: float = DEFAULT_BOUND_TH) -> int:
    """Tolerance radius in pixels: ``bound_th`` pixels if >= 1, else that fraction of the image
    diagonal, rounded up."""
    if bound_th >= 1:
        return int(math.ceil(bound_th))
    return int(math.ceil(bound_th * math.hypot(shape[0], shape[1])))


def boundary_f(pred: np.ndarray, gt: np.ndarray, bound_th: float = DEFAULT_BOUND_TH) -> float:
    """F: boundary F-measure of two ``bool[H, W]`` masks (see the module docstring)."""
    pred, gt = _pair(pred, gt)
    pb, gb = mask_boundary(pred), mask_boundary(gt)
    n_pred, n_gt = np.count_nonzero(pb), np.count_nonzero(gb)
    if n_pred == 0 and n_gt == 0:
        return 1.0
    if n_pred == 0 or n_gt == 0:
        return 0.0
    disk = _disk(boundary_radius(gt.shape, bound_th))
    gt_near = cv2.dilate(gb.astype(np.uint8), disk) > 0
    pred_near = cv2.dilate(pb.astype(np.uint8), disk) > 0
    precision = np.count_nonzero(pb & gt_near) / n_pred
    recall = np.count_nonzero(gb & pred_near) / n_gt
    if precision + recall == 0:
        return 0.0
    return 2 * precision * recall / (precision + recall)


def _disk(radius: int) -> np.ndarray:
    """``uint8[2r+1, 2r+1]``: 1 where x^2 + y^2 <= r^2."""
    r = np.arange(-radius, radius + 1)
    return ((r[:, None] ** 2 + r[None, :] ** 2) <= radius * radius).astype(np.uint8)


def _pair(pred: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pred, gt = np.asarray(pred, dtype=bool), np.asarray(gt, dtype=bool)
    if pred.ndim != 2 or pred.shape != gt.shape:
        raise ValueError(f"masks must be 2-D of the same shape, got {list(pred.shape)} and {list(gt.shape)}")
    return pred, gt


# ------------------------------------------------------------------------------ scoring


@dataclass(frozen=True)
class ClipScore:
    """Scores of one clip. ``j``/``f`` average over its objects, each object's score averaging
    over the clip's scored frames."""

    name: str
    j_per_object: dict[int, float]
    """obj_id -> mean J over the scored frames."""
    f_per_object: dict[int, float]
    """obj_id -> mean F over the scored frames."""
    j: float
    """Mean of ``j_per_object`` (NaN when nothing was scored)."""
    f: float
    jf: float
    """(j + f) / 2."""
    frames: int
    """Frames scored (annotated, not a prompt frame)."""


def score_clip(
    preds: abc.Sequence[ObjectMasks],
    gts: GroundTruth,
    skip: Iterable[int] = (),
    name: str = "",
    bound_th: float = DEFAULT_BOUND_TH,
) -> ClipScore:
    """Score predictions against the ground truth.

    ``preds[i]``: obj_id -> ``bool[H, W]`` on frame i (a missing object is an empty mask).
    ``gts``: see :data:`GroundTruth`. Frames in ``skip`` (the prompt frames) and frames without
    annotation are not scored. The objects are those non-empty on some annotated frame;
    predicted objects not in the ground truth are ignored.
    """
    gt_frames = as_sparse(gts)
    skip = set(skip)
    objects = sorted({k for masks in gt_frames.values() for k, m in masks.items() if np.any(m)})
    scored = sorted(i for i in gt_frames if i not in skip)
    if scored and scored[-1] >= len(preds):
        raise ValueError(f"frame {scored[-1]} is annotated but there are only {len(preds)} predicted frames")
    j_sum = {k: 0.0 for k in objects}
    f_sum = {k: 0.0 for k in objects}
    for i in scored:
        for k, j, f in _frame_scores(i, preds[i], gt_frames[i], objects, bound_th):
            j_sum[k] += j
            f_sum[k] += f
    n = len(scored)
    j_obj = {k: j_sum[k] / n for k in objects} if n else {}
    f_obj = {k: f_sum[k] / n for k in objects} if n else {}
    j = float(np.mean(list(j_obj.values()))) if j_obj else math.nan
    f = float(np.mean(list(f_obj.values()))) if f_obj else math.nan
    return ClipScore(name, j_obj, f_obj, j, f, (j + f) / 2, n)


def score_by_category(
    preds: abc.Sequence[ObjectMasks],
    gts: GroundTruth,
    categories: abc.Sequence[Mapping[int, str]],
    skip: Iterable[int] = (),
    bound_th: float = DEFAULT_BOUND_TH,
) -> dict[str, tuple[float, float, int]]:
    """J and F summed over (object, frame) pairs by category: ``{category: (J sum, F sum, pairs)}``.

    ``categories[i]``: obj_id -> category name on frame i (e.g. ``procgen.frame_categories``);
    frames in ``skip`` (prompt frames) and frames without annotation are left out, and so are an
    object's frames before its first non-empty ground truth (it is not prompted yet). Sums, so
    clips can be pooled.
    """
    gt_frames = as_sparse(gts)
    skip = set(skip)
    out: dict[str, tuple[float, float, int]] = {}
    started: set[int] = set()
    for i, cats in enumerate(categories):
        gt = gt_frames.get(i)
        if gt is None:
            continue
        started.update(k for k in cats if np.any(gt.get(k, False)))
        if i in skip:
            continue
        for k, j, f in _frame_scores(i, preds[i], gt, [k for k in cats if k in started], bound_th):
            j_sum, f_sum, n = out.get(cats[k], (0.0, 0.0, 0))
            out[cats[k]] = (j_sum + j, f_sum + f, n + 1)
    return out


AGE_EDGES = (8, 16, 32)
"""Bounds of the "frames since the prompt" groups: 1-7, 8-15, 16-31 and 32 or more."""


def age_groups(edges: abc.Sequence[int] = AGE_EDGES) -> list[str]:
    """Names of the groups :func:`frames_since_prompt` assigns, in order: ``["1-7", ..., "32+"]``."""
    lows = [1, *edges]
    return [f"{lo}-{hi - 1}" for lo, hi in zip(lows, edges)] + [f"{edges[-1]}+"]


def frames_since_prompt(gts: GroundTruth, length: int, edges: abc.Sequence[int] = AGE_EDGES
                        ) -> list[dict[int, str]]:
    """Per frame, obj_id -> how long ago the object was prompted (its first non-empty ground
    truth), as a group name of :func:`age_groups`; for :func:`score_by_category`. An object gets
    no entry on its prompt frame and before it. Drift shows as scores falling with the group."""
    first: dict[int, int] = {}
    for i, masks in sorted(as_sparse(gts).items()):
        for k, m in masks.items():
            if k not in first and np.any(m):
                first[k] = i
    names = age_groups(edges)
    return [{k: names[int(np.searchsorted(edges, i - p, side="right"))] for k, p in first.items() if i > p}
            for i in range(length)]


def summarize(scores: abc.Sequence[ClipScore]) -> dict[str, float | int]:
    """Dataset means: ``{"J", "F", "J&F", "clips", "objects", "frames"}``.

    J and F average over every object of every clip (each object's score is its mean over its
    clip's scored frames), as the DAVIS 2017 benchmark does; J&F = (J + F) / 2. Clips with no
    scored frame are left out (and not counted); with none left the means are NaN.
    """
    used = [s for s in scores if s.frames > 0 and s.j_per_object]
    js = [v for s in used for v in s.j_per_object.values()]
    fs = [v for s in used for v in s.f_per_object.values()]
    j = float(np.mean(js)) if js else math.nan
    f = float(np.mean(fs)) if fs else math.nan
    return {"J": j, "F": f, "J&F": (j + f) / 2, "clips": len(used), "objects": len(js),
            "frames": sum(s.frames for s in used)}


def as_sparse(gts: GroundTruth) -> dict[int, ObjectMasks]:
    """:data:`GroundTruth` -> ``{frame_index: {obj_id: mask}}`` of the annotated frames."""
    if isinstance(gts, Mapping):
        return {int(i): dict(m) for i, m in gts.items()}
    return {i: dict(m) for i, m in enumerate(gts) if m is not None}


def _frame_scores(
    index: int, pred: ObjectMasks, gt: ObjectMasks, objects: Iterable[int], bound_th: float
) -> Iterator[tuple[int, float, float]]:
    """``(obj_id, J, F)`` of each of ``objects`` on frame ``index``. A mask missing from ``pred``
    or ``gt`` is empty; an object empty in both scores 1 (as when nothing is annotated or predicted)."""
    shape = _frame_shape(gt, pred)
    empty = None if shape is None else np.zeros(shape, dtype=bool)
    for k in objects:
        if empty is None:
            yield k, 1.0, 1.0
            continue
        g, p = gt.get(k, empty), pred.get(k, empty)
        if np.shape(g) != shape or np.shape(p) != shape:
            raise ValueError(
                f"frame {index}, object {k}: prediction {list(np.shape(p))} and ground truth "
                f"{list(np.shape(g))} differ in size"
            )
        yield k, region_similarity(p, g), boundary_f(p, g, bound_th)


def _frame_shape(*frames: ObjectMasks) -> tuple[int, int] | None:
    for masks in frames:
        for m in masks.values():
            return tuple(np.shape(m))
    return None


# ------------------------------------------------------------------------------ tracking

PromptKind = Literal["mask", "box", "point"]


def run_tracker_on_clip(
    tracker,
    frames: Iterable[np.ndarray],
    gts: GroundTruth,
    prompt: PromptKind = "mask",
    on_frame: Callable[[int], None] | None = None,
) -> tuple[list[ObjectMasks], list[float], set[int]]:
    """Semi-supervised VOS: track ``frames`` (``uint8[H, W, 3]`` RGB), prompting each object on
    the first frame where its ground-truth mask is non-empty.

    ``prompt``: ``"mask"`` gives the ground-truth mask; ``"box"`` its bounding box; ``"point"``
    one foreground click at the mask pixel farthest from its boundary.
    ``tracker``: a :class:`~streamtrack.tracker.Tracker`, reset first; it needs as many
    object slots as the clip has objects. ``on_frame(i)`` is called after each frame.

    Returns ``(preds, latency_ms, prompt_frames)``: per frame obj_id -> ``bool[H, W]`` at
    source resolution (every tracked object), the wall time of ``track`` plus that frame's
    ``add_prompt`` calls in milliseconds, and the indices of frames with a prompt.
    """
    from streamtrack.tracker import Prompt

    if prompt not in ("mask", "box", "point"):
        raise ValueError(f"prompt must be 'mask', 'box' or 'point', got {prompt!r}")
    gt_frames = as_sparse(gts)
    tracker.reset()
    prompted: set[int] = set()
    preds: list[ObjectMasks] = []
    latency: list[float] = []
    prompt_frames: set[int] = set()
    for i, rgb in enumerate(frames):
        new = [(k, np.asarray(m, dtype=bool)) for k, m in sorted(gt_frames.get(i, {}).items())
               if k not in prompted and np.any(m)]
        start = time.perf_counter()
        result = tracker.track(rgb)
        for k, m in new:
            result = tracker.add_prompt(_make_prompt(Prompt, k, m, prompt))
        latency.append((time.perf_counter() - start) * 1000.0)
        if new:
            prompt_frames.add(i)
            prompted.update(k for k, _ in new)
        preds.append({o.obj_id: o.mask for o in result.objects})
        if on_frame is not None:
            on_frame(i)
    return preds, latency, prompt_frames


def count_objects(gts: GroundTruth) -> int:
    """Objects that are non-empty on some annotated frame (the tracker slots a clip needs)."""
    return len({k for masks in as_sparse(gts).values() for k, m in masks.items() if np.any(m)})


def _make_prompt(prompt_cls, obj_id: int, mask: np.ndarray, kind: str):
    if kind == "mask":
        return prompt_cls(obj_id, mask=mask)
    ys, xs = np.nonzero(mask)
    if kind == "box":
        return prompt_cls(obj_id, box=(float(xs.min()), float(ys.min()), float(xs.max()), float(ys.max())))
    dist = cv2.distanceTransform(np.pad(mask, 1).astype(np.uint8), cv2.DIST_L2, 5)[1:-1, 1:-1]
    y, x = np.unravel_index(int(np.argmax(dist)), dist.shape)
    return prompt_cls(obj_id, points=((float(x), float(y)),), labels=(1,))


# ------------------------------------------------------------------------------ data


@dataclass(frozen=True)
class Sequence:
    """One annotated video: frame files in order and the annotation file of some frames."""

    name: str
    frames: tuple[Path, ...]
    masks: dict[int, Path] = field(default_factory=dict)
    """frame index -> annotation PNG (often only frame 0 in test sets)."""

    def read_frame(self, index: int) -> np.ndarray:
        """``uint8[H, W, 3]`` RGB."""
        return read_rgb(self.frames[index])

    def iter_frames(self) -> Iterable[np.ndarray]:
        """Every frame, ``uint8[H, W, 3]`` RGB, read lazily."""
        return (read_rgb(p) for p in self.frames)

    def read_annotations(self) -> dict[int, ObjectMasks]:
        """``{frame_index: {obj_id: bool[H, W]}}`` of the annotated frames."""
        return {i: read_masks(p) for i, p in sorted(self.masks.items())}


def load_mask_folder(path: str | Path, names: Iterable[str] | None = None) -> list[Sequence]:
    """The sequences of a DAVIS-style folder, sorted by name.

    Layouts:

    * ``DIR/JPEGImages/<seq>/*.jpg|png`` with ``DIR/Annotations/<seq>/*.png``; a resolution
      level between them (``JPEGImages/480p/<seq>``, as DAVIS ships) is found automatically,
      ``480p`` preferred when there are several.
    * one sequence named after DIR: ``DIR/frames/*`` with ``DIR/masks/*.png``.

    Files sort by name with numbers compared as numbers (``2.jpg`` before ``10.jpg``). An
    annotation belongs to the frame with the same file stem; masks may exist for only some
    frames. ``names`` keeps only those sequences. Sequences may have no annotation at all
    (``masks`` empty). Raises :class:`DatasetError` when the layout is not recognised, no
    sequence has frames, or an annotation has no frame.
    """
    root = Path(path)
    if not root.is_dir():
        raise DatasetError(f"{root}: no such folder")
    if (root / "JPEGImages").is_dir():
        seqs = _load_davis(root)
    elif (root / "frames").is_dir() and (root / "masks").is_dir():
        seqs = [_load_sequence(root.resolve().name, root / "frames", root / "masks")]
    else:
        raise DatasetError(
            f"{root}: not a DAVIS-style folder; expected DIR/JPEGImages/<seq>/ with DIR/Annotations/<seq>/, "
            "or DIR/frames/ with DIR/masks/"
        )
    seqs = [s for s in seqs if s.frames]
    if names is not None:
        wanted = list(dict.fromkeys(names))
        have = {s.name: s for s in seqs}
        unknown = [n for n in wanted if n not in have]
        if unknown:
            raise DatasetError(f"{root}: no sequence(s) {', '.join(unknown)}; found {', '.join(have) or 'none'}")
        seqs = [have[n] for n in wanted]
    if not seqs:
        raise DatasetError(f"{root}: no sequences with frames found")
    return seqs


def _load_davis(root: Path) -> list[Sequence]:
    images, annotations = root / "JPEGImages", root / "Annotations"
    if not annotations.is_dir():
        raise DatasetError(f"{root}: has JPEGImages/ but no Annotations/")
    subdirs = _subdirs(images)
    if subdirs and not any(_image_files(d) for d in subdirs):  # a resolution level: JPEGImages/480p/<seq>
        levels = [d.name for d in subdirs if (annotations / d.name).is_dir()]
        if not levels:
            raise DatasetError(f"{images}: no sequence folders with images, and no matching level in {annotations}")
        level = "480p" if "480p" in levels else levels[0]
        images, annotations = images / level, annotations / level
        subdirs = _subdirs(images)
    return [_load_sequence(d.name, d, annotations / d.name) for d in subdirs]


def _load_sequence(name: str, frame_dir: Path, mask_dir: Path) -> Sequence:
    frames = tuple(_image_files(frame_dir))
    index = {}
    for i, p in enumerate(frames):
        index.setdefault(p.stem, i)
    masks: dict[int, Path] = {}
    if mask_dir.is_dir():
        for p in _image_files(mask_dir, (".png",)):
            if p.stem not in index:
                raise DatasetError(f"annotation {p} has no frame named {p.stem}.* in {frame_dir}")
            masks[index[p.stem]] = p
    return Sequence(name, frames, dict(sorted(masks.items())))


def _subdirs(path: Path) -> list[Path]:
    return sorted((p for p in path.iterdir() if p.is_dir() and not p.name.startswith(".")),
                  key=lambda p: _natural_key(p.name))


def _image_files(path: Path, extensions: tuple[str, ...] = IMAGE_EXTENSIONS) -> list[Path]:
    files = (p for p in path.iterdir()
             if p.is_file() and p.suffix.lower() in extensions and not p.name.startswith("."))
    return sorted(files, key=lambda p: _natural_key(p.name))


def _natural_key(name: str) -> list:
    """``"f10.jpg"`` -> ``["f", 10, ".jpg"]``: numbers compare as numbers."""
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name)]


def read_rgb(path: str | Path) -> np.ndarray:
    """``uint8[H, W, 3]`` RGB image."""
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise DatasetError(f"{path}: cannot be read as an image")
    return np.ascontiguousarray(img[..., ::-1])


def read_masks(path: str | Path) -> ObjectMasks:
    """The objects of an annotation PNG: obj_id -> ``bool[H, W]`` (see :func:`read_label_map`)."""
    labels = read_label_map(path)
    return {int(k): labels == k for k in np.unique(labels) if k != 0}


def read_label_map(path: str | Path) -> np.ndarray:
    """``int64[H, W]`` object ids of an annotation PNG; 0 is background.

    * indexed (palette) PNG: the palette index of each pixel, as DAVIS stores masks (OpenCV
      decodes these to colours, which are mapped back through the file's own palette; when
      two entries share a colour the lower index wins);
    * grayscale (8 or 16 bit), or colour with equal channels: the value (a 0/255 mask is
      object 255);
    * other colour PNGs: the index of the colour in the standard DAVIS/VOC palette
      (:func:`davis_palette`); a colour outside it gets ``256 + 65536 r + 256 g + b``, so
      it is the same object on every frame.

    Every nonzero id is an object; DAVIS's void label (255) is not treated specially.
    """
    raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if raw is None:
        raise DatasetError(f"{path}: cannot be read as an image")
    if raw.ndim == 2:
        return raw.astype(np.int64)
    if raw.shape[2] == 1:
        return raw[..., 0].astype(np.int64)
    rgb = raw[..., 2::-1].astype(np.int64)
    palette = _png_palette(path)
    if palette is None and (rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all():
        return rgb[..., 0]
    return _colours_to_ids(rgb, davis_palette() if palette is None else palette)


def davis_palette(n: int = 256) -> np.ndarray:
    """``uint8[n, 3]`` RGB: the standard VOC/DAVIS label palette. Index i spreads its bits
    over the channels, most significant first: bit 3k of i sets bit (7 - k) of red, bit 3k + 1
    of green, bit 3k + 2 of blue. 0 -> black, 1 -> (128, 0, 0), 2 -> (0, 128, 0), ..."""
    out = np.zeros((n, 3), dtype=np.uint8)
    for i in range(n):
        rgb = [0, 0, 0]
        for k in range(8):
            for c in range(3):
                if (i >> (3 * k + c)) & 1:
                    rgb[c] |= 1 << (7 - k)
        out[i] = rgb
    return out


def _colours_to_ids(rgb: np.ndarray, palette: np.ndarray) -> np.ndarray:
    """``int64[H, W, 3]`` RGB -> ``int64[H, W]`` palette indices (unknown colours see
    :func:`read_label_map`)."""
    keys = (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]
    pal = palette.astype(np.int64)
    lookup: dict[int, int] = {}
    for i, key in enumerate(((pal[:, 0] << 16) | (pal[:, 1] << 8) | pal[:, 2]).tolist()):
        lookup.setdefault(key, i)
    uniq, inverse = np.unique(keys, return_inverse=True)
    ids = np.array([lookup.get(k, 0 if k == 0 else 256 + k) for k in uniq.tolist()], dtype=np.int64)
    return ids[inverse].reshape(keys.shape)


def _png_palette(path: str | Path) -> np.ndarray | None:
    """``uint8[N, 3]`` RGB palette (PLTE chunk) of an indexed PNG file; None for other files."""
    with open(path, "rb") as fh:
        if fh.read(8) != PNG_SIGNATURE:
            return None
        colour_type = None
        while True:
            head = fh.read(8)
            if len(head) < 8:
                return None
            length, kind = struct.unpack(">I4s", head)
            if kind in (b"IDAT", b"IEND"):  # PLTE comes before the image data
                return None
            body = fh.read(length)
            fh.seek(4, 1)  # CRC
            if kind == b"IHDR" and len(body) >= 10:
                colour_type = body[9]
            elif kind == b"PLTE":
                if colour_type != 3 or len(body) % 3:
                    return None
                return np.frombuffer(body, dtype=np.uint8).reshape(-1, 3).copy()
