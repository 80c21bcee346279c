"""The pipeline's memory check and tiled coding: refusals come before any allocation; tiles change little."""

from __future__ import annotations

import numpy as np
import pytest

from sorajax import memory_estimate
from tests.tiny_pipeline import tiny_random_pipeline

REFUSAL = (r"^this request needs ~\d+\.\d GiB \(DiT weights \d+\.\d, activations \d+\.\d, VAE decode \d+\.\d\) "
           r"but the device has 0\.0 GiB: use fewer frames, a smaller size, tiling \(--tile\), bf16 weights, "
           r"--long, or more devices$")


@pytest.fixture(scope="module")
def pipeline():
    return tiny_random_pipeline()


def _no_sampling(*args, **kwargs):
    raise AssertionError("sampling started: the request should have been refused first")


def test_a_request_over_the_device_limit_is_refused_before_sampling(pipeline, monkeypatch):
    monkeypatch.setattr(memory_estimate, "device_limit_bytes", lambda device=None: 1024)
    monkeypatch.setattr(pipeline, "sampling_inputs", _no_sampling)
    with pytest.raises(ValueError, match=REFUSAL):
        pipeline.generate(["a red ball"], frames=9, height=16, width=16)


def test_prompting_modes_and_long_videos_are_checked_too(pipeline, monkeypatch):
    from sorajax import prompting
    from sorajax.long_video import generate_long_video

    monkeypatch.setattr(memory_estimate, "device_limit_bytes", lambda device=None: 1024)
    monkeypatch.setattr(pipeline, "sampling_inputs", _no_sampling)
    monkeypatch.setattr(pipeline, "encode", _no_sampling)  # refused before the input is encoded
    video = np.zeros((5, 16, 16, 3), np.uint8)
    with pytest.raises(ValueError, match=REFUSAL):
        prompting.extend(pipeline, "a red ball", video, frames=9)
    with pytest.raises(ValueError, match=REFUSAL):
        prompting.animate(pipeline, "a red ball", video[0], frames=9)
    with pytest.raises(ValueError, match=REFUSAL):
        generate_long_video(pipeline, "a red ball", 17, frames=9, height=16, width=16)


def test_an_absurd_size_is_refused_before_the_estimate(pipeline, monkeypatch):
    monkeypatch.setattr(memory_estimate, "estimate_sampling", _no_sampling)
    with pytest.raises(ValueError, match=r"^width 100000 is past the ceiling of 8192"):
        pipeline.generate(["a red ball"], frames=9, height=16, width=100000)


def test_tiled_generate_equals_untiled_within_tolerance(pipeline):
    request = dict(frames=5, height=32, width=32, steps=2)
    untiled = pipeline.generate(["a red ball"], **request)[0]
    covering = pipeline.generate(["a red ball"], tile=8, **request)[0]  # the latent is 8 x 8: one tile
    np.testing.assert_array_equal(covering, untiled)
    tiled = pipeline.generate(["a red ball"], tile=4, **request)[0]
    assert tiled.shape == untiled.shape == (5, 32, 32, 3)
    error = np.abs(tiled.astype(np.int16) - untiled.astype(np.int16))
    print("tiled generate mean |error| (uint8)", error.mean())
    # Random VAE weights are not local (a trained one is): tolerance, mean 45 of 255 levels.
    assert 0 < error.mean() < 45


def test_a_run_config_can_ask_for_tiles():
    from sorajax.diffusion.sampling import SampleConfig

    assert SampleConfig.from_mapping(dict(tile=32)).tile == 32 and SampleConfig().tile is None
    with pytest.raises(ValueError, match=r"^sample.tile must be >= 1 latent pixels or None \(whole frames\), got 0$"):
        SampleConfig(tile=0)
