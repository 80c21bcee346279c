"""Sampling Wan models through sorajax's pipeline equals diffusers' pipelines, full loop, on tiny checkpoints.

The fixtures (tools/make_wan_pipeline_fixtures.py) are whole tiny diffusers folders and diffusers' own
sampling loops on them from given noise: `WanPipeline` (Wan2.1 text to video) and the TI2V path of
`WanImageToVideoPipeline` (Wan2.2-TI2V-5B's image to video), UniPC, 4 steps, guidance 5, a negative prompt.
"""

import json
import os

import einops
import numpy as np
import pytest

from sorajax import prompting
from sorajax.wan import WAN_NEGATIVE_PROMPT, pipeline_from_diffusers

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")


@pytest.fixture(scope="module")
def reference():
    return dict(np.load(os.path.join(FIXTURES, "wan_pipeline_reference.npz")))


def settings(reference, name):
    return json.loads(str(reference[f"{name}/settings"]))


@pytest.fixture(scope="module")
def t2v():
    return pipeline_from_diffusers(os.path.join(FIXTURES, "wan21_t2v_tiny"))


@pytest.fixture(scope="module")
def ti2v():
    return pipeline_from_diffusers(os.path.join(FIXTURES, "wan22_ti2v_tiny"))


def request_of(pipeline, s):
    return dict(frames=s["frames"], height=s["height"], width=s["width"], steps=s["steps"], guidance=s["guidance"],
                method="unipc")


def latent(noise_bcthw):
    return einops.rearrange(noise_bcthw[0], "c t h w -> t h w c")


def test_run_defaults_come_from_the_folder_and_wans_release(t2v):
    assert t2v.schedule == "wan" and t2v.defaults.method == "unipc" and t2v.defaults.steps == 50
    assert t2v.defaults.shift == 3.0  # the fixture scheduler's flow_shift, not the family's 5.0
    assert t2v.negative_prompt == WAN_NEGATIVE_PROMPT and t2v.text_encoder.padded_context


def test_text_to_video_full_loop_equals_diffusers_wan_pipeline(t2v, reference):
    s = settings(reference, "wan21_t2v")
    shape = t2v.latent_shape(s["frames"], s["height"], s["width"])
    request = t2v.defaults.__class__(**request_of(t2v, s))
    noise = latent(reference["wan21_t2v/noise"])
    assert noise.shape == shape
    [z] = t2v.sample_latents([s["prompt"]], shape, request, [s["negative_prompt"]], noise=[noise])
    expected = latent(reference["wan21_t2v/latents"][None])
    np.testing.assert_allclose(z, expected, atol=1e-4, rtol=0)
    video = np.asarray(t2v._decode(t2v.vae_variables, z[None]))[0]  # [-1, 1] floats before uint8
    np.testing.assert_allclose((video + 1) / 2, reference["wan21_t2v/video"], atol=1e-4, rtol=0)


def test_image_to_video_full_loop_equals_diffusers_ti2v(ti2v, reference):
    s = settings(reference, "wan22_ti2v")
    request = ti2v.defaults.__class__(**request_of(ti2v, s))
    noise = latent(reference["wan22_ti2v/noise"])
    result = prompting.animate(ti2v, s["prompt"], reference["wan22_ti2v/image"], request,
                               negative_prompt=s["negative_prompt"], noise=noise)
    expected = latent(reference["wan22_ti2v/latents"][None])
    np.testing.assert_allclose(result.latent, expected, atol=1e-4, rtol=0)
    video = np.asarray(ti2v._decode(ti2v.vae_variables, result.latent[None]))[0]
    np.testing.assert_allclose((video + 1) / 2, reference["wan22_ti2v/video"], atol=1e-4, rtol=0)


def test_each_prompt_is_encoded_once(t2v):
    t2v.captions.encoder_calls = 0
    t2v.caption_tokens(["a ball", "a cube"])
    t2v.caption_tokens(["a ball", WAN_NEGATIVE_PROMPT])
    t2v.caption_tokens(["a cube", WAN_NEGATIVE_PROMPT])
    assert t2v.captions.encoder_calls == 2 and len(t2v.captions) >= 3


def test_bf16_weights_sample_close_to_float32(t2v, reference):
    from sorajax.wan import pipeline_from_diffusers as load

    half = load(os.path.join(FIXTURES, "wan21_t2v_tiny"), weights_dtype="bfloat16")
    s = settings(reference, "wan21_t2v")
    shape = t2v.latent_shape(s["frames"], s["height"], s["width"])
    request = t2v.defaults.__class__(**request_of(t2v, s))
    noise = [latent(reference["wan21_t2v/noise"])]
    [full] = t2v.sample_latents([s["prompt"]], shape, request, [s["negative_prompt"]], noise=noise)
    [low] = half.sample_latents([s["prompt"]], shape, request, [s["negative_prompt"]], noise=noise)
    assert {str(x.dtype) for x in __import__("jax").tree.leaves(half.dit_params)} == {"bfloat16"}
    # bf16 weights round every parameter to 8 bits of mantissa: ~1e-2 of the latents' scale after 4 steps.
    assert 0 < np.abs(low - full).max() < 0.05 * np.abs(full).max()
