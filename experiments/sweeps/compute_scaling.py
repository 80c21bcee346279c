"""The report's 'base / 4x / 16x compute': the same world DiT trained with 4x and 16x the training compute.

Compute is steps x rows (every row holds the same 384 tokens); the rows stay at the main job's 4 (at this
size more updates beat bigger batches, configs/dit_tiny.py), so the steps grow: 250, 1,000 and 4,000.
Warmup is a tenth of the base run and the recipe's 100 steps above it. Held-out loss every 250 steps
and a 48-prompt probe report per member, so `compare` shows both against compute.

Budget on the 2-core CPU (~3 steps/s): ~1.5 + 6 + 22 min of training, ~2 min of probe samples each.

    python -m sorajax.sweep --sweep=experiments/sweeps/compute_scaling.py --workdir=runs/compute_scaling
    python -m sorajax.compare runs/compute_scaling --x=train.steps   # + against_train.steps.png
Needs the main job's autoencoder (runs/main/vae; another with --config.vae_workdir=DIR).
"""

from sorajax.sweeps import zipped

CONFIG = "configs/dit_tiny.py"
SHARED = {"vae_workdir": "runs/main/vae", "eval.every": 250}
MEMBERS = zipped({"train.steps": [250, 1000, 4000], "train.warmup_steps": [25, 100, 100]})
PROBE_PROMPTS = 48
