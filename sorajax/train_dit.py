"""Train the text-to-video diffusion transformer (on the built-in world, or your videos with configs/dit_tfds.py).

    python -m sorajax.train_dit --config=configs/dit_tiny.py --config.vae_workdir=runs/main/vae --workdir=runs/main/dit

Needs a trained autoencoder (python -m sorajax.train_vae). Re-running resumes from the newest checkpoint.
"""

from absl import app, flags

from sorajax import cli
from sorajax.config_loading import bundled_config
from sorajax.logging_setup import quiet_library_logs
from sorajax.train.dit_trainer import train_dit

_CONFIG = cli.define_config("config", bundled_config("dit_tiny.py"), "DiT config file[:variant]")
_WORKDIR = flags.DEFINE_string("workdir", "runs/main/dit", "run directory (local or gs://): checkpoints, metrics, "
                               "latent cache")


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    quiet_library_logs()
    train_dit(cli.config_value(_CONFIG), _WORKDIR.value)


if __name__ == "__main__":
    cli.run(main)
