"""DiT training end to end on tiny world latents, exact resume, and sampling through the Pipeline."""

import json
import os

import jax
import numpy as np
import pytest

from sorajax.config_loading import load_config
from sorajax.pipeline import Pipeline, SampleRequest
from sorajax.runs.checkpoints import CheckpointNotFoundError
from sorajax.train.dit_trainer import train_dit
from sorajax.runs.metrics import read_metrics
from tests.tiny_runs import shared_vae


@pytest.fixture(scope="module")
def vae_dir(tmp_path_factory):
    return str(shared_vae(tmp_path_factory))


def _config(vae_dir, steps, **extra):
    return load_config("configs/dit_tiny.py:smoke", {"vae_workdir": vae_dir, "train.steps": steps, **extra})


def test_loss_falls_and_resume_matches_an_uninterrupted_run(vae_dir, tmp_path):
    straight, resumed = str(tmp_path / "straight"), str(tmp_path / "resumed")
    metrics = train_dit(_config(vae_dir, 4), straight)
    assert np.isfinite(metrics["val_loss"]) and np.isfinite(metrics["val_loss_ema"])
    # Paired (same clips, same noise, only layout words mirrored): an untrained model shows ~no gap. Were the
    # pairs different clips or noise, the gap would be of the order of the loss itself (~2 here).
    assert np.isfinite(metrics["val_layout_gap_ema"]) and abs(metrics["val_layout_gap_ema"]) < 1e-2
    train_dit(_config(vae_dir, 2), resumed)
    train_dit(_config(vae_dir, 4), resumed)
    a, b = Pipeline.from_run(straight, use_ema=False), Pipeline.from_run(resumed, use_ema=False)
    for x, y in zip(jax.tree.leaves(a.dit_params), jax.tree.leaves(b.dit_params), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    log = [r for r in read_metrics(os.path.join(resumed, "metrics.jsonl")) if "loss" in r]
    assert [r["step"] for r in log] == [1, 2, 3, 4]
    assert os.path.exists(os.path.join(resumed, "latents_train.npz"))  # encoded once, reused on resume
    # The resume raised train.steps: the record of how steps 1-2 were trained is kept, not overwritten.
    with open(os.path.join(resumed, "config_history.jsonl")) as f:
        history = [json.loads(line) for line in f]
    assert [(h["replaced_at_step"], h["config"]["train"]["steps"]) for h in history] == [(2, 2)]


def test_a_few_steps_on_one_batch_reduce_the_loss(vae_dir, tmp_path):
    # Same data every step (one clip, one row): the loss must go down.
    config = _config(vae_dir, 30, **{"data.num_clips": 1, "data.rows": 1, "train.learning_rate": 3e-3,
                                     "train.warmup_steps": 0, "train.caption_dropout": 0.0, "eval.every": 30})
    train_dit(config, str(tmp_path / "overfit"))
    losses = [r["loss"] for r in read_metrics(str(tmp_path / "overfit" / "metrics.jsonl")) if "loss" in r]
    assert np.mean(losses[-5:]) < 0.8 * np.mean(losses[:5])


def test_pipeline_samples_three_aspect_ratios_and_an_image_from_one_checkpoint(vae_dir, tmp_path):
    run = str(tmp_path / "dit")
    train_dit(_config(vae_dir, 1), run)
    pipeline = Pipeline.from_run(run)
    for frames, height, width in [(5, 16, 16), (5, 16, 32), (5, 32, 16), (1, 16, 16)]:
        videos = pipeline.generate(["a red ball", "a blue square"], frames=frames, height=height, width=width, steps=2)
        assert [v.shape for v in videos] == [(frames, height, width, 3)] * 2
        assert all(v.dtype == np.uint8 for v in videos)
    same = pipeline.generate(["a red ball"], frames=5, height=16, width=16, steps=2, seed=3)
    again = pipeline.generate(["a red ball"], frames=5, height=16, width=16, steps=2, seed=3)
    np.testing.assert_array_equal(same[0], again[0])  # deterministic by seed


@pytest.mark.parametrize("bad,message", [
    (dict(height=20), "multiple of 16 pixels"),
    (dict(frames=4), "1 \\+ 4k frames"),
    (dict(steps=0), "steps must be between 1 and 1000"),
    (dict(steps=100000), "steps must be between 1 and 1000"),
    (dict(method="rk9"), "unknown sampler"),
    (dict(guidance=-1.0), "guidance must be in"),
])
def test_bad_requests_name_the_fix(vae_dir, tmp_path_factory, bad, message):
    run = str(tmp_path_factory.getbasetemp() / "dit_for_errors")
    if not os.path.isdir(run):
        train_dit(_config(vae_dir, 1), run)
    pipeline = Pipeline.from_run(run)
    with pytest.raises(ValueError, match=message):
        pipeline.generate(["x"], **{**dict(frames=5, height=16, width=16, steps=2), **bad})


def test_prompt_list_errors_and_missing_run(vae_dir, tmp_path):
    run = str(tmp_path / "dit")
    train_dit(_config(vae_dir, 3), run)  # step 1 has lr 0 (warmup): the output layer is still zero
    pipeline = Pipeline.from_run(run)
    with pytest.raises(ValueError, match="non-empty list of strings"):
        pipeline.generate("a red ball")
    # Latents, not uint8 frames: a 1-step model's text dependence is below one pixel level.
    request = SampleRequest(frames=5, height=16, width=16, steps=2, seed=1, guidance=3.0)
    shape = pipeline.latent_shape(5, 16, 16)
    plain = pipeline.sample_latents(["a red ball"], shape, request)
    steered = pipeline.sample_latents(["a red ball"], shape, request, negative=["a blue square"])
    assert steered[0].shape == plain[0].shape == shape
    assert not np.array_equal(steered[0], plain[0])  # the negative prompt replaced the null caption
    with pytest.raises(ValueError, match="2 negative prompts for 1 prompts"):
        pipeline.generate(["a red ball"], negative_prompt=["x", "y"], frames=5, height=16, width=16)
    with pytest.raises(CheckpointNotFoundError, match="python -m sorajax.train_dit"):
        Pipeline.from_run(str(tmp_path / "missing"))
