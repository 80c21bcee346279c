"""`python -m sorajax.convert`: a diffusers-layout Wan checkpoint becomes a sorajax run that samples and fine-tunes.

The sources are the whole tiny diffusers pipelines of tools/make_wan_pipeline_fixtures.py; the converted
run must sample exactly what diffusers' pipeline samples from the same noise.
"""

import json
import os
import re
import shutil
import subprocess
import sys

import einops
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from sorajax.convert import convert
from sorajax.models.dit import abstract_params
from sorajax.models.pretrained import CheckpointError
from sorajax.models.wan_dit_weights import load_wan_dit
from sorajax.pipeline import Pipeline
from sorajax.runs.checkpoints import read_run_meta
from sorajax.runs.dit_spec import DiTSpec
from sorajax.runs.loaders import TRAIN_DIT, load_autoencoder, load_weights

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(REPO, "tests", "fixtures")
T2V = os.path.join(FIXTURES, "wan21_t2v_tiny")


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    return convert(T2V, tmp_path_factory.mktemp("runs") / "wan21")


def copy_fixture(tmp_path, name="wan21_t2v_tiny"):
    folder = tmp_path / name
    shutil.copytree(os.path.join(FIXTURES, name), folder)
    return folder


def test_the_run_records_its_source_and_loads_the_same_weights(converted):
    meta = read_run_meta(converted, None, TRAIN_DIT)
    config = json.loads((converted / "config.json").read_text())
    assert meta["step"] == 0 and meta["weight_trees"] == ["params"]
    assert config["source"]["family"] == "wan2.1-t2v" and config["source"]["layout"] == "diffusers"
    assert config["model"]["preset"] == "wan2.1-t2v-1.3b" and config["model"]["depth"] == 2  # tiny: overrides kept
    assert config["sample"]["method"] == "unipc" and config["sample"]["shift"] == 3.0
    _, expected = load_wan_dit(os.path.join(T2V, "transformer"))
    pipeline = Pipeline.from_run(converted)
    got = traverse_util.flatten_dict(jax.device_get(pipeline.dit_params))
    want = traverse_util.flatten_dict(expected)
    assert got.keys() == want.keys() and all(np.array_equal(got[k], want[k]) for k in want)
    assert type(load_autoencoder(converted / "autoencoder").vae).__name__ == "WanVAE"


def test_sampling_the_converted_run_equals_diffusers(converted):
    reference = dict(np.load(os.path.join(FIXTURES, "wan_pipeline_reference.npz")))
    s = json.loads(str(reference["wan21_t2v/settings"]))
    pipeline = Pipeline.from_run(converted)
    shape = pipeline.latent_shape(s["frames"], s["height"], s["width"])
    request = pipeline.defaults.__class__(frames=s["frames"], height=s["height"], width=s["width"], steps=s["steps"],
                                          guidance=s["guidance"], method="unipc")
    noise = einops.rearrange(reference["wan21_t2v/noise"][0], "c t h w -> t h w c")
    [z] = pipeline.sample_latents([s["prompt"]], shape, request, [s["negative_prompt"]], noise=[noise])
    expected = einops.rearrange(reference["wan21_t2v/latents"], "c t h w -> t h w c")
    np.testing.assert_allclose(z, expected, atol=1e-4, rtol=0)


def test_bfloat16_conversion_stores_bf16_weights(tmp_path):
    run = convert(T2V, tmp_path / "half", dtype="bfloat16")
    config = json.loads((run / "config.json").read_text())
    assert config["model"]["dtype"] == "bfloat16" and config["text_encoder"]["bfloat16"]
    spec = DiTSpec.from_config(read_run_meta(run, None, TRAIN_DIT)["config"])
    abstract = nn.meta.unbox(abstract_params(spec.dit_config(latent_channels=4, text_dim=32)))  # the tiny fixture's
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, jnp.bfloat16), abstract)
    params = load_weights(run, None, abstract, "ema_params")  # a converted run has no EMA: its params
    assert {str(x.dtype) for x in jax.tree.leaves(params)} == {"bfloat16"}
    assert Pipeline.from_run(run).generate(["a ball"], frames=5, height=32, width=32, steps=2)[0].shape == (5, 32, 32, 3)


@pytest.mark.parametrize("damage,message", [
    ("missing_shard", r"diffusion_pytorch_model-00002-of-00004.safetensors: shard listed in .* is missing"),
    ("no_vae", r"vae: missing \(no config.json\)"),
    ("wrong_family", r"holds a wan2.1-t2v model .*not wan2.2-ti2v: pass --family=wan2.1-t2v"),
    ("shape", r"transformer/diffusion_pytorch_model-0000\d-of-00004.safetensors: key 'blocks.0.ffn.net.0.proj.\w+' "
              r"has shape \(72,?.*but block_0/mlp/fc1/\w+ is \(.*64"),
    ("garbled", r"vae.*diffusion_pytorch_model.safetensors: not a readable safetensors file"),
])
def test_a_bad_folder_is_refused_naming_file_and_key_before_anything_is_written(tmp_path, damage, message):
    src = copy_fixture(tmp_path)
    family = None
    if damage == "missing_shard":
        (src / "transformer" / "diffusion_pytorch_model-00002-of-00004.safetensors").unlink()
    elif damage == "no_vae":
        shutil.rmtree(src / "vae")
    elif damage == "wrong_family":
        family = "wan2.2-ti2v"
    elif damage == "shape":
        config = json.loads((src / "transformer" / "config.json").read_text())
        (src / "transformer" / "config.json").write_text(json.dumps({**config, "ffn_dim": 64}))
    elif damage == "garbled":
        path = src / "vae" / "diffusion_pytorch_model.safetensors"
        path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(CheckpointError, match=message):
        convert(src, tmp_path / "out", family=family)
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out*"))


def test_an_existing_run_is_never_overwritten_unasked(tmp_path, converted):
    with pytest.raises(FileExistsError, match="already exists .*--overwrite"):
        convert(T2V, converted)
    assert (converted / "checkpoints" / "0").is_dir()


def test_the_cli_converts_and_refuses_in_one_line(tmp_path):
    env = {**os.environ, "PYTHONPATH": REPO}
    done = subprocess.run([sys.executable, "-m", "sorajax.convert", f"--src={tmp_path}/nothing", f"--out={tmp_path}/r"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300, env=env)
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 1 and len(lines) == 1 and re.search(r"error: .*nothing: no such folder", lines[0])
    done = subprocess.run([sys.executable, "-m", "sorajax.convert", f"--src={T2V}", f"--out={tmp_path}/r"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0 and "python -m sorajax.generate --run=" in done.stdout
    assert (tmp_path / "r" / "checkpoints" / "0").is_dir()
