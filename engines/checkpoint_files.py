"""What every neural engine's checkpoint loading shares: reading a torch file safely, and saying exactly how a
state dict differs from the model it should fill (strict loading with an error a user can act on)."""

from __future__ import annotations

from pathlib import Path

from schemas.errors import CheckpointError

LISTED = 8  # keys named per category in an error message


def read_torch_file(path: str | Path, label: str):
    """The object torch saved in ``path`` (on the CPU); CheckpointError naming the ``label`` ("FOMM", ...) when the
    file is missing or is not a torch file. weights_only: upstream files hold tensors, numbers and optimizer
    state only, so nothing in them is executed."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"the {label} checkpoint {path} does not exist")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a file that is not its format
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"cannot read the {label} checkpoint {path} as a torch file: {first_line}") from exc


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
