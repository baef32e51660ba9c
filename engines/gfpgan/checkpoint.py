"""Loading GFPGAN v1.4 / v1.3 checkpoints strictly, and writing random ones in the same file format.

Upstream publishes ``torch.save({'params_ema': state_dict})`` in torch's legacy (non-zip) format; its helper
``GFPGANer`` falls back to ``'params'`` when ``'params_ema'`` is absent and loads with ``strict=True``. Both
keys are accepted here; anything that does not match the architecture key for key and shape for shape is
refused with a CheckpointError naming the keys.
"""

from __future__ import annotations

from pathlib import Path

from schemas.errors import CheckpointError

from ..checkpoint_files import mismatch_report, read_torch_file

STATE_KEYS = ("params_ema", "params")  # in upstream's order of preference


def read_state(path: str | Path) -> dict:
    """The state dict inside a GFPGAN checkpoint file; CheckpointError when it is not one."""
    saved = read_torch_file(path, "GFPGAN")
    for key in STATE_KEYS:
        if isinstance(saved, dict) and isinstance(saved.get(key), dict):
            return saved[key]
    found = ", ".join(map(str, list(saved)[:8])) if isinstance(saved, dict) else type(saved).__name__
    raise CheckpointError(f"{path} is not a GFPGAN checkpoint: expected a dict with 'params_ema' (or 'params'), "
                          f"found {found}")


def load_gfpgan(path: str | Path, device: str = "cpu"):
    """GFPGANv1Clean in eval mode on ``device`` with the file's weights, loaded strictly; CheckpointError if not."""
    from .arch import GFPGANv1Clean

    model = GFPGANv1Clean()
    state = read_state(path)
    problems = mismatch_report(model, state)
    if problems:
        raise CheckpointError(f"{path} is not a GFPGAN v1.3/v1.4 (GFPGANv1Clean, 512) checkpoint: {problems}")
    model.load_state_dict(state, strict=True)
    return model.eval().to(device)


def random_gfpgan(seed: int = 0):
    """A GFPGANv1Clean with seeded random weights. The modulation biases start at 1, as upstream initialises
    them, so styles scale features instead of nearly zeroing them and the output depends on the input. The
    noise strengths are made non-zero (upstream starts them at 0; trained files have learnt values), so a
    forward pass that injected fresh random noise would show in the output."""
    import torch

    from .arch import GFPGANv1Clean
    from .stylegan2 import ModulatedConv2d, StyleConv

    torch.manual_seed(seed)
    model = GFPGANv1Clean()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, ModulatedConv2d):
                module.modulation.bias.fill_(1.0)
            elif isinstance(module, StyleConv):
                module.weight.uniform_(0.05, 0.2)
    return model.eval()


def write_random_checkpoint(path: str | Path, seed: int = 0, model=None) -> Path:
    """``{'params_ema': state_dict}`` in torch's legacy format, as the official files are (about 349 MB):
    what tests, `bench --hq` and trials without the real weights load."""
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = (model or random_gfpgan(seed)).state_dict()
    torch.save({"params_ema": state}, path, _use_new_zipfile_serialization=False)
    return path
