"""Loading upstream Wav2Lip checkpoints strictly.

Upstream saves ``torch.save({"state_dict": model.state_dict(), "optimizer": ..., "global_step": ...,
"global_epoch": ...})``; weights trained under DataParallel carry a ``module.`` prefix on every key. Both
are accepted; anything else that does not match the architecture key for key and shape for shape is
refused with a message listing what is missing, unexpected or mis-shaped.
"""

from __future__ import annotations

from pathlib import Path

from schemas.errors import CheckpointError

LISTED = 8  # keys named per category in an error message


def unwrap_state_dict(obj) -> dict:
    """The bare state dict from a checkpoint object: ``{"state_dict": sd}`` or ``sd``, ``module.`` stripped."""
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not obj:
        raise CheckpointError("the checkpoint holds no state dict (expected a dict of tensors or {'state_dict': ...})")
    return {(key[len("module."):] if key.startswith("module.") else key): value for key, value in obj.items()}


def _listed(keys: list[str]) -> str:
    shown = ", ".join(keys[:LISTED])
    return shown + (f" … and {len(keys) - LISTED} more" if len(keys) > LISTED else "")


def mismatch_report(model, state: dict) -> str:
    """Empty when ``state`` fits ``model`` exactly; otherwise one sentence per kind of problem."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    misshaped = sorted(
        f"{key} {tuple(state[key].shape)} != {tuple(expected[key].shape)}"
        for key in set(expected) & set(state)
        if tuple(getattr(state[key], "shape", ())) != tuple(expected[key].shape)
    )
    parts = []
    if missing:
        parts.append(f"missing keys ({len(missing)}): {_listed(missing)}")
    if unexpected:
        parts.append(f"unexpected keys ({len(unexpected)}): {_listed(unexpected)}")
    if misshaped:
        parts.append(f"wrong shapes ({len(misshaped)}): {_listed(misshaped)}")
    return "; ".join(parts)


def read_checkpoint(path: str | Path) -> dict:
    import torch

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"the Wav2Lip checkpoint {path} does not exist")
    try:
        # weights_only: upstream files hold tensors, ints and optimizer state only, so nothing is executed.
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a file that is not its format
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"cannot read the checkpoint {path} as a torch file: {first_line}") from exc


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

