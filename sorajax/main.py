"""The main job: train the tiny default on the built-in world and write sample videos.

    python -m sorajax.main [--workdir=runs/main]

Stage 1 trains the causal video autoencoder (configs/vae_tiny.py) and writes
held-out world clips beside their reconstructions, plus a contact sheet, to
<workdir>/samples/. Every stage resumes from its checkpoints when re-run.
"""

import os

import jax
from absl import app, flags
from ml_collections import config_flags

from sorajax.data.world import WorldOptions
from sorajax.eval.vae_samples import write_reconstruction_samples
from sorajax.logging_setup import quiet_library_logs
from sorajax.models.vae_pretrained import load_trained_vae
from sorajax.train.vae_loop import train_vae
from sorajax.train.vae_step import make_reconstruct_step

_VAE_CONFIG = config_flags.DEFINE_config_file("vae_config", "configs/vae_tiny.py", "autoencoder config[:variant]")
_WORKDIR = flags.DEFINE_string("workdir", "runs/main", "where checkpoints, metrics and samples go")


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    quiet_library_logs()
    workdir = _WORKDIR.value
    vae_dir = os.path.join(workdir, "vae")
    print(f"[1/1] training the video autoencoder in {vae_dir}")
    metrics = train_vae(_VAE_CONFIG.value, vae_dir)

    trained = load_trained_vae(vae_dir)
    sizes = [tuple(s) for s in trained.config.eval.sizes]
    samples = write_reconstruction_samples(
        jax.jit(make_reconstruct_step(trained.vae)), trained.variables, sizes, trained.config.seed,
        WorldOptions(**trained.config.world), os.path.join(workdir, "samples"),
    )
    print(f"held-out PSNR {metrics.get('psnr', float('nan')):.2f} dB, SSIM {metrics.get('ssim', float('nan')):.3f}")
    print("samples:\n  " + "\n  ".join(samples))


if __name__ == "__main__":
    app.run(main)
