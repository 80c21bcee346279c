"""UniPC (flow) takes the steps diffusers' UniPCMultistepScheduler takes on Wan's grid, and is one of the samplers."""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sorajax.diffusion.samplers import sample
from sorajax.diffusion.timesteps import sampling_timesteps
from sorajax.diffusion.unipc import wan_sigmas

REF = np.load(Path(__file__).parent / "fixtures" / "unipc_reference.npz")


def field(w):
    """The fixture's velocity field (tools/make_unipc_fixture.py) on tokens [1, 4, 8], t per token."""
    return lambda x, t: jnp.tanh(x @ w) + t[..., None] * x - 0.3


@pytest.mark.parametrize("steps,shift", [(10, 3.0), (4, 5.0), (25, 8.0), (1, 3.0)])
def test_unipc_equals_diffusers(steps, shift):
    sigmas = wan_sigmas(steps, shift)
    np.testing.assert_allclose(sigmas, REF[f"sigmas_{steps}_{shift}"], atol=1e-7)
    run = jax.jit(lambda x, ts: sample(field(jnp.asarray(REF["w"])), x, ts, method="unipc"))
    out = np.asarray(run(jnp.asarray(REF["x_init"])[None], jnp.asarray(sigmas)))[0]
    want = REF[f"out_{steps}_{shift}"]
    assert np.abs(want - REF["x_init"]).max() > 0.5  # the field really moves the sample
    np.testing.assert_allclose(out, want, atol=1e-5)


def test_on_a_straight_path_every_grid_lands_on_the_data():
    """With a straight path's exact velocity (v = eps - x0) UniPC is exact from sorajax's grid (t0 = 1) too."""
    x0, eps = jnp.full((1, 2, 3), 0.7), jnp.full((1, 2, 3), -1.2)
    for grid in (sampling_timesteps(6, 3.0), wan_sigmas(6, 3.0)):
        out = sample(lambda x, t: eps - x0, eps, jnp.asarray(grid), method="unipc")
        np.testing.assert_allclose(np.asarray(out), np.asarray(x0), atol=1e-5)


def test_held_tokens_stay_and_zero_length_steps_change_nothing():
    w = jnp.asarray(REF["w"])
    x = jnp.asarray(REF["x_init"])[None]
    mask = jnp.asarray([[True, False, False, True]])
    out = sample(field(w), x, jnp.asarray(wan_sigmas(5, 3.0)), method="unipc", cond_mask=mask, x_cond=x * 2)
    np.testing.assert_array_equal(np.asarray(out)[0, [0, 3]], np.asarray(x * 2)[0, [0, 3]])
    still = sample(field(w), x, jnp.full((6,), 0.4), method="unipc")
    np.testing.assert_array_equal(np.asarray(still), np.asarray(x))


def test_bad_grid_is_refused():
    with pytest.raises(ValueError, match="at least 1 step"):
        wan_sigmas(0, 3.0)
