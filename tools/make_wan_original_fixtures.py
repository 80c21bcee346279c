"""Write tiny Wan checkpoints in Wan's ORIGINAL release layout, made and run by Wan's own modules.

Why: `python -m sorajax.convert` reads Wan's original release folders (e.g. Wan-AI/Wan2.1-T2V-1.3B:
WanModel safetensors under Wan's key names, the VAE and UMT5 as PyTorch `.pth` pickles). The check
that the conversion is right is Wan's own code (`wan/modules/model.py`, `vae.py` / Wan2.2's
`vae2_2.py`, `t5.py`) computing the same outputs as the converted sorajax run. That code needs
PyTorch, which sorajax never depends on, so this script runs once, by hand, in the reference
environment, and its small outputs are committed.

Writes (tests/fixtures/):
- `wan21_t2v_original_tiny/` and `wan22_ti2v_original_tiny/`: `config.json` + the DiT as WanModel's
  `save_pretrained` writes it (2.1: two shards and their index; 2.2: one file), `Wan2.1_VAE.pth` /
  `Wan2.2_VAE.pth` and `models_t5_umt5-xxl-enc-bf16.pth` (`torch.save` of the state dicts, T5 in bf16,
  as released), and `google/umt5-xxl/` (the tiny tokenizer of `umt5_tiny/`: tokenizer.json for 2.1,
  spiece.model for 2.2). Random weights at tiny widths; the VAEs keep Wan's latent channels (16 / 48)
  because Wan's code hard-codes their latent statistics, and four levels (x8 / x16 in space, x4 in time)
  with narrower channel multipliers (1, 2, 2, 2) than the releases' (1, 2, 4, 4).
- `wan_original_reference.npz`: per model, Wan's outputs on fixed inputs (float32 on CPU): the DiT's
  velocity for given latents, timesteps and context; the VAE's normalised latent mean (its
  `encode`) and clamped decode (its `decode`); T5 hidden states for given token ids.
- `torch_pickle_views.pth`: tensors saved as views (storage offsets, transposed strides, two tensors
  sharing one storage) in float32, bfloat16, float16 and int64, for the `.pth` reader.
- `wan_original_*_keys.txt`: every key and shape of the FULL-size originals (Wan2.1-T2V-1.3B's DiT,
  the 2.1 and 2.2 VAEs, umt5-xxl's encoder), built on the meta device, for key-coverage tests.

Wan's attention helper needs flash-attn on a GPU; it is replaced by PyTorch's SDPA with the same
key-length mask, in float32. Run (nothing is downloaded):

    /work/refenv/bin/python tools/make_wan_original_fixtures.py \
        --wan21 /work/src/Wan-Video+Wan2.1 --wan22 /work/src/Wan-Video+Wan2.2
"""

from __future__ import annotations

import argparse
import importlib
import shutil
import sys
import types
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

FIXTURES = Path(__file__).resolve().parents[1] / "tests" / "fixtures"
TOKENIZER = FIXTURES / "umt5_tiny"
T5_NAME = "models_t5_umt5-xxl-enc-bf16.pth"
warnings.filterwarnings("ignore", category=FutureWarning)  # torch.cuda.amp.autocast in Wan2.1's code

# Tiny sizes. DiT: head_dim 8 (Wan's RoPE split 2/1/1 pairs); text_dim = the T5 width.
DIT = dict(patch_size=(1, 2, 2), text_len=512, dim=16, ffn_dim=32, freq_dim=256, text_dim=16, num_heads=2,
           num_layers=2, window_size=(-1, -1), qk_norm=True, cross_attn_norm=True, eps=1e-6)
T5 = dict(vocab=236, dim=16, dim_attn=16, dim_ffn=32, num_heads=2, num_layers=2, num_buckets=32, shared_pos=False)
MODELS = {
    "wan21_t2v": dict(model_type="t2v", channels=16, vae="Wan2.1_VAE.pth", shards="20KB", seed=1,
                      vae_args=dict(dim=2, z_dim=16, dim_mult=[1, 2, 2, 2], num_res_blocks=2,
                                    temperal_downsample=[False, True, True]),
                      clip=(5, 16, 16), tokenizer=("tokenizer.json", "tokenizer_config.json")),
    "wan22_ti2v": dict(model_type="ti2v", channels=48, vae="Wan2.2_VAE.pth", shards=None, seed=2,
                       vae_args=dict(dim=2, dec_dim=2, z_dim=48, dim_mult=[1, 2, 2, 2], num_res_blocks=1,
                                     temperal_downsample=[False, True, True]),
                       clip=(5, 32, 32), tokenizer=("spiece.model", "tokenizer_config.json")),
}


def wan_package(repo: Path, alias: str) -> types.ModuleType:
    """`wan/modules` of a Wan checkout as package `alias`, without running wan/__init__ (which loads everything)."""
    package = types.ModuleType(alias)
    package.__path__ = [str(repo / "wan" / "modules")]
    sys.modules[alias] = package
    return package


def sdpa_attention(q, k, v, q_lens=None, k_lens=None, window_size=(-1, -1), **_):
    """Wan's flash_attention contract ([B, L, N, D], keys past k_lens masked) on PyTorch SDPA, float32."""
    assert tuple(window_size) == (-1, -1) and q_lens is None
    mask = None
    if k_lens is not None:
        mask = (torch.arange(k.shape[1])[None, :] < k_lens[:, None])[:, None, None, :]
    out = F.scaled_dot_product_attention(q.transpose(1, 2).float(), k.transpose(1, 2).float(),
                                         v.transpose(1, 2).float(), attn_mask=mask)
    return out.transpose(1, 2)


def randomise(model: torch.nn.Module, seed: int) -> None:
    """Every weight random (norm scales around 1, biases and modulation tables around 0), rounded through
    float16 so the values are exact in any dtype they are stored in."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(("gamma", "norm_q.weight", "norm_k.weight", "norm3.weight")) or (
                    "norm" in name and p.ndim == 1 and name.endswith("weight")):
                value = 1.0 + 0.2 * torch.randn(p.shape, generator=gen)
            elif name.endswith("bias") or "modulation" in name:
                value = 0.1 * torch.randn(p.shape, generator=gen)
            else:
                fan_in = max(int(np.prod(p.shape[1:])), 1)
                value = torch.randn(p.shape, generator=gen) / np.sqrt(fan_in)
            p.copy_(value.half().float())


def write_keys(path: Path, state: dict) -> None:
    lines = [f"{k}\t{','.join(str(d) for d in v.shape)}" for k, v in state.items()]
    path.write_text("\n".join(lines) + "\n")
    print(f"wrote {path} ({len(lines)} keys)")


def dit_reference(model, channels: int, per_token: bool, gen: torch.Generator) -> dict[str, np.ndarray]:
    """Velocity of Wan's DiT for latents [C, 2, 4, 6], a context of 7 tokens (padded to 512 by Wan).

    Timesteps are multiples of 1/8 of 1000 (exact in float32 as sorajax's t = timestep / 1000).
    """
    latents = torch.randn((channels, 2, 4, 6), generator=gen)
    context = torch.randn((7, DIT["text_dim"]), generator=gen)
    tokens = 2 * 2 * 3
    if per_token:  # Wan2.2 TI2V: the first frame's tokens clean (t = 0)
        t = torch.full((1, tokens), 625.0)
        t[:, : tokens // 2] = 0.0
    else:
        t = torch.tensor([750.0])
    with torch.no_grad():
        [out] = model([latents], t=t, context=[context], seq_len=tokens)
    return {"dit_latents": latents.numpy(), "dit_context": context.numpy(),
            "dit_t": np.broadcast_to(t.numpy().reshape(-1), (tokens,)).astype(np.float32), "dit_out": out.numpy()}


def vae_reference(vae, wrapper_scale, clip, gen: torch.Generator) -> dict[str, np.ndarray]:
    """Wan's VAE as its wrapper runs it: encode -> normalised mean; decode (given latent) -> clamp(-1, 1)."""
    frames, height, width = clip
    t = torch.linspace(0, 1, frames)[:, None, None]
    y = torch.linspace(-1, 1, height)[None, :, None]
    x = torch.linspace(-1, 1, width)[None, None, :]
    base = torch.stack([torch.sin(3 * x + 2 * t + y), torch.cos(2 * y - t) * x, (x * y + t - 0.5)], 0)
    video = (0.7 * base + 0.2 * torch.randn((3, frames, height, width), generator=gen)).clamp(-1, 1)[None]
    with torch.no_grad():
        mean = vae.encode(video, wrapper_scale)
        latent = torch.randn(mean.shape, generator=gen)
        decoded = vae.decode(latent, wrapper_scale).clamp(-1, 1)
    print(f"  vae: latent {tuple(mean.shape)}, decoded clamped {float((decoded.abs() >= 1).float().mean()):.1%}")
    return {"vae_video": video[0].numpy(), "vae_mean": mean[0].numpy(), "vae_latent": latent[0].numpy(),
            "vae_decoded": decoded[0].numpy()}


def t5_reference(encoder, gen: torch.Generator) -> dict[str, np.ndarray]:
    ids = torch.randint(3, T5["vocab"], (2, 12), generator=gen)
    mask = torch.ones_like(ids)
    ids[0, 7], ids[0, 8:], mask[0, 8:] = 1, 0, 0  # </s> then padding, as Wan's tokenizer pads
    ids[1, -1] = 1
    with torch.no_grad():
        hidden = encoder(ids, mask)
    return {"t5_ids": ids.numpy().astype(np.int32), "t5_mask": mask.numpy().astype(np.int32),
            "t5_hidden": hidden.float().numpy()}


def build(name: str, spec: dict, modules: dict, out: Path) -> dict[str, np.ndarray]:
    model_mod, vae_mod, t5_mod = modules["model"], modules["vae"], modules["t5"]
    folder = out / f"{name}_original_tiny"
    shutil.rmtree(folder, ignore_errors=True)
    gen = torch.Generator().manual_seed(spec["seed"])
    torch.manual_seed(spec["seed"])
    ref: dict[str, np.ndarray] = {}

    dit = model_mod.WanModel(model_type=spec["model_type"], in_dim=spec["channels"], out_dim=spec["channels"],
                             **DIT).eval()
    randomise(dit, spec["seed"] + 10)
    kwargs = {"max_shard_size": spec["shards"]} if spec["shards"] else {}
    dit.save_pretrained(str(folder), safe_serialization=True, **kwargs)
    ref.update(dit_reference(dit, spec["channels"], spec["model_type"] == "ti2v", gen))

    vae = vae_mod.WanVAE_(**spec["vae_args"]).eval()
    randomise(vae, spec["seed"] + 20)
    torch.save(vae.state_dict(), folder / spec["vae"])
    wrapper = vae_mod.Wan2_2_VAE if name == "wan22_ti2v" else vae_mod.WanVAE
    mean, std = wrapper_stats(wrapper)
    ref.update(vae_reference(vae, [mean, 1.0 / std], spec["clip"], gen))

    t5 = t5_mod.T5Encoder(**T5).eval()
    randomise(t5, spec["seed"] + 30)
    t5 = t5.to(torch.bfloat16)
    torch.save(t5.state_dict(), folder / T5_NAME)
    ref.update(t5_reference(t5.float(), gen))  # the stored bf16 values, computed in float32

    tokenizer = folder / "google" / "umt5-xxl"
    tokenizer.mkdir(parents=True)
    for file in spec["tokenizer"]:
        shutil.copy(TOKENIZER / file, tokenizer / file)
    sizes = {p.name: p.stat().st_size for p in sorted(folder.rglob("*")) if p.is_file()}
    print(f"{name}: {sum(sizes.values())} bytes", sizes)
    return {f"{name}/{k}": v for k, v in ref.items()}


def wrapper_stats(wrapper) -> tuple[torch.Tensor, torch.Tensor]:
    """The latent mean / std a Wan VAE wrapper hard-codes, read without loading its checkpoint."""
    holder = types.SimpleNamespace()
    try:
        wrapper.__init__(holder, vae_pth=None, device="cpu")
    except Exception:  # stops at loading the (absent) checkpoint, after setting mean and std / scale
        pass
    mean = holder.mean if hasattr(holder, "mean") else holder.scale[0]
    std = holder.std if hasattr(holder, "std") else 1.0 / holder.scale[1]
    return mean.float(), std.float()


def full_size_keys(modules21: dict, modules22: dict, out: Path) -> None:
    with torch.device("meta"):
        dit = modules21["model"].WanModel(model_type="t2v", dim=1536, ffn_dim=8960, num_heads=12, num_layers=30)
        vae21 = modules21["vae"].WanVAE_(dim=96, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=2,
                                         temperal_downsample=[False, True, True])
        vae22 = modules22["vae"].WanVAE_(dim=160, dec_dim=256, z_dim=48, dim_mult=[1, 2, 4, 4], num_res_blocks=2,
                                         temperal_downsample=[False, True, True])
        t5 = modules21["t5"].umt5_xxl(encoder_only=True, device="meta")
    write_keys(out / "wan_original_dit_1.3b_keys.txt", dit.state_dict())
    write_keys(out / "wan_original_vae21_keys.txt", vae21.state_dict())
    write_keys(out / "wan_original_vae22_keys.txt", vae22.state_dict())
    write_keys(out / "wan_original_umt5_xxl_keys.txt", t5.state_dict())


def write_views(path: Path) -> None:
    """A state dict whose tensors are views (offsets, transposes, a shared storage) in four dtypes, for the reader."""
    base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
    half = base.to(torch.bfloat16)
    state = {"f32": base, "bf16_transposed": half.t(), "bf16_rows": half[1:3], "f16_window": base.half()[1:, 2:5],
             "i64": torch.arange(5), "empty": torch.zeros(0, 3)}
    torch.save(state, path)
    print(f"wrote {path} ({path.stat().st_size} bytes)")


def load_modules(repo: Path, alias: str, vae: str) -> dict:
    wan_package(repo, alias)
    current_device = torch.cuda.current_device
    torch.cuda.current_device = lambda: "cpu"  # t5.py evaluates it in a default argument at import
    try:
        modules = {"model": importlib.import_module(f"{alias}.model"),
                   "vae": importlib.import_module(f"{alias}.{vae}"), "t5": importlib.import_module(f"{alias}.t5")}
    finally:
        torch.cuda.current_device = current_device
    modules["model"].flash_attention = sdpa_attention
    return modules


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--wan21", type=Path, required=True, help="a checkout of Wan-Video/Wan2.1")
    parser.add_argument("--wan22", type=Path, required=True, help="a checkout of Wan-Video/Wan2.2")
    parser.add_argument("--out", type=Path, default=FIXTURES)
    args = parser.parse_args()
    modules21 = load_modules(args.wan21, "wan21_modules", "vae")
    modules22 = load_modules(args.wan22, "wan22_modules", "vae2_2")
    modules22["t5"] = modules21["t5"]  # the same file in both releases
    reference = {}
    reference.update(build("wan21_t2v", MODELS["wan21_t2v"], modules21, args.out))
    reference.update(build("wan22_ti2v", MODELS["wan22_ti2v"], modules22, args.out))
    np.savez_compressed(args.out / "wan_original_reference.npz", **reference)
    print(f"wrote {args.out / 'wan_original_reference.npz'}: {sorted(reference)}")
    full_size_keys(modules21, modules22, args.out)
    write_views(args.out / "torch_pickle_views.pth")


if __name__ == "__main__":
    main()
