"""Compare runs: a table of the settings that differ and the results, and the runs' curves on shared axes.

    python -m sorajax.compare runs/compute_scaling            # a sweep's folder: all its members
    python -m sorajax.compare runs/a/dit runs/b/dit --out=comparisons/ab
    python -m sorajax.compare runs/compute_scaling --x=train.steps   # also: results against a setting

Writes to --out (default: <sweep folder>/comparison for one sweep, else ./comparison): comparison.md and
comparison.csv (differing settings, steps, final and best training and held-out losses, probe agreement
per aspect with 95% intervals, wall time from the first to the last logged step), training_loss.png,
held_out_loss.png and probe.png (those with something to draw), and with --x=KEY against_KEY.png: the
final held-out losses and the probe agreement against that numeric setting (one point per run). Members
of a sweep that have not run yet are left out with a note.
"""

from __future__ import annotations

import argparse
import os
import sys

from sorajax import cli
from sorajax.eval.figures import metric_curve, plot_curves, probe_bars
from sorajax.eval.run_table import (
    HELD_OUT,
    TRAIN_LOSS,
    RunSummary,
    against_setting,
    read_run,
    table,
    to_csv,
    to_markdown,
)
from sorajax.runs.metrics import METRICS_FILE
from sorajax.runs.paths import PathLike, run_path
from sorajax.sweeps.manifest import read_manifest


def expand_runs(paths: list[str]) -> tuple[list[tuple[str, str]], list[str]]:
    """(label, run) pairs: a sweep folder gives its members (labelled by name); notes for members not run yet."""
    runs, notes = [], []
    for path in paths:
        manifest = read_manifest(path)
        if manifest is None:
            runs.append((os.path.basename(os.path.normpath(path)), path))
            continue
        for member in manifest["members"]:
            run = str(run_path(path) / member["name"])  # the folder's own copy, wherever the sweep ran
            if (run_path(run) / METRICS_FILE).exists():
                runs.append((member["name"], run))
            else:
                notes.append(f"sweep member {member['name']} has not run yet: left out")
    labels = [label for label, _ in runs]
    runs = [(label if labels.count(label) == 1 else run, run) for label, run in runs]  # same name twice: its path
    if not runs:
        raise ValueError(f"nothing to compare in {paths}: pass run directories or a sweep folder whose members ran")
    return runs, notes


def write_comparison(runs: list[RunSummary], out: PathLike, x: str | None = None) -> list[str]:
    """The table files and the plots (with `x`, also the results against that setting); returns the paths."""
    against = against_setting(runs, x) if x else []  # a bad --x is refused before anything is written
    out = run_path(out)
    out.mkdir(parents=True, exist_ok=True)
    header, rows = table(runs)
    (out / "comparison.md").write_text(to_markdown(header, rows))
    (out / "comparison.csv").write_text(to_csv(header, rows))
    written = [str(out / "comparison.md"), str(out / "comparison.csv")]
    curves = [(r.label, *metric_curve(r.path, TRAIN_LOSS)) for r in runs]
    if any(c[1] for c in curves):
        written.append(str(plot_curves(out / "training_loss.png", [("training loss", [c for c in curves if c[1]])])))
    panels = []
    for key, title in HELD_OUT.items():
        held_out = [(r.label, *metric_curve(r.path, key)) for r in runs if key in r.losses]
        if held_out:
            panels.append((title, held_out))
    if panels:
        written.append(str(plot_curves(out / "held_out_loss.png", panels)))
    reports = {r.label: r.probe_report for r in runs if r.probe_report is not None}
    if reports:
        written.append(str(probe_bars(out / "probe.png", reports)))
    if against:
        labels = ["loss" if title.endswith("loss") else "share of probe prompts" for title, _ in against]
        written.append(str(plot_curves(out / f"against_{x}.png", against, ylabel=labels, log_y=False, xlabel=x,
                                       log_x=True)))
    return written


def main(argv: list[str] | None = None) -> None:
    parser = cli.ArgumentParser(prog="python -m sorajax.compare", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", help="run directories and/or sweep folders")
    parser.add_argument("--out", help="folder for the table and plots")
    parser.add_argument("--x", help="a numeric setting (e.g. train.steps): also plot the final held-out losses and "
                                    "probe agreement against it")
    parser.add_argument("--debug", action="store_true", help="on an error, show the Python traceback")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    pairs, notes = expand_runs(args.runs)
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    sweep_folder = len(args.runs) == 1 and read_manifest(args.runs[0]) is not None
    out = args.out or (str(run_path(args.runs[0]) / "comparison") if sweep_folder else "comparison")
    summaries = [read_run(run, label) for label, run in pairs]
    written = write_comparison(summaries, out, args.x)
    print(to_markdown(*table(summaries)), end="")
    print("wrote " + ", ".join(written))


if __name__ == "__main__":
    cli.run_argparse(main)
