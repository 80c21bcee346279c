"""Train-step speed of the sorajax DiT against a PyTorch DiT of the same shape, from one run.

    python benchmarks/torch_reference.py [--preset S] [--rows 4] [--seq_len 256] [--dtype float32]
        [--torch_python /work/refenv/bin/python] [--torch_device cpu|cuda] [--peak_size 2048]

The PyTorch side runs in a separate interpreter that has torch (sorajax never
depends on it): this file re-runs itself there with ``--side=torch``. The reference
is written here in plain PyTorch with the same computation per block: per-token
adaLN-Zero modulation (width -> 6 width), QK-normed self-attention over packed
segments (``scaled_dot_product_attention`` with the block-diagonal mask),
cross-attention to the caption, a 4x GELU MLP; AdamW; random weights, the same
token and caption shapes. Printed: tokens/s of each and the JAX / PyTorch ratio.

Each side also measures its own best 2048^2 matmul rate in the same run, and the JAX step's
FLOPs come from XLA's cost analysis. That gives the CEILING: the ratio a JAX step doing these
FLOPs would reach at 100% of JAX's matmul peak, against the PyTorch step as measured. Where the
ceiling is below a target ratio, no JAX-side change can reach it on that machine.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time

PATCH_DIM, TEXT_DIM, SAMPLES_PER_ROW, CAPTION = 32, 384, 4, 48
PRESETS = {"tiny": (128, 4, 4), "S": (384, 12, 6), "B": (768, 12, 12)}


MALLOC_TUNING = ("sorajax", "both", "none")


def add_malloc_tuning_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--malloc_tuning", default="sorajax", choices=MALLOC_TUNING,
                        help="who runs with sorajax.host_memory's glibc malloc tunables: sorajax, as its commands "
                             "do (default), both sides, or neither")


def start_with_malloc_tuning(args: argparse.Namespace) -> None:
    """Restart this (JAX-side) process with sorajax's malloc tunables unless --malloc_tuning=none; before JAX loads."""
    here = os.path.dirname(os.path.abspath(__file__))
    if os.path.dirname(here) not in sys.path:
        sys.path.insert(0, os.path.dirname(here))  # this checkout's sorajax
    if args.malloc_tuning != "none":
        from sorajax.host_memory import reexec_with_tunables

        reexec_with_tunables()


def torch_environment(args: argparse.Namespace) -> dict[str, str]:
    """The PyTorch side's environment: glibc's default malloc as its users run it, unless --malloc_tuning=both."""
    from sorajax.host_memory import wanted_tunables, with_tunables, without_tunables

    return (with_tunables if args.malloc_tuning == "both" else without_tunables)(os.environ, wanted_tunables())


def best_time(run, repeats: int) -> float:
    """Seconds of the fastest of `repeats` calls of `run` (which must wait for its result), after one warm-up."""
    run()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return best


def matmul_peak(side: str, dtype: str, size: int = 2048, repeats: int = 10, device: str = "cpu") -> float:
    """Best FLOP/s of one size x size matmul on `side` ('jax' or 'torch' on `device`): that side's own peak."""
    if side == "jax":
        import jax
        import jax.numpy as jnp

        a = jnp.ones((size, size), dtype)
        matmul = jax.jit(lambda x: x @ x)
        run = lambda: jax.block_until_ready(matmul(a))  # noqa: E731
    else:
        import torch

        a = torch.ones(size, size, dtype={"float32": torch.float32, "bfloat16": torch.bfloat16}[dtype], device=device)
        run = lambda: (a @ a).sum().item()  # noqa: E731  (.item() waits for an asynchronous device)
    return 2 * size**3 / best_time(run, repeats)


def jax_side(preset: str, rows: int, seq_len: int, dtype: str, repeats: int) -> tuple[float, float]:
    """(best train-step time in s, FLOPs per step from the compiled cost analysis) of the real sorajax step."""
    import jax

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from dit_throughput import compiled_train_step, packed_batch

    from sorajax.models.dit import DiT, DiTConfig

    dit = DiT(DiTConfig.preset(preset, patch_dim=PATCH_DIM, text_dim=TEXT_DIM, dtype=dtype, attention_impl="auto"))
    state, batch, step = compiled_train_step(dit, packed_batch(rows, seq_len))
    analysis = step.cost_analysis()
    flops = float((analysis[0] if isinstance(analysis, (list, tuple)) else analysis)["flops"])
    return best_time(lambda: jax.block_until_ready(step(state, batch)[1]["loss"]), repeats), flops


def torch_side(preset: str, rows: int, seq_len: int, dtype: str, repeats: int, device: str = "cpu") -> float:
    """Best train-step time (s) of the PyTorch reference DiT at the same shape."""
    import torch
    from torch import nn
    from torch.nn import functional as F

    width, depth, heads = PRESETS[preset]
    torch_dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[dtype]

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.adaln = nn.Linear(width, 6 * width)
            self.qkv, self.out = nn.Linear(width, 3 * width), nn.Linear(width, width)
            self.q_norm, self.k_norm = nn.RMSNorm(width // heads), nn.RMSNorm(width // heads)
            self.cross_q, self.cross_kv = nn.Linear(width, width), nn.Linear(width, 2 * width)
            self.cross_out, self.cross_norm = nn.Linear(width, width), nn.LayerNorm(width)
            self.fc1, self.fc2 = nn.Linear(width, 4 * width), nn.Linear(4 * width, width)
            self.norm1 = nn.LayerNorm(width, elementwise_affine=False)
            self.norm2 = nn.LayerNorm(width, elementwise_affine=False)

        def split(self, x):
            return x.view(x.shape[0], x.shape[1], heads, -1).transpose(1, 2)

        def forward(self, x, cond, mask, context, cross_mask):
            sa, sc, ga, sm, scm, gm = self.adaln(F.silu(cond)).chunk(6, dim=-1)
            h = self.norm1(x) * (1 + sc) + sa
            q, k, v = (self.split(t) for t in self.qkv(h).chunk(3, dim=-1))
            h = F.scaled_dot_product_attention(self.q_norm(q), self.k_norm(k), v, attn_mask=mask)
            x = x + ga * self.out(h.transpose(1, 2).reshape(x.shape))
            q = self.split(self.cross_q(self.cross_norm(x)))
            k, v = (self.split(t) for t in self.cross_kv(context).chunk(2, dim=-1))
            h = F.scaled_dot_product_attention(q, k, v, attn_mask=cross_mask)
            x = x + self.cross_out(h.transpose(1, 2).reshape(x.shape))
            h = self.norm2(x) * (1 + scm) + sm
            return x + gm * self.fc2(F.gelu(self.fc1(h), approximate="tanh"))

    class ReferenceDiT(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed, self.text = nn.Linear(PATCH_DIM, width), nn.Linear(TEXT_DIM, width)
            self.t_embed = nn.Sequential(nn.Linear(256, width), nn.SiLU(), nn.Linear(width, width))
            self.blocks = nn.ModuleList(Block() for _ in range(depth))
            self.final = nn.Linear(width, PATCH_DIM)

        def forward(self, tokens, t_features, text, mask, cross_mask):
            x, cond, context = self.embed(tokens), self.t_embed(t_features), self.text(text)
            for block in self.blocks:
                x = block(x, cond, mask, context, cross_mask)
            return self.final(x)

    torch.manual_seed(0)
    model = ReferenceDiT().to(device=device, dtype=torch_dtype)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    per = seq_len // SAMPLES_PER_ROW
    seg = torch.arange(1, SAMPLES_PER_ROW + 1).repeat_interleave(per)
    text_seg = torch.arange(1, SAMPLES_PER_ROW + 1).repeat_interleave(CAPTION)
    mask = (seg[:, None] == seg[None, :])[None, None].expand(rows, 1, -1, -1).to(device)
    cross_mask = (seg[:, None] == text_seg[None, :])[None, None].expand(rows, 1, -1, -1).to(device)
    tokens = torch.randn(rows, seq_len, PATCH_DIM, dtype=torch_dtype, device=device)
    t_features = torch.randn(rows, seq_len, 256, dtype=torch_dtype, device=device)
    text = torch.randn(rows, text_seg.numel(), TEXT_DIM, dtype=torch_dtype, device=device)
    target = torch.randn_like(tokens)

    def step():
        optimizer.zero_grad(set_to_none=True)
        loss = F.mse_loss(model(tokens, t_features, text, mask, cross_mask).float(), target.float())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        return loss.item()

    return best_time(step, repeats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="S", choices=sorted(PRESETS))
    parser.add_argument("--rows", type=int, default=4)
    parser.add_argument("--seq_len", type=int, default=256)
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--side", default="both", choices=["both", "jax", "torch"])
    parser.add_argument("--torch_python", default="/work/refenv/bin/python")
    parser.add_argument("--torch_device", default="cpu", help="'cuda' on a GPU machine (JAX uses its default device)")
    parser.add_argument("--peak_size", type=int, default=2048, help="matmul side for each side's peak (8192 on a GPU)")
    add_malloc_tuning_flag(parser)
    args = parser.parse_args()
    shape = (args.preset, args.rows, args.seq_len, args.dtype, args.repeats)
    if args.side == "torch":
        print(json.dumps({"torch_s": torch_side(*shape, device=args.torch_device),
                          "torch_peak": matmul_peak("torch", args.dtype, args.peak_size, device=args.torch_device)}))
        return
    start_with_malloc_tuning(args)
    jax_s, flops = jax_side(*shape)
    jax_peak = matmul_peak("jax", args.dtype, args.peak_size)
    if args.side == "jax":
        print(json.dumps({"jax_s": jax_s, "flops": flops, "jax_peak": jax_peak}))
        return
    if not shutil.which(args.torch_python):
        raise FileNotFoundError(f"no PyTorch interpreter at {args.torch_python}: pass --torch_python=PATH")
    cmd = [args.torch_python, os.path.abspath(__file__), "--side=torch", f"--preset={args.preset}",
           f"--rows={args.rows}", f"--seq_len={args.seq_len}", f"--dtype={args.dtype}", f"--repeats={args.repeats}",
           f"--torch_device={args.torch_device}", f"--peak_size={args.peak_size}"]
    torch = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True,
                                      env=torch_environment(args)).stdout.strip().splitlines()[-1])
    torch_s, torch_peak = torch["torch_s"], torch["torch_peak"]
    tokens, gf = args.rows * args.seq_len, 1e9
    print(f"DiT-{args.preset} {args.dtype}, {args.rows} x {args.seq_len} tokens, train step (fwd+bwd+AdamW), "
          f"{flops / gf:.1f} GFLOP per step (XLA cost analysis); malloc tuned: {args.malloc_tuning}")
    print(f"sorajax (JAX): {jax_s:.3f} s/step = {tokens / jax_s:,.0f} tokens/s = {flops / jax_s / gf:.0f} GFLOP/s, "
          f"{100 * flops / jax_s / jax_peak:.0f}% of its matmul peak {jax_peak / gf:.0f} GFLOP/s")
    print(f"PyTorch reference: {torch_s:.3f} s/step = {tokens / torch_s:,.0f} tokens/s = {flops / torch_s / gf:.0f} "
          f"GFLOP/s at the same FLOPs, {100 * flops / torch_s / torch_peak:.0f}% of its matmul peak "
          f"{torch_peak / gf:.0f} GFLOP/s")
    print(f"ratio (JAX tokens/s over PyTorch tokens/s): {torch_s / jax_s:.2f}x")
    print(f"ceiling (JAX at 100% of its matmul peak over PyTorch as measured): {jax_peak * torch_s / flops:.2f}x")


if __name__ == "__main__":
    main()
