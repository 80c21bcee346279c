"""Run a case file of tests/parallel_cases in a fresh process with 8 fake CPU devices.

The main test session keeps JAX's default single CPU device (other tests assume
it) and its backend is already started, so multi-device cases need their own process.
"""

from __future__ import annotations

import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_cases(case_file: str, timeout: int = 600) -> None:
    """Run ``tests/parallel_cases/<case_file>`` under pytest; fail with its output if any case fails."""
    flags = f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count=8".strip()  # keeps conftest's
    env = dict(os.environ, XLA_FLAGS=flags, JAX_PLATFORMS="cpu")
    path = os.path.join(REPO, "tests", "parallel_cases", case_file)
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-n", "0", path],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout,
    )
    if proc.returncode != 0:
        raise AssertionError(f"{case_file} failed on 8 devices:\n{proc.stdout[-6000:]}\n{proc.stderr[-3000:]}")
    summary = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
    if " passed" not in summary or "skipped" in summary:
        raise AssertionError(f"{case_file}: expected only passing cases, got {summary!r}")
