"""Fine-tuning from another run (`train.init_from`): weights carried over, fresh optimizer, safe restarts."""

import os
import shutil

import jax
import numpy as np
import pytest

from sorajax.config_loading import load_config
from sorajax.pipeline import Pipeline
from sorajax.train.dit_trainer import train_dit
from sorajax.runs.metrics import read_metrics
from sorajax.train.warm_start import parse_source
from tests.tiny_runs import shared_vae


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """(autoencoder dir, a 2-step DiT run on it)."""
    vae = str(shared_vae(tmp_path_factory))
    run = str(tmp_path_factory.mktemp("source"))
    train_dit(_config(vae, 2), run)
    return vae, run


def _config(vae_dir, steps, **extra):
    return load_config("configs/dit_tiny.py:smoke", {"vae_workdir": vae_dir, "train.steps": steps, **extra})


def _leaves(tree):
    return [np.asarray(x) for x in jax.tree.leaves(tree)]


def test_parse_source():
    assert parse_source("runs/long") == ("runs/long", None)
    assert parse_source("runs/long:3000") == ("runs/long", 3000)
    assert parse_source("C:/runs/x") == ("C:/runs/x", None)


def test_fine_tune_starts_from_the_source_weights_on_new_sizes_and_restarts_from_its_own(source, tmp_path):
    vae, run = source
    saved_before = sorted(os.listdir(os.path.join(run, "checkpoints")))
    copy = str(tmp_path / "source_copy")
    shutil.copytree(run, copy)
    fine = str(tmp_path / "fine")
    # New clip sizes (9-frame clips the source never saw); warmup makes step 1's learning rate 0, so after
    # one step the weights must still be exactly the source's: loaded, not re-initialised.
    config = _config(vae, 1, **{"train.init_from": copy, "train.warmup_steps": 1,
                                "data.sizes": ((9, 16, 16), (1, 16, 16))})
    train_dit(config, fine)
    src = Pipeline.from_run(run, use_ema=False)
    tuned = Pipeline.from_run(fine, use_ema=False)
    for a, b in zip(_leaves(src.dit_params), _leaves(tuned.dit_params), strict=True):
        np.testing.assert_array_equal(a, b)
    # EMA carried over too: one EMA update of equal raw weights leaves it between the source's EMA and raw.
    src_ema = _leaves(Pipeline.from_run(run).dit_params)
    tuned_ema = _leaves(Pipeline.from_run(fine).dit_params)
    gap_before = sum(float(np.abs(e - r).sum()) for e, r in zip(src_ema, _leaves(src.dit_params)))
    gap_after = sum(float(np.abs(e - r).sum()) for e, r in zip(tuned_ema, _leaves(src.dit_params)))
    assert 0 < gap_after < gap_before
    assert [r["step"] for r in read_metrics(os.path.join(fine, "metrics.jsonl")) if "loss" in r] == [1]

    # The source run is read, never written.
    assert sorted(os.listdir(os.path.join(copy, "checkpoints"))) == saved_before
    # Once it has a checkpoint, the run resumes its own: the source may even be gone.
    shutil.rmtree(copy)
    config.train.steps = 2
    train_dit(config, fine)
    assert [r["step"] for r in read_metrics(os.path.join(fine, "metrics.jsonl")) if "loss" in r] == [1, 2]


def test_bad_sources_name_the_fix(source, tmp_path):
    vae, run = source
    with pytest.raises(FileNotFoundError, match="no run directory"):
        train_dit(_config(vae, 1, **{"train.init_from": str(tmp_path / "nowhere")}), str(tmp_path / "a"))
    with pytest.raises(ValueError, match="different model config"):
        train_dit(_config(vae, 1, **{"train.init_from": run, "model.width": 48}), str(tmp_path / "b"))
    with pytest.raises(FileNotFoundError, match="no checkpoint of step 7"):
        train_dit(_config(vae, 1, **{"train.init_from": f"{run}:7"}), str(tmp_path / "c"))
    assert not os.path.exists(os.path.join(str(tmp_path / "b"), "checkpoints", "1"))
