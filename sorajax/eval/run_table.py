"""Several runs side by side: the settings that differ, final and best losses, probe agreement, steps, time.

Why only the differing settings: a run's config has ~100 keys and a comparison is about the two or
three a sweep varied; listing the rest hides them. Values come from each run's own files (config.json,
metrics.jsonl, probe_report.json), so any runs compare, whether a sweep made them or not.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
from collections.abc import Sequence
from typing import Any

from sorajax.eval.figures import PROBE_ASPECTS, metric_curve
from sorajax.eval.probe_report import wilson_interval
from sorajax.runs.metrics import METRICS_FILE, read_metrics
from sorajax.runs.paths import PathLike, run_path
from sorajax.runs.records import CONFIG_FILE, flatten_settings

TRAIN_LOSS = "loss"
HELD_OUT = {"eval/val_loss": "held-out loss", "eval/val_loss_ema": "held-out loss, EMA weights"}
COLUMNS = {TRAIN_LOSS: "train_loss", "eval/val_loss": "val_loss", "eval/val_loss_ema": "val_loss_ema"}
PROBE_FILE = "probe_report.json"


@dataclasses.dataclass(frozen=True)
class RunSummary:
    """One run's figures; `None` where the run has no such record."""

    label: str
    path: str
    settings: dict[str, Any]
    steps: int | None
    losses: dict[str, tuple[float, float]]  # metric -> (final, best) for the training loss and held-out losses
    probe: dict[str, tuple[float, float, float, int]]  # aspect -> (rate, 95% low, 95% high, prompts)
    probe_report: dict[str, Any] | None
    wall_s: float | None


def read_run(run: PathLike, label: str) -> RunSummary:
    """A run's summary; a folder that is not a run is one line saying what is missing."""
    path = run_path(run)
    for name in (CONFIG_FILE, METRICS_FILE):
        if not (path / name).exists():
            raise FileNotFoundError(f"{path} has no {name}: not a trained sorajax run (pass run directories made by "
                                    "sorajax.train_dit / train_vae / sweep)")
    rows = read_metrics(path)
    losses = {}
    for key in (TRAIN_LOSS, *HELD_OUT):
        _, values = metric_curve(path, key)
        if values:
            losses[key] = (values[-1], min(values))
    times = [float(row["time"]) for row in rows if "time" in row]
    probe, report = {}, None
    if (path / PROBE_FILE).exists():
        report = json.loads((path / PROBE_FILE).read_text())
        rates = report["rates"]
        for aspect in PROBE_ASPECTS:
            if aspect in rates:
                count = int(rates.get(f"num_{aspect}", 0))
                probe[aspect] = (float(rates[aspect]), *wilson_interval(float(rates[aspect]), count), count)
    return RunSummary(label=label, path=str(path), settings=flatten_settings(json.loads((path / CONFIG_FILE).read_text())),
                      steps=max((int(r["step"]) for r in rows), default=None), losses=losses, probe=probe,
                      probe_report=report, wall_s=round(times[-1] - times[0], 1) if len(times) > 1 else None)


def differing_settings(runs: Sequence[RunSummary]) -> list[str]:
    """Config keys whose values are not the same in every run (a key only some runs have counts)."""
    keys = sorted({k for run in runs for k in run.settings})
    return [k for k in keys if len({json.dumps(run.settings.get(k, "<unset>"), sort_keys=True) for run in runs}) > 1]


def table(runs: Sequence[RunSummary]) -> tuple[list[str], list[list[Any]]]:
    """(header, rows) of raw values, one row per run; probe columns carry the rate and its 95% bounds."""
    settings = differing_settings(runs)
    losses = [k for k in (TRAIN_LOSS, *HELD_OUT) if any(k in r.losses for r in runs)]
    aspects = [a for a in PROBE_ASPECTS if any(a in r.probe for r in runs)]
    header = ["run", *settings, "steps"]
    header += [f"{COLUMNS[k]}_{which}" for k in losses for which in ("final", "best")]
    header += [f"probe_{a}{part}" for a in aspects for part in ("", "_low", "_high")]
    header += ["wall_s"]
    rows = []
    for run in runs:
        row: list[Any] = [run.label, *(run.settings.get(k) for k in settings), run.steps]
        row += [run.losses[k][i] if k in run.losses else None for k in losses for i in (0, 1)]
        row += [run.probe[a][i] if a in run.probe else None for a in aspects for i in (0, 1, 2)]
        rows.append(row + [run.wall_s])
    return header, rows


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return json.dumps(value) if isinstance(value, (list, dict)) else str(value)


def to_csv(header: list[str], rows: list[list[Any]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    writer.writerows([["" if v is None else (json.dumps(v) if isinstance(v, (list, dict)) else v) for v in row]
                      for row in rows])
    return out.getvalue()


def to_markdown(header: list[str], rows: list[list[Any]]) -> str:
    """A markdown table; each probe aspect is one column 'rate [low-high]' (its 95% Wilson interval)."""
    merged_header, keep = [], []
    for i, name in enumerate(header):
        if name.startswith("probe_") and name.endswith(("_low", "_high")):
            continue
        keep.append(i)
        merged_header.append(f"{name} [95%]" if name.startswith("probe_") else name)
    lines = ["| " + " | ".join(merged_header) + " |", "|" + "---|" * len(merged_header)]
    for row in rows:
        cells = []
        for i in keep:
            if header[i].startswith("probe_") and row[i] is not None:
                cells.append(f"{row[i]:.0%} [{row[i + 1]:.0%}-{row[i + 2]:.0%}]")
            else:
                cells.append(_cell(row[i]))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def against_setting(runs: Sequence[RunSummary], key: str) -> list[tuple[str, list[tuple[str, list, list]]]]:
    """Panels (title, curves) of the final held-out losses and the probe agreement against a numeric setting
    (e.g. train.steps for the compute-scaling sweep), one point per run."""
    values = {run.label: run.settings.get(key) for run in runs}
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values.values()):
        raise ValueError(f"--x={key} must be a number in every run, got {values}; pick a numeric setting the runs vary")
    ordered = sorted(runs, key=lambda run: values[run.label])

    def curve(label: str, value_of: Any) -> tuple[str, list, list]:
        kept = [run for run in ordered if value_of(run) is not None]
        return label, [values[run.label] for run in kept], [value_of(run) for run in kept]

    losses = [curve(COLUMNS[k], lambda run, k=k: run.losses[k][0] if k in run.losses else None) for k in HELD_OUT]
    probe = [curve(aspect, lambda run, a=aspect: run.probe[a][0] if a in run.probe else None) for aspect in PROBE_ASPECTS]
    panels = [("final held-out loss", [c for c in losses if c[1]]), ("probe agreement", [c for c in probe if c[1]])]
    return [panel for panel in panels if panel[1]]
