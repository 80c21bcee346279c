"""Print held-out PSNR/SSIM of a trained autoencoder on built-in-world clips.

    python -m sorajax.eval_vae --workdir=runs/vae_tiny [--num_batches=8]
"""

import jax
from absl import app, flags

from sorajax import cli
from sorajax.eval.vae_eval import evaluate_reconstruction, make_scores
from sorajax.logging_setup import quiet_library_logs
from sorajax.runs.loaders import load_autoencoder
from sorajax.train.vae_trainer import VAERunConfig, held_out_batches

_WORKDIR = flags.DEFINE_string("workdir", "runs/vae_tiny", "run directory of sorajax.train_vae")
_NUM_BATCHES = flags.DEFINE_integer("num_batches", None, "held-out batches per size (default: the run's eval.num_batches)",
                                    lower_bound=1)


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    quiet_library_logs()
    trained = load_autoencoder(_WORKDIR.value)
    cfg = VAERunConfig.from_config(trained.config)
    count = cfg.eval.num_batches if _NUM_BATCHES.value is None else _NUM_BATCHES.value
    batches = held_out_batches(cfg, count)
    metrics = evaluate_reconstruction(jax.jit(make_scores(trained.vae)), trained.variables, batches)
    print(f"autoencoder at step {trained.step}, {int(metrics.pop('num_clips'))} held-out clips")
    for name, value in metrics.items():
        print(f"  {name:24s} {value:8.3f}")


if __name__ == "__main__":
    cli.run(main)
