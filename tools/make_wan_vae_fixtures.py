"""Write the Wan VAE parity fixtures from the REFERENCE implementation (diffusers' AutoencoderKLWan).

Why: `sorajax.models.wan_vae` re-implements Wan's video autoencoder (versions 2.1 and 2.2) in Flax.
The convincing check is diffusers' PyTorch model run on the same weights; PyTorch is no dependency
of the project, so this script runs once, by hand, in the reference environment, and its small
outputs are committed. The tests then need only numpy and safetensors.

Outputs (tests/fixtures/):
  * wan_vae21_tiny.npz / wan_vae22_tiny.npz: a TINY random-weight config (as JSON), its weights under
    their diffusers keys (prefix ``w:``), an input clip, diffusers' latent mean and log-variance of it,
    a latent and diffusers' decoded video of it (float32, diffusers' own chunking: encoder 1 then 4
    frames, decoder one latent frame at a time).
  * wan_vae21_keys.txt / wan_vae22_keys.txt: every key and shape of the FULL-size models, built on
    the meta device (no weights), one ``key<TAB>d0,d1,...`` line each, for key-coverage tests.

Run (nothing is downloaded):

    /work/refenv/bin/python tools/make_wan_vae_fixtures.py
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from accelerate import init_empty_weights
from diffusers import AutoencoderKLWan

OUT = Path(__file__).resolve().parents[1] / "tests" / "fixtures"

# The Wan2.2-TI2V-5B vae/config.json values (the 2.1 ones are AutoencoderKLWan's defaults).
WAN22_FULL = {
    "base_dim": 160, "decoder_base_dim": 256, "z_dim": 48, "is_residual": True, "patch_size": 2, "in_channels": 12,
    "out_channels": 12, "scale_factor_spatial": 16, "scale_factor_temporal": 4,
}

TINY = {
    # 2.1 layout at tiny width: the decoder's channel halving at every upsample is exercised.
    "wan_vae21": {
        "base_dim": 4, "z_dim": 4, "dim_mult": [1, 2, 4, 4], "num_res_blocks": 2,
        "temperal_downsample": [False, True, True],
        "latents_mean": [0.1, -0.2, 0.3, -0.4], "latents_std": [1.5, 0.5, 2.0, 0.8],
    },
    # 2.2 layout: patchify, residual levels, a decoder wider than the encoder.
    "wan_vae22": {
        "base_dim": 4, "decoder_base_dim": 6, "z_dim": 6, "dim_mult": [1, 2, 4, 4], "num_res_blocks": 1,
        "temperal_downsample": [False, True, True], "is_residual": True, "patch_size": 2,
        "in_channels": 12, "out_channels": 12, "scale_factor_spatial": 16,
        "latents_mean": [0.1, -0.2, 0.3, -0.4, 0.05, 0.0], "latents_std": [1.5, 0.5, 2.0, 0.8, 1.0, 1.2],
    },
}
CLIP = {"wan_vae21": (9, 32, 32), "wan_vae22": (9, 32, 32)}  # frames, height, width


def randomise(model: torch.nn.Module, seed: int) -> None:
    """Weights with visible structure: every norm scale and bias random too, so a mis-mapped key shows."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("gamma"):
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=gen))
            elif name.endswith("bias"):
                p.copy_(0.1 * torch.randn(p.shape, generator=gen))
            else:
                fan_in = int(np.prod(p.shape[1:]))
                p.copy_(torch.randn(p.shape, generator=gen) / np.sqrt(fan_in))
            # Stored as float16 to keep the fixture small; the model runs on exactly these values.
            p.copy_(p.half().float())


def tiny_fixture(name: str, seed: int) -> dict[str, np.ndarray]:
    config = TINY[name]
    model = AutoencoderKLWan(**config).eval()
    randomise(model, seed)
    frames, height, width = CLIP[name]
    gen = torch.Generator().manual_seed(seed + 1)
    # A smooth clip plus noise, in [-1, 1]: torch layout [B, C, T, H, W].
    t = torch.linspace(0, 1, frames)[:, None, None]
    y = torch.linspace(-1, 1, height)[None, :, None]
    x = torch.linspace(-1, 1, width)[None, None, :]
    base = torch.stack([torch.sin(3 * x + 2 * t + y), torch.cos(2 * y - t) * x, (x * y + t - 0.5)], 0)
    video = (0.7 * base + 0.2 * torch.randn((3, frames, height, width), generator=gen)).clamp(-1, 1)[None]
    with torch.no_grad():
        posterior = model.encode(video).latent_dist
        latent = torch.randn(posterior.mean.shape, generator=gen)
        decoded = model.decode(latent).sample
    out = {
        "config": np.array(json.dumps({"_class_name": "AutoencoderKLWan", **config})),
        # sorajax's layout: channels last, [B, T, H, W, C]
        "video": video.permute(0, 2, 3, 4, 1).numpy(),
        "mean": posterior.mean.permute(0, 2, 3, 4, 1).numpy(),
        "logvar": posterior.logvar.permute(0, 2, 3, 4, 1).numpy(),
        "latent": latent.permute(0, 2, 3, 4, 1).numpy(),
        "decoded": decoded.permute(0, 2, 3, 4, 1).numpy(),
    }
    clipped = float((decoded.abs() >= 1).float().mean())
    print(f"{name}: mean std {posterior.mean.std():.3f}, decoded std {decoded.std():.3f}, clamped {clipped:.1%}")
    for key, tensor in model.state_dict().items():
        out[f"w:{key}"] = tensor.numpy().astype(np.float16)
    return out


def write_keys(path: Path, model: torch.nn.Module) -> None:
    lines = [f"{k}\t{','.join(str(d) for d in v.shape)}" for k, v in model.state_dict().items()]
    path.write_text("\n".join(lines) + "\n")
    print(f"wrote {path} ({len(lines)} keys)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    for seed, name in enumerate(TINY):
        path = args.out / f"{name}_tiny.npz"
        np.savez_compressed(path, **tiny_fixture(name, seed * 10))
        print(f"wrote {path} ({path.stat().st_size} bytes)")
    with init_empty_weights():
        write_keys(args.out / "wan_vae21_keys.txt", AutoencoderKLWan())
        write_keys(args.out / "wan_vae22_keys.txt", AutoencoderKLWan(**WAN22_FULL))


if __name__ == "__main__":
    main()
