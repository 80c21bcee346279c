"""Write whole tiny Wan pipelines in diffusers' format, and diffusers' own full sampling loops on them.

Why: a converted Wan checkpoint sampled by sorajax must give what diffusers' `WanPipeline` (text to
video, Wan2.1) and its TI2V path (`WanImageToVideoPipeline` with `expand_timesteps`, Wan2.2-TI2V-5B's
image to video) give from the same initial noise. That check needs PyTorch, which sorajax never
depends on, so this script runs once, by hand, in a separate environment, and its small outputs
are committed; the tests need only numpy.

Writes:
- `tests/fixtures/wan21_t2v_tiny/` and `tests/fixtures/wan22_ti2v_tiny/`: folders exactly as
  `save_pretrained` writes them (model_index.json, transformer/ in 3 shards with its index json, vae/,
  text_encoder/, tokenizer/, scheduler/), with tiny random weights: the transformer of
  `make_wan_dit_fixture.py`'s shape, the VAEs of `make_wan_vae_fixtures.py`, the UMT5 of `umt5_tiny/`.
- `tests/fixtures/wan_pipeline_reference.npz`: per pipeline, the settings, the initial noise, the final
  latents (output_type='latent') and the decoded video (output_type='np', floats in [0, 1]); for TI2V
  also the input image.

How to run (see make_wan_dit_fixture.py for the environment):

    /work/refenv/bin/python tools/make_wan_pipeline_fixtures.py
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import PIL.Image
import torch
from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanImageToVideoPipeline, WanPipeline, WanTransformer3DModel
from transformers import AutoTokenizer, UMT5EncoderModel

FIXTURES = Path(__file__).resolve().parents[1] / "tests" / "fixtures"
sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_wan_vae_fixtures import TINY as TINY_VAE  # noqa: E402
from make_wan_vae_fixtures import randomise  # noqa: E402

PROMPT = "a red ball rolls to the left"
NEGATIVE = "blurry, static, low quality"
SHIFT = 3.0  # the scheduler's flow_shift
SETTINGS = {
    "wan21_t2v": dict(vae="wan_vae21", frames=9, height=48, width=64, steps=4, guidance=5.0, seed=1),
    "wan22_ti2v": dict(vae="wan_vae22", frames=9, height=64, width=96, steps=4, guidance=5.0, seed=2),
}


def transformer(channels: int, text_dim: int, seed: int) -> WanTransformer3DModel:
    torch.manual_seed(seed)
    model = WanTransformer3DModel(patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=16,
                                  in_channels=channels, out_channels=channels, text_dim=text_dim, freq_dim=256,
                                  ffn_dim=72, num_layers=2, cross_attn_norm=True, qk_norm="rms_norm_across_heads",
                                  eps=1e-6, rope_max_seq_len=64).eval()
    with torch.no_grad():  # every norm scale and modulation table random too, so a mis-mapped key shows
        gen = torch.Generator().manual_seed(seed + 100)
        for name, p in model.named_parameters():
            scale = 0.3 if ("norm" in name or "scale_shift" in name or name.endswith("bias")) else 1.0 / np.sqrt(
                max(int(np.prod(p.shape[1:])), 1))
            base = 1.0 if ("norm" in name and name.endswith("weight")) else 0.0
            p.copy_((base + scale * torch.randn(p.shape, generator=gen)).half().float())
    return model


def scheduler() -> UniPCMultistepScheduler:
    # As Wan's diffusers configs set it up for flow matching.
    return UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, num_train_timesteps=1000,
                                   flow_shift=SHIFT)


def build(name: str) -> tuple[object, dict]:
    s = SETTINGS[name]
    text_encoder = UMT5EncoderModel.from_pretrained(str(FIXTURES / "umt5_tiny")).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(FIXTURES / "umt5_tiny"))
    vae = AutoencoderKLWan(**TINY_VAE[s["vae"]]).eval()
    randomise(vae, seed=s["seed"] + 10)
    dit = transformer(vae.config.z_dim, text_encoder.config.d_model, s["seed"] + 20)
    if name == "wan21_t2v":
        pipe = WanPipeline(tokenizer=tokenizer, text_encoder=text_encoder, vae=vae, transformer=dit,
                           scheduler=scheduler())
    else:
        pipe = WanImageToVideoPipeline(tokenizer=tokenizer, text_encoder=text_encoder, vae=vae, transformer=dit,
                                       scheduler=scheduler(), expand_timesteps=True)
    return pipe, s


def run(pipe, s: dict, noise: np.ndarray, output_type: str, image: np.ndarray | None) -> np.ndarray:
    kwargs = dict(prompt=PROMPT, negative_prompt=NEGATIVE, height=s["height"], width=s["width"],
                  num_frames=s["frames"], num_inference_steps=s["steps"], guidance_scale=s["guidance"],
                  latents=torch.from_numpy(noise), output_type=output_type)
    if image is not None:
        kwargs["image"] = PIL.Image.fromarray(image)
    with torch.no_grad():
        out = pipe(**kwargs).frames
    return np.asarray(out[0] if output_type == "np" else out[0].numpy(), np.float32)


def main() -> None:
    arrays: dict[str, np.ndarray] = {}
    for name in SETTINGS:
        pipe, s = build(name)
        folder = FIXTURES / f"{name}_tiny"
        shutil.rmtree(folder, ignore_errors=True)
        pipe.save_pretrained(str(folder), safe_serialization=True)
        shutil.rmtree(folder / "transformer")
        pipe.transformer.save_pretrained(str(folder / "transformer"), safe_serialization=True, max_shard_size="60KB")
        z = pipe.vae.config.z_dim
        latent_frames = (s["frames"] - 1) // 4 + 1
        space = pipe.vae_scale_factor_spatial
        rng = np.random.default_rng(s["seed"])
        noise = rng.normal(size=(1, z, latent_frames, s["height"] // space, s["width"] // space)).astype(np.float32)
        image = None
        if name == "wan22_ti2v":
            yy, xx = np.mgrid[0 : s["height"], 0 : s["width"]]
            image = np.stack([(xx * 255 // s["width"]), (yy * 255 // s["height"]), (xx + yy) % 256], -1).astype(np.uint8)
            arrays[f"{name}/image"] = image
        arrays[f"{name}/noise"] = noise
        arrays[f"{name}/latents"] = run(pipe, s, noise, "latent", image)
        arrays[f"{name}/video"] = run(pipe, s, noise, "np", image)
        arrays[f"{name}/settings"] = np.array(json.dumps({**s, "prompt": PROMPT, "negative_prompt": NEGATIVE,
                                                          "shift": SHIFT, "solver": "unipc"}))
        print(name, {k: v.shape for k, v in arrays.items() if k.startswith(name)},
              sorted(p.name for p in (folder / "transformer").iterdir()))
    np.savez_compressed(FIXTURES / "wan_pipeline_reference.npz", **arrays)


if __name__ == "__main__":
    main()
