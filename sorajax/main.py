"""The main job: train the tiny default on the built-in world, write samples and the probe report.

    python -m sorajax.main [--workdir=runs/main]

1. the causal video autoencoder (configs/vae_tiny.py) -> <workdir>/vae, with held-out
   reconstructions in <workdir>/samples/vae/;
2. the text-to-video DiT on its latents (configs/dit_tiny.py) -> <workdir>/dit;
3. samples from that one checkpoint at three aspect ratios and as a single-frame image
   (<workdir>/samples/*.mp4, *.png, contact_sheet.png, and all of them playing in samples.gif), the
   training curves (curves.png) and the world-probe report (probe_report.json, probe.png).
Every stage resumes from its checkpoints when re-run.
"""

import dataclasses
from typing import Any

import jax
from absl import app, flags

from sorajax import cli
from sorajax.config_loading import bundled_config
from sorajax.eval.contact_sheet import contact_sheet
from sorajax.eval.figures import probe_bars, training_curves, write_video_grid
from sorajax.eval.probe_prompts import probe_prompt_set
from sorajax.eval.probe_report import format_report, run_probe_report
from sorajax.eval.vae_eval import make_reconstruct
from sorajax.eval.vae_samples import write_reconstruction_samples
from sorajax.logging_setup import quiet_library_logs
from sorajax.pipeline import Pipeline
from sorajax.runs.loaders import load_autoencoder
from sorajax.runs.paths import PathLike, run_path
from sorajax.runs.writer_lock import hold_run
from sorajax.train.dit_trainer import DiTRunConfig, train_dit
from sorajax.train.vae_trainer import VAERunConfig, train_vae
from sorajax.video_io import write_image, write_video

_VAE_CONFIG = cli.define_config("vae_config", bundled_config("vae_tiny.py"), "autoencoder config[:variant]")
_DIT_CONFIG = cli.define_config("dit_config", bundled_config("dit_tiny.py"), "DiT config[:variant]")
_WORKDIR = flags.DEFINE_string("workdir", "runs/main", "where checkpoints, metrics and samples go (local or gs://)")
_PROBE_PROMPTS = flags.DEFINE_integer("probe_prompts", 48, "prompts in the probe report (0 skips it)")

# (frames, height, width): square, landscape, portrait video, and an image.
SAMPLE_SIZES = ((9, 64, 64), (9, 48, 80), (9, 80, 48), (1, 64, 64))


def write_text_to_video_samples(pipeline: Pipeline, out_dir: PathLike, fps: float = 8.0) -> list[str]:
    """Three probe-style prompts at every SAMPLE_SIZES entry, from one checkpoint."""
    out_dir = run_path(out_dir)
    prompts = [p.text for p in probe_prompt_set(3, seed=1, num_frames=9)]
    written, clips = [], []
    for frames, height, width in SAMPLE_SIZES:
        videos = pipeline.generate(prompts, frames=frames, height=height, width=width, seed=0)
        for i, video in enumerate(videos):
            stem = out_dir / f"prompt{i}_{frames}x{height}x{width}"
            path = write_image(f"{stem}.png", video[0]) if frames == 1 else write_video(f"{stem}.mp4", video, fps)
            written.append(str(path))
        clips += videos
    written.append(str(write_image(out_dir / "contact_sheet.png", contact_sheet(clips))))
    written.append(str(write_video_grid(out_dir / "samples.gif", clips, columns=len(prompts), fps=fps)))
    (out_dir / "prompts.txt").write_text("\n".join(f"prompt{i}: {p}" for i, p in enumerate(prompts)) + "\n")
    return written


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    quiet_library_logs()
    workdir = run_path(_WORKDIR.value)
    vae_config, dit_config = cli.config_value(_VAE_CONFIG), cli.config_value(_DIT_CONFIG)
    dit_config.vae_workdir = str(workdir / "vae")
    vae_run = VAERunConfig.from_config(vae_config)  # both configs checked before any training
    DiTRunConfig.from_config(dit_config)
    with hold_run(workdir):  # one main job per workdir (each trainer also holds its own run)
        _train_and_sample(vae_config, dit_config, vae_run, workdir)


def _train_and_sample(vae_config: Any, dit_config: Any, vae_run: VAERunConfig, workdir: Any) -> None:
    vae_dir, dit_dir, samples_dir = (workdir / d for d in ("vae", "dit", "samples"))
    print(f"[1/3] training the video autoencoder in {vae_dir}")
    vae_metrics = train_vae(vae_config, vae_dir)
    trained = load_autoencoder(vae_dir)
    write_reconstruction_samples(jax.jit(make_reconstruct(trained.vae)), trained.variables, list(vae_run.eval.sizes),
                                 vae_run.seed, vae_run.world, samples_dir / "vae")

    print(f"[2/3] training the text-to-video DiT in {dit_dir}")
    train_dit(dit_config, dit_dir)

    print(f"[3/3] sampling from {dit_dir}")
    pipeline = Pipeline.from_run(dit_dir)
    written = write_text_to_video_samples(pipeline, samples_dir)
    written.append(str(training_curves(samples_dir / "curves.png", vae_dir, dit_dir)))
    print(f"autoencoder held-out PSNR {vae_metrics.get('psnr', float('nan')):.2f} dB, "
          f"SSIM {vae_metrics.get('ssim', float('nan')):.3f}")
    print("samples:\n  " + "\n  ".join(written))
    if _PROBE_PROMPTS.value > 0:
        request = dataclasses.replace(pipeline.defaults, seed=1234)
        report = run_probe_report(pipeline, _PROBE_PROMPTS.value, 9, request, out_dir=samples_dir)
        print(format_report(report))
        print(f"probe bars: {probe_bars(samples_dir / 'probe.png', {'main job': report})}")


if __name__ == "__main__":
    cli.run(main)
