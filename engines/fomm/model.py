"""The FOMM vox-256 networks: keypoint detector, dense motion network and occlusion-aware generator.

Parameter and buffer names, shapes and order are those of upstream first-order-model (config/vox-256.yaml), so
the published `vox-cpk.pth.tar` loads with strict=True. Upstream's SynchronizedBatchNorm2d has the state dict
of nn.BatchNorm2d, which is used here (inference only).

Coordinates: keypoints, deformation fields and sampling grids are (x, y) in [-1, 1], where -1 and 1 are the
centres of the first and last pixel (upstream's make_coordinate_grid). grid_sample therefore runs with
align_corners=True, the behaviour of the torch release the checkpoint was trained with (torch 1.0 had no other).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from . import NUM_KP

KP_VARIANCE = 0.01  # width of the keypoint Gaussians the dense motion network sees


# ---------------------------------------------------------------------------------------------- geometry


def coordinate_grid(height: int, width: int, like: torch.Tensor) -> torch.Tensor:
    """(height, width, 2) grid of (x, y) in [-1, 1], pixel centres at both ends."""
    ys = torch.linspace(-1.0, 1.0, height, dtype=like.dtype, device=like.device)
    xs = torch.linspace(-1.0, 1.0, width, dtype=like.dtype, device=like.device)
    grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([grid_x, grid_y], dim=-1)


def keypoint_gaussians(values: torch.Tensor, height: int, width: int, variance: float = KP_VARIANCE) -> torch.Tensor:
    """(B, K, H, W) Gaussian bumps centred on keypoints ``values`` (B, K, 2)."""
    grid = coordinate_grid(height, width, values)
    offset = grid[None, None] - values[:, :, None, None, :]
    return torch.exp(-0.5 * (offset**2).sum(-1) / variance)


def sample(image: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """Bilinear sampling of ``image`` (B, C, H, W) at ``grid`` (B, h, w, 2); zeros outside. In fp32 even
    under fp16 autocast: a half-precision grid would be off by up to a tenth of a pixel."""
    return F.grid_sample(image.float(), grid.float(), mode="bilinear", padding_mode="zeros", align_corners=True)


def full_precision(tensor: torch.Tensor):
    """A context in which autocast leaves ``tensor``'s device in fp32 (keypoint geometry, Jacobian inverses)."""
    return torch.autocast(tensor.device.type, enabled=False)


@dataclass
class Keypoints:
    """Keypoint positions (B, K, 2) and the local 2x2 Jacobians (B, K, 2, 2) around them."""

    value: torch.Tensor
    jacobian: torch.Tensor

    def __getitem__(self, index) -> "Keypoints":
        return Keypoints(self.value[index], self.jacobian[index])


# ---------------------------------------------------------------------------------------------- blocks


class SameBlock2d(nn.Module):
    """conv -> batch norm -> ReLU at the same resolution."""

    def __init__(self, in_features: int, out_features: int, kernel_size: int = 3, padding: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(in_features, out_features, kernel_size, padding=padding)
        self.norm = nn.BatchNorm2d(out_features, affine=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.norm(self.conv(x)))


class DownBlock2d(SameBlock2d):
    """SameBlock2d followed by 2x2 average pooling."""

    def __init__(self, in_features: int, out_features: int):
        super().__init__(in_features, out_features)
        self.pool = nn.AvgPool2d(kernel_size=2)  # no weights; kept so the module tree matches upstream's

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(super().forward(x))


class UpBlock2d(SameBlock2d):
    """2x nearest-neighbour upsampling followed by SameBlock2d."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class ResBlock2d(nn.Module):
    """Pre-activation residual block (norm -> ReLU -> conv, twice) at the same resolution."""

    def __init__(self, features: int):
        super().__init__()
        self.conv1 = nn.Conv2d(features, features, 3, padding=1)
        self.conv2 = nn.Conv2d(features, features, 3, padding=1)
        self.norm1 = nn.BatchNorm2d(features, affine=True)
        self.norm2 = nn.BatchNorm2d(features, affine=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(F.relu(self.norm1(x)))
        out = self.conv2(F.relu(self.norm2(out)))
        return out + x


def _width(expansion: int, level: int, max_features: int) -> int:
    return min(max_features, expansion * 2**level)


class Encoder(nn.Module):
    def __init__(self, expansion: int, in_features: int, num_blocks: int, max_features: int):
        super().__init__()
        self.down_blocks = nn.ModuleList(
            DownBlock2d(in_features if i == 0 else _width(expansion, i, max_features), _width(expansion, i + 1, max_features))
            for i in range(num_blocks)
        )

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        levels = [x]
        for block in self.down_blocks:
            levels.append(block(levels[-1]))
        return levels


class Decoder(nn.Module):
    """Upsamples the deepest level, concatenating each shallower encoder level on the way up (U-Net)."""

    def __init__(self, expansion: int, in_features: int, num_blocks: int, max_features: int):
        super().__init__()
        blocks = []
        for i in reversed(range(num_blocks)):
            skip_doubling = 1 if i == num_blocks - 1 else 2
            blocks.append(UpBlock2d(skip_doubling * _width(expansion, i + 1, max_features), _width(expansion, i, max_features)))
        self.up_blocks = nn.ModuleList(blocks)
        self.out_features = expansion + in_features

    def forward(self, levels: list[torch.Tensor]) -> torch.Tensor:
        out = levels[-1]
        for block, skip in zip(self.up_blocks, reversed(levels[:-1])):
            out = torch.cat([block(out), skip], dim=1)
        return out


class Hourglass(nn.Module):
    def __init__(self, expansion: int, in_features: int, num_blocks: int, max_features: int):
        super().__init__()
        self.encoder = Encoder(expansion, in_features, num_blocks, max_features)
        self.decoder = Decoder(expansion, in_features, num_blocks, max_features)
        self.out_features = self.decoder.out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))


def gaussian_kernel(channels: int, scale: float) -> torch.Tensor:
    """The fixed anti-aliasing kernel upstream stores as ``down.weight``: a normalised 2-D Gaussian with
    sigma (1/scale - 1)/2 over 2*round(4 sigma)+1 taps, one copy per channel (depthwise conv weight)."""
    sigma = (1 / scale - 1) / 2
    size = 2 * round(sigma * 4) + 1
    taps = torch.arange(size, dtype=torch.float32)
    profile = torch.exp(-((taps - (size - 1) / 2) ** 2) / (2 * sigma**2))
    kernel = profile[:, None] * profile[None, :]
    kernel = kernel / kernel.sum()
    return kernel.expand(channels, 1, size, size).clone()


class AntiAliasDownsample(nn.Module):
    """Gaussian blur then keep every (1/scale)-th pixel: downsampling without aliasing."""

    def __init__(self, channels: int, scale: float):
        super().__init__()
        self.register_buffer("weight", gaussian_kernel(channels, scale))
        self.step = int(1 / scale)
        self.channels = channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        half = self.weight.shape[-1] // 2
        blurred = F.conv2d(F.pad(x, (half, half, half, half)), self.weight.to(x.dtype), groups=self.channels)
        return blurred[:, :, :: self.step, :: self.step]


# ---------------------------------------------------------------------------------------------- networks


class KPDetector(nn.Module):
    """Keypoints as the expected position of a softmax heatmap, with a Jacobian per keypoint pooled by the
    same heatmap (vox-256: 10 keypoints, hourglass of 5 blocks on the input at 1/4 scale)."""

    def __init__(self, num_kp: int = NUM_KP, channels: int = 3, expansion: int = 32, max_features: int = 1024,
                 num_blocks: int = 5, temperature: float = 0.1, scale: float = 0.25):
        super().__init__()
        self.predictor = Hourglass(expansion, channels, num_blocks, max_features)
        self.kp = nn.Conv2d(self.predictor.out_features, num_kp, kernel_size=7)
        self.jacobian = nn.Conv2d(self.predictor.out_features, 4 * num_kp, kernel_size=7)
        with torch.no_grad():  # upstream starts the Jacobian head at the identity
            self.jacobian.weight.zero_()
            self.jacobian.bias.copy_(torch.tensor([1.0, 0.0, 0.0, 1.0] * num_kp))
        self.down = AntiAliasDownsample(channels, scale)
        self.temperature = temperature
        self.num_kp = num_kp

    def forward(self, image: torch.Tensor) -> Keypoints:
        features = self.predictor(self.down(image))
        logits = self.kp(features)
        batch, kps, height, width = logits.shape
        heatmap = F.softmax(logits.reshape(batch, kps, -1).float() / self.temperature, dim=2).reshape(logits.shape)
        grid = coordinate_grid(height, width, heatmap)
        value = (heatmap[..., None] * grid).sum(dim=(2, 3))
        maps = self.jacobian(features).float().reshape(batch, kps, 4, height, width)
        jacobian = (heatmap[:, :, None] * maps).sum(dim=(3, 4)).reshape(batch, kps, 2, 2)
        return Keypoints(value, jacobian)


class DenseMotionNetwork(nn.Module):
    """From source and driving keypoints to a dense backward deformation (driving pixel -> source position)
    and an occlusion map, both at 1/4 of the input resolution."""

    def __init__(self, num_kp: int = NUM_KP, channels: int = 3, expansion: int = 64, max_features: int = 1024,
                 num_blocks: int = 5, scale: float = 0.25):
        super().__init__()
        self.hourglass = Hourglass(expansion, (num_kp + 1) * (channels + 1), num_blocks, max_features)
        self.mask = nn.Conv2d(self.hourglass.out_features, num_kp + 1, kernel_size=7, padding=3)
        self.occlusion = nn.Conv2d(self.hourglass.out_features, 1, kernel_size=7, padding=3)
        self.down = AntiAliasDownsample(channels, scale)
        self.num_kp = num_kp

    def sparse_motions(self, height: int, width: int, driving: Keypoints, source: Keypoints) -> torch.Tensor:
        """(B, K+1, H, W, 2): for the background (identity) and each keypoint, where each driving pixel comes
        from in the source under that keypoint's local affine motion (first-order Taylor expansion)."""
        identity = coordinate_grid(height, width, driving.value)
        local = source.jacobian @ torch.inverse(driving.jacobian)  # (B, K, 2, 2)
        offset = identity[None, None] - driving.value[:, :, None, None, :]  # (B, K, H, W, 2)
        moved = torch.einsum("bkij,bkhwj->bkhwi", local, offset) + source.value[:, :, None, None, :]
        background = identity.expand(driving.value.shape[0], 1, height, width, 2)
        return torch.cat([background, moved], dim=1)

    def forward(self, source_image: torch.Tensor, driving: Keypoints, source: Keypoints) -> dict[str, torch.Tensor]:
        small = self.down(source_image)
        batch, channels, height, width = small.shape
        parts = self.num_kp + 1
        with full_precision(small):
            difference = keypoint_gaussians(driving.value, height, width) - keypoint_gaussians(source.value, height, width)
            heatmaps = torch.cat([torch.zeros_like(difference[:, :1]), difference], dim=1)
            motions = self.sparse_motions(height, width, driving, source)
        repeated = small[:, None].expand(batch, parts, channels, height, width).reshape(batch * parts, channels, height, width)
        deformed = sample(repeated, motions.reshape(batch * parts, height, width, 2)).reshape(batch, parts, channels, height, width)
        features = torch.cat([heatmaps[:, :, None], deformed], dim=2).reshape(batch, parts * (channels + 1), height, width)
        prediction = self.hourglass(features)
        weights = F.softmax(self.mask(prediction).float(), dim=1)  # (B, K+1, H, W)
        deformation = (motions * weights[..., None]).sum(dim=1)  # (B, H, W, 2)
        occlusion = torch.sigmoid(self.occlusion(prediction).float())
        return {"deformation": deformation, "occlusion_map": occlusion, "mask": weights}


class OcclusionAwareGenerator(nn.Module):
    """Encodes the source, warps its features by the dense motion, masks them by the occlusion map and
    decodes the driving frame (vox-256: 64 channels, 2 down blocks, 6 residual blocks)."""

    def __init__(self, num_kp: int = NUM_KP, channels: int = 3, expansion: int = 64, max_features: int = 512,
                 num_down_blocks: int = 2, num_bottleneck_blocks: int = 6):
        super().__init__()
        self.dense_motion_network = DenseMotionNetwork(num_kp, channels)
        self.first = SameBlock2d(channels, expansion, kernel_size=7, padding=3)
        self.down_blocks = nn.ModuleList(
            DownBlock2d(_width(expansion, i, max_features), _width(expansion, i + 1, max_features))
            for i in range(num_down_blocks)
        )
        self.up_blocks = nn.ModuleList(
            UpBlock2d(_width(expansion, num_down_blocks - i, max_features), _width(expansion, num_down_blocks - i - 1, max_features))
            for i in range(num_down_blocks)
        )
        bottleneck_width = _width(expansion, num_down_blocks, max_features)
        self.bottleneck = nn.Sequential()
        for i in range(num_bottleneck_blocks):
            self.bottleneck.add_module(f"r{i}", ResBlock2d(bottleneck_width))
        self.final = nn.Conv2d(expansion, channels, kernel_size=7, padding=3)

    def encode(self, source_image: torch.Tensor) -> torch.Tensor:
        out = self.first(source_image)
        for block in self.down_blocks:
            out = block(out)
        return out

    def decode(self, features: torch.Tensor) -> torch.Tensor:
        out = self.bottleneck(features)
        for block in self.up_blocks:
            out = block(out)
        return torch.sigmoid(self.final(out))

    def forward(self, source_image: torch.Tensor, kp_driving: Keypoints, kp_source: Keypoints) -> dict[str, torch.Tensor]:
        """Upstream's outputs: 'prediction' (B, 3, H, W) in [0, 1], 'deformation' (B, H/4, W/4, 2),
        'occlusion_map' (B, 1, H/4, W/4), 'mask'."""
        features = self.encode(source_image)
        motion = self.dense_motion_network(source_image, kp_driving, kp_source)
        deformation = motion["deformation"]
        if deformation.shape[1:3] != features.shape[2:]:
            resized = F.interpolate(deformation.permute(0, 3, 1, 2), size=features.shape[2:], mode="bilinear")
            deformation = resized.permute(0, 2, 3, 1)
        warped = sample(features, deformation)
        occlusion = motion["occlusion_map"]
        if occlusion.shape[2:] != warped.shape[2:]:
            occlusion = F.interpolate(occlusion, size=warped.shape[2:], mode="bilinear")
        prediction = self.decode(warped * occlusion.to(warped.dtype))
        return {"prediction": prediction, **motion}
