"""The GPU check runs end to end in its dry mode on CPU, so the script that GPU machines run cannot rot; its
deadline skips what cannot finish instead of overrunning."""

from __future__ import annotations

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "benchmarks", "gpu_check.py")


def _run(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": ROOT}  # this checkout's sorajax, whichever copy is installed
    return subprocess.run([sys.executable, SCRIPT, "--dry", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=900, env=env)


def test_gpu_check_dry_run_prints_every_section_and_passes():
    proc = _run()
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    for name in ("[versions]", "[tests]", "[mfu]", "[torch]", "[wan]", "[world]", "[summary]"):
        assert name in out, out
    assert "attention xla vs xla" in out and ": ok" in out
    row = next(line for line in out.splitlines() if line.startswith("tiny "))
    fields = row.split()  # preset params compile-s run-s step-s tokens/s TFLOP/step TFLOP/s MFU-pub MFU-meas loss sample
    assert fields[1] == "1.7M" and float(fields[2]) > 0 and float(fields[3]) > 0 and float(fields[4]) > 0
    assert float(fields[10]) > 0  # a finite bf16 loss
    assert float(fields[6]) > 0  # TFLOP per step counted from the shapes
    assert "guided  sorajax" in out  # the [wan] section ran wan_speed.py's tiny mode
    assert "autoencoder: 1 steps" in out and "dit: tiny 32x1, 2 steps" in out  # [world]: the smoke recipe trained
    assert "plan: DiT loop " in out and "probes ~2 s estimated" in out  # 1 prompt at 1.9 s
    assert "probe agreement (dpmpp_2m, 2 steps" in out and "  colour " in out and "  in_frame " in out
    assert out.rstrip().endswith("checks: ok") and "skipped:" not in out.splitlines()[-1]


def test_a_deadline_that_is_spent_skips_every_section_and_says_so():
    proc = _run("--deadline", "1")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert "tests: skipped: time budget" in out and "mfu tiny: skipped: time budget" in out
    assert "wan: skipped: time budget" in out and "world: skipped: time budget" in out
    assert out.rstrip().endswith("skipped: tests, mfu tiny, wan, world; checks: ok")


def test_the_world_section_imports_nothing_the_gpu_image_lacks():
    """The GPU image has no TensorFlow, TFDS, imageio-ffmpeg or mediapy (a GPU run failed on imageio_ffmpeg):
    training on the built-in world, sampling and probing must not import them."""
    code = ("import sys; import sorajax.train.vae_trainer, sorajax.train.dit_trainer, sorajax.pipeline, "
            "sorajax.eval.probe_report; print(sorted(m for m in ('tensorflow', 'tensorflow_datasets', "
            "'imageio_ffmpeg', 'mediapy') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": ROOT})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"
