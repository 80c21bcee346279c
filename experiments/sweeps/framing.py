"""The report's native aspect ratios against square crops: is the object kept fully in frame?

Both members train the world DiT on the same clips (landscape 48x80, portrait 80x48, square 64x64 and
images); 'square' centre-crops each to its largest square (48x48 for the non-square ones), as most
video models' data pipelines do. The probe samples at all three aspect ratios, so its `in_frame`
agreement (the object's whole extent inside the frame) is the claim's measure; colour, shape and
direction say whether anything else moved. Held-out losses are each member's own framing of the
held-out clips, so they are not the measure here.

Budget on the 2-core CPU: 1,000 steps each (~6 min), half the main job; 48 probe prompts each.

    python -m sorajax.sweep --sweep=experiments/sweeps/framing.py --workdir=runs/framing
    python -m sorajax.compare runs/framing
Needs the main job's autoencoder (runs/main/vae; another with --config.vae_workdir=DIR).
"""

from sorajax.sweeps import grid

CONFIG = "configs/dit_tiny.py"
SHARED = {"vae_workdir": "runs/main/vae", "train.steps": 1000, "eval.every": 250}
MEMBERS = grid({"data.framing": ["native", "square"]})
PROBE_PROMPTS = 48
