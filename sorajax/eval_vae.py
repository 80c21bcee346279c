"""Print held-out PSNR/SSIM of a trained autoencoder on built-in-world clips.

    python -m sorajax.eval_vae --workdir=runs/vae_tiny [--num_batches=8]
"""

import jax
from absl import app, flags

from sorajax.logging_setup import quiet_library_logs
from sorajax.eval.vae_eval import evaluate_reconstruction
from sorajax.models.vae_pretrained import load_trained_vae
from sorajax.train.vae_loop import heldout_batches
from sorajax.train.vae_step import make_reconstruct_step

_WORKDIR = flags.DEFINE_string("workdir", "runs/vae_tiny", "run directory of sorajax.train_vae")
_NUM_BATCHES = flags.DEFINE_integer("num_batches", None, "held-out batches (default: the run's eval.num_batches)")


def main(argv: list[str]) -> None:
    del argv
    quiet_library_logs()
    trained = load_trained_vae(_WORKDIR.value)
    config = trained.config
    if _NUM_BATCHES.value is not None:
        config.eval.num_batches = _NUM_BATCHES.value
    reconstruct = jax.jit(make_reconstruct_step(trained.vae))
    metrics = evaluate_reconstruction(reconstruct, trained.variables, heldout_batches(config))
    print(f"autoencoder at step {trained.step}, {int(metrics.pop('num_clips'))} held-out clips")
    for name, value in metrics.items():
        print(f"  {name:24s} {value:8.3f}")


if __name__ == "__main__":
    app.run(main)
