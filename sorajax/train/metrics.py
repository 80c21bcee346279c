"""Metrics logging: TensorBoard event files plus a plain JSONL file per run.

Both sinks get the same scalars, so a run can be read with TensorBoard or with
`pandas.read_json(path, lines=True)` without either tool depending on the other.
Only process 0 writes (the others get a writer whose methods do nothing), so
multi-host runs do not produce duplicated or interleaved files.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any, Mapping

import jax
import numpy as np


def _to_float(value: Any) -> float:
    return float(np.asarray(jax.device_get(value)))


class MetricsWriter:
    """Writes scalar metrics to `<workdir>/metrics.jsonl` and TensorBoard events."""

    def __init__(self, workdir: str, *, enabled: bool | None = None):
        self.enabled = jax.process_index() == 0 if enabled is None else enabled
        self.jsonl_path = os.path.join(workdir, "metrics.jsonl")
        self._tb = None
        self._file = None
        if self.enabled:
            os.makedirs(workdir, exist_ok=True)
            from tensorboardX import SummaryWriter  # imported lazily: heavy.

            self._tb = SummaryWriter(logdir=os.path.join(workdir, "tensorboard"))
            self._file = open(self.jsonl_path, "a", encoding="utf-8")

    def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> dict[str, float]:
        """Logs `scalars` at `step`; returns them as Python floats."""
        values = {k: _to_float(v) for k, v in scalars.items()}
        if not self.enabled:
            return values
        for name, value in values.items():
            self._tb.add_scalar(name, value, global_step=step)
        record = {"step": int(step), "time": time.time(), **values}
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()
        return values

    def write_video(self, step: int, name: str, frames_uint8: np.ndarray, fps: int = 8) -> None:
        """Logs a [T, H, W, 3] uint8 clip as a TensorBoard image grid of its frames."""
        if not self.enabled:
            return
        frames = np.asarray(frames_uint8)
        strip = np.concatenate(list(frames), axis=1)  # frames side by side: [H, T*W, 3]
        self._tb.add_image(name, strip, global_step=step, dataformats="HWC")

    def flush(self) -> None:
        if self.enabled:
            self._tb.flush()
            self._file.flush()

    def close(self) -> None:
        if self.enabled:
            self._tb.close()
            self._file.close()
            self.enabled = False


def read_jsonl(path: str) -> list[dict[str, Any]]:
    """Reads back a metrics.jsonl file (for tests, notebooks and reports)."""
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]
