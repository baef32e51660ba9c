"""Random SadTalker checkpoints written in the upstream file formats, from the layouts of the real files
(tests/fixtures/sadtalker_layouts.json, copied from the upstream state dicts: key -> [shape, dtype]).

Written from the layout, not from this project's modules, so a test loading them checks the modules against
the real files' keys, shapes and dtypes."""

from __future__ import annotations

import json
from pathlib import Path

LAYOUTS = json.loads((Path(__file__).parent / "fixtures" / "sadtalker_layouts.json").read_text())
SAFETENSORS_NAME = "SadTalker_V0.0.2_256.safetensors"
MAPPING_NAME = "mapping_00229-model.pth.tar"


def random_tensor(key: str, shape: list[int], dtype: str, generator):
    import torch

    if dtype == "int64":
        return torch.zeros(shape, dtype=torch.int64)
    if key.endswith("running_var"):
        return torch.rand(shape, generator=generator) * 0.5 + 0.75
    if key.endswith("running_mean") or key.endswith(".bias"):
        return torch.randn(shape, generator=generator) * 0.01
    if key.endswith((".weight_u", ".weight_v")):
        vector = torch.randn(shape, generator=generator)
        return vector / vector.norm()
    tensor = torch.randn(shape, generator=generator)
    fan_in = max(1, int(torch.tensor(shape[1:]).prod().item())) if len(shape) > 1 else 1
    return tensor / fan_in ** 0.5 if len(shape) > 1 else 1 + tensor * 0.01  # norm weights near 1


def layout_state(name: str, seed: int = 0) -> dict:
    import torch

    generator = torch.Generator().manual_seed(seed)
    return {key: random_tensor(key, shape, dtype, generator) for key, (shape, dtype) in LAYOUTS[name].items()}


def write_sadtalker_dir(folder: Path, seed: int = 0) -> Path:
    """SADTALKER_CKPT_DIR with both files, random weights in upstream's formats."""
    import torch
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    save_file(layout_state("sadtalker_256", seed), str(folder / SAFETENSORS_NAME))  # no metadata, as upstream
    torch.save({"mapping": layout_state("mapping_00229", seed + 1), "epoch": 229}, folder / MAPPING_NAME)
    return folder
