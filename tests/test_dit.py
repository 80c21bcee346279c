"""DiT: init behaviour, packed-sample isolation, per-token conditioning, bf16, sharding metadata, config."""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from sorajax.parallel.rules import DIT_RULES
from sorajax.models.dit import (
    DiT,
    DiTConfig,
    abstract_params,
    example_inputs,
    parameter_count,
)

CONFIG = DiTConfig(patch_dim=8, text_dim=12, width=32, depth=2, num_heads=2, attention_impl="auto")
L, LT = 24, 10
MESH_AXES = ("data", "fsdp", "sequence", "tensor")


def _sample(seed: int, grid: tuple[int, int, int], text_len: int, conditioning_frames: int = 0) -> dict:
    """One sample's tokens on a (t, h, w) patch grid, its per-token t and its caption."""
    rng = np.random.default_rng(seed)
    positions = np.stack(np.meshgrid(*(np.arange(n) for n in grid), indexing="ij"), -1).reshape(-1, 3)
    n = len(positions)
    t = rng.uniform(0.05, 1.0, size=n).astype(np.float32)
    t[positions[:, 0] < conditioning_frames] = 0.0  # clean conditioning frames
    return dict(
        tokens=rng.normal(size=(n, CONFIG.patch_dim)).astype(np.float32),
        positions=positions.astype(np.int32),
        t=t,
        text=rng.normal(size=(text_len, CONFIG.text_dim)).astype(np.float32),
    )


SAMPLE_A = _sample(1, (1, 2, 4), 3)  # an image: 8 tokens
SAMPLE_B = _sample(2, (3, 2, 2), 4, conditioning_frames=1)  # a clip, first frame clean: 12 tokens


def _row(samples: list[dict], pad_seed: int = 0) -> dict:
    """Pack samples into one row of length L (text LT); padding gets random junk, which must not matter."""
    rng = np.random.default_rng(100 + pad_seed)
    row = dict(
        tokens=rng.normal(size=(L, CONFIG.patch_dim)).astype(np.float32),
        positions=rng.integers(0, 9, size=(L, 3)).astype(np.int32),
        segment_ids=np.zeros(L, np.int32),
        t=rng.uniform(size=L).astype(np.float32),
        text=rng.normal(size=(LT, CONFIG.text_dim)).astype(np.float32),
        text_segment_ids=np.zeros(LT, np.int32),
    )
    start = text_start = 0
    for segment, s in enumerate(samples, start=1):
        n, nt = len(s["tokens"]), len(s["text"])
        for key in ("tokens", "positions", "t"):
            row[key][start:start + n] = s[key]
        row["segment_ids"][start:start + n] = segment
        row["text"][text_start:text_start + nt] = s["text"]
        row["text_segment_ids"][text_start:text_start + nt] = segment
        start, text_start = start + n, text_start + nt
    return row


def _batch(rows: list[dict]) -> tuple[jax.Array, ...]:
    keys = ("tokens", "positions", "segment_ids", "t", "text", "text_segment_ids")
    return tuple(jnp.asarray(np.stack([r[k] for r in rows])) for k in keys)


def _perturb(params, seed: int = 0, scale: float = 0.1):
    """Random non-zero weights, so the zero-initialised gates and output layer let signal through."""
    rng = np.random.default_rng(seed)
    return jax.tree_util.tree_map(lambda p: p + jnp.asarray(scale * rng.normal(size=p.shape), jnp.float32), params)


@pytest.fixture(scope="module")
def init_params():
    init = jax.jit(lambda rng: DiT(CONFIG).init(rng, *example_inputs(CONFIG, 2, L, LT))["params"])
    return nn.meta.unbox(init(jax.random.key(0)))


@pytest.fixture(scope="module")
def params(init_params):
    return _perturb(init_params)


@pytest.fixture(scope="module")
def apply():
    return jax.jit(lambda p, *inputs: DiT(CONFIG).apply({"params": p}, *inputs, deterministic=True))


def test_init_output_is_exactly_zero_with_plain_float32_params(init_params, apply):
    leaves = jax.tree_util.tree_leaves(init_params)
    assert all(isinstance(x, jax.Array) and x.dtype == jnp.float32 for x in leaves)
    out = apply(init_params, *_batch([_row([SAMPLE_A, SAMPLE_B]), _row([SAMPLE_B])]))
    assert out.shape == (2, L, CONFIG.patch_dim) and out.dtype == jnp.float32
    np.testing.assert_array_equal(out, 0.0)


def test_perturbed_output_is_finite_nonzero_and_zero_on_padding(params, apply):
    row = _row([SAMPLE_A, SAMPLE_B])
    out = apply(params, *_batch([row, _row([])]))  # second row is entirely padding
    assert bool(jnp.all(jnp.isfinite(out)))
    real = row["segment_ids"] > 0
    assert float(jnp.min(jnp.abs(out[0][real]).max(axis=-1))) > 1e-3  # every real token predicts something
    np.testing.assert_array_equal(out[0][~real], 0.0)
    np.testing.assert_array_equal(out[1], 0.0)


def test_packed_samples_match_samples_alone(params, apply):
    alone = apply(params, *_batch([_row([SAMPLE_A]), _row([SAMPLE_B], pad_seed=1)]))
    packed = apply(params, *_batch([_row([SAMPLE_A, SAMPLE_B], pad_seed=2), _row([SAMPLE_B, SAMPLE_A], pad_seed=3)]))
    na, nb = len(SAMPLE_A["tokens"]), len(SAMPLE_B["tokens"])
    np.testing.assert_allclose(packed[0, :na], alone[0, :na], atol=1e-5)
    np.testing.assert_allclose(packed[0, na:na + nb], alone[1, :nb], atol=1e-5)
    np.testing.assert_allclose(packed[1, :nb], alone[1, :nb], atol=1e-5)
    np.testing.assert_allclose(packed[1, nb:nb + na], alone[0, :na], atol=1e-5)
    assert float(jnp.max(jnp.abs(alone[0, :na]))) > 1e-3


def test_frame_position_every_block_keeps_packed_equal_to_alone():
    cfg = dataclasses.replace(CONFIG, frame_position_every_block=True)
    params = _perturb(nn.meta.unbox(DiT(cfg).init(jax.random.key(0), *example_inputs(cfg, 2, L, LT))["params"]))
    assert {f"place_{i}" for i in range(cfg.depth)} <= set(params)
    run = jax.jit(lambda p, *inputs: DiT(cfg).apply({"params": p}, *inputs))
    alone = run(params, *_batch([_row([SAMPLE_A]), _row([SAMPLE_B], pad_seed=1)]))
    packed = run(params, *_batch([_row([SAMPLE_B, SAMPLE_A], pad_seed=2)]))
    na, nb = len(SAMPLE_A["tokens"]), len(SAMPLE_B["tokens"])
    np.testing.assert_allclose(packed[0, :nb], alone[1, :nb], atol=1e-5)
    np.testing.assert_allclose(packed[0, nb:nb + na], alone[0, :na], atol=1e-5)
    # The re-added place changes what the model computes (it is not a no-op at these weights).
    without = {k: v for k, v in params.items() if not k.startswith("place_")}
    plain = jax.jit(lambda p, *inputs: DiT(CONFIG).apply({"params": p}, *inputs))(without, *_batch([_row([SAMPLE_A])]))
    assert float(jnp.max(jnp.abs(plain[0, :na] - alone[0, :na]))) > 1e-3


def test_padding_content_does_not_matter(params, apply):
    out1 = apply(params, *_batch([_row([SAMPLE_A, SAMPLE_B], pad_seed=5)]* 2))
    out2 = apply(params, *_batch([_row([SAMPLE_A, SAMPLE_B], pad_seed=6)] * 2))
    real = _row([SAMPLE_A, SAMPLE_B])["segment_ids"] > 0
    np.testing.assert_allclose(out1[0][real], out2[0][real], atol=1e-6)


def test_other_samples_caption_does_not_matter(params, apply):
    new_text = np.random.default_rng(9).normal(size=SAMPLE_B["text"].shape).astype(np.float32)
    recaptioned_b = dict(SAMPLE_B, text=new_text)
    base = apply(params, *_batch([_row([SAMPLE_A, SAMPLE_B])] * 2))
    changed = apply(params, *_batch([_row([SAMPLE_A, recaptioned_b])] * 2))
    na, nb = len(SAMPLE_A["tokens"]), len(SAMPLE_B["tokens"])
    np.testing.assert_allclose(changed[0, :na], base[0, :na], atol=1e-6)
    # ...while B's own outputs do follow its caption.
    assert float(jnp.max(jnp.abs(changed[0, na:na + nb] - base[0, na:na + nb]))) > 1e-3


def test_each_tokens_own_t_conditions_it(params, apply):
    na = len(SAMPLE_A["tokens"])
    row = _row([SAMPLE_A, SAMPLE_B])
    moved = _row([SAMPLE_A, SAMPLE_B])
    moved["t"][na + 5] = 0.0 if row["t"][na + 5] > 0.5 else 1.0  # one token of sample B
    base, changed = (apply(params, *_batch([r, r])) for r in (row, moved))
    diff = jnp.abs(changed[0] - base[0]).max(axis=-1)
    assert float(diff[na + 5]) > 1e-3
    np.testing.assert_allclose(changed[0, :na], base[0, :na], atol=1e-6)  # sample A does not see it


def test_gradients_are_finite_with_padding_rows(params):
    inputs = _batch([_row([SAMPLE_A, SAMPLE_B]), _row([])])

    def loss(p):
        return jnp.mean(DiT(CONFIG).apply({"params": p}, *inputs) ** 2)

    grads = jax.jit(jax.grad(loss))(params)
    leaves = jax.tree_util.tree_leaves(grads)
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in leaves)
    assert float(sum(jnp.sum(jnp.abs(g)) for g in leaves)) > 0


def test_bfloat16_compute_is_close_to_float32(params, apply):
    inputs = _batch([_row([SAMPLE_A, SAMPLE_B]), _row([SAMPLE_B])])
    low = DiT(dataclasses.replace(CONFIG, dtype="bfloat16")).apply({"params": params}, *inputs)
    ref = apply(params, *inputs)
    assert low.dtype == jnp.float32 and bool(jnp.all(jnp.isfinite(low)))
    rel = float(jnp.linalg.norm(low - ref) / jnp.linalg.norm(ref))
    assert rel < 0.05, rel


def test_dropout_only_when_not_deterministic(params):
    cfg = dataclasses.replace(CONFIG, dropout_rate=0.5)
    inputs = _batch([_row([SAMPLE_A, SAMPLE_B])])
    plain = DiT(CONFIG).apply({"params": params}, *inputs)
    eval_out = DiT(cfg).apply({"params": params}, *inputs, deterministic=True)
    train_out = DiT(cfg).apply({"params": params}, *inputs, deterministic=False, rngs={"dropout": jax.random.key(1)})
    np.testing.assert_allclose(eval_out, plain, atol=1e-6)
    assert float(jnp.max(jnp.abs(train_out - plain))) > 1e-3


def test_logical_partition_specs_and_sharded_apply(params, apply):
    model = DiT(CONFIG)
    inputs = example_inputs(CONFIG, 2, L, LT)
    abstract = jax.eval_shape(model.init, jax.random.key(0), *inputs)
    specs = nn.get_partition_spec(abstract)["params"]
    assert specs["block_0"]["self_attn"]["query"]["kernel"] == P("embed", "heads", "kv")
    assert specs["block_0"]["mlp"]["fc1"]["kernel"] == P("embed", "mlp")
    assert specs["final"]["linear"]["kernel"] == P("embed", "patch")
    assert specs["block_1"]["self_attn"]["query_norm"]["scale"] == P("kv")
    mesh_specs = nn.logical_to_mesh(specs, DIT_RULES)
    assert mesh_specs["block_0"]["mlp"]["fc1"]["kernel"] == P("fsdp", "tensor")
    assert mesh_specs["block_0"]["self_attn"]["out"]["kernel"] == P("tensor", None, "fsdp")
    # Every parameter has one logical name per dimension.
    boxed = jax.tree_util.tree_leaves(abstract, is_leaf=lambda x: isinstance(x, nn.Partitioned))
    assert all(isinstance(b, nn.Partitioned) and len(b.names) == b.value.ndim for b in boxed)

    # With a (single-device) mesh and the rules active, init and apply run through the constraints.
    mesh = jax.make_mesh((1, 1, 1, 1), MESH_AXES, axis_types=(jax.sharding.AxisType.Auto,) * 4)
    batch = _batch([_row([SAMPLE_A, SAMPLE_B]), _row([SAMPLE_B])])
    with jax.set_mesh(mesh), nn.logical_axis_rules(DIT_RULES):
        shardings = nn.logical_to_mesh_sharding(nn.get_partition_spec(abstract), mesh, DIT_RULES)
        sharded = jax.jit(model.init, out_shardings=shardings)(jax.random.key(0), *inputs)
        assert sharded["params"]["block_0"]["mlp"]["fc1"]["kernel"].value.sharding.spec == P("fsdp", "tensor")
        out = jax.jit(lambda p, *x: model.apply({"params": p}, *x))(params, *batch)
    np.testing.assert_allclose(out, apply(params, *batch), atol=1e-5)


def _expected_parameter_count(cfg: DiTConfig) -> int:
    """Independent tally of every weight and bias, layer by layer."""
    w, p, dt, hidden, hd = cfg.width, cfg.patch_dim, cfg.text_dim, cfg.mlp_hidden, cfg.head_dim
    linear = lambda i, o: i * o + o  # noqa: E731
    norm = w if cfg.qk_norm_axis == "width" else hd
    attention = 4 * linear(w, w) + (2 * norm if cfg.qk_norm else 0)
    modulation = 6 * w if cfg.modulation == "shared" else linear(w, 6 * w)  # a table, or a projection per block
    block = modulation + 2 * attention + 2 * w + linear(w, hidden) + linear(hidden, w)
    stem = linear(p, w) + (2 * dt if cfg.text_norm else 0) + linear(dt, w) + linear(w, w) + linear(256, w) + linear(w, w)
    if cfg.modulation == "shared":
        stem += linear(w, 6 * w)  # the one projection every block shares
    if cfg.caption_pool == "attention":  # keys, values, one query per head dim, output
        stem += 2 * linear(dt, w) + w + linear(w, w)
    elif cfg.caption_pool == "mean":
        stem += linear(dt, w) + linear(w, w)
    if cfg.frame_position:
        stem += linear(48, w) + linear(w, w)  # 48 Fourier features of place in frame and frame index
    if cfg.frame_position_every_block:
        block += linear(48, w)  # the same features re-added before each block
    final = (2 * w if cfg.final_layer == "table" else linear(w, 2 * w)) + linear(w, p)
    return stem + cfg.depth * block + final


@pytest.mark.parametrize("name", ["tiny", "S", "B", "L", "XL"])
def test_preset_parameter_counts(name):
    cfg = DiTConfig.preset(name)
    count = parameter_count(cfg)
    assert count == _expected_parameter_count(cfg)
    assert {"tiny": 1e6, "S": 30e6, "B": 120e6, "L": 450e6, "XL": 700e6}[name] < count


WAN_FORM = dict(modulation="shared", qk_norm_axis="width", text_norm=False, caption_pool="none",
                frame_position=False, final_layer="table")


@pytest.mark.parametrize("overrides", [dict(caption_pool="mean"), dict(frame_position=False), dict(caption_pool_heads=8),
                                       dict(frame_position_every_block=True), dict(modulation="shared"),
                                       dict(qk_norm_axis="width"), dict(mlp_hidden_dim=200), WAN_FORM])
def test_conditioning_options_parameter_counts(overrides):
    cfg = DiTConfig.preset("tiny", **overrides)
    assert parameter_count(cfg) == _expected_parameter_count(cfg)


def test_config_dict_round_trip_and_errors():
    cfg = DiTConfig.preset("tiny", depth=2, dtype="bfloat16")
    assert (cfg.width, cfg.depth, cfg.num_heads, cfg.dtype) == (128, 2, 4, "bfloat16")
    assert DiTConfig.from_dict(cfg.to_dict()) == cfg and hash(cfg) == hash(DiTConfig.from_dict(cfg.to_dict()))
    assert DiTConfig.from_dict({"rope_axis_weights": [1, 1, 1]}).rope_axis_weights == (1, 1, 1)
    with pytest.raises(ValueError, match=r"unknown key .wdith. in config .model.; known keys: .*did you mean .width.\?"):
        DiTConfig.from_dict({"wdith": 64})
    with pytest.raises(ValueError, match="unknown DiT preset"):
        DiTConfig.preset("XXL")
    with pytest.raises(ValueError, match="not divisible by num_heads"):
        DiTConfig(width=30, num_heads=4)
    with pytest.raises(ValueError, match="dtype"):
        DiTConfig(dtype="float16")
    with pytest.raises(ValueError, match="attention_impl"):
        DiTConfig(attention_impl="flash")
    with pytest.raises(ValueError, match="needs frame_position=True"):
        DiTConfig(frame_position=False, frame_position_every_block=True)


def test_wrong_input_shapes_name_the_field(params):
    tokens, positions, seg, t, text, text_seg = _batch([_row([SAMPLE_A])])
    model = DiT(CONFIG)
    with pytest.raises(ValueError, match="patch_dim"):
        model.apply({"params": params}, tokens[..., :4], positions, seg, t, text, text_seg)
    with pytest.raises(ValueError, match="^t must have shape"):
        model.apply({"params": params}, tokens, positions, seg, t[:, :5], text, text_seg)
    with pytest.raises(ValueError, match="text_segment_ids"):
        model.apply({"params": params}, tokens, positions, seg, t, text, text_seg[:, :3])


def test_abstract_params_allocate_nothing():
    tree = nn.meta.unbox(abstract_params(DiTConfig.preset("XL")))
    assert all(isinstance(x, jax.ShapeDtypeStruct) for x in jax.tree_util.tree_leaves(tree))


@pytest.mark.parametrize("name", ["wan2.1-t2v-1.3b", "wan2.1-t2v-14b", "wan2.2-ti2v-5b"])
def test_wan_presets_count_like_the_released_models_and_name_every_axis(name):
    cfg = DiTConfig.preset(name)
    assert parameter_count(cfg) == _expected_parameter_count(cfg)
    released = {"wan2.1-t2v-1.3b": 1_418_996_800, "wan2.1-t2v-14b": 14_288_491_584, "wan2.2-ti2v-5b": 4_999_787_712}
    assert parameter_count(cfg) == released[name]  # diffusers' models built without weights (tests/fixtures keys)
    boxed = jax.tree_util.tree_leaves(abstract_params(cfg), is_leaf=lambda x: isinstance(x, nn.Partitioned))
    assert all(isinstance(b, nn.Partitioned) and len(b.names) == len(b.value.shape) for b in boxed)


@pytest.mark.parametrize("overrides", [dict(modulation="shared"), WAN_FORM])
def test_shared_modulation_and_wan_form_keep_the_dit_contracts(overrides):
    cfg = dataclasses.replace(CONFIG, **overrides)
    model = DiT(cfg)
    init = nn.meta.unbox(jax.jit(lambda r: model.init(r, *example_inputs(cfg, 2, L, LT))["params"])(jax.random.key(0)))
    run = jax.jit(lambda p, *x: model.apply({"params": p}, *x))
    both = _batch([_row([SAMPLE_A, SAMPLE_B]), _row([SAMPLE_B], pad_seed=1)])
    assert float(jnp.max(jnp.abs(run(init, *both)))) == 0.0  # zero-initialised output, as adaLN-Zero
    params = _perturb(init)
    out = np.asarray(run(params, *both))
    alone = np.asarray(run(params, *_batch([_row([SAMPLE_A], pad_seed=2), _row([SAMPLE_B], pad_seed=3)])))
    n_a, n_b = len(SAMPLE_A["tokens"]), len(SAMPLE_B["tokens"])
    np.testing.assert_allclose(out[0, :n_a], alone[0, :n_a], atol=1e-5)  # packed == alone
    np.testing.assert_allclose(out[0, n_a:n_a + n_b], alone[1, :n_b], atol=1e-5)
    assert np.all(out[0, n_a + n_b:] == 0) and np.abs(out[0, :n_a]).max() > 1e-3  # padding predicts nothing
    later = _batch([_row([SAMPLE_A, SAMPLE_B]), _row([SAMPLE_B], pad_seed=1)])
    t = np.asarray(later[3]).copy()
    t[0, 0] = 0.9 if t[0, 0] < 0.5 else 0.1  # one token's noise level changes its own prediction
    changed = np.asarray(run(params, *later[:3], jnp.asarray(t), *later[4:]))
    assert np.abs(changed[0, 0] - out[0, 0]).max() > 1e-4
