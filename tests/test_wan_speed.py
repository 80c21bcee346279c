"""benchmarks/wan_speed.py in its tiny mode, sorajax side only (no torch): the script the GPU check runs cannot rot."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "benchmarks", "wan_speed.py")


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, SCRIPT, *args], cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_tiny_sorajax_side_times_both_steps_and_writes_json(tmp_path):
    out = tmp_path / "speed.json"
    proc = run("--tiny", "--sides", "sorajax", f"--json={out}")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(out.read_text())
    assert result["tokens"] == 2 * 2 * 3 and result["config"]["num_layers"] == 2  # 2 frames of 2 x 3 patches
    assert 0 < result["check"]["loss_sorajax"] < 100
    for step in ("train", "guided"):
        assert len(result[step]["seconds"]["sorajax"]) == 2 and result[step]["median"]["sorajax"] > 0
        assert result[step]["flops"] > 0 and result[step]["ratio"] is None  # no diffusers side to compare with
    assert "train   sorajax" in proc.stdout and "guided  sorajax" in proc.stdout
    # the sorajax side restarted with the malloc tunables its commands use (sorajax.host_memory)
    from sorajax.host_memory import wanted_tunables

    assert result["malloc_tuning"] == "sorajax"
    assert all(f"{k}={v}" in result["glibc_tunables"] for k, v in wanted_tunables().items())


def test_gpu_mode_without_a_gpu_is_one_line():
    proc = run("--tiny", "--sides", "sorajax", "--device", "gpu")
    assert proc.returncode != 0
    assert proc.stderr.strip().splitlines()[-1] == ("--device gpu, but JAX's backend is 'cpu': run on a GPU machine "
                                                    "or leave --device out")


def test_the_op_profile_reads_dots_and_overlap_from_a_real_trace():
    """benchmarks/xla_cpu_profile.py on the tiny transformer: per-op seconds from jax.profiler's trace, the dots
    matched to their compiled HLO shapes with their FLOPs."""
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "xla_cpu_profile.py"), "--tiny",
                           "--top", "3"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert re.fullmatch(r"train step: [\d.]+ s wall; ops ran [\d.]+ s, their own times sum to [\d.]+ s .*", lines[0])
    assert re.fullmatch(r"dot fusions [\d.]+ s \(\d+ GFLOP\), other ops [\d.]+ s", lines[1])
    dots = lines[3:]
    assert len(dots) == 3 and all(re.search(r"f32\[[\d,]+\] x f32\[[\d,]+\]", d) for d in dots), lines
    # seconds, GFLOP and GFLOP/s are numbers (the tiny DiT's rates round to 0 under load, so only their form)
    assert all(float(d.split()[0]) >= 0 and float(d.split()[1]) >= 0 and float(d.split()[2]) >= 0 for d in dots), dots


def test_the_torch_worker_keeps_the_callers_python_path(monkeypatch):
    """gpu_check.sh installs diffusers into a folder on PYTHONPATH; the worker must still import it (a GPU run
    lost it when the worker's path replaced the caller's)."""
    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    try:
        import wan_speed
    finally:
        sys.path.pop(0)
    monkeypatch.setenv("PYTHONPATH", "/carried/site")
    env = wan_speed.worker_environment(wan_speed.parse_args(["--tiny"]))
    assert env["PYTHONPATH"].split(os.pathsep) == [os.path.join(ROOT, "benchmarks"), "/carried/site"]
