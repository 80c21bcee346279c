"""Training progress that tells the truth: steps counted when they finish, the rate over recent training time.

JAX dispatches a step before the previous one has run, so counting a step when it is dispatched makes the
rate jump: fast while the queue fills, slow when logging or an evaluation waits for the device. tqdm's own
rate is an average over its last few screen refreshes, so those jumps reach the ETA (it swung between ~4
and ~1.3 steps/s around every log point of the tiny DiT). Here a step counts once its result is read
back, the rate is taken over the last ``window`` finished steps, and time spent outside training steps
(compiling, evaluating, saving) is left out, so the ETA is that of the steps still to run.
"""

from __future__ import annotations

import contextlib
import time
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

from tqdm.auto import tqdm


class StepRate:
    """Steps and items per second over the last ``window`` finished steps, pauses excluded."""

    def __init__(self, window: int = 50, clock: Callable[[], float] = time.perf_counter):
        if window < 1:
            raise ValueError(f"the rate window must be >= 1 steps, got {window}")
        self._clock = clock
        self._paused = 0.0  # seconds spent in `paused()` blocks so far
        self._finished: deque[tuple[float, int, float]] = deque(maxlen=window + 1)  # (training time, step, items)
        self._items = 0.0

    def _training_time(self) -> float:
        return self._clock() - self._paused

    def finished(self, step: int, items: float = 1.0) -> None:
        """Step `step` (which carried `items` examples) has run on the device."""
        self._items += items
        self._finished.append((self._training_time(), step, self._items))

    def restart(self) -> None:
        """Forget the finished steps: what follows a compile or a resume starts a new measurement."""
        self._finished.clear()

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """Time inside this block (an evaluation, a checkpoint save) is not training time."""
        start = self._clock()
        try:
            yield
        finally:
            self._paused += self._clock() - start

    def _span(self) -> tuple[float, int, float] | None:
        if len(self._finished) < 2:
            return None
        (t0, s0, i0), (t1, s1, i1) = self._finished[0], self._finished[-1]
        return (t1 - t0, s1 - s0, i1 - i0) if t1 > t0 else None

    def steps_per_s(self) -> float | None:
        span = self._span()
        return None if span is None else span[1] / span[0]

    def items_per_s(self) -> float | None:
        span = self._span()
        return None if span is None else span[2] / span[0]


class ProgressBar(tqdm):
    """A tqdm bar whose rate (and so its ETA) is a :class:`StepRate`'s."""

    def __init__(self, *args: Any, rate: StepRate, **kwargs: Any):
        self.step_rate = rate
        super().__init__(*args, **kwargs)

    @property
    def format_dict(self) -> dict[str, Any]:
        values = super().format_dict
        if hasattr(self, "step_rate"):
            values["rate"] = self.step_rate.steps_per_s()
        return values
