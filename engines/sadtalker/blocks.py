"""Building blocks of SadTalker's face renderer (facevid2vid-style), with upstream's module names so the
state-dict keys match the released files. Upstream's SynchronizedBatchNorm holds the same tensors as torch's
BatchNorm (weight, bias, running_mean, running_var, num_batches_tracked), so plain BatchNorm is used."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class SameBlock2d(nn.Module):
    def __init__(self, cin: int, cout: int, kernel_size=3, padding=1, lrelu: bool = False):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel_size=kernel_size, padding=padding)
        self.norm = nn.BatchNorm2d(cout, affine=True)
        self.ac = nn.LeakyReLU() if lrelu else nn.ReLU()

    def forward(self, x):
        return self.ac(self.norm(self.conv(x)))


class DownBlock2d(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel_size=3, padding=1)
        self.norm = nn.BatchNorm2d(cout, affine=True)
        self.pool = nn.AvgPool2d(kernel_size=(2, 2))

    def forward(self, x):
        return self.pool(F.relu(self.norm(self.conv(x))))


class DownBlock3d(nn.Module):
    """Halves height and width, keeps depth."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv = nn.Conv3d(cin, cout, kernel_size=3, padding=1)
        self.norm = nn.BatchNorm3d(cout, affine=True)
        self.pool = nn.AvgPool3d(kernel_size=(1, 2, 2))

    def forward(self, x):
        return self.pool(F.relu(self.norm(self.conv(x))))


class UpBlock3d(nn.Module):
    """Doubles height and width (nearest), keeps depth."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv = nn.Conv3d(cin, cout, kernel_size=3, padding=1)
        self.norm = nn.BatchNorm3d(cout, affine=True)

    def forward(self, x):
        x = F.interpolate(x, scale_factor=(1, 2, 2))
        return F.relu(self.norm(self.conv(x)))


class ResBlock3d(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = nn.Conv3d(channels, channels, kernel_size=3, padding=1)
        self.conv2 = nn.Conv3d(channels, channels, kernel_size=3, padding=1)
        self.norm1 = nn.BatchNorm3d(channels, affine=True)
        self.norm2 = nn.BatchNorm3d(channels, affine=True)

    def forward(self, x):
        out = self.conv1(F.relu(self.norm1(x)))
        out = self.conv2(F.relu(self.norm2(out)))
        return out + x


def _width(expansion: int, level: int, cap: int) -> int:
    return min(cap, expansion * (2 ** level))


class HourglassEncoder(nn.Module):
    def __init__(self, expansion: int, cin: int, blocks: int, cap: int):
        super().__init__()
        self.down_blocks = nn.ModuleList(
            DownBlock3d(cin if i == 0 else _width(expansion, i, cap), _width(expansion, i + 1, cap))
            for i in range(blocks))

    def forward(self, x):
        outs = [x]
        for block in self.down_blocks:
            outs.append(block(outs[-1]))
        return outs


class HourglassDecoder(nn.Module):
    def __init__(self, expansion: int, cin: int, blocks: int, cap: int):
        super().__init__()
        self.up_blocks = nn.ModuleList(
            UpBlock3d((1 if i == blocks - 1 else 2) * _width(expansion, i + 1, cap), _width(expansion, i, cap))
            for i in reversed(range(blocks)))
        self.out_filters = expansion + cin
        self.conv = nn.Conv3d(self.out_filters, self.out_filters, kernel_size=3, padding=1)
        self.norm = nn.BatchNorm3d(self.out_filters, affine=True)

    def forward(self, skips: list):
        out = skips.pop()
        for block in self.up_blocks:
            out = torch.cat([block(out), skips.pop()], dim=1)
        return F.relu(self.norm(self.conv(out)))


class Hourglass(nn.Module):
    """3D U-Net of the dense motion network."""

    def __init__(self, expansion: int, cin: int, blocks: int, cap: int):
        super().__init__()
        self.encoder = HourglassEncoder(expansion, cin, blocks, cap)
        self.decoder = HourglassDecoder(expansion, cin, blocks, cap)
        self.out_filters = self.decoder.out_filters

    def forward(self, x):
        return self.decoder(self.encoder(x))


class KPHourglass(nn.Module):
    """2D encoder, reshaped to a 3D volume, then a 3D decoder (the keypoint detector's predictor)."""

    def __init__(self, expansion: int, cin: int, reshape_features: int, reshape_depth: int, blocks: int, cap: int):
        super().__init__()
        self.down_blocks = nn.Sequential()
        for i in range(blocks):
            self.down_blocks.add_module(
                f"down{i}", DownBlock2d(cin if i == 0 else _width(expansion, i, cap), _width(expansion, i + 1, cap)))
        self.conv = nn.Conv2d(_width(expansion, blocks, cap), reshape_features, kernel_size=1)
        self.up_blocks = nn.Sequential()
        for i in range(blocks):
            self.up_blocks.add_module(
                f"up{i}", UpBlock3d(_width(expansion, blocks - i, cap), _width(expansion, blocks - i - 1, cap)))
        self.reshape_depth = reshape_depth
        self.out_filters = _width(expansion, 0, cap)

    def forward(self, x):
        out = self.conv(self.down_blocks(x))
        bs, c, h, w = out.shape
        return self.up_blocks(out.view(bs, c // self.reshape_depth, self.reshape_depth, h, w))


class AntiAliasInterpolation2d(nn.Module):
    """Gaussian blur then subsampling; the kernel is a buffer saved in the checkpoint (`down.weight`)."""

    def __init__(self, channels: int, scale: float):
        super().__init__()
        sigma = (1 / scale - 1) / 2
        size = 2 * round(sigma * 4) + 1
        self.ka = size // 2
        self.kb = self.ka - 1 if size % 2 == 0 else self.ka
        axis = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
        gauss = torch.exp(-axis ** 2 / (2 * sigma ** 2))
        kernel = gauss[:, None] * gauss[None, :]
        kernel = kernel / kernel.sum()
        self.register_buffer("weight", kernel.expand(channels, 1, size, size).clone())
        self.groups = channels
        self.step = int(1 / scale)

    def forward(self, x):
        x = F.pad(x, (self.ka, self.kb, self.ka, self.kb))
        return F.conv2d(x, weight=self.weight, groups=self.groups)[:, :, :: self.step, :: self.step]


class SPADE(nn.Module):
    def __init__(self, channels: int, label_channels: int, hidden: int = 128):
        super().__init__()
        self.param_free_norm = nn.InstanceNorm2d(channels, affine=False)
        self.mlp_shared = nn.Sequential(nn.Conv2d(label_channels, hidden, kernel_size=3, padding=1), nn.ReLU())
        self.mlp_gamma = nn.Conv2d(hidden, channels, kernel_size=3, padding=1)
        self.mlp_beta = nn.Conv2d(hidden, channels, kernel_size=3, padding=1)

    def forward(self, x, segmap):
        segmap = F.interpolate(segmap, size=x.shape[2:], mode="nearest")
        actv = self.mlp_shared(segmap)
        return self.param_free_norm(x) * (1 + self.mlp_gamma(actv)) + self.mlp_beta(actv)


class SPADEResnetBlock(nn.Module):
    """Convs wrapped in torch's hook-style spectral norm, as upstream: the file holds weight_orig / weight_u /
    weight_v and no plain weight. `bake_spectral_norm()` folds them into plain weights after loading."""

    def __init__(self, fin: int, fout: int, label_channels: int):
        super().__init__()
        self.learned_shortcut = fin != fout
        middle = min(fin, fout)
        sn = nn.utils.spectral_norm
        self.conv_0 = sn(nn.Conv2d(fin, middle, kernel_size=3, padding=1))
        self.conv_1 = sn(nn.Conv2d(middle, fout, kernel_size=3, padding=1))
        if self.learned_shortcut:
            self.conv_s = sn(nn.Conv2d(fin, fout, kernel_size=1, bias=False))
        self.norm_0 = SPADE(fin, label_channels)
        self.norm_1 = SPADE(middle, label_channels)
        if self.learned_shortcut:
            self.norm_s = SPADE(fin, label_channels)

    def forward(self, x, seg):
        shortcut = self.conv_s(self.norm_s(x, seg)) if self.learned_shortcut else x
        dx = self.conv_0(F.leaky_relu(self.norm_0(x, seg), 0.2))
        dx = self.conv_1(F.leaky_relu(self.norm_1(dx, seg), 0.2))
        return shortcut + dx


def bake_spectral_norm(model: nn.Module) -> None:
    """Replace each spectral-norm hook by the weight it computes (eval: no power iteration), so inference
    does not recompute it every call and the model exports as plain convs."""
    for module in list(model.modules()):
        if hasattr(module, "weight_orig"):
            nn.utils.remove_spectral_norm(module)


def coordinate_grid(d: int, h: int, w: int, like: torch.Tensor) -> torch.Tensor:
    """(d, h, w, 3) grid of (x, y, z) in [-1, 1]."""
    def axis(n):
        return 2 * (torch.arange(n, dtype=like.dtype, device=like.device) / (n - 1)) - 1
    z, y, x = torch.meshgrid(axis(d), axis(h), axis(w), indexing="ij")
    return torch.stack([x, y, z], dim=-1)
