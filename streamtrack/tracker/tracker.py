"""The streaming tracker: frames in one at a time, masks out, memory bounded.

Call :meth:`Tracker.track` with each frame; prompt with :meth:`Tracker.add_prompt`
on the frame just tracked (a new object starts there; for a tracked object it is
a correction). All objects are tracked in one batched pass over one image
encoding per frame.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from streamtrack.model import SAM2, BackboneFeatures
from streamtrack.postprocess import fill_holes, non_overlapping
from streamtrack.preprocess import image_to_input, logits_to_source, to_model_coords
from streamtrack.timing import StageTimes
from streamtrack.tracker import heads
from streamtrack.tracker.bank import BankShape, MemoryBank
from streamtrack.tracker.graph import StaticStep
from streamtrack.tracker.step import condition_on_memory, frame_step, memory_view
from streamtrack.tracker.types import FrameResult, ObjectResult, Prompt, PromptError, TrackerConfig

PREV_LOGITS_CLAMP = 32.0
"""Earlier logits fed back with a new click are clamped to +-32, as the official predictor does."""


@dataclass
class _Frame:
    """The frame just tracked: kept until the next one, for prompts and memory encoding."""

    index: int
    source_hw: tuple[int, int]
    feats: BackboneFeatures


@dataclass
class _Object:
    """One tracked object: its bank row and its output on the current frame."""

    obj_id: int
    row: int
    low_res: torch.Tensor
    """float[1, 1, S/4, S/4] logits on the current frame (after hole filling)."""
    object_score: torch.Tensor
    """float[1, 1]."""
    iou: float
    obj_ptr: torch.Tensor
    """float[256]."""
    tracked: bool
    """The current output came from tracking with memory (False: from a first prompt)."""
    pending_memory: bool = False
    """A prompt changed the output: encode its memory before the next frame."""
    pending_as_cond: bool = False


class Tracker:
    def __init__(self, model: SAM2, config: TrackerConfig = TrackerConfig()) -> None:
        self.model = model.eval()
        self.config = config
        cfg = model.cfg
        self.bank = MemoryBank(
            BankShape(config.max_objects, config.max_cond_frames, cfg.num_maskmem, cfg.max_obj_ptrs, cfg.embed_size,
                      cfg.mem_dim, cfg.hidden_dim),
            self.device,
        )
        on_cuda = self.device.type == "cuda"
        self.fixed_shapes = config.fixed_shapes if config.fixed_shapes is not None else on_cuda
        graph = config.cuda_graph if config.cuda_graph is not None else on_cuda and self.fixed_shapes
        if graph and not (self.fixed_shapes and on_cuda):
            raise ValueError("cuda_graph needs a CUDA device and fixed_shapes")
        self.static_step = StaticStep(model, self.bank, config.stream_length, graph) if self.fixed_shapes else None
        """With fixed shapes, the frame step on static buffers (a CUDA graph on CUDA)."""
        self._objects: dict[int, _Object] = {}
        self._frame: _Frame | None = None
        self._next_index = 0

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def object_ids(self) -> list[int]:
        return list(self._objects)

    @property
    def frame_index(self) -> int | None:
        """Index of the frame just tracked (None before the first)."""
        return None if self._frame is None else self._frame.index

    # ----------------------------------------------------------------- frames

    def track(self, image: np.ndarray, times: StageTimes | None = None) -> FrameResult:
        """Track every object on the next frame: ``uint8[H, W, 3]`` RGB.

        ``times`` (optional) receives the end time of each stage (preprocess, image
        encoder, memory attention, decoder, memory encoder).
        """
        x = image_to_input(image, self.model.image_size, self.device)
        if times is not None:
            times.mark("preprocess")
        return self.track_tensor(x, image.shape[:2], times)

    @torch.inference_mode()
    def track_tensor(self, x: torch.Tensor, source_hw: tuple[int, int], times: StageTimes | None = None) -> FrameResult:
        """Tensor layer of :meth:`track`: ``float[1, 3, S, S]`` normalised model input."""
        self._flush_pending_memory()
        feats = self.model.encode_image(x)
        if times is not None:
            times.mark("image_encoder")
        self._frame = _Frame(self._next_index, tuple(source_hw), feats)
        self._next_index += 1
        if self._objects:
            self._track_objects(list(self._objects.values()), times)
        return self.result()

    def _track_objects(self, objs: list[_Object], times: StageTimes | None = None) -> None:
        """Run the per-frame step for every object, in one batch."""
        frame = self._frame
        if self.static_step is not None:  # every row, so shapes never depend on the object count
            active = torch.zeros(self.config.max_objects, dtype=torch.bool, device=self.device)
            active[[o.row for o in objs]] = True
            index = [o.row for o in objs]
            out = self.static_step(frame.feats, frame.index, active, times)
        else:
            rows = torch.tensor([o.row for o in objs], device=self.device)
            active = torch.ones(len(objs), dtype=torch.bool, device=self.device)
            index = list(range(len(objs)))
            out = frame_step(self.model, self.bank, frame.feats, frame.index, rows, active, False,
                             self.config.stream_length, times)
        low = fill_holes(out.low_res[index], self.config.fill_hole_area)
        for i, (o, k) in enumerate(zip(objs, index)):
            o.low_res, o.object_score, o.iou = low[i : i + 1], out.object_score[k : k + 1], float(out.iou[k])
            o.obj_ptr, o.tracked, o.pending_memory = out.obj_ptr[k], True, False

    # ---------------------------------------------------------------- prompts

    @torch.inference_mode()
    def add_prompt(self, prompt: Prompt) -> FrameResult:
        """Prompt an object on the frame just tracked and return that frame's updated result.

        A new ``obj_id`` starts a new object there. For an object already tracked on
        this frame the prompt is a correction: it is decoded with the object's memory
        and its previous logits, as the official predictor does for clicks on a
        tracked frame.
        """
        frame = self._frame
        if frame is None:
            raise PromptError("no frame yet: call track(frame) first, then prompt on it")
        obj = self._objects.get(prompt.obj_id)
        if obj is None:
            obj = self._new_object(prompt.obj_id)
        if prompt.mask is not None:
            out = heads.mask_as_output(self.model, frame.feats.embed, frame.feats.high_res, self._mask_input(prompt.mask))
        else:
            out = self._decode_points(obj, prompt)
        obj.low_res = fill_holes(out.low_res, self.config.fill_hole_area)
        obj.object_score, obj.iou, obj.obj_ptr = out.object_score, float(out.iou[0]), out.obj_ptr[0]
        obj.pending_memory = True
        obj.pending_as_cond = not obj.tracked or self.config.corrections_as_cond
        return self.result()

    def _decode_points(self, obj: _Object, prompt: Prompt) -> heads.HeadOutput:
        frame, model = self._frame, self.model
        xy, labels = [], []
        if prompt.box is not None:
            xy += [prompt.box[:2], prompt.box[2:]]
            labels += [2, 3]
        xy += list(prompt.points)
        labels += list(prompt.labels)
        coords = to_model_coords(torch.tensor([xy], dtype=torch.float32, device=self.device), frame.source_hw,
                                 model.image_size)
        labels_t = torch.tensor([labels], dtype=torch.int32, device=self.device)
        prev = None if obj.low_res is None else obj.low_res.clamp(-PREV_LOGITS_CLAMP, PREV_LOGITS_CLAMP)
        multimask = prompt.num_points == 1
        if obj.tracked:
            rows = torch.tensor([obj.row], device=self.device)
            view = memory_view(model, self.bank, rows, frame.index, self.fixed_shapes, self.config.stream_length)
            pix = condition_on_memory(model, frame.feats.embed, frame.feats.embed_pos, view)
        else:
            pix = frame.feats.embed + model.no_mem_embed.view(1, -1, 1, 1)
        if obj.tracked or model.prompt_decoder is None:
            return heads.decode(model, pix, frame.feats.high_res, coords, labels_t, prev, multimask)
        # The model's own prompt decoder answers; its mask then goes in as a mask prompt would.
        out = heads.choose(model, model.decode_prompt(pix, frame.feats.high_res, coords, labels_t, prev, multimask))
        return heads.mask_as_output(model, frame.feats.embed, frame.feats.high_res, (out.high_res > 0).float())

    def _mask_input(self, mask: np.ndarray) -> torch.Tensor:
        """A source mask -> ``float[1, 1, S, S]`` in {0, 1} (bilinear antialiased resize, then >= 0.5)."""
        m = torch.as_tensor(np.asarray(mask).astype(np.float32), device=self.device)[None, None]
        s = self.model.image_size
        if m.shape[-2:] != (s, s):
            m = F.interpolate(m, size=(s, s), mode="bilinear", align_corners=False, antialias=True)
            m = (m >= 0.5).float()
        return m

    def _new_object(self, obj_id: int) -> _Object:
        used = {o.row for o in self._objects.values()}
        free = [r for r in range(self.config.max_objects) if r not in used]
        if not free:
            raise PromptError(
                f"cannot add object {obj_id}: all {self.config.max_objects} object slots are in use "
                "(remove one, or raise TrackerConfig.max_objects)"
            )
        self.bank.clear_row(free[0])
        obj = _Object(obj_id, free[0], None, None, 0.0, None, tracked=False)
        self._objects[obj_id] = obj
        return obj

    def _flush_pending_memory(self) -> None:
        """Encode the memory of prompted outputs on the frame just tracked (before it is replaced)."""
        frame = self._frame
        for obj in self._objects.values():
            if not obj.pending_memory:
                continue
            high = F.interpolate(obj.low_res, size=(self.model.image_size,) * 2, mode="bilinear", align_corners=False)
            mem = heads.encode_memory(self.model, frame.feats.embed, high, obj.object_score, binarize=True)
            row = torch.tensor([obj.row], device=self.device)
            if obj.pending_as_cond:
                self.bank.write_cond(obj.row, frame.index, mem[0], obj.obj_ptr)
            else:
                self.bank.write_recent(row, frame.index, mem, obj.obj_ptr[None])
            obj.pending_memory = False

    # ------------------------------------------------------------ management

    def remove_object(self, obj_id: int) -> None:
        obj = self._objects.pop(obj_id, None)
        if obj is None:
            raise KeyError(f"no object {obj_id}; tracked: {self.object_ids}")
        self.bank.clear_row(obj.row)

    def reset(self) -> None:
        """Forget all objects, memories and frames; the next frame is index 0 again."""
        for obj in self._objects.values():
            self.bank.clear_row(obj.row)
        self._objects.clear()
        self._frame = None
        self._next_index = 0

    def state_nbytes(self) -> int:
        """Bytes of every tensor the tracker holds between frames."""
        total = self.bank.nbytes()
        tensors: list[torch.Tensor] = []
        if self._frame is not None:
            f = self._frame.feats
            tensors += [f.embed, f.embed_pos, *f.high_res]
        for o in self._objects.values():
            tensors += [o.low_res, o.object_score, o.obj_ptr]
        return total + sum(t.numel() * t.element_size() for t in tensors if t is not None)

    # ----------------------------------------------------------------- output

    def result(self) -> FrameResult:
        """Every object's output on the frame just tracked, at source resolution."""
        frame = self._frame
        objs = list(self._objects.values())
        if not objs:
            return FrameResult(frame.index, [])
        logits = logits_to_source(torch.cat([o.low_res for o in objs]), frame.source_hw)
        if self.config.non_overlap:
            logits = non_overlapping(logits)
        masks = (logits[:, 0] > self.config.mask_threshold).cpu().numpy()
        results = []
        for o, m in zip(objs, masks):
            score = float(o.object_score.reshape(()))
            results.append(ObjectResult(o.obj_id, m, score, score > 0, o.iou, _bbox(m), int(m.sum())))
        return FrameResult(frame.index, results)


def _bbox(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    ys = np.flatnonzero(mask.any(axis=1))
    if ys.size == 0:
        return None
    xs = np.flatnonzero(mask.any(axis=0))
    return int(xs[0]), int(ys[0]), int(xs[-1]), int(ys[-1])
