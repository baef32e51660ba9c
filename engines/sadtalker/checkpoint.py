"""Strict loading of SadTalker's released files.

- `SadTalker_V0.0.2_256.safetensors`: one flat dict of prefixed keys (`kp_extractor.`, `generator.`,
  `audio2exp.`, `audio2pose.`, `face_3drecon.`), no metadata. Upstream selects a part with `prefix in key`
  (a substring test); here a key belongs to a part only when it *starts* with the prefix, and a key of no part
  is refused. Each part must match its module key for key and shape for shape; `num_batches_tracked` is
  compared too (torch's strict load alone lets a missing one through, see tests).
- `mapping_00229-model.pth.tar` (crop / still) or `mapping_00109-model.pth.tar` (full, 73 coefficients):
  `torch.save({'mapping': state_dict, 'epoch': ..., ...})`; upstream's loader reads both keys.

Any problem raises CheckpointError naming the file and the bad keys (the same type Wav2Lip's loader raises).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from schemas.errors import CheckpointError

from ..checkpoint_files import mismatch_report, read_torch_file
from . import MAPPING_CROP, SAFETENSORS_256

PARTS = ("kp_extractor", "generator", "audio2exp", "audio2pose", "face_3drecon")


def build_part(name: str):
    from .audio_nets import Audio2Pose, ExpressionNet
    from .recon import ReconNet
    from .renderer import KPDetector, OcclusionAwareSPADEGenerator

    return {"kp_extractor": KPDetector, "generator": OcclusionAwareSPADEGenerator, "audio2exp": ExpressionNet,
            "audio2pose": Audio2Pose, "face_3drecon": ReconNet}[name]()


def read_safetensors(path: Path) -> dict:
    if not path.is_file():
        raise CheckpointError(f"the SadTalker checkpoint {path} does not exist")
    try:
        from safetensors.torch import load_file
    except ImportError as exc:
        raise CheckpointError("reading SadTalker checkpoints needs the safetensors package "
                              "(pip install 'avatar-renderer[neural]')") from exc
    try:
        return load_file(str(path), device="cpu")
    except Exception as exc:  # safetensors raises its own error types for a damaged header or data
        raise CheckpointError(f"cannot read {path} as a safetensors file: {str(exc).strip() or type(exc).__name__}") from exc


def split_parts(flat: dict, path: Path) -> dict[str, dict]:
    """{part: state dict without its prefix}; refuses keys under no known prefix."""
    parts: dict[str, dict] = {name: {} for name in PARTS}
    stray = []
    for key, tensor in flat.items():
        name = next((p for p in PARTS if key.startswith(p + ".")), None)
        if name is None:
            stray.append(key)
        else:
            parts[name][key[len(name) + 1:]] = tensor
    if stray:
        raise CheckpointError(f"{path} is not a SadTalker checkpoint: keys under no known part "
                              f"({', '.join(PARTS)}): {', '.join(sorted(stray)[:8])}")
    return parts


def dtype_report(model, state: dict, prefix: str) -> str:
    expected = model.state_dict()
    wrong = sorted(f"{prefix}.{k} {state[k].dtype} != {v.dtype}" for k, v in expected.items()
                   if k in state and state[k].dtype != v.dtype)
    return f"wrong dtypes ({len(wrong)}): {', '.join(wrong[:8])}" if wrong else ""


class _AsInFile:
    """A part seen with its file prefix, so mismatch reports name keys as the file spells them."""

    def __init__(self, model, prefix: str):
        self.model, self.prefix = model, prefix

    def state_dict(self) -> dict:
        return {f"{self.prefix}.{k}": v for k, v in self.model.state_dict().items()}


def load_part(name: str, state: dict, path: Path):
    """One part, strictly; CheckpointError naming the prefixed keys that are wrong."""
    model = build_part(name)
    problems = mismatch_report(_AsInFile(model, name), {f"{name}.{k}": v for k, v in state.items()})
    problems = problems or dtype_report(model, state, name)
    if problems:
        raise CheckpointError(f"{path} is not a SadTalker (256) checkpoint: {problems}")
    model.load_state_dict(state, strict=True)
    return model.eval()


def load_safetensors(path: str | Path) -> dict:
    """{part: module in eval mode} from SadTalker_V0.0.2_256.safetensors (the 512 file has the same layout)."""
    path = Path(path)
    parts = split_parts(read_safetensors(path), path)
    return {name: load_part(name, state, path) for name, state in parts.items()}


def load_mapping(path: str | Path):
    """The MappingNet of mapping_00229 (70 coefficients) or mapping_00109 (73), loaded strictly."""
    from .renderer import MappingNet

    path = Path(path)
    obj = read_torch_file(path, "SadTalker mapping")
    if not isinstance(obj, dict) or not isinstance(obj.get("mapping"), dict):
        raise CheckpointError(f"{path} is not a SadTalker mapping checkpoint: no 'mapping' state dict at the top level")
    if "epoch" not in obj:
        raise CheckpointError(f"{path} is not a SadTalker mapping checkpoint: no 'epoch' key (upstream's loader reads it)")
    model = MappingNet(coeff_nc=73 if "00109" in path.name else 70)
    problems = mismatch_report(model, obj["mapping"]) or dtype_report(model, obj["mapping"], "mapping")
    if problems:
        raise CheckpointError(f"{path} is not a SadTalker mapping checkpoint: {problems}")
    model.load_state_dict(obj["mapping"], strict=True)
    return model.eval()


def load_sadtalker_file(path: str | Path) -> None:
    """`models verify`: load-check one SadTalker file, chosen by its name (.safetensors or mapping .pth.tar)."""
    path = Path(path)
    if path.name.endswith(".safetensors"):
        load_safetensors(path)
    else:
        load_mapping(path)


@dataclass
class SadTalkerModels:
    kp_extractor: object
    generator: object
    audio2exp: object
    audio2pose: object
    face_3drecon: object
    mapping: object

    def modules(self) -> list:
        return [self.kp_extractor, self.generator, self.audio2exp, self.audio2pose, self.face_3drecon, self.mapping]


def checkpoint_files(folder: Path) -> tuple[Path, Path]:
    return folder / SAFETENSORS_256, folder / MAPPING_CROP


def load_models(folder: str | Path) -> SadTalkerModels:
    """Everything the 256 crop/still pipeline needs, from SADTALKER_CKPT_DIR, on the CPU in eval mode."""
    from .blocks import bake_spectral_norm

    weights, mapping = checkpoint_files(Path(folder))
    parts = load_safetensors(weights)
    bake_spectral_norm(parts["generator"])
    return SadTalkerModels(mapping=load_mapping(mapping), **parts)


def write_random_checkpoints(folder: str | Path, seed: int = 0) -> Path:
    """Randomly initialised SadTalker files in upstream's formats (for benches: random weights cost what real
    ones do): the prefixed .safetensors without metadata, and the mapping .pth.tar {'mapping', 'epoch'}."""
    import torch
    from safetensors.torch import save_file

    from .renderer import MappingNet

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    flat = {f"{name}.{key}": tensor.contiguous() for name in PARTS
            for key, tensor in build_part(name).state_dict().items()}
    weights, mapping = checkpoint_files(folder)
    save_file(flat, str(weights))
    torch.save({"mapping": MappingNet().state_dict(), "epoch": 0}, mapping)
    return folder
