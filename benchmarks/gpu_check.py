"""One command that checks and measures sorajax on a machine with one NVIDIA GPU, inside a deadline.

    python benchmarks/gpu_check.py            # on the GPU machine (benchmarks/gpu_check.sh wraps it)
    python benchmarks/gpu_check.py --dry      # tiny sizes on CPU: what CI runs so this script cannot rot

For a machine without network, bring what its image lacks: wheels in .whl/ (grain, array_record,
ml_collections, portpicker, tensorboardX; diffusers for [wan]) and the text encoder in .gpu_site/
(``python tools/make_gpu_carry.py --wheels`` makes both); gpu_check.sh installs and finds them.

Prints, section by section (each line ``key: value`` or a table, so a run's log is its record):
  [versions]   Python, JAX, jaxlib, Flax, Optax, the device, PyTorch;
  [tests]      cuDNN attention equals XLA attention on packed segments (values and gradients, bf16);
  [mfu]        per preset, bf16 train step with scanned layers (``--unrolled``: one compiled block per layer):
               compile seconds (init + train step + CFG sampler step) and run seconds apart, step time,
               tokens/s, TFLOP per step counted from the shapes (a step too big for the device keeps only
               its matmul outputs for the backward pass, and its row says so),
               MFU against the GPU's published dense bf16 peak and against the best matmul measured in this
               run, the loss (finite: the bf16 train step test), and the CFG sampler step's seconds;
  [torch]      sorajax against its PyTorch reference DiT at the same shape, both on this GPU
               (benchmarks/torch_reference.py), when an interpreter with torch is given;
  [wan]        sorajax against diffusers' Wan transformer, train step and guided step, bf16, cuDNN / SDPA,
               MFU of each side (benchmarks/wan_speed.py --device gpu), time-boxed by what the deadline leaves;
  [world]      the main job's recipe trained on a wall budget at GPU batch sizes, then its world-probe
               figures (colour / shape / direction / in-frame; benchmarks/gpu_world.py has the line format);
  [summary]    wall seconds, what was skipped, ``checks: ok`` or ``checks: FAIL``.
Every section ends with ``elapsed: <s> s``. The deadline (``--deadline``, default 450 s from the start of
the process) is checked before each section and each preset: work that cannot finish in what is left (its
estimate, keeping ``--world_seconds`` for [world]) prints ``skipped: time budget`` instead. ``--sections``
runs a subset, so a check can be split over two calls. A failed check prints ``FAIL`` and the script exits
non-zero after all sections ran; a skipped one is listed in the summary and is not a failure.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Any

STARTED = time.monotonic()  # the deadline counts from here: JAX's import and device start are part of the budget
if "--dry" in sys.argv:  # before JAX starts: the dry run checks code paths, not speed, and is compile-bound, so
    # XLA's CPU backend compiles without LLVM's optimisations (about half the compile time; set before any import)
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0"
                               " --xla_llvm_disable_expensive_passes=true").strip()

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from dit_throughput import CAPTION, compiled_train_step, guided_forward, packed_batch, timed  # noqa: E402
from gpu_world import missing_packages, world_section  # noqa: E402
from mfu import matmul_peak, published_peak  # noqa: E402

from sorajax.aot_compile import model_flops  # noqa: E402
from sorajax.models.attention import dot_product_attention  # noqa: E402
from sorajax.models.dit import DiT, DiTConfig  # noqa: E402

SAMPLES = 4  # samples packed per row (dit_throughput.packed_batch)
SECTIONS = ("tests", "mfu", "torch", "wan", "world")
# Seconds a unit of work is expected to take before anything was measured (H100, scanned layers); later
# presets are estimated from the one before.
FIRST_PRESET_S, TORCH_PRESET_S, WAN_MIN_S, WORLD_MIN_S = 45.0, 30.0, 90.0, 120.0
MARGIN_S = 10.0  # for the summary and the process's exit


class Deadline:
    """What is left of the check's wall budget, and what to keep for the [world] section at the end."""

    def __init__(self, seconds: float, keep_for_world: float):
        self.seconds, self.keep_for_world = seconds, keep_for_world
        self.skipped: list[str] = []

    def elapsed(self) -> float:
        return time.monotonic() - STARTED

    def left(self, before_world: bool = True) -> float:
        return self.seconds - self.elapsed() - MARGIN_S - (self.keep_for_world if before_world else 0.0)

    def allows(self, what: str, estimate: float, before_world: bool = True) -> bool:
        """True when `estimate` seconds fit; otherwise prints the skip and remembers it."""
        if estimate <= self.left(before_world):
            return True
        print(f"{what}: skipped: time budget ({estimate:.0f} s needed, {max(0.0, self.left(before_world)):.0f} s left)")
        self.skipped.append(what)
        return False


def section(name: str) -> None:
    print(f"\n[{name}]", flush=True)


def versions(torch_python: str | None) -> None:
    import flax
    import jaxlib
    import optax

    section("versions")
    print(f"python: {platform.python_version()}")
    print(f"jax: {jax.__version__}; jaxlib: {jaxlib.__version__}")
    print(f"flax: {flax.__version__}; optax: {optax.__version__}")
    print(f"backend: {jax.default_backend()}; device: {jax.devices()[0].device_kind} x {jax.device_count()}")
    if torch_python and not shutil.which(torch_python):
        print(f"torch: no interpreter {torch_python!r}")
    elif torch_python:
        out = subprocess.run([torch_python, "-c", "import torch; print(torch.__version__, torch.cuda.is_available())"],
                             capture_output=True, text=True)
        print(f"torch: {out.stdout.strip() or out.stderr.strip().splitlines()[-1]}")


def attention_agrees(dry: bool) -> bool:
    """cuDNN and XLA attention on a packed row (3 samples + padding): outputs and input gradients agree."""
    rows, length, heads, head_dim = (2, 64, 2, 16) if dry else (2, 1024, 8, 64)
    keys = jax.random.split(jax.random.key(0), 3)
    q, k, v = (jax.random.normal(key, (rows, length, heads, head_dim), jnp.bfloat16) for key in keys)
    cut = np.array([0, length // 3, length // 2, length - length // 8])
    seg = np.zeros(length, np.int32)
    for i in range(3):
        seg[cut[i]:cut[i + 1]] = i + 1
    segments = jnp.asarray(np.tile(seg, (rows, 1)))
    fast = "xla" if dry else "cudnn"

    def loss(impl, q, k, v):
        out = dot_product_attention(q, k, v, segments, segments, impl)
        return jnp.sum(out.astype(jnp.float32) ** 2), out

    (_, out_fast), grads_fast = jax.jit(jax.value_and_grad(lambda *a: loss(fast, *a), (0, 1, 2), has_aux=True))(q, k, v)
    (_, out_ref), grads_ref = jax.jit(jax.value_and_grad(lambda *a: loss("xla", *a), (0, 1, 2), has_aux=True))(q, k, v)
    out_err = float(jnp.max(jnp.abs(out_fast.astype(jnp.float32) - out_ref.astype(jnp.float32))))
    grad_err = max(float(jnp.max(jnp.abs(a.astype(jnp.float32) - b.astype(jnp.float32))) /
                         (jnp.max(jnp.abs(b.astype(jnp.float32))) + 1e-6)) for a, b in zip(grads_fast, grads_ref))
    padding_zero = bool(jnp.all(out_fast[:, cut[3]:] == 0))
    ok = out_err < 3e-2 and grad_err < 3e-2 and padding_zero
    print(f"attention {fast} vs xla, {rows}x{length} tokens, bf16: max |out diff| {out_err:.2e}, "
          f"max relative grad diff {grad_err:.2e}, padding rows zero {padding_zero}: {'ok' if ok else 'FAIL'}")
    return ok


def _fits(compiled: Any) -> bool:
    """Whether a compiled step's buffers fit in 90% of the device's memory (True where JAX cannot tell)."""
    limit = (jax.devices()[0].memory_stats() or {}).get("bytes_limit")
    memory = compiled.memory_analysis()
    if not limit or memory is None:
        return True
    need = (memory.temp_size_in_bytes + memory.argument_size_in_bytes + memory.output_size_in_bytes
            - memory.alias_size_in_bytes)
    return need < 0.9 * limit


def preset_row(preset: str, impl: str, dtype: str, rows: int, seq_len: int, repeats: int, measured: float,
               published: float | None, scan_layers: bool) -> float | None:
    """Print one preset's row of the MFU table; its step seconds, None when the train-step loss is not finite.

    A step whose buffers would not fit the device is compiled again keeping only the matmul outputs
    (remat 'save_dots_without_batch'), and the row says so. FLOPs are counted from the shapes
    (`model_flops`, each packed sample attending within itself): XLA's cost analysis counts a scanned
    layer loop once.
    """
    def build(remat: str) -> tuple:
        dit = DiT(DiTConfig.preset(preset, patch_dim=32, text_dim=384, dtype=dtype, attention_impl=impl,
                                   scan_layers=scan_layers, remat_policy=remat))
        return (dit, *compiled_train_step(dit, packed_batch(rows, seq_len)))

    start = time.monotonic()
    remat = "none"
    dit, state, batch, step = build(remat)
    if not _fits(step):  # keep only the matmul outputs for the backward pass (an OOM after that is reported)
        del state, step  # the device's memory back before the next compile
        remat = "save_dots_without_batch"
        dit, state, batch, step = build(remat)
    forward = guided_forward(dit).lower(state.params, batch).compile()
    compile_s = time.monotonic() - start
    flops = model_flops(dit.config, rows * SAMPLES, seq_len // SAMPLES, CAPTION, train=True)
    start = time.monotonic()
    loss = float(step(state, batch)[1]["loss"])
    seconds = timed(lambda s: step(s, batch)[1]["loss"], state, repeats=repeats)
    sample_s = timed(forward, state.params, batch, repeats=repeats)
    run_s = time.monotonic() - start
    rate = flops / seconds
    mfu_pub = f"{rate / published:8.1%}" if published else f"{'-':>8s}"
    params = sum(x.size for x in jax.tree.leaves(state.params))
    print(f"{preset:6s} {params / 1e6:7.1f}M {compile_s:9.1f} {run_s:6.1f} {seconds:8.4f} {rows * seq_len / seconds:10,.0f} "
          f"{flops / 1e12:11.3f} {rate / 1e12:8.1f} {mfu_pub} {rate / measured:9.1%} {loss:8.4f} {sample_s:14.4f}  "
          f"attention {impl}" + ("" if remat == "none" else f", remat {remat}"), flush=True)
    return seconds if np.isfinite(loss) else None


def presets_report(presets: list[str], dtype: str, rows: int, seq_len: int, peak_size: int, repeats: int,
                   scan_layers: bool, deadline: Deadline, first_estimate: float) -> dict[str, float | None]:
    """Train-step MFU (published and measured peak) and CFG sampler-step seconds for each preset that fits.

    Returns each measured preset's step seconds with attention 'auto' (None where it failed or was not finite).
    """
    kind = jax.devices()[0].device_kind
    published = published_peak(kind)
    measured = matmul_peak(dtype, peak_size)
    print(f"device: {kind}; {rows} x {seq_len} tokens per step ({SAMPLES} samples per row), {dtype}, layers "
          f"{'scanned' if scan_layers else 'unrolled'}")
    print(f"matmul peak measured ({peak_size}^2, best of 10): {measured / 1e12:.1f} TFLOP/s; published dense bf16: "
          f"{published / 1e12 if published else float('nan'):.0f} TFLOP/s")
    print(f"{'preset':6s} {'params':>8s} {'compile s':>9s} {'run s':>6s} {'step s':>8s} {'tokens/s':>10s} "
          f"{'TFLOP/step':>11s} {'TFLOP/s':>8s} {'MFU pub':>8s} {'MFU meas':>9s} {'loss':>8s} {'sample s/step':>14s}")
    step_seconds: dict[str, float | None] = {}
    estimate = first_estimate
    for preset in presets:
        if not deadline.allows(f"mfu {preset}", estimate):
            continue
        start = time.monotonic()
        for impl in ("auto", "xla"):  # cuDNN where it runs; XLA attention if cuDNN fails here
            try:
                seconds = preset_row(preset, impl, dtype, rows, seq_len, repeats, measured, published, scan_layers)
                break
            except Exception as error:  # noqa: BLE001  a failed preset is reported, the others still run
                print(f"{preset:6s} attention {impl!r}: FAIL {type(error).__name__}: {str(error).splitlines()[0][:300]}")
                seconds = None
        step_seconds[preset] = seconds if impl == "auto" else None  # a fallback to XLA attention is a failure
        estimate = max(first_estimate, 1.5 * (time.monotonic() - start))  # the next preset is bigger
    ok = all(s is not None for s in step_seconds.values())
    print(f"bf16 train step finite with attention 'auto' for every measured preset: {'ok' if ok else 'FAIL'}")
    return step_seconds


def torch_report(presets: list[str], step_seconds: dict[str, float | None], torch_python: str, device: str,
                 dtype: str, rows: int, seq_len: int, peak_size: int, repeats: int, deadline: Deadline,
                 estimate: float) -> bool:
    """The PyTorch reference DiT's step at each preset's shape, against the JAX step timed above."""
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "torch_reference.py")
    ok = True
    print(f"{'preset':6s} {'sorajax s':>10s} {'PyTorch s':>10s} {'ratio':>6s} {'torch matmul TFLOP/s':>21s}")
    for preset in presets:
        if preset not in step_seconds:
            print(f"{preset:6s} skipped: no sorajax figure to compare with (its [mfu] row did not run)")
            continue
        if not deadline.allows(f"torch {preset}", estimate):
            continue
        cmd = [torch_python, script, "--side=torch", f"--preset={preset}", f"--rows={rows}", f"--seq_len={seq_len}",
               f"--dtype={dtype}", f"--torch_device={device}", f"--peak_size={peak_size}", f"--repeats={repeats}"]
        result = subprocess.run(cmd, capture_output=True, text=True)
        if result.returncode != 0:
            print(f"{preset:6s} FAIL: {(result.stderr.strip().splitlines() or ['no output'])[-1][:300]}")
            ok = False
            continue
        torch = json.loads(result.stdout.strip().splitlines()[-1])
        jax_s = step_seconds.get(preset)
        ratio = f"{torch['torch_s'] / jax_s:5.2f}x" if jax_s else f"{'-':>6s}"
        print(f"{preset:6s} {jax_s or float('nan'):10.4f} {torch['torch_s']:10.4f} {ratio} "
              f"{torch['torch_peak'] / 1e12:21.1f}", flush=True)
    print("ratio: sorajax tokens/s over PyTorch tokens/s at the same shape (above 1: sorajax faster)")
    return ok


def wan_report(dry: bool, torch_python: str | None, timeout: int) -> bool:
    """benchmarks/wan_speed.py in its own process (its output printed as it is), time-boxed to `timeout` s."""
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "wan_speed.py")
    has_diffusers = bool(torch_python and shutil.which(torch_python)) and subprocess.run(
        [torch_python, "-c", "import diffusers, torch"], capture_output=True).returncode == 0
    sides = ["sorajax", "diffusers"] if has_diffusers else ["sorajax"]
    if not has_diffusers:
        print(f"diffusers side skipped: no interpreter with torch and diffusers ({torch_python!r})")
    size = ["--tiny"] if dry else ["--device=gpu", "--layers=4", "--frames=21", "--height=60", "--width=104",
                                   "--matmul_size=8192"]  # 81 frames of 480 x 832: 32,760 tokens
    cmd = [sys.executable, script, *size, "--sides", *sides, "--repeats=5"]
    if torch_python:
        cmd.append(f"--torch_python={torch_python}")
    try:
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as expired:
        print((expired.stdout or b"").decode() if isinstance(expired.stdout, bytes) else (expired.stdout or ""))
        print(f"wan_speed: FAIL: over the {timeout} s time box")
        return False
    print(result.stdout.rstrip())
    if result.returncode != 0:  # the last lines of its errors (the torch worker's traceback ends there)
        print("\n".join(result.stderr.strip().splitlines()[-12:]))
        print(f"wan_speed: FAIL: {(result.stderr.strip().splitlines() or ['no output'])[-1][:300]}")
    return result.returncode == 0


def run_section(name: str, deadline: Deadline, body) -> bool:
    """Print the section, run `body` (False: a check failed), then the elapsed time; an exception is a FAIL."""
    section(name)
    try:
        ok = bool(body())
    except Exception as error:  # noqa: BLE001  reported; the sections after it still run
        print(f"{name}: FAIL {type(error).__name__}: {str(error).splitlines()[0][:300] if str(error) else ''}")
        ok = False
    print(f"elapsed: {deadline.elapsed():.0f} s", flush=True)
    return ok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry", action="store_true", help="tiny sizes on whatever device is here (CI)")
    parser.add_argument("--deadline", type=float, default=None,
                        help="seconds for the whole check, from its start (default 450; --dry: 1800)")
    parser.add_argument("--sections", nargs="+", default=list(SECTIONS), choices=SECTIONS)
    parser.add_argument("--presets", nargs="+", default=["S", "B", "L"])
    parser.add_argument("--rows", type=int, default=8)
    parser.add_argument("--seq_len", type=int, default=2048)
    parser.add_argument("--peak_size", type=int, default=8192)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--unrolled", action="store_true", help="one compiled block per layer (slower compiles)")
    parser.add_argument("--torch_python", default=None, help="an interpreter with PyTorch (python3 on the GPU image)")
    parser.add_argument("--torch_presets", nargs="+", default=["S", "B"], help="a subset of --presets")
    parser.add_argument("--wan_timeout", type=int, default=240, help="at most this many seconds for [wan]")
    parser.add_argument("--world_seconds", type=float, default=300.0,
                        help="the [world] section's wall share (an H100 trains the DiT ~100 s of it)")
    parser.add_argument("--world_vae", default=None, help="a trained autoencoder run for [world] (default: train one)")
    parser.add_argument("--world_preset", default="tiny", help="the DiT preset [world] trains (tiny, S, ...)")
    parser.add_argument("--world_rows", type=int, default=16, help="rows of 384 tokens per [world] DiT step")
    parser.add_argument("--world_clips", type=int, default=2048, help="world clips the [world] DiT learns from")
    parser.add_argument("--world_prompts", type=int, default=24, help="probe prompts sampled after [world] training")
    parser.add_argument("--compile_cache", default=None, help="JAX's persistent compilation cache (reruns compile less)")
    args = parser.parse_args()
    if args.dry:
        args.presets, args.torch_presets, args.rows, args.seq_len, args.peak_size, args.repeats = (
            ["tiny"], ["tiny"], 2, 64, 256, 2)
    if args.deadline is None:
        args.deadline = 1800.0 if args.dry else 450.0
    if args.compile_cache:
        jax.config.update("jax_compilation_cache_dir", args.compile_cache)
    dtype = "bfloat16"
    wanted = set(args.sections)
    world_share = args.world_seconds if "world" in wanted else 0.0
    deadline = Deadline(args.deadline, world_share)
    first_preset_s = 5.0 if args.dry else FIRST_PRESET_S
    versions(args.torch_python)
    print(f"deadline: {args.deadline:.0f} s; sections: {' '.join(args.sections)}; [world] share {world_share:.0f} s")
    ok, step_seconds = True, {}

    def mfu() -> bool:
        step_seconds.update(presets_report(args.presets, dtype, args.rows, args.seq_len, args.peak_size, args.repeats,
                                           not args.unrolled, deadline, first_preset_s))
        return all(s is not None for s in step_seconds.values())

    def torch() -> bool:
        if not args.torch_python or not shutil.which(args.torch_python):
            print(f"skipped: no PyTorch interpreter {args.torch_python!r}")
            return True
        return torch_report(args.torch_presets, step_seconds, args.torch_python, "cpu" if args.dry else "cuda", dtype,
                            args.rows, args.seq_len, args.peak_size, args.repeats, deadline,
                            5.0 if args.dry else TORCH_PRESET_S)

    def wan() -> bool:
        box = int(min(args.wan_timeout, deadline.left()))
        if not deadline.allows("wan", 10.0 if args.dry else WAN_MIN_S):
            return True
        print(f"time box: {box} s")
        return wan_report(args.dry, args.torch_python, box)

    def world() -> bool:
        missing = missing_packages()
        if missing:
            print(f"skipped: needs {', '.join(missing)} (put their wheels in .whl/ for gpu_check.sh; the text "
                  "encoder: python tools/make_gpu_carry.py)")
            deadline.skipped.append("world")
            return True
        share = min(args.world_seconds, deadline.left(before_world=False))
        if not deadline.allows("world", 10.0 if args.dry else WORLD_MIN_S, before_world=False):
            return True
        with tempfile.TemporaryDirectory(prefix="sorajax_world_") as workdir:
            return world_section(share, args.dry, workdir, args.world_vae, args.world_preset, args.world_rows,
                                 args.world_clips, args.world_prompts)

    bodies = {"tests": lambda: not deadline.allows("tests", 5.0 if args.dry else 30.0) or attention_agrees(args.dry),
              "mfu": mfu, "torch": torch, "wan": wan, "world": world}
    for name in SECTIONS:
        if name in wanted:
            ok &= run_section(name, deadline, bodies[name])
    section("summary")
    skipped = f"; skipped: {', '.join(deadline.skipped)}" if deadline.skipped else ""
    print(f"wall: {deadline.elapsed():.0f} s of {args.deadline:.0f}{skipped}; checks: {'ok' if ok else 'FAIL'}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
