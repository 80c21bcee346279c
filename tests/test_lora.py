"""LoRA fine-tuning: adapters equal the base at init, train alone, resume exactly, merge and export."""

import os
import shutil

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from sorajax.config_loading import load_config
from sorajax.merge_lora import merge_lora_run
from sorajax.models.dit import DiT, DiTConfig, example_inputs
from sorajax.models.lora import LoraConfig, init_adapters, merge, parameter_count
from sorajax.pipeline import Pipeline
from sorajax.runs.checkpoints import open_run
from sorajax.runs.metrics import read_metrics
from sorajax.train.dit_trainer import train_dit
from tests.tiny_runs import shared_vae


def _boxed(scan):
    cfg = DiTConfig.preset("tiny", width=32, depth=2, num_heads=2, patch_dim=8, text_dim=16, scan_layers=scan)
    return cfg, DiT(cfg).init(jax.random.PRNGKey(0), *example_inputs(cfg))["params"]


@pytest.mark.parametrize("scan", [False, True])
def test_merge_is_the_base_at_init_and_w_plus_scaled_a_b_after(scan):
    cfg, boxed = _boxed(scan)
    lora = LoraConfig(rank=4, alpha=8.0)
    adapters = init_adapters(boxed, lora, jax.random.PRNGKey(1))
    # rank r on width d: 2*d*r per square kernel (8 attention kernels), d*r + r*4d per MLP kernel, per block
    assert parameter_count(adapters) == cfg.depth * (8 * 2 * 32 * 4 + 2 * (32 * 4 + 4 * 128))
    base, adapters = nn.meta.unbox(boxed), nn.meta.unbox(adapters)
    for a, b in zip(jax.tree.leaves(base), jax.tree.leaves(merge(base, adapters, lora.scale)), strict=True):
        np.testing.assert_array_equal(a, b)
    adapters = jax.tree.map(lambda x: x + 0.1, adapters)
    flat, merged = traverse_util.flatten_dict(adapters), traverse_util.flatten_dict(merge(base, adapters, lora.scale))
    out = ("blocks", "block", "self_attn", "out", "kernel") if scan else ("block_1", "self_attn", "out", "kernel")
    query = out[:-2] + ("query", "kernel")
    lead = "l" if scan else ""
    w = traverse_util.flatten_dict(base)
    expected_out = w[out] + 2.0 * jnp.einsum(f"{lead}hkr,{lead}ro->{lead}hko", flat[(*out, "lora_a")],
                                             flat[(*out, "lora_b")])
    expected_q = w[query] + 2.0 * jnp.einsum(f"{lead}ir,{lead}rhk->{lead}ihk", flat[(*query, "lora_a")],
                                             flat[(*query, "lora_b")])
    np.testing.assert_allclose(merged[out], expected_out, atol=1e-6)
    np.testing.assert_allclose(merged[query], expected_q, atol=1e-6)


def test_bad_lora_settings_are_one_line_errors():
    with pytest.raises(ValueError, match="train.lora.rank=0 with alpha=8.0"):
        LoraConfig(rank=0, alpha=8.0)
    with pytest.raises(ValueError, match="match no kernel of this DiT; its kernels are e.g. block_0/"):
        init_adapters(_boxed(False)[1], LoraConfig(rank=2, targets=("nothing_here",)), jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match="needs a base: set train.init_from"):
        train_dit(load_config("configs/dit_tiny.py:smoke", {"vae_workdir": "x", "train.lora.rank": 2}), "/nonexistent")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """(autoencoder, base DiT run, a straight 4-step LoRA run on it, its printed start)."""
    vae = str(shared_vae(tmp_path_factory))
    base = str(tmp_path_factory.mktemp("base"))
    train_dit(_config(vae, 4), base)
    straight = str(tmp_path_factory.mktemp("straight"))
    train_dit(_config(vae, 4, **_lora(base)), straight)
    return vae, base, straight


def _config(vae, steps, **extra):
    return load_config("configs/dit_tiny.py:smoke", {"vae_workdir": vae, "train.steps": steps, **extra})


def _lora(base):
    return {"train.init_from": base, "train.lora.rank": 4, "train.lora.alpha": 8.0, "train.learning_rate": 3e-2}


def _state(run):
    ckpt = open_run(run, None, "train")
    try:
        return ckpt.restore()[0]
    finally:
        ckpt.close()


def test_checkpoint_holds_only_adapters_the_base_is_untouched_and_resume_is_exact(runs, tmp_path, capsys):
    vae, base, straight = runs
    base_weights = [np.asarray(x) for x in jax.tree.leaves(_state(base)["ema_params"])]
    resumed = str(tmp_path / "resumed")
    train_dit(_config(vae, 2, **_lora(base)), resumed)
    assert "LoRA rank 4 (scale 2) on 10 kernels: 3,328 trainable parameters" in capsys.readouterr().out
    train_dit(_config(vae, 4, **_lora(base)), resumed)
    saved = _state(straight)
    for name in ("params", "ema_params"):
        paths = traverse_util.flatten_dict(saved[name])
        assert {p[-1] for p in paths} == {"lora_a", "lora_b"} and len(paths) == 20
    moments = [jax.tree_util.keystr(path) for path, _ in jax.tree_util.tree_leaves_with_path(saved["opt_state"])]
    assert moments and all(k.endswith(("['lora_a']", "['lora_b']", "['count']")) for k in moments), moments
    assert sum(k.endswith("['lora_a']") for k in moments) == 20  # Adam's two moments of the 10 A's
    assert any(np.abs(v).max() > 0 for k, v in traverse_util.flatten_dict(saved["params"]).items() if k[-1] == "lora_b")
    for a, b in zip(base_weights, jax.tree.leaves(_state(base)["ema_params"]), strict=True):
        np.testing.assert_array_equal(a, b)
    losses = [[r["loss"] for r in read_metrics(os.path.join(run, "metrics.jsonl")) if "loss" in r]
              for run in (straight, resumed)]
    assert losses[0] == losses[1] and len(losses[0]) == 4
    for a, b in zip(jax.tree.leaves(saved), jax.tree.leaves(_state(resumed)), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_resume_refuses_another_base_and_bad_targets(runs, tmp_path):
    vae, base, straight = runs
    copy = str(tmp_path / "copy")
    shutil.copytree(straight, copy)
    with pytest.raises(ValueError, match="names step 2, but this LoRA run's adapters were trained on step 4"):
        train_dit(_config(vae, 6, **{**_lora(base), "train.init_from": f"{base}:2"}), copy)
    with pytest.raises(ValueError, match="is not the base this LoRA run was trained on"):
        train_dit(_config(vae, 6, **{**_lora(base), "train.init_from": str(tmp_path)}), copy)
    with pytest.raises(ValueError, match=r"targets \['nope'\] match no kernel of this DiT; its kernels are e.g. block_0/"):
        train_dit(_config(vae, 1, **{**_lora(base), "train.lora.targets": ("nope",)}), str(tmp_path / "t"))


def test_merged_export_equals_the_on_the_fly_merge(runs, tmp_path):
    vae, base, straight = runs
    out = str(tmp_path / "merged")
    merge_lora_run(straight, out)
    for use_ema in (False, True):
        live, exported = Pipeline.from_run(straight, use_ema=use_ema), Pipeline.from_run(out, use_ema=use_ema)
        for a, b in zip(jax.tree.leaves(live.dit_params), jax.tree.leaves(exported.dit_params), strict=True):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    plain = Pipeline.from_run(base, use_ema=True)
    assert any(not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(plain.dit_params),
                                                         jax.tree.leaves(live.dit_params)))
    with pytest.raises(ValueError, match="is not a LoRA run"):
        merge_lora_run(base, str(tmp_path / "again"))
    with pytest.raises(ValueError, match="already holds checkpoints"):
        merge_lora_run(straight, out)
