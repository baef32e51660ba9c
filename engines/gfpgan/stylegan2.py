"""The StyleGAN2 decoder of GFPGANv1Clean ("clean": plain torch ops, no custom CUDA kernels), with SFT.

Module and parameter names follow upstream's ``StyleGAN2GeneratorClean`` / ``StyleGAN2GeneratorCSFT`` so the
official checkpoints load strictly. Only the path GFPGAN's inference takes is implemented: one latent per layer
comes from the encoder (``input_is_latent=True``, ``different_w=True``), so the style MLP is kept for the
layout but not run, and the per-layer noise is always the stored ``noises.noiseN`` buffers (upstream's
``randomize_noise=False``), which makes the output deterministic.

Modulated convolutions scale the input channels by the style and the output channels by the demodulation factor
instead of building one weight per sample (StyleGAN2's "non-fused" form). It is the same function (the
convolution is linear per channel) and lets a whole batch share one ordinary convolution.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

LEAKY_SLOPE = 0.2


def decoder_channels(channel_multiplier: int = 2, narrow: float = 1.0) -> dict[int, int]:
    """Feature channels per resolution of the StyleGAN2 decoder (upstream's channel table)."""
    wide = {4: 512, 8: 512, 16: 512, 32: 512}
    scaled = {64: 256, 128: 128, 256: 64, 512: 32, 1024: 16}
    table = {res: int(ch * narrow) for res, ch in wide.items()}
    table.update({res: int(ch * channel_multiplier * narrow) for res, ch in scaled.items()})
    return table


class NormStyleCode(nn.Module):
    """Pixel norm of the style code (first layer of the style MLP; no parameters)."""

    def forward(self, code: torch.Tensor) -> torch.Tensor:
        return code * torch.rsqrt(torch.mean(code ** 2, dim=1, keepdim=True) + 1e-8)


class ModulatedConv2d(nn.Module):
    """A convolution whose input channels are scaled per sample by an affine map of the style, optionally
    demodulated (each output channel renormalised to unit expected variance). No bias."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, num_style_feat: int,
                 demodulate: bool = True, upsample: bool = False, eps: float = 1e-8):
        super().__init__()
        self.demodulate, self.upsample, self.eps = demodulate, upsample, eps
        self.modulation = nn.Linear(num_style_feat, in_channels, bias=True)
        self.weight = nn.Parameter(
            torch.randn(1, out_channels, in_channels, kernel_size, kernel_size) / math.sqrt(in_channels * kernel_size ** 2))
        self.padding = kernel_size // 2

    def forward(self, x: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        weight = self.weight[0]  # (out, in, k, k)
        # Styles and demodulation factors in float32 even under fp16 autocast: they are per-sample vectors
        # (cheap), and squared sums over 4608 terms can overflow fp16.
        with torch.autocast(device_type=x.device.type, enabled=False):
            scales = self.modulation(style.float())  # (batch, in)
            if self.demodulate:
                # Demodulation cancels any per-sample factor on the scales, so dividing them by their largest
                # changes nothing but keeps x * scales within fp16's range (as StyleGAN2-ADA does for fp16).
                scales = scales / scales.abs().amax(dim=1, keepdim=True).clamp_min(1e-8)
                energy = scales.pow(2) @ weight.float().pow(2).sum(dim=(2, 3)).t()  # sum over (in, k, k)
                demod = torch.rsqrt(energy + self.eps)  # (batch, out)
        x = x * scales[:, :, None, None].to(x.dtype)
        if self.upsample:
            x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
        out = F.conv2d(x, weight.to(x.dtype), padding=self.padding)
        if self.demodulate:
            out = out * demod[:, :, None, None].to(out.dtype)
        return out


class StyleConv(nn.Module):
    """Modulated 3x3 convolution, stored noise scaled by a learnt strength, bias, leaky ReLU."""

    def __init__(self, in_channels: int, out_channels: int, num_style_feat: int, upsample: bool = False):
        super().__init__()
        self.modulated_conv = ModulatedConv2d(in_channels, out_channels, 3, num_style_feat, upsample=upsample)
        self.weight = nn.Parameter(torch.zeros(1))  # noise strength
        self.bias = nn.Parameter(torch.zeros(1, out_channels, 1, 1))
        self.activate = nn.LeakyReLU(negative_slope=LEAKY_SLOPE, inplace=True)

    def forward(self, x: torch.Tensor, style: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        out = self.modulated_conv(x, style) * math.sqrt(2)  # upstream's gain for the leaky ReLU
        out = out + self.weight * noise + self.bias
        return self.activate(out)


class ToRGB(nn.Module):
    """Features to an RGB residual (modulated 1x1, not demodulated), added to the upsampled running image."""

    def __init__(self, in_channels: int, num_style_feat: int, upsample: bool = True):
        super().__init__()
        self.upsample = upsample
        self.modulated_conv = ModulatedConv2d(in_channels, 3, 1, num_style_feat, demodulate=False)
        self.bias = nn.Parameter(torch.zeros(1, 3, 1, 1))

    def forward(self, x: torch.Tensor, style: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        out = self.modulated_conv(x, style) + self.bias
        if skip is not None:
            if self.upsample:
                skip = F.interpolate(skip, scale_factor=2, mode="bilinear", align_corners=False)
            out = out + skip
        return out


class ConstantInput(nn.Module):
    """The learnt 4x4 start of every image."""

    def __init__(self, channels: int, size: int):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(1, channels, size, size))

    def forward(self, batch: int) -> torch.Tensor:
        return self.weight.expand(batch, -1, -1, -1)


class StyleGAN2DecoderSFT(nn.Module):
    """StyleGAN2 generator whose features are modulated by the encoder's spatial scale/shift maps (SFT)."""

    def __init__(self, out_size: int, num_style_feat: int = 512, num_mlp: int = 8, channel_multiplier: int = 2,
                 narrow: float = 1.0, sft_half: bool = True):
        super().__init__()
        self.sft_half = sft_half
        self.num_style_feat = num_style_feat
        mlp: list[nn.Module] = [NormStyleCode()]
        for _ in range(num_mlp):
            mlp += [nn.Linear(num_style_feat, num_style_feat, bias=True), nn.LeakyReLU(LEAKY_SLOPE, inplace=True)]
        self.style_mlp = nn.Sequential(*mlp)  # kept for the checkpoint layout; GFPGAN feeds latents directly

        channels = decoder_channels(channel_multiplier, narrow)
        self.log_size = int(math.log2(out_size))
        self.num_layers = (self.log_size - 2) * 2 + 1  # style convolutions, one noise map each
        self.num_latent = self.log_size * 2 - 2  # style vectors consumed (convolutions and to-RGBs)

        self.constant_input = ConstantInput(channels[4], size=4)
        self.style_conv1 = StyleConv(channels[4], channels[4], num_style_feat)
        self.to_rgb1 = ToRGB(channels[4], num_style_feat, upsample=False)
        self.style_convs = nn.ModuleList()
        self.to_rgbs = nn.ModuleList()
        self.noises = nn.Module()
        for layer in range(self.num_layers):
            side = 2 ** ((layer + 5) // 2)  # 4, 8, 8, 16, 16, ...
            self.noises.register_buffer(f"noise{layer}", torch.randn(1, 1, side, side))
        in_channels = channels[4]
        for level in range(3, self.log_size + 1):
            out_channels = channels[2 ** level]
            self.style_convs.append(StyleConv(in_channels, out_channels, num_style_feat, upsample=True))
            self.style_convs.append(StyleConv(out_channels, out_channels, num_style_feat))
            self.to_rgbs.append(ToRGB(out_channels, num_style_feat, upsample=True))
            in_channels = out_channels

    def stored_noise(self) -> list[torch.Tensor]:
        return [getattr(self.noises, f"noise{layer}") for layer in range(self.num_layers)]

    def forward(self, latent: torch.Tensor, conditions: list[torch.Tensor]) -> torch.Tensor:
        """latent (batch, num_latent, num_style_feat); conditions: [scale, shift] per resolution from 8 up.
        Returns the image (batch, 3, out_size, out_size), roughly in [-1, 1]."""
        noise = self.stored_noise()
        out = self.constant_input(latent.shape[0])
        out = self.style_conv1(out, latent[:, 0], noise[0])
        image = self.to_rgb1(out, latent[:, 1])
        for level, (to_rgb, conv_up, conv) in enumerate(zip(self.to_rgbs, self.style_convs[::2], self.style_convs[1::2])):
            i = 1 + 2 * level
            out = conv_up(out, latent[:, i], noise[i])
            if i < len(conditions):
                scale, shift = conditions[i - 1], conditions[i]
                if self.sft_half:  # only the second half of the channels is modulated
                    kept, modulated = torch.split(out, out.size(1) // 2, dim=1)
                    out = torch.cat([kept, modulated * scale + shift], dim=1)
                else:
                    out = out * scale + shift
            out = conv(out, latent[:, i + 1], noise[i + 1])
            image = to_rgb(out, latent[:, i + 2], image)
        return image
