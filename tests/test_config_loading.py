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
    with pytest.raises(KeyError, match=r"unknown config key 'train.stepz'.*'steps'"):
        apply_override(config, "train.stepz", 3)
    with pytest.raises(KeyError, match="unknown config key 'nope.x'"):
        apply_override(config, "nope.x", 3)


def test_unknown_variant_and_missing_file():
    with pytest.raises(ValueError, match="unknown variant 'huge'"):
        load_config("configs/vae_tiny.py:huge")
    with pytest.raises(FileNotFoundError, match="configs/missing.py"):
        load_config("configs/missing.py")
