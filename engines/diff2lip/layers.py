"""Building blocks of openai's guided-diffusion UNet, as Diff2Lip uses them.

Module and attribute names (in_layers, emb_layers, out_layers, skip_connection, norm, qkv, proj_out, and the
positions inside each nn.Sequential) are what the checkpoint's keys are made of, so they follow upstream
exactly. Under fp16 only convolution weights are half precision (upstream's convert_to_fp16); group norms run
in float32 and cast back, and the embedding MLPs stay float32.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

NORM_GROUPS = 32


class GroupNorm32(nn.GroupNorm):
    """Group norm computed in float32 whatever the activations' dtype (fp16 statistics are too coarse)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.float()).type(x.dtype)


def normalization(channels: int) -> GroupNorm32:
    return GroupNorm32(NORM_GROUPS, channels)


def conv(dims: int, *args, **kwargs) -> nn.Module:
    return {1: nn.Conv1d, 2: nn.Conv2d}[dims](*args, **kwargs)


def timestep_embedding(timesteps: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding (N, dim): cosines then sines of t at geometrically spaced frequencies."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=timesteps.device) / half)
    angles = timesteps[:, None].float() * freqs[None]
    return torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1)


class TimestepBlock(nn.Module):
    """A module whose forward also takes the (timestep + audio) embedding."""


class TimestepEmbedSequential(nn.Sequential, TimestepBlock):
    """nn.Sequential that hands the embedding to the children that take one."""

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        for layer in self:
            x = layer(x, emb) if isinstance(layer, TimestepBlock) else layer(x)
        return x


class Resample(nn.Module):
    """Parameter-free 2x nearest upsampling, or average-pool downsampling by ``stride`` (used inside ResBlock)."""

    def __init__(self, up: bool, stride: tuple[int, int] | int = 2):
        super().__init__()
        self.up = up
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.up:
            return F.interpolate(x, scale_factor=2, mode="nearest")
        return F.avg_pool2d(x, kernel_size=self.stride, stride=self.stride)


class ResBlock(TimestepBlock):
    """Residual block conditioned on the embedding (added after the first conv; no scale-shift norm).

    ``up`` / ``down`` resample both the branch (between its norm+SiLU and its conv) and the skip path.
    ``down_stride`` lets the audio encoder halve only the mel axis, (2, 1), while it is longer than the time axis.
    """

    def __init__(self, channels: int, emb_channels: int, out_channels: int | None = None,
                 up: bool = False, down: bool = False, down_stride: tuple[int, int] | int = 2):
        super().__init__()
        out_channels = out_channels or channels
        self.in_layers = nn.Sequential(normalization(channels), nn.SiLU(),
                                       conv(2, channels, out_channels, 3, padding=1))
        self.resample = Resample(up=True) if up else Resample(up=False, stride=down_stride) if down else None
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_channels, out_channels))
        self.out_layers = nn.Sequential(normalization(out_channels), nn.SiLU(), nn.Dropout(p=0.0),
                                        conv(2, out_channels, out_channels, 3, padding=1))
        self.skip_connection = (nn.Identity() if out_channels == channels
                                else conv(2, channels, out_channels, 1))

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        if self.resample is not None:
            h = self.in_layers[2](self.resample(self.in_layers[1](self.in_layers[0](x))))
            x = self.resample(x)
        else:
            h = self.in_layers(x)
        h = h + self.emb_layers(emb).type(h.dtype)[:, :, None, None]
        return self.skip_connection(x) + self.out_layers(h)


class AttentionBlock(nn.Module):
    """Self-attention over all positions, heads of ``head_channels`` each.

    The qkv projection's output channels are laid out head by head ([q, k, v] of head 0, then head 1, ...):
    upstream's "legacy" order, which the trained weights assume.
    """

    def __init__(self, channels: int, head_channels: int):
        super().__init__()
        self.heads = channels // head_channels
        self.norm = normalization(channels)
        self.qkv = conv(1, channels, channels * 3, 1)
        self.proj_out = conv(1, channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, channels, *spatial = x.shape
        flat = x.reshape(batch, channels, -1)
        length = flat.shape[-1]
        qkv = self.qkv(self.norm(flat)).reshape(batch * self.heads, 3 * channels // self.heads, length)
        q, k, v = (part.transpose(1, 2) for part in qkv.chunk(3, dim=1))  # each (B*heads, length, head_ch)
        attended = F.scaled_dot_product_attention(q, k, v)  # softmax(q k^T / sqrt(head_ch)) v
        h = attended.transpose(1, 2).reshape(batch, channels, length)
        return (flat + self.proj_out(h)).reshape(batch, channels, *spatial)
