"""PSNR/SSIM against scikit-image's reference implementation."""

import numpy as np
import pytest
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from sorajax.eval.image_metrics import psnr, ssim


def _pair(shape, noise, seed=0):
    rng = np.random.default_rng(seed)
    a = rng.uniform(-1, 1, shape).astype(np.float32)
    b = np.clip(a + rng.normal(0, noise, shape), -1, 1).astype(np.float32)
    return a, b


@pytest.mark.parametrize("shape,noise", [((32, 40, 3), 0.3), ((24, 24, 3), 0.05), ((64, 48, 3), 0.6)])
def test_ssim_and_psnr_match_scikit_image(shape, noise):
    a, b = _pair(shape, noise)
    ua, ub = (a + 1) / 2, (b + 1) / 2
    expected_ssim = structural_similarity(
        ua, ub, data_range=1.0, channel_axis=-1, gaussian_weights=True, sigma=1.5, use_sample_covariance=False
    )
    assert float(ssim(a, b)) == pytest.approx(expected_ssim, abs=1e-5)
    assert float(psnr(a, b)) == pytest.approx(peak_signal_noise_ratio(ua, ub, data_range=1.0), abs=1e-3)


def test_metrics_are_per_frame_over_leading_axes():
    a, b = _pair((2, 3, 16, 16, 3), 0.2)
    scores = ssim(a, b)
    assert scores.shape == (2, 3)
    assert float(scores[1, 2]) == pytest.approx(float(ssim(a[1, 2], b[1, 2])), abs=1e-6)
    assert psnr(a, b).shape == (2, 3)


def test_identical_frames_score_perfectly_and_known_psnr():
    a, _ = _pair((16, 16, 3), 0.1)
    assert float(ssim(a, a)) == pytest.approx(1.0, abs=1e-6)
    # A constant offset of 0.2 in [-1, 1] is 0.1 in [0, 1]: MSE 0.01 -> 20 dB.
    shifted = np.full((8, 8, 3), 0.0, np.float32), np.full((8, 8, 3), 0.2, np.float32)
    assert float(psnr(*shifted)) == pytest.approx(20.0, abs=1e-4)


def test_ssim_small_frames_use_a_smaller_window():
    a, b = _pair((1, 8, 8, 3), 0.1)
    value = float(ssim(a, b)[0])
    assert 0.0 < value < 1.0
