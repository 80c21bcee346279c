"""Sample writing: reconstruction videos and contact sheets are real, readable files."""

import jax
import numpy as np
import pytest

from sorajax.data.world import WorldOptions
from sorajax.eval.contact_sheet import contact_sheet, pick_frames
from sorajax.eval.vae_samples import write_reconstruction_samples
from sorajax.models.vae import CausalVAE, VAEConfig
from sorajax.eval.vae_eval import make_reconstruct
from sorajax.video_io import read_image, read_video


def test_contact_sheet_places_every_clip_uncropped():
    a = np.full((5, 8, 12, 3), 200, np.uint8)
    b = np.full((1, 12, 6, 3), 90, np.uint8)
    sheet = contact_sheet([a, b], frames_per_row=3)
    assert sheet.shape == (12 * 2 + 2, 12 * 3 + 2 * 2, 3)
    assert (sheet == 200).all(axis=-1).sum() == 3 * 8 * 12  # three frames of clip a, whole
    assert (sheet == 90).all(axis=-1).sum() == 12 * 6  # the single frame of image b, whole
    assert pick_frames(17, 4) == [0, 5, 11, 16]
    with pytest.raises(ValueError, match="uint8"):
        contact_sheet([a.astype(np.float32)])


def test_reconstruction_samples_are_written_side_by_side(tmp_path):
    config = VAEConfig.from_dict(dict(
        base_channels=8, channel_multipliers=(1, 2), num_res_blocks=1, spatial_downsample=(True, True),
        temporal_downsample=(True, True), latent_channels=4, norm_groups=4, mid_attention=False,
    ))
    vae = CausalVAE(config)
    variables = vae.init({"params": jax.random.PRNGKey(0), "sample": jax.random.PRNGKey(1)}, np.zeros((1, 5, 16, 16, 3)))
    paths = write_reconstruction_samples(
        jax.jit(make_reconstruct(vae)), variables, [(5, 16, 24), (1, 16, 16)], seed=0,
        world_options=WorldOptions(), out_dir=str(tmp_path),
    )
    assert [p.rsplit("/", 1)[-1] for p in paths] == ["recon_5x16x24.mp4", "recon_1x16x16.png", "reconstructions.png"]
    frames, _ = read_video(paths[0])
    assert frames.shape == (5, 16, 48, 3)  # original | reconstruction
    assert read_image(paths[1]).shape == (16, 32, 3)
    assert read_image(paths[2]).shape[0] == 4 * 16 + 3 * 2  # 2 clips x (original, reconstruction) rows
