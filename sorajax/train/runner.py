"""The one training runner every trainer uses, readable top to bottom.

    mesh (always one: a single device is 1x1x1x1) -> state born sharded -> [warm start] -> resume
    -> record the config -> for each step:
         this host's batch -> global batch -> guarded train step -> log -> [evaluate] -> [checkpoint]

A trainer (`dit_trainer`, `vae_trainer`) supplies only its parts (`Trainer`): how to make the fresh
state, the pure train step, this host's batches and an optional evaluation. The runner owns the
rest: one writer per run (an OS lock, `sorajax.runs.writer_lock`), shardings, checkpoints (async, atomic,
keep-N, with the data position), warm start, resume (refusing a different model; a damaged newest
checkpoint is moved aside and the newest intact one used), the config record, metrics (TensorBoard +
JSONL; steps a killed run logged after its last checkpoint are dropped, as they are logged again), the
non-finite loss guard, and preemption: SIGTERM/SIGINT finish the current step, save a checkpoint, and stop.
A run with `train.max_seconds` stops the same way once that much wall time has passed in the loop.
"""

from __future__ import annotations

import dataclasses
import signal
import sys
import time
from typing import Any, Callable, Iterator

import jax

from sorajax.parallel.context import MeshContext
from sorajax.parallel.sharding import NamesFor
from sorajax.parallel.steps import state_step
from sorajax.runs.checkpoints import CHECKPOINTS, Checkpointer
from sorajax.runs.damage import NoIntactCheckpointError, damaged_names, none_intact_message
from sorajax.runs.metrics import MetricsWriter
from sorajax.runs.paths import PathLike, run_path
from sorajax.runs.records import as_json_tree, fingerprint_differences, record_run_config
from sorajax.runs.writer_lock import hold_run
from sorajax.train.config import TrainConfig
from sorajax.train.nonfinite import NonFiniteGuard, skip_nonfinite
from sorajax.train.progress import ProgressBar, StepRate
from sorajax.train.warm_start import warm_start


@dataclasses.dataclass
class Trainer:
    """What a model's trainer supplies to the runner."""

    name: str  # progress bar and messages ('dit', 'autoencoder')
    train_command: str  # how a user makes such a run (completes error messages)
    init_state: Callable[[], Any]  # the fresh state (a flax struct with .step, .rng); params may be boxed
    train_step: Callable[[Any, Any], tuple[Any, dict]]  # pure; metrics include 'loss' and 'grad_norm'
    batches: Iterator  # checkpointable grain iterator over THIS host's batches
    batch_axes: NamesFor  # logical names of a batch leaf's dimensions
    fingerprint: str  # the settings that shape the weights: resume refuses another
    meta: dict  # saved with every checkpoint (the config, the autoencoder it learned on, ...)
    evaluate: Callable[[Any], tuple[Any, dict]] | None = None  # may return an updated state
    eval_every: int = 1000  # and after the last step
    count_items: Callable[[Any], int] = lambda batch: 1
    prepare_batch: Callable[[Any], Any] = lambda batch: batch  # e.g. encode a streamed pixel batch
    state_axes: NamesFor | None = None  # names of state leaves not in logical boxes
    warm_start_checks: dict = dataclasses.field(default_factory=dict)  # metadata an init_from source must match
    frozen: tuple = ()  # arrays the step reads but never updates (LoRA's base weights): its extra arguments
    data_metrics: Callable[[], dict] = dict  # logged with every step's metrics (e.g. damaged records skipped)


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


def refuse_other_model(ckpt: Checkpointer, name: str, fingerprint: Any, run: Any) -> None:
    """Raises when the newest intact checkpoint was trained with another model config (no-op without one).

    Silently continuing a different architecture would either crash deep in Orbax or corrupt the run.
    """
    if ckpt.latest_step() is None:
        return
    _, meta = ckpt.newest_intact(ckpt.read_meta)
    saved = meta.get("model_fingerprint")
    differences = fingerprint_differences(saved, fingerprint) if saved is not None else []
    if differences:
        raise ValueError(
            f"the checkpoint in {run} was trained with a different {name} config ({'; '.join(differences)}); "
            "resume with the same config, or pass a new --workdir to start a fresh run"
        )


def check_resumable(run: PathLike, name: str, fingerprint: Any) -> None:
    """:func:`refuse_other_model` before any expensive work (encoding clips), by the run's writer."""
    run = run_path(run)
    ckpt = Checkpointer(run / CHECKPOINTS, writer=True)
    try:
        refuse_other_model(ckpt, name, fingerprint, run)
    finally:
        ckpt.close()


def resume(ckpt: Checkpointer, target: Any, batches: Any, trainer: Trainer, run: Any) -> Any | None:
    """The newest intact checkpoint restored into `target`'s layout (and the data position); None when the run has
    no checkpoint yet. `target` may be abstract (ShapeDtypeStructs with shardings): only its layout is read.

    Refuses a checkpoint whose model fingerprint differs (:func:`refuse_other_model`). Damaged steps are moved aside
    (:meth:`Checkpointer.newest_intact`); a run whose every step was damaged is refused, not restarted.
    """
    if ckpt.latest_step() is None:
        if damaged_names(ckpt.directory):  # all moved aside earlier: starting over here would be silent
            raise NoIntactCheckpointError(none_intact_message(ckpt.directory, {}))
        return None
    refuse_other_model(ckpt, trainer.name, trainer.fingerprint, run)
    _, (state, _) = ckpt.newest_intact(lambda step: ckpt.restore(target, step=step, data_iterator=batches))
    print(f"resumed {trainer.name} from step {int(state.step)} in {run}")
    return state


def run_training(ctx: MeshContext, trainer: Trainer, settings: TrainConfig, run: PathLike, config_record: Any,
                 init_from: str = "") -> dict[str, float]:
    """Trains (or resumes) `trainer` in `run` up to `settings.steps`; returns the last evaluation's metrics."""
    run = run_path(run)
    with hold_run(run):  # refused here, before any work, when a live trainer writes this run
        print(f"mesh: {ctx.describe()}")
        abstract, shardings = ctx.abstract(trainer.init_state, trainer.state_axes)
        ckpt = Checkpointer(run / CHECKPOINTS, max_to_keep=settings.keep_checkpoints, save_every=settings.save_every,
                            async_save=settings.async_checkpoints, writer=True)
        writer = None
        try:
            state = resume(ckpt, abstract, trainer.batches, trainer, run)
            if state is None:  # a fresh run: only now is the initial state compiled and computed
                state, _ = ctx.init(trainer.init_state, trainer.state_axes, shardings)  # traced once, above
                if init_from:  # fine-tuning; a restart resumes the run's own checkpoints instead
                    state = warm_start(state, init_from, trainer.fingerprint, trainer.train_command,
                                       trainer.warm_start_checks)
            record_run_config(run, config_record, int(state.step) if ckpt.latest_step() is not None else None)
            meta = {**trainer.meta, "model_fingerprint": trainer.fingerprint, "config": as_json_tree(config_record)}
            writer = MetricsWriter(run, resume_step=int(state.step))
            return _loop(ctx, trainer, settings, state, shardings, ckpt, writer, meta)
        finally:  # close files and finish pending async saves even when a step fails.
            ckpt.close()
            if writer is not None:
                writer.close(failing=sys.exc_info()[0] is not None)


def guarded_step(ctx: MeshContext, train_step: Callable, shardings: Any, donate: bool = True) -> Any:
    """The train step exactly as the runner runs it: the NaN guard, over the mesh, the state kept in its layout.

    Benchmarks and AOT compiles measure this, so their figures are the trainer's.
    """
    return state_step(skip_nonfinite(train_step), ctx.mesh, ctx.rules, shardings, donate)


def _loop(ctx: MeshContext, trainer: Trainer, settings: TrainConfig, state: Any, shardings: Any, ckpt: Checkpointer,
          writer: MetricsWriter, meta: dict) -> dict[str, float]:
    step_fn = guarded_step(ctx, trainer.train_step, shardings)
    guard = NonFiniteGuard(settings.max_nonfinite_steps)
    start, last = int(state.step), settings.steps
    # A run resumed at its last step trains nothing more: its result is the evaluation saved with that step.
    eval_metrics: dict[str, float] = dict(ckpt.read_meta(start).get("eval", {})) if start >= last and start > 0 else {}
    # Dispatched steps whose non-finite flag is not read yet; reading it means the step has run, so that is
    # when the guard checks it and the progress bar counts it (at most one step runs ahead of the host).
    pending: list[tuple[int, Any, int]] = []
    rate = StepRate()
    started = time.monotonic()

    with StopRequest() as stop, ProgressBar(total=last, initial=start, desc=trainer.name, dynamic_ncols=True,
                                            rate=rate) as bar:

        def settle() -> None:  # raises once too many steps in a row were NaN/Inf
            while pending:
                done, nonfinite, items = pending.pop(0)
                guard.record(done, nonfinite, ckpt.latest_step())
                rate.finished(done, items)
                bar.update(1)

        for step in range(start + 1, last + 1):
            batch = next(trainer.batches)
            state, metrics = step_fn(state, ctx.put(trainer.prepare_batch(batch), trainer.batch_axes), *trainer.frozen)
            settle()
            pending.append((step, metrics["nonfinite"], trainer.count_items(batch)))
            if step % settings.log_every == 0 or step == last:  # logging reads this step's numbers anyway
                settle()
                speed = {"items_per_s": rate.items_per_s(), "steps_per_s": rate.steps_per_s()}
                logged = writer.write_scalars(step, {**metrics, "nonfinite_steps": guard.total, **trainer.data_metrics(),
                                                     **{k: v for k, v in speed.items() if v is not None}})
                bar.set_postfix({k: f"{logged[k]:.4g}" for k in ("loss",) if k in logged})
            out_of_time = 0 < settings.max_seconds <= time.monotonic() - started
            stopping = stop.requested or out_of_time
            final = step == last or stopping
            if trainer.evaluate is not None and (step % trainer.eval_every == 0 or final):
                settle()
                with rate.paused():  # evaluation time is not training time: left out of the rate and the ETA
                    state, eval_metrics = trainer.evaluate(state)
                    state = jax.device_put(state, shardings)  # an evaluation may replace a leaf (latent statistics)
                writer.write_scalars(step, {f"eval/{k}": v for k, v in eval_metrics.items()})
            if ckpt.should_save(step, last) or stopping:
                settle()  # never save past a run of NaN steps unannounced
                with rate.paused():
                    ckpt.save(step, state, data_iterator=trainer.batches,
                              meta={**meta, "step": step, "eval": eval_metrics})
            if stopping:
                if out_of_time and step < last:
                    print(f"\n{trainer.name}: train.max_seconds={settings.max_seconds:g} reached after step {step}")
                break
        settle()
    ckpt.wait()
    return eval_metrics
