"""Metrics of a run: TensorBoard event files plus a plain `metrics.jsonl`.

Both sinks get the same scalars, so a run can be read with TensorBoard or with
`pandas.read_json(path, lines=True)` without either tool depending on the other.
Only process 0 writes (the others get a writer whose methods do nothing), so
multi-host runs do not produce duplicated or interleaved files.

Object stores (gs://) cannot append to a file, so there the JSONL file is rewritten whole at
each flush (records are small: one line per logged step); local files are appended to.
"""

from __future__ import annotations

import json
import time
from typing import Any, Mapping

import jax
import numpy as np

from sorajax.runs.paths import PathLike, is_local, run_path, write_text_atomic

METRICS_FILE = "metrics.jsonl"
TENSORBOARD_DIR = "tensorboard"


def _to_float(value: Any) -> float:
    return float(np.asarray(jax.device_get(value)))


class MetricsWriter:
    """Writes scalar metrics to `<run>/metrics.jsonl` and TensorBoard events."""

    def __init__(self, run: PathLike, *, enabled: bool | None = None, append: bool | None = None):
        self.enabled = jax.process_index() == 0 if enabled is None else enabled
        run = run_path(run)
        self.jsonl_path = run / METRICS_FILE
        self._append = is_local(run) if append is None else append
        self._tb = self._file = None
        self._lines: list[str] = []
        if self.enabled:
            run.mkdir(parents=True, exist_ok=True)
            from tensorboardX import SummaryWriter  # imported lazily: heavy.

            self._tb = SummaryWriter(logdir=str(run / TENSORBOARD_DIR))
            if self._append:
                self._file = self.jsonl_path.open("a")
            elif self.jsonl_path.exists():
                self._lines = self.jsonl_path.read_text().splitlines()

    def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> dict[str, float]:
        """Logs `scalars` at `step`; returns them as Python floats."""
        values = {k: _to_float(v) for k, v in scalars.items()}
        if not self.enabled:
            return values
        for name, value in values.items():
            self._tb.add_scalar(name, value, global_step=step)
        line = json.dumps({"step": int(step), "time": time.time(), **values})
        if self._file is not None:
            self._file.write(line + "\n")
            self._file.flush()
        else:
            self._lines.append(line)
            write_text_atomic(self.jsonl_path, "\n".join(self._lines) + "\n")
        return values

    def close(self) -> None:
        if self.enabled:
            self._tb.close()
            if self._file is not None:
                self._file.close()
            self.enabled = False


def read_metrics(run_or_file: PathLike) -> list[dict[str, Any]]:
    """The records of a run's metrics.jsonl (give the run directory or the file)."""
    path = run_path(run_or_file)
    if path.is_dir():
        path = path / METRICS_FILE
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
