"""SadTalker's audio -> coefficient nets (upstream src/audio2exp_models, src/audio2pose_models).

- ExpressionNet (upstream SimpleWrapperV2, saved as `audio2exp.`): per frame, a Wav2Lip-style audio encoder on
  a (80, 16) mel window, with the source's 64 expression coefficients and a blink ratio -> 64 expression coeffs.
- Audio2Pose (`audio2pose.`): a CVAE whose decoder turns seeded noise + a pose style + 32 frames of audio into
  32 frames of head motion (3 angles, 3 translations). The CVAE encoder and the pose-sequence discriminator are
  used only in training, but the released file carries them, so they are built for a strict load.
  Trap: upstream's encoder constructor adds to its config list in place, so its first layer is 454 wide
  (192 + 64 latent + 32 * 6 audio + 6 reference), not the 192 the YAML says.
"""

from __future__ import annotations

import torch
from torch import nn

LATENT = 64
SEQ_LEN = 32
AUDIO_OUT = 6  # per-frame audio embedding width inside the CVAE
POSE = 6
CLASSES = 46


class ConvBN(nn.Module):
    """Conv2d + BatchNorm (+ residual) + ReLU, as upstream's audio encoders name it (`conv_block.0/1`)."""

    def __init__(self, cin, cout, kernel_size, stride, padding, residual=False):
        super().__init__()
        self.conv_block = nn.Sequential(nn.Conv2d(cin, cout, kernel_size, stride, padding), nn.BatchNorm2d(cout))
        self.act = nn.ReLU()
        self.residual = residual

    def forward(self, x):
        out = self.conv_block(x)
        return self.act(out + x if self.residual else out)


def audio_encoder() -> nn.Sequential:
    """(N, 1, 80, 16) mel window -> (N, 512, 1, 1): the Wav2Lip audio encoder's shape."""
    spec = [(1, 32, 3, 1, 1, False), (32, 32, 3, 1, 1, True), (32, 32, 3, 1, 1, True),
            (32, 64, 3, (3, 1), 1, False), (64, 64, 3, 1, 1, True), (64, 64, 3, 1, 1, True),
            (64, 128, 3, 3, 1, False), (128, 128, 3, 1, 1, True), (128, 128, 3, 1, 1, True),
            (128, 256, 3, (3, 2), 1, False), (256, 256, 3, 1, 1, True),
            (256, 512, 3, 1, 0, False), (512, 512, 1, 1, 0, False)]
    return nn.Sequential(*(ConvBN(*row) for row in spec))


class ExpressionNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.audio_encoder = audio_encoder()
        self.mapping1 = nn.Linear(512 + 64 + 1, 64)

    def forward(self, mel, ref_exp, blink):
        """mel (N, 1, 80, 16), ref_exp (N, 64), blink (N, 1) -> (N, 64)."""
        audio = self.audio_encoder(mel).flatten(1)
        return self.mapping1(torch.cat([audio, ref_exp, blink], dim=1))


class ResidualConv(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv_block = nn.Sequential(
            nn.BatchNorm2d(cin), nn.ReLU(), nn.Conv2d(cin, cout, 3, stride=stride, padding=1),
            nn.BatchNorm2d(cout), nn.ReLU(), nn.Conv2d(cout, cout, 3, padding=1))
        self.conv_skip = nn.Sequential(nn.Conv2d(cin, cout, 3, stride=stride, padding=1), nn.BatchNorm2d(cout))

    def forward(self, x):
        return self.conv_block(x) + self.conv_skip(x)


class Upsample(nn.Module):
    def __init__(self, channels):
        super().__init__()
        self.upsample = nn.ConvTranspose2d(channels, channels, kernel_size=(2, 1), stride=(2, 1))

    def forward(self, x):
        return self.upsample(x)


class ResUnet(nn.Module):
    """U-Net over a (1, frames, 6) pose sequence, downsampling the frame axis only."""

    def __init__(self, f=(32, 64, 128, 256)):
        super().__init__()
        self.input_layer = nn.Sequential(nn.Conv2d(1, f[0], 3, padding=1), nn.BatchNorm2d(f[0]), nn.ReLU(),
                                         nn.Conv2d(f[0], f[0], 3, padding=1))
        self.input_skip = nn.Sequential(nn.Conv2d(1, f[0], 3, padding=1))
        self.residual_conv_1 = ResidualConv(f[0], f[1], (2, 1))
        self.residual_conv_2 = ResidualConv(f[1], f[2], (2, 1))
        self.bridge = ResidualConv(f[2], f[3], (2, 1))
        self.upsample_1 = Upsample(f[3])
        self.up_residual_conv1 = ResidualConv(f[3] + f[2], f[2], 1)
        self.upsample_2 = Upsample(f[2])
        self.up_residual_conv2 = ResidualConv(f[2] + f[1], f[1], 1)
        self.upsample_3 = Upsample(f[1])
        self.up_residual_conv3 = ResidualConv(f[1] + f[0], f[0], 1)
        self.output_layer = nn.Sequential(nn.Conv2d(f[0], 1, 1, 1), nn.Sigmoid())

    def forward(self, x):
        x1 = self.input_layer(x) + self.input_skip(x)
        x2 = self.residual_conv_1(x1)
        x3 = self.residual_conv_2(x2)
        x4 = self.upsample_1(self.bridge(x3))
        x6 = self.upsample_2(self.up_residual_conv1(torch.cat([x4, x3], dim=1)))
        x8 = self.upsample_3(self.up_residual_conv2(torch.cat([x6, x2], dim=1)))
        return self.output_layer(self.up_residual_conv3(torch.cat([x8, x1], dim=1)))


class PoseEncoder(nn.Module):
    """Training-only CVAE encoder (upstream ENCODER), kept for the strict load."""

    def __init__(self):
        super().__init__()
        self.resunet = ResUnet()
        self.MLP = nn.Sequential()
        self.MLP.add_module("L0", nn.Linear(192 + LATENT + SEQ_LEN * AUDIO_OUT + POSE, 128))  # 454: see module doc
        self.MLP.add_module("A0", nn.ReLU())
        self.linear_means = nn.Linear(128, LATENT)
        self.linear_logvar = nn.Linear(128, LATENT)
        self.linear_audio = nn.Linear(512, AUDIO_OUT)
        self.classbias = nn.Parameter(torch.zeros(CLASSES, LATENT))


class PoseDecoder(nn.Module):
    """Noise z (B, 64) + style bias + reference pose (B, 6) + 32 frames of audio (B, 32, 512) -> (B, 32, 6)."""

    def __init__(self):
        super().__init__()
        self.resunet = ResUnet()
        self.MLP = nn.Sequential()
        self.MLP.add_module("L0", nn.Linear(LATENT + SEQ_LEN * AUDIO_OUT + POSE, 128))
        self.MLP.add_module("A0", nn.ReLU())
        self.MLP.add_module("L1", nn.Linear(128, 192))
        self.MLP.add_module("sigmoid", nn.Sigmoid())
        self.pose_linear = nn.Linear(POSE, POSE)
        self.linear_audio = nn.Linear(512, AUDIO_OUT)
        self.classbias = nn.Parameter(torch.zeros(CLASSES, LATENT))

    def forward(self, z, style, ref, audio):
        bs = z.shape[0]
        audio_out = self.linear_audio(audio).reshape(bs, -1)
        x = self.MLP(torch.cat([ref, z + self.classbias[style], audio_out], dim=-1)).reshape(bs, SEQ_LEN, -1)
        return self.pose_linear(self.resunet(x.unsqueeze(1)).squeeze(1))


class CVAE(nn.Module):
    def __init__(self):
        super().__init__()
        self.encoder = PoseEncoder()
        self.decoder = PoseDecoder()


class ConvNormRelu1d(nn.Module):
    def __init__(self, cin, cout, kernel_size, stride, padding):
        super().__init__()
        self.conv = nn.Conv1d(cin, cout, kernel_size, stride, padding, bias=False)
        self.norm = nn.BatchNorm1d(cout)


class PoseSequenceDiscriminator(nn.Module):
    """Training-only (upstream netD_motion), kept for the strict load."""

    def __init__(self):
        super().__init__()
        self.seq = nn.Sequential(ConvNormRelu1d(POSE, 256, 4, 2, 1), ConvNormRelu1d(256, 512, 4, 2, 1),
                                 ConvNormRelu1d(512, 1024, 3, 1, 1), nn.Conv1d(1024, 1, 3, 1, 1, bias=True))


class AudioEncoderHolder(nn.Module):
    """Upstream wraps the encoder once more (`audio2pose.audio_encoder.audio_encoder.*`)."""

    def __init__(self):
        super().__init__()
        self.audio_encoder = audio_encoder()

    def forward(self, mel):
        return self.audio_encoder(mel).flatten(1)


class Audio2Pose(nn.Module):
    def __init__(self):
        super().__init__()
        self.audio_encoder = AudioEncoderHolder()
        self.netG = CVAE()
        self.netD_motion = PoseSequenceDiscriminator()

    def motion(self, mel, ref_pose, style: int, noise):
        """mel (T, 1, 80, 16) of frames 1..T (frame 0 is the source), ref_pose (6,), noise (chunks, 64) ->
        (T, 6) head motion relative to the source, decoded 32 frames at a time (the last chunk right-aligned)."""
        frames = mel.shape[0]
        # encoded 256 frames at a time: a 10-minute clip at once would need gigabytes of activations
        audio = torch.cat([self.audio_encoder(mel[i : i + 256]) for i in range(0, frames, 256)]) if frames \
            else mel.new_zeros(0, 512)
        pieces, starts = [], list(range(0, frames - frames % SEQ_LEN, SEQ_LEN))
        decode = self.netG.decoder
        style_t = torch.tensor([style], device=mel.device)
        for k, start in enumerate(starts):
            pieces.append(decode(noise[k : k + 1], style_t, ref_pose[None], audio[None, start : start + SEQ_LEN])[0])
        rest = frames % SEQ_LEN
        if rest:
            tail = audio[-SEQ_LEN:]
            if tail.shape[0] < SEQ_LEN:  # fewer frames than one chunk: pad with the first frame's audio
                tail = torch.cat([tail[:1].expand(SEQ_LEN - tail.shape[0], -1), tail], dim=0)
            pieces.append(decode(noise[len(starts) : len(starts) + 1], style_t, ref_pose[None], tail[None])[0][-rest:])
        return torch.cat(pieces, dim=0) if pieces else mel.new_zeros(0, POSE)
