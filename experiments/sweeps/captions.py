"""The report's descriptive against terse captions: does a model trained on detailed captions follow prompts better?

The same clips captioned two ways (sorajax/data/world/captions.py): 'descriptive' names the object's
size, colour, shape, background, place and motion ("A video of a large orange diamond against a light
grey background. The orange diamond starts at the left and moves quickly to the right."); 'terse' only
the object ("orange diamond"). The probe prompts are
descriptive for both members, as the report's expanded user prompts are, and score colour, shape and
direction: a terse-trained model was never told directions, so direction agreement is the claim's
sharpest measure. Held-out losses condition on each member's own caption style.

Budget on the 2-core CPU: 1,000 steps each (~6 min), half the main job; 48 probe prompts each.

    python -m sorajax.sweep --sweep=experiments/sweeps/captions.py --workdir=runs/captions
    python -m sorajax.compare runs/captions
Needs the main job's autoencoder (runs/main/vae; another with --config.vae_workdir=DIR).
"""

from sorajax.sweeps import grid

CONFIG = "configs/dit_tiny.py"
SHARED = {"vae_workdir": "runs/main/vae", "train.steps": 1000, "eval.every": 250}
MEMBERS = grid({"data.caption_style": ["descriptive", "terse"]})
PROBE_PROMPTS = 48
