"""The fixed-shape frame step over static buffers, captured once as a CUDA graph and replayed.

With fixed shapes (every object row, every memory slot, unused ones masked) nothing in
:func:`~streamtrack.tracker.step.frame_step` depends on the frame but tensor *values*:
the image features, the frame index and which rows hold objects. :class:`StaticStep`
keeps those in buffers that live as long as the tracker, copies each frame's values in,
and runs the step on them. On CUDA, after ``warmup`` eager frames (which let cuBLAS and
Triton allocate their workspaces), the step is recorded into a ``torch.cuda.CUDAGraph``
and every later frame is a copy-in and a replay: no Python, no kernel launches one by
one, and no host synchronisation inside. Elsewhere the same buffers are used eagerly,
so the CPU tests exercise everything but the recording.

The graph reads the memory bank's tensors by address; the bank mutates them in place
and never reallocates them, so prompts and resets between replays are seen.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch

from streamtrack.model import SAM2, BackboneFeatures
from streamtrack.timing import StageTimes
from streamtrack.tracker.bank import MemoryBank
from streamtrack.tracker.heads import HeadOutput
from streamtrack.tracker.step import frame_step


@dataclass(frozen=True)
class StepSignature:
    """Shapes and dtypes of everything that enters the step; fixed after the first frame."""

    tensors: tuple[tuple[str, tuple[int, ...], torch.dtype], ...]

    @staticmethod
    def of(feats: BackboneFeatures, active: torch.Tensor) -> StepSignature:
        named = [("embed", feats.embed), ("embed_pos", feats.embed_pos), ("high_res_0", feats.high_res[0]),
                 ("high_res_1", feats.high_res[1]), ("active", active)]
        return StepSignature(tuple((n, tuple(t.shape), t.dtype) for n, t in named))


class StaticStep:
    """Runs :func:`frame_step` for every bank row on static input buffers.

    ``graph``: record a CUDA graph after ``warmup`` eager frames (needs a CUDA device).
    """

    def __init__(self, model: SAM2, bank: MemoryBank, stream_length: int | None, graph: bool, warmup: int = 2) -> None:
        if graph and bank.spatial.device.type != "cuda":
            raise ValueError("a CUDA graph needs the model and the memory bank on a CUDA device")
        self.model, self.bank, self.stream_length = model, bank, stream_length
        self.graph_enabled, self.warmup = graph, warmup
        device = bank.spatial.device
        self.rows = torch.arange(bank.shape.max_objects, device=device)
        self.frame = torch.zeros((), dtype=torch.long, device=device)
        self.signature: StepSignature | None = None
        self.frames_run = 0
        self._inputs: tuple[torch.Tensor, ...] = ()
        self._out: HeadOutput | None = None
        self._graph: torch.cuda.CUDAGraph | None = None

    @property
    def captured(self) -> bool:
        return self._graph is not None

    def __call__(self, feats: BackboneFeatures, frame: int, active: torch.Tensor,
                 times: StageTimes | None = None) -> HeadOutput:
        """``feats`` of one image (batch 1), ``active: bool[max_objects]`` -> outputs for every row.

        The returned tensors are the caller's own (copies of the static outputs). ``times`` gets
        each stage's end when run eagerly; a replayed graph is one stage, ending at the memory encoder.
        """
        sources = (feats.embed, feats.embed_pos, feats.high_res[0], feats.high_res[1], active)
        signature = StepSignature.of(feats, active)
        if self.signature is None:
            self.signature = signature
            self._inputs = tuple(torch.empty_like(t) for t in sources)
        elif signature != self.signature:
            raise ValueError(f"the step's inputs changed shape or dtype: {signature} after {self.signature}")
        for buf, src in zip(self._inputs, sources):
            buf.copy_(src)
        self.frame.fill_(frame)
        if self.graph_enabled and self.frames_run >= self.warmup:
            if self._graph is None:
                self._capture()
            self._graph.replay()
            if times is not None:
                times.mark("memory_encoder")
        elif self.graph_enabled:  # warm-up on a side stream, as capture will run there
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                self._out = self._step(times)
            torch.cuda.current_stream().wait_stream(side)
        else:
            self._out = self._step(times)
        self.frames_run += 1
        return HeadOutput(*(getattr(self._out, f.name).clone() for f in fields(HeadOutput)))

    def _step(self, times: StageTimes | None = None) -> HeadOutput:
        embed, embed_pos, hr0, hr1, active = self._inputs
        feats = BackboneFeatures(embed, embed_pos, (hr0, hr1))
        return frame_step(self.model, self.bank, feats, self.frame, self.rows, active, True, self.stream_length, times)

    def _capture(self) -> None:
        torch.cuda.synchronize()
        graph = torch.cuda.CUDAGraph()
        # Recording runs nothing: the bank is only written when the graph is replayed.
        with torch.cuda.graph(graph):
            self._out = self._step()
        self._graph = graph
