"""How much of the probe score can an autoencoder keep? Probe ground truth vs its reconstructions.

For the fixed probe prompt set, every prompt has a real world clip (`ProbePrompt.reference_clip`).
Probing those clips gives the probe's own ceiling; probing their encode -> decode round trip gives
the ceiling a DiT on that autoencoder's latents could reach, however good the DiT.

    python experiments/probe_ceiling.py --vae=runs/main/vae --num_prompts=48
"""

from __future__ import annotations

import functools

import jax
import numpy as np
from absl import app, flags

from sorajax.eval.probe_prompts import probe_prompt_set
from sorajax.eval.probes import agreement_rates, probe_video
from sorajax.logging_setup import quiet_library_logs
from sorajax.runs.loaders import load_autoencoder
from sorajax.video_io import to_uint8

_VAE = flags.DEFINE_string("vae", "runs/main/vae", "autoencoder run directory")
_NUM = flags.DEFINE_integer("num_prompts", 48, "prompts from the fixed probe set")
_FRAMES = flags.DEFINE_integer("frames", 9, "frames per clip (1 + 4k); 1 probes each clip's first frame as an image")


def _summary(name: str, rates: dict) -> str:
    keys = ("found", "colour", "shape", "direction", "in_frame")
    return f"{name:>15}: " + "  ".join(f"{k} {100 * rates[k]:5.1f}%" for k in keys)


def main(argv: list[str]) -> None:
    del argv
    quiet_library_logs()
    trained = load_autoencoder(_VAE.value)
    round_trip = jax.jit(functools.partial(trained.vae.apply, method="__call__", sample_posterior=False))
    image_only = _FRAMES.value == 1
    prompts = probe_prompt_set(_NUM.value, num_frames=9 if image_only else _FRAMES.value)
    truth, recon, psnrs = [], [], []
    for p in prompts:
        video = p.reference_clip().video[:1] if image_only else p.reference_clip().video
        frames = video.astype(np.float32) / 127.5 - 1.0
        decoded = np.clip(np.asarray(round_trip(trained.variables, frames[None])[0])[0], -1, 1)
        psnrs.append(10 * np.log10(4.0 / max(float(np.mean((decoded - frames) ** 2)), 1e-12)))
        truth.append(probe_video(video, p.expectation))
        recon.append(probe_video(to_uint8(decoded), p.expectation))
    print(f"{len(prompts)} probe prompts, autoencoder {_VAE.value} (step {trained.step}), "
          f"round-trip PSNR {np.mean(psnrs):.2f} dB")
    print(_summary("ground truth", agreement_rates(truth)))
    print(_summary("reconstruction", agreement_rates(recon)))


if __name__ == "__main__":
    app.run(main)
