"""sorajax's DiT with Wan's options computes what diffusers' WanTransformer3DModel computes.

The fixture (tools/make_wan_dit_fixture.py, run once with PyTorch + diffusers) holds a tiny random
Wan transformer, inputs and diffusers' outputs; the full-size key lists check the 1.3B / 14B / 5B
checkpoints' every key against the presets without their weights.
"""

from __future__ import annotations

import json
import os

import jax
import numpy as np
import pytest
from einops import rearrange
from safetensors.numpy import save_file

from sorajax.models.dit import DiT, DiTConfig, abstract_params
from sorajax.models.pretrained import CheckpointError, check_coverage, fill_params, read_key_shapes
from sorajax.models.wan_dit_weights import load_wan_dit, wan_dit_config, wan_dit_key_map
from sorajax.patches import Sample, pack, patchify, unpack

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures")
PATCH = (1, 2, 2)
TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def fixture():
    return dict(np.load(os.path.join(FIXTURES, "wan_dit_tiny.npz")))


@pytest.fixture(scope="module")
def model(fixture):
    config = wan_dit_config(json.loads(str(fixture["config"])))
    weights = ((f"wan_dit_tiny.npz", k[2:], v) for k, v in fixture.items() if k.startswith("w/"))
    params = fill_params(weights, wan_dit_key_map(config), abstract_params(config), "tiny Wan transformer")
    return config, jax.jit(lambda p, *a: DiT(config).apply({"params": p}, *a)), params


def latent(chw: np.ndarray) -> np.ndarray:
    return rearrange(chw, "c f h w -> f h w c")


def run_one(model, video: np.ndarray, t: np.ndarray, text: np.ndarray) -> np.ndarray:
    """sorajax on one sample, unpacked back to diffusers' [C, F, H, W]."""
    config, apply, params = model
    tokens, positions = patchify(latent(video), PATCH)
    n = len(tokens)
    out = apply(params, tokens[None], positions[None], np.ones((1, n), np.int32),
                np.broadcast_to(np.asarray(t, np.float32) / 1000.0, (1, n)), text[None],
                np.ones((1, len(text)), np.int32))
    grid = latent(video).shape
    return rearrange(np.asarray(out[0]), "(f h w) (pt ph pw c) -> c (f pt) (h ph) (w pw)", f=grid[0],
                     h=grid[1] // 2, w=grid[2] // 2, pt=1, ph=2, pw=2)


def test_shared_timestep_matches_diffusers(fixture, model):
    out = run_one(model, fixture["latents_a"], fixture["shared_t"], fixture["text_a"])
    assert out.shape == fixture["out_shared"].shape
    assert np.max(np.abs(out - fixture["out_shared"])) < TOLERANCE
    assert np.max(np.abs(fixture["out_shared"])) > 0.1  # a non-trivial output


def test_per_token_timesteps_with_a_clean_first_frame_match_diffusers(fixture, model):
    out = run_one(model, fixture["latents_a"], fixture["per_token_t"], fixture["text_a"])
    assert np.max(np.abs(out - fixture["out_per_token"])) < TOLERANCE
    assert np.max(np.abs(fixture["out_per_token"] - fixture["out_shared"])) > 1e-2  # t really matters


def test_packed_row_of_two_sizes_and_caption_lengths_equals_each_alone(fixture, model):
    config, apply, params = model
    samples = [Sample(latent(fixture["latents_a"]), fixture["text_a"], t=float(fixture["shared_t"]) / 1000),
               Sample(latent(fixture["latents_b"]), fixture["text_b"], t=float(fixture["t_b"]) / 1000)]
    batch, layout = pack(samples, seq_len=32, text_len=16, patch=PATCH, rows=1)
    assert batch.segment_ids.max() == 2  # both in one row
    out = apply(params, batch.tokens, batch.positions, batch.segment_ids, batch.t, batch.text,
                batch.text_segment_ids)
    got_a, got_b = unpack(np.asarray(out), layout)
    for got, want in ((got_a, fixture["out_shared"]), (got_b, fixture["out_b"])):
        assert np.max(np.abs(rearrange(got, "f h w c -> c f h w") - want)) < TOLERANCE


@pytest.mark.parametrize("name,preset", [("1.3b", "wan2.1-t2v-1.3b"), ("14b", "wan2.1-t2v-14b"),
                                         ("5b", "wan2.2-ti2v-5b")])
def test_full_size_checkpoint_keys_fill_the_preset_exactly(name, preset):
    config = DiTConfig.preset(preset)
    keys = read_key_shapes(os.path.join(FIXTURES, f"wan_dit_{name}_keys.txt"))
    key_map = wan_dit_key_map(config)
    assert set(keys) == set(key_map)  # every key has one parameter, every mapped key exists
    assert len({t.path for t in key_map.values()}) == len(key_map)  # no two keys fill one parameter
    check_coverage(keys, key_map, abstract_params(config), f"Wan {name}")  # shapes, and every parameter filled


def write_folder(path, fixture, config=None, drop=(), extra=None, reshape=None, shards=1):
    """A diffusers-format transformer folder of the tiny fixture, optionally damaged."""
    os.makedirs(path, exist_ok=True)
    cfg = {"_class_name": "WanTransformer3DModel", **json.loads(str(fixture["config"]))}
    cfg.update(config or {})
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(cfg, f)
    weights = {k[2:]: v for k, v in fixture.items() if k.startswith("w/") and k[2:] not in drop}
    if reshape:
        weights[reshape] = weights[reshape][..., :-1]
    weights.update(extra or {})
    names = sorted(weights)
    parts = [names[i::shards] for i in range(shards)]
    files = [f"diffusion_pytorch_model-{i + 1:05d}-of-{shards:05d}.safetensors" for i in range(shards)]
    for part, name in zip(parts, files):
        save_file({k: np.ascontiguousarray(weights[k]) for k in part}, os.path.join(path, name))
    if shards > 1:
        index = {"weight_map": {k: name for part, name in zip(parts, files) for k in part}}
        with open(os.path.join(path, "diffusion_pytorch_model.safetensors.index.json"), "w") as f:
            json.dump(index, f)
    return files


def test_loads_a_sharded_folder_like_the_fixture(tmp_path, fixture, model):
    write_folder(tmp_path / "transformer", fixture, shards=3)
    config, params = load_wan_dit(tmp_path / "transformer")
    assert config == model[0]
    same = jax.tree.map(lambda a, b: np.array_equal(a, b), params, model[2])
    assert all(jax.tree.leaves(same))


def test_scanned_layout_loads_and_computes_the_same(tmp_path, fixture, model):
    write_folder(tmp_path / "transformer", fixture)
    config, params = load_wan_dit(tmp_path / "transformer", scan_layers=True)
    assert config.scan_layers and params["blocks"]["block"]["modulation_table"].shape == (2, 6, 32)
    scanned = jax.jit(lambda p, *a: DiT(config).apply({"params": p}, *a))
    out = run_one((config, scanned, params), fixture["latents_a"], fixture["per_token_t"], fixture["text_a"])
    assert np.max(np.abs(out - fixture["out_per_token"])) < TOLERANCE


def test_bad_folders_get_one_line_naming_file_and_key(tmp_path, fixture):
    cases = {
        "family": dict(config={"_class_name": "AutoencoderKLWan"}),
        "unknown": dict(extra={"blocks.0.attn2.add_k_proj.weight": np.zeros((32, 24), np.float32)}),
        "shape": dict(reshape="blocks.1.ffn.net.0.proj.weight"),
        "missing": dict(drop=("blocks.1.norm2.bias",)),
    }
    messages = {}
    for name, damage in cases.items():
        write_folder(tmp_path / name, fixture, **damage)
        with pytest.raises(CheckpointError) as error:
            load_wan_dit(tmp_path / name)
        messages[name] = str(error.value)
        assert "\n" not in messages[name]
    assert "config.json" in messages["family"] and "AutoencoderKLWan" in messages["family"]
    assert ".safetensors" in messages["unknown"] and "'blocks.0.attn2.add_k_proj.weight'" in messages["unknown"]
    assert "'blocks.1.ffn.net.0.proj.weight'" in messages["shape"] and "(72, 31)" in messages["shape"]
    assert "'blocks.1.norm2.bias'" in messages["missing"]
    files = write_folder(tmp_path / "shard", fixture, shards=2)
    os.remove(tmp_path / "shard" / files[1])
    with pytest.raises(CheckpointError, match=f"{files[1]}: shard listed in .*index.json .*missing"):
        load_wan_dit(tmp_path / "shard")
