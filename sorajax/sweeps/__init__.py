"""Config sweeps: a sweep file's members (`grid`, `zipped`) and running them (`python -m sorajax.sweep`)."""

from sorajax.sweeps.members import grid, zipped

__all__ = ["grid", "zipped"]
