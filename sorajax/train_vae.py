"""Train the causal video autoencoder on the built-in world.

    python -m sorajax.train_vae --config=configs/vae_tiny.py --workdir=runs/vae_tiny
    python -m sorajax.train_vae --config=configs/vae_tiny.py --config.train.steps=3000 --workdir=...

Re-running the same command resumes from the newest checkpoint in --workdir.
"""

from absl import app, flags

from sorajax import cli
from sorajax.config_loading import bundled_config
from sorajax.logging_setup import quiet_library_logs
from sorajax.train.vae_trainer import train_vae

_CONFIG = cli.define_config("config", bundled_config("vae_tiny.py"), "autoencoder config file[:variant]")
_WORKDIR = flags.DEFINE_string("workdir", "runs/vae_tiny", "run directory (local or gs://): checkpoints, metrics")


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    quiet_library_logs()
    train_vae(cli.config_value(_CONFIG), _WORKDIR.value)


if __name__ == "__main__":
    cli.run(main)
