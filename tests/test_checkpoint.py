"""Every kind of bad checkpoint fails with one clear message that names the problem."""

from __future__ import annotations

import collections

import pytest
import torch

from streamtrack.checkpoint import CheckpointError, identify, load_model, read_state_dict
from streamtrack.config import OFFICIAL_NAMES, load_config
from streamtrack.model import build_sam2


@pytest.fixture(scope="module")
def tiny_state():
    torch.manual_seed(0)
    return build_sam2(load_config("sam2.1_hiera_t")).state_dict()


@pytest.fixture
def good_file(tmp_path, tiny_state):
    path = tmp_path / "good.pt"
    torch.save({"model": tiny_state}, path)
    return path


def error_of(path, config="sam2.1_hiera_t") -> str:
    with pytest.raises(CheckpointError) as info:
        load_model(config, path)
    return str(info.value)


def test_good_checkpoint_loads_exact_weights(good_file, tiny_state):
    model = load_model("sam2.1_hiera_t", good_file)
    for k, v in model.state_dict().items():
        assert torch.equal(v, tiny_state[k]), k


def test_missing_file(tmp_path):
    msg = error_of(tmp_path / "nope.pt")
    assert "nope.pt" in msg and "no such file" in msg


def test_empty_file(tmp_path):
    path = tmp_path / "empty.pt"
    path.write_bytes(b"")
    msg = error_of(path)
    assert "empty.pt" in msg and "empty (0 bytes)" in msg


def test_truncated_file(tmp_path, good_file):
    data = good_file.read_bytes()
    path = tmp_path / "truncated.pt"
    path.write_bytes(data[: len(data) // 2])
    msg = error_of(path)
    assert "truncated.pt" in msg and "truncated or not a checkpoint" in msg


@pytest.mark.parametrize("content", [b"<html>404 Not Found</html>\n", bytes(range(256)) * 40])
def test_not_a_checkpoint(tmp_path, content):
    path = tmp_path / "page.pt"
    path.write_bytes(content)
    msg = error_of(path)
    assert "page.pt" in msg and "not a" in msg and "checkpoint" in msg


class Payload:
    """An arbitrary object: weights_only loading must refuse to unpickle it."""


def test_arbitrary_pickled_object_is_refused(tmp_path, tiny_state):
    path = tmp_path / "evil.pt"
    torch.save({"model": tiny_state, "extra": Payload()}, path)
    msg = error_of(path)
    assert "evil.pt" in msg and "refusing to unpickle" in msg and "Payload" in msg


def test_dict_without_model_entry(tmp_path, tiny_state):
    path = tmp_path / "bare.pt"
    torch.save({"state_dict": tiny_state}, path)
    msg = error_of(path)
    assert "'model' entry" in msg and "state_dict" in msg


def test_model_entry_not_tensors(tmp_path):
    path = tmp_path / "odd.pt"
    torch.save({"model": {"a": 1}}, path)
    assert "not a state dict of tensors" in error_of(path)


def test_missing_key_named_with_shape(tmp_path, tiny_state):
    sd = collections.OrderedDict(tiny_state)
    del sd["no_mem_embed"]
    path = tmp_path / "missing.pt"
    torch.save({"model": sd}, path)
    msg = error_of(path)
    assert "missing.pt" in msg and "sam2.1_hiera_t" in msg
    assert "1 key(s) missing" in msg and "no_mem_embed: expected [1, 1, 256]" in msg


def test_unexpected_key_named_with_shape(tmp_path, tiny_state):
    sd = dict(tiny_state, extra_head=torch.zeros(3, 5))
    path = tmp_path / "extra.pt"
    torch.save({"model": sd}, path)
    msg = error_of(path)
    assert "1 unexpected key(s)" in msg and "extra_head: [3, 5]" in msg


def test_wrong_shape_named(tmp_path, tiny_state):
    sd = dict(tiny_state)
    sd["maskmem_tpos_enc"] = torch.zeros(5, 1, 1, 64)
    path = tmp_path / "shape.pt"
    torch.save({"model": sd}, path)
    msg = error_of(path)
    assert "maskmem_tpos_enc: file [5, 1, 1, 64], config [7, 1, 1, 64]" in msg


@pytest.mark.parametrize("actual,requested", [("sam2.1_hiera_l", "sam2.1_hiera_t"), ("sam2_hiera_s", "sam2.1_hiera_s")])
def test_other_model_size_is_recognised(tmp_path, actual, requested):
    with torch.device("meta"):
        sd = build_sam2(load_config(actual)).state_dict()
    path = tmp_path / "other.pt"
    torch.save({"model": {k: torch.zeros(v.shape) for k, v in sd.items()}}, path)
    msg = error_of(path, requested)
    assert f"does not match config {requested}" in msg
    assert f"this file looks like {actual}" in msg


def test_every_official_config_is_identified_from_its_shapes():
    for name in OFFICIAL_NAMES:
        with torch.device("meta"):
            sd = build_sam2(load_config(name)).state_dict()
        assert identify({k: tuple(v.shape) for k, v in sd.items()}) == name


def test_read_state_dict_refuses_directory(tmp_path):
    with pytest.raises(CheckpointError, match="is a directory"):
        read_state_dict(tmp_path)
