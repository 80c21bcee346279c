"""Reconstruction metrics on pixels in [-1, 1]: PSNR and SSIM, per frame then averaged.

SSIM follows Wang et al. (2004): an 11x11 Gaussian window (sigma 1.5) on each
channel, constants K1 = 0.01, K2 = 0.03 for a data range of 1 (pixels are
mapped to [0, 1] first), mean over pixels and channels.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def _to_unit_range(x: jax.Array) -> jax.Array:
    return (jnp.clip(x, -1.0, 1.0) + 1.0) / 2.0


def psnr(x: jax.Array, y: jax.Array) -> jax.Array:
    """PSNR in dB of each frame of [..., H, W, C] pixel arrays in [-1, 1]; shape [...]."""
    a, b = _to_unit_range(x), _to_unit_range(y)
    mse = jnp.mean((a - b) ** 2, axis=(-3, -2, -1))
    return -10.0 * jnp.log10(jnp.maximum(mse, 1e-10))


def _gaussian_window(size: int = 11, sigma: float = 1.5) -> np.ndarray:
    coords = np.arange(size, dtype=np.float64) - (size - 1) / 2
    g = np.exp(-(coords**2) / (2 * sigma**2))
    return (g / g.sum()).astype(np.float32)


def _blur(x: jax.Array, window: np.ndarray) -> jax.Array:
    """Separable 'valid' Gaussian filter over H and W of [N, H, W, C]."""
    k = jnp.asarray(window)
    channels = x.shape[-1]
    kh = jnp.tile(k.reshape(-1, 1, 1, 1), (1, 1, 1, channels))
    kw = jnp.tile(k.reshape(1, -1, 1, 1), (1, 1, 1, channels))
    dn = ("NHWC", "HWIO", "NHWC")
    x = jax.lax.conv_general_dilated(x, kh, (1, 1), "VALID", dimension_numbers=dn, feature_group_count=channels)
    return jax.lax.conv_general_dilated(x, kw, (1, 1), "VALID", dimension_numbers=dn, feature_group_count=channels)


def ssim(x: jax.Array, y: jax.Array, window_size: int = 11) -> jax.Array:
    """SSIM of each frame of [..., H, W, C] arrays in [-1, 1]; shape [...].

    Frames smaller than the window use a window as large as the smaller side
    (odd), so 1-frame 16x16 thumbnails still get a score.
    """
    lead = x.shape[:-3]
    h, w, c = x.shape[-3:]
    size = min(window_size, h, w)
    size -= 1 - size % 2
    window = _gaussian_window(size, 1.5 * size / 11)
    a = _to_unit_range(x).reshape(-1, h, w, c)
    b = _to_unit_range(y).reshape(-1, h, w, c)
    c1, c2 = 0.01**2, 0.03**2
    mu_a, mu_b = _blur(a, window), _blur(b, window)
    var_a = _blur(a * a, window) - mu_a**2
    var_b = _blur(b * b, window) - mu_b**2
    cov = _blur(a * b, window) - mu_a * mu_b
    score = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return jnp.mean(score, axis=(-3, -2, -1)).reshape(lead)
