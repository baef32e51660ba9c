"""Helpers shared by the Wav2Lip tests: random-weight checkpoints saved the way upstream's training script
saves them, and a small framed portrait job."""

from __future__ import annotations

from pathlib import Path

from engines import SAMPLES

REPO = Path(__file__).resolve().parent.parent


def random_model(seed: int = 0):
    import torch

    from engines.wav2lip.model import Wav2Lip

    torch.manual_seed(seed)
    model = Wav2Lip()
    calibrate_batch_norm(model, seed)
    return model.eval()


def calibrate_batch_norm(model, seed: int = 0) -> None:
    """Batch-norm statistics measured on random inputs. With the default ones (mean 0, variance 1) activations
    fade through the ~40 random layers and the output no longer depends on its inputs; measured ones keep
    every layer normalised, so audio and face change the output, and a loader that dropped buffers is caught."""
    import torch

    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.reset_running_stats()
            module.momentum = None  # cumulative average over the calibration batches
    mel, faces = inputs(4, seed)
    model.train()
    with torch.no_grad():
        model(torch.from_numpy(mel), torch.from_numpy(faces))
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.momentum = 0.1
    model.eval()


def save_upstream(model, path: Path, data_parallel: bool = False, with_optimizer: bool = False) -> Path:
    """``torch.save({"state_dict", "optimizer", "global_step", "global_epoch"})`` as upstream's train loop
    does; ``data_parallel`` prefixes every key with ``module.`` as nn.DataParallel weights have."""
    import torch

    state = model.state_dict()
    if data_parallel:
        state = {f"module.{key}": value for key, value in state.items()}
    optimizer_state = None
    if with_optimizer:
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.Adam(params, lr=1e-4)
        for p in params:
            p.grad = torch.zeros_like(p)
        optimizer.step()
        optimizer_state = optimizer.state_dict()
    torch.save({"state_dict": state, "optimizer": optimizer_state, "global_step": 1234, "global_epoch": 7}, path)
    return path


def speech(seconds: float):
    from engines.media_audio import load_audio

    return load_audio(SAMPLES / "speech.wav").trimmed(seconds)


def portrait_job(size: int = 256, seconds: float = 0.4, fps: int = 25, audio=None):
    from engines.base import EngineJob
    from engines.face import frame_portrait
    from engines.media_image import load_portrait

    framed = frame_portrait(load_portrait(SAMPLES / "portrait.jpg"), size)
    return EngineJob(framed.image, framed.landmarks, audio or speech(seconds), fps, size, seed=3)


def inputs(batch: int, seed: int = 0):
    from engines.wav2lip import WAV2LIP_IO

    return WAV2LIP_IO.example_inputs(batch, seed)
