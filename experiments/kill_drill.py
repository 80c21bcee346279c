"""Kill -9 drill: a run killed at random moments and resumed each time ends bitwise equal to an uninterrupted one.

    nice python experiments/kill_drill.py --workdir=/tmp/kill_drill [--kills=20 --steps=60 --seed=0]

Both runs are the real command (`python -m sorajax.train_vae --config=configs/vae_tiny.py:drill`: the
smallest autoencoder, checkpointing asynchronously every 3 steps). The killed run is started, sent SIGKILL
at a seeded random moment (once it has logged a drawn step, plus a drawn delay: mid-step, mid-log or
mid-save), restarted with the same command, and so on `--kills` times, then left to finish. Then:

- logged metrics: every record of metrics.jsonl, bitwise (the floats as written), apart from wall-clock
  fields (time, items_per_s, steps_per_s). Steps logged after a life's last checkpoint are logged again
  by the next life; the writer drops the killed life's records past the step it resumes from, so each
  step is in the file once (see `sorajax.runs.metrics`);
- final state: every array of the last checkpoint (weights, Adam moments, EMA-free VAE state, RNG, step,
  latent statistics), bitwise.

It prints a table of the kills and a verdict, and exits 1 when anything differs.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WALL_CLOCK = ("time", "items_per_s", "steps_per_s")  # differ between any two runs: not compared


@dataclasses.dataclass
class Kill:
    life: int
    target_step: int  # killed once this life had logged this step ...
    delay_s: float  # ... and this much later
    last_logged: int  # the newest step in the metrics when it died
    saved: list[int]  # finalized checkpoint steps left on disk
    unfinished_saves: int  # Orbax temporary folders left (a save cut short)
    resumed_from: int | None = None  # the step the next life restored (0: it started afresh)


def trainer_command(workdir: str, steps: int) -> list[str]:
    return [sys.executable, "-m", "sorajax.train_vae", "--config=configs/vae_tiny.py:drill",
            f"--config.train.steps={steps}", f"--workdir={workdir}"]


def trainer_env(compile_cache: str) -> dict[str, str]:
    """Every life compiles nothing after the first: the programs come from a shared cache."""
    return {**os.environ, "PYTHONPATH": REPO, "PYTHONUNBUFFERED": "1", "JAX_COMPILATION_CACHE_DIR": compile_cache,
            "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0", "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0"}


def _records(workdir: str) -> list[dict]:
    from sorajax.runs.metrics import read_metrics

    path = os.path.join(workdir, "metrics.jsonl")
    return read_metrics(path) if os.path.exists(path) else []


def _checkpoint_folders(workdir: str) -> tuple[list[int], int]:
    root = os.path.join(workdir, "checkpoints")
    names = os.listdir(root) if os.path.isdir(root) else []
    return sorted(int(n) for n in names if n.isdigit()), sum("tmp" in n for n in names)


def _wait_for_step(process: subprocess.Popen, workdir: str, step: int, since: float) -> None:
    """Until this life (records written after `since`) has logged `step`, or the process ended."""
    while process.poll() is None:
        if any(r["step"] >= step and r["time"] >= since for r in _records(workdir)):
            return
        time.sleep(0.005)


def _resumed_step(output: str) -> int:
    for line in output.splitlines():
        if line.startswith("resumed autoencoder from step "):
            return int(line.split()[4])
    return 0


def run_with_kills(workdir: str, steps: int, kills: int, seed: int, env: dict[str, str]) -> list[Kill]:
    """The killed-and-resumed run; returns the kills (the last life runs to the end)."""
    rng = np.random.default_rng(seed)
    targets = np.sort(rng.choice(np.arange(1, steps), size=kills, replace=kills >= steps))
    delays = rng.uniform(0.0, 0.3, size=kills)
    done: list[Kill] = []
    for life in range(kills + 1):
        since = time.time()
        process = subprocess.Popen(trainer_command(workdir, steps), cwd=REPO, env=env, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True)
        if life < kills:
            _wait_for_step(process, workdir, int(targets[life]), since)
            time.sleep(float(delays[life]))
            process.send_signal(signal.SIGKILL)
        out, err = process.communicate()
        if done:
            done[-1].resumed_from = _resumed_step(out)
        if life == kills:
            if process.returncode != 0:
                raise RuntimeError(f"the last life failed ({process.returncode}): {err[-2000:]}")
            break
        if process.returncode not in (-signal.SIGKILL, 0):
            raise RuntimeError(f"life {life} failed before its kill ({process.returncode}): {err[-2000:]}")
        saved, unfinished = _checkpoint_folders(workdir)
        logged = max((r["step"] for r in _records(workdir)), default=0)
        done.append(Kill(life, int(targets[life]), float(delays[life]), logged, saved, unfinished))
    return done


def comparable(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in WALL_CLOCK} for r in records]


def metric_differences(straight: str, killed: str) -> list[str]:
    a, b = comparable(_records(straight)), comparable(_records(killed))
    found = [f"{len(a)} records vs {len(b)}"] if len(a) != len(b) else []
    for ra, rb in zip(a, b):
        if ra != rb:
            keys = sorted(k for k in set(ra) | set(rb) if ra.get(k) != rb.get(k))
            found.append(f"step {ra.get('step')}: {', '.join(f'{k} {ra.get(k)!r} vs {rb.get(k)!r}' for k in keys)}")
    return found


def state_differences(straight: str, killed: str) -> tuple[int, list[str]]:
    """(arrays compared, differing arrays) between the newest checkpoints of the two runs, bitwise."""
    import jax

    from sorajax.runs.checkpoints import Checkpointer

    trees = []
    for run in (straight, killed):
        ckpt = Checkpointer(os.path.join(run, "checkpoints"), async_save=False)
        trees.append((ckpt.latest_step(), ckpt.restore()[0]))
        ckpt.close()
    (step_a, a), (step_b, b) = trees
    leaves_a = dict(jax.tree_util.tree_flatten_with_path(a)[0])
    leaves_b = dict(jax.tree_util.tree_flatten_with_path(b)[0])
    found = [f"final steps {step_a} vs {step_b}"] if step_a != step_b else []
    if leaves_a.keys() != leaves_b.keys():
        return len(leaves_a), found + ["different trees"]
    for path, x in leaves_a.items():
        x, y = np.asarray(x), np.asarray(leaves_b[path])
        if x.shape != y.shape or x.dtype != y.dtype or x.tobytes() != y.tobytes():
            found.append(jax.tree_util.keystr(path))
    return len(leaves_a), found


def table(kills: list[Kill]) -> str:
    rows = ["life  kill at step  +delay s  last logged  checkpoints on disk  unfinished saves  next resumed from"]
    for k in kills:
        rows.append(f"{k.life:>4}  {k.target_step:>12}  {k.delay_s:>8.3f}  {k.last_logged:>11}  "
                    f"{str(k.saved):>19}  {k.unfinished_saves:>16}  {k.resumed_from:>17}")
    return "\n".join(rows)


def drill(workdir: str, kills: int, steps: int, seed: int, compile_cache: str | None = None,
          straight: str | None = None) -> tuple[bool, str]:
    """Runs the drill in `workdir`; returns (passed, report). `straight`: an uninterrupted run of the same
    command made already (else it is run here first)."""
    shutil.rmtree(workdir, ignore_errors=True)
    os.makedirs(workdir)
    env = trainer_env(compile_cache or os.path.join(workdir, "jax_cache"))
    killed = os.path.join(workdir, "killed")
    start = time.time()
    if straight is None:
        straight = os.path.join(workdir, "straight")
        subprocess.run(trainer_command(straight, steps), cwd=REPO, env=env, check=True, capture_output=True)
    done = run_with_kills(killed, steps, kills, seed, env)
    metric_diff = metric_differences(straight, killed)
    arrays, state_diff = state_differences(straight, killed)
    newest = sum(k.resumed_from == max(k.saved, default=0) for k in done)  # resumed from the newest checkpoint
    logged = len([r for r in _records(killed) if "loss" in r])
    passed = not metric_diff and not state_diff and newest == kills
    verdict = (f"{'PASS' if passed else 'FAIL'}: {kills} kills (SIGKILL), {newest}/{kills} resumed from the newest "
               "checkpoint; "
               f"logged metrics of {logged} steps {'bitwise equal' if not metric_diff else 'DIFFER'}; "
               f"final state {arrays} arrays {'bitwise equal' if not state_diff else 'DIFFER'}; "
               f"{time.time() - start:.0f} s")
    details = [f"  metrics: {d}" for d in metric_diff[:10]] + [f"  state: {d}" for d in state_diff[:10]]
    return passed, "\n".join([table(done), *details, verdict])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default="/tmp/kill_drill", help="scratch directory (emptied first)")
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--compile_cache", default=None, help="JAX compilation cache (default: in the workdir)")
    args = parser.parse_args(argv)
    passed, report = drill(args.workdir, args.kills, args.steps, args.seed, args.compile_cache)
    print(report)
    sys.exit(0 if passed else 1)


if __name__ == "__main__":
    main()
