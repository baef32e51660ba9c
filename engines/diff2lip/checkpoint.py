"""Loading Diff2Lip's `checkpoint.pt` strictly, and writing random ones in the same file format.

Upstream saves the model as a flat dict {key: float32 tensor} (guided-diffusion's training loop, no wrapper
dict, no `module.` prefix) and its generate.py loads it into a float32 model with strict=True, then halves the
convolutions for fp16 inference. Anything that does not fit key for key and shape for shape is refused with
the same CheckpointError the Wav2Lip loader raises, naming the keys.
"""

from __future__ import annotations

from pathlib import Path

from schemas.errors import CheckpointError

from ..checkpoint_files import mismatch_report, read_torch_file


def read_state_dict(path: str | Path) -> dict:
    """The flat state dict stored in ``path``; CheckpointError when it is missing, unreadable or not flat."""
    import torch

    state = read_torch_file(path, "Diff2Lip")
    if not isinstance(state, dict) or not state:
        raise CheckpointError(f"{path} is not a Diff2Lip checkpoint: expected a flat dict of tensors")
    not_tensors = sorted(str(key) for key, value in state.items() if not isinstance(value, torch.Tensor))
    if not_tensors:
        raise CheckpointError(f"{path} is not a Diff2Lip checkpoint: entries that are not tensors: "
                              f"{', '.join(not_tensors[:8])}")
    return state


def load_diff2lip(path: str | Path, device: str = "cpu", fp16: bool = False):
    """The Diff2Lip UNet in eval mode on ``device`` with the file's weights (strict); fp16 halves its
    convolutions after loading, as upstream does. CheckpointError when the file does not fit."""
    import torch

    from .unet import Diff2LipUNet

    with torch.device("meta"):  # no memory and no random initialisation: the file's tensors become the weights
        model = Diff2LipUNet()
    state = read_state_dict(path)
    problems = mismatch_report(model, state)
    if problems:
        raise CheckpointError(f"{path} is not a Diff2Lip (128x128) checkpoint: {problems}")
    model.load_state_dict({key: value.float() for key, value in state.items()}, strict=True, assign=True)
    del state
    model.requires_grad_(False)
    model = model.to(torch.device(device))
    if fp16:
        model.convert_to_fp16()
    return model.eval()


def random_state_dict(seed: int = 0) -> dict:
    """Float32 weights of the upstream layout with seeded random values (tests, `bench --hq` without the real
    file): convolution and linear tensors uniform in +-1/sqrt(fan_in) (torch's default scale), group norms
    near 1 (weights) and 0 (biases). Unlike upstream's initialisation no layer is zeroed, so the output
    depends on every input."""
    import torch

    from .unet import Diff2LipUNet

    with torch.device("meta"):
        layout = Diff2LipUNet().state_dict()
    generator = torch.Generator().manual_seed(seed)
    fan_in = {}
    for key, shape in ((key, value.shape) for key, value in layout.items()):
        if key.endswith(".weight") and len(shape) > 1:
            fan_in[key[: -len("weight")]] = shape[1:].numel()
    state = {}
    for key, value in layout.items():
        prefix = key[: key.rindex(".") + 1]
        uniform = torch.rand(value.shape, generator=generator)
        if prefix in fan_in:  # a convolution or linear layer
            bound = fan_in[prefix] ** -0.5
            state[key] = (uniform * 2 - 1) * bound
        elif key.endswith(".weight"):  # group norm scale
            state[key] = 0.8 + 0.4 * uniform
        else:  # group norm shift
            state[key] = 0.2 * uniform - 0.1
    return state


def write_random_checkpoint(path: str | Path, seed: int = 0) -> Path:
    """A random `checkpoint.pt` in upstream's file format (torch.save of the flat float32 dict); returns path."""
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(random_state_dict(seed), path)
    return path
