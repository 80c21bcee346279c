"""UniPC for flow matching: the solver Wan samples with by default (Zhao et al. 2023, "UniPC").

A multistep predictor-corrector in the log-SNR variable ``lambda = log((1 - sigma) / sigma)`` of the
rectified-flow path ``x = (1 - sigma) x0 + sigma eps``, written on the network's x0 prediction
``x0 = x - sigma v``. Each step corrects the sample just reached with the new prediction (UniC,
order of the previous step), then predicts the next one (UniP, second order once two predictions
exist, first order at the last step); the B(h) = e^h - 1 variant ("bh2"). The grid is the one Wan's
pipelines use: N points from 1 to 1/1000, shifted by ``shift``, the first nudged below 1, then 0.
Coefficients are scalars of the grid, computed on the host in float64; the updates run in JAX.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import numpy as np

Array = jax.Array
Velocity = Callable[[Array, float], Array]  # v(x, sigma)

TRAIN_TIMESTEPS = 1000


def unipc_sigmas(steps: int, shift: float) -> np.ndarray:
    """``steps + 1`` noise levels from ~1 to 0: Wan's flow grid (float32, as its scheduler keeps them)."""
    if steps < 1:
        raise ValueError(f"UniPC needs at least 1 step, got {steps}")
    sigmas = np.linspace(1.0, 1.0 / TRAIN_TIMESTEPS, steps + 1)[:-1]
    sigmas = shift * sigmas / (1 + (shift - 1) * sigmas)
    if abs(sigmas[0] - 1.0) < 1e-6:
        sigmas[0] -= 1e-6  # log-SNR is infinite at sigma = 1
    return np.concatenate([sigmas, [0.0]]).astype(np.float32)


def _lam(sigma: float) -> float:
    with np.errstate(divide="ignore"):
        return float(np.log(np.float64(1.0 - sigma)) - np.log(np.float64(sigma)))


def _phis(h: float) -> tuple[float, float, float]:
    """(e^-h - 1, b_1, b_2): the step's phi function and the B(h)-scaled right-hand sides of orders 1 and 2."""
    hh = -h
    h_phi_1 = float(np.expm1(hh))
    b_h = h_phi_1
    h_phi_k = h_phi_1 / hh - 1.0
    b1 = h_phi_k / b_h
    h_phi_k = h_phi_k / hh - 0.5
    b2 = h_phi_k * 2.0 / b_h
    return h_phi_1, b1, b2


def _update(x: Array, m0: Array, sigma_s0: float, sigma_t: float, residual: Array | float) -> Array:
    """``x_t = sigma_t / sigma_s0 x - alpha_t (e^-h - 1) m0 - alpha_t B(h) residual``."""
    h_phi_1 = _phis(_lam(sigma_t) - _lam(sigma_s0))[0]
    alpha_t = 1.0 - sigma_t
    return (sigma_t / sigma_s0) * x - alpha_t * h_phi_1 * m0 - alpha_t * h_phi_1 * residual


def sample_unipc(velocity: Velocity, x: Array, sigmas: np.ndarray, order: int = 2) -> Array:
    """Integrate from ``x`` at ``sigmas[0]`` to ``sigmas[-1]`` (= 0) with UniPC of ``order`` 1 or 2."""
    if order not in (1, 2):
        raise ValueError(f"UniPC order must be 1 or 2, got {order}")
    sigmas = [float(s) for s in np.asarray(sigmas, np.float32)]
    steps = len(sigmas) - 1
    preds: list[Array] = []  # x0 predictions, newest last
    last_x, last_order = None, 0
    for i in range(steps):
        pred = x - sigmas[i] * velocity(x, sigmas[i])
        if last_x is not None:  # UniC: correct the sample just reached with the new prediction
            x = _correct(last_x, preds, pred, sigmas, i, last_order)
        preds = (preds + [pred])[-2:]
        this_order = min(order, steps - i, len(preds))
        last_x, last_order = x, this_order
        x = _predict(x, preds, sigmas, i, this_order)  # UniP
    return x


def _predict(x: Array, preds: list[Array], sigmas: list[float], i: int, order: int) -> Array:
    s0, t = sigmas[i], sigmas[i + 1]
    m0 = preds[-1]
    if order == 1:
        return _update(x, m0, s0, t, 0.0)
    h = _lam(t) - _lam(s0)
    r1 = (_lam(sigmas[i - 1]) - _lam(s0)) / h
    return _update(x, m0, s0, t, 0.5 * (preds[-2] - m0) / r1)


def _correct(x: Array, preds: list[Array], pred: Array, sigmas: list[float], i: int, order: int) -> Array:
    s0, t = sigmas[i - 1], sigmas[i]
    m0 = preds[-1]
    _, b1, b2 = _phis(_lam(t) - _lam(s0))
    if order == 1:
        return _update(x, m0, s0, t, 0.5 * (pred - m0))
    h = _lam(t) - _lam(s0)
    r1 = (_lam(sigmas[i - 2]) - _lam(s0)) / h
    rho = np.linalg.solve(np.array([[1.0, 1.0], [r1, 1.0]]), np.array([b1, b2]))
    return _update(x, m0, s0, t, rho[0] * (preds[-2] - m0) / r1 + rho[1] * (pred - m0))
