"""Why loops are not seamless yet: the seam by motion, and a tied-window sampler that was not kept.

Part 1 loops held-out world clips (`sorajax.prompting.loop`) grouped by the object's motion: drift
(constant velocity), gravity (falls and bounces) and static. A still object needs no reversal, so
its seam measures only how closely the generated transition reproduces the given clip's look.
Beside it: the clip's own step sizes, and the autoencoder's round trip of the clip played on repeat.

Part 2 tries circular sampling for loops the model makes itself: the loop's 4-frame latents are
denoised in two windows, the second rotated by half the loop, with velocities averaged every step,
so the wrap lies inside one window (each window keeps its own 1-frame lead-in latent, which the
causal autoencoder puts first). It prints the seam and writes frames (`--out`) to look at.

    python experiments/loop_seams.py --run=runs/main/dit --per_motion=6 --out=loop_seams.png
    python experiments/loop_seams.py --run=runs/ft17 --frames=17 --context=2 --parts=1
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags
from PIL import Image

from sorajax.data.world import WorldOptions, generate_clip
from sorajax.diffusion.samplers import sample
from sorajax.diffusion.sampling import packed_velocity
from sorajax.eval.probe_prompts import probe_prompt_set
from sorajax.logging_setup import quiet_library_logs
from sorajax.patches import unpack
from sorajax.pipeline import Pipeline
from sorajax.prompting import loop, loop_seam

_RUN = flags.DEFINE_string("run", "runs/main/dit", "DiT run directory")
_PER_MOTION = flags.DEFINE_integer("per_motion", 6, "world clips per motion kind (part 1)")
_PROMPTS = flags.DEFINE_integer("prompts", 6, "square probe prompts for circular sampling (part 2)")
_FRAMES = flags.DEFINE_integer("frames", None, "transition window in frames (default: the run's)")
_CONTEXT = flags.DEFINE_integer("context", 1, "latent frames of the clip's start the transition leads into")
_PARTS = flags.DEFINE_list("parts", ["1", "2"], "which parts to run")
_OUT = flags.DEFINE_string("out", None, "PNG of three circular loops, one per row (each lap then 2 repeated frames)")
_SEED = 777  # a world seed the training clips do not use
_STEP_FLOOR = 0.5  # a still clip's raw frames do not change at all; ratios use at least this step


def seam_ratios(video: np.ndarray) -> tuple[float, float, float]:
    """(wrap / typical step, largest step / typical step, typical step) of a video played on repeat."""
    seam = loop_seam(video)
    typical = max(seam["typical"], _STEP_FLOOR)
    return seam["jump"] / typical, seam["max_step"] / typical, seam["typical"]


def clips_by_motion(per_motion: int) -> dict[str, list]:
    options = WorldOptions(max_objects=1, occluder_prob=0.0, pan_prob=0.0)  # the main job's DiT world
    found: dict[str, list] = {"drift": [], "gravity": [], "static": []}
    index = 0
    while any(len(clips) < per_motion for clips in found.values()):
        clip = generate_clip(_SEED, 9, 64, 64, options, index=index)
        index += 1
        clips = found[clip.facts.objects[0].motion]
        if len(clips) < per_motion:
            clips.append(clip)
    return found


@functools.partial(jax.jit, static_argnames=("denoise", "method", "prediction", "frame_tokens", "shift"))
def _tied_sample(denoise, params, batch, x_init, timesteps, guidance, uncond, *, method: str, prediction: str,
                 frame_tokens: int, shift: int):
    """Samples rows [lead-in a, loop] and [lead-in b, loop rotated by `shift` latents] as one loop."""
    velocity = packed_velocity(denoise, params, batch, prediction=prediction, guidance=guidance, uncond=uncond)
    offset = shift * frame_tokens

    def tied(x, t_tokens):
        v = velocity(x, t_tokens)
        loop_v = 0.5 * (v[0, frame_tokens:] + jnp.roll(v[1, frame_tokens:], offset, axis=0))
        return jnp.stack([jnp.concatenate([v[0, :frame_tokens], loop_v]),
                          jnp.concatenate([v[1, :frame_tokens], jnp.roll(loop_v, -offset, axis=0)])])

    x = x_init.at[1, frame_tokens:].set(jnp.roll(x_init[0, frame_tokens:], -offset, axis=0))
    return sample(tied, x, timesteps, method=method)


def circular_loop(pipeline: Pipeline, prompt: str, seed: int) -> np.ndarray:
    """One lap of a loop sampled with two tied windows (uint8 [4 * loop latents, H, W, 3])."""
    request = dataclasses.replace(pipeline.defaults, seed=seed)
    shape = pipeline.latent_shape(request.frames, request.height, request.width)
    loop_latents = shape[0] - 1
    inputs = pipeline.sampling_inputs([prompt, prompt], shape, request)
    batch = inputs.batch
    frame_tokens = batch.tokens.shape[1] // shape[0]  # patch (1, ph, pw): one latent frame per token block
    tokens = _tied_sample(pipeline.denoise, pipeline.dit_params, batch, jnp.asarray(inputs.x_init), inputs.timesteps,
                          jnp.float32(request.guidance), inputs.uncond, method=request.method,
                          prediction=pipeline.prediction, frame_tokens=frame_tokens, shift=max(1, loop_latents // 2))
    window = unpack(np.asarray(tokens), inputs.layout)[0]
    # Decoded twice around, the second lap has the loop's own end as its history, as on repeat.
    frames = pipeline.decode(np.concatenate([window, window[1:]]))
    span = pipeline.temporal_factor * loop_latents
    return frames[1 + span:]


def seams_by_motion(pipeline: Pipeline) -> None:
    """Part 1: `loop` on held-out world clips, by motion kind."""
    window = {} if _FRAMES.value is None else {"frames": _FRAMES.value}
    print(f"part 1: loops of world clips, context {_CONTEXT.value} (medians over clips; ratios to the typical step)")
    for motion, clips in clips_by_motion(_PER_MOTION.value).items():
        loops = [loop(pipeline, c.caption, video=c.video, seed=0, context=_CONTEXT.value, **window).video
                 for c in clips]
        looped = np.array([seam_ratios(v) for v in loops])
        jump = np.median([loop_seam(v)["jump"] for v in loops])
        raw = np.array([seam_ratios(c.video) for c in clips])
        round_trip = np.array([seam_ratios(pipeline.decode(pipeline.encode(c.video))) for c in clips])
        print(f"  {motion:8s} loop seam {np.median(looped[:, 0]):.2f}x = {jump:.1f} levels (largest step "
              f"{np.median(looped[:, 1]):.2f}x, typical {np.median(looped[:, 2]):.1f}); clip on repeat "
              f"{np.median(raw[:, 0]):.2f}x (typical {np.median(raw[:, 2]):.1f}); its round trip on repeat "
              f"{np.median(round_trip[:, 0]):.2f}x")


def tied_against_loop(pipeline: Pipeline) -> None:
    """Part 2: the model's own loops, by tied windows and by `loop`."""
    if pipeline.patch[0] != 1:
        raise ValueError(f"circular sampling here needs temporal patch 1, the run has patch {pipeline.patch}")
    prompts = [p.text for p in probe_prompt_set(8 * _PROMPTS.value, num_frames=9) if p.size == (9, 64, 64)]
    prompts = prompts[: _PROMPTS.value]
    tied = np.array([seam_ratios(circular_loop(pipeline, text, seed=1)) for text in prompts])
    own = np.array([seam_ratios(loop(pipeline, text, seed=1).video) for text in prompts])
    print("part 2: loops the model makes itself (median over prompts)")
    print(f"  tied windows: seam {np.median(tied[:, 0]):.2f}x, largest step {np.median(tied[:, 1]):.2f}x, "
          f"typical {np.median(tied[:, 2]):.1f}")
    print(f"  loop():       seam {np.median(own[:, 0]):.2f}x, largest step {np.median(own[:, 1]):.2f}x, "
          f"typical {np.median(own[:, 2]):.1f}")
    if _OUT.value:
        rows = []
        for text in prompts[:3]:
            lap = circular_loop(pipeline, text, seed=1)
            rows.append(np.concatenate(list(np.concatenate([lap, lap[:2]])), axis=1))
        grid = np.concatenate(rows, axis=0)
        Image.fromarray(grid).resize((grid.shape[1] * 2, grid.shape[0] * 2), Image.NEAREST).save(_OUT.value)
        print(f"wrote {_OUT.value}")


def main(argv: list[str]) -> None:
    del argv
    quiet_library_logs()
    pipeline = Pipeline.from_run(_RUN.value)
    if "1" in _PARTS.value:
        seams_by_motion(pipeline)
    if "2" in _PARTS.value:
        tied_against_loop(pipeline)


if __name__ == "__main__":
    app.run(main)
