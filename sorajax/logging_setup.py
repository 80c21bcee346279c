"""Console hygiene for the command lines: progress bars and our own prints, not library chatter.

Orbax and absl log every checkpoint phase at INFO; under `absl.app` that floods
the terminal and hides the tqdm bar. Warnings and errors still get through.
"""

import logging

from absl import logging as absl_logging


def quiet_library_logs() -> None:
    absl_logging.set_verbosity(absl_logging.WARNING)
    for name in ("absl", "orbax", "jax._src.xla_bridge", "tensorflow_datasets"):
        logging.getLogger(name).setLevel(logging.WARNING)
