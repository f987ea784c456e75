"""Procedural video with exact ground truth: textured shapes that move, turn, scale, deform,
occlude each other, leave the frame and come back, among look-alike distractors, under changing
light, camera pan and zoom, motion blur and noise.

One generator serves the live synthetic source, training (``tools/train_nano.py``) and the
held-out benchmark (``tools/eval_vos.py``). A scene is a pure function of (config, seed): frame i
shows time ``i / fps`` and can be rendered in any order.

Seeds: training draws scenes from ``TRAIN_SEEDS``; the benchmark uses ``BENCHMARK_SEEDS``;
``VALIDATION_SEEDS`` give clips like the benchmark's for choosing settings (``eval_vos --split validation``),
so that the benchmark stays unseen. The three ranges never overlap (a test checks it).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

import cv2
import numpy as np

TRAIN_SEEDS = range(0, 1_000_000)
BENCHMARK_SEEDS = range(9_000_000, 9_000_000 + 64)
VALIDATION_SEEDS = range(8_000_000, 8_000_000 + 64)
BENCHMARK_FRAMES = 48
"""Default length of a benchmark clip."""

SHAPES = ("blob", "ellipse", "polygon", "star", "thin", "crescent")
TEXTURES = ("noise", "stripes", "checker", "spots", "gradient")


@dataclass(frozen=True)
class SceneConfig:
    """What a scene may contain; each scene draws its particulars from its seed."""

    width: int = 256
    height: int = 256
    num_objects: int = 3
    """Labelled objects, ids 1..num_objects."""
    num_distractors: int = 1
    """Unlabelled look-alikes: each copies a labelled object's shape and texture with a small change."""
    fps: float = 10.0
    """Frame i shows time i / fps; lower fps means more motion per frame."""
    size_range: tuple[float, float] = (0.12, 0.22)
    """Object radius as a fraction of the shorter frame side."""
    motion_hz: tuple[float, float] = (0.04, 0.12)
    """Frequency range of the position waves."""
    exits: bool = True
    """Some objects swing wide enough to leave the frame and come back."""
    rotation: bool = True
    deformation: bool = True
    camera: bool = True
    """Slow pan and zoom of the whole view."""
    lighting: bool = True
    """Brightness and a light gradient that change over time."""
    blur: bool = True
    """Motion blur on some frames of some scenes."""
    noise: bool = True

    def __post_init__(self) -> None:
        if self.width < 16 or self.height < 16:
            raise ValueError(f"scene size {self.width}x{self.height} is below the 16x16 minimum")
        if not 1 <= self.num_objects <= 32 or not 0 <= self.num_distractors <= 32:
            raise ValueError("num_objects must be within 1..32 and num_distractors within 0..32")
        if not self.fps > 0:
            raise ValueError(f"fps {self.fps} must be > 0")


@dataclass(frozen=True)
class _Wave:
    """centre + sum of amplitude * sin(2 pi freq t + phase) terms."""

    centre: float
    terms: tuple[tuple[float, float, float], ...]
    """(amplitude, freq_hz, phase) per term."""

    def at(self, t: float) -> float:
        return self.centre + sum(a * math.sin(2.0 * math.pi * f * t + p) for a, f, p in self.terms)


@dataclass(frozen=True)
class _Thing:
    """One shape in the scene (a labelled object when obj_id > 0, else a distractor)."""

    obj_id: int
    contour: np.ndarray
    """float32[N, 2] outline in units of the radius, centred on the origin."""
    texture: np.ndarray
    """uint8[T, T, 3] texture over the square [-1.3, 1.3]^2 of object space."""
    x: _Wave
    y: _Wave
    angle: _Wave
    """Radians."""
    scale: _Wave
    """Radius in px."""
    wobble: tuple[float, float, float]
    """(amplitude, freq_hz, phase) of a slow radial deformation (3 lobes)."""


@dataclass(frozen=True)
class _Look:
    """Whole-frame effects of a scene."""

    pan_x: _Wave
    pan_y: _Wave
    zoom: _Wave
    light: _Wave
    light_tilt: _Wave
    blur_px: float
    """Length of motion blur on blurred frames (0 = never)."""
    blur_every: int
    noise_sigma: float


TEXTURE_SPAN = 1.3
"""The texture square covers object coordinates [-TEXTURE_SPAN, TEXTURE_SPAN]."""


class Scene:
    """A procedural clip. ``render(i)`` -> (rgb uint8[H, W, 3], {obj_id: bool[H, W] visible pixels})."""

    def __init__(self, config: SceneConfig = SceneConfig(), seed: int = 0) -> None:
        self.config, self.seed = config, int(seed)
        rng = np.random.default_rng(self.seed)
        c = config
        side = min(c.width, c.height)
        # Background canvas is larger than the view so that the camera can pan and zoom.
        self._margin = 0.25 if c.camera else 0.0
        bh, bw = int(c.height * (1 + 2 * self._margin)), int(c.width * (1 + 2 * self._margin))
        self._background = _background(rng, bh, bw)
        labelled = [_make_thing(rng, k + 1, c, side, k, c.num_objects) for k in range(c.num_objects)]
        distractors = []
        for j in range(c.num_distractors):
            model = labelled[int(rng.integers(len(labelled)))]
            distractors.append(_look_alike(rng, model, c, side, -(j + 1)))
        things = labelled + distractors
        self._things = [things[i] for i in rng.permutation(len(things))]  # back to front
        self._look = _make_look(rng, c)

    @property
    def object_ids(self) -> list[int]:
        return list(range(1, self.config.num_objects + 1))

    def render(self, index: int) -> tuple[np.ndarray, dict[int, np.ndarray]]:
        """Frame ``index``: rgb uint8[H, W, 3] and each labelled object's visible pixels bool[H, W]."""
        c, t = self.config, index / self.config.fps
        cam = self._camera(t)
        rgb = cv2.warpAffine(self._background, cam, (c.width, c.height), flags=cv2.INTER_LINEAR,
                             borderMode=cv2.BORDER_REFLECT)
        labels = self._layers(t, cam, rgb)
        return self._effects(rgb, index, t), self._visible(labels)

    def visible_masks(self, index: int) -> dict[int, np.ndarray]:
        """Frame ``index``'s masks as :meth:`render` gives them, without drawing the image (cheaper)."""
        t = index / self.config.fps
        return self._visible(self._layers(t, self._camera(t), None))

    def visible_areas(self, index: int) -> dict[int, float]:
        """Each labelled object's visible share of frame ``index`` (``visible_masks(index)[k].mean()``,
        bit for bit, from one pass over the frame)."""
        c, t = self.config, index / self.config.fps
        counts = np.bincount(self._layers(t, self._camera(t), None).ravel(), minlength=len(self._things) + 1)
        n = c.height * c.width
        return dict(sorted((th.obj_id, counts[k + 1] / n) for k, th in enumerate(self._things) if th.obj_id > 0))

    def _layers(self, t: float, cam: np.ndarray, rgb: np.ndarray | None) -> np.ndarray:
        """int16[H, W]: 1 + the index of the front-most thing per pixel, 0 on background. With
        ``rgb``, each thing's texture is drawn into it too."""
        c = self.config
        labels = np.zeros((c.height, c.width), np.int16)
        for k, (thing, to_frame) in enumerate(self._placed(t, cam)):
            patch_mask, (px, py) = self._shape_patch(thing, t, to_frame)
            bx, by, w, h = cv2.boundingRect(patch_mask)  # of the nonzero pixels; (0, 0, 0, 0) when none
            if w == 0:
                continue
            x0, y0 = px + bx, py + by
            x1, y1 = x0 + w, y0 + h
            inside = patch_mask[by : by + h, bx : bx + w].view(bool)
            box = (slice(y0, y1), slice(x0, x1))
            if rgb is not None:
                # Warp the texture into the object's bounding box only.
                warp = _texture_to_frame(thing, to_frame)
                warp[:, 2] -= (x0, y0)
                patch = cv2.warpAffine(thing.texture, warp, (int(x1 - x0), int(y1 - y0)), flags=cv2.INTER_LINEAR,
                                       borderMode=cv2.BORDER_REFLECT)
                np.copyto(rgb[box], patch, where=inside[..., None])
            labels[box][inside] = k + 1
        return labels

    def _visible(self, labels: np.ndarray) -> dict[int, np.ndarray]:
        return dict(sorted((th.obj_id, labels == k + 1) for k, th in enumerate(self._things) if th.obj_id > 0))

    def full_masks(self, index: int) -> dict[int, np.ndarray]:
        """Each labelled object's whole shape on frame ``index``, hidden parts included."""
        c, t = self.config, index / self.config.fps
        masks = {}
        for th, to_frame in self._placed(t, self._camera(t)):
            if th.obj_id > 0:
                patch, (x0, y0) = self._shape_patch(th, t, to_frame)
                mask = np.zeros((c.height, c.width), bool)
                mask[y0 : y0 + patch.shape[0], x0 : x0 + patch.shape[1]] = patch.view(bool)
                masks[th.obj_id] = mask
        return dict(sorted(masks.items()))

    # --- geometry -------------------------------------------------------------------------------

    def _camera(self, t: float) -> np.ndarray:
        """float64[2, 3]: background canvas -> frame."""
        c, look = self.config, self._look
        z = look.zoom.at(t)
        cx, cy = c.width * (0.5 + self._margin), c.height * (0.5 + self._margin)
        px, py = look.pan_x.at(t), look.pan_y.at(t)
        # Scale by z about the canvas centre shifted by the pan, then move that point to the view centre.
        return np.array([[z, 0.0, c.width / 2 - z * (cx + px)], [0.0, z, c.height / 2 - z * (cy + py)]])

    def _placed(self, t: float, cam: np.ndarray) -> Iterator[tuple[_Thing, np.ndarray]]:
        """Back to front: each thing with its object-space -> frame affine float64[2, 3]."""
        z = cam[0, 0]
        for th in self._things:
            a, r = th.angle.at(t), th.scale.at(t) * z
            x, y = th.x.at(t), th.y.at(t)
            # Object positions live in view coordinates; the camera zooms about the view centre.
            cx = self.config.width / 2 + z * (x - self.config.width / 2)
            cy = self.config.height / 2 + z * (y - self.config.height / 2)
            ca, sa = math.cos(a) * r, math.sin(a) * r
            yield th, np.array([[ca, -sa, cx], [sa, ca, cy]])

    def _shape_patch(self, th: _Thing, t: float, to_frame: np.ndarray) -> tuple[np.ndarray, tuple[int, int]]:
        """The thing's outline at time ``t``, filled: uint8[h, w] (1 inside; ``.view(bool)`` for a
        mask) over the part of the frame around it, and that part's top-left corner (x, y) in the
        frame. The outline is shifted by whole pixels into the patch, so the fill gives the pixels a
        full-frame fill gives (compared on 1,125 frames of training scenes when this was written)."""
        c = self.config
        pts = th.contour
        amp, hz, ph = th.wobble
        if amp:
            theta = np.arctan2(pts[:, 1], pts[:, 0])
            pts = pts * (1.0 + amp * math.sin(2 * math.pi * hz * t + ph) * np.cos(3 * theta))[:, None]
        xy = pts @ to_frame[:, :2].T + to_frame[:, 2]
        (x_min, y_min), (x_max, y_max) = xy.min(axis=0), xy.max(axis=0)
        if x_max < 0 or x_min >= c.width or y_max < 0 or y_min >= c.height:  # wholly outside the frame
            return np.zeros((0, 0), np.uint8), (0, 0)
        # A pixel margin around the outline's extent, clipped to the frame.
        x0, y0 = max(0, math.floor(x_min) - 1), max(0, math.floor(y_min) - 1)
        x1, y1 = min(c.width, math.ceil(x_max) + 2), min(c.height, math.ceil(y_max) + 2)
        patch = np.zeros((y1 - y0, x1 - x0), np.uint8)
        fixed = np.round(xy * 16).astype(np.int32) - np.array([x0 * 16, y0 * 16], np.int32)  # 4 fractional bits
        cv2.fillPoly(patch, [fixed], 1, lineType=cv2.LINE_8, shift=4)
        return patch, (x0, y0)

    # --- appearance -----------------------------------------------------------------------------

    def _effects(self, rgb: np.ndarray, index: int, t: float) -> np.ndarray:
        c, look = self.config, self._look
        blurred = look.blur_px >= 2 and index % look.blur_every == 0
        if not (c.lighting or blurred or look.noise_sigma > 0):
            return rgb
        out = rgb.astype(np.float32)
        if c.lighting:
            ramp = np.linspace(-1.0, 1.0, c.width, dtype=np.float32)[None, :, None]
            out *= look.light.at(t) * (1.0 + look.light_tilt.at(t) * ramp)
        if blurred:
            n = int(look.blur_px)
            kernel = np.zeros((n, n), np.float32)
            kernel[n // 2, :] = 1.0 / n
            rot = cv2.getRotationMatrix2D(((n - 1) / 2, (n - 1) / 2), float(index * 37 % 180), 1.0)
            kernel = cv2.warpAffine(kernel, rot, (n, n))
            out = cv2.filter2D(out, -1, kernel / max(kernel.sum(), 1e-6))
        if look.noise_sigma > 0:
            noise_rng = np.random.default_rng((self.seed, index))
            out += noise_rng.standard_normal(out.shape[:2] + (1,), dtype=np.float32) * look.noise_sigma
        return np.clip(out, 0, 255).astype(np.uint8)


def benchmark_config() -> SceneConfig:
    """The held-out benchmark's scenes: 256 x 256, 2 objects and a look-alike, all effects on."""
    return SceneConfig(width=256, height=256, num_objects=2, num_distractors=1, fps=10.0)


CATEGORIES = ("clear", "occluded", "absent", "reappeared")
"""What an object's ground truth is on a frame, for scores by category:

- ``clear``: visible, at least ``OCCLUDED_BELOW`` of its in-frame shape showing;
- ``occluded``: visible, but partly hidden behind another thing;
- ``absent``: not visible at all (hidden or out of the frame): a correct answer is an empty mask;
- ``reappeared``: visible within ``REAPPEARED_FRAMES`` frames after being absent (takes precedence).
"""
OCCLUDED_BELOW = 0.9
REAPPEARED_FRAMES = 8


def frame_categories(scene: Scene, visible: Sequence[Mapping[int, np.ndarray]]) -> list[dict[int, str]]:
    """Per frame, each labelled object's category (see :data:`CATEGORIES`).

    ``visible[i]``: the visible masks of frame i, as ``scene.render(i)`` gave them; only the
    whole shapes (:meth:`Scene.full_masks`) are drawn again.
    """
    out: list[dict[int, str]] = []
    last_absent: dict[int, int] = {}
    for i, shown_masks in enumerate(visible):
        full = scene.full_masks(i)
        cats = {}
        for k in scene.object_ids:
            shown = int(shown_masks[k].sum()) if k in shown_masks else 0
            whole = int(full[k].sum()) if k in full else 0
            if shown == 0:
                cats[k] = "absent"
                last_absent[k] = i
            elif k in last_absent and i - last_absent[k] <= REAPPEARED_FRAMES:
                cats[k] = "reappeared"
            else:
                cats[k] = "clear" if shown >= OCCLUDED_BELOW * whole else "occluded"
        out.append(cats)
    return out


def benchmark_scene(index: int, seeds: Sequence[int] = BENCHMARK_SEEDS) -> Scene:
    """The scene of the benchmark's clip ``index`` (0-based, in :func:`benchmark_clips` order);
    ``seeds=VALIDATION_SEEDS`` gives the validation clips instead."""
    return Scene(benchmark_config(), seeds[index])


def benchmark_clips(count: int | None = None, frames: int | None = None, seeds: Sequence[int] = BENCHMARK_SEEDS
                    ) -> Iterator[tuple[str, list[np.ndarray], list[dict[int, np.ndarray]]]]:
    """The held-out benchmark: ``(name, rgb frames, ground-truth masks)`` per clip, ``count`` clips
    (all 64 by default) of ``frames`` frames (BENCHMARK_FRAMES by default), from fixed seeds
    (``seeds=VALIDATION_SEEDS`` for the validation clips)."""
    n = len(seeds) if count is None else count
    if not 1 <= n <= len(seeds):
        raise ValueError(f"there are 1..{len(seeds)} clips, asked for {n}")
    length = BENCHMARK_FRAMES if frames is None else frames
    for index in range(n):
        scene = benchmark_scene(index, seeds)
        rendered = [scene.render(i) for i in range(length)]
        yield f"synthetic-{scene.seed}", [r[0] for r in rendered], [r[1] for r in rendered]


# --- scene parts ------------------------------------------------------------------------------


def _make_thing(rng: np.random.Generator, obj_id: int, c: SceneConfig, side: int, k: int, n: int) -> _Thing:
    radius = side * rng.uniform(*c.size_range)
    lo_hz, hi_hz = c.motion_hz
    leaves = c.exits and rng.random() < 0.5
    # Start spread across the frame; objects that leave swing past the edge, the others stay inside.
    amp_x = (c.width / 2 + radius * 1.6) if leaves else rng.uniform(0.1, 0.35) * c.width
    start = ((k + 0.5) / n - 0.5) * c.width
    phase_x = math.asin(max(-1.0, min(1.0, start / amp_x)))
    if rng.random() < 0.5:
        phase_x = math.pi - phase_x
    x = _Wave(c.width / 2, ((amp_x, rng.uniform(lo_hz, hi_hz), phase_x),
                            (rng.uniform(0, 0.05) * c.width, rng.uniform(hi_hz, 3 * hi_hz), rng.uniform(0, 2 * math.pi))))
    y = _Wave(c.height / 2, ((c.height * rng.uniform(0.08, 0.3), rng.uniform(lo_hz, hi_hz), rng.uniform(0, 2 * math.pi)),))
    spin = rng.uniform(-0.6, 0.6) if c.rotation else 0.0
    angle = _Wave(rng.uniform(0, 2 * math.pi), ((abs(spin) * 3 + 1e-9, abs(spin) / 6 + 0.01, rng.uniform(0, 2 * math.pi)),)
                  if c.rotation else ())
    scale = _Wave(radius, ((radius * rng.uniform(0.1, 0.3), rng.uniform(lo_hz, hi_hz), rng.uniform(0, 2 * math.pi)),))
    wobble = (rng.uniform(0.03, 0.1), rng.uniform(0.1, 0.4), rng.uniform(0, 2 * math.pi)) if c.deformation else (0.0, 0.0, 0.0)
    tex_side = max(8, int(2 * TEXTURE_SPAN * radius * 1.3))
    return _Thing(obj_id, _contour(rng), _texture(rng, tex_side), x, y, angle, scale, wobble)


def _look_alike(rng: np.random.Generator, model: _Thing, c: SceneConfig, side: int, obj_id: int) -> _Thing:
    """A distractor: the model's outline and texture, a little recoloured and resized, moving on its own."""
    own = _make_thing(rng, obj_id, c, side, int(rng.integers(3)), 3)
    shift = rng.uniform(-12, 12)
    hsv = cv2.cvtColor(model.texture, cv2.COLOR_RGB2HSV).astype(np.int16)
    hsv[..., 0] = (hsv[..., 0] + int(shift)) % 180
    texture = cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2RGB)
    scale = _Wave(model.scale.centre * rng.uniform(0.85, 1.15), model.scale.terms)
    return _Thing(obj_id, model.contour, texture, own.x, own.y, own.angle, scale, own.wobble)


def _make_look(rng: np.random.Generator, c: SceneConfig) -> _Look:
    def wave(centre: float, amp: float) -> _Wave:
        return _Wave(centre, ((amp, rng.uniform(0.02, 0.1), rng.uniform(0, 2 * math.pi)),))

    cam = c.camera
    return _Look(
        pan_x=wave(0.0, c.width * 0.15 if cam else 0.0),
        pan_y=wave(0.0, c.height * 0.1 if cam else 0.0),
        zoom=wave(1.0, 0.12 if cam else 0.0),
        light=wave(rng.uniform(0.85, 1.1), 0.2 if c.lighting else 0.0),
        light_tilt=wave(0.0, 0.25 if c.lighting else 0.0),
        blur_px=rng.uniform(3, 9) if c.blur and rng.random() < 0.4 else 0.0,
        blur_every=int(rng.integers(3, 8)),
        noise_sigma=rng.uniform(0, 8) if c.noise else 0.0,
    )


def _contour(rng: np.random.Generator) -> np.ndarray:
    """float32[N, 2]: an outline of radius about 1 around the origin, of a random kind."""
    kind = SHAPES[int(rng.integers(len(SHAPES)))]
    theta = np.linspace(0, 2 * np.pi, 120, endpoint=False)
    if kind == "blob":
        r = 1 + sum(rng.uniform(0, 0.25 / h) * np.cos(h * (theta - rng.uniform(0, np.pi))) for h in (2, 3, 4, 5))
        pts = np.stack([r * np.cos(theta), r * np.sin(theta)], 1)
        pts[:, 1] *= rng.uniform(0.6, 1.0)
    elif kind == "ellipse":
        pts = np.stack([np.cos(theta), rng.uniform(0.35, 1.0) * np.sin(theta)], 1)
    elif kind == "polygon":
        n = int(rng.integers(3, 9))
        angles = np.sort(rng.uniform(0, 2 * np.pi, n))
        radii = rng.uniform(0.55, 1.0, n)
        pts = np.stack([radii * np.cos(angles), radii * np.sin(angles)], 1)
    elif kind == "star":
        n = int(rng.integers(4, 8))
        a = np.linspace(0, 2 * np.pi, 2 * n, endpoint=False)
        radii = np.where(np.arange(2 * n) % 2 == 0, 1.0, rng.uniform(0.35, 0.6))
        pts = np.stack([radii * np.cos(a), radii * np.sin(a)], 1)
    elif kind == "thin":
        width = rng.uniform(0.12, 0.3)
        bend = rng.uniform(-0.5, 0.5)
        s = np.linspace(-1, 1, 30)
        top = np.stack([s, bend * s**2 + width], 1)
        bottom = np.stack([s[::-1], bend * s[::-1] ** 2 - width], 1)
        pts = np.concatenate([top, bottom])
    else:  # crescent: a disc with a bite taken out
        outer = np.stack([np.cos(theta), np.sin(theta)], 1)
        keep = np.linalg.norm(outer - [rng.uniform(0.5, 0.9), 0.0], axis=1) > rng.uniform(0.6, 0.9)
        pts = outer[keep] if keep.sum() >= 3 else outer
        bite = np.linspace(pts[-1], pts[0], 12)[1:-1] * 0.3
        pts = np.concatenate([pts, bite])
    pts = pts - pts.mean(axis=0)
    return (pts / max(np.abs(pts).max(), 1e-6)).astype(np.float32)


def _texture(rng: np.random.Generator, size: int) -> np.ndarray:
    """uint8[size, size, 3]: a saturated colour (or two) in one of several patterns."""
    kind = TEXTURES[int(rng.integers(len(TEXTURES)))]
    hue = rng.uniform(0, 180)
    a, b = _colour(rng, hue), _colour(rng, (hue + rng.uniform(15, 50)) % 180)  # near hues: mixes stay saturated
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    if kind == "stripes":
        f, ang = rng.uniform(3, 10), rng.uniform(0, np.pi)
        w = (np.sin(2 * np.pi * f * (xx * math.cos(ang) + yy * math.sin(ang))) > 0).astype(np.float32)
    elif kind == "checker":
        f = rng.uniform(3, 8)
        w = ((np.floor(xx * f) + np.floor(yy * f)) % 2).astype(np.float32)
    elif kind == "spots":
        w = (_smooth_noise(rng, size, size, int(rng.integers(6, 16)), 1)[..., 0] > 0.6).astype(np.float32)
    elif kind == "gradient":
        w = xx * rng.uniform(0, 1) + yy * rng.uniform(0, 1)
        w = w / max(w.max(), 1e-6)
    else:
        w = _smooth_noise(rng, size, size, int(rng.integers(3, 10)), 1)[..., 0]
    mix = 0.75 if kind != "noise" else 0.3
    colour = a[None, None] * (1 - mix * w[..., None]) + b[None, None] * (mix * w[..., None])
    light = 0.75 + 0.35 * _smooth_noise(rng, size, size, 12, 1)
    return np.clip(colour * light, 0, 255).astype(np.uint8)


def _colour(rng: np.random.Generator, hue: float | None = None) -> np.ndarray:
    """float32[3] RGB of a saturated colour (of ``hue`` in OpenCV's 0..180 scale, else a random one)."""
    hue = rng.uniform(0, 180) if hue is None else hue
    hsv = np.array([[[hue, rng.uniform(150, 255), rng.uniform(140, 250)]]], np.uint8)
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0].astype(np.float32)


def _smooth_noise(rng: np.random.Generator, h: int, w: int, cells: int, channels: int = 3) -> np.ndarray:
    """float32[h, w, channels] in about [0, 1]: random values on a coarse grid, cubic-interpolated."""
    gh, gw = max(2, round(cells * h / max(h, w))), max(2, round(cells * w / max(h, w)))
    grid = rng.random((gh, gw, channels), dtype=np.float32)
    return cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC).reshape(h, w, channels)


def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """uint8[h, w, 3]: muted blotches with a pattern and grain; sometimes as busy as the objects."""
    base = 0.6 * _smooth_noise(rng, h, w, int(rng.integers(3, 9))) + 0.25 * _smooth_noise(rng, h, w, int(rng.integers(20, 60)))
    kind = rng.integers(3)
    if kind == 1:  # stripes or tiles
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        f = rng.uniform(0.02, 0.08)
        base += 0.15 * (np.sin(2 * np.pi * f * (xx + rng.uniform(0.3, 1) * yy)) > 0)[..., None]
    elif kind == 2:  # cluttered: faint coloured patches of object-like saturation
        for _ in range(int(rng.integers(4, 12))):
            centre = (int(rng.integers(w)), int(rng.integers(h)))
            axes = (int(rng.integers(4, max(5, w // 8))), int(rng.integers(4, max(5, h // 8))))
            colour = _colour(rng) / 255.0 * 0.7
            patch = np.zeros((h, w), np.uint8)
            cv2.ellipse(patch, centre, axes, float(rng.uniform(0, 180)), 0, 360, 1, -1)
            base[patch.astype(bool)] = 0.5 * base[patch.astype(bool)] + 0.5 * colour
    sat = rng.uniform(0.3, 0.7)
    base = sat * base + (1 - sat) * base.mean(axis=2, keepdims=True)
    grain = rng.normal(0.0, 0.02, (h, w, 1)).astype(np.float32)
    return np.clip((base + grain) * 200.0 + 20.0, 0, 255).astype(np.uint8)


def _texture_to_frame(th: _Thing, to_frame: np.ndarray) -> np.ndarray:
    """float64[2, 3]: texture pixel -> frame pixel, given the object-space -> frame affine."""
    side = th.texture.shape[0]
    px = side / (2 * TEXTURE_SPAN)  # texture px per object unit
    tex_to_obj = np.array([[1 / px, 0, -TEXTURE_SPAN], [0, 1 / px, -TEXTURE_SPAN], [0, 0, 1]])
    return (np.vstack([to_frame, [0, 0, 1]]) @ tex_to_obj)[:2]
