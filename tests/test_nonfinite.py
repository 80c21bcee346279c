"""The non-finite loss guard: a NaN step changes nothing and is counted; a run of them stops the run cleanly."""

import flax
import grain
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from sorajax.data.iterators import batch_iterator
from sorajax.models.dit import DiT
from sorajax.parallel.context import MeshContext
from sorajax.runs.checkpoints import Checkpointer
from sorajax.runs.metrics import read_metrics
from sorajax.train.config import TrainConfig
from sorajax.train.nonfinite import NonFiniteLossError, skip_nonfinite
from sorajax.train.runner import Trainer, run_training
from tests.parallel_cases.common import dit_state, mesh_context, optimizer, packed_batch, tiny_config, train_step_fn


@flax.struct.dataclass
class _State:
    step: jax.Array
    params: dict
    opt_state: object
    rng: jax.Array


_OPT = optax.sgd(0.1)


def _init() -> _State:
    params = {"w": jnp.zeros(4)}
    return _State(jnp.int32(0), params, _OPT.init(params), jax.random.PRNGKey(0))


def _step(state: _State, batch: dict) -> tuple[_State, dict]:
    """Least squares on one batch; the gradient is NaN when the batch is."""
    def loss(params):
        return jnp.mean((batch["x"] @ params["w"] - batch["y"]) ** 2)

    value, grads = jax.value_and_grad(loss)(state.params)
    updates, opt_state = _OPT.update(grads, state.opt_state)
    return state.replace(step=state.step + 1, params=optax.apply_updates(state.params, updates),
                         opt_state=opt_state), {"loss": value, "grad_norm": optax.tree.norm(grads)}


class _Batches:
    """Batch j: a least-squares problem; the indices in `bad` carry a NaN."""

    def __init__(self, bad):
        self.bad = set(bad)

    def __call__(self, j):
        rng = np.random.default_rng(j)
        x = rng.normal(size=(8, 4)).astype(np.float32)
        if j in self.bad:
            x[0, 0] = np.nan
        return {"x": x, "y": x @ np.arange(1.0, 5.0, dtype=np.float32)}


def _trainer(bad) -> Trainer:
    batches = batch_iterator(grain.MapDataset.range(1000).map(_Batches(bad)), prefetch_threads=0)
    return Trainer(name="toy", train_command="toy", init_state=_init, train_step=_step, batches=batches,
                   batch_axes=lambda path, leaf: ("batch",) + (None,) * (leaf.ndim - 1), fingerprint="toy", meta={})


def _settings(steps, **extra):
    return TrainConfig(steps=steps, warmup_steps=0, log_every=1, save_every=2, async_checkpoints=False, **extra)


def _ctx():
    return MeshContext.create(None, ())


def test_a_nan_step_is_skipped_counted_and_changes_no_weight(tmp_path):
    # Batch index 2 is the third step's batch (grain counts from 0).
    run_training(_ctx(), _trainer(bad={2}), _settings(4), tmp_path, {"toy": 1})
    log = read_metrics(tmp_path)
    assert [r["nonfinite"] for r in log] == [0, 0, 1, 0]
    assert [r["nonfinite_steps"] for r in log] == [0, 0, 1, 1]
    assert np.isnan(log[2]["loss"]) and np.isfinite(log[3]["loss"])
    ckpt = Checkpointer(tmp_path / "checkpoints", async_save=False)
    after_two, _ = ckpt.restore(_init(), step=2)
    after_four, _ = ckpt.restore(_init(), step=4)
    ckpt.close()
    assert int(after_four.step) == 4  # the data moved on
    # Step 3 changed nothing, so step 4 is one clean SGD step from the weights of step 2.
    want, _ = _step(after_two, _Batches(set())(3))
    np.testing.assert_array_equal(np.asarray(after_four.params["w"]), np.asarray(want.params["w"]))


def test_a_run_of_nan_steps_stops_with_the_last_good_checkpoint_intact(tmp_path):
    with pytest.raises(NonFiniteLossError, match=r"NaN or Inf in 3 steps in a row \(steps 3-5\).*step 4\) is intact"):
        run_training(_ctx(), _trainer(bad={2, 3, 4, 5, 6}), _settings(8, max_nonfinite_steps=3), tmp_path, {"toy": 1})
    ckpt = Checkpointer(tmp_path / "checkpoints", async_save=False)
    assert ckpt.all_steps() == [2, 4]  # nothing saved after the run was stopped
    good, _ = ckpt.restore(_init(), step=2)
    newest, _ = ckpt.restore(_init(), step=4)
    ckpt.close()
    # The step-4 checkpoint (mid-streak) holds step 2's weights exactly: resuming skips the bad batches.
    assert np.all(np.isfinite(np.asarray(newest.params["w"])))
    np.testing.assert_array_equal(np.asarray(newest.params["w"]), np.asarray(good.params["w"]))


def test_the_dit_step_leaves_params_ema_and_adam_bitwise_unchanged_on_a_nan_batch():
    dit, opt, batch = DiT(tiny_config()), optimizer(), packed_batch()
    state, _ = dit_state(mesh_context(), dit, opt, batch)
    bad = batch.replace(tokens=np.where(np.arange(batch.tokens.shape[1])[None, :, None] == 5, np.nan, batch.tokens))
    guarded = jax.jit(skip_nonfinite(train_step_fn(dit, opt)))
    new, metrics = guarded(state, bad)
    assert int(metrics["nonfinite"]) == 1 and not np.isfinite(float(metrics["loss"]))
    for name in ("params", "ema_params", "opt_state"):
        for a, b in zip(jax.tree.leaves(getattr(new, name)), jax.tree.leaves(getattr(state, name)), strict=True):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=name)
    assert int(new.step) == 1 and not np.array_equal(np.asarray(new.rng), np.asarray(state.rng))
    good, metrics = guarded(state, batch)
    assert int(metrics["nonfinite"]) == 0
    assert any(not np.array_equal(np.asarray(a), np.asarray(b))
               for a, b in zip(jax.tree.leaves(good.params), jax.tree.leaves(state.params)))


def test_a_nan_batch_mid_run_of_the_dit_trainer_is_skipped_counted_and_leaves_the_weights_bitwise(
        tmp_path, tmp_path_factory, monkeypatch):
    """The drill end to end: `train_dit` as the command runs it, one batch poisoned with a NaN latent at step 3
    (a test hook around the trainer's `prepare_batch`). Step 3 is logged as non-finite and counted, the weights
    and their EMA after it are bitwise those of step 2, and training goes on (step 4 changes them)."""
    import flax.linen as nn

    from sorajax.config_loading import load_config
    from sorajax.models.dit import abstract_params
    from sorajax.models.build import build_text_encoder
    from sorajax.runs.loaders import load_autoencoder, load_weights
    from sorajax.train import dit_trainer
    from tests.tiny_runs import shared_vae

    vae = shared_vae(tmp_path_factory)  # before the trainer is patched below: it may train the shared runs
    poisoned_step = 3
    real_run_training = dit_trainer.run_training

    def run_with_a_poisoned_batch(ctx, trainer, settings, run, config, init_from=""):
        prepare, calls = trainer.prepare_batch, []

        def poisoned(batch):
            calls.append(1)
            batch = prepare(batch)
            if len(calls) == poisoned_step:
                batch = batch.replace(tokens=np.where(batch.segment_ids[..., None] > 0, np.nan, batch.tokens))
            return batch

        trainer.prepare_batch = poisoned
        return real_run_training(ctx, trainer, settings, run, config, init_from)

    monkeypatch.setattr(dit_trainer, "run_training", run_with_a_poisoned_batch)
    config = load_config("configs/dit_tiny.py:smoke", {"vae_workdir": str(vae), "train.steps": 4,
                                                       "train.save_every": 1, "train.keep_checkpoints": 4,
                                                       "eval.every": 4})
    dit_trainer.train_dit(config, tmp_path / "dit")

    log = [r for r in read_metrics(tmp_path / "dit") if "loss" in r]
    assert [r["step"] for r in log] == [1, 2, 3, 4]
    assert [r["nonfinite"] for r in log] == [0, 0, 1, 0] and [r["nonfinite_steps"] for r in log] == [0, 0, 1, 1]
    assert np.isnan(log[2]["loss"]) and np.isfinite(log[3]["loss"])
    spec = dit_trainer.DiTRunConfig.from_config(config).spec
    channels = load_autoencoder(vae).vae.config.latent_channels
    shapes = nn.meta.unbox(abstract_params(spec.dit_config(channels, build_text_encoder(spec.text_encoder).dim)))
    for weights in ("params", "ema_params"):
        before, after, later = (load_weights(tmp_path / "dit", step, shapes, weights) for step in (2, 3, 4))
        for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(after), strict=True):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=weights)
        assert any(not np.array_equal(np.asarray(a), np.asarray(b))
                   for a, b in zip(jax.tree.leaves(after), jax.tree.leaves(later)))
