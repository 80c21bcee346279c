"""Run directories: where a run's checkpoints, config records, metrics, caches and samples live.

The low layer every trainer, loader and tool shares (see docs/design.md for the layout of a run
directory). Inference loaders here restore only what sampling needs (a DiT's EMA weights, an
autoencoder's weights and latent statistics), never an optimizer state.
"""
