"""The memory bank: fixed-capacity buffers, allocated once, for every object slot.

Per object row the bank holds

- ``max_cond_frames`` conditioning (prompted) frames: memory features and pointers;
- a ring of the ``num_maskmem`` most recent tracked frames' memory features
  (the step uses the 6 before the current frame; the 7th slot keeps the current
  frame's entry apart so a correction on it can still see the 6 before);
- a ring of the ``max_obj_ptrs`` most recent tracked frames' object pointers.

Every slot records its frame index and a validity flag. Which slots a frame may
attend to, and with which temporal encoding, is derived from those indices at
step time, so no tensor ever changes shape and nothing grows with the stream.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from streamtrack.model.common import sine_position_encoding


@dataclass(frozen=True)
class BankShape:
    max_objects: int
    max_cond_frames: int
    num_maskmem: int
    """Memory slots the model attends to: 1 for conditioning frames + (num_maskmem - 1) recent frames."""
    max_obj_ptrs: int
    embed_size: int
    """Side of the stride-16 feature grid (h = w)."""
    mem_dim: int = 64
    hidden_dim: int = 256

    @property
    def spatial_slots(self) -> int:
        return self.max_cond_frames + self.num_maskmem

    @property
    def ptr_slots(self) -> int:
        return self.max_cond_frames + self.max_obj_ptrs


class MemoryBank:
    """Fixed buffers for ``max_objects`` rows. Slots ``[0, max_cond_frames)`` of both the spatial
    and the pointer buffers are the conditioning frames; the rest are rings keyed by frame index."""

    def __init__(self, shape: BankShape, device: torch.device | str = "cpu") -> None:
        self.shape = shape
        o, k, p = shape.max_objects, shape.spatial_slots, shape.ptr_slots
        hw = shape.embed_size**2
        self.spatial = torch.zeros(o, k, hw, shape.mem_dim, dtype=torch.bfloat16, device=device)
        """bf16[O, K, h*w, 64] memory features, tokens in row-major grid order."""
        self.spatial_frame = torch.zeros(o, k, dtype=torch.long, device=device)
        self.spatial_valid = torch.zeros(o, k, dtype=torch.bool, device=device)
        self.ptr = torch.zeros(o, p, shape.hidden_dim, device=device)
        """float[O, P, 256] object pointers."""
        self.ptr_frame = torch.zeros(o, p, dtype=torch.long, device=device)
        self.ptr_valid = torch.zeros(o, p, dtype=torch.bool, device=device)
        self.cond_added = torch.zeros(o, shape.max_cond_frames, dtype=torch.long, device=device)
        """When each conditioning slot was written (a counter), for eviction order."""
        self._counter = 0
        self.is_cond_spatial = torch.arange(k, device=device) < shape.max_cond_frames
        self.is_cond_ptr = torch.arange(p, device=device) < shape.max_cond_frames
        side = shape.embed_size
        self.grid_pe = sine_position_encoding(shape.mem_dim, side, side, device).flatten(1).transpose(0, 1).contiguous()
        """float[h*w, 64]: sine encoding of the memory grid, shared by every spatial slot."""

    def tensors(self) -> list[torch.Tensor]:
        """Every buffer the bank owns (for memory accounting)."""
        return [self.spatial, self.spatial_frame, self.spatial_valid, self.ptr, self.ptr_frame,
                self.ptr_valid, self.cond_added, self.is_cond_spatial, self.is_cond_ptr, self.grid_pe]

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.tensors())

    def clear_row(self, row: int) -> None:
        self.spatial_valid[row] = False
        self.ptr_valid[row] = False
        self.cond_added[row] = 0

    def cond_frames(self, row: int) -> list[int]:
        c = self.shape.max_cond_frames
        valid = self.spatial_valid[row, :c]
        return sorted(self.spatial_frame[row, :c][valid].tolist())

    def write_recent(
        self, rows: torch.Tensor, frame: int | torch.Tensor, feats: torch.Tensor, ptrs: torch.Tensor, valid: torch.Tensor | bool = True
    ) -> None:
        """Store tracked-frame memories ``bf16[R, 64, h, w]`` and pointers ``float[R, 256]`` for ``rows``
        (int[R]); ``valid`` (bool[R]) says which rows' entries count."""
        s = self.shape
        k = s.max_cond_frames + frame % s.num_maskmem
        self.spatial[rows, k] = feats.flatten(2).transpose(1, 2)
        self.spatial_frame[rows, k] = frame
        self.spatial_valid[rows, k] = valid
        p = s.max_cond_frames + frame % s.max_obj_ptrs
        self.ptr[rows, p] = ptrs
        self.ptr_frame[rows, p] = frame
        self.ptr_valid[rows, p] = valid

    def drop_recent(self, row: int, frame: int) -> None:
        """Forget a frame's entries in the recent rings (it became a conditioning frame)."""
        c = self.shape.max_cond_frames
        hit = self.spatial_valid[row, c:] & (self.spatial_frame[row, c:] == frame)
        self.spatial_valid[row, c:][hit] = False
        hit = self.ptr_valid[row, c:] & (self.ptr_frame[row, c:] == frame)
        self.ptr_valid[row, c:][hit] = False

    def write_cond(self, row: int, frame: int, feats: torch.Tensor, ptr: torch.Tensor) -> None:
        """Store a conditioning frame. The same frame is overwritten in place; when all slots
        are taken, the oldest is evicted, except the object's first conditioning frame."""
        c = self.shape.max_cond_frames
        valid = self.spatial_valid[row, :c]
        same = valid & (self.spatial_frame[row, :c] == frame)
        if same.any():
            slot = int(same.nonzero()[0])
        elif not valid.all():
            slot = int((~valid).nonzero()[0])
        else:  # full: evict the oldest but the first (max_cond_frames >= 2)
            slot = int(self.cond_added[row].argsort()[1])
        self._counter += 1
        if not same.any():
            self.cond_added[row, slot] = self._counter
        self.spatial[row, slot] = feats.flatten(1).transpose(0, 1)
        self.spatial_frame[row, slot], self.spatial_valid[row, slot] = frame, True
        self.ptr[row, slot] = ptr
        self.ptr_frame[row, slot], self.ptr_valid[row, slot] = frame, True
        self.drop_recent(row, frame)
