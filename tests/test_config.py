"""Config files load into validated dataclasses; bad files fail with the field named."""

from __future__ import annotations

import dataclasses

import pytest

from streamtrack.config import OFFICIAL_NAMES, ConfigError, load_config


@pytest.mark.parametrize("name", OFFICIAL_NAMES)
def test_official_configs_load(name):
    cfg = load_config(name)
    assert cfg.name == name
    assert cfg.image_size == 1024
    assert cfg.no_obj_embed_spatial == name.startswith("sam2.1")
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.image_size = 512


def test_known_sizes():
    assert load_config("sam2_hiera_b+").trunk.embed_dim == 112
    assert load_config("sam2.1_hiera_l").trunk.stages == (2, 6, 36, 4)
    assert load_config("sam2.1_hiera_s").trunk.global_att_blocks == (7, 10, 13)


def test_image_size_override():
    cfg = load_config("sam2.1_hiera_t", image_size=512)
    assert cfg.image_size == 512 and cfg.embed_size == 32


@pytest.mark.parametrize("size", [500, 96, 0])
def test_bad_image_size_rejected(size):
    with pytest.raises(ConfigError, match="multiple of 32"):
        load_config("sam2.1_hiera_t", image_size=size)


def write(tmp_path, text):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return path


GOOD = """
name: custom
trunk:
  embed_dim: 96
  num_heads: 1
  stages: [1, 2, 7, 2]
  global_att_blocks: [5, 7, 9]
  window_spec: [8, 4, 14, 7]
  window_pos_embed_bkg_spatial_size: [7, 7]
"""


def test_config_by_path(tmp_path):
    cfg = load_config(write(tmp_path, GOOD))
    assert cfg.name == "custom" and cfg.num_maskmem == 7


@pytest.mark.parametrize(
    "text,expected",
    [
        (GOOD + "colour: blue\n", "unknown key(s) colour"),
        (GOOD.replace("  num_heads: 1\n", ""), "missing key trunk.num_heads"),
        (GOOD.replace("embed_dim: 96", "embed_dim: '96'"), "trunk.embed_dim: expected int"),
        (GOOD.replace("[1, 2, 7, 2]", "[1, 2, 7]"), "trunk.stages must have 4 entries"),
        (GOOD + "num_maskmem: true\n", "num_maskmem: expected int"),
        (GOOD + "cond_memory_max_age: -1\n", "cond_memory_max_age must not be negative"),
        (GOOD + "_target_: sam2.modeling.SAM2Base\n", "unknown key(s) _target_"),
        ("[1, 2]", "expected a mapping"),
        ("a: [", "not valid YAML"),
    ],
)
def test_bad_config_names_the_field(tmp_path, text, expected):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert expected in str(info.value)
    assert str(path) in str(info.value)


def test_unknown_name_lists_known_ones():
    with pytest.raises(ConfigError) as info:
        load_config("sam3_hiera_t")
    assert "sam2.1_hiera_t" in str(info.value)
