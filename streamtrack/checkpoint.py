"""Loading official SAM 2 / SAM 2.1 checkpoints, strictly and safely.

Official files are ``torch.save({"model": state_dict, ...})``. They are read
with ``weights_only=True`` (no arbitrary unpickling) and must match the config
key for key and shape for shape. Every failure is a :class:`CheckpointError`
that names the file and says what is wrong.
"""

from __future__ import annotations

import functools
import pickle
import re
import zipfile
from pathlib import Path

import torch

from streamtrack.config import OFFICIAL_NAMES, ModelConfig, load_config
from streamtrack.model import SAM2, build_sam2

MAX_LISTED = 5
"""How many offending keys an error message lists per kind."""


class CheckpointError(ValueError):
    """A checkpoint file cannot be used with the requested config."""


Signature = dict[str, tuple[int, ...]]

SHIPPED_MODEL = "nano"
"""The config whose weights ship inside the package (trained here on synthetic video only)."""

OFFICIAL_FILES = {
    "sam2.1_hiera_t": "sam2.1_hiera_tiny.pt", "sam2.1_hiera_s": "sam2.1_hiera_small.pt",
    "sam2.1_hiera_b+": "sam2.1_hiera_base_plus.pt", "sam2.1_hiera_l": "sam2.1_hiera_large.pt",
    "sam2_hiera_t": "sam2_hiera_tiny.pt", "sam2_hiera_s": "sam2_hiera_small.pt",
    "sam2_hiera_b+": "sam2_hiera_base_plus.pt", "sam2_hiera_l": "sam2_hiera_large.pt",
}
"""The file name Meta publishes for each official config."""


def shipped_checkpoint() -> Path:
    """The nano model's weights inside the installed package."""
    return Path(__file__).resolve().parent / "weights" / f"{SHIPPED_MODEL}.pt"


def resolve_checkpoint(config: str | Path, checkpoint: str | Path | None) -> Path:
    """The checkpoint to load: the one given, else the shipped one for the nano config.

    Any other config without a checkpoint is an error that says which file to download.
    """
    if checkpoint is not None:
        return Path(checkpoint)
    if str(config) == SHIPPED_MODEL:
        path = shipped_checkpoint()
        if not path.is_file():
            raise CheckpointError(f"the shipped nano weights are missing from this install ({path})")
        return path
    name = Path(str(config)).name.removesuffix(".yaml").removesuffix(".yml")
    hint = f" (for {name}: {OFFICIAL_FILES[name]} from Meta's SAM 2 release)" if name in OFFICIAL_FILES else ""
    raise CheckpointError(f"config {config} needs --checkpoint{hint}; only the nano model ships with streamtrack")


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read the ``"model"`` state dict of an official checkpoint file, without unpickling objects."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint {path}: no such file")
    if path.is_dir():
        raise CheckpointError(f"checkpoint {path}: is a directory, expected a .pt file")
    size = path.stat().st_size
    if size == 0:
        raise CheckpointError(f"checkpoint {path}: the file is empty (0 bytes); the download probably failed")
    with path.open("rb") as f:
        head = f.read(16)
    if not (head.startswith(b"PK") or head.startswith(b"\x80")):
        raise CheckpointError(
            f"checkpoint {path}: not a PyTorch checkpoint; the file starts with {head!r} "
            "(a download that saved an error page looks like this)"
        )
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        found = re.search(r"GLOBAL (\S+)", str(e))
        if found:
            raise CheckpointError(
                f"checkpoint {path}: contains Python objects other than tensors and plain containers "
                f"({found.group(1)}); refusing to unpickle it (weights_only=True)"
            ) from None
        raise CheckpointError(f"checkpoint {path}: not a readable PyTorch checkpoint ({_first_line(e)})") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError, AttributeError, IndexError) as e:
        raise CheckpointError(
            f"checkpoint {path}: cannot be read as a PyTorch checkpoint ({size} bytes); "
            f"it is truncated or not a checkpoint ({_first_line(e)})"
        ) from None
    if not isinstance(obj, dict) or "model" not in obj:
        found = sorted(map(str, obj))[:MAX_LISTED] if isinstance(obj, dict) else type(obj).__name__
        raise CheckpointError(
            f"checkpoint {path}: expected an official SAM 2 checkpoint, a dict with a 'model' entry; found {found}"
        )
    sd = obj["model"]
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise CheckpointError(f"checkpoint {path}: its 'model' entry is not a state dict of tensors")
    return sd


def check_state_dict(sd: dict[str, torch.Tensor], cfg: ModelConfig, path: str | Path) -> None:
    """Raise a :class:`CheckpointError` unless ``sd`` matches ``cfg`` exactly."""
    want = _signature(cfg)
    have = {k: tuple(v.shape) for k, v in sd.items()}
    missing = [k for k in want if k not in have]
    unexpected = [k for k in have if k not in want]
    wrong = [k for k in want if k in have and want[k] != have[k]]
    if not (missing or unexpected or wrong):
        return
    lines = [f"checkpoint {path} does not match config {cfg.name}:"]
    guess = identify(have)
    if guess is not None and guess != cfg.name:
        lines.append(f"  this file looks like {guess}; pass --config {guess}")
    if wrong:
        lines.append(f"  {len(wrong)} key(s) with the wrong shape:")
        lines += [f"    {k}: file {list(have[k])}, config {list(want[k])}" for k in wrong[:MAX_LISTED]]
    if missing and not (unexpected or wrong) and all(k.startswith("prompt_decoder.") for k in missing):
        lines.append("  the file has no prompt decoder, which this config has (prompt_decoder: true); weights "
                     "trained before it existed get one from `python tools/train_nano.py --prompt-stage "
                     f"--init {path} --out DIR`")
    if missing:
        lines.append(f"  {len(missing)} key(s) missing from the file:")
        lines += [f"    {k}: expected {list(want[k])}" for k in missing[:MAX_LISTED]]
    if unexpected:
        lines.append(f"  {len(unexpected)} unexpected key(s) in the file:")
        lines += [f"    {k}: {list(have[k])}" for k in unexpected[:MAX_LISTED]]
    raise CheckpointError("\n".join(lines))


def identify(signature: Signature) -> str | None:
    """The official config whose parameters match these key shapes exactly, if any."""
    for name in OFFICIAL_NAMES:
        if _signature(load_config(name)) == signature:
            return name
    return None


def load_model(
    config: str | Path | ModelConfig,
    checkpoint: str | Path | None,
    image_size: int | None = None,
    device: str | torch.device = "cpu",
) -> SAM2:
    """Build the model for ``config`` and load ``checkpoint`` into it (random weights if None)."""
    cfg = config.with_image_size(image_size) if isinstance(config, ModelConfig) else load_config(config, image_size)
    model = build_sam2(cfg)
    if checkpoint is not None:
        sd = read_state_dict(checkpoint)
        check_state_dict(sd, cfg, checkpoint)
        model.load_state_dict(sd, strict=True)
    return model.to(device).eval()


def _signature(cfg: ModelConfig) -> Signature:
    """Key -> shape of the model's state dict (shapes do not depend on the image size)."""
    return dict(_cached_signature(cfg.with_image_size(1024)))


@functools.lru_cache(maxsize=16)
def _cached_signature(cfg: ModelConfig) -> tuple[tuple[str, tuple[int, ...]], ...]:
    with torch.device("meta"):
        model = build_sam2(cfg)
    return tuple((k, tuple(v.shape)) for k, v in model.state_dict().items())


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0]}" if text else type(e).__name__
