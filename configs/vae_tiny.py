"""Tiny causal video autoencoder on the built-in world: trains on a 2-core CPU in minutes.

Variants (`--config=configs/vae_tiny.py:VARIANT`):
  (none)  the default run used by the README's main job.
  mesh    the default, over a device mesh (all devices data-parallel; override e.g.
          --config.mesh.fsdp=4 --config.mesh.data=-1): sharded state, per-host batches.
  smoke   a few steps on 16x16 clips, for tests.
  drill   the smallest model that trains and checkpoints (one level, 4 channels, 3x8x8 clips): the kill
          drill (experiments/kill_drill.py) and the failure tests start it many times.
"""

import ml_collections


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.seed = 0

    c.vae = ml_collections.ConfigDict(dict(
        base_channels=16,
        channel_multipliers=(1, 2, 4),
        num_res_blocks=1,
        latent_channels=8,
        # x4 in space: a 64x64 frame becomes 16x16 latents, so a small object (~9 px) still spans
        # two latent pixels; at x8 the probe could not read colours back from reconstructions.
        spatial_downsample=(True, True, False),
        temporal_downsample=(False, True, True),
        norm_groups=-1,  # no norm: with the shortcuts it learned shapes faster than RMS or GroupNorm
        mid_attention=False,
        temporal_kernels=(1, 3, 3),  # no temporal mixing at full resolution: 3x cheaper there
        shortcuts=True,  # average/repeat paths beside resampling: colours survive from the first steps
        dtype="float32",
    ))

    # The built-in world (sorajax.data.world.WorldOptions fields).
    # Two to four objects per clip: more object pixels per step than background (measured: colour
    # agreement of reconstructions 29% with 2-4 objects vs 10% with 1-2, both at 250 steps, x4, no shortcuts).
    c.world = ml_collections.ConfigDict(dict(min_objects=2, max_objects=4))

    c.data = ml_collections.ConfigDict()
    # (frames, height, width): images and videos, landscape, portrait and square.
    c.data.sizes = ((9, 64, 64), (1, 64, 64), (9, 48, 80), (9, 80, 48))
    # Train on random windows of the native-size clips (objects keep their scale); eval on whole clips.
    # Whole clips in time: 5-frame windows never trained the third latent frame, which decoded dark.
    c.data.crop = (9, 32, 32)
    c.data.batch_size = 8
    c.data.worker_count = 0

    c.train = ml_collections.ConfigDict(dict(
        steps=800,
        learning_rate=3e-4,  # measured: 3e-4 > 1e-4 > 1e-3 > 5e-3 in held-out PSNR at 200 steps
        warmup_steps=50,
        end_lr_fraction=0.05,
        weight_decay=1e-4,
        adam_b1=0.9,
        adam_b2=0.99,
        grad_clip_norm=1.0,
        kl_weight=1e-6,
        l2_weight=1.0,
        noise_ramp_steps=400,  # posterior noise faded in (sorajax.train.vae_step.posterior_noise_scale)
        log_every=25,
        save_every=400,
        keep_checkpoints=3,
        async_checkpoints=True,
        max_seconds=0.0,  # > 0: also stop after this much wall time (the GPU check's budgeted runs)
    ))

    c.eval = ml_collections.ConfigDict(dict(
        every=800,
        sizes=((9, 64, 64), (1, 64, 64), (9, 48, 80), (9, 80, 48)),
        batch_size=4,
        num_batches=2,  # per eval size
    ))

    if arg == "smoke":
        c.vae.base_channels = 8
        c.vae.norm_groups = 4
        c.vae.spatial_downsample = (True, True, True)  # x8: the fewest latents for fast tests
        c.vae.latent_channels = 4
        c.data.sizes = ((5, 16, 16), (1, 16, 16), (5, 16, 24))
        c.data.batch_size = 2
        c.data.crop = None
        c.train.steps = 4
        c.train.warmup_steps = 1
        c.train.log_every = 1
        c.train.save_every = 2
        c.eval.every = 2
        c.eval.sizes = ((5, 16, 16),)
        c.eval.batch_size = 2
        c.eval.num_batches = 1
    elif arg == "drill":
        c.vae.update(dict(base_channels=4, channel_multipliers=(1,), num_res_blocks=0, spatial_downsample=(True,),
                          temporal_downsample=(False,), temporal_kernels=(1,), latent_channels=4, norm_groups=-1))
        c.data.sizes = ((3, 8, 8),)
        c.data.crop = None
        c.data.batch_size = 2
        c.train.update(dict(steps=30, warmup_steps=3, noise_ramp_steps=10, log_every=1, save_every=3))
        c.eval.update(dict(every=1000, sizes=((3, 8, 8),), batch_size=1, num_batches=1))
    elif arg == "mesh":  # sorajax.parallel.mesh.MeshConfig fields; -1 fills with the devices left
        c.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1, sequence=1, tensor=1))
        c.parallel = ml_collections.ConfigDict(dict(rules=None))  # None: the default logical axis rules
    elif arg not in (None, ""):
        raise ValueError(f"unknown variant {arg!r} for configs/vae_tiny.py; use '', 'mesh', 'smoke' or 'drill'")
    return c
