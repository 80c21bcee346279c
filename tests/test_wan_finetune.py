"""Fine-tuning a converted Wan run with `train_dit` (configs/wan_finetune.py): LoRA with resume, and full.

World clips at native sizes, packed with every caption's 512 UMT5 positions, the per-token-t masks on;
the tiny converted checkpoint of tests/fixtures/wan21_t2v_tiny. The before/after held-out losses of a
longer run are measured by experiments/wan_finetune.py (docs/results.md).
"""

import os

import jax
import numpy as np
import pytest
from flax import traverse_util

from sorajax.config_loading import load_config
from sorajax.convert import convert
from sorajax.pipeline import Pipeline
from sorajax.runs.checkpoints import Checkpointer
from sorajax.train.dit_trainer import train_dit

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")
SMALL = {"data.num_clips": 4, "eval.num_clips": 2, "train.log_every": 1, "train.warmup_steps": 1,
         "data.sizes": ((9, 32, 48), (1, 32, 48))}


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    return str(convert(os.path.join(FIXTURES, "wan21_t2v_tiny"), tmp_path_factory.mktemp("wan") / "wan21"))


def config_for(run, steps, **overrides):
    return load_config(f"configs/wan_finetune.py:{run}", {**SMALL, "train.steps": steps, "eval.every": steps,
                                                          "train.save_every": steps, **overrides})


def saved_state(workdir):
    ckpt = Checkpointer(os.path.join(workdir, "checkpoints"), async_save=False)
    try:
        return ckpt.latest_step(), ckpt.restore()[0]
    finally:
        ckpt.close()


def test_lora_fine_tune_of_a_converted_run_trains_adapters_resumes_and_samples(converted, tmp_path):
    workdir = str(tmp_path / "lora")
    train_dit(config_for(converted, 2, **{"train.learning_rate": 1e-2}), workdir)
    step, state = saved_state(workdir)
    leaves = traverse_util.flatten_dict(state["params"])
    assert step == 2 and leaves and all(path[-1] in ("lora_a", "lora_b") for path in leaves)
    assert any(np.abs(v).max() > 0 for path, v in leaves.items() if path[-1] == "lora_b")  # the adapters moved
    metrics = train_dit(config_for(converted, 3, **{"train.learning_rate": 1e-2}), workdir)  # resumes at step 2
    assert saved_state(workdir)[0] == 3 and np.isfinite(metrics["val_loss"])
    pipeline = Pipeline.from_run(workdir)  # base + adapters merged, the converted run's VAE and UMT5
    assert pipeline.schedule == "wan" and type(pipeline.vae).__name__ == "WanVAE"
    [video] = pipeline.generate(["a red ball moves to the left"], frames=5, height=32, width=48, steps=2)
    assert video.shape == (5, 32, 48, 3) and video.dtype == np.uint8


def test_full_fine_tune_starts_from_the_converted_weights(converted, tmp_path):
    workdir = str(tmp_path / "full")
    train_dit(config_for(converted, 1, **{"train.lora.rank": 0, "train.lora.alpha": 0.0,
                                         "train.learning_rate": 1e-12}), workdir)
    _, state = saved_state(workdir)
    base = Pipeline.from_run(converted).dit_params
    got, want = traverse_util.flatten_dict(state["params"]), traverse_util.flatten_dict(jax.device_get(base))
    # At learning rate 1e-12 one step leaves the weights as loaded: the converted run's (its params; it has
    # no EMA, so the EMA starts from them too).
    assert got.keys() == want.keys()
    assert max(np.abs(got[k] - want[k]).max() for k in want) <= 2e-7  # at most an ulp of a weight near 1
    ema = traverse_util.flatten_dict(state["ema_params"])
    assert max(np.abs(ema[k] - want[k]).max() for k in want) <= 2e-7  # at most an ulp of a weight near 1
