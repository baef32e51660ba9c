"""Carrying FOMM's 256-px motion to the full-resolution portrait, and moving the landmarks with it.

The generator's own output is a 256x256 image: upscaled to 512 or 1024 it is visibly soft. Its motion is not
tied to that size, though: the deformation field maps every output position to a source position in [-1, 1]
coordinates, whatever the resolution. So the deformation and the occlusion map are upsampled to the output
size, the full-resolution portrait is warped by the deformation, and the generator's pixels are used only where
the occlusion map says the source cannot be seen (occlusion 0 = not visible in the source: generate; 1 =
visible: warp), measured against the map of the portrait at rest. Upsampling uses align_corners=True, the same pixel-centre convention as the fields.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

LANDMARK_ITERATIONS = 8  # fixed-point steps inverting the deformation at each landmark
REST_FLOOR = 0.05  # drops are measured relative to the rest value, or to this where it is lower (no blow-up)


def resize_field(field: torch.Tensor, size: int) -> torch.Tensor:
    """(B, C, h, w) -> (B, C, size, size), bilinear between the field's sample points."""
    return F.interpolate(field.float(), size=(size, size), mode="bilinear", align_corners=True)


def full_resolution(portraits: torch.Tensor, deformation: torch.Tensor, occlusion: torch.Tensor,
                    prediction: torch.Tensor, rest_occlusion: torch.Tensor | None = None) -> torch.Tensor:
    """(B, 3, S, S) frames in [0, 1]: ``portraits`` (B, 3, S, S) warped by the upsampled ``deformation``
    (B, h, w, 2), blended with the generated ``prediction`` (B, 3, 256, 256) where ``occlusion`` (B, 1, h, w)
    is below 1, or, given ``rest_occlusion`` (the map of the portrait driven by itself), where it fell below
    its value at rest: the network's occlusion is not 1 everywhere even without motion, and only what the
    motion hides is worth generating. At rest the output is then the portrait itself."""
    size = portraits.shape[-1]
    grid = resize_field(deformation.permute(0, 3, 1, 2), size).permute(0, 2, 3, 1)
    warped = F.grid_sample(portraits, grid.to(portraits.dtype), mode="bilinear", padding_mode="border",
                           align_corners=True)
    if rest_occlusion is not None:
        drop = rest_occlusion.float() - occlusion.float()  # how much less visible than at rest
        occlusion = 1 - (drop / rest_occlusion.float().clamp(min=REST_FLOOR)).clamp(0, 1)
    visible = resize_field(occlusion, size).to(portraits.dtype)
    if prediction.shape[-1] > size:
        generated = F.interpolate(prediction.float(), size=(size, size), mode="area")
    else:
        generated = F.interpolate(prediction.float(), size=(size, size), mode="bicubic", align_corners=False)
    return visible * warped + (1 - visible) * generated.clamp(0, 1).to(portraits.dtype)


def upscaled_prediction(prediction: torch.Tensor, size: int) -> torch.Tensor:
    """What plain upscaling of the generator's 256-px output would give (the baseline full_resolution beats)."""
    return F.interpolate(prediction.float(), size=(size, size), mode="bicubic", align_corners=False).clamp(0, 1)


def move_points(points: torch.Tensor, deformation: torch.Tensor) -> torch.Tensor:
    """Where source points (B, P, 2) in [-1, 1] appear in the output: the deformation maps output -> source,
    so solve deformation(z) = p by the fixed-point steps z <- z + (p - deformation(z)) (exact for a pure shift,
    fast to converge for the smooth, near-identity fields of head motion)."""
    field = deformation.permute(0, 3, 1, 2).float()  # (B, 2, h, w)
    target = points.float()
    moved = target.clone()
    for _ in range(LANDMARK_ITERATIONS):
        sampled = F.grid_sample(field, moved[:, :, None, :], mode="bilinear", padding_mode="border",
                                align_corners=True)[..., 0].permute(0, 2, 1)  # (B, P, 2)
        moved = (moved + (target - sampled)).clamp(-1.5, 1.5)
    return moved
