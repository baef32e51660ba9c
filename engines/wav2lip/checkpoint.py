"""Loading upstream Wav2Lip checkpoints strictly.

Upstream saves ``torch.save({"state_dict": model.state_dict(), "optimizer": ..., "global_step": ...,
"global_epoch": ...})``; weights trained under DataParallel carry a ``module.`` prefix on every key. Both
are accepted; anything else that does not match the architecture key for key and shape for shape is
refused with a message listing what is missing, unexpected or mis-shaped.
"""

from __future__ import annotations

from pathlib import Path

from schemas.errors import CheckpointError

from ..checkpoint_files import mismatch_report, read_torch_file

def unwrap_state_dict(obj) -> dict:
    """The bare state dict from a checkpoint object: ``{"state_dict": sd}`` or ``sd``, ``module.`` stripped."""
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not obj:
        raise CheckpointError("the checkpoint holds no state dict (expected a dict of tensors or {'state_dict': ...})")
    return {(key[len("module."):] if key.startswith("module.") else key): value for key, value in obj.items()}


def read_checkpoint(path: str | Path) -> dict:
    return read_torch_file(path, "Wav2Lip")


def load_wav2lip(path: str | Path):
    """A Wav2Lip model in eval mode with the checkpoint's weights, loaded strictly; CheckpointError if not."""
    from .model import Wav2Lip

    model = Wav2Lip()
    state = unwrap_state_dict(read_checkpoint(path))
    problems = mismatch_report(model, state)
    if problems:
        raise CheckpointError(f"{path} is not a Wav2Lip (96x96) checkpoint: {problems}")
    model.load_state_dict(state, strict=True)
    return model.eval()

