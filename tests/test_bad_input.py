"""The bad-input battery: every command and the Python API, fed what a new user might type.

Each case asserts a non-zero exit, EXACTLY one line on stderr naming the problem, and no traceback.
Commands run in this process as `python -m` runs them (their `__main__` block, through the one error
boundary, with `sys.argv` set and stderr captured at the file descriptor): a JAX import per case would
add minutes. One tiny autoencoder run and one tiny DiT run are trained once for the module.
"""

from __future__ import annotations

import contextlib
import copy
import re
import runpy
import shutil
import sys

import numpy as np
import pytest
from absl import flags
from absl.testing import flagsaver

from sorajax import cli  # noqa: F401 - defines --debug once, before any command runs (every command reads it)
from sorajax.config_loading import load_config
from sorajax.video_io import write_image, write_video
from tests.tiny_runs import copied_runs


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """{name: path}: a trained autoencoder and DiT (1 step each), media files good and bad, an empty run."""
    root = tmp_path_factory.mktemp("bad_input")
    copied_runs(tmp_path_factory, root)
    clip = np.random.default_rng(0).integers(0, 255, (5, 16, 16, 3), np.uint8)
    write_video(str(root / "clip.mp4"), clip)
    write_image(str(root / "still.png"), clip[0])
    (root / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 not a video" * 8)
    (root / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    (root / "blank_prompts.txt").write_text("\n   \n\n")
    (root / "empty_run" / "checkpoints").mkdir(parents=True)
    shutil.copy(root / "vae" / "config.json", root / "empty_run" / "config.json")
    (root / "garbled_run" / "checkpoints").mkdir(parents=True)
    (root / "garbled_run" / "config.json").write_text("{ not json")
    (root / "media_none").mkdir()
    (root / "media_none" / "notes.txt").write_text("no media here")
    (root / "sweep_bad.py").write_text("MEMBERS = [{'train.stepz': 3}]\nCONFIG = 'configs/vae_tiny.py:smoke'\n")
    return {"root": root, "vae": root / "vae", "dit": root / "dit"}


def _command_flags_removed() -> None:
    """Forget the flags the commands defined (each defines its own --run, --workdir, ...), keeping the libraries'
    and the boundary's (--debug): a command run again as `__main__` defines them anew."""
    registry = flags.FLAGS
    for name in list(registry):
        module = registry.find_module_defining_flag(name, default="")
        if module == "__main__" or (module.startswith("sorajax.") and module != "sorajax.cli"):
            delattr(registry, name)


def _copied(value):
    """The registry's tables copied down to their lists (the flags themselves shared)."""
    if isinstance(value, dict):
        return {k: list(v) if isinstance(v, list) else v for k, v in value.items()}
    return copy.copy(value)


@contextlib.contextmanager
def _own_flag_registry():
    """The flag registry as it was before, afterwards (other test files' imported commands keep theirs)."""
    registry = flags.FLAGS
    saved = {key: _copied(value) for key, value in registry.__dict__.items()}
    with flagsaver.flagsaver():
        try:
            _command_flags_removed()
            yield
        finally:
            registry.__dict__.update(saved)


def run_command(capfd, command: str, *args: str) -> tuple[int, list[str], str]:
    """(exit code, stderr's non-empty lines, all of stderr) of `python -m sorajax.<command> args`, in process."""
    capfd.readouterr()
    argv = sys.argv
    sys.argv = [f"sorajax/{command}.py", *args]
    try:
        with _own_flag_registry(), pytest.raises(SystemExit) as exited:
            runpy.run_module(f"sorajax.{command}", run_name="__main__")
    finally:
        sys.argv = argv
    err = capfd.readouterr().err
    return exited.value.code, [line for line in err.splitlines() if line.strip()], err


# (command, args, exit code, what the one line says). {root}, {vae}, {dit}: the module's files and runs.
CASES = [
    # generate: sizes, frames, steps, guidance, samplers
    ("generate", ["--run={dit}", "--prompt=x", "--width=100000"], 1, r"^error: width 100000 is past the ceiling of 8192"),
    ("generate", ["--run={dit}", "--prompt=x", "--frames=10001"], 1, r"^error: frames 10001 is past the ceiling of 2049"),
    ("generate", ["--run={dit}", "--prompt=x", "--frames=7"], 1, r"^error: got 7 frames; the autoencoder needs 1 \+ 4k"),
    ("generate", ["--run={dit}", "--prompt=x", "--width=20"], 1, r"^error: width 20 does not fit the autoencoder"),
    ("generate", ["--run={dit}", "--prompt=x", "--width=8192", "--height=8192", "--frames=2049"], 1,
     r"^error: this request needs ~\d+\.\d GiB .* but the device has \d+\.\d GiB: use fewer frames"),
    ("generate", ["--run={dit}", "--prompt=x", "--steps=0"], 1, r"^error: steps must be between 1 and 1000, got 0"),
    ("generate", ["--run={dit}", "--prompt=x", "--steps=-3"], 1, r"^error: steps must be between 1 and 1000, got -3"),
    ("generate", ["--run={dit}", "--prompt=x", "--guidance=-2"], 1, r"^error: guidance must be in \[0, 50\], got -2"),
    ("generate", ["--run={dit}", "--prompt=x", "--guidance=nan"], 1, r"^error: guidance must be in \[0, 50\], got nan"),
    ("generate", ["--run={dit}", "--prompt=x", "--guidance=inf"], 1, r"^error: guidance must be in \[0, 50\], got inf"),
    ("generate", ["--run={dit}", "--prompt=x", "--shift=-1"], 1, r"^error: shift must be in \(0, 100\]"),
    ("generate", ["--run={dit}", "--prompt=x", "--sampler=rk9"], 2, r"^usage error: flag --sampler=rk9: value should be"),
    # generate: prompts
    ("generate", ["--run={dit}", "--prompt="], 2, r"^usage error: --prompt number 1 is empty: .* --unconditional"),
    ("generate", ["--run={dit}", "--prompt=   "], 2, r"^usage error: --prompt number 1 is empty"),
    ("generate", ["--run={dit}", "--prompt=a", "--prompt="], 2, r"^usage error: --prompt number 2 is empty"),
    ("generate", ["--run={dit}", "--prompt=x", "--unconditional"], 2, r"^usage error: --unconditional samples with"),
    ("generate", ["--run={dit}"], 2, r"^usage error: give at least one --prompt or a --prompts_file"),
    ("generate", ["--run={dit}", "--prompts_file={root}/blank_prompts.txt"], 2, r"^usage error: give at least one"),
    ("generate", ["--run={dit}", "--prompts_file={root}/missing.txt"], 1, r"^error: --prompts_file .*missing.txt"),
    ("generate", ["--run={dit}", "--prompt=x", "surplus"], 2, r"^usage error: unexpected arguments: \['surplus'\]"),
    # generate: modes, regions, files
    ("generate", ["--run={dit}", "--prompt=x", "--long=3"], 1,
     r"^error: a long video of 3 frames is shorter than one 5-frame window: ask for at least 5 frames"),
    ("generate", ["--run={dit}", "--prompt=x", "--long=1000000"], 1, r"^error: --long 1000000 is past the ceiling"),
    ("generate", ["--run={dit}", "--prompt=x", "--long=17", "--context=0"], 1, r"^error: context must be between 1"),
    ("generate", ["--run={dit}", "--prompt=x", "--loop", "--extend=forward"], 2, r"^usage error: choose one prompting"),
    ("generate", ["--run={dit}", "--prompt=x", "--extend=forward"], 2, r"^usage error: --extend needs --video"),
    ("generate", ["--run={dit}", "--prompt=x", "--inpaint={root}/clip.mp4", "--region=1,2,3"], 2,
     r"^usage error: --region='1,2,3' must be 4 integers"),
    ("generate", ["--run={dit}", "--prompt=x", "--inpaint={root}/clip.mp4", "--region=8,8,4,4"], 1,
     r"^error: box \(8, 8, 4, 4\) \(top, left, bottom, right\) must lie inside the 16x16 frame"),
    ("generate", ["--run={dit}", "--prompt=x", "--inpaint={root}/clip.mp4", "--region=0,0,100,100"], 1,
     r"^error: box \(0, 0, 100, 100\) .* must lie inside the 16x16 frame"),
    ("generate", ["--run={dit}", "--prompt=x", "--edit={root}/clip.mp4", "--strength=1.5"], 1,
     r"^error: SDEdit strength must be in \[0, 1\], got 1.5"),
    ("generate", ["--run={dit}", "--prompt=x", "--image={root}/missing.png"], 1, r"^error: .*missing.png"),
    ("generate", ["--run={dit}", "--prompt=x", "--image={root}/broken.png"], 1, r"^error: .*broken.png"),
    ("generate", ["--run={dit}", "--prompt=x", "--extend=forward", "--video={root}/broken.mp4"], 1,
     r"^error: .*broken.mp4"),
    ("generate", ["--run={dit}", "--prompt=x", "--tile=4", "--tile_overlap=4"], 1, r"^error: tile 4 with overlap 4"),
    # generate: runs
    ("generate", ["--run={root}/missing", "--prompt=x"], 1, r"^error: no checkpoints under .*train one with"),
    ("generate", ["--run={vae}", "--prompt=x"], 1, r"^error: .*vae is an autoencoder run, but a DiT run is needed"),
    ("generate", ["--run={root}/empty_run", "--prompt=x"], 1, r"^error: no checkpoint under .*empty_run"),
    ("generate", ["--run={root}/garbled_run", "--prompt=x"], 1, r"^error: .*garbled_run"),
    # train_dit: config keys, types, values, sizes, runs
    ("train_dit", ["--config.train.steps=-5", "--workdir={root}/d"], 1, r"^error: train.steps must be >= 1, got -5"),
    ("train_dit", ["--config.train.steps=1000000000000", "--workdir={root}/d"], 1,
     r"^error: train.steps 1000000000000 is past the ceiling of 100000000: .*SORAJAX_CEILING=max_steps=N"),
    ("train_dit", ["--config.model.num_heads=5", "--config.vae_workdir={vae}", "--workdir={root}/d"], 1,
     r"^error: width 128 is not divisible by num_heads 5"),
    ("train_dit", ["--config.model.widht=3"], 2,
     r"^usage error: --config override: unknown key 'widht' in config 'model'; known keys: depth, .*, width; "
     r"did you mean 'width'\?"),
    ("train_dit", ["--config=configs/dit_tiny.py:smoke", "--config.train.stepz=3"], 2,
     r"^usage error: --config override: unknown key 'stepz' in config 'train'; known keys: .*did you mean 'steps'"),
    ("train_dit", ["--config.train.steps=abc"], 2, r"^usage error: flag --config.train.steps=abc: invalid literal"),
    ("train_dit", ["--config.train.learning_rate=-1", "--workdir={root}/d"], 1,
     r"^error: train.learning_rate must be positive"),
    ("train_dit", ["--config.vae_workdir={dit}", "--workdir={root}/d"], 1,
     r"^error: .*dit is a DiT run, but an autoencoder run is needed here"),
    ("train_dit", ["--config.vae_workdir={root}/empty_run", "--workdir={root}/d"], 1,
     r"^error: no checkpoint under .*empty_run.*sorajax.train_vae"),
    ("train_dit", ["--config.vae_workdir={vae}", "--config.data.rows=512", "--config.data.seq_len=65536",
                   "--workdir={root}/d"], 1,
     r"^error: training with data.rows=512 x data.seq_len=65536 needs ~\d+\.\d GiB per device"),
    ("train_dit", ["--config.data.sizes=((9,100000,64),)", "--workdir={root}/d"], 1,
     r"^error: data.sizes \(9, 100000, 64\): height 100000 is past the ceiling"),
    ("train_dit", ["--config=configs/dit_tiny.py:smoke", "--config.vae_workdir={vae}", "--config.model.depth=3",
                   "--workdir={root}/dit_copy"], 1, r"^error: the checkpoint in .* different dit config \(.*depth"),
    # train_vae
    ("train_vae", ["--config.vae.widht=3"], 2, r"^usage error: --config override: unknown key 'widht' in config 'vae'"),
    ("train_vae", ["--config.modle.width=3"], 2,
     r"^usage error: --config override: unknown key 'modle' in the config; known keys: .*"),
    ("train_vae", ["--config.data.batch_size=0", "--workdir={root}/v"], 1, r"^error: data.batch_size must be >= 1"),
    ("train_vae", ["--config.data.batch_size=1024", "--config.data.sizes=((2049,8192,8192),)",
                   "--workdir={root}/v"], 1, r"^error: rendering data.batch_size=1024 clips of 2049x8192x8192 needs"),
    ("train_vae", ["--config=configs/nope.py", "--workdir={root}/v"], 1, r"^error: --config could not be loaded"),
    ("train_vae", ["--config=configs/vae_tiny.py:smoke", "--config.vae.base_channels=16", "--workdir={root}/vae_copy"],
     1, r"^error: the checkpoint in .* different autoencoder config \(base_channels: 8 -> 16\)"),
    # the other commands
    ("eval_vae", ["--workdir={dit}"], 1, r"^error: .*dit is a DiT run, but an autoencoder run is needed here"),
    ("eval_vae", ["--workdir={root}/missing"], 1, r"^error: no checkpoints under .*sorajax.train_vae"),
    ("eval_vae", ["--workdir={vae}", "--num_batches=0"], 2, r"^usage error: flag --num_batches=0"),
    ("probe", ["--run={vae}"], 1, r"^error: .*vae is an autoencoder run, but a DiT run is needed"),
    ("probe", ["--run={dit}", "--num_prompts=0"], 1, r"^error: n=0 must be a positive int"),
    ("probe", ["--run={dit}", "--steps=0"], 1, r"^error: steps must be between 1 and 1000, got 0"),
    ("build_dataset", ["--src={root}/missing", "--out={root}/data"], 1, r"^error: source .* does not exist"),
    ("build_dataset", [], 2, r"^usage error: the following arguments are required: --src, --out"),
    ("build_dataset", ["--src={root}/media_none", "--out={root}/data"], 1, r"^error: no usable video or image in"),
    ("convert", ["--src={root}/missing", "--out={root}/c"], 1, r"^error: .*missing: no such folder"),
    ("convert", ["--src={vae}", "--out={root}/c"], 1, r"^error: .*a Wan checkpoint in diffusers' layout"),
    ("merge_lora", ["--run={dit}", "--out={root}/m"], 1, r"^error: .*dit is not a LoRA run"),
    ("compare", ["{root}"], 1, r"^error: .* has no config.json: not a trained sorajax run"),
    ("sweep", ["--sweep={root}/nope.py", "--workdir={root}/w"], 1, r"^error: sweep file .*nope.py' not found"),
    ("sweep", ["--sweep={root}/sweep_bad.py", "--workdir={root}/w"], 1,
     r"^error: sweep member .*unknown key 'stepz' in config 'train'"),
    ("aot_compile", ["--config=configs/dit_scale.py:nope"], 1, r"^error: config .* failed to load: .*unknown variant"),
]


@pytest.mark.parametrize("command,args,code,line", CASES, ids=[f"{c[0]}:{' '.join(c[1])[:60]}" for c in CASES])
def test_bad_input_is_one_line_and_a_non_zero_exit(runs, capfd, command, args, code, line):
    if "{root}/vae_copy" in " ".join(args) and not (runs["root"] / "vae_copy").exists():
        shutil.copytree(runs["vae"], runs["root"] / "vae_copy")  # resumed with a changed model: written into
    if "{root}/dit_copy" in " ".join(args) and not (runs["root"] / "dit_copy").exists():
        shutil.copytree(runs["dit"], runs["root"] / "dit_copy")
        for cache in (runs["root"] / "dit_copy").glob("latents_*.npz"):
            cache.unlink()  # refused before the clips are encoded: no latent cache is written again
    paths = {"root": runs["root"], "vae": runs["vae"], "dit": runs["dit"]}
    exit_code, lines, err = run_command(capfd, command, *[a.format(**paths) for a in args])
    assert exit_code == code, err[-2000:]
    assert len(lines) == 1 and "Traceback" not in err, err[-2000:]
    assert re.search(line, lines[0]), lines[0]
    if "{root}/dit_copy" in " ".join(args):
        assert not list((runs["root"] / "dit_copy").glob("latents_*.npz"))


@pytest.mark.parametrize("setting,args,line", [
    ("max_side=16", ["--width=32"], r"^error: width 32 is past the ceiling of 16: .*SORAJAX_CEILING=max_side=N"),
    ("max_side=lots", ["--width=32"], r"^error: SORAJAX_CEILING='max_side=lots': 'max_side=lots' is not name="),
])
def test_the_ceiling_is_configured_by_one_environment_variable(runs, capfd, monkeypatch, setting, args, line):
    monkeypatch.setenv("SORAJAX_CEILING", setting)
    exit_code, lines, err = run_command(capfd, "generate", f"--run={runs['dit']}", "--prompt=x", *args)
    assert exit_code == 1 and len(lines) == 1 and "Traceback" not in err, err[-2000:]
    assert re.search(line, lines[0]), lines[0]


def test_the_python_api_refuses_in_one_line(runs):
    """The same checks from Python: one-line ValueErrors naming the problem."""
    from sorajax.config_loading import apply_override
    from sorajax.pipeline import Pipeline

    pipeline = Pipeline.from_run(runs["dit"])
    refusals = {
        "prompt 0 is empty: write a prompt, or set pipeline.allow_empty_prompts = True": lambda: pipeline.generate([" "]),
        "prompts must be a non-empty list of strings": lambda: pipeline.generate("a red ball"),
        "steps must be between 1 and 1000, got 0": lambda: pipeline.generate(["x"], steps=0),
        "guidance must be in [0, 50], got -1": lambda: pipeline.generate(["x"], guidance=-1.0),
        "unknown sampler 'rk9'": lambda: pipeline.generate(["x"], method="rk9"),
        "videos per call 1025 is past the ceiling of 1024": lambda: pipeline.generate(["x"] * 1025),
        "unknown key 'stepz' in config 'train'": lambda: apply_override(load_config("configs/vae_tiny.py"),
                                                                        "train.stepz", 1),
    }
    for message, call in refusals.items():
        with pytest.raises((ValueError, KeyError)) as refused:
            call()
        text = refused.value.args[0]
        assert message in text and "\n" not in text, text
    pipeline.allow_empty_prompts = True  # the explicit switch: the empty caption is sampled
    assert pipeline.generate([""], steps=1)[0].shape == (5, 16, 16, 3)
