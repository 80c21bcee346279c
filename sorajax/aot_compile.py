"""Compile the real DiT train step for a TPU slice on this machine (no TPU needed) and report its cost.

    python -m sorajax.aot_compile --config=configs/dit_scale.py:XL_1080p_60s --topology=v5p:4x4x4 [--step sample]

``libtpu`` (``pip install 'sorajax[tpu]'``) describes the slice
(``jax.experimental.topologies.get_topology_desc``); the step is lowered with
abstract, sharded inputs and compiled by the TPU compiler. Memory and FLOPs
come from the compiled program (per chip: XLA compiles one SPMD program for all).
``--topology=cpu`` compiles for this host's devices instead (tests use 8 fake ones).
``--step sample`` compiles one sampler step instead: the DiT's forward on the conditional and
unconditional rows of ``data.rows`` clips (classifier-free guidance), with bfloat16 weights.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Sequence

# Other JAX processes on the machine hold libtpu's lock file; compiling needs no exclusive TPU access.
os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")

import flax.linen as nn  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import ml_collections  # noqa: E402
import numpy as np  # noqa: E402

from sorajax import cli  # noqa: E402
from sorajax.config_dataclasses import check_sections  # noqa: E402
from sorajax.config_loading import load_config  # noqa: E402
from sorajax.data.config import DiTDataConfig  # noqa: E402
from sorajax.diffusion.sampling import packed_denoiser  # noqa: E402
from sorajax.models.dit import DiT, abstract_params, example_inputs, parameter_count  # noqa: E402
from sorajax.parallel.mesh import MeshConfig, describe, make_mesh  # noqa: E402
from sorajax.parallel.rules import DIT_RULES, rules_from_config  # noqa: E402
from sorajax.parallel.sharding import abstract_sharded, tree_shardings, with_shardings  # noqa: E402
from sorajax.parallel.context import MeshContext  # noqa: E402
from sorajax.parallel.steps import MeshStep  # noqa: E402
from sorajax.patches import PackedBatch, packed_batch_axes  # noqa: E402
from sorajax.runs.dit_spec import SECTIONS, DiTSpec  # noqa: E402
from sorajax.train.config import DiTTrainConfig  # noqa: E402
from sorajax.train.dit_step import init_state, make_train_step, own_weights  # noqa: E402
from sorajax.train.lora_run import merged_weights  # noqa: E402
from sorajax.train.optim import make_optimizer  # noqa: E402
from sorajax.train.runner import guarded_step  # noqa: E402

GIB = 1024**3
# High-bandwidth memory per device (one JAX device = one chip; v4's megacore chip counts once).
HBM_BYTES = {"TPU v4": 32 * GIB, "TPU v5": 95 * GIB, "TPU v5p": 95 * GIB, "TPU v5 lite": 16 * GIB,
             "TPU v6 lite": 32 * GIB}


@dataclasses.dataclass
class CompileReport:
    topology: str
    device_kind: str
    chips: int
    mesh: str
    params: int
    tokens_per_step: int
    bytes_per_chip: int  # arguments + outputs - aliased (donated) + temporaries
    state_bytes_per_chip: int
    temp_bytes_per_chip: int
    flops_per_chip: float
    hbm_bytes: int | None
    model_flops: float = float("nan")  # analytic, for the whole step: see model_flops()

    @property
    def fits(self) -> bool | None:
        return None if self.hbm_bytes is None else self.bytes_per_chip <= self.hbm_bytes

    @property
    def tflops_per_step(self) -> float:
        return self.flops_per_chip * self.chips / 1e12

    def lines(self) -> list[str]:
        fits = "unknown HBM" if self.fits is None else ("fits" if self.fits else "DOES NOT FIT")
        hbm = "" if self.hbm_bytes is None else f" of {self.hbm_bytes / GIB:.0f} GiB"
        return [
            f"topology {self.topology}: {self.chips} x {self.device_kind}, mesh {self.mesh}",
            f"model {self.params / 1e6:.1f} M params, {self.tokens_per_step:,} tokens per step",
            f"per chip: {self.bytes_per_chip / GIB:.2f} GiB{hbm} ({fits}); state {self.state_bytes_per_chip / GIB:.2f}"
            f" GiB, temporaries {self.temp_bytes_per_chip / GIB:.2f} GiB",
            f"FLOPs: {self.flops_per_chip / 1e12:.2f} TFLOP per chip per step, {self.tflops_per_step:.1f} TFLOP in all"
            f" (XLA cost analysis); model FLOPs {self.model_flops / 1e12:.1f} TFLOP per step",
        ]


def topology_devices(topology: str) -> list[Any]:
    """Devices of a TPU topology like 'v5p:2x2x1' (needs libtpu), or this host's devices for 'cpu'."""
    if topology == "cpu":
        return list(jax.devices())
    from jax.experimental import topologies

    try:
        return list(topologies.get_topology_desc(platform="tpu", topology_name=topology).devices)
    except Exception as err:  # libtpu missing or an unknown name: both need a clear fix
        raise ValueError(
            f"cannot describe TPU topology {topology!r} ({err}). Install libtpu (pip install 'sorajax[tpu]') and "
            "use names like v5p:2x2x1, v5p:4x4x4, v5e:4x4, v4:2x2x1, v6e:4x4"
        ) from err


def abstract_batch(rows: int, seq_len: int, text_len: int, patch_dim: int, text_dim: int) -> PackedBatch:
    shape = jax.ShapeDtypeStruct
    return PackedBatch(
        tokens=shape((rows, seq_len, patch_dim), jnp.float32),
        positions=shape((rows, seq_len, 3), jnp.int32),
        segment_ids=shape((rows, seq_len), jnp.int32),
        t=shape((rows, seq_len), jnp.float32),
        loss_mask=shape((rows, seq_len), jnp.bool_),
        text=shape((rows, text_len, text_dim), jnp.float32),
        text_segment_ids=shape((rows, text_len), jnp.int32),
    )


def model_flops(cfg: Any, rows: int, seq_len: int, text_len: int, train: bool, frozen_weights: bool = False) -> float:
    """Matmul FLOPs of a step, counted from the shapes: 2 per parameter per token, plus attention.

    Why both this and XLA's count: XLA's cost analysis counts a scanned loop's body once (not depth
    times) and nothing inside Pallas kernels (splash), so with ``scan_layers`` it reports a fraction of
    the work. Here every row is one clip (self-attention over the whole row: 4 L^2 width per layer,
    cross-attention 4 L Lt width); a train step is 3x the forward (backward twice the forward). With
    ``frozen_weights`` (LoRA) the weights get no gradient: their matmuls cost 2x the forward, not 3x.
    """
    weights = rows * 2 * parameter_count(cfg) * seq_len
    attention = rows * cfg.depth * 4 * cfg.width * (seq_len**2 + seq_len * text_len)
    if not train:
        return float(weights + attention)
    return float(weights * (2 if frozen_weights else 3) + 3 * attention)


def _setup(config: ml_collections.ConfigDict, devices: Sequence[Any]):
    """(spec, data config, DiT config, model, mesh, rules) of a run config, checked before anything compiles."""
    check_sections(config, {*SECTIONS, "seed", "latent_channels", "text_dim", "data", "mesh", "parallel", "train"},
                   "AOT compile")
    spec = DiTSpec.from_config(config)
    data = DiTDataConfig.from_mapping(config.data)
    cfg = spec.dit_config(int(config.latent_channels), int(config.text_dim))
    mesh = make_mesh(MeshConfig.from_mapping(config.get("mesh")), devices)
    return spec, data, cfg, DiT(cfg), mesh, rules_from_config(config, DIT_RULES)


def _report(compiled: Any, devices: Sequence[Any], topology: str, mesh: Any, cfg: Any, tokens: int,
            analytic: float) -> CompileReport:
    memory = compiled.memory_analysis()
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    total = (memory.argument_size_in_bytes + memory.output_size_in_bytes - memory.alias_size_in_bytes
             + memory.temp_size_in_bytes)
    kind = devices[0].device_kind
    return CompileReport(
        topology=topology, device_kind=kind, chips=len(devices), mesh=describe(mesh), params=parameter_count(cfg),
        tokens_per_step=tokens, bytes_per_chip=int(total), state_bytes_per_chip=int(memory.argument_size_in_bytes),
        temp_bytes_per_chip=int(memory.temp_size_in_bytes), flops_per_chip=float(cost.get("flops", np.nan)),
        hbm_bytes=HBM_BYTES.get(kind), model_flops=analytic,
    )


def compile_train_step(config: ml_collections.ConfigDict, devices: Sequence[Any], topology: str = "cpu") -> CompileReport:
    """Lower and compile the trainer's own (guarded) train step of ``config`` over ``devices``; nothing is allocated.

    With ``train.lora.rank > 0`` the state is the adapters (and their EMA and Adam moments) and the base
    is a frozen bfloat16 argument laid out like the full state's weights, as `train_dit` runs LoRA.
    """
    spec, data, cfg, model, mesh, rules = _setup(config, devices)
    train = DiTTrainConfig.from_mapping(config.train)
    optimizer = make_optimizer(train)
    batch = abstract_batch(data.rows, data.seq_len, data.text_len, cfg.patch_dim, cfg.text_dim)
    lora = train.lora if train.lora.enabled else None
    state = abstract_sharded(lambda: init_state(model, optimizer, batch, 0, lora), mesh, rules)
    frozen, weights = (), own_weights
    if lora is not None:
        boxed = abstract_params(cfg)
        base = with_shardings(nn.meta.unbox(boxed), tree_shardings(boxed, mesh, rules))
        frozen = (jax.tree.map(lambda p: jax.ShapeDtypeStruct(p.shape, jnp.bfloat16, sharding=p.sharding), base),)
        weights = merged_weights(lora)
    batch = with_shardings(batch, tree_shardings(batch, mesh, rules, packed_batch_axes))
    step = make_train_step(packed_denoiser(model), optimizer, spec.time, train.caption_dropout, train.ema_decay,
                           spec.prediction, weights)
    jitted = guarded_step(MeshContext(mesh, rules), step, jax.tree.map(lambda x: x.sharding, state))
    return _report(jitted.lower(state, batch, *frozen).compile(), devices, topology, mesh, cfg,
                   data.rows * data.seq_len,
                   model_flops(cfg, data.rows, data.seq_len, data.text_len, train=True, frozen_weights=lora is not None))


def compile_sample_step(config: ml_collections.ConfigDict, devices: Sequence[Any], topology: str = "cpu") -> CompileReport:
    """Compile one guided sampler step: the DiT on 2 x ``data.rows`` rows (conditional + unconditional), bf16 weights."""
    _, data, cfg, model, mesh, rules = _setup(config, devices)
    batch = abstract_batch(2 * data.rows, data.seq_len, data.text_len, cfg.patch_dim, cfg.text_dim)
    example = example_inputs(cfg, 2 * data.rows, data.seq_len, data.text_len)
    params = abstract_sharded(lambda: model.init(jax.random.key(0), *example)["params"], mesh, rules)
    params = jax.tree.map(lambda p: jax.ShapeDtypeStruct(p.shape, jnp.bfloat16, sharding=p.sharding), params)
    batch = with_shardings(batch, tree_shardings(batch, mesh, rules, packed_batch_axes))
    denoise = packed_denoiser(model)
    token_sharding = batch.tokens.sharding  # the prediction stays laid out like the tokens it denoises
    step = MeshStep(lambda p, b: denoise(p, b.tokens, b.t, b), mesh, rules, out_shardings=token_sharding)
    return _report(step.lower(params, batch).compile(), devices, topology, mesh, cfg, 2 * data.rows * data.seq_len,
                   model_flops(cfg, 2 * data.rows, data.seq_len, data.text_len, train=False))


def main(argv: Sequence[str] | None = None) -> None:
    parser = cli.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="config file[:variant], e.g. configs/dit_scale.py:S_256")
    parser.add_argument("--topology", default="v5p:2x2x1", help="TPU topology (v5p:4x4x4, v5e:4x4, ...) or 'cpu'")
    parser.add_argument("--step", default="train", choices=["train", "sample"],
                        help="the train step, or one guided sampler step (bf16 weights)")
    parser.add_argument("--debug", action="store_true", help="on an error, show the Python traceback")
    args = parser.parse_args(argv)
    config = load_config(args.config)
    compile_step = compile_train_step if args.step == "train" else compile_sample_step
    report = compile_step(config, topology_devices(args.topology), args.topology)
    print("\n".join(report.lines()))


if __name__ == "__main__":
    cli.run_argparse(main)
