"""GFPGANv1Clean: a U-Net encoder that predicts per-layer StyleGAN2 latents and spatial (SFT) scale/shift maps,
and the StyleGAN2 decoder that turns them into the restored 512x512 face.

Names and shapes follow upstream TencentARC/GFPGAN ``gfpgan/archs/gfpganv1_clean_arch.py`` with the
configuration of its inference helper (``gfpgan/utils.py``: out_size 512, num_style_feat 512,
channel_multiplier 2, num_mlp 8, input_is_latent, different_w, narrow 1, sft_half; fix_decoder False), so
``state_dict()`` is the official v1.3/v1.4 layout exactly: 285 tensors, 86.44 M parameters, 15 noise buffers.
Inference only: the intermediate RGB outputs used as training losses are not computed.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from . import FACE_SIZE
from .stylegan2 import LEAKY_SLOPE, StyleGAN2DecoderSFT, decoder_channels


class ResBlock(nn.Module):
    """Two 3x3 convolutions with a bilinear resize (x0.5 down, x2 up) between them, plus a resized 1x1 skip."""

    def __init__(self, in_channels: int, out_channels: int, scale_factor: float):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, in_channels, 3, 1, 1)
        self.conv2 = nn.Conv2d(in_channels, out_channels, 3, 1, 1)
        self.skip = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        self.scale_factor = scale_factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.leaky_relu(self.conv1(x), LEAKY_SLOPE)
        out = F.interpolate(out, scale_factor=self.scale_factor, mode="bilinear", align_corners=False)
        out = F.leaky_relu(self.conv2(out), LEAKY_SLOPE)
        x = F.interpolate(x, scale_factor=self.scale_factor, mode="bilinear", align_corners=False)
        return out + self.skip(x)


def _sft_branch(channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(channels, channels, 3, 1, 1), nn.LeakyReLU(LEAKY_SLOPE, True),
                         nn.Conv2d(channels, out_channels, 3, 1, 1))


class GFPGANv1Clean(nn.Module):
    """Input: faces aligned to the FFHQ template, RGB in [-1, 1], (batch, 3, 512, 512). Output: same shape."""

    def __init__(self, out_size: int = FACE_SIZE, num_style_feat: int = 512, channel_multiplier: int = 2,
                 num_mlp: int = 8, narrow: float = 1.0, sft_half: bool = True):
        super().__init__()
        self.num_style_feat = num_style_feat
        self.log_size = int(math.log2(out_size))
        channels = decoder_channels(channel_multiplier, narrow * 0.5)  # the U-Net is half as wide as the decoder
        levels = range(3, self.log_size + 1)  # resolutions 8 .. out_size as powers of two

        self.conv_body_first = nn.Conv2d(3, channels[out_size], 1)
        self.conv_body_down = nn.ModuleList()
        in_channels = channels[out_size]
        for level in range(self.log_size, 2, -1):
            out_channels = channels[2 ** (level - 1)]
            self.conv_body_down.append(ResBlock(in_channels, out_channels, 0.5))
            in_channels = out_channels
        self.final_conv = nn.Conv2d(in_channels, channels[4], 3, 1, 1)

        self.conv_body_up = nn.ModuleList()
        in_channels = channels[4]
        for level in levels:
            out_channels = channels[2 ** level]
            self.conv_body_up.append(ResBlock(in_channels, out_channels, 2))
            in_channels = out_channels
        # Intermediate RGB heads: training-time losses only, kept so the checkpoint loads strictly.
        self.toRGB = nn.ModuleList(nn.Conv2d(channels[2 ** level], 3, 1) for level in levels)

        num_latent = self.log_size * 2 - 2  # one style vector per decoder layer ("different_w")
        self.final_linear = nn.Linear(channels[4] * 4 * 4, num_latent * num_style_feat)
        self.stylegan_decoder = StyleGAN2DecoderSFT(out_size, num_style_feat, num_mlp, channel_multiplier, narrow,
                                                    sft_half)
        self.condition_scale = nn.ModuleList()
        self.condition_shift = nn.ModuleList()
        for level in levels:
            width = channels[2 ** level]
            sft_width = width if sft_half else width * 2
            self.condition_scale.append(_sft_branch(width, sft_width))
            self.condition_shift.append(_sft_branch(width, sft_width))

    def forward(self, faces: torch.Tensor) -> torch.Tensor:
        feat = F.leaky_relu(self.conv_body_first(faces), LEAKY_SLOPE)
        skips = []
        for block in self.conv_body_down:
            feat = block(feat)
            skips.append(feat)
        feat = F.leaky_relu(self.final_conv(feat), LEAKY_SLOPE)
        latent = self.final_linear(feat.flatten(1)).view(feat.size(0), -1, self.num_style_feat)

        conditions = []
        for skip, block, to_scale, to_shift in zip(reversed(skips), self.conv_body_up, self.condition_scale,
                                                   self.condition_shift):
            feat = block(feat + skip)
            conditions += [to_scale(feat), to_shift(feat)]
        return self.stylegan_decoder(latent, conditions)
