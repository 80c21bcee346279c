"""One Wan2.1-1.3B-shaped transformer forward: sorajax against diffusers' WanTransformer3DModel, one run.

    python benchmarks/wan_forward.py [--layers 2] [--frames 5] [--height 30] [--width 52]
        [--torch_python /work/refenv/bin/python] [--dtype float32]

Both sides build the same transformer (width 1536, 12 heads of 128, FFN 8960, UMT5-width text of 512
positions, 1x2x2 patches of 16 latent channels) with ``--layers`` blocks instead of 30, random weights,
and run one forward on the same latent size (default 5 x 30 x 52 latents = 1,950 tokens: 17 frames of
240 x 416 video). The diffusers side runs in a separate interpreter that has torch (sorajax never
depends on it). Printed: seconds per forward of each (best of ``--repeats`` after a warm-up) and the
ratio; both sides on this machine's CPU unless JAX sees an accelerator.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys

from torch_reference import best_time  # the same timing rule for both benchmarks (this folder is on sys.path)

TEXT_LEN, TEXT_DIM = 512, 4096


def jax_side(args: argparse.Namespace) -> tuple[float, float]:
    """(best seconds, FLOPs from XLA's cost analysis) of sorajax's forward with a Wan preset."""
    import jax
    import numpy as np

    from sorajax.models.dit import DiT, DiTConfig
    from sorajax.patches import patchify

    config = DiTConfig.preset("wan2.1-t2v-1.3b", depth=args.layers, dtype=args.dtype, attention_impl="xla")
    rng = np.random.default_rng(0)
    tokens, positions = patchify(rng.normal(size=(args.frames, args.height, args.width, 16)).astype(np.float32))
    n = len(tokens)
    inputs = (tokens[None], positions[None], np.ones((1, n), np.int32), np.full((1, n), 0.625, np.float32),
              rng.normal(size=(1, TEXT_LEN, TEXT_DIM)).astype(np.float32), np.ones((1, TEXT_LEN), np.int32))
    model = DiT(config)
    params = jax.jit(model.init)(jax.random.key(0), *inputs)["params"]
    forward = jax.jit(lambda p, *a: model.apply({"params": p}, *a)).lower(params, *inputs).compile()
    cost = forward.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    seconds = best_time(lambda: jax.block_until_ready(forward(params, *inputs)), args.repeats)
    return seconds, float(cost.get("flops", float("nan")))


def torch_side(args: argparse.Namespace) -> float:
    """Best seconds of diffusers' forward at the same shape."""
    import torch
    from diffusers import WanTransformer3DModel

    torch.manual_seed(0)
    model = WanTransformer3DModel(patch_size=(1, 2, 2), num_attention_heads=12, attention_head_dim=128,
                                  in_channels=16, out_channels=16, text_dim=TEXT_DIM, freq_dim=256, ffn_dim=8960,
                                  num_layers=args.layers, cross_attn_norm=True, qk_norm="rms_norm_across_heads",
                                  eps=1e-6).eval()
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[args.dtype]
    model = model.to(dtype)
    latents = torch.randn(1, 16, args.frames, args.height, args.width, dtype=dtype)
    text = torch.randn(1, TEXT_LEN, TEXT_DIM, dtype=dtype)
    timestep = torch.tensor([625.0])

    def run() -> None:
        with torch.no_grad():
            model(latents, timestep, text, return_dict=False)

    return best_time(run, args.repeats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--frames", type=int, default=5, help="latent frames")
    parser.add_argument("--height", type=int, default=30, help="latent height (even)")
    parser.add_argument("--width", type=int, default=52, help="latent width (even)")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--torch_python", default="/work/refenv/bin/python")
    parser.add_argument("--side", default="both", choices=["both", "jax", "torch"])
    args = parser.parse_args()
    if args.side == "torch":
        print(json.dumps({"torch_s": torch_side(args)}))
        return
    jax_s, flops = jax_side(args)
    tokens = args.frames * (args.height // 2) * (args.width // 2)
    print(f"Wan2.1-1.3B shape, {args.layers} of 30 blocks, {tokens:,} video tokens + {TEXT_LEN} text positions, "
          f"{args.dtype}, forward only; {flops / 1e9:.0f} GFLOP (XLA cost analysis)")
    print(f"sorajax (JAX): {jax_s:.3f} s = {flops / jax_s / 1e9:.0f} GFLOP/s")
    if args.side == "jax":
        return
    if not shutil.which(args.torch_python):
        raise SystemExit(f"no PyTorch interpreter at {args.torch_python}: pass --torch_python=PATH (see the docstring)")
    cmd = [args.torch_python, os.path.abspath(__file__), *sys.argv[1:], "--side=torch"]  # the last --side wins
    result = subprocess.run(cmd, capture_output=True, text=True, check=True)
    torch_s = json.loads(result.stdout.strip().splitlines()[-1])["torch_s"]
    print(f"diffusers (PyTorch {args.dtype}): {torch_s:.3f} s = {flops / torch_s / 1e9:.0f} GFLOP/s at the same FLOPs")
    print(f"ratio (diffusers seconds over sorajax seconds; above 1: sorajax faster): {torch_s / jax_s:.2f}x")


if __name__ == "__main__":
    main()
