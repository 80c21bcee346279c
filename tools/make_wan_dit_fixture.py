"""Write the Wan transformer parity fixtures from the REFERENCE implementation (diffusers).

Why: sorajax's DiT with a Wan preset claims to compute exactly what diffusers' `WanTransformer3DModel`
computes. The check needs PyTorch, which sorajax never depends on, so this script runs once, by hand,
in a separate environment, and its small outputs are committed; the tests need only numpy.

Writes:
- `tests/fixtures/wan_dit_tiny.npz`: a TINY random-weight Wan transformer (its config as JSON, every
  weight under its diffusers key as `w/<key>`), inputs and reference outputs for (a) one shared t,
  (b) per-token t with the first latent frame clean (t = 0, Wan2.2 TI2V's image-to-video), and
  (c) two samples of different sizes and caption lengths, each alone (the test packs them in one row).
- `tests/fixtures/wan_dit_<name>_keys.txt`: key and shape of every tensor of the full-size 1.3B,
  14B and 5B transformers, instantiated without weights (one `key<TAB>d0,d1,...` line each).

How to run (CPU PyTorch wheel, Python 3.11, outside the repository's environment):

    python3.11 -m venv /work/refenv
    /work/refenv/bin/pip install /opt/wheels/torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl \
        diffusers==0.42.1 transformers==5.24.0 accelerate safetensors
    /work/refenv/bin/python tools/make_wan_dit_fixture.py

Nothing is downloaded: the models are built from configs written here.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from accelerate import init_empty_weights
from diffusers import WanTransformer3DModel

FIXTURES = Path(__file__).resolve().parents[1] / "tests" / "fixtures"

TINY = dict(patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=16, in_channels=4, out_channels=4,
            text_dim=24, freq_dim=256, ffn_dim=72, num_layers=2, cross_attn_norm=True,
            qk_norm="rms_norm_across_heads", eps=1e-6, rope_max_seq_len=64)

# The released sizes (diffusers configs of Wan-AI/Wan2.1-T2V-1.3B-Diffusers, -14B-Diffusers, Wan2.2-TI2V-5B-Diffusers).
FULL = {
    "1.3b": dict(num_attention_heads=12, ffn_dim=8960, num_layers=30, in_channels=16, out_channels=16),
    "14b": dict(num_attention_heads=40, ffn_dim=13824, num_layers=40, in_channels=16, out_channels=16),
    "5b": dict(num_attention_heads=24, ffn_dim=14336, num_layers=30, in_channels=48, out_channels=48),
}


def run(model: WanTransformer3DModel, latents: np.ndarray, timestep: np.ndarray, text: np.ndarray) -> np.ndarray:
    """diffusers' forward on one sample: latents [C, F, H, W], timestep [] or [L], text [Lt, D]."""
    with torch.no_grad():
        out = model(torch.from_numpy(latents)[None], torch.from_numpy(np.asarray(timestep, np.float32))[None],
                    torch.from_numpy(text)[None], return_dict=False)[0]
    return out[0].numpy()


def caption(rng: np.random.Generator, length: int, kept: int, dim: int) -> np.ndarray:
    """Caption embeddings zero-padded after `kept` tokens, as Wan's pipeline feeds UMT5 output."""
    text = rng.normal(size=(length, dim)).astype(np.float32)
    text[kept:] = 0.0
    return text


def tiny_fixture(out: Path) -> None:
    torch.manual_seed(0)
    model = WanTransformer3DModel(**TINY).eval()
    # Random tables and a non-zero head so every parameter matters (the released ones are trained, not zero).
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    rng = np.random.default_rng(0)
    c, d = TINY["in_channels"], TINY["text_dim"]
    a = rng.normal(size=(c, 3, 4, 6)).astype(np.float32)  # [C, F, H, W]: 3 x 2 x 3 = 18 tokens
    b = rng.normal(size=(c, 2, 6, 4)).astype(np.float32)  # 2 x 3 x 2 = 12 tokens
    text_a, text_b = caption(rng, 10, 7, d), caption(rng, 6, 4, d)
    # Timesteps in scheduler units whose /1000 is exact in float32, so sorajax's t * 1000 is the same number.
    shared_t = np.float32(625.0)
    per_token = np.full(18, 750.0, np.float32)
    per_token[:6] = 0.0  # the first latent frame's tokens clean: image-to-video as Wan2.2 TI2V runs it
    arrays = {f"w/{k}": v.detach().numpy().astype(np.float32) for k, v in model.state_dict().items()}
    arrays.update(
        config=np.array(json.dumps(TINY)), latents_a=a, latents_b=b, text_a=text_a, text_b=text_b,
        shared_t=shared_t, per_token_t=per_token, t_b=np.float32(250.0),
        out_shared=run(model, a, shared_t, text_a), out_per_token=run(model, a, per_token, text_a),
        out_b=run(model, b, np.float32(250.0), text_b),
    )
    np.savez_compressed(out, **arrays)
    print(f"wrote {out} ({out.stat().st_size / 1024:.0f} KiB, {len(model.state_dict())} weights)")


def key_lists() -> None:
    for name, sizes in FULL.items():
        with init_empty_weights():
            model = WanTransformer3DModel(patch_size=(1, 2, 2), attention_head_dim=128, text_dim=4096, freq_dim=256,
                                          cross_attn_norm=True, qk_norm="rms_norm_across_heads", eps=1e-6, **sizes)
        path = FIXTURES / f"wan_dit_{name}_keys.txt"
        lines = [f"{k}\t{','.join(str(s) for s in v.shape)}" for k, v in model.state_dict().items()]
        path.write_text("\n".join(lines) + "\n")
        count = sum(int(np.prod(v.shape)) for v in model.state_dict().values())
        print(f"wrote {path}: {len(lines)} keys, {count / 1e9:.3f} B parameters")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=FIXTURES / "wan_dit_tiny.npz")
    args = parser.parse_args()
    tiny_fixture(args.out)
    key_lists()


if __name__ == "__main__":
    main()
