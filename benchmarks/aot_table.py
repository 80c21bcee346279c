"""AOT TPU compile table: config x topology -> GiB per chip, TFLOP per step, fits or not.

    python benchmarks/aot_table.py [--configs S_256 XL_1080p_60s] [--topologies v5p:2x2x1 v5p:4x4x4]
        [--steps train sample] [--config_file configs/wan_scale.py] [--cells 1.3b_480p@v5p:2x2x1 ...]

Each cell compiles the real train step (or one guided sampler step, ``--steps sample``) with the TPU compiler from libtpu (no TPU
needed; `pip install 'sorajax[tpu]'`). Large configs take minutes to compile on a CPU.
TFLOP/step is XLA's cost analysis (a scanned layer loop counted once, splash kernels not at all);
model TFLOP counts the matmuls from the shapes (``sorajax.aot_compile.model_flops``).
A cell whose mesh does not fit the slice (e.g. sequence=16 on 4 chips) is reported as such.
``--until_fits`` tries the topologies in the order given for each config and step and stops at the
first that fits: the smallest slice, when they are listed smallest first.
"""

from __future__ import annotations

import argparse
import itertools
import re

import jax

from sorajax.aot_compile import GIB, compile_sample_step, compile_train_step, topology_devices
from sorajax.config_loading import load_config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", nargs="+", default=["S_256", "XL_720p", "XL_1080p_60s"])
    parser.add_argument("--topologies", nargs="+", default=["v5p:2x2x1", "v5p:4x4x4"])
    parser.add_argument("--config_file", default="configs/dit_scale.py")
    parser.add_argument("--steps", nargs="+", default=["train"], choices=["train", "sample"])
    parser.add_argument("--cells", nargs="+", default=None,
                        help="config@topology pairs instead of every config x topology")
    parser.add_argument("--until_fits", action="store_true",
                        help="per config and step, stop at the first topology that fits (list them smallest first)")
    args = parser.parse_args()
    cells = ([tuple(c.split("@")) for c in args.cells] if args.cells
             else [(name, topology) for name in args.configs for topology in args.topologies])
    print(f"{'config':14s} {'step':6s} {'topology':11s} {'chips':>5s} {'mesh':32s} {'GiB/chip':>9s} {'HBM':>5s} "
          f"{'TFLOP/step':>11s} {'model TFLOP':>12s} fits")
    fitted: set = set()
    for (name, topology), step in itertools.product(cells, args.steps):
        if args.until_fits and (name, step) in fitted:
            continue
        devices = topology_devices(topology)
        compile_step = compile_train_step if step == "train" else compile_sample_step
        try:
            r = compile_step(load_config(f"{args.config_file}:{name}"), devices, topology)
        except ValueError as err:  # mesh sizes that do not divide this slice
            print(f"{name:14s} {step:6s} {topology:11s} {len(devices):5d} mesh does not fit this slice: {str(err)[:60]}")
            continue
        except jax.errors.JaxRuntimeError as err:  # the TPU compiler's own out-of-memory verdict
            if "RESOURCE_EXHAUSTED" not in str(err):
                raise
            needed = re.search(r"temporaries \(([\d.]+G)\)", str(err))
            print(f"{name:14s} {step:6s} {topology:11s} {len(devices):5d} does not fit: the compiler needs "
                  f"{needed.group(1) if needed else '?'} of temporaries per chip", flush=True)
            continue
        hbm = "?" if r.hbm_bytes is None else f"{r.hbm_bytes / GIB:.0f}"
        fits = "?" if r.fits is None else ("yes" if r.fits else "no")
        if r.fits:
            fitted.add((name, step))
        print(f"{name:14s} {step:6s} {topology:11s} {r.chips:5d} {r.mesh[:32]:32s} {r.bytes_per_chip / GIB:9.2f} "
              f"{hbm:>5s} {r.tflops_per_step:11.1f} {r.model_flops / 1e12:12.1f} {fits}", flush=True)


if __name__ == "__main__":
    main()
