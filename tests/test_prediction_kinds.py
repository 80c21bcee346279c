"""A run trained to predict x0 or epsilon samples correctly: the pipeline reads the network as its own kind.

On Gaussian data the exact denoiser of every kind is known in closed form, so the one sampling loop
(through the real Pipeline) must turn N(0, 1) noise into N(MU, S^2) whatever the kind; reading an
x0- or epsilon-network as a velocity (the old pipeline's bug) lands far from it.
"""

import numpy as np
import pytest

from sorajax.pipeline import Pipeline, SampleRequest
from tests.tiny_pipeline import tiny_random_pipeline

MU, S = 0.7, 0.5


class GaussianDenoiser:
    """Stands in for a DiT: the exact prediction of its kind when every feature of x0 is N(MU, S^2)."""

    def __init__(self, kind: str):
        self.kind = kind

    def apply(self, variables, x_t, positions, segment_ids, t, text, text_segment_ids):
        t = t[..., None]
        spread = (1 - t) ** 2 * S**2 + t**2  # variance of x_t
        residual = x_t - (1 - t) * MU
        x0 = MU + (1 - t) * S**2 / spread * residual  # E[x0 | x_t]
        noise = t / spread * residual  # E[eps | x_t]
        return {"velocity": noise - x0, "x0": x0, "epsilon": noise}[self.kind]


@pytest.fixture(scope="module")
def tiny():
    return tiny_random_pipeline()


def _samples(tiny: Pipeline, network: str, read_as: str) -> np.ndarray:
    pipeline = Pipeline(tiny.vae, tiny.vae_variables, GaussianDenoiser(network), None, tiny.text_encoder, tiny.patch,
                        tiny.time_config, prediction=read_as)
    request = SampleRequest(frames=9, height=32, width=32, steps=20, method="dpmpp_2m", guidance=1.0, seed=0)
    latents = pipeline.sample_latents(["a ball"] * 8, pipeline.latent_shape(9, 32, 32), request)
    return np.concatenate([z.ravel() for z in latents])  # 8 x 3 x 8 x 8 x 4 = 6,144 values


@pytest.mark.parametrize("kind", ["velocity", "x0", "epsilon"])
def test_each_prediction_kind_samples_the_data_distribution(tiny, kind):
    values = _samples(tiny, kind, kind)
    assert abs(values.mean() - MU) < 0.03 and abs(values.std() / S - 1) < 0.08  # measured: 0.69, 0.48


@pytest.mark.parametrize("kind", ["x0", "epsilon"])
def test_reading_the_network_as_a_velocity_is_far_off(tiny, kind):
    values = _samples(tiny, kind, "velocity")
    assert abs(values.mean() - MU) > 0.2 or abs(values.std() / S - 1) > 0.5
