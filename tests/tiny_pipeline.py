"""A random-weight pipeline small enough for unit tests of everything that samples or scores."""

import jax
import numpy as np

from sorajax.diffusion.timesteps import TrainingTimeConfig
from sorajax.models.build import build_dit
from sorajax.models.text_encoder import tiny_text_encoder
from sorajax.models.vae import CausalVAE, VAEConfig
from sorajax.pipeline import Pipeline, SampleRequest


def tiny_random_pipeline() -> Pipeline:
    """Random weights, 16x16 pixels, 4x4 latents of 4 channels, a 1-block width-32 DiT: behaviour tests only."""
    vae = CausalVAE(VAEConfig.from_dict(dict(
        base_channels=8, channel_multipliers=(1, 2), num_res_blocks=1, spatial_downsample=(True, True),
        temporal_downsample=(True, True), latent_channels=4, norm_groups=4, mid_attention=False,
    )))
    vae_variables = vae.init({"params": jax.random.PRNGKey(0), "sample": jax.random.PRNGKey(1)}, np.zeros((1, 5, 16, 16, 3)))
    text_encoder = tiny_text_encoder(seed=0, max_length=16)
    dit = build_dit(dict(preset="tiny", width=32, depth=1, num_heads=2, dtype="float32"), (1, 2, 2), 4, text_encoder.dim)
    length = 12
    params = dit.init(jax.random.PRNGKey(2), np.zeros((1, length, 16)), np.zeros((1, length, 3), np.int32),
                      np.ones((1, length), np.int32), np.zeros((1, length)), np.zeros((1, 4, text_encoder.dim)),
                      np.ones((1, 4), np.int32))["params"]
    return Pipeline(vae, vae_variables, dit, params, text_encoder, (1, 2, 2),
                    TrainingTimeConfig(base_tokens=4, max_tokens=64),
                    SampleRequest(frames=9, height=16, width=16, steps=3, guidance=2.0))
