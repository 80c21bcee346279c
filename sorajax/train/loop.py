"""The training loop every trainer shares, readable top to bottom.

    resume (newest checkpoint: state + data position) -> for each step:
        batch -> jitted train_step -> log (TensorBoard + JSONL) -> [evaluate] -> [checkpoint]

A trainer supplies the pure step, the data iterator and an optional `evaluate`
hook; this module owns resumption, logging, checkpoint cadence and preemption.
SIGTERM/SIGINT stop the loop after the current step and save a checkpoint first.
"""

from __future__ import annotations

import dataclasses
import json
import signal
import time
from typing import Any, Callable, Iterator

from tqdm.auto import tqdm

from sorajax.train.checkpoint import Checkpointer
from sorajax.train.metrics import MetricsWriter
from sorajax.train.run_config import setting_changes


class StopRequest:
    """Turns SIGTERM/SIGINT into a flag the loop checks between steps."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> "StopRequest":
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread (e.g. a notebook worker): no handler.
                pass
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        del frame
        if self.requested:  # a second signal means "now".
            raise KeyboardInterrupt
        self.requested = True
        print(f"\nsignal {signum}: finishing this step, saving a checkpoint, then stopping")

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def resume(ckpt: Checkpointer, state: Any, data_iter: Any, fingerprint: str, workdir: str, what: str) -> Any:
    """Restores the newest checkpoint into `state`/`data_iter` if there is one.

    Refuses a checkpoint whose model fingerprint differs: silently continuing a
    different architecture would either crash deep in Orbax or corrupt the run.
    """
    if ckpt.latest_step() is None:
        return state
    saved = ckpt.read_meta().get("model_fingerprint")
    differences = fingerprint_differences(saved, fingerprint) if saved is not None else []
    if differences:
        raise ValueError(
            f"the checkpoint in {workdir} was trained with a different {what} config ({'; '.join(differences)}); "
            f"resume with the same config, or pass a new --workdir to start a fresh run"
        )
    state, _ = ckpt.restore(state, data_iterator=data_iter)
    print(f"resumed {what} from step {int(state.step)} in {workdir}")
    return state


@dataclasses.dataclass
class LoopSettings:
    name: str
    total_steps: int
    log_every: int
    eval_every: int
    meta: dict  # saved with every checkpoint (config, fingerprint).


def run_loop(
    settings: LoopSettings,
    state: Any,
    train_step: Callable[[Any, Any], tuple[Any, dict]],
    data_iter: Iterator,
    to_step_input: Callable[[Any], Any],
    ckpt: Checkpointer,
    writer: MetricsWriter,
    evaluate: Callable[[Any], tuple[Any, dict]] | None = None,
    count_items: Callable[[Any], int] = lambda batch: 1,
) -> tuple[Any, dict[str, float]]:
    """Runs steps `state.step + 1 .. total_steps`; returns the final state and last eval metrics."""
    start, last = int(state.step), int(settings.total_steps)
    eval_metrics: dict[str, float] = {}
    t0, items = time.perf_counter(), 0
    with StopRequest() as stop, tqdm(total=last, initial=start, desc=settings.name, dynamic_ncols=True) as bar:
        for step in range(start + 1, last + 1):
            batch = next(data_iter)
            state, metrics = train_step(state, to_step_input(batch))
            items += count_items(batch)
            bar.update(1)
            if step % settings.log_every == 0 or step == last:
                rate = items / max(time.perf_counter() - t0, 1e-9)
                logged = writer.write_scalars(step, {**metrics, "items_per_s": rate})
                bar.set_postfix({k: f"{logged[k]:.4g}" for k in ("loss",) if k in logged})
            final = step == last or stop.requested
            if evaluate is not None and (step % settings.eval_every == 0 or final):
                state, eval_metrics = evaluate(state)
                writer.write_scalars(step, {f"eval/{k}": v for k, v in eval_metrics.items()})
            if ckpt.should_save(step, last) or stop.requested:
                ckpt.save(step, state, data_iterator=data_iter, meta={**settings.meta, "step": step, "eval": eval_metrics})
            if stop.requested:
                break
    ckpt.wait()
    return state, eval_metrics


def fingerprint_differences(saved: str, current: str) -> list[str]:
    """'key: saved -> current' for every model setting that differs; [] when the two mean the same model.

    Options are added switched off, so a key only one side has counts as the same when that side has
    it off (False, None, 0, ''): runs made before an option existed still resume, and configs that
    do not list an option match those that list it off.
    """
    try:
        old, new = json.loads(saved), json.loads(current)
    except (TypeError, ValueError):  # not JSON: compare as opaque strings
        return [] if saved == current else [f"{saved} -> {current}"]
    return setting_changes(old, new, absent_means_off=True)


def fingerprint(section: Any) -> str:
    """A stable string for a config section; checkpoints store it to refuse mismatched resumes."""
    return json.dumps(section.to_dict() if hasattr(section, "to_dict") else section, sort_keys=True, default=str)
