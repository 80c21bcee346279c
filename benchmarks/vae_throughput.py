"""Causal VAE encode+decode throughput and peak memory: chunked (streaming) vs whole clip.

    python benchmarks/vae_throughput.py                       # 64x64, 17/65/257 frames, tiny config
    python benchmarks/vae_throughput.py --height 128 --width 128 --frames 17 65 --chunk_latents 2

Every (mode, frames) pair runs in a fresh subprocess, so peak resident memory (ru_maxrss) of one
measurement cannot leak into another. Each worker first builds the model and compiles (the
baseline), then runs the clip ``--repeats`` times; the fastest run gives frames/s (other jobs on a
shared machine only ever slow a run down), the peak covers them all. Frames come from a generator, one chunk at a time (a
moving synthetic pattern, recomputed from the frame index), and the decoded output is consumed
chunk by chunk (accumulating MSE against the regenerated input), as a real long video would be
processed; so in chunked mode neither the input nor the output grows memory. The whole-clip mode
must hold the entire clip, its latents and its reconstruction at once, as any whole-clip caller does.
Random weights: throughput and memory do not depend on training.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from collections.abc import Iterator

from sorajax.host_memory import reexec_with_tunables


def synthetic_frames(start: int, count: int, height: int, width: int) -> "np.ndarray":
    """Frames ``start .. start+count-1`` of a drifting colour pattern, ``[1, count, H, W, 3]`` in [-1, 1]."""
    import numpy as np

    t = np.arange(start, start + count, dtype=np.float32)[:, None, None, None]
    y = np.linspace(0, 2 * np.pi, height, dtype=np.float32)[None, :, None, None]
    x = np.linspace(0, 2 * np.pi, width, dtype=np.float32)[None, None, :, None]
    phase = np.array([0.0, 2.0, 4.0], np.float32)[None, None, None, :]
    return np.sin(x * 2 + y + 0.15 * t + phase)[None] * 0.9


def _frame_chunks(num_frames: int, chunk: int, height: int, width: int) -> Iterator["np.ndarray"]:
    yield synthetic_frames(0, 1, height, width)
    for start in range(1, num_frames, chunk):
        yield synthetic_frames(start, min(chunk, num_frames - start), height, width)


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux reports KiB


def _build(args: argparse.Namespace):
    import jax
    import jax.numpy as jnp

    from sorajax.models.vae import CausalVAE, VAEConfig

    config = VAEConfig.tiny(dtype=args.dtype) if args.config == "tiny" else VAEConfig(dtype=args.dtype)
    vae = CausalVAE(config)
    dummy = jnp.zeros((1, 1, args.height, args.width, 3), jnp.float32)
    variables = jax.jit(vae.init)(jax.random.key(0), dummy)
    return vae, variables


def _worker_chunked(args: argparse.Namespace, num_frames: int) -> dict[str, float]:
    import jax
    import numpy as np

    from sorajax.models.vae_chunked import ChunkedCodec

    start = time.perf_counter()
    vae, variables = _build(args)
    codec = ChunkedCodec(vae, variables, args.chunk_latents)
    step = codec.chunk_frames

    def run(frames: int) -> tuple[float, int]:
        latents = (mean for mean, _ in codec.stream_encode(_frame_chunks(frames, step, args.height, args.width)))
        squared, seen = 0.0, 0
        for out in codec.stream_decode(latents):
            out = np.asarray(jax.device_get(out))
            reference = synthetic_frames(seen, out.shape[1], args.height, args.width)
            squared += float(np.sum(np.square(out - reference)))
            seen += out.shape[1]
        return squared, seen

    # Compile every chunk shape the measured run will use: first, steady state, and a shorter last one.
    run(1 + 2 * step)
    if (num_frames - 1) % step:
        run(1 + (num_frames - 1) % step)
    compile_s = time.perf_counter() - start
    baseline = _peak_rss_mib()
    timings = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        squared, seen = run(num_frames)
        timings.append(time.perf_counter() - start)
    assert seen == num_frames, (seen, num_frames)
    return _result(args, num_frames, min(timings), compile_s, baseline, squared)


def _worker_whole(args: argparse.Namespace, num_frames: int) -> dict[str, float]:
    import jax
    import jax.numpy as jnp
    import numpy as np

    from sorajax.models.vae import CausalVAE

    start = time.perf_counter()
    vae, variables = _build(args)
    video_spec = jax.ShapeDtypeStruct((1, num_frames, args.height, args.width, 3), jnp.float32)
    latent_spec = jax.ShapeDtypeStruct((1, *vae.config.latent_shape(num_frames, args.height, args.width)), jnp.float32)
    encode = jax.jit(lambda v, x: vae.apply(v, x, method=CausalVAE.encode)[0]).lower(variables, video_spec).compile()
    decode = jax.jit(lambda v, z: vae.apply(v, z, method=CausalVAE.decode)).lower(variables, latent_spec).compile()
    compile_s = time.perf_counter() - start
    baseline = _peak_rss_mib()
    timings = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        video = np.concatenate(list(_frame_chunks(num_frames, 4, args.height, args.width)), axis=1)
        recon = np.asarray(jax.device_get(decode(variables, encode(variables, video))))
        squared = float(np.sum(np.square(recon - video)))
        del video, recon
        timings.append(time.perf_counter() - start)
    return _result(args, num_frames, min(timings), compile_s, baseline, squared)


def _result(args, num_frames, elapsed, compile_s, baseline, squared) -> dict[str, float]:
    peak = _peak_rss_mib()
    return {
        "frames": num_frames,
        "seconds": elapsed,
        "frames_per_s": num_frames / elapsed,
        "compile_s": compile_s,
        "baseline_mib": baseline,
        "peak_mib": peak,
        "peak_above_baseline_mib": peak - baseline,
        "mse": squared / (num_frames * args.height * args.width * 3),
    }


def _measure(args: argparse.Namespace, mode: str, num_frames: int) -> dict[str, float]:
    cmd = [sys.executable, __file__, "--worker", mode, "--worker_frames", str(num_frames)]
    for name in ("height", "width", "config", "dtype", "chunk_latents", "repeats"):
        cmd += [f"--{name}", str(getattr(args, name))]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"worker {mode} {num_frames} frames failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _print_table(args: argparse.Namespace, results: dict[tuple[str, int], dict[str, float]]) -> None:
    print(
        f"\nCausal VAE encode+decode, config={args.config} dtype={args.dtype}, {args.height}x{args.width}, "
        f"chunked = {args.chunk_latents} latent frame(s) per chunk, best of {args.repeats} runs"
    )
    header = f"{'mode':8s} {'frames':>6s} {'frames/s':>9s} {'run s':>7s} {'compile s':>9s} {'base MiB':>9s} {'peak MiB':>9s} {'+peak MiB':>9s} {'mse':>8s}"
    print(header)
    print("-" * len(header))
    for (mode, frames), r in results.items():
        print(
            f"{mode:8s} {frames:6d} {r['frames_per_s']:9.2f} {r['seconds']:7.2f} {r['compile_s']:9.1f} "
            f"{r['baseline_mib']:9.0f} {r['peak_mib']:9.0f} {r['peak_above_baseline_mib']:9.0f} {r['mse']:8.3f}"
        )
    lo, hi = min(args.frames), max(args.frames)
    for mode in args.modes:
        if (mode, lo) in results and (mode, hi) in results and lo != hi:
            a, b = results[(mode, lo)], results[(mode, hi)]
            above = b["peak_above_baseline_mib"] / max(a["peak_above_baseline_mib"], 1.0)
            print(
                f"{mode}: peak({hi})/peak({lo}) = {b['peak_mib'] / a['peak_mib']:.2f} absolute, "
                f"{above:.2f} above baseline ({a['peak_above_baseline_mib']:.0f} -> {b['peak_above_baseline_mib']:.0f} MiB)"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--height", type=int, default=64)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--frames", type=int, nargs="+", default=[17, 65, 257], help="clip lengths, each 1 + 4k")
    parser.add_argument("--modes", nargs="+", default=["chunked", "whole"], choices=["chunked", "whole"])
    parser.add_argument("--config", default="tiny", choices=["tiny", "default"])
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--chunk_latents", type=int, default=1, help="latent frames per chunk after the first")
    parser.add_argument("--repeats", type=int, default=2, help="timed runs per measurement; the fastest is reported")
    parser.add_argument("--worker", choices=["chunked", "whole"], help=argparse.SUPPRESS)
    parser.add_argument("--worker_frames", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker:
        work = _worker_chunked if args.worker == "chunked" else _worker_whole
        print(json.dumps(work(args, args.worker_frames)))
        return

    from sorajax.models.vae import VAEConfig

    check = VAEConfig.tiny() if args.config == "tiny" else VAEConfig()
    for frames in args.frames:
        check.validate_video_shape(frames, args.height, args.width)
    results = {}
    for mode in args.modes:
        for frames in args.frames:
            results[(mode, frames)] = _measure(args, mode, frames)
            r = results[(mode, frames)]
            print(f"{mode} {frames} frames: {r['frames_per_s']:.2f} frames/s, peak {r['peak_mib']:.0f} MiB", flush=True)
    _print_table(args, results)


if __name__ == "__main__":
    reexec_with_tunables()  # time sorajax as its commands run it: malloc tuned for XLA (sorajax.host_memory)
    main()
