"""Diff2Lip's network: the guided-diffusion UNet with a reference frame and an audio encoder (upstream TFGModel
with use_ref, nrefer 1, use_audio, audio_as_style, conv audio encoder).

Input: the noisy lower half (x), the frame with its lower half replaced by noise (cond_img), a reference
frame of the same face (ref_img) -> 9 channels at 128x128. The audio encoder turns each frame's 80x16 mel
window into a 512-vector that is added to the timestep embedding, so the speech steers every ResBlock.
Output: 6 channels (learned sigma): the predicted noise, then the variance interpolation.

Configuration of the official checkpoint (scripts/inference.sh): 128 channels, multipliers (1, 1, 2, 3, 4),
2 res blocks per level, attention at 32, 16 and 8 px with 64-channel heads, resblock up/down, no
scale-shift norm. state_dict() matches upstream's key for key, shape for shape (tests check the fixture).
"""

from __future__ import annotations

import torch
from torch import nn

from .layers import (AttentionBlock, ResBlock, TimestepEmbedSequential, conv, normalization,
                     timestep_embedding)

IMAGE_CHANNELS = 3
MODEL_CHANNELS = 128
CHANNEL_MULT = (1, 1, 2, 3, 4)  # upstream's choice for 128 px
RES_BLOCKS = 2
ATTENTION_DOWNSAMPLES = (4, 8, 16)  # 128 / (32, 16, 8)
HEAD_CHANNELS = 64

AUDIO_CHANNELS = 32
AUDIO_CHANNEL_MULT = (1, 2, 3, 4)
AUDIO_HEIGHT = 64  # the 80 mel bands are first mapped onto 64 rows by a Conv1d
MEL_BANDS, MEL_STEPS = 80, 16

# convert_to_fp16 halves convolutions inside these children only (time_embed and the final `out` stay fp32)
FP16_PARTS = ("input_blocks", "middle_block", "output_blocks", "audio_encoder", "audio_encoder_to_style")


def halve_convolutions(module: nn.Module) -> None:
    for layer in module.modules():
        if isinstance(layer, (nn.Conv1d, nn.Conv2d)):
            layer.half()


class AudioEncoder(nn.Module):
    """(N, 80, 16) mel windows -> (N, 128, 8, 8) features, through ResBlocks fed a constant (t = 0) embedding."""

    def __init__(self):
        super().__init__()
        self.dtype = torch.float32
        width = AUDIO_CHANNELS
        self.time_embed = nn.Sequential(nn.Linear(width, width), nn.SiLU(), nn.Linear(width, width))
        self.input_block = TimestepEmbedSequential(conv(1, MEL_BANDS, AUDIO_HEIGHT, 3, padding=1),
                                                   normalization(AUDIO_HEIGHT), nn.SiLU())
        blocks = [TimestepEmbedSequential(conv(2, 1, width, 3, padding=1))]
        channels, height = width, AUDIO_HEIGHT
        for level, mult in enumerate(AUDIO_CHANNEL_MULT):
            for _ in range(RES_BLOCKS):
                blocks.append(TimestepEmbedSequential(ResBlock(channels, width, mult * width)))
                channels = mult * width
            if level < len(AUDIO_CHANNEL_MULT) - 1:
                # halve only the mel axis while it is taller than the 16 time steps, then both
                stride = (2, 1) if height > MEL_STEPS else (2, 2)
                blocks.append(TimestepEmbedSequential(ResBlock(channels, width, channels, down=True,
                                                               down_stride=stride)))
                height //= 2
        self.encoder_blocks = nn.ModuleList(blocks)
        self.out_channels = channels
        self.middle_block = TimestepEmbedSequential(ResBlock(channels, width, channels))

    def forward(self, mels: torch.Tensor) -> torch.Tensor:
        h = mels.type(self.dtype)
        steps = torch.zeros(h.shape[0], dtype=torch.long, device=h.device)
        emb = self.time_embed(timestep_embedding(steps, AUDIO_CHANNELS))
        h = self.input_block(h, emb)
        h = h.reshape(h.shape[0], 1, *h.shape[1:])  # (N, 64, 16) -> (N, 1, 64, 16): an image to convolve
        for block in self.encoder_blocks:
            h = block(h, emb)
        return self.middle_block(h, emb)


class Diff2LipUNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.dtype = torch.float32
        base = MODEL_CHANNELS
        embed = 4 * base
        self.time_embed = nn.Sequential(nn.Linear(base, embed), nn.SiLU(), nn.Linear(embed, embed))

        in_channels = IMAGE_CHANNELS * 3  # noisy frame, masked frame, one reference frame
        self.input_blocks = nn.ModuleList([TimestepEmbedSequential(conv(2, in_channels, base, 3, padding=1))])
        skip_channels = [base]
        channels, downsample = base, 1
        for level, mult in enumerate(CHANNEL_MULT):
            for _ in range(RES_BLOCKS):
                layers: list[nn.Module] = [ResBlock(channels, embed, mult * base)]
                channels = mult * base
                if downsample in ATTENTION_DOWNSAMPLES:
                    layers.append(AttentionBlock(channels, HEAD_CHANNELS))
                self.input_blocks.append(TimestepEmbedSequential(*layers))
                skip_channels.append(channels)
            if level < len(CHANNEL_MULT) - 1:
                self.input_blocks.append(TimestepEmbedSequential(ResBlock(channels, embed, channels, down=True)))
                skip_channels.append(channels)
                downsample *= 2

        self.middle_block = TimestepEmbedSequential(ResBlock(channels, embed), AttentionBlock(channels, HEAD_CHANNELS),
                                                    ResBlock(channels, embed))

        self.output_blocks = nn.ModuleList()
        for level, mult in reversed(list(enumerate(CHANNEL_MULT))):
            for i in range(RES_BLOCKS + 1):
                layers = [ResBlock(channels + skip_channels.pop(), embed, mult * base)]
                channels = mult * base
                if downsample in ATTENTION_DOWNSAMPLES:
                    layers.append(AttentionBlock(channels, HEAD_CHANNELS))
                if level and i == RES_BLOCKS:
                    layers.append(ResBlock(channels, embed, channels, up=True))
                    downsample //= 2
                self.output_blocks.append(TimestepEmbedSequential(*layers))

        self.out = nn.Sequential(normalization(channels), nn.SiLU(),
                                 conv(2, base, IMAGE_CHANNELS * 2, 3, padding=1))

        self.audio_encoder = AudioEncoder()
        self.audio_encoder_to_style = nn.Sequential(
            normalization(self.audio_encoder.out_channels), nn.SiLU(), nn.AdaptiveAvgPool2d((1, 1)),
            conv(2, self.audio_encoder.out_channels, embed, 1), nn.Flatten())

    def convert_to_fp16(self) -> None:
        """Half-precision convolutions in the torso and the audio encoder, as upstream's inference does after
        loading the float32 checkpoint; activations then travel in fp16 between them."""
        for name in FP16_PARTS:
            halve_convolutions(getattr(self, name))
        self.dtype = self.audio_encoder.dtype = torch.float16

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor, cond_img: torch.Tensor, mask: torch.Tensor,
                ref_img: torch.Tensor, indiv_mels: torch.Tensor) -> torch.Tensor:
        x = x * mask + (1.0 - mask) * cond_img  # outside the mask the model sees the real frame
        x = torch.cat([x, cond_img, ref_img], dim=1)
        emb = self.time_embed(timestep_embedding(timesteps, MODEL_CHANNELS))
        emb = emb + self.audio_encoder_to_style(self.audio_encoder(indiv_mels.type(self.dtype)))

        skips = []
        h = x.type(self.dtype)
        for block in self.input_blocks:
            h = block(h, emb)
            skips.append(h)
        h = self.middle_block(h, emb)
        for block in self.output_blocks:
            h = block(torch.cat([h, skips.pop()], dim=1), emb)
        return self.out(h.type(x.dtype))
