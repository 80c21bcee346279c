"""The Wan models as sorajax DiTs on accelerator slices: sizes, meshes and memory options for AOT compiles.

    python -m sorajax.aot_compile --config=configs/wan_scale.py:VARIANT --topology=v5p:2x2x2 [--step sample]

Variants `<model>_<resolution>[_lora]`: model `1.3b` (Wan2.1-T2V-1.3B: VAE 2.1, 4x8x8, 16 latent channels),
`14b` (Wan2.1-T2V-14B, same VAE) or `5b` (Wan2.2-TI2V-5B: VAE 2.2, 4x16x16, 48 channels); resolution `480p` (480 x 832) or `720p` (720 x 1280
for 1.3B, 704 x 1280 for 5B, its native size). Every clip is Wan's 81 frames (21 latent frames), one clip per
row, 1x2x2 patches, UMT5's 512 text positions. Attention is splash inside Ulysses' shard_map (a sequence
axis of 1 unless stated), weights and optimizer state FSDP over the rest. Tokens per clip: 1.3B 480p 32,760, 720p 75,600;
5B 480p 8,190, 720p 18,480 (14B as 1.3B).
`_lora` trains rank-32 LoRA adapters on every block's attention and MLP kernels (`train.lora`) with the
base frozen in bfloat16, laid out like the full model's weights (FSDP). Rows are padded to multiples of 2,048 (splash blocks; sequence shards).
`data.rows` is the clips per train step (the sampler step runs 2 x rows: guidance's two branches).

`text_encoder.path` is where `sorajax.convert` (next issue) puts a converted checkpoint's UMT5; the AOT
compile reads only `text_dim`, training and sampling read the folder.
"""

import ml_collections

FRAMES = 81
SIZES = {"480p": (480, 832), "720p": (720, 1280)}
MODELS = {  # preset, VAE compression (time, space), latent channels, native 720p size
    "1.3b": ("wan2.1-t2v-1.3b", (4, 8), 16, (720, 1280)),
    "14b": ("wan2.1-t2v-14b", (4, 8), 16, (720, 1280)),
    "5b": ("wan2.2-ti2v-5b", (4, 16), 48, (704, 1280)),
}
LORA = dict(rank=32, alpha=32.0)


def clip_tokens(model: str, resolution: str) -> int:
    """Video tokens of one 81-frame clip: latent frames x (height / space / 2) x (width / space / 2)."""
    _, (time, space), _, native_720p = MODELS[model]
    height, width = native_720p if resolution == "720p" else SIZES[resolution]
    return (1 + (FRAMES - 1) // time) * (height // space // 2) * (width // space // 2)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    variant = arg or "1.3b_480p"
    model, _, rest = variant.partition("_")
    resolution, _, mode = rest.partition("_")
    if model not in MODELS or resolution not in SIZES or mode not in ("", "lora"):
        raise ValueError(f"unknown variant {variant!r} for configs/wan_scale.py; use <model>_<resolution>[_lora] with "
                         f"model in {sorted(MODELS)} and resolution in {sorted(SIZES)}, e.g. 1.3b_480p or 14b_720p_lora")
    preset, _, channels, _ = MODELS[model]
    tokens = clip_tokens(model, resolution)
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.patch = (1, 2, 2)
    c.latent_channels = channels
    c.text_dim = 4096
    c.text_encoder = ml_collections.ConfigDict(dict(
        kind="umt5", path=f"checkpoints/{preset}/text_encoder", max_length=512))
    c.prediction = "velocity"
    c.model = ml_collections.ConfigDict(dict(
        preset=preset, dtype="bfloat16", attention_impl="splash", context_parallel="ulysses",
        remat_policy="full", scan_layers=True,
    ))
    c.data = ml_collections.ConfigDict(dict(rows=8, seq_len=-(-tokens // 2048) * 2048, text_len=512))
    c.mesh = ml_collections.ConfigDict(dict(data=1, fsdp=-1, sequence=1, tensor=1))
    c.parallel = ml_collections.ConfigDict(dict(rules=None))
    c.time = ml_collections.ConfigDict(dict(
        logit_mean=0.0, logit_std=1.0, base_tokens=256, base_shift=1.0, max_tokens=4096, max_shift=3.0,
    ))
    c.train = ml_collections.ConfigDict(dict(
        learning_rate=1e-5, warmup_steps=100, steps=10_000, end_lr_fraction=0.1, weight_decay=0.0,
        adam_b1=0.9, adam_b2=0.99, grad_clip_norm=1.0, ema_decay=0.9999, caption_dropout=0.1,
    ))
    if mode == "lora":
        c.train.lora = ml_collections.ConfigDict(dict(LORA))
        c.train.init_from = "runs/wan_converted"  # the converted base (the AOT compile reads no weights)
        c.train.learning_rate = 1e-4
    if model in ("1.3b", "14b") and resolution == "720p":  # 75,600 tokens: attention split over 4 chips' sequence shards
        c.mesh.sequence = 4
    return c
