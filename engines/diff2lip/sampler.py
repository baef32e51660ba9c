"""DDIM sampling of the Diff2Lip UNet, as upstream's inference runs it (guided-diffusion's SpacedDiffusion with
eta 0, learned sigma, epsilon prediction, denoised images clipped to [-1, 1]).

The model was trained on a linear schedule of 1000 steps (betas 1e-4 .. 0.02). Sampling visits a subsequence
of those steps ("ddimN": the first integer stride giving exactly N steps, 25 -> 0, 40, ..., 960; step counts
no integer stride gives, e.g. 600, fall back to upstream's evenly spaced section rule), feeding the model each
step's original index. Every step replaces the noisy image by the DDIM update

    x0  = clip(sqrt(1 / abar_t) x_t - sqrt(1 / abar_t - 1) eps)
    eps = (sqrt(1 / abar_t) x_t - x0) / sqrt(1 / abar_t - 1)          (re-derived after clipping)
    x_prev = sqrt(abar_prev) x0 + sqrt(1 - abar_prev) eps

where abar are the cumulative products of the respaced schedule (equal to the original schedule's at the
visited steps). The variance half of the model's output is unused (eta 0 adds no noise).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

TRAINING_STEPS = 1000


def linear_betas(steps: int = TRAINING_STEPS) -> np.ndarray:
    """Ho et al.'s linear schedule, scaled so any step count spans the same noise range (float64)."""
    scale = 1000 / steps
    return np.linspace(scale * 0.0001, scale * 0.02, steps, dtype=np.float64)


def alphas_cumprod(betas: np.ndarray) -> np.ndarray:
    return np.cumprod(1.0 - betas, axis=0)


def ddim_timesteps(count: int, steps: int = TRAINING_STEPS) -> list[int]:
    """The original step indices a ``count``-step sampler visits, ascending."""
    if not 1 <= count <= steps:
        raise ValueError(f"DDIM steps must be between 1 and {steps}, got {count}")
    for stride in range(1, steps):
        if len(range(0, steps, stride)) == count:
            return list(range(0, steps, stride))
    if count == 1:
        return [0]
    # evenly spaced: upstream's rule for a single section of `count` steps
    spacing = (steps - 1) / (count - 1)
    return sorted({round(i * spacing) for i in range(count)})


@dataclass(frozen=True)
class DdimSchedule:
    timesteps: np.ndarray  # original indices visited, ascending (the model sees these)
    alphas_cumprod: np.ndarray  # of the respaced process, one per visited step
    alphas_cumprod_prev: np.ndarray  # the same shifted by one, 1.0 before the first

    @classmethod
    def respaced(cls, count: int, betas: np.ndarray | None = None) -> "DdimSchedule":
        """The schedule of a sampler visiting ``count`` steps of the 1000-step linear process (upstream's
        SpacedDiffusion: new betas from the ratios of cumulative products at the visited steps)."""
        betas = linear_betas() if betas is None else betas
        full = alphas_cumprod(betas)
        kept = ddim_timesteps(count, len(betas))
        new_betas, last = [], 1.0
        for index in kept:
            new_betas.append(1.0 - full[index] / last)
            last = full[index]
        cumulative = alphas_cumprod(np.array(new_betas))
        return cls(np.array(kept, dtype=np.int64), cumulative, np.append(1.0, cumulative[:-1]))

    def __len__(self) -> int:
        return len(self.timesteps)


def ddim_sample(model: Callable, noise, schedule: DdimSchedule, **model_kwargs):
    """Run the sampler from ``noise`` (N, 3, H, W) down to a clean image in [-1, 1]; ``model(x, t, **kwargs)``
    returns (N, 6, H, W). Deterministic: no noise is drawn after the initial image."""
    import torch

    x = noise
    channels = x.shape[1]
    for i in reversed(range(len(schedule))):
        t = torch.full((x.shape[0],), int(schedule.timesteps[i]), dtype=torch.long, device=x.device)
        eps = model(x, t, **model_kwargs)[:, :channels].float()
        recip = float(np.sqrt(1.0 / schedule.alphas_cumprod[i]))
        recip_m1 = float(np.sqrt(1.0 / schedule.alphas_cumprod[i] - 1.0))
        x0 = (recip * x - recip_m1 * eps).clamp(-1.0, 1.0)
        eps = (recip * x - x0) / recip_m1
        prev = schedule.alphas_cumprod_prev[i]
        x = float(np.sqrt(prev)) * x0 + float(np.sqrt(1.0 - prev)) * eps
    return x
