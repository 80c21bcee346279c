"""The GPU check runs end to end in its dry mode on CPU, so the script that GPU machines run cannot rot."""

from __future__ import annotations

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_gpu_check_dry_run_prints_every_section_and_passes():
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "gpu_check.py"), "--dry"], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    for name in ("[versions]", "[tests]", "[mfu]", "[torch]", "[wan]", "[summary]"):
        assert name in out, out
    assert "attention xla vs xla" in out and ": ok" in out
    row = next(line for line in out.splitlines() if line.startswith("tiny "))
    fields = row.split()
    assert fields[1] == "1.7M" and float(fields[2]) > 0 and float(fields[8]) > 0  # params, step s, finite loss
    assert "guided  sorajax" in out  # the [wan] section ran wan_speed.py's tiny mode
    assert out.rstrip().endswith("checks: ok")
