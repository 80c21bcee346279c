"""Metrics of a run: TensorBoard event files plus a plain `metrics.jsonl`.

Both sinks get the same scalars, so a run can be read with TensorBoard or with
`pandas.read_json(path, lines=True)` without either tool depending on the other.
Only process 0 writes (the others get a writer whose methods do nothing), so
multi-host runs do not produce duplicated or interleaved files.

A run killed after logging steps it had not checkpointed logs those steps again when it resumes. So
the writer of a resumed run first drops the records past the step it resumes from (and TensorBoard
purges its events past it): each step is in the file once, as the run that went on logged it. A kill
in the middle of a write can leave a torn last line; the reader skips it, the next writer drops it.

Object stores (gs://) cannot append to a file, so there the JSONL file is rewritten whole at
each flush (records are small: one line per logged step); local files are appended to.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any, Mapping

import jax
import numpy as np
from absl import logging

from sorajax.runs.paths import PathLike, is_local, run_path, write_text_atomic
from sorajax.runs.save_failure import refused, write_errno

METRICS_FILE = "metrics.jsonl"
TENSORBOARD_DIR = "tensorboard"


def _to_float(value: Any) -> float:
    return float(np.asarray(jax.device_get(value)))


class MetricsWriter:
    """Writes scalar metrics to `<run>/metrics.jsonl` and TensorBoard events."""

    def __init__(self, run: PathLike, *, enabled: bool | None = None, append: bool | None = None,
                 resume_step: int | None = None):
        """`resume_step`: the step training goes on from (0 for a fresh start); records of later steps are
        dropped. None keeps every record (a writer that is not a training run's)."""
        self.enabled = jax.process_index() == 0 if enabled is None else enabled
        run = run_path(run)
        self.jsonl_path = run / METRICS_FILE
        self._append = is_local(run) if append is None else append
        self._tb = self._file = None
        self._refused = False  # a write was refused and reported: closing does not report it again
        self._lines: list[str] = []
        if self.enabled:
            run.mkdir(parents=True, exist_ok=True)
            from tensorboardX import SummaryWriter  # imported lazily: heavy.

            purge = None if resume_step is None else resume_step + 1
            self._tb = SummaryWriter(logdir=str(run / TENSORBOARD_DIR), purge_step=purge)
            if self.jsonl_path.exists():
                self._lines = self._kept_lines(resume_step)
            if self._append:
                self._file = self.jsonl_path.open("a")
                self._lines = []

    def _kept_lines(self, resume_step: int | None) -> list[str]:
        """The file's lines up to `resume_step` (all if None), without a torn last line; rewritten when shorter."""
        lines = self.jsonl_path.read_text().splitlines()
        kept = [line for line in lines if (record := _parse(line)) is not None
                and (resume_step is None or record["step"] <= resume_step)]
        if kept != lines:
            write_text_atomic(self.jsonl_path, "".join(line + "\n" for line in kept))
        return kept

    def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> dict[str, float]:
        """Logs `scalars` at `step`; returns them as Python floats."""
        values = {k: _to_float(v) for k, v in scalars.items()}
        if not self.enabled:
            return values
        for name, value in values.items():
            self._tb.add_scalar(name, value, global_step=step)
        line = json.dumps({"step": int(step), "time": time.time(), **values})
        try:
            if self._file is not None:
                self._file.write(line + "\n")
                self._file.flush()
            else:
                self._lines.append(line)
                write_text_atomic(self.jsonl_path, "\n".join(self._lines) + "\n")
        except OSError as error:  # a full or read-only disk: one line, the run resumable from its checkpoints
            if write_errno(error) is None:
                raise
            self._refused = True
            raise refused(f"the metrics of step {step} to {self.jsonl_path}", write_errno(error),
                          "free space there or make it writable, then rerun the same command: it resumes from its "
                          "newest checkpoint") from None
        return values

    def _close_tensorboard(self, failing: bool) -> None:
        """Closes the event file; where the disk refuses its last events, they are dropped with one warning (the
        JSONL file has the same scalars), or silently when the run is `failing` anyway (its error says why)."""
        try:
            self._tb.close()
        except OSError as error:
            if write_errno(error) is None:
                raise
            try:
                _drop_unwritten_events(self._tb)
            except (AttributeError, OSError, ValueError):  # another tensorboardX: its retry may print at exit
                pass
            if not failing:
                logging.warning("TensorBoard events of %s not all written: %s", self.jsonl_path.parent,
                                os.strerror(write_errno(error)))

    def close(self, failing: bool = False) -> None:
        """`failing`: the run is ending on an error, which a second report about the same disk would only bury."""
        if self.enabled:
            self.enabled = False
            self._close_tensorboard(failing)
            if self._file is not None:
                try:
                    self._file.close()
                except OSError:  # flushing the line whose write was refused and reported
                    if not self._refused:
                        raise


def _parse(line: str) -> dict[str, Any] | None:
    """A record, or None for a line that is not one (torn by a kill mid-write)."""
    try:
        record = json.loads(line)
    except ValueError:
        return None
    return record if isinstance(record, dict) and "step" in record else None


def _drop_unwritten_events(summary_writer: Any) -> None:
    """Stops tensorboardX's writer thread and closes its file without the events the disk refused: otherwise its
    exit hook retries the write and prints tracebacks. (Its internals: it has no public way to give up.)"""
    events = summary_writer.file_writer.event_writer
    events._closed = True  # the exit hook's close does nothing now
    events._worker.stop()
    events._ev_writer._py_recordio_writer._writer.detach().close()  # the raw file, not its unwritten buffer


def read_metrics(run_or_file: PathLike) -> list[dict[str, Any]]:
    """The records of a run's metrics.jsonl (give the run directory or the file), in the order written.

    A torn last line (a kill mid-write) is skipped; any other line that is not a record is an error."""
    path = run_path(run_or_file)
    if path.is_dir():
        path = path / METRICS_FILE
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    records = [_parse(line) for line in lines]
    for number, record in enumerate(records[:-1], start=1):
        if record is None:
            raise ValueError(f"{path} line {number} is not a metrics record ({lines[number - 1][:60]!r}): the file was "
                             "edited or damaged; remove that line")
    return [record for record in records if record is not None]
