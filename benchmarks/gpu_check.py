"""One command that checks and measures sorajax on a machine with one NVIDIA GPU.

    python benchmarks/gpu_check.py            # on the GPU machine (benchmarks/gpu_check.sh wraps it)
    python benchmarks/gpu_check.py --dry      # tiny sizes on CPU: what CI runs so this script cannot rot

Prints, section by section (each line ``key: value`` or a table, so a run's log is its record):
  [versions]   Python, JAX, jaxlib, Flax, Optax, the device, PyTorch;
  [tests]      cuDNN attention equals XLA attention on packed segments (values and gradients, bf16),
               and the bf16 train step's loss is finite;
  [mfu]        train-step MFU of each preset in bf16, against the GPU's published dense bf16 peak and
               against the best matmul measured in this run; the CFG sampler step's seconds;
  [torch]      sorajax against its PyTorch reference DiT at the same shape, both on this GPU
               (benchmarks/torch_reference.py), when an interpreter with torch is given;
  [wan]        sorajax against diffusers' Wan transformer, train step and guided step, bf16, cuDNN / SDPA,
               MFU of each side (benchmarks/wan_speed.py --device gpu; time-boxed by --wan_timeout).
A failed check prints ``FAIL`` and the script exits non-zero after all sections ran.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from dit_throughput import compiled_train_step, guided_forward, packed_batch, timed  # noqa: E402
from mfu import flops_of, matmul_peak, published_peak  # noqa: E402

from sorajax.models.attention import dot_product_attention  # noqa: E402
from sorajax.models.dit import DiT, DiTConfig  # noqa: E402

SAMPLES = 4  # samples packed per row (dit_throughput.packed_batch)


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


def preset_row(preset: str, impl: str, dtype: str, rows: int, seq_len: int, repeats: int, measured: float,
               published: float | None) -> float | None:
    """Print one preset's row of the MFU table; its step seconds, None when the train-step loss is not finite."""
    dit = DiT(DiTConfig.preset(preset, patch_dim=32, text_dim=384, dtype=dtype, attention_impl=impl))
    state, batch, step = compiled_train_step(dit, packed_batch(rows, seq_len))
    flops = flops_of(step)
    loss = float(step(state, batch)[1]["loss"])
    seconds = timed(lambda s: step(s, batch)[1]["loss"], state, repeats=repeats)
    sample_s = timed(guided_forward(dit), state.params, batch, repeats=repeats)
    rate = flops / seconds
    mfu_pub = f"{rate / published:8.1%}" if published else f"{'-':>8s}"
    params = sum(x.size for x in jax.tree.leaves(state.params))
    print(f"{preset:6s} {params / 1e6:7.1f}M {seconds:8.4f} {rows * seq_len / seconds:10,.0f} {flops / 1e12:11.3f} "
          f"{rate / 1e12:8.1f} {mfu_pub} {rate / measured:9.1%} {loss:8.4f} {sample_s:14.4f}  attention {impl}",
          flush=True)
    return seconds if np.isfinite(loss) else None


def presets_report(presets: list[str], dtype: str, rows: int, seq_len: int, peak_size: int,
                   repeats: int) -> dict[str, float | None]:
    """Train-step MFU (published and measured peak) and CFG sampler-step seconds for each preset.

    Returns each preset's step seconds with attention 'auto' (None where it failed or was not finite).
    """
    kind = jax.devices()[0].device_kind
    published = published_peak(kind)
    measured = matmul_peak(dtype, peak_size)
    print(f"device: {kind}; {rows} x {seq_len} tokens per step ({SAMPLES} samples per row), {dtype}")
    print(f"matmul peak measured ({peak_size}^2, best of 10): {measured / 1e12:.1f} TFLOP/s; published dense bf16: "
          f"{published / 1e12 if published else float('nan'):.0f} TFLOP/s")
    print(f"{'preset':6s} {'params':>8s} {'step s':>8s} {'tokens/s':>10s} {'TFLOP/step':>11s} {'TFLOP/s':>8s} "
          f"{'MFU pub':>8s} {'MFU meas':>9s} {'loss':>8s} {'sample s/step':>14s}")
    step_seconds: dict[str, float | None] = {}
    for preset in presets:
        for impl in ("auto", "xla"):  # cuDNN where it runs; XLA attention if cuDNN fails here
            try:
                seconds = preset_row(preset, impl, dtype, rows, seq_len, repeats, measured, published)
                break
            except Exception as error:  # noqa: BLE001  a failed preset is reported, the others still run
                print(f"{preset:6s} attention {impl!r}: FAIL {type(error).__name__}: {str(error).splitlines()[0][:300]}")
                seconds = None
        step_seconds[preset] = seconds if impl == "auto" else None  # a fallback to XLA attention is a failure
    ok = all(s is not None for s in step_seconds.values())
    print(f"bf16 train step finite with attention 'auto' for every preset: {'ok' if ok else 'FAIL'}")
    return step_seconds


def torch_report(presets: list[str], step_seconds: dict[str, float | None], torch_python: str, device: str,
                 dtype: str, rows: int, seq_len: int, peak_size: int, repeats: int) -> bool:
    """The PyTorch reference DiT's step at each preset's shape, against the JAX step timed above."""
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "torch_reference.py")
    ok = True
    print(f"{'preset':6s} {'sorajax s':>10s} {'PyTorch s':>10s} {'ratio':>6s} {'torch matmul TFLOP/s':>21s}")
    for preset in presets:
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
    """benchmarks/wan_speed.py in its own process (its output printed as it is), time-boxed."""
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
    if result.returncode != 0:
        print(f"wan_speed: FAIL: {(result.stderr.strip().splitlines() or ['no output'])[-1][:300]}")
    return result.returncode == 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry", action="store_true", help="tiny sizes on whatever device is here (CI)")
    parser.add_argument("--presets", nargs="+", default=["S", "B", "L"])
    parser.add_argument("--rows", type=int, default=8)
    parser.add_argument("--seq_len", type=int, default=2048)
    parser.add_argument("--peak_size", type=int, default=8192)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--torch_python", default=None, help="an interpreter with PyTorch (python3 on the GPU image)")
    parser.add_argument("--torch_presets", nargs="+", default=["S", "B"], help="a subset of --presets")
    parser.add_argument("--wan_timeout", type=int, default=240, help="seconds for the [wan] section")
    args = parser.parse_args()
    if args.dry:
        args.presets, args.torch_presets, args.rows, args.seq_len, args.peak_size, args.repeats = (
            ["tiny"], ["tiny"], 2, 64, 256, 2)
    dtype = "bfloat16"
    start = time.perf_counter()
    versions(args.torch_python)
    section("tests")
    try:
        ok = attention_agrees(args.dry)
    except Exception as error:  # noqa: BLE001  reported; the measurements below still run
        print(f"attention check: FAIL {type(error).__name__}: {str(error).splitlines()[0][:300]}")
        ok = False
    print(f"elapsed: {time.perf_counter() - start:.0f} s")
    section("mfu")
    step_seconds = presets_report(args.presets, dtype, args.rows, args.seq_len, args.peak_size, args.repeats)
    ok &= all(s is not None for s in step_seconds.values())
    print(f"elapsed: {time.perf_counter() - start:.0f} s")
    section("torch")
    if not args.torch_python or not shutil.which(args.torch_python):
        print(f"skipped: no PyTorch interpreter {args.torch_python!r}")
    else:
        ok &= torch_report(args.torch_presets, step_seconds, args.torch_python, "cpu" if args.dry else "cuda", dtype,
                           args.rows, args.seq_len, args.peak_size, args.repeats)
    section("wan")
    ok &= wan_report(args.dry, args.torch_python, args.wan_timeout)
    section("summary")
    print(f"wall: {time.perf_counter() - start:.0f} s; checks: {'ok' if ok else 'FAIL'}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
