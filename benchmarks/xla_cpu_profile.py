"""Where an XLA:CPU step's time goes, op by op: the Wan transformer's train or guided step from wan_speed.py.

    python benchmarks/xla_cpu_profile.py [--step train|guided] [--top 20] [wan_speed.py's size flags ...]

Why: on CPU the step's time is what a comparison with PyTorch turns on, and XLA's compiled program runs
as a list of fused ops ("thunks"). This traces two steps with ``jax.profiler`` (per-op events need
``--xla_cpu_enable_xprof_traceme``, set here before JAX starts), reads the Perfetto trace, and prints per step:
the seconds in dot fusions and in the other ops, how much ops overlapped (XLA runs independent ops at once on
the same thread pool, so an op's own time is not its cost when it overlapped), and the slowest dots with their
operand shapes and GFLOP/s.
"""

from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import math
import os
import re
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE, os.path.dirname(HERE)]
TRACEME = "--xla_cpu_enable_xprof_traceme=true"
if TRACEME not in os.environ.get("XLA_FLAGS", ""):  # once, though the malloc restart runs this again
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {TRACEME}".strip()

from sorajax.host_memory import reexec_with_tunables  # noqa: E402

STEPS = 2


def op_events(trace_dir: str) -> list[dict]:
    path = glob.glob(f"{trace_dir}/**/perfetto_trace.json.gz", recursive=True)[0]
    trace = json.load(gzip.open(path))
    events = trace["traceEvents"] if isinstance(trace, dict) else trace
    return [e for e in events if e.get("ph") == "X" and not e["name"].startswith(("$", "Thunk", "Pjit", "Slinky"))]


def covered_seconds(events: list[dict]) -> float:
    """Seconds during which at least one op ran (the union of the op intervals)."""
    total, end = 0.0, -math.inf
    for start, stop in sorted((e["ts"], e["ts"] + e["dur"]) for e in events):
        if start > end:
            total, end = total + stop - start, stop
        elif stop > end:
            total, end = total + stop - end, stop
    return total / 1e6


def dots_of(hlo: str) -> dict[str, tuple[str, str, float]]:
    """{fusion name: (lhs shape, rhs shape, FLOPs)} for every fusion whose computation holds one dot."""
    calls = dict(re.findall(r"^\s*%?([\w.\-]+) = \S+ fusion\(.*?calls=%?([\w.\-]+)", hlo, re.M))
    bodies = {m.group(1): m.group(2) for m in re.finditer(r"^%?([\w.\-]+) [^\n]*\{\n(.*?)\n\}", hlo, re.M | re.S)}
    found = {}
    for fusion, computation in calls.items():
        body = bodies.get(computation, "")
        dot = re.search(r"= (\w+)\[([\d,]*)\]\S* dot\((%?[\w.\-]+), (%?[\w.\-]+)\).*?lhs_contracting_dims=\{([\d,]*)\}",
                        body)
        if not dot:
            continue
        shapes = dict(re.findall(r"(%?[\w.\-]+) = (\w+\[[\d,]*\])", body))
        lhs, rhs = shapes.get(dot.group(3), "?"), shapes.get(dot.group(4), "?")
        lhs_dims = [int(d) for d in re.findall(r"\d+", lhs.split("[")[1])] if "[" in lhs else []
        contracted = math.prod(lhs_dims[int(i)] for i in dot.group(5).split(",") if i) if lhs_dims else 0
        out = math.prod(int(d) for d in dot.group(2).split(",") if d)
        found[fusion] = (lhs, rhs, 2.0 * out * contracted)
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--step", default="train", choices=["train", "guided"])
    parser.add_argument("--top", type=int, default=20)
    args, wan_args = parser.parse_known_args()
    import jax
    import wan_speed

    speed_args = wan_speed.parse_args(["--sides", "sorajax", *wan_args])
    side = wan_speed.SorajaxSide(speed_args, wan_speed.make_inputs(speed_args), None)
    for _ in range(2):
        side.timed(args.step)  # compiled, warm
    with tempfile.TemporaryDirectory(prefix="xla_cpu_profile_") as trace_dir:
        with jax.profiler.trace(trace_dir, create_perfetto_trace=True):
            walls = [side.timed(args.step)[0] for _ in range(STEPS)]
        events = op_events(trace_dir)
    compiled = side.train_step if args.step == "train" else side.guided_step
    dots = dots_of(compiled.as_text())
    seconds = collections.Counter()
    for e in events:
        seconds[e["name"]] += e["dur"] / 1e6 / STEPS
    dot_s = sum(s for name, s in seconds.items() if name in dots)
    print(f"{args.step} step: {sum(walls) / STEPS:.3f} s wall; ops ran {covered_seconds(events) / STEPS:.3f} s, "
          f"their own times sum to {sum(seconds.values()):.3f} s (the excess is ops overlapping)")
    print(f"dot fusions {dot_s:.3f} s ({sum(dots[n][2] for n in seconds if n in dots) / 1e9:.0f} GFLOP), "
          f"other ops {sum(seconds.values()) - dot_s:.3f} s")
    print(f"{'s/step':>7s} {'GFLOP':>7s} {'GFLOP/s':>8s}  dot (lhs x rhs)")
    for name, s in sorted(((n, s) for n, s in seconds.items() if n in dots), key=lambda x: -x[1])[:args.top]:
        lhs, rhs, flops = dots[name]
        print(f"{s:7.3f} {flops / 1e9:7.1f} {flops / s / 1e9:8.0f}  {lhs} x {rhs}  {name}")


if __name__ == "__main__":
    reexec_with_tunables()  # as sorajax's commands run
    main()
