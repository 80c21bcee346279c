"""sorajax against diffusers on the same Wan transformer and the same tokens: train step and guided sampling step.

    python benchmarks/wan_speed.py [--layers 2] [--frames 5] [--height 30] [--width 52] [--samples 1]
        [--repeats 5] [--torch_python /work/refenv/bin/python] [--torch_compile] [--json out.json]
    python benchmarks/wan_speed.py --device gpu          # bf16 compute, cuDNN attention / SDPA, MFU
    python benchmarks/wan_speed.py --tiny --sides sorajax  # seconds-long, no torch: what CI runs

One run builds a Wan2.1-1.3B-shaped transformer (width 1536, 12 heads of 128, FFN 8960, 512 UMT5 text
positions, 1x2x2 patches of 16 latent channels; ``--layers`` blocks instead of 30). The diffusers side
(``WanTransformer3DModel``) runs in a separate interpreter that has torch, as a worker process answering one
command per line; it creates the random weights and saves them as a diffusers folder, which sorajax loads with
its own loader (``load_wan_dit``), so both sides hold the same function. Measured, interleaved repeat by
repeat so load on a shared machine hits both alike (medians reported):

  train   one step of flow matching: x_t = (1 - s) x0 + s eps, MSE of the prediction against eps - x0,
          backward, AdamW; sorajax jitted with donated state, diffusers eager (and torch.compile'd with
          ``--torch_compile``);
  guided  one sampling step with classifier-free guidance: conditional and negative-prompt predictions
          (sorajax: one forward on both rows; diffusers: two forwards, as WanPipeline runs them), the
          guidance mix and an Euler step.

Before timing, both sides' first losses and guided steps are compared (max abs difference printed). Ratios
are diffusers seconds over sorajax seconds (above 1: sorajax faster). ``--device gpu`` runs both sides in
bf16 compute (sorajax: float32 parameters, bf16 activations, cuDNN attention; torch: float32 parameters
under bf16 autocast, SDPA) and prints each side's MFU against the GPU's published dense bf16 peak.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
from torch_reference import add_malloc_tuning_flag, start_with_malloc_tuning, torch_environment

TINY = dict(heads=2, head_dim=16, ffn=72, text_dim=24, channels=4, text_len=16, frames=2, height=4, width=6)
SIGMA, NEXT_SIGMA, GUIDANCE, LEARNING_RATE, WEIGHT_DECAY = 0.625, 0.5, 5.0, 1e-5, 0.01


def transformer_config(args: argparse.Namespace) -> dict:
    """The diffusers ``WanTransformer3DModel`` config both sides build."""
    return dict(patch_size=[1, 2, 2], num_attention_heads=args.heads, attention_head_dim=args.head_dim,
                in_channels=args.channels, out_channels=args.channels, text_dim=args.text_dim, freq_dim=256,
                ffn_dim=args.ffn, num_layers=args.layers, cross_attn_norm=True, qk_norm="rms_norm_across_heads",
                eps=1e-6, rope_max_seq_len=1024)


def make_inputs(args: argparse.Namespace) -> dict[str, np.ndarray]:
    """The same batch for both sides: clean latents, noise (diffusers' [B, C, F, H, W]) and two captions."""
    rng = np.random.default_rng(0)
    shape = (args.samples, args.channels, args.frames, args.height, args.width)
    text = rng.normal(size=(2, args.text_len, args.text_dim)).astype(np.float32)
    text[0, args.text_len // 4:] = 0.0  # zero padding after the real tokens, as Wan's pipeline feeds UMT5 output
    text[1, args.text_len // 8:] = 0.0  # the negative prompt, shorter
    return dict(x0=rng.normal(size=shape).astype(np.float32), noise=rng.normal(size=shape).astype(np.float32),
                text_cond=np.repeat(text[:1], args.samples, 0), text_uncond=np.repeat(text[1:], args.samples, 0))


# ---------------------------------------------------------------------------------------------- torch worker
def torch_worker(args: argparse.Namespace) -> None:
    """Answer JSON commands on stdin with JSON lines on stdout: 'init', 'check', 'train', 'guided', 'matmul'."""
    import torch
    from diffusers import WanTransformer3DModel
    from torch_reference import matmul_peak

    device = "cuda" if args.device == "gpu" else "cpu"
    autocast = torch.autocast("cuda", torch.bfloat16) if device == "cuda" else torch.autocast("cpu", enabled=False)
    data = {k: torch.from_numpy(v).to(device) for k, v in np.load(os.path.join(args.workdir, "inputs.npz")).items()}
    torch.manual_seed(0)
    model = WanTransformer3DModel(**transformer_config(args))
    with torch.no_grad():  # non-trivial small tables and norms (released ones are trained, not at their init)
        for p in model.parameters():
            if p.numel() < 100_000:
                p.add_(0.05 * torch.randn_like(p))
    model.save_pretrained(os.path.join(args.workdir, "transformer"))
    model = model.to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=LEARNING_RATE, weight_decay=WEIGHT_DECAY)
    run_model = torch.compile(model) if args.torch_compile else model
    timestep = torch.full((args.samples,), SIGMA * 1000.0, device=device)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

    def train() -> float:
        x_t = (1 - SIGMA) * data["x0"] + SIGMA * data["noise"]
        with autocast:
            pred = run_model(x_t, timestep, data["text_cond"], return_dict=False)[0]
        loss = torch.mean((pred.float() - (data["noise"] - data["x0"])) ** 2)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss.item()

    def guided() -> torch.Tensor:
        x_t = (1 - SIGMA) * data["x0"] + SIGMA * data["noise"]
        with torch.no_grad(), autocast:
            cond = run_model(x_t, timestep, data["text_cond"], return_dict=False)[0]
            uncond = run_model(x_t, timestep, data["text_uncond"], return_dict=False)[0]
            velocity = uncond.float() + GUIDANCE * (cond.float() - uncond.float())
        return x_t + (NEXT_SIGMA - SIGMA) * velocity

    def timed(fn) -> tuple[float, float]:
        start, cpu = time.perf_counter(), time.process_time()
        fn()
        sync()
        return time.perf_counter() - start, time.process_time() - cpu

    print(json.dumps({"ready": torch.__version__, "threads": torch.get_num_threads()}), flush=True)
    for line in sys.stdin:
        command = json.loads(line)
        if command["do"] == "check":  # the guided step, then the first train step's loss, before any timing
            np.save(os.path.join(args.workdir, "torch_guided.npy"), guided().float().cpu().numpy())
            reply = {"loss": train()}
        elif command["do"] == "matmul":
            reply = {"flops": matmul_peak("torch", "bfloat16" if device == "cuda" else "float32",
                                          command["size"], device=device)}
        else:
            reply = dict(zip(("seconds", "cpu_seconds"), timed({"train": train, "guided": guided}[command["do"]])))
        print(json.dumps(reply), flush=True)


def worker_environment(args: argparse.Namespace) -> dict[str, str]:
    """The torch worker's environment: glibc's default malloc unless --malloc_tuning=both, and torch_reference
    (beside this file) importable ahead of the caller's path, which stays: gpu_check.sh's carried wheels are on it."""
    env = torch_environment(args)
    here = os.path.dirname(os.path.abspath(__file__))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [here, env.get("PYTHONPATH")]))
    return env


class TorchSide:
    """The worker process, spoken to one command at a time."""

    def __init__(self, args: argparse.Namespace):
        if not shutil.which(args.torch_python):
            raise SystemExit(f"no PyTorch interpreter at {args.torch_python}: pass --torch_python=PATH or --sides sorajax")
        cmd = [args.torch_python, os.path.abspath(__file__), *sys.argv[1:], "--worker", f"--workdir={args.workdir}"]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                     env=worker_environment(args))
        self.info = self._reply()

    def _reply(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            raise SystemExit(f"the torch worker exited with code {self.proc.wait()} (its error is printed above)")
        return json.loads(line)

    def ask(self, do: str, **fields) -> dict:
        self.proc.stdin.write(json.dumps({"do": do, **fields}) + "\n")
        self.proc.stdin.flush()
        return self._reply()

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait()


# ------------------------------------------------------------------------------------------------ sorajax side
class SorajaxSide:
    """sorajax's DiT with the Wan configuration: jitted train step (donated state) and guided step."""

    def __init__(self, args: argparse.Namespace, inputs: dict[str, np.ndarray], weights: str | None):
        import dataclasses

        import jax
        import jax.numpy as jnp
        import optax
        from einops import rearrange

        from sorajax.models.dit import DiT
        from sorajax.models.wan_dit_weights import load_wan_dit, wan_dit_config

        self.jax = jax
        gpu = args.device == "gpu"
        if gpu and jax.default_backend() != "gpu":
            raise SystemExit(f"--device gpu, but JAX's backend is {jax.default_backend()!r}: run on a GPU machine "
                             "or leave --device out")
        if weights:
            config, params = load_wan_dit(weights)
        else:
            config = wan_dit_config(transformer_config(args))
        config = dataclasses.replace(config, dtype="bfloat16" if gpu else "float32",
                                     attention_impl="cudnn" if gpu else args.attention)
        dit = DiT(config)
        f, h, w = args.frames, args.height // 2, args.width // 2
        to_tokens = lambda v: rearrange(v, "b c f (h ph) (w pw) -> b (f h w) (ph pw c)", ph=2, pw=2)  # noqa: E731
        self.to_video = lambda t: rearrange(np.asarray(t, np.float32), "b (f h w) (ph pw c) -> b c f (h ph) (w pw)",
                                            f=f, h=h, w=w, ph=2, pw=2)
        grid = np.stack(np.meshgrid(np.arange(f), np.arange(h), np.arange(w), indexing="ij"), -1).reshape(-1, 3)
        b, n = args.samples, f * h * w
        positions, segments = jnp.asarray(np.broadcast_to(grid, (b, n, 3)), jnp.int32), jnp.ones((b, n), jnp.int32)
        t = jnp.full((b, n), SIGMA, jnp.float32)
        text_segments = jnp.ones((b, args.text_len), jnp.int32)
        x0, noise = jnp.asarray(to_tokens(inputs["x0"])), jnp.asarray(to_tokens(inputs["noise"]))
        cond, uncond = jnp.asarray(inputs["text_cond"]), jnp.asarray(inputs["text_uncond"])
        if not weights:
            params = jax.jit(dit.init)(jax.random.key(0), x0, positions, segments, t, cond, text_segments)["params"]
        optimizer = optax.adamw(LEARNING_RATE, weight_decay=WEIGHT_DECAY)
        self.tokens = b * n

        def loss_fn(p):
            x_t = (1 - SIGMA) * x0 + SIGMA * noise
            pred = dit.apply({"params": p}, x_t, positions, segments, t, cond, text_segments)
            return jnp.mean((pred.astype(jnp.float32) - (noise - x0)) ** 2)

        def train(state):
            p, opt_state = state
            loss, grads = jax.value_and_grad(loss_fn)(p)
            updates, opt_state = optimizer.update(grads, opt_state, p)
            return (optax.apply_updates(p, updates), opt_state), loss

        def guided(p):
            x_t = (1 - SIGMA) * x0 + SIGMA * noise
            double = lambda a: jnp.concatenate([a, a]) # noqa: E731  one forward on both branches' rows
            both = dit.apply({"params": p}, double(x_t), double(positions), double(segments), double(t),
                             jnp.concatenate([cond, uncond]), double(text_segments)).astype(jnp.float32)
            velocity = both[b:] + GUIDANCE * (both[:b] - both[b:])
            return x_t + (NEXT_SIGMA - SIGMA) * velocity

        state = (params, optimizer.init(params))
        self.train_step = jax.jit(train, donate_argnums=0).lower(state).compile()
        self.guided_step = jax.jit(guided).lower(params).compile()
        self.state = state

    def flops(self) -> tuple[float, float]:
        """(train, guided) FLOPs from XLA's cost analysis of the compiled steps."""
        from mfu import flops_of

        return flops_of(self.train_step), flops_of(self.guided_step)

    def train(self) -> float:
        self.state, loss = self.train_step(self.state)
        return float(loss)

    def guided(self) -> np.ndarray:
        return np.asarray(self.guided_step(self.state[0]))

    def timed(self, which: str) -> tuple[float, float]:
        """(wall seconds, CPU seconds of every thread of this process) of one step."""
        start, cpu = time.perf_counter(), time.process_time()
        if which == "train":
            self.state, loss = self.train_step(self.state)
            self.jax.block_until_ready(loss)
        else:
            self.jax.block_until_ready(self.guided_step(self.state[0]))
        return time.perf_counter() - start, time.process_time() - cpu


# ------------------------------------------------------------------------------------------------ the run
def published_peak() -> float | None:
    import jax
    from mfu import published_peak as peak_of

    return peak_of(jax.devices()[0].device_kind) if jax.default_backend() == "gpu" else None


def run(args: argparse.Namespace) -> dict:
    """Build both sides, check they agree, time them interleaved; the figures as one dict (also printed)."""
    inputs = make_inputs(args)
    np.savez(os.path.join(args.workdir, "inputs.npz"), **inputs)
    torch_side = TorchSide(args) if "diffusers" in args.sides else None
    jax_side = SorajaxSide(args, inputs, os.path.join(args.workdir, "transformer") if torch_side else None)
    import jax
    from torch_reference import matmul_peak

    result: dict = dict(config=transformer_config(args), samples=args.samples, tokens=jax_side.tokens,
                        text_len=args.text_len, device=jax.devices()[0].device_kind, repeats=args.repeats,
                        malloc_tuning=args.malloc_tuning, glibc_tunables=os.environ.get("GLIBC_TUNABLES", ""))
    print(f"Wan transformer width {args.heads * args.head_dim}, {args.heads} heads, FFN {args.ffn}, "
          f"{args.layers} blocks; {args.samples} x {jax_side.tokens // args.samples:,} video tokens + "
          f"{args.text_len} text positions; device {result['device']}, {'bf16 compute' if args.device == 'gpu' else 'float32'}; "
          f"malloc tuned (sorajax.host_memory): {args.malloc_tuning}")
    guided = jax_side.guided()  # before the first train step changes the weights (the worker keeps this order)
    check = {"loss_sorajax": jax_side.train()}
    if torch_side:
        print(f"torch {torch_side.info['ready']}, {torch_side.info['threads']} threads"
              f"{', torch.compile' if args.torch_compile else ', eager'}")
        check["loss_diffusers"] = torch_side.ask("check")["loss"]
        reference = np.load(os.path.join(args.workdir, "torch_guided.npy"))
        check["guided_max_abs_diff"] = float(np.max(np.abs(jax_side.to_video(guided) - reference)))
        check["guided_max_abs"] = float(np.max(np.abs(reference)))
        print(f"same function: first-step loss sorajax {check['loss_sorajax']:.6f} diffusers "
              f"{check['loss_diffusers']:.6f}; guided step max |diff| {check['guided_max_abs_diff']:.2e} "
              f"(max |value| {check['guided_max_abs']:.2f})")
    result["check"] = check
    dtype = "bfloat16" if args.device == "gpu" else "float32"
    rates = {"sorajax": matmul_peak("jax", dtype, args.matmul_size)}
    if torch_side:
        rates["diffusers"] = torch_side.ask("matmul", size=args.matmul_size)["flops"]
    result["matmul_flops"] = rates
    print(f"{dtype} matmul {args.matmul_size}^2 on the same device: "
          + ", ".join(f"{side} {r / 1e9:,.1f} GFLOP/s" for side, r in rates.items()))
    peak = published_peak()
    flops = dict(zip(("train", "guided"), jax_side.flops()))
    def ask_torch(which: str) -> tuple[float, float]:
        reply = torch_side.ask(which)
        return reply["seconds"], reply["cpu_seconds"]

    sides = [("sorajax", jax_side.timed)] + ([("diffusers", ask_torch)] if torch_side else [])
    print(f"{'step':7s} {'side':10s} {'median s':>9s} {'min s':>8s} {'tokens/s':>9s} {'GFLOP/s':>9s} "
          f"{'MFU pub':>8s} {'ratio':>6s} {'CPU s':>7s} {'CPU ratio':>9s}")
    for which in ("train", "guided"):
        for _, fn in sides:
            fn(which)  # one warm-up each (torch allocator, first AdamW state)
        seconds: dict[str, list[float]] = {side: [] for side, _ in sides}
        cpu_seconds: dict[str, list[float]] = {side: [] for side, _ in sides}
        for _ in range(args.repeats):
            for side, fn in sides:
                wall, cpu = fn(which)
                seconds[side].append(wall)
                cpu_seconds[side].append(cpu)
        medians = {side: statistics.median(s) for side, s in seconds.items()}
        cpu_medians = {side: statistics.median(s) for side, s in cpu_seconds.items()}
        for side, s in seconds.items():
            rate = flops[which] / medians[side]
            ratio = medians.get("diffusers", float("nan")) / medians[side]
            cpu_ratio = cpu_medians.get("diffusers", float("nan")) / cpu_medians[side]
            mfu = f"{rate / peak:8.1%}" if peak else f"{'-':>8s}"
            print(f"{which:7s} {side:10s} {medians[side]:9.3f} {min(s):8.3f} {jax_side.tokens / medians[side]:9,.0f} "
                  f"{rate / 1e9:9,.1f} {mfu} {ratio:5.2f}x {cpu_medians[side]:7.2f} {cpu_ratio:8.2f}x", flush=True)
        result[which] = dict(seconds=seconds, median=medians, flops=flops[which], cpu_seconds=cpu_seconds,
                             cpu_median=cpu_medians,
                             ratio=medians["diffusers"] / medians["sorajax"] if torch_side else None,
                             mfu={side: flops[which] / m / peak for side, m in medians.items()} if peak else None)
    print("ratio: diffusers median seconds over sorajax median seconds (above 1: sorajax faster); "
          "GFLOP/s of both sides at sorajax's XLA-counted FLOPs; CPU s: CPU seconds of all the side's threads, "
          "the fairer ratio when other jobs share the machine")
    if torch_side:
        torch_side.close()
    return result


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "gpu"])
    parser.add_argument("--tiny", action="store_true", help="a tiny transformer and batch (CI, dry runs)")
    parser.add_argument("--sides", nargs="+", default=["sorajax", "diffusers"], choices=["sorajax", "diffusers"])
    parser.add_argument("--layers", type=int, default=2, help="blocks (Wan2.1-1.3B has 30)")
    parser.add_argument("--heads", type=int, default=12)
    parser.add_argument("--head_dim", type=int, default=128)
    parser.add_argument("--ffn", type=int, default=8960)
    parser.add_argument("--text_dim", type=int, default=4096)
    parser.add_argument("--text_len", type=int, default=512)
    parser.add_argument("--channels", type=int, default=16, help="latent channels (Wan2.2-5B: 48)")
    parser.add_argument("--frames", type=int, default=5, help="latent frames (5: 17 video frames)")
    parser.add_argument("--height", type=int, default=30, help="latent height, even (30: 240 pixels)")
    parser.add_argument("--width", type=int, default=52, help="latent width, even (52: 416 pixels)")
    parser.add_argument("--samples", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--matmul_size", type=int, default=2048)
    parser.add_argument("--attention", default="xla", help="sorajax attention_impl on CPU")
    parser.add_argument("--torch_python", default="/work/refenv/bin/python")
    parser.add_argument("--torch_compile", action="store_true", help="diffusers side through torch.compile")
    parser.add_argument("--json", default=None, help="also write the figures here")
    add_malloc_tuning_flag(parser)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--workdir", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.tiny:
        for key, value in TINY.items():
            setattr(args, key, value)
        args.repeats, args.matmul_size = min(args.repeats, 2), 256
    if args.height % 2 or args.width % 2:
        parser.error(f"--height {args.height} / --width {args.width}: latent sizes must be even (2x2 patches)")
    return args


def main() -> None:
    args = parse_args()
    if args.worker:
        torch_worker(args)
        return
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:0] = [here, os.path.dirname(here)]  # this checkout's sorajax, not another installed copy
    start_with_malloc_tuning(args)  # before JAX starts; a no-op once set, or off glibc
    with tempfile.TemporaryDirectory(prefix="wan_speed_") as workdir:
        args.workdir = workdir
        result = run(args)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
