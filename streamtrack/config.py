"""Typed model configurations, loaded from the plain YAML files in ``configs/``.

A config file holds plain values only. It is read into frozen dataclasses that
check every field's type and range on construction, so a typo or a wrong value
fails at load time with the file name and the field path.
"""

from __future__ import annotations

import dataclasses
import sys
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

def config_dir() -> Path:
    """Where the official model configs live: ``configs/`` of the source tree, or where a
    regular (non-editable) install put them."""
    in_tree = Path(__file__).resolve().parent.parent / "configs"
    installed = Path(sys.prefix) / "share" / "streamtrack" / "configs"
    return in_tree if in_tree.is_dir() or not installed.is_dir() else installed

OFFICIAL_NAMES = (
    "sam2_hiera_t",
    "sam2_hiera_s",
    "sam2_hiera_b+",
    "sam2_hiera_l",
    "sam2.1_hiera_t",
    "sam2.1_hiera_s",
    "sam2.1_hiera_b+",
    "sam2.1_hiera_l",
)


class ConfigError(ValueError):
    """A config file or value is malformed."""


@dataclass(frozen=True)
class HieraConfig:
    """The Hiera trunk: a four-stage hierarchical vision transformer."""

    embed_dim: int
    num_heads: int
    stages: tuple[int, ...]
    global_att_blocks: tuple[int, ...]
    window_spec: tuple[int, ...]
    window_pos_embed_bkg_spatial_size: tuple[int, int]

    def __post_init__(self) -> None:
        _require(len(self.stages) == 4, "trunk.stages must have 4 entries")
        _require(len(self.window_spec) == 4, "trunk.window_spec must have 4 entries")
        _require(all(s > 0 for s in self.stages), "trunk.stages must be positive")
        _require(self.embed_dim > 0 and self.num_heads > 0, "trunk dims must be positive")
        depth = sum(self.stages)
        _require(
            all(0 <= b < depth for b in self.global_att_blocks),
            f"trunk.global_att_blocks must index blocks 0..{depth - 1}",
        )

    @property
    def depth(self) -> int:
        return sum(self.stages)

    @property
    def stage_dims(self) -> tuple[int, ...]:
        """Channels at the end of each stage, highest resolution first."""
        return tuple(self.embed_dim * 2**i for i in range(len(self.stages)))


@dataclass(frozen=True)
class ModelConfig:
    """One SAM 2 / SAM 2.1 model.

    Only the values that differ between the eight official models are fields;
    everything the official configs share is fixed in the model code.
    """

    name: str
    trunk: HieraConfig
    image_size: int = 1024
    no_obj_embed_spatial: bool = False
    """SAM 2.1: add a learned embedding to memories of frames where the object is absent."""
    obj_ptr_temporal_encoding: bool = False
    """SAM 2.1: add a projected, signed temporal encoding to object pointers."""
    num_maskmem: int = 7
    max_obj_ptrs: int = 16
    sigmoid_scale_for_mem_enc: float = 20.0
    sigmoid_bias_for_mem_enc: float = -10.0
    hidden_dim: int = 256
    """Width of the neck, prompt encoder, mask decoder and memory attention."""
    mem_dim: int = 64
    """Width of stored memories; object pointers are split into hidden_dim / mem_dim tokens."""
    memory_attention_layers: int = 4
    memory_attention_ffn_dim: int = 2048
    decoder_mlp_dim: int = 2048
    """Hidden width of the MLPs in the mask decoder's two-way transformer."""
    multimask_tracking: bool = True
    """Decode frames tracked without a prompt with the three multimask candidates and keep the
    one of highest predicted IoU (the official models all do). False: the single-mask output.
    A model trained from scratch with multimask tracking can learn to put a different salient
    object in each candidate instead of reading its memory. Every shipped config keeps it on
    (see docs/nano-model.md for a training run with it off)."""
    cond_memory_max_age: int = 0
    """0 (every official model): a prompted (conditioning) frame's spatial memory is attended to on
    every later frame, as SAM 2 does. N > 0: only while it is at most N frames old; later frames
    attend to the recent frames' memories and to the object pointers, the prompt's included.
    nano uses 7, the oldest a prompt is in its 8-frame training clips: past that its stale
    prompt memory pulls the mask off the object (docs/nano-model.md)."""
    non_overlap_memory: bool = False
    """Before the memories of a tracked frame are encoded, give each pixel to at most one object
    (the one with the highest logit; official option ``non_overlap_masks_for_mem_enc``). Only the
    memories change, not the masks returned. Off in every shipped config; for nano it turns
    objects that drift onto one mask into objects that swap masks (docs/nano-model.md)."""
    prompt_decoder: bool = False
    """False (every official model): one prompt encoder and mask decoder answer every prompt and
    decode every tracked frame. True: a second pair (``prompt_decoder.*`` in the checkpoint)
    answers boxes and clicks on frames without memory, a new object's first prompt and the image
    segmenter's; the tracker then takes its mask as a mask prompt. nano has one: its single small
    decoder, trained to track, answers any box with a salient-object guess (docs/nano-model.md)."""
    backbone_stride: int = field(default=16, init=False)

    def __post_init__(self) -> None:
        _require(
            self.image_size >= 128 and self.image_size % 32 == 0,
            f"image_size must be a multiple of 32 and at least 128, got {self.image_size}",
        )
        _require(self.num_maskmem >= 1, "num_maskmem must be at least 1")
        _require(self.max_obj_ptrs >= 1, "max_obj_ptrs must be at least 1")
        _require(self.cond_memory_max_age >= 0, "cond_memory_max_age must not be negative (0: no limit)")
        _require(self.hidden_dim > 0 and self.hidden_dim % 16 == 0, "hidden_dim must be a positive multiple of 16")
        _require(self.mem_dim > 0 and self.hidden_dim % self.mem_dim == 0, "mem_dim must divide hidden_dim")
        _require(self.memory_attention_layers >= 1, "memory_attention_layers must be at least 1")
        _require(self.memory_attention_ffn_dim >= 1 and self.decoder_mlp_dim >= 1, "MLP widths must be positive")

    @property
    def embed_size(self) -> int:
        """Side of the stride-16 image embedding (64 at 1024)."""
        return self.image_size // self.backbone_stride

    def with_image_size(self, image_size: int | None) -> ModelConfig:
        """A copy at another input resolution; every position encoding follows it."""
        if image_size is None:
            return self
        return dataclasses.replace(self, image_size=image_size)


def load_config(name_or_path: str | Path, image_size: int | None = None) -> ModelConfig:
    """Load a config by name from ``configs/`` (``"sam2.1_hiera_t"``) or from a path."""
    path = resolve_config_path(name_or_path)
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    try:
        cfg = _build(ModelConfig, raw, "")
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None
    try:
        return cfg.with_image_size(image_size)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None


def resolve_config_path(name_or_path: str | Path) -> Path:
    text = str(name_or_path)
    configs = config_dir()
    candidates = [Path(text)]
    if not text.endswith((".yaml", ".yml")):
        candidates.append(configs / f"{text}.yaml")
    candidates.append(configs / text)
    for p in candidates:
        if p.is_file():
            return p
    known = ", ".join(sorted(p.stem for p in configs.glob("*.yaml")))
    raise ConfigError(f"no config named or at {text!r}; known names: {known}")


def _require(cond: bool, message: str) -> None:
    if not cond:
        raise ConfigError(message)


def _build(cls: type, data: Any, where: str) -> Any:
    """Construct dataclass ``cls`` from a mapping, checking names and types."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where or 'top level'}: expected a mapping")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f"unknown key(s) {', '.join(where + k for k in unknown)}")
    kwargs = {}
    for name, f in fields.items():
        key = where + name
        if name not in data:
            if f.default is dataclasses.MISSING:
                raise ConfigError(f"missing key {key}")
            continue
        kwargs[name] = _convert(hints[name], data[name], key)
    return cls(**kwargs)


def _convert(tp: Any, value: Any, key: str) -> Any:
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, key + ".")
    origin = typing.get_origin(tp)
    if origin is tuple:
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            item_types = [args[0]] * len(value)
        else:
            if len(value) != len(args):
                raise ConfigError(f"{key}: expected {len(args)} items, got {len(value)}")
            item_types = list(args)
        return tuple(_convert(t, v, f"{key}[{i}]") for i, (t, v) in enumerate(zip(item_types, value)))
    if origin in (typing.Union, types.UnionType):
        raise ConfigError(f"{key}: union types are not supported in configs")
    if tp is bool:
        ok = isinstance(value, bool)
    elif tp is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif tp is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif tp is str:
        ok = isinstance(value, str)
    else:
        raise ConfigError(f"{key}: unsupported field type {tp}")
    if not ok:
        raise ConfigError(f"{key}: expected {tp.__name__}, got {value!r}")
    return value
