"""AOT TPU compile table: config x topology -> GiB per chip, TFLOP per step, fits or not.

    python benchmarks/aot_table.py [--configs S_256 XL_1080p_60s] [--topologies v5p:2x2x1 v5p:4x4x4]

Each cell compiles the real train step with the TPU compiler from libtpu (no TPU
needed; `pip install 'sorajax[tpu]'`). Large configs take minutes to compile on a CPU.
A cell whose mesh does not fit the slice (e.g. sequence=16 on 4 chips) is reported as such.
"""

from __future__ import annotations

import argparse

from sorajax.aot_compile import GIB, compile_train_step, topology_devices
from sorajax.config_loading import load_config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", nargs="+", default=["S_256", "XL_720p", "XL_1080p_60s"])
    parser.add_argument("--topologies", nargs="+", default=["v5p:2x2x1", "v5p:4x4x4"])
    parser.add_argument("--config_file", default="configs/dit_scale.py")
    args = parser.parse_args()
    print(f"{'config':14s} {'topology':11s} {'chips':>5s} {'mesh':32s} {'GiB/chip':>9s} {'HBM':>5s} "
          f"{'TFLOP/step':>11s} fits")
    for name in args.configs:
        for topology in args.topologies:
            devices = topology_devices(topology)
            try:
                r = compile_train_step(load_config(f"{args.config_file}:{name}"), devices, topology)
            except ValueError as err:  # mesh sizes that do not divide this slice
                print(f"{name:14s} {topology:11s} {len(devices):5d} mesh does not fit this slice: {str(err)[:60]}")
                continue
            hbm = "?" if r.hbm_bytes is None else f"{r.hbm_bytes / GIB:.0f}"
            fits = "?" if r.fits is None else ("yes" if r.fits else "no")
            print(f"{name:14s} {topology:11s} {r.chips:5d} {r.mesh[:32]:32s} {r.bytes_per_chip / GIB:9.2f} {hbm:>5s} "
                  f"{r.tflops_per_step:11.1f} {fits}", flush=True)


if __name__ == "__main__":
    main()
