"""sorajax: video generation as in the Sora report, in JAX/Flax."""

from sorajax.host_memory import reexec_command_with_tunables

__version__ = "0.1.0"

# `python -m sorajax.<command>` starts again, once, with malloc tuned for XLA:CPU (sorajax.host_memory says
# why); importing sorajax as a library changes nothing.
reexec_command_with_tunables()
