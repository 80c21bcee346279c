"""The non-finite loss guard: a NaN/Inf step changes nothing; too many in a row stop the run.

One bad batch or an overflow should not destroy weeks of training. The guarded step computes the
update as usual, then keeps the old weights, EMA and optimizer state wherever the loss or the
gradient norm is not finite (a select inside the same jitted program, so it costs no host sync).
The step counter and the random key still advance, so the data order and the noise go on as in a
run without the bad step. The step reports `nonfinite` (0 or 1); the runner counts them, logs the
total, and after `max_nonfinite_steps` in a row stops with the newest checkpoint intact.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp


class NonFiniteLossError(RuntimeError):
    """The loss was NaN or Inf for too many steps in a row."""


def skip_nonfinite(train_step: Callable[[Any, Any], tuple[Any, dict]]) -> Callable[[Any, Any], tuple[Any, dict]]:
    """`train_step` whose NaN/Inf steps leave the state as it was (but for `step` and `rng`)."""

    def guarded(state: Any, batch: Any, *frozen: Any) -> tuple[Any, dict]:
        new, metrics = train_step(state, batch, *frozen)
        finite = jnp.isfinite(metrics["loss"]) & jnp.isfinite(metrics["grad_norm"])
        kept = jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, state)
        metrics = {**metrics, "nonfinite": (~finite).astype(jnp.int32)}
        return kept.replace(step=new.step, rng=new.rng), metrics

    return guarded


class NonFiniteGuard:
    """Counts skipped steps; raises once `limit` come in a row."""

    def __init__(self, limit: int):
        self.limit, self.total, self.streak, self.first = limit, 0, 0, None

    def record(self, step: int, nonfinite: Any, last_saved: int | None) -> None:
        if not int(nonfinite):
            self.streak, self.first = 0, None
            return
        self.total += 1
        self.streak += 1
        self.first = step if self.first is None else self.first
        if self.streak >= self.limit:
            saved = f"the newest checkpoint (step {last_saved}) is intact" if last_saved is not None else \
                "no checkpoint was saved yet"
            raise NonFiniteLossError(
                f"the loss was NaN or Inf in {self.streak} steps in a row (steps {self.first}-{step}); those steps "
                f"changed no weights and {saved}: lower train.learning_rate or check the data, then re-run the "
                "same command to resume (or raise train.max_nonfinite_steps)"
            )
