"""Every prompting mode of the report on a Wan checkpoint (the tiny Wan2.1 T2V diffusers folder), via per-token t.

Wan2.1-T2V was trained for text to video only (Wan2.2-TI2V also for animating an image, whose parity
with diffusers is in test_wan_pipeline.py): these modes run zero-shot on it, and what is checked is
that each runs at Wan's sizes, returns the right frames, and holds the given latents exactly.
"""

import os

import numpy as np
import pytest

from sorajax import long_video, prompting
from sorajax.wan import pipeline_from_diffusers

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")
H, W = 32, 48  # multiples of 16: Wan2.1's x8 VAE and 1x2x2 patches


@pytest.fixture(scope="module")
def wan():
    pipeline = pipeline_from_diffusers(os.path.join(FIXTURES, "wan21_t2v_tiny"))
    pipeline.defaults = pipeline.defaults.__class__(frames=9, height=H, width=W, steps=2, method="unipc",
                                                    guidance=5.0, shift=pipeline.defaults.shift)
    return pipeline


@pytest.fixture(scope="module")
def clip():
    t, y, x = np.meshgrid(np.arange(9), np.arange(H), np.arange(W), indexing="ij")
    return np.stack([(x * 5 + t * 9) % 256, (y * 7) % 256, (x + y + 20 * t) % 256], -1).astype(np.uint8)


def test_extend_forward_and_backward_hold_the_input_latents(wan, clip):
    forward = prompting.extend(wan, "the ball goes on", clip, "forward", context=1)
    assert forward.video.shape == (9 + 8, H, W, 3)  # the input, then the window after its first frame
    np.testing.assert_array_equal(forward.video[:9], clip)
    np.testing.assert_array_equal(forward.latent[0], wan.encode(clip[8:9])[0])  # the input's last frame, exactly
    backward = prompting.extend(wan, "the ball came from the left", clip, "backward", context=1)
    assert backward.video.shape == (4 + 9, H, W, 3)
    np.testing.assert_array_equal(backward.video[4:], clip)
    np.testing.assert_array_equal(backward.latent[-1], wan.encode(clip[:5])[1])


def test_connect_and_loop(wan, clip):
    other = clip[::-1, ::-1].copy()
    joined = prompting.connect(wan, "the ball turns around", clip, other)
    assert joined.window.shape == (9, H, W, 3)
    np.testing.assert_array_equal(joined.latent[0], wan.encode(clip[8:9])[0])
    np.testing.assert_array_equal(joined.latent[2], wan.encode(other[:5])[1])
    looped = prompting.loop(wan, "a ball", clip)
    assert looped.video.shape == (9 + 3, H, W, 3)
    np.testing.assert_array_equal(looped.video[:9], clip)


def test_sdedit_inpaint_and_outpaint(wan, clip):
    edited = prompting.edit(wan, "a blue ball", clip, strength=0.5)
    assert edited.window.shape == clip.shape and edited.latent.shape == wan.latent_shape(9, H, W)
    regenerate = np.zeros(clip.shape[:3], bool)
    regenerate[:, :16, :16] = True  # one 16x16-pixel token column, all frames
    painted = prompting.inpaint(wan, "a cube appears", clip, regenerate)
    given = wan.encode(clip)
    np.testing.assert_array_equal(painted.latent[:, :, 2:], given[:, :, 2:])  # everything outside, exactly
    wide = prompting.outpaint(wan, "more of the room", clip[:, :, :32], H, W, left=0)
    assert wide.video.shape == (9, H, W, 3)
    assert wide.given[:, :, :32].all() and not wide.given[:, :, 32:].any()  # the input's columns are given


def test_long_video_by_overlapping_windows(wan):
    video = long_video.generate_long_video(wan, "a ball rolls on and on", 17, context=1)
    assert video.shape == (17, H, W, 3) and video.dtype == np.uint8
