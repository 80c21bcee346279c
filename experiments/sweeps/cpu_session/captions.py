"""[The reduced budget run on the 2-core CPU on 2026-11-27; the full budgets: ../captions.py.]
Descriptive against terse training captions (the report's re-captioning claim) on the world DiT, 400 steps each (the compute sweep's 4x member).

Probe prompts are descriptive for both members (as the report's prompt expansion would make them).
"""

from sorajax.sweeps.members import grid

CONFIG = "configs/dit_tiny.py"
MEMBERS = grid({"data.caption_style": ["descriptive", "terse"]})
SHARED = {"vae_workdir": "runs/main/vae", "train.steps": 400}
PROBE_PROMPTS = 48
