"""The Wav2Lip generator (96x96 faces), laid out so the official checkpoints' state-dict keys match.

Written from the published architecture: a face encoder over the masked + reference crop (6 channels), an
audio encoder over one 80x16 mel window, and a decoder that upsamples the audio embedding while
concatenating the face encoder's skip features (U-Net style). Every conv is wrapped as
``conv_block = Sequential(conv, BatchNorm)`` followed by ReLU, with an optional identity shortcut; those
wrapper and attribute names are what make the parameter names line up with upstream's files.
"""

from __future__ import annotations

import torch
from torch import nn

from . import FACE_SIZE, MEL_BANDS, MEL_STEPS  # noqa: F401  (the shape contract)


class ConvBnRelu(nn.Module):
    """conv -> batch norm (-> + input when ``residual``) -> ReLU; parameters under ``conv_block.0/1``."""

    def __init__(self, cin: int, cout: int, kernel: int, stride, padding: int, residual: bool = False):
        super().__init__()
        self.conv_block = nn.Sequential(nn.Conv2d(cin, cout, kernel, stride, padding), nn.BatchNorm2d(cout))
        self.act = nn.ReLU()
        self.residual = residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv_block(x)
        return self.act(y + x if self.residual else y)


class UpConvBnRelu(nn.Module):
    """transposed conv -> batch norm -> ReLU; parameters under ``conv_block.0/1``."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, padding: int, output_padding: int = 0):
        super().__init__()
        self.conv_block = nn.Sequential(
            nn.ConvTranspose2d(cin, cout, kernel, stride, padding, output_padding), nn.BatchNorm2d(cout)
        )
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv_block(x))


def _down(cin: int, cout: int, residual_blocks: int, kernel: int = 3, stride=2, padding: int = 1) -> nn.Sequential:
    """One stride-2 (or given stride) conv followed by ``residual_blocks`` same-width residual convs."""
    layers = [ConvBnRelu(cin, cout, kernel, stride, padding)]
    layers += [ConvBnRelu(cout, cout, 3, 1, 1, residual=True) for _ in range(residual_blocks)]
    return nn.Sequential(*layers)


def _up(cin: int, cout: int, residual_blocks: int, stride: int = 2, padding: int = 1, output_padding: int = 1):
    layers = [UpConvBnRelu(cin, cout, 3, stride, padding, output_padding)]
    layers += [ConvBnRelu(cout, cout, 3, 1, 1, residual=True) for _ in range(residual_blocks)]
    return nn.Sequential(*layers)


def _bottleneck(cin: int, cout: int) -> nn.Sequential:
    """3x3 valid conv (3x3 -> 1x1) then a 1x1 conv."""
    return nn.Sequential(ConvBnRelu(cin, cout, 3, 1, 0), ConvBnRelu(cout, cout, 1, 1, 0))


class Wav2Lip(nn.Module):
    """forward(mel (B,1,80,16), faces (B,6,96,96) in [0,1], BGR, masked crop first) -> (B,3,96,96) in [0,1]."""

    def __init__(self):
        super().__init__()
        # Spatial sizes after each block: 96, 48, 24, 12, 6, 3, 1.
        self.face_encoder_blocks = nn.ModuleList([
            nn.Sequential(ConvBnRelu(6, 16, 7, 1, 3)),
            _down(16, 32, 2),
            _down(32, 64, 3),
            _down(64, 128, 2),
            _down(128, 256, 2),
            _down(256, 512, 1),
            _bottleneck(512, 512),
        ])
        # 80x16 -> 80x16 -> 27x16 -> 9x6 -> 3x3 -> 1x1, 512 channels.
        audio = list(_down(1, 32, 2, stride=1)) + list(_down(32, 64, 2, stride=(3, 1)))
        audio += list(_down(64, 128, 2, stride=3)) + list(_down(128, 256, 1, stride=(3, 2)))
        audio += list(_bottleneck(256, 512))
        self.audio_encoder = nn.Sequential(*audio)
        # Each block's input is the previous output concatenated with the matching face features.
        self.face_decoder_blocks = nn.ModuleList([
            nn.Sequential(ConvBnRelu(512, 512, 1, 1, 0)),
            _up(1024, 512, 1, stride=1, padding=0, output_padding=0),
            _up(1024, 512, 2),
            _up(768, 384, 2),
            _up(512, 256, 2),
            _up(320, 128, 2),
            _up(160, 64, 2),
        ])
        self.output_block = nn.Sequential(
            ConvBnRelu(80, 32, 3, 1, 1), nn.Conv2d(32, 3, kernel_size=1, stride=1, padding=0), nn.Sigmoid()
        )

    def forward(self, mel: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
        skips = []
        x = faces
        for block in self.face_encoder_blocks:
            x = block(x)
            skips.append(x)
        x = self.audio_encoder(mel)
        for block in self.face_decoder_blocks:
            x = torch.cat((block(x), skips.pop()), dim=1)
        return self.output_block(x)
