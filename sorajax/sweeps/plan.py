"""A sweep planned and checked before anything trains: every member's config, run directory and commands.

Why check everything first: a sweep runs for hours, and a typo in its fifth member's key should not
surface after four members have trained. Each member's config is built the way its trainer will build
it (the config file, then SHARED, the member's overrides and the command line's `--config.k=v`, which
win) and validated by the trainer's own config classes; a DiT sweep's autoencoder run must exist; a
member directory trained with other settings is refused rather than silently resumed or skipped.
"""

from __future__ import annotations

import dataclasses
import json
import shlex
from typing import Any, Callable

import ml_collections

from sorajax.config_loading import apply_override, load_config
from sorajax.runs.checkpoints import checkpoints_dir, open_run
from sorajax.runs.paths import run_path
from sorajax.runs.records import CONFIG_FILE, setting_changes
from sorajax.sweeps.manifest import read_marker
from sorajax.sweeps.members import Overrides, SweepFile, member_names, override_flag

TRAIN_DIT, TRAIN_VAE = "sorajax.train_dit", "sorajax.train_vae"
PROBE = "sorajax.probe"
PYTHON = "python"  # argv[0] of a printed command; local runs use this interpreter
_COMMAND_LINE = "the command line"


def _validators() -> dict[str, Callable[[ml_collections.ConfigDict], Any]]:
    from sorajax.train.dit_trainer import DiTRunConfig  # heavy (jax, flax): only when a sweep is planned
    from sorajax.train.vae_trainer import VAERunConfig

    return {TRAIN_DIT: DiTRunConfig.from_config, TRAIN_VAE: VAERunConfig.from_config}


@dataclasses.dataclass
class Member:
    index: int
    name: str
    overrides: Overrides
    run: str
    config: ml_collections.ConfigDict
    commands: list[list[str]]
    status: str = "pending"
    exit_code: int | None = None
    wall_s: float | None = None
    note: str = ""

    def record(self) -> dict[str, Any]:
        return {"name": self.name, "overrides": self.overrides, "run": self.run, "status": self.status,
                "exit_code": self.exit_code, "wall_s": self.wall_s, "note": self.note,
                "commands": [shlex.join(c) for c in self.commands]}


@dataclasses.dataclass
class SweepPlan:
    sweep: SweepFile
    config_spec: str
    workdir: str
    trainer: str
    probe_prompts: int
    cli_overrides: dict[str, str]
    members: list[Member]
    notes: list[str]

    def record(self) -> dict[str, Any]:
        return {"sweep": self.sweep.path, "config": self.config_spec, "trainer": self.trainer,
                "shared": self.sweep.shared, "cli_overrides": self.cli_overrides, "probe_prompts": self.probe_prompts,
                "members": [m.record() for m in self.members]}


def trainer_of(config: ml_collections.ConfigDict, spec: str) -> str:
    """DiT configs name their autoencoder run; autoencoder configs have a `vae` section."""
    if "vae_workdir" in config:
        return TRAIN_DIT
    if "vae" in config:
        return TRAIN_VAE
    raise ValueError(f"cannot tell which trainer runs {spec!r} (no vae_workdir, no vae section): set COMMAND in the "
                     "sweep file to 'sorajax.train_dit' or 'sorajax.train_vae'")


def _apply(config: ml_collections.ConfigDict, overrides: dict[str, Any], where: str) -> None:
    for key, value in overrides.items():
        try:
            apply_override(config, key, value)
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            message = error.args[0] if error.args else error
            setting = f"--config.{key}={value}" if where == _COMMAND_LINE else f"{key}={value!r}"
            raise ValueError(f"{where}: {setting} is refused: {message}") from None


def _check_autoencoder(vae_workdir: str) -> str | None:
    """None when the autoencoder run has a checkpoint; else the one line that says what to do."""
    if vae_workdir and checkpoints_dir(vae_workdir).is_dir():
        try:
            open_run(vae_workdir, None, f"{PYTHON} -m {TRAIN_VAE}").close()
            return None
        except (FileNotFoundError, ValueError):
            pass
    return (f"a DiT sweep needs a trained autoencoder, and vae_workdir={vae_workdir!r} has no checkpoint: train one "
            f"(python -m {TRAIN_VAE} --config=configs/vae_tiny.py --workdir=runs/main/vae) and pass it with "
            "--config.vae_workdir=DIR or SHARED = {'vae_workdir': DIR} in the sweep file")


def _refuse_other_settings(member: Member) -> None:
    """A member directory made with other settings would be resumed (or skipped) under a false name."""
    path = run_path(member.run) / CONFIG_FILE
    if not path.exists():
        return
    changes = setting_changes(json.loads(path.read_text()), member.config)
    if changes:
        shown = "; ".join(changes[:3]) + (f"; ... ({len(changes)} in all)" if len(changes) > 3 else "")
        raise ValueError(f"sweep member {member.name}: its run {member.run} was trained with other settings ({shown}); "
                         "pass another --workdir, or delete that run to train it again")


def member_status(member: Member, probe_prompts: int) -> str:
    marker = read_marker(member.run)
    if marker is not None and marker.get("probe_prompts", 0) >= probe_prompts:
        member.wall_s = marker.get("wall_s")
        return "done"
    return "started" if checkpoints_dir(member.run).is_dir() else "pending"


def plan_sweep(sweep: SweepFile, workdir: str, config_spec: str | None = None,
               cli_overrides: dict[str, str] | None = None, probe_prompts: int | None = None,
               require_autoencoder: bool = True) -> SweepPlan:
    """Every member built and validated; the first problem raises ValueError naming the member and the key."""
    spec = config_spec or sweep.config
    if not spec:
        raise ValueError(f"no config: pass --config=configs/X.py[:variant] or set CONFIG in {sweep.path}")
    cli_overrides = dict(cli_overrides or {})
    base = load_config(spec)
    _apply(base, cli_overrides, _COMMAND_LINE)  # a bad --config.k=v is named once, not per member
    trainer = sweep.command or trainer_of(base, spec)
    probe = sweep.probe_prompts if probe_prompts is None else probe_prompts
    if probe and trainer != TRAIN_DIT:
        raise ValueError(f"the probe report scores DiT runs, and this sweep trains with {trainer}: set PROBE_PROMPTS "
                         "= 0 in the sweep file or pass --probe_prompts=0")
    validate = _validators()[trainer]
    notes = [f"--config.{k} replaces the members' own {k} (their run directories keep the members' names)"
             for k in cli_overrides if any(k in m for m in sweep.members)]
    members = []
    for index, (name, overrides) in enumerate(zip(member_names(sweep.members), sweep.members)):
        config = load_config(spec)
        _apply(config, sweep.shared, f"sweep member {name} (SHARED)")
        _apply(config, overrides, f"sweep member {name}")
        _apply(config, cli_overrides, f"sweep member {name} (command line)")
        try:
            validate(config)
        except (ValueError, TypeError, KeyError) as error:
            raise ValueError(f"sweep member {name}: {error.args[0] if error.args else error}") from None
        run = f"{workdir.rstrip('/')}/{name}"  # as given (relative stays relative): --print's commands run elsewhere
        flags = {k: override_flag(k, v) for k, v in {**sweep.shared, **overrides}.items()}
        flags.update({k: f"--config.{k}={v}" for k, v in cli_overrides.items()})
        commands = [[PYTHON, "-m", trainer, f"--config={spec}", f"--workdir={run}", *flags.values()]]
        if probe:
            commands.append([PYTHON, "-m", PROBE, f"--run={run}", f"--num_prompts={probe}", f"--out={run}"])
        member = Member(index, name, overrides, run, config, commands)
        _refuse_other_settings(member)
        member.status = member_status(member, probe)
        members.append(member)
    if trainer == TRAIN_DIT:
        for vae_workdir in sorted({str(m.config.vae_workdir) for m in members}):
            problem = _check_autoencoder(vae_workdir)
            if problem and require_autoencoder:
                raise ValueError(problem)
            if problem:
                notes.append(problem)
    return SweepPlan(sweep, spec, workdir, trainer, probe, cli_overrides, members, notes)
