"""The main job: train the tiny default on the built-in world, write samples and the probe report.

    python -m sorajax.main [--workdir=runs/main]

1. the causal video autoencoder (configs/vae_tiny.py) -> <workdir>/vae, with held-out
   reconstructions in <workdir>/samples/vae/;
2. the text-to-video DiT on its latents (configs/dit_tiny.py) -> <workdir>/dit;
3. samples from that one checkpoint at three aspect ratios and as a single-frame image
   (<workdir>/samples/*.mp4, *.png, contact_sheet.png) and the world-probe report.
Every stage resumes from its checkpoints when re-run.
"""

import dataclasses
import os

import jax
from absl import app, flags
from ml_collections import config_flags

from sorajax.data.world import WorldOptions
from sorajax.eval.contact_sheet import contact_sheet
from sorajax.eval.probe_prompts import probe_prompt_set
from sorajax.eval.probe_report import format_report, run_probe_report
from sorajax.eval.vae_samples import write_reconstruction_samples
from sorajax.logging_setup import quiet_library_logs
from sorajax.models.vae_pretrained import load_trained_vae
from sorajax.pipeline import Pipeline
from sorajax.train.dit_loop import train_dit
from sorajax.train.vae_loop import train_vae
from sorajax.train.vae_step import make_reconstruct_step
from sorajax.video_io import write_image, write_video

_VAE_CONFIG = config_flags.DEFINE_config_file("vae_config", "configs/vae_tiny.py", "autoencoder config[:variant]")
_DIT_CONFIG = config_flags.DEFINE_config_file("dit_config", "configs/dit_tiny.py", "DiT config[:variant]")
_WORKDIR = flags.DEFINE_string("workdir", "runs/main", "where checkpoints, metrics and samples go")
_PROBE_PROMPTS = flags.DEFINE_integer("probe_prompts", 48, "prompts in the probe report (0 skips it)")

# (frames, height, width): square, landscape, portrait video, and an image.
SAMPLE_SIZES = ((9, 64, 64), (9, 48, 80), (9, 80, 48), (1, 64, 64))


def write_text_to_video_samples(pipeline: Pipeline, out_dir: str, fps: float = 8.0) -> list[str]:
    """Three probe-style prompts at every SAMPLE_SIZES entry, from one checkpoint."""
    prompts = [p.text for p in probe_prompt_set(3, seed=1, num_frames=9)]
    written, clips = [], []
    for frames, height, width in SAMPLE_SIZES:
        videos = pipeline.generate(prompts, frames=frames, height=height, width=width, seed=0)
        for i, video in enumerate(videos):
            stem = os.path.join(out_dir, f"prompt{i}_{frames}x{height}x{width}")
            path = write_image(stem + ".png", video[0]) if frames == 1 else write_video(stem + ".mp4", video, fps)
            written.append(str(path))
        clips += videos
    written.append(str(write_image(os.path.join(out_dir, "contact_sheet.png"), contact_sheet(clips))))
    with open(os.path.join(out_dir, "prompts.txt"), "w", encoding="utf-8") as f:
        f.write("\n".join(f"prompt{i}: {p}" for i, p in enumerate(prompts)) + "\n")
    return written


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    quiet_library_logs()
    workdir = _WORKDIR.value
    vae_dir, dit_dir, samples_dir = (os.path.join(workdir, d) for d in ("vae", "dit", "samples"))

    print(f"[1/3] training the video autoencoder in {vae_dir}")
    vae_metrics = train_vae(_VAE_CONFIG.value, vae_dir)
    trained = load_trained_vae(vae_dir)
    write_reconstruction_samples(
        jax.jit(make_reconstruct_step(trained.vae)), trained.variables, [tuple(s) for s in trained.config.eval.sizes],
        trained.config.seed, WorldOptions(**trained.config.world), os.path.join(samples_dir, "vae"),
    )

    print(f"[2/3] training the text-to-video DiT in {dit_dir}")
    dit_config = _DIT_CONFIG.value
    dit_config.vae_workdir = vae_dir
    train_dit(dit_config, dit_dir)

    print(f"[3/3] sampling from {dit_dir}")
    pipeline = Pipeline.from_run(dit_dir)
    written = write_text_to_video_samples(pipeline, samples_dir)
    print(f"autoencoder held-out PSNR {vae_metrics.get('psnr', float('nan')):.2f} dB, "
          f"SSIM {vae_metrics.get('ssim', float('nan')):.3f}")
    print("samples:\n  " + "\n  ".join(written))
    if _PROBE_PROMPTS.value > 0:
        request = dataclasses.replace(pipeline.defaults, seed=1234)
        report = run_probe_report(pipeline, _PROBE_PROMPTS.value, 9, request, out_dir=samples_dir)
        print(format_report(report))


if __name__ == "__main__":
    app.run(main)
