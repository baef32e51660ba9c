"""SadTalker's face renderer (upstream src/facerender, config facerender.yaml): canonical 3D keypoints of the
source face, a mapping net from 3DMM coefficients to head pose / translation / expression deltas, and the
OcclusionAwareSPADEGenerator that warps the source features by the keypoint motion and decodes 256x256."""

from __future__ import annotations


import torch
import torch.nn.functional as F
from torch import nn

from .blocks import (AntiAliasInterpolation2d, DownBlock2d, Hourglass, KPHourglass, ResBlock3d, SameBlock2d,
                     SPADEResnetBlock, coordinate_grid)

NUM_KP = 15
FEATURE_CHANNELS = 32  # 3D feature volume: 32 channels x 16 depth
FEATURE_DEPTH = 16
NUM_BINS = 66  # head angle bins of 3 degrees, -99..99
COEFF_CHANNELS = 70  # 64 expression + 3 angles + 3 translation


class KPDetector(nn.Module):
    """Canonical keypoints (B, 15, 3) in [-1, 1] from a (B, 3, 256, 256) image in [0, 1]."""

    def __init__(self, temperature: float = 0.1):
        super().__init__()
        self.predictor = KPHourglass(32, 3, reshape_features=16384, reshape_depth=16, blocks=5, cap=1024)
        self.kp = nn.Conv3d(self.predictor.out_filters, NUM_KP, kernel_size=3, padding=1)
        self.temperature = temperature
        self.down = AntiAliasInterpolation2d(3, 0.25)

    def forward(self, image):
        prediction = self.kp(self.predictor(self.down(image)))
        b, k, d, h, w = prediction.shape
        heatmap = F.softmax(prediction.view(b, k, -1) / self.temperature, dim=2).view(b, k, d, h, w)
        grid = coordinate_grid(d, h, w, heatmap)
        return (heatmap.unsqueeze(-1) * grid).sum(dim=(2, 3, 4))


class MappingNet(nn.Module):
    """A 27-frame window of 70 coefficients (B, 70, 27) -> yaw / pitch / roll bins, translation, expression."""

    def __init__(self, coeff_nc: int = COEFF_CHANNELS, descriptor_nc: int = 1024, layers: int = 3):
        super().__init__()
        self.layers = layers
        self.first = nn.Sequential(nn.Conv1d(coeff_nc, descriptor_nc, kernel_size=7, padding=0, bias=True))
        for i in range(layers):
            setattr(self, f"encoder{i}", nn.Sequential(
                nn.LeakyReLU(0.1), nn.Conv1d(descriptor_nc, descriptor_nc, kernel_size=3, padding=0, dilation=3)))
        self.pooling = nn.AdaptiveAvgPool1d(1)
        self.fc_roll = nn.Linear(descriptor_nc, NUM_BINS)
        self.fc_pitch = nn.Linear(descriptor_nc, NUM_BINS)
        self.fc_yaw = nn.Linear(descriptor_nc, NUM_BINS)
        self.fc_t = nn.Linear(descriptor_nc, 3)
        self.fc_exp = nn.Linear(descriptor_nc, 3 * NUM_KP)

    def forward(self, window):
        out = self.first(window)
        for i in range(self.layers):
            out = getattr(self, f"encoder{i}")(out) + out[:, :, 3:-3]
        out = self.pooling(out).flatten(1)
        return {"yaw": self.fc_yaw(out), "pitch": self.fc_pitch(out), "roll": self.fc_roll(out),
                "t": self.fc_t(out), "exp": self.fc_exp(out)}


def bins_to_degrees(logits):
    """Expected angle of 66 softmax bins of 3 degrees starting at -99."""
    index = torch.arange(NUM_BINS, dtype=logits.dtype, device=logits.device)
    return (F.softmax(logits, dim=1) * index).sum(dim=1) * 3 - 99


def rotation_matrix(yaw, pitch, roll):
    """(B, 3, 3) = pitch(x) @ yaw(y) @ roll(z), angles in degrees (upstream converts with 3.14, kept)."""
    yaw, pitch, roll = (a / 180 * 3.14 for a in (yaw, pitch, roll))
    one, zero = torch.ones_like(yaw), torch.zeros_like(yaw)

    def mat(*rows):
        return torch.stack(rows, dim=1).view(-1, 3, 3)

    pitch_m = mat(one, zero, zero, zero, torch.cos(pitch), -torch.sin(pitch), zero, torch.sin(pitch), torch.cos(pitch))
    yaw_m = mat(torch.cos(yaw), zero, torch.sin(yaw), zero, one, zero, -torch.sin(yaw), zero, torch.cos(yaw))
    roll_m = mat(torch.cos(roll), -torch.sin(roll), zero, torch.sin(roll), torch.cos(roll), zero, zero, zero, one)
    return pitch_m @ yaw_m @ roll_m


def transform_keypoints(canonical, motion: dict):
    """Canonical keypoints (B, 15, 3) rotated by the head angles, shifted vertically by the translation (upstream
    zeroes its x and z), plus the expression deltas."""
    rotation = rotation_matrix(*(bins_to_degrees(motion[k]) for k in ("yaw", "pitch", "roll")))
    rotated = torch.einsum("bmp,bkp->bkm", rotation, canonical)
    shift = torch.zeros_like(motion["t"])
    shift[:, 1] = motion["t"][:, 1]
    return rotated + shift.unsqueeze(1) + motion["exp"].view(motion["exp"].shape[0], -1, 3)


def gaussians(keypoints, d: int, h: int, w: int, variance: float = 0.01):
    """(B, K, d, h, w) Gaussian blobs around each keypoint."""
    grid = coordinate_grid(d, h, w, keypoints)
    diff = grid.view(1, 1, d, h, w, 3) - keypoints.view(*keypoints.shape[:2], 1, 1, 1, 3)
    return torch.exp(-0.5 * (diff ** 2).sum(-1) / variance)


class DenseMotionNetwork(nn.Module):
    """Keypoint motion -> a dense 3D deformation of the feature volume, and an occlusion map."""

    def __init__(self, expansion: int = 32, blocks: int = 5, cap: int = 1024, compress: int = 4):
        super().__init__()
        self.hourglass = Hourglass(expansion, (NUM_KP + 1) * (compress + 1), blocks, cap)
        self.mask = nn.Conv3d(self.hourglass.out_filters, NUM_KP + 1, kernel_size=7, padding=3)
        self.compress = nn.Conv3d(FEATURE_CHANNELS, compress, kernel_size=1)
        self.norm = nn.BatchNorm3d(compress, affine=True)
        self.occlusion = nn.Conv2d(self.hourglass.out_filters * FEATURE_DEPTH, 1, kernel_size=7, padding=3)

    def forward(self, feature, kp_driving, kp_source):
        bs, _, d, h, w = feature.shape
        feature = F.relu(self.norm(self.compress(feature)))
        identity = coordinate_grid(d, h, w, feature).view(1, 1, d, h, w, 3)
        to_source = identity - kp_driving.view(bs, NUM_KP, 1, 1, 1, 3) + kp_source.view(bs, NUM_KP, 1, 1, 1, 3)
        sparse = torch.cat([identity.expand(bs, 1, d, h, w, 3), to_source], dim=1)  # (bs, K+1, d, h, w, 3)

        channels = feature.shape[1]
        repeated = feature.unsqueeze(1).expand(bs, NUM_KP + 1, channels, d, h, w).reshape(-1, channels, d, h, w)
        deformed = F.grid_sample(repeated, sparse.reshape(-1, d, h, w, 3), align_corners=False)
        deformed = deformed.view(bs, NUM_KP + 1, channels, d, h, w)

        heat = gaussians(kp_driving, d, h, w) - gaussians(kp_source, d, h, w)
        heat = torch.cat([torch.zeros_like(heat[:, :1]), heat], dim=1).unsqueeze(2)
        prediction = self.hourglass(torch.cat([heat, deformed], dim=2).view(bs, -1, d, h, w))

        mask = F.softmax(self.mask(prediction), dim=1).unsqueeze(2)
        mask = torch.where(mask < 1e-3, torch.zeros_like(mask), mask)
        deformation = (sparse.permute(0, 1, 5, 2, 3, 4) * mask).sum(dim=1).permute(0, 2, 3, 4, 1)
        occlusion = torch.sigmoid(self.occlusion(prediction.reshape(bs, -1, h, w)))
        return deformation, occlusion


class SPADEDecoder(nn.Module):
    def __init__(self, channels: int = 256, out_channels: int = 64):
        super().__init__()
        self.fc = nn.Conv2d(channels, 2 * channels, 3, padding=1)
        for i in range(6):
            setattr(self, f"G_middle_{i}", SPADEResnetBlock(2 * channels, 2 * channels, channels))
        self.up_0 = SPADEResnetBlock(2 * channels, channels, channels)
        self.up_1 = SPADEResnetBlock(channels, out_channels, channels)
        self.conv_img = nn.Conv2d(out_channels, 3, 3, padding=1)
        self.up = nn.Upsample(scale_factor=2)

    def forward(self, feature):
        x = self.fc(feature)
        for i in range(6):
            x = getattr(self, f"G_middle_{i}")(x, feature)
        x = self.up_0(self.up(x), feature)
        x = self.up_1(self.up(x), feature)
        return torch.sigmoid(self.conv_img(F.leaky_relu(x, 2e-1)))


class OcclusionAwareSPADEGenerator(nn.Module):
    """Source image (B, 3, 256, 256) in [0, 1] + source / driving keypoints -> the driven face, same size."""

    def __init__(self, expansion: int = 64, max_features: int = 512, down_blocks: int = 2, resblocks: int = 6):
        super().__init__()
        self.dense_motion_network = DenseMotionNetwork()
        self.first = SameBlock2d(3, expansion, kernel_size=(3, 3), padding=(1, 1))
        self.down_blocks = nn.ModuleList(
            DownBlock2d(min(max_features, expansion * 2 ** i), min(max_features, expansion * 2 ** (i + 1)))
            for i in range(down_blocks))
        self.second = nn.Conv2d(min(max_features, expansion * 2 ** down_blocks), max_features, kernel_size=1)
        self.resblocks_3d = nn.Sequential()
        for i in range(resblocks):
            self.resblocks_3d.add_module(f"3dr{i}", ResBlock3d(FEATURE_CHANNELS))
        width = expansion * 2 ** down_blocks
        self.third = SameBlock2d(max_features, width, kernel_size=(3, 3), padding=(1, 1), lrelu=True)
        self.fourth = nn.Conv2d(width, width, kernel_size=1)
        self.decoder = SPADEDecoder()

    def source_features(self, image):
        """The source's 3D feature volume (B, 32, 16, H/4, W/4): computed once per job, reused every frame."""
        out = self.first(image)
        for block in self.down_blocks:
            out = block(out)
        out = self.second(out)
        bs, _, h, w = out.shape
        return self.resblocks_3d(out.view(bs, FEATURE_CHANNELS, FEATURE_DEPTH, h, w))

    def animate(self, features, kp_driving, kp_source):
        deformation, occlusion = self.dense_motion_network(features, kp_driving, kp_source)
        out = F.grid_sample(features, deformation, align_corners=False)
        bs, c, d, h, w = out.shape
        out = self.fourth(self.third(out.reshape(bs, c * d, h, w)))
        if out.shape[2:] != occlusion.shape[2:]:
            occlusion = F.interpolate(occlusion, size=out.shape[2:], mode="bilinear")
        return self.decoder(out * occlusion)

    def forward(self, source_image, kp_driving, kp_source):
        return self.animate(self.source_features(source_image), kp_driving, kp_source)


