"""[The reduced budget run on the 2-core CPU on 2026-11-27; the full budgets: ../framing.py.]
Native aspect ratios against square centre crops (the report's framing claim) on the world DiT, 400 steps each (the compute sweep's 4x member).

The probe's 'in frame' (the object wholly inside the frame) is the framing measure; samples are drawn at the
probe's native sizes for both members.
"""

from sorajax.sweeps.members import grid

CONFIG = "configs/dit_tiny.py"
MEMBERS = grid({"data.framing": ["native", "square"]})
SHARED = {"vae_workdir": "runs/main/vae", "train.steps": 400}
PROBE_PROMPTS = 48
