"""Config files: variants, overrides and the error for unknown keys."""

import pytest

from sorajax.config_loading import apply_override, load_config


def test_variant_and_override_values():
    config = load_config("configs/vae_tiny.py:smoke", {"train.steps": "7", "data.sizes": "((5, 16, 16),)"})
    assert config.train.steps == 7
    assert config.data.sizes == ((5, 16, 16),)
    assert config.vae.base_channels == 8  # from the smoke variant
    assert load_config("configs/vae_tiny.py").vae.base_channels == 16


def test_unknown_key_names_the_key_and_the_known_fields():
    config = load_config("configs/vae_tiny.py")
    with pytest.raises(KeyError) as unknown:
        apply_override(config, "train.stepz", 3)
    assert unknown.value.args[0].startswith("unknown key 'stepz' in config 'train'; known keys: adam_b1, adam_b2, async")
    assert unknown.value.args[0].endswith(", warmup_steps, weight_decay; did you mean 'steps'?")
    with pytest.raises(KeyError) as unknown:
        apply_override(config, "nope.x", 3)
    assert unknown.value.args[0] == "unknown key 'nope' in the config; known keys: data, eval, seed, train, vae, world"


def test_unknown_variant_and_missing_file():
    with pytest.raises(ValueError, match="unknown variant 'huge'"):
        load_config("configs/vae_tiny.py:huge")
    with pytest.raises(FileNotFoundError, match="configs/missing.py"):
        load_config("configs/missing.py")


@pytest.mark.parametrize("variant", ["", "smoke"])
def test_default_dit_and_vae_configs_fit_together(variant):
    """Every DiT training size is a valid clip for its autoencoder and fits one packed row."""
    from sorajax.models.vae import VAEConfig
    from sorajax.patches import num_patches

    vae = VAEConfig.from_dict(load_config(f"configs/vae_tiny.py:{variant}").vae.to_dict())
    dit = load_config(f"configs/dit_tiny.py:{variant}")
    counts = []
    for frames, height, width in dit.data.sizes:
        vae.validate_video_shape(frames, height, width)
        counts.append(num_patches(vae.latent_shape(frames, height, width), dit.patch))
    assert max(counts) <= dit.data.seq_len
    if not variant:  # the main job: x4 space, 1x2x2 patches -> 192 tokens per 9x64x64 clip, 2 per row
        assert vae.latent_shape(9, 64, 64) == (3, 16, 16, 8)
        assert counts == [192, 180, 180, 64] and dit.data.seq_len == 2 * 192


def test_long_dit_variant_is_the_main_job_model_with_more_budget():
    main, long = load_config("configs/dit_tiny.py"), load_config("configs/dit_tiny.py:long")
    assert long.model.to_dict() == main.model.to_dict() and long.patch == main.patch  # same model fingerprint
    assert long.data.sizes == main.data.sizes and long.train.learning_rate == main.train.learning_rate
    assert (long.train.steps, long.data.num_clips) == (10000, 8192) and long.train.steps > 4 * main.train.steps
