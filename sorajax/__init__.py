"""sorajax: video generation as in the Sora report, in JAX/Flax."""

__version__ = "0.1.0"
