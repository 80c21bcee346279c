"""[The reduced budget run on the 2-core CPU on 2026-11-27; the full budgets: ../compute_scaling.py.]
The report's 'base / 4x / 16x compute' on the world DiT: training steps x4 and x16 at the main job's recipe.

Budget on the 2-core CPU: base 100 steps (4 rows each), 4x 400, 16x 1,600 (the main job's DiT trains 2,000);
warmup 25 steps for the base run and the recipe's 100 above it. Probe report of 48 prompts each.
"""

from sorajax.sweeps.members import zipped

CONFIG = "configs/dit_tiny.py"
MEMBERS = zipped({"train.steps": [100, 400, 1600], "train.warmup_steps": [25, 100, 100]})
SHARED = {"vae_workdir": "runs/main/vae"}
PROBE_PROMPTS = 48
