"""The generate command's prompting modes on a smoke-trained run: files written, shapes, usage errors.

Every case uses one 9x16x16 window so the sampler compiles once (loop and outpaint: tests/test_prompting.py).
"""

import os
import re
import subprocess
import sys

import numpy as np
import pytest
from absl import app, flags
from absl.testing import flagsaver

from sorajax import generate
from sorajax.video_io import read_image, read_video, write_image, write_video
from tests.tiny_runs import copied_runs


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("prompting_cli")
    dit_dir = str(copied_runs(tmp_path_factory, root)[1])
    rng = np.random.default_rng(0)
    clip = rng.integers(0, 255, (9, 16, 16, 3), np.uint8)
    write_video(str(root / "a.mp4"), clip)
    write_video(str(root / "b.mp4"), clip[::-1])
    write_image(str(root / "still.png"), clip[0])
    return root, dit_dir


def _generate(argv: list[str]) -> None:
    with flagsaver.flagsaver():
        rest = flags.FLAGS(["generate"] + argv)
        generate.main(rest)


def _common(root, dit_dir, out):
    return [f"--run={dit_dir}", "--prompt=a red ball", "--steps=2", f"--out={root / out}"]


@pytest.mark.parametrize("name,args,frames", [
    ("animate", ["--image={root}/still.png", "--frames=9"], 9),
    ("extend", ["--extend=backward", "--video={root}/a.mp4", "--frames=9", "--context=1"], 4 + 9),
    ("connect", ["--connect={root}/a.mp4", "{root}/b.mp4", "--frames=9"], 9 + 3 + 9),
    ("edit", ["--edit={root}/a.mp4", "--strength=0.5"], 9),
    ("inpaint", ["--inpaint={root}/a.mp4", "--region=0,0,8,16", "--region_frames=1:5"], 9),
    ("long", ["--long=17", "--frames=9"], 17),
])
def test_each_mode_writes_its_video_and_a_contact_sheet(run, name, args, frames):
    root, dit_dir = run
    _generate(_common(root, dit_dir, name) + [a.format(root=root) for a in args])
    written = sorted(os.listdir(root / name))
    video_name = next(n for n in written if n.endswith(".mp4"))
    assert video_name.startswith(f"00_{name}_a_red_ball")
    video = read_video(str(root / name / video_name)).frames
    assert video.shape == (frames, 16, 16, 3)
    assert read_image(str(root / name / "contact_sheet.png")).ndim == 3


@pytest.mark.parametrize("args,message", [
    (["--loop", "--edit={root}/a.mp4"], "choose one prompting mode"),
    (["--connect={root}/a.mp4"], "needs two videos"),
    (["--extend=forward"], "needs --video"),
    (["--inpaint={root}/a.mp4"], "needs --region"),
    (["--image={root}/still.png", "--edit={root}/a.mp4"], "--image works alone"),
])
def test_conflicting_or_missing_flags_are_usage_errors(run, args, message):
    root, dit_dir = run
    with pytest.raises(app.UsageError, match=message):
        _generate(_common(root, dit_dir, "errors") + [a.format(root=root) for a in args])


def test_a_zero_context_is_an_error_not_silently_one(run):
    root, dit_dir = run
    with pytest.raises(ValueError, match="at least 1 latent frame"):
        _generate(_common(root, dit_dir, "zero") + ["--loop", f"--video={root}/a.mp4", "--context=0"])


def test_an_image_that_does_not_fit_names_the_fix(run):
    root, dit_dir = run
    write_image(str(root / "odd.png"), np.zeros((20, 20, 3), np.uint8))
    with pytest.raises(ValueError, match="20x20 pixels, which does not fit.*multiple of 16"):
        _generate(_common(root, dit_dir, "odd") + [f"--image={root}/odd.png"])


def test_expand_prompt_samples_the_detailed_caption_and_names_files_by_the_prompt(run, capsys):
    root, dit_dir = run
    _generate([f"--run={dit_dir}", "--prompt=a red ball moving left", "--steps=2", "--frames=1",
               f"--out={root / 'expanded'}", "--expand_prompt"])
    printed = capsys.readouterr().out
    expanded = [line for line in printed.splitlines() if line.startswith("expanded 'a red ball moving left' -> ")]
    assert len(expanded) == 1
    caption = expanded[0].split(" -> ", 1)[1]
    assert "red ball" in caption and "left" in caption and len(caption) > len("a red ball moving left")
    assert "00_a_red_ball_moving_left.png" in os.listdir(root / "expanded")


def test_a_bad_size_on_a_real_run_is_one_line_from_the_command(run, tmp_path):
    _, dit_dir = run
    done = subprocess.run([sys.executable, "-m", "sorajax.generate", f"--run={dit_dir}", "--prompt=x", "--width=20",
                           f"--out={tmp_path}"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines() == [
        "error: width 20 does not fit the autoencoder (x8) and patch size (1, 2, 2): use a multiple of 16 pixels, e.g. 16"]


def test_a_request_too_big_for_the_device_is_one_line_before_anything_is_allocated(run, tmp_path):
    _, dit_dir = run
    done = subprocess.run([sys.executable, "-m", "sorajax.generate", f"--run={dit_dir}", "--prompt=x", "--width=8192",
                           "--height=8192", "--frames=2049", f"--out={tmp_path}"], capture_output=True, text=True,
                          timeout=300)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 1 and len(lines) == 1, done.stderr[-2000:]
    assert re.fullmatch(r"error: this request needs ~\d+\.\d GiB \(DiT weights \d+\.\d, activations \d+\.\d, VAE decode "
                        r"\d+\.\d\) but the device has \d+\.\d GiB: use fewer frames, a smaller size, tiling \(--tile\), "
                        r"bf16 weights, --long, or more devices", lines[0]), lines[0]
    assert not os.listdir(tmp_path)  # nothing written
