"""Wan's original release layout converts, without PyTorch, into a run that computes what Wan's own modules compute.

Fixtures (tools/make_wan_original_fixtures.py, run once with PyTorch and Wan's code): tiny Wan2.1-T2V
and Wan2.2-TI2V folders in the original layout (WanModel safetensors, VAE and T5 as `.pth` pickles,
google/umt5-xxl/), Wan's own outputs on fixed inputs (DiT velocity, VAE encode / decode, T5 hidden
states), a `.pth` of tensor views, and the full-size originals' key lists. Tolerances are float32
round-off. Measured (2.1 / 2.2): DiT 1.7e-5 / 1.3e-5 on outputs up to 5.9 / 4.8 (bound 5e-5), VAE
normalised mean 1.1e-6 / 3.0e-6 (bound 1e-5), decode 6.3e-5 / 2.5e-6 (bound 1e-4, as against
diffusers in test_wan_vae), T5 hidden states 1.8e-6 / 1.8e-6 (bound 1e-5).
"""

from __future__ import annotations

import json
import pickle
import re
import shutil
import zipfile
from pathlib import Path

import einops
import jax
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from sorajax.convert import convert
from sorajax.models.dit import DiTConfig, abstract_params
from sorajax.models.pretrained import CheckpointError, check_coverage, read_key_shapes
from sorajax.models.torch_pickle import TorchCheckpoint
from sorajax.models.umt5 import UMT5Config, UMT5Encoder
from sorajax.models.umt5 import abstract_params as umt5_abstract
from sorajax.models.umt5_weights import key_map as umt5_key_map
from sorajax.models.umt5_weights import load_umt5
from sorajax.models.wan_dit_weights import wan_dit_config, wan_dit_key_map
from sorajax.models.wan_original_keys import (
    WAN_DIT_RENAMES,
    WAN_T5_RENAMES,
    umt5_original_config,
    wan_dit_diffusers_config,
    wan_vae_original_config,
    wan_vae_original_version,
    wan_vae_renames,
)
from sorajax.models.wan_vae import abstract_wan_variables
from sorajax.models.wan_vae_config import WanVAEConfig
from sorajax.models.wan_vae_keys import wan_vae_key_map
from sorajax.patches import patchify
from sorajax.pipeline import Pipeline

FIXTURES = Path(__file__).parent / "fixtures"
ORIGINALS = {"wan21_t2v": "wan2.1-t2v", "wan22_ti2v": "wan2.2-ti2v"}
FAST_COMPILE = {"xla_backend_optimization_level": 0}


@pytest.fixture(scope="module")
def reference() -> dict[str, np.ndarray]:
    with np.load(FIXTURES / "wan_original_reference.npz") as data:
        return {key: data[key] for key in data.files}


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("original_runs")
    return {name: convert(FIXTURES / f"{name}_original_tiny", out / name) for name in ORIGINALS}


def copy_original(tmp_path: Path, name: str = "wan21_t2v") -> Path:
    folder = tmp_path / f"{name}_original_tiny"
    shutil.copytree(FIXTURES / f"{name}_original_tiny", folder)
    return folder


# ---- the .pth reader ---------------------------------------------------------------------------------------
def test_reader_gives_views_dtypes_and_values_without_torch():
    checkpoint = TorchCheckpoint(FIXTURES / "torch_pickle_views.pth")
    assert checkpoint.shapes() == {"f32": (4, 6), "bf16_transposed": (6, 4), "bf16_rows": (2, 6),
                                   "f16_window": (3, 3), "i64": (5,), "empty": (0, 3)}
    assert {k: str(v) for k, v in checkpoint.dtypes().items()} == {
        "f32": "float32", "bf16_transposed": "bfloat16", "bf16_rows": "bfloat16", "f16_window": "float16",
        "i64": "int64", "empty": "float32"}
    base = np.arange(24, dtype=np.float32).reshape(4, 6)
    got = dict(checkpoint.tensors())
    expected = {"f32": base, "bf16_transposed": base.T, "bf16_rows": base[1:3], "f16_window": base[1:, 2:5],
                "i64": np.arange(5), "empty": np.zeros((0, 3))}
    for key, want in expected.items():
        assert got[key].shape == want.shape and got[key].dtype == checkpoint.dtypes()[key]
        np.testing.assert_array_equal(np.asarray(got[key], np.float64), want, err_msg=key)
    # Storage offset (row 1) and strides (a transpose) honoured on data read in place from the file.
    assert checkpoint.refs["f16_window"].offset == 8 and checkpoint.refs["bf16_transposed"].strides == (1, 6)
    assert not got["bf16_transposed"].flags.owndata and not got["bf16_transposed"].flags.writeable


def test_reader_reads_a_recompressed_archive_the_same(tmp_path):
    """torch stores members uncompressed (memory-mapped); a file re-zipped with deflate still reads."""
    source = FIXTURES / "torch_pickle_views.pth"
    deflated = tmp_path / "deflated.pth"
    with zipfile.ZipFile(source) as old, zipfile.ZipFile(deflated, "w", zipfile.ZIP_DEFLATED) as new:
        for info in old.infolist():
            new.writestr(info.filename, old.read(info))
    mapped, inflated = dict(TorchCheckpoint(source).tensors()), dict(TorchCheckpoint(deflated).tensors())
    assert mapped.keys() == inflated.keys()
    for key in mapped:
        np.testing.assert_array_equal(np.asarray(inflated[key]), np.asarray(mapped[key]), err_msg=key)


@pytest.mark.parametrize("name, file, dtype, count", [
    ("wan21_t2v", "Wan2.1_VAE.pth", "float32", 194), ("wan22_ti2v", "Wan2.2_VAE.pth", "float32", 144),
    ("wan21_t2v", "models_t5_umt5-xxl-enc-bf16.pth", "bfloat16", 22),
])
def test_reader_reads_the_fixture_pickles(name, file, dtype, count):
    checkpoint = TorchCheckpoint(FIXTURES / f"{name}_original_tiny" / file)
    assert len(checkpoint.shapes()) == count and {str(d) for d in checkpoint.dtypes().values()} == {dtype}
    key, array = next(checkpoint.tensors())
    assert array.shape == checkpoint.shapes()[key] and np.isfinite(np.asarray(array, np.float32)).all()


def _torch_zip(path: Path, payload: bytes) -> Path:
    """A zip laid out as torch.save writes one, holding `payload` as its pickle."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr("archive/data.pkl", payload)
        archive.writestr("archive/version", "3\n")
    return path


class _RunsCode:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return exec, (f"open({str(self.marker)!r}, 'w').write('ran')",)


def test_reader_refuses_foreign_globals_unrun_legacy_files_and_truncation(tmp_path):
    marker = tmp_path / "ran.txt"
    evil = _torch_zip(tmp_path / "evil.pth", pickle.dumps({"w": _RunsCode(marker)}, protocol=2))
    with pytest.raises(CheckpointError, match=r"evil.pth: the pickle asks for (__builtin__|builtins).exec, which a plain state dict "
                                              r"never holds; refused unread"):
        TorchCheckpoint(evil)
    assert not marker.exists()
    legacy = tmp_path / "legacy.pth"
    legacy.write_bytes(pickle.dumps(0x1950A86A20F9469CFC6C, protocol=2) + b"\x00" * 64)
    with pytest.raises(CheckpointError, match=r"legacy.pth: a legacy \(non-zip, pre-1.6\) PyTorch file"):
        TorchCheckpoint(legacy)
    not_tensors = _torch_zip(tmp_path / "numbers.pth", pickle.dumps({"w": 3}, protocol=2))
    with pytest.raises(CheckpointError, match="numbers.pth: holds no flat state dict of tensors"):
        TorchCheckpoint(not_tensors)
    truncated = tmp_path / "cut.pth"
    data = (FIXTURES / "torch_pickle_views.pth").read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"cut.pth: not a complete PyTorch checkpoint \(BadZipFile"):
        TorchCheckpoint(truncated)


# ---- renames and configs at full size ----------------------------------------------------------------------
def test_full_size_original_keys_rename_onto_the_key_maps_exactly():
    dit_original = read_key_shapes(FIXTURES / "wan_original_dit_1.3b_keys.txt")
    released = {"_class_name": "WanModel", "dim": 1536, "eps": 1e-06, "ffn_dim": 8960, "freq_dim": 256,
                "in_dim": 16, "model_type": "t2v", "num_heads": 12, "num_layers": 30, "out_dim": 16, "text_len": 512}
    dit = wan_dit_config(wan_dit_diffusers_config(released, dit_original))
    assert dit == DiTConfig.preset("wan2.1-t2v-1.3b", patch_dim=64, text_dim=4096)
    renamed = {WAN_DIT_RENAMES(k): v for k, v in dit_original.items()}
    assert renamed == read_key_shapes(FIXTURES / "wan_dit_1.3b_keys.txt")  # diffusers' names and shapes, one to one
    check_coverage(renamed, wan_dit_key_map(dit), abstract_params(dit), "Wan2.1 1.3B (original names)")

    for version, preset in (("21", "wan2.1"), ("22", "wan2.2")):
        original = read_key_shapes(FIXTURES / f"wan_original_vae{version}_keys.txt")
        config = wan_vae_original_config(original, wan_vae_original_version(original))
        assert config == WanVAEConfig.preset(preset)  # dims, levels, blocks, time downsampling and stats inferred
        rename = wan_vae_renames(config)
        renamed = {rename(k): v for k, v in original.items()}
        assert renamed == read_key_shapes(FIXTURES / f"wan_vae{version}_keys.txt")
        abstract = abstract_wan_variables(config)["params"]
        check_coverage(renamed, wan_vae_key_map(config, abstract), abstract, f"Wan VAE {preset}")

    t5_original = read_key_shapes(FIXTURES / "wan_original_umt5_xxl_keys.txt")
    umt5 = UMT5Config.from_hf_dict(umt5_original_config(t5_original))
    assert umt5 == UMT5Config.preset("umt5-xxl")
    renamed = {WAN_T5_RENAMES(k): v for k, v in t5_original.items()}
    assert renamed == {k: v for k, v in read_key_shapes(FIXTURES / "umt5_xxl_keys.txt").items()
                       if k != "encoder.embed_tokens.weight"}  # Wan stores the tied table once
    check_coverage(renamed, umt5_key_map(umt5), umt5_abstract(umt5), "UMT5-XXL (original names)")


def test_released_configs_translate_and_conditioned_variants_are_refused():
    base = {"_class_name": "WanModel", "eps": 1e-06, "freq_dim": 256, "num_layers": 30, "text_len": 512}
    for fields, preset, channels in (({"dim": 5120, "ffn_dim": 13824, "num_heads": 40, "num_layers": 40}, "wan2.1-t2v-14b", 16),
                                     ({"dim": 3072, "ffn_dim": 14336, "num_heads": 24, "model_type": "ti2v"}, "wan2.2-ti2v-5b", 48)):
        raw = {**base, "model_type": "t2v", "in_dim": channels, "out_dim": channels, **fields}
        config = wan_dit_config(wan_dit_diffusers_config(raw, {}))
        assert config == DiTConfig.preset(preset, patch_dim=4 * channels, text_dim=4096)
    i2v = {**base, "dim": 5120, "ffn_dim": 13824, "num_heads": 40, "in_dim": 36, "out_dim": 16, "model_type": "i2v"}
    with pytest.raises(ValueError, match="model_type 'i2v' is an image- or audio-conditioned Wan variant"):
        wan_dit_diffusers_config(i2v, {})
    assert WAN_DIT_RENAMES("blocks.0.cross_attn.k_img.weight") is None and WAN_DIT_RENAMES("blocks.0.norm2.weight") is None


# ---- conversion and parity with Wan's own modules ----------------------------------------------------------
def test_converted_runs_record_the_original_layout(runs):
    for name, family in ORIGINALS.items():
        config = json.loads((runs[name] / "config.json").read_text())
        assert config["source"]["layout"] == "original" and config["source"]["family"] == family
        assert config["model"]["depth"] == 2 and config["model"]["width"] == 16 and config["patch"] == [1, 2, 2]
        text = json.loads((runs[name] / "text_encoder" / "config.json").read_text())
        assert (text["d_model"], text["num_layers"], text["relative_attention_max_distance"]) == (16, 2, 128)
        assert sorted(p.name for p in (runs[name] / "tokenizer").iterdir()) == (
            ["tokenizer.json", "tokenizer_config.json"] if name == "wan21_t2v" else ["spiece.model", "tokenizer_config.json"])


def _velocity(pipeline: Pipeline, ref: dict[str, np.ndarray], name: str) -> np.ndarray:
    """sorajax's DiT on Wan's inputs, as Wan's [C, F, H, W]; the context zero-padded to Wan's 512 positions."""
    latent = einops.rearrange(ref[f"{name}/dit_latents"], "c f h w -> f h w c")
    tokens, positions = patchify(latent, (1, 2, 2))
    n = len(tokens)
    context = ref[f"{name}/dit_context"]
    text = np.zeros((1, 512, context.shape[1]), np.float32)
    text[0, : len(context)] = context
    apply = jax.jit(lambda p, *a: pipeline.dit.apply({"params": p}, *a))
    out = apply(pipeline.dit_params, tokens[None], positions[None], np.ones((1, n), np.int32),
                ref[f"{name}/dit_t"][None] / 1000.0, text, np.ones((1, 512), np.int32))
    f, h, w, _ = latent.shape
    return einops.rearrange(np.asarray(out[0]), "(f h w) (ph pw c) -> c f (h ph) (w pw)", f=f, h=h // 2, w=w // 2,
                            ph=2, pw=2)


def _compiled(fn, *args):
    return jax.jit(fn).lower(*args).compile(compiler_options=FAST_COMPILE)


@pytest.mark.parametrize("name", sorted(ORIGINALS))
def test_converted_run_computes_what_wans_modules_compute(runs, reference, name):
    pipeline = Pipeline.from_run(runs[name])
    ref = reference
    velocity = _velocity(pipeline, ref, name)
    dit_error = np.abs(velocity - ref[f"{name}/dit_out"]).max()
    assert dit_error < 5e-5 and np.abs(ref[f"{name}/dit_out"]).max() > 4.0, dit_error  # 3e-6 of the output's size

    vae, variables = pipeline.vae, pipeline.vae_variables
    video = einops.rearrange(ref[f"{name}/vae_video"], "c t h w -> 1 t h w c")
    encode = _compiled(lambda v, x: vae.apply(v, x, method="encode_normalized"), variables, video)
    mean = einops.rearrange(np.asarray(encode(variables, video))[0], "t h w c -> c t h w")
    latent = einops.rearrange(ref[f"{name}/vae_latent"], "c t h w -> 1 t h w c")
    decode = _compiled(lambda v, z: vae.apply(v, z, method="decode_normalized"), variables, latent)
    decoded = einops.rearrange(np.asarray(decode(variables, latent))[0], "t h w c -> c t h w")
    vae_errors = np.abs(mean - ref[f"{name}/vae_mean"]).max(), np.abs(decoded - ref[f"{name}/vae_decoded"]).max()
    assert vae_errors[0] < 1e-5 and vae_errors[1] < 1e-4, vae_errors  # Wan's normalised mean (its latent statistics) and clamped decode
    assert np.abs(ref[f"{name}/vae_decoded"]).max() == 1.0  # the clamp bites

    config, params, _ = load_umt5(runs[name] / "text_encoder", runs[name] / "tokenizer")
    hidden = UMT5Encoder(config).apply({"params": params}, ref[f"{name}/t5_ids"], ref[f"{name}/t5_mask"])
    t5_error = np.abs(np.asarray(hidden) - ref[f"{name}/t5_hidden"]).max()
    assert t5_error < 1e-5 and np.abs(ref[f"{name}/t5_hidden"]).max() > 1.0, t5_error
    print(f"{name}: DiT {dit_error:.1e}, VAE encode {vae_errors[0]:.1e} decode {vae_errors[1]:.1e}, T5 {t5_error:.1e}")


def test_the_converted_original_generates_a_video(runs):
    [video] = Pipeline.from_run(runs["wan22_ti2v"]).generate(["a ball"], frames=5, height=32, width=32, steps=2)
    assert video.shape == (5, 32, 32, 3) and video.dtype == np.uint8 and video.std() > 0


# ---- refusals: one line naming file (and key), nothing left on disk ----------------------------------------
def _add_dit_key(src: Path, key: str) -> None:
    shard = sorted(src.glob("diffusion_pytorch_model-*.safetensors"))[0]
    tensors = load_file(str(shard))
    tensors[key] = np.zeros((16, 16), np.float32)
    save_file(tensors, str(shard), metadata={"format": "pt"})


DAMAGES = {
    "no_vae": (lambda src: (src / "Wan2.1_VAE.pth").unlink(),
               r"Wan2.1_VAE.pth: missing \(nor Wan2.2_VAE.pth\): Wan's original layout keeps the VAE there"),
    "no_t5": (lambda src: (src / "models_t5_umt5-xxl-enc-bf16.pth").unlink(),
              r"models_t5_umt5-xxl-enc-bf16.pth: missing: Wan's original layout keeps the UMT5 text encoder there"),
    "no_tokenizer": (lambda src: shutil.rmtree(src / "google"),
                     r"google/umt5-xxl: no tokenizer.json or spiece.model: download the google/umt5-xxl/ folder"),
    "both_vaes": (lambda src: shutil.copy(src / "Wan2.1_VAE.pth", src / "Wan2.2_VAE.pth"),
                  r"holds both Wan2.1_VAE.pth and Wan2.2_VAE.pth: which VAE the model uses is ambiguous"),
    "renamed_vae": (lambda src: (src / "Wan2.1_VAE.pth").rename(src / "Wan2.2_VAE.pth"),
                    r"Wan2.2_VAE.pth: holds a wan2.1 VAE \(by its key layout\), not the wan2.2 its name says"),
    "other_models_vae": (lambda src: ((src / "Wan2.1_VAE.pth").unlink(), shutil.copy(
        FIXTURES / "wan22_ti2v_original_tiny" / "Wan2.2_VAE.pth", src / "Wan2.2_VAE.pth")),
        r"config.json: the transformer's input channels do not match the VAE's 48 latent channels"),
    "truncated_t5": (lambda src: (src / "models_t5_umt5-xxl-enc-bf16.pth").write_bytes(
        (src / "models_t5_umt5-xxl-enc-bf16.pth").read_bytes()[:5000]),
        r"models_t5_umt5-xxl-enc-bf16.pth: not a complete PyTorch checkpoint"),
    "legacy_vae": (lambda src: (src / "Wan2.1_VAE.pth").write_bytes(pickle.dumps(0x1950A86A20F9469CFC6C, protocol=2)),
                   r"Wan2.1_VAE.pth: a legacy \(non-zip, pre-1.6\) PyTorch file"),
    "foreign_class": (lambda src: _torch_zip(src / "models_t5_umt5-xxl-enc-bf16.pth",
                                             pickle.dumps({"token_embedding.weight": print}, protocol=2)),
                      r"models_t5_umt5-xxl-enc-bf16.pth: the pickle asks for (__builtin__|builtins).print"),
    "unknown_key": (lambda src: _add_dit_key(src, "blocks.0.cross_attn.k_img.weight"),
                    r"diffusion_pytorch_model-00001-of-00005.safetensors: key 'blocks.0.cross_attn.k_img.weight' is not "
                    r"part of the Wan transformer in .* in Wan's release layout"),
    "shape": (lambda src: (src / "config.json").write_text(json.dumps(
        {**json.loads((src / "config.json").read_text()), "ffn_dim": 24})),
        r"diffusion_pytorch_model-0000\d-of-00005.safetensors \(Wan's 'blocks.0.ffn.0.\w+'\): key "
        r"'blocks.0.ffn.net.0.proj.\w+' has shape \(32,?.*but block_0/mlp/fc1/\w+ is \(.*24"),
    "i2v": (lambda src: (src / "config.json").write_text(json.dumps(
        {**json.loads((src / "config.json").read_text()), "model_type": "i2v"})),
        r"config.json: model_type 'i2v' is an image- or audio-conditioned Wan variant"),
    "wrong_family": (None, r"holds a wan2.1-t2v model .*not wan2.2-ti2v: pass --family=wan2.1-t2v"),
}


@pytest.mark.parametrize("damage", sorted(DAMAGES))
def test_a_bad_original_folder_is_refused_in_one_line_before_anything_is_written(tmp_path, damage):
    src = copy_original(tmp_path)
    change, message = DAMAGES[damage]
    if change is not None:
        change(src)
    with pytest.raises(CheckpointError) as error:
        convert(src, tmp_path / "out", family="wan2.2-ti2v" if damage == "wrong_family" else None)
    assert "\n" not in str(error.value) and re.search(message, str(error.value)), str(error.value)
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out*"))
