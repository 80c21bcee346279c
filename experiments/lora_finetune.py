"""LoRA vs full fine-tuning of one tiny base DiT on shifted data: held-out loss, step time, checkpoint size.

    nice python experiments/lora_finetune.py --workdir=/tmp/lora_exp [--steps=200]

A small autoencoder and a base DiT learn the world with one object and a still camera; both
fine-tunes then train the same steps on clips with up to three objects and camera pans. The
held-out loss of the shifted clips is read before (step 1 with learning rate 0: the base's own
loss) and after. Step time is the mean gap between logged steps (no compile, no evaluation).
"""

from __future__ import annotations

import json
import os

from absl import app, flags

from sorajax.config_loading import load_config
from sorajax.runs.metrics import read_metrics
from sorajax.train.dit_trainer import train_dit
from sorajax.train.vae_trainer import train_vae

_WORKDIR = flags.DEFINE_string("workdir", "/tmp/lora_exp", "where the runs go")
_STEPS = flags.DEFINE_integer("steps", 200, "fine-tuning steps of each kind")
_BASE_STEPS = flags.DEFINE_integer("base_steps", 300, "base DiT steps")

MODEL = {"model.width": 64, "model.depth": 2, "model.num_heads": 4}
SHIFTED = {"world.max_objects": 3, "world.pan_prob": 0.9}


def dit_config(vae: str, steps: int, **extra):
    return load_config("configs/dit_tiny.py:smoke", {"vae_workdir": vae, "train.steps": steps, "data.num_clips": 64,
                                                     "train.log_every": 1, "train.save_every": 10_000,
                                                     "train.async_checkpoints": False, "eval.every": 10_000,
                                                     "eval.num_clips": 16, **MODEL, **extra})


def step_seconds(run: str) -> float:
    times = [r["time"] for r in read_metrics(os.path.join(run, "metrics.jsonl")) if "loss" in r]
    gaps = sorted(b - a for a, b in zip(times[1:], times[2:]))  # from step 2: step 1 compiles
    return gaps[len(gaps) // 2]


def checkpoint_bytes(run: str) -> int:
    root = os.path.join(run, "checkpoints")
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(root) for f in files)


def main(argv: list[str]) -> None:
    del argv
    work = _WORKDIR.value
    vae, base = os.path.join(work, "vae"), os.path.join(work, "base")
    if not os.path.isdir(os.path.join(vae, "checkpoints")):
        train_vae(load_config("configs/vae_tiny.py:smoke", {"train.steps": 60}), vae)
    if not os.path.isdir(os.path.join(base, "checkpoints")):
        train_dit(dit_config(vae, _BASE_STEPS.value, **{"train.learning_rate": 3e-3, "train.warmup_steps": 20}), base)
    fine = {"full": {"train.learning_rate": 1e-3},
            "lora": {"train.learning_rate": 1e-2, "train.lora.rank": 8, "train.lora.alpha": 8.0,
                     "train.lora.base_weights": "params"}}  # both start from the base's raw weights
    before = train_dit(dit_config(vae, 1, **SHIFTED, **{"train.init_from": base, "train.warmup_steps": 1}),
                       os.path.join(work, "before"))
    table = {"before (base on shifted clips)": {"val_loss": before["val_loss"], "val_loss_ema": before["val_loss_ema"]}}
    for name, extra in fine.items():
        run = os.path.join(work, name)
        metrics = train_dit(dit_config(vae, _STEPS.value, **SHIFTED, **{"train.init_from": base,
                                                                       "train.warmup_steps": 10, **extra}), run)
        table[name] = {"val_loss": metrics["val_loss"], "val_loss_ema": metrics["val_loss_ema"],
                       "step_s": step_seconds(run), "checkpoint_bytes": checkpoint_bytes(run)}
    table["base checkpoint_bytes"] = checkpoint_bytes(base)
    print(json.dumps(table, indent=1))
    with open(os.path.join(work, "lora_finetune.json"), "w") as f:
        json.dump(table, f, indent=1)


if __name__ == "__main__":
    app.run(main)
