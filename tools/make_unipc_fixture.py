"""Write the UniPC parity fixture from diffusers' `UniPCMultistepScheduler` (flow sigmas, flow prediction).

Why: Wan samples with UniPC by default; sorajax's `diffusion/unipc.py` (sampler method 'unipc') must take
the same steps. A fixed
non-linear velocity field stands in for the network (the scheduler is what is compared), so the test needs
only numpy and JAX. Run once in the PyTorch environment (see tools/make_wan_dit_fixture.py):

    /work/refenv/bin/python tools/make_unipc_fixture.py
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from diffusers import UniPCMultistepScheduler

OUT = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "unipc_reference.npz"


def velocity(x: torch.Tensor, sigma: float, w: torch.Tensor) -> torch.Tensor:
    """A smooth field with a fixed point structure: v = tanh(x W) + sigma x - 0.3."""
    return torch.tanh(x @ w) + sigma * x - 0.3


def main() -> None:
    rng = np.random.default_rng(0)
    w = rng.normal(size=(8, 8)).astype(np.float32) / 3
    x_init = rng.normal(size=(4, 8)).astype(np.float32)
    arrays = {"w": w, "x_init": x_init}
    for steps, shift in ((10, 3.0), (4, 5.0), (25, 8.0), (1, 3.0)):
        scheduler = UniPCMultistepScheduler(use_flow_sigmas=True, prediction_type="flow_prediction",
                                            flow_shift=shift, solver_order=2)
        scheduler.set_timesteps(steps)
        x = torch.from_numpy(x_init)
        for i, t in enumerate(scheduler.timesteps):
            v = velocity(x, float(scheduler.sigmas[i]), torch.from_numpy(w))
            x = scheduler.step(v, t, x, return_dict=False)[0]
        arrays[f"sigmas_{steps}_{shift}"] = scheduler.sigmas.numpy()
        arrays[f"out_{steps}_{shift}"] = x.numpy()
    np.savez(OUT, **arrays)
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
