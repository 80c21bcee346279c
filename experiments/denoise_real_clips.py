"""Where does a trained DiT lose the layout? One-step clean predictions from noised REAL clips.

For probe clips whose prompt is known, the clip is encoded, noised to each t, and the DiT's velocity
gives the predicted clean latent ``x0 = x_t - t v`` (conditional, no guidance), which is decoded. Read
the grid left to right: the real frame, then predictions from ever noisier inputs. If the object is
recovered in the right place up to some t and lost beyond it, sampling fails where the caption alone
has to decide the layout (a good model's prediction there is a faint smear where the caption puts the
object, not scattered spots).

    python experiments/denoise_real_clips.py --run=runs/main/dit --out=runs/main/samples/denoise_real_clips.png
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from absl import app, flags
from PIL import Image

from sorajax.diffusion import x0_from_velocity
from sorajax.diffusion.sampling import packed_velocity
from sorajax.eval.probe_prompts import probe_prompt_set
from sorajax.logging_setup import quiet_library_logs
from sorajax.patches import unpack
from sorajax.pipeline import Pipeline

_RUN = flags.DEFINE_string("run", "runs/main/dit", "DiT run directory")
_OUT = flags.DEFINE_string("out", "denoise_real_clips.png", "where the grid PNG goes")
_NUM = flags.DEFINE_integer("num_clips", 6, "square probe clips, one per grid row")
_TS = flags.DEFINE_list("t", ["0.5", "0.7", "0.85", "0.95"], "noise levels, one per grid column")
_FRAME = flags.DEFINE_integer("frame", 4, "which pixel frame of each 9-frame clip to show")
_SCALE = 3  # pixel upscaling of the grid, for viewing


def clean_prediction(pipeline: Pipeline, prompt: str, latent: np.ndarray, t: float) -> np.ndarray:
    """The DiT's one-step x0 for `latent` noised to `t` (seed of the pipeline's default request)."""
    inputs = pipeline.sampling_inputs([prompt], latent.shape, pipeline.defaults, edit=[latent], strength=t)
    x_t = jnp.asarray(inputs.x_init)  # the latent noised to t (SDEdit's start)
    t_tokens = jnp.where(jnp.asarray(inputs.batch.segment_ids) > 0, t, 0.0).astype(jnp.float32)
    velocity = packed_velocity(pipeline.denoise, pipeline.dit_params, inputs.batch, prediction=pipeline.prediction)
    x0 = x0_from_velocity(x_t, velocity(x_t, t_tokens), t_tokens)
    return unpack(np.asarray(x0), inputs.layout)[0]


def main(argv: list[str]) -> None:
    del argv
    quiet_library_logs()
    pipeline = Pipeline.from_run(_RUN.value)
    levels = [float(t) for t in _TS.value]
    prompts = [p for p in probe_prompt_set(8 * _NUM.value, num_frames=9) if p.size == (9, 64, 64)][: _NUM.value]
    rows = []
    for prompt in prompts:
        clip = prompt.reference_clip().video
        latent = pipeline.encode(clip)
        columns = [clip[_FRAME.value]]
        columns += [pipeline.decode(clean_prediction(pipeline, prompt.text, latent, t))[_FRAME.value] for t in levels]
        rows.append(np.concatenate(columns, axis=1))
    grid = np.concatenate(rows, axis=0)
    Image.fromarray(grid).resize((grid.shape[1] * _SCALE, grid.shape[0] * _SCALE), Image.NEAREST).save(_OUT.value)
    print(f"wrote {_OUT.value}: rows = {len(rows)} clips; columns = real frame {_FRAME.value}, then x0 from t = {levels}")


if __name__ == "__main__":
    app.run(main)
