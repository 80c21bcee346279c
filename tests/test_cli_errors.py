"""Every command's error boundary: bad input is one line naming the problem and a non-zero exit, no traceback.

Run as a user runs them (`python -m sorajax.<command>`, from a directory that is not the repository).
Config problems are refused before any clip is rendered or encoded.
"""

import os
import re
import subprocess
import sys

import pytest

from sorajax import cli

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(tmp_path, *args):
    return subprocess.run([sys.executable, "-m", *args], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": REPO})


CASES = [  # (command and flags, exit code, what the one line says)
    (["sorajax.generate", "--run={tmp}/missing", "--prompt=x"], 1, "error: no checkpoints under .*train one with"),
    (["sorajax.generate", "--sampler=rk9", "--prompt=x"], 2, "usage error: flag --sampler=rk9: value should be one of"),
    (["sorajax.generate"], 2, "usage error: give at least one --prompt"),
    (["sorajax.generate", "--prompt=x", "--loop", "--extend=forward"], 2, r"usage error: choose one prompting mode"),
    (["sorajax.generate", "--prompt=x", "--tile=4", "--tile_overlap=4"], 1,
     "error: tile 4 with overlap 4 latent pixels cannot cover a frame: use a tile >= 1"),
    (["sorajax.generate", "--prompt=x", "--width=100000"], 1, "error: width 100000 is past the ceiling of 8192"),
    (["sorajax.train_dit", "--config.model.num_heads=5", "--workdir={tmp}/dit"], 1,
     "error: width 128 is not divisible by num_heads 5"),
    (["sorajax.train_dit", "--config.train.steps=-5", "--workdir={tmp}/dit"], 1, "error: train.steps must be >= 1"),
    (["sorajax.train_dit", "--config.train.stepz=3"], 2,
     r"usage error: --config override: unknown key 'stepz' in config 'train'; known keys: .*; did you mean 'steps'\?"),
    (["sorajax.train_vae", "--config=configs/nope.py", "--workdir={tmp}/vae"], 1,
     "error: --config could not be loaded: .*configs/nope.py"),
    (["sorajax.eval_vae", "--workdir={tmp}/missing"], 1, "error: no checkpoints under .*sorajax.train_vae"),
    (["sorajax.probe", "--run={tmp}/missing"], 1, "error: no checkpoints under"),
    (["sorajax.build_dataset", "--src={tmp}/missing", "--out={tmp}/data"], 1, "error: source .* does not exist"),
    (["sorajax.build_dataset"], 2, "usage error: the following arguments are required: --src, --out"),
    (["sorajax.aot_compile", f"--config={REPO}/configs/dit_scale.py:nope"], 1, "error: config .* failed to load: .*unknown variant"),
    (["sorajax.sweep", "--sweep={tmp}/nope.py", "--workdir={tmp}/w"], 1, "error: sweep file .*nope.py' not found"),
    (["sorajax.compare", "{tmp}"], 1, "error: .* has no config.json: not a trained sorajax run"),
]


@pytest.mark.parametrize("args,code,line", CASES, ids=[" ".join(c[0][:2]) for c in CASES])
def test_bad_input_is_one_line_and_a_non_zero_exit(tmp_path, args, code, line):
    done = _run(tmp_path, *[a.format(tmp=tmp_path) for a in args])
    lines = [text for text in done.stderr.splitlines() if text.strip()]
    assert done.returncode == code, done.stderr[-2000:]
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr[-2000:]
    assert re.search(line, lines[0]), lines[0]
    assert not (tmp_path / "dit" / "latents_train.npz").exists()  # refused before any clip was encoded


def test_debug_shows_the_traceback(tmp_path):
    done = _run(tmp_path, "sorajax.generate", f"--run={tmp_path}/missing", "--prompt=x", "--debug")
    assert done.returncode == 1 and "Traceback (most recent call last)" in done.stderr
    assert "CheckpointNotFoundError" in done.stderr


def test_an_error_outside_sorajax_says_it_is_unexpected():
    def library_bug():
        return {}["missing"]  # raised here, in the test: not sorajax's own code

    with pytest.raises(SystemExit) as exit_info:
        cli.guarded(library_bug, debug=lambda: False)()
    assert exit_info.value.code == cli.ERROR_EXIT
    assert cli.describe(KeyError("a\nb")) == "error: KeyError: a b (unexpected: run again with --debug for the traceback)"


def test_world_clips_too_big_for_a_row_are_refused_before_encoding(tmp_path, tmp_path_factory):
    """A cross-section check (clip sizes against the row length) still comes before any clip is encoded."""
    from sorajax.config_loading import load_config
    from sorajax.train.dit_trainer import train_dit
    from tests.tiny_runs import shared_vae

    config = load_config("configs/dit_tiny.py:smoke", {"vae_workdir": str(shared_vae(tmp_path_factory)),
                                                       "data.seq_len": 3})
    with pytest.raises(ValueError, match=r"5x32x16 = 4 tokens, more than a row holds \(seq_len=3"):
        train_dit(config, tmp_path / "dit")
    assert not (tmp_path / "dit" / "latents_train.npz").exists()
