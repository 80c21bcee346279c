"""UniPC (flow) takes the steps diffusers' UniPCMultistepScheduler takes, on its grid (Wan's default solver)."""

from __future__ import annotations

from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest

from sorajax.diffusion.unipc import sample_unipc, unipc_sigmas

REF = np.load(Path(__file__).parent / "fixtures" / "unipc_reference.npz")


@pytest.mark.parametrize("steps,shift", [(10, 3.0), (4, 5.0), (25, 8.0), (1, 3.0)])
def test_unipc_equals_diffusers(steps, shift):
    sigmas = unipc_sigmas(steps, shift)
    np.testing.assert_allclose(sigmas, REF[f"sigmas_{steps}_{shift}"], atol=1e-7)
    w = jnp.asarray(REF["w"])
    out = sample_unipc(lambda x, s: jnp.tanh(x @ w) + s * x - 0.3, jnp.asarray(REF["x_init"]), sigmas)
    want = REF[f"out_{steps}_{shift}"]
    assert np.abs(want - REF["x_init"]).max() > 0.5  # the field really moves the sample
    np.testing.assert_allclose(np.asarray(out), want, atol=1e-5)


def test_first_order_unipc_on_a_straight_path_lands_on_the_data():
    """With the exact velocity of a straight path (v = eps - x0) every step is exact: the end is x0."""
    x0, eps = jnp.full((2, 3), 0.7), jnp.full((2, 3), -1.2)
    out = sample_unipc(lambda x, s: eps - x0, eps * 1.0, unipc_sigmas(6, 3.0), order=1)
    np.testing.assert_allclose(np.asarray(out), np.asarray(x0), atol=1e-5)


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="at least 1 step"):
        unipc_sigmas(0, 3.0)
    with pytest.raises(ValueError, match="order must be 1 or 2"):
        sample_unipc(lambda x, s: x, jnp.zeros(2), unipc_sigmas(2, 1.0), order=3)
