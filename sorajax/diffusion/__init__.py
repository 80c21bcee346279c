"""Rectified-flow diffusion, model-agnostic: noising and loss (flow), noise levels (timesteps), ODE samplers,
classifier-free guidance, the one sampling loop over a PackedBatch (sampling) and the one validation loss
(validation). Everything works on token arrays [B, L, P] with per-token noise levels t [B, L]."""

from sorajax.diffusion.flow import (
    add_noise,
    flow_matching_loss,
    noise_from_velocity,
    prediction_target,
    prediction_to_velocity,
    velocity_from_noise,
    velocity_from_x0,
    velocity_target,
    velocity_to_prediction,
    x0_from_velocity,
)
from sorajax.diffusion.guidance import (
    combine_guidance,
    drop_captions,
    guided_carried_velocity_fn,
    guided_velocity_fn,
    null_caption_like,
)
from sorajax.diffusion.samplers import SAMPLER_METHODS, num_function_evals, sample, sample_carrying, sdedit_start
from sorajax.diffusion.sampling import (
    SampleConfig,
    SampleRequest,
    packed_carried_denoiser,
    packed_carried_velocity,
    packed_denoiser,
    packed_velocity,
    sample_packed,
    sample_packed_carrying,
    start_level,
)
from sorajax.diffusion.timesteps import (
    TrainingTimeConfig,
    inverse_time_shift,
    sample_logit_normal,
    sampling_timesteps,
    shift_for_num_tokens,
    time_shift,
    tokens_per_segment,
    training_t,
)
from sorajax.diffusion.validation import fixed_level_loss, validation_loss
