"""Run a config sweep: every member of a sweep file trained in its own run directory, or its commands printed.

    python -m sorajax.sweep --config=configs/dit_tiny.py --sweep=experiments/sweeps/compute_scaling.py \\
        --workdir=runs/compute_scaling [--parallel=2] [--print] [--probe_prompts=48] [--config.train.seed=1 ...]

The sweep file (see `sorajax.sweeps.members`) lists each member's config overrides; `--config.key=value`
flags apply to every member (and win over the members' own). Every member's config is checked before
the first one trains. Re-running the same command skips finished members and resumes interrupted ones.
`--print` writes one launch command per member (for a cluster scheduler) and runs nothing.
Compare the members afterwards with `python -m sorajax.compare <workdir>`.
"""

from __future__ import annotations

import argparse
import shlex
import sys

from sorajax import cli
from sorajax.sweeps.manifest import write_manifest
from sorajax.sweeps.members import load_sweep
from sorajax.sweeps.plan import plan_sweep
from sorajax.sweeps.runner import SweepRunner

_OVERRIDE = "--config."


def parse(argv: list[str]) -> tuple[argparse.Namespace, dict[str, str]]:
    """The flags, and the `--config.key=value` overrides in the order given."""
    parser = cli.ArgumentParser(prog="python -m sorajax.sweep", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="config file[:variant] (default: the sweep file's CONFIG)")
    parser.add_argument("--sweep", required=True, help="sweep file (experiments/sweeps/*.py)")
    parser.add_argument("--workdir", required=True, help="the sweep's folder: one run directory per member")
    parser.add_argument("--parallel", type=int, default=1, help="members trained at once (default 1)")
    parser.add_argument("--print", dest="print_only", action="store_true",
                        help="print one launch command per member and run nothing")
    parser.add_argument("--probe_prompts", type=int, default=None,
                        help="probe report after each DiT member with this many prompts (default: the sweep file's "
                             "PROBE_PROMPTS; 0: none)")
    parser.add_argument("--debug", action="store_true", help="on an error, show the Python traceback")
    overrides, rest = {}, []
    for arg in argv:
        if arg.startswith(_OVERRIDE):
            key, equals, value = arg[len(_OVERRIDE):].partition("=")
            if not key or not equals:
                parser.error(f"{arg}: write config overrides as --config.key=value")
            overrides[key] = value
        else:
            rest.append(arg)
    return parser.parse_args(rest), overrides


def main(argv: list[str] | None = None) -> None:
    args, overrides = parse(sys.argv[1:] if argv is None else argv)
    sweep = load_sweep(args.sweep)
    plan = plan_sweep(sweep, args.workdir, args.config, overrides, args.probe_prompts,
                      require_autoencoder=not args.print_only)
    if args.print_only:
        for note in plan.notes:
            print(f"note: {note}", file=sys.stderr)
        for member in plan.members:
            print(" && ".join(shlex.join(command) for command in member.commands))
        write_manifest(plan.workdir, plan.record())
        return
    print(f"sweep {sweep.path}: {len(plan.members)} members of {plan.config_spec} ({plan.trainer}) in {plan.workdir}")
    code = SweepRunner(plan, args.parallel).run()
    if code:
        sys.exit(code)


if __name__ == "__main__":
    cli.run_argparse(main)
