"""Reading upstream FOMM checkpoints strictly, and writing random ones in the same file format.

Upstream's training loop saves ``torch.save({"generator": sd, "discriminator": sd, "kp_detector": sd,
"optimizer_generator": ..., "optimizer_discriminator": ..., "optimizer_kp_detector": ..., "epoch": n})``
(the published vox-cpk.pth.tar was written by torch 1.0, in the legacy non-zip format). Inference needs only
``generator`` and ``kp_detector``; both must match the vox-256 networks key for key and shape for shape.
"""

from __future__ import annotations

from pathlib import Path

from schemas.errors import CheckpointError

from ..checkpoint_files import mismatch_report, read_torch_file
from . import MODEL_SIZE

PARTS = ("generator", "kp_detector")

def discriminator_layout() -> dict[str, tuple[int, ...]]:
    """name -> shape of upstream's MultiScaleDiscriminator (scales [1], 32 channels, 4 blocks, spectral norm):
    training-only, but part of the file, so random files carry it too."""
    layout: dict[str, tuple[int, ...]] = {}
    for i, (cin, cout) in enumerate([(3, 64), (64, 128), (128, 256), (256, 512)]):
        prefix = f"discs.1.down_blocks.{i}"
        layout.update({f"{prefix}.conv.bias": (cout,), f"{prefix}.conv.weight_orig": (cout, cin, 4, 4),
                       f"{prefix}.conv.weight_u": (cout,), f"{prefix}.conv.weight_v": (cin * 16,)})
        if i:  # the first block has no instance norm
            layout.update({f"{prefix}.norm.weight": (cout,), f"{prefix}.norm.bias": (cout,)})
    layout.update({"discs.1.conv.bias": (1,), "discs.1.conv.weight_orig": (1, 512, 1, 1),
                   "discs.1.conv.weight_u": (1,), "discs.1.conv.weight_v": (512,)})
    return layout


def read_checkpoint(path: str | Path) -> dict:
    return read_torch_file(path, "FOMM")


def _part(checkpoint, name: str, path: Path) -> dict:
    part = checkpoint.get(name) if isinstance(checkpoint, dict) else None
    if not isinstance(part, dict) or not part:
        raise CheckpointError(f"{path} is not a FOMM checkpoint: it has no '{name}' state dict "
                              "(expected the dict upstream saves: generator, kp_detector, discriminator, ...)")
    return {(key[len("module."):] if key.startswith("module.") else key): value for key, value in part.items()}


def load_fomm(path: str | Path, device: str = "cpu"):
    """(generator, kp_detector) of vox-256 in eval mode on ``device``, loaded strictly from an upstream
    checkpoint; CheckpointError naming the part and the keys when the file does not fit."""
    from .model import KPDetector, OcclusionAwareGenerator

    path = Path(path)
    checkpoint = read_checkpoint(path)
    models = {"generator": OcclusionAwareGenerator(), "kp_detector": KPDetector()}
    states = {name: _part(checkpoint, name, path) for name in PARTS}
    problems = [f"{name}: {report}" for name in PARTS if (report := mismatch_report(models[name], states[name]))]
    if problems:
        raise CheckpointError(f"{path} is not a FOMM vox-256 checkpoint: {'; '.join(problems)}")
    for name in PARTS:
        models[name].load_state_dict(states[name], strict=True)
    return tuple(models[name].to(device).eval() for name in PARTS)


def random_fomm(seed: int = 0):
    """(generator, kp_detector) with random weights as upstream's constructors draw them (the Jacobian head
    starts at the identity), batch-norm statistics measured on smooth random images and keypoints: with the
    default statistics activations fade through the random layers and the output stops depending on its
    inputs."""
    import torch

    from .model import KPDetector, OcclusionAwareGenerator

    torch.manual_seed(seed)
    generator, kp_detector = OcclusionAwareGenerator(), KPDetector()
    with torch.no_grad():
        kp_detector.jacobian.weight.normal_(0.0, 1e-3)  # a little spread, still near the identity
    generator_in, kp_in = _calibration_inputs(seed)
    for model in (generator, kp_detector):
        _calibrate(model, lambda m=model: m(*generator_in) if m is generator else m(kp_in))
    return generator.eval(), kp_detector.eval()


def _calibration_inputs(seed: int):
    import torch
    import torch.nn.functional as F

    from .model import Keypoints

    generator = torch.Generator().manual_seed(seed)
    coarse = torch.rand(2, 3, 8, 8, generator=generator)
    size = MODEL_SIZE // 2  # batch-norm statistics are per channel; half size measures them as well, 4x faster
    images = F.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=False).clamp(0, 1)
    values = torch.rand(2, 10, 2, generator=generator) * 1.2 - 0.6
    eye = torch.eye(2).expand(2, 10, 2, 2)
    source = Keypoints(values, eye.clone())
    driving = Keypoints(values + 0.05 * torch.randn(2, 10, 2, generator=generator), eye.clone())
    return (images, driving, source), images


def _calibrate(model, forward) -> None:
    import torch

    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.reset_running_stats()
            module.momentum = None  # cumulative average
    model.train()
    with torch.no_grad():
        forward()
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.momentum = 0.1
    model.eval()


def write_random_fomm(path: str | Path, seed: int = 0) -> Path:
    """A random vox-256 checkpoint in upstream's file format (legacy torch serialisation, the dict of
    generator, discriminator, kp_detector, three Adam optimizer states and epoch) at ``path``; for tests and
    `bench --hq` where the real weights cannot be downloaded."""
    import torch

    generator, kp_detector = random_fomm(seed)
    noise = torch.Generator().manual_seed(seed + 1)
    discriminator = {name: torch.randn(shape, generator=noise) * 0.02 for name, shape in discriminator_layout().items()}

    def adam(params) -> dict:
        return torch.optim.Adam(params, lr=2e-4, betas=(0.5, 0.999)).state_dict()

    checkpoint = {
        "generator": generator.state_dict(),
        "discriminator": discriminator,
        "kp_detector": kp_detector.state_dict(),
        "optimizer_generator": adam(generator.parameters()),
        "optimizer_discriminator": adam([torch.nn.Parameter(t) for t in discriminator.values()]),
        "optimizer_kp_detector": adam(kp_detector.parameters()),
        "epoch": 99,
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(checkpoint, path, _use_new_zipfile_serialization=False)
    return path
