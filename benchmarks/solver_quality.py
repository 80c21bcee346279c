"""Quality per sampler step: world-probe agreement of each solver at a few step counts, one run.

    python benchmarks/solver_quality.py --run=runs/main/dit [--num_prompts 48]

Default grid: DPM-Solver++(2M) at 8 and 10 steps, Heun at 5 steps (9 network evaluations), Euler at
10 and 50 steps; same prompts, same noise seeds, same guidance. Prints agreement rates, network
evaluations (NFE) and seconds per prompt, and the gap of each to Euler at 50 steps.
"""

from __future__ import annotations

import argparse
import dataclasses
import time

from sorajax.diffusion.samplers import num_function_evals
from sorajax.eval.probe_report import run_probe_report
from sorajax.host_memory import reexec_with_tunables
from sorajax.logging_setup import quiet_library_logs
from sorajax.pipeline import Pipeline

GRID = (("dpmpp_2m", 8), ("dpmpp_2m", 10), ("heun", 5), ("euler", 10), ("euler", 50))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", default="runs/main/dit")
    parser.add_argument("--num_prompts", type=int, default=48)
    parser.add_argument("--frames", type=int, default=9)
    args = parser.parse_args()
    quiet_library_logs()
    pipeline = Pipeline.from_run(args.run)
    rows = []
    for method, steps in GRID:
        request = dataclasses.replace(pipeline.defaults, method=method, steps=steps, seed=1234)
        start = time.perf_counter()
        report = run_probe_report(pipeline, args.num_prompts, args.frames, request)
        seconds = (time.perf_counter() - start) / args.num_prompts
        rows.append((method, steps, num_function_evals(method, steps), report["rates"], seconds))
    reference = next(r[3] for r in rows if r[0] == "euler" and r[1] == 50)
    print(f"\n{args.num_prompts} probe prompts, guidance {pipeline.defaults.guidance} (chance: colour 0.12, direction 0.11)")
    print(f"{'solver':10s} {'steps':>5s} {'NFE':>4s} {'colour':>7s} {'shape':>6s} {'direction':>9s} "
          f"{'Δcolour':>8s} {'Δdirection':>10s} {'s/prompt':>8s}")
    for method, steps, nfe, rates, seconds in rows:
        print(f"{method:10s} {steps:5d} {nfe:4d} {rates['colour']:7.1%} {rates['shape']:6.1%} {rates['direction']:9.1%} "
              f"{100 * (rates['colour'] - reference['colour']):+7.1f}p {100 * (rates['direction'] - reference['direction']):+9.1f}p "
              f"{seconds:8.2f}")


if __name__ == "__main__":
    reexec_with_tunables()  # time sorajax as its commands run it: malloc tuned for XLA (sorajax.host_memory)
    main()
