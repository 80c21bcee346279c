"""Training progress: the rate and ETA come from finished steps over training time, steady across log points."""

from __future__ import annotations

import io

import grain
import pytest

from sorajax.data.iterators import batch_iterator
from sorajax.parallel.context import MeshContext
from sorajax.runs.metrics import read_metrics
from sorajax.train.config import TrainConfig
from sorajax.train.progress import ProgressBar, StepRate
from sorajax.train.runner import Trainer, run_training
from tests.test_nonfinite import _Batches, _init, _step


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _run_steps(rate: StepRate, clock: FakeClock, steps: range, step_s: float = 0.25, log_every: int = 5,
               log_s: float = 0.5, rates: list | None = None) -> None:
    """Steps of `step_s` seconds; every `log_every`-th waits `log_s` more (the device sync of a log point)."""
    for step in steps:
        clock.now += step_s + (log_s if step % log_every == 0 else 0.0)
        rate.finished(step, items=4)
        if rates is not None:
            rates.append(rate.steps_per_s())


def test_the_rate_is_finished_steps_over_the_window_and_steady_across_log_points():
    clock = FakeClock()
    rate = StepRate(window=10, clock=clock)
    assert rate.steps_per_s() is None  # nothing finished yet: no rate, no ETA
    rates: list = []
    _run_steps(rate, clock, range(1, 101), rates=rates)
    # 10 steps span 10 x 0.25 s plus two log waits of 0.5 s: exactly 10 / 3.5 steps/s, 40 / 3.5 items/s.
    assert rate.steps_per_s() == pytest.approx(10 / 3.5)
    assert rate.items_per_s() == pytest.approx(40 / 3.5)
    steady = [r for r in rates[10:]]
    # A window of two log periods moves by one log wait at most: within 15%, where a per-refresh rate would
    # alternate between 4 steps/s and 1.3 steps/s (a 3x swing).
    assert max(steady) / min(steady) < 1.15


def test_compiling_and_paused_time_are_left_out():
    clock = FakeClock()
    rate = StepRate(window=50, clock=clock)
    clock.now += 30.0  # the first step compiles: it only starts the measurement
    rate.finished(1)
    _run_steps(rate, clock, range(2, 11), log_every=1000)
    with rate.paused():  # an evaluation or a checkpoint save
        clock.now += 60.0
    _run_steps(rate, clock, range(11, 21), log_every=1000)
    assert rate.steps_per_s() == pytest.approx(4.0)
    rate.restart()
    assert rate.steps_per_s() is None


def test_the_bar_shows_the_step_rate_and_its_eta():
    clock = FakeClock()
    rate = StepRate(window=10, clock=clock)
    out = io.StringIO()
    with ProgressBar(total=100, file=out, rate=rate, mininterval=0, ascii=True) as bar:
        _run_steps(rate, clock, range(1, 21), log_every=1000)
        bar.update(20)
        assert bar.format_dict["rate"] == pytest.approx(4.0)
        text = str(bar)
    assert "20/100" in text and "4.00it/s" in text and "<00:20" in text  # 80 steps left at 4 steps/s


def test_a_training_run_logs_its_rate_from_finished_steps(tmp_path):
    batches = batch_iterator(grain.MapDataset.range(1000).map(_Batches(())), prefetch_threads=0)
    trainer = Trainer(name="toy", train_command="toy", init_state=_init, train_step=_step, batches=batches,
                      batch_axes=lambda path, leaf: ("batch",) + (None,) * (leaf.ndim - 1), fingerprint="toy", meta={},
                      count_items=lambda batch: batch["x"].shape[0])
    settings = TrainConfig(steps=6, warmup_steps=0, log_every=3, save_every=6, async_checkpoints=False)
    run_training(MeshContext.create(None, ()), trainer, settings, tmp_path, {"toy": 1})
    logged = {row["step"]: row for row in read_metrics(tmp_path) if "loss" in row}
    assert sorted(logged) == [3, 6]
    for row in logged.values():  # 8 examples per step
        assert row["items_per_s"] == pytest.approx(8 * row["steps_per_s"])
