"""DiT configurations for accelerator slices: sizes, meshes and memory options, for AOT compiles and pods.

    python -m sorajax.aot_compile --config=configs/dit_scale.py:VARIANT --topology=v5p:4x4x4

Variants (`--config=configs/dit_scale.py:VARIANT`):
  tiny8       tiny model on 8 devices (fake CPU devices in tests): data=2 fsdp=2 sequence=2
  S_256       S model, 16 rows of 4096 tokens (2.7 s of 256x256 video each), FSDP
  XL_720p     XL, 8 rows of a 10-second 720p clip (216,000 tokens, rows padded to 221,184), FSDP + Ulysses
              sequence 8, splash
  XL_1080p_60s  XL, one-minute 1080p clips: 360 x 68 x 120 = 2,937,600 tokens per row
              (24 fps -> 1440 frames -> 360 latent frames with a 4x8x8 autoencoder, 1x2x2 patches;
              rows padded to 2,949,120 = 2^16 x 45, which splash's blocks and chunks divide),
              Ulysses sequence parallelism with splash attention, full remat, scanned layers.
  XL_1080p_60s_1row  the same, one row per step, all chips on `sequence` (chips must divide the 16 heads).

Every variant has `mesh` (sorajax.parallel.mesh.MeshConfig: data/fsdp/sequence/tensor, -1 fills)
and `parallel.rules` (None: the DiT's default logical axis rules).
"""

import ml_collections


# Tokens of a clip after a 4x (time) 8x8 (space) autoencoder and 1x2x2 patches.
def clip_tokens(seconds: float, height: int, width: int, fps: int = 24) -> int:
    frames = int(seconds * fps)
    latent_t = -(-frames // 4)
    grid_h, grid_w = -(-height // 16), -(-width // 16)  # 8x spatial, then 2x2 patches (rounded up)
    return latent_t * grid_h * grid_w


def row_tokens(tokens: int, multiple: int = 8192) -> int:
    """A row length holding `tokens`, rounded up so splash blocks and 16-way sequence shards divide it."""
    return -(-tokens // multiple) * multiple


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.patch = (1, 2, 2)
    c.latent_channels = 16
    c.text_dim = 384
    c.text_encoder = ml_collections.ConfigDict(dict(kind="minilm", max_length=96))  # text_dim is its width
    c.prediction = "velocity"
    c.model = ml_collections.ConfigDict(dict(
        preset="S", dtype="bfloat16", attention_impl="auto", context_parallel="none",
        remat_policy="none", scan_layers=False,
    ))
    c.data = ml_collections.ConfigDict(dict(rows=16, seq_len=4096, text_len=256))
    c.mesh = ml_collections.ConfigDict(dict(data=1, fsdp=-1, sequence=1, tensor=1))
    c.parallel = ml_collections.ConfigDict(dict(rules=None))
    c.time = ml_collections.ConfigDict(dict(
        logit_mean=0.0, logit_std=1.0, base_tokens=256, base_shift=1.0, max_tokens=4096, max_shift=3.0,
    ))
    c.train = ml_collections.ConfigDict(dict(
        learning_rate=1e-4, warmup_steps=1000, steps=100_000, end_lr_fraction=0.1, weight_decay=0.0,
        adam_b1=0.9, adam_b2=0.99, grad_clip_norm=1.0, ema_decay=0.9999, caption_dropout=0.1,
    ))

    variant = arg or "S_256"
    if variant == "tiny8":
        c.model.update(preset="tiny", dtype="float32", attention_impl="xla", context_parallel="ring")
        c.data.update(rows=4, seq_len=64, text_len=16)
        c.mesh.update(data=2, fsdp=2, sequence=2, tensor=1)
    elif variant == "S_256":
        c.data.update(rows=16, seq_len=clip_tokens(64 / 24, 256, 256))
        c.model.update(remat_policy="save_dots_without_batch")
    elif variant == "XL_720p":
        c.model.update(preset="XL", attention_impl="splash", context_parallel="ulysses", remat_policy="full",
                       scan_layers=True)
        c.data.update(rows=8, seq_len=row_tokens(clip_tokens(10, 720, 1280)), text_len=256)
        c.mesh.update(data=1, fsdp=-1, sequence=8, tensor=1)
    elif variant == "XL_1080p_60s":
        c.model.update(preset="XL", attention_impl="splash", context_parallel="ulysses", remat_policy="full",
                       scan_layers=True)
        c.data.update(rows=4, seq_len=row_tokens(clip_tokens(60, 1080, 1920), 16384), text_len=512)
        c.mesh.update(data=1, fsdp=-1, sequence=16, tensor=1)
    elif variant == "XL_1080p_60s_1row":  # one clip per step, every chip on its sequence: the smallest slices
        c.model.update(preset="XL", attention_impl="splash", context_parallel="ulysses", remat_policy="full",
                       scan_layers=True)
        c.data.update(rows=1, seq_len=row_tokens(clip_tokens(60, 1080, 1920), 16384), text_len=512)
        c.mesh.update(data=1, fsdp=1, sequence=-1, tensor=1)
    else:
        raise ValueError(f"unknown variant {arg!r} for configs/dit_scale.py; use tiny8, S_256, XL_720p, "
                         "XL_1080p_60s or XL_1080p_60s_1row")
    return c
