"""Disk-full and read-only drill: a save the disk refuses is one line, and the run resumes once there is room.

    sudo nice python experiments/disk_full_drill.py --workdir=/tmp/disk_drill

On a real filesystem of its own (a 4 MB tmpfs it mounts, so it needs root; or --disk=DIR, an existing small
filesystem), with the real command (`python -m sorajax.train_vae --config=configs/vae_tiny.py:drill`):

1. train 3 steps (checkpoint of step 3);
2. fill the disk but a few pages, go on to step 6: the save of step 6 fails with ENOSPC;
3. free the space and rerun the same command: it resumes from step 3 and finishes;
4. remount the disk read-only, ask for step 9: refused before any work (EROFS). (A disk cannot be remounted
   read-only while a trainer holds files open on it for writing, so "read-only during a save" is this case
   or the full disk's: the kernel refuses the write either way.)

Each step prints the exit code and every stderr line that is not the progress bar, and whether the newest
checkpoint restores afterwards. It exits 1 when a failure is not exactly one line or a checkpoint was lost.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def train(run: str, steps: int, env: dict) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "sorajax.train_vae", "--config=configs/vae_tiny.py:drill",
               f"--config.train.steps={steps}", f"--workdir={run}"]
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.replace("\r", "\n").splitlines()
            if line.strip() and not line.startswith("autoencoder:")]


def newest_restorable(run: str) -> int | None:
    """The step the sampler's loader restores now (None: none)."""
    from sorajax.runs.loaders import load_autoencoder

    try:
        return load_autoencoder(run).step
    except Exception:  # noqa: BLE001 - reported as 'none'
        return None


def fill(disk: str, leave_bytes: int) -> None:
    """Writes a filler file until `leave_bytes` are left free on `disk`."""
    free = shutil.disk_usage(disk).free
    with open(os.path.join(disk, "filler"), "wb") as f:
        f.write(b"\0" * max(free - leave_bytes, 0))


def report(name: str, done: subprocess.CompletedProcess, run: str, rows: list[tuple]) -> None:
    lines = error_lines(done.stderr)
    rows.append((name, done.returncode, lines, newest_restorable(run)))
    print(f"\n== {name}: exit {done.returncode}, newest restorable checkpoint: step {rows[-1][3]}")
    for line in lines:
        print(f"   {line}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default="/tmp/disk_drill")
    parser.add_argument("--disk", default=None, help="an existing small filesystem (default: mount a 4 MB tmpfs)")
    parser.add_argument("--compile_cache", default=None)
    args = parser.parse_args()
    disk = args.disk or os.path.join(args.workdir, "disk")
    mounted = args.disk is None
    os.makedirs(disk, exist_ok=True)
    if mounted:
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", disk], check=True)
    cache = args.compile_cache or os.path.join(args.workdir, "jax_cache")
    env = {**os.environ, "PYTHONPATH": REPO, "JAX_COMPILATION_CACHE_DIR": cache,
           "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0", "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0"}
    run, rows = os.path.join(disk, "run"), []
    try:
        report("train to step 3", train(run, 3, env), run, rows)
        fill(disk, leave_bytes=64 * 1024)
        report("disk full, train to step 6", train(run, 6, env), run, rows)
        os.remove(os.path.join(disk, "filler"))
        report("space again, same command", train(run, 6, env), run, rows)
        if mounted:
            subprocess.run(["mount", "-o", "remount,ro", disk], check=True)
            report("read-only disk, train to step 9", train(run, 9, env), run, rows)
    finally:
        if mounted:
            subprocess.run(["umount", disk], check=False)
    failures = [name for name, code, lines, _ in rows
                if (code != 0 and (len(lines) != 1 or not lines[0].startswith("error: "))) or rows[0][3] is None]
    kept = all(step is not None for *_, step in rows)
    print(f"\n{'PASS' if not failures and kept else 'FAIL'}: {len(rows)} steps; every failure one line: "
          f"{not failures}; a restorable checkpoint after each: {kept}")
    sys.exit(0 if not failures and kept else 1)


if __name__ == "__main__":
    main()
