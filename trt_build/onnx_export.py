"""Wav2Lip -> ONNX with a dynamic batch axis, and parity of onnxruntime (CPU) against torch."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from engines.wav2lip import WAV2LIP_IO

OPSET = 17
example_inputs = WAV2LIP_IO.example_inputs


def export_onnx(model, path: str | Path, opset: int = OPSET) -> Path:
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    mel, faces = (torch.from_numpy(a) for a in example_inputs(2))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter announces its own deprecation
        torch.onnx.export(
            model.eval(), (mel, faces), str(path), dynamo=False, opset_version=opset,
            input_names=WAV2LIP_IO.input_names, output_names=WAV2LIP_IO.output_names,
            dynamic_axes={name: {0: "batch"} for name in (*WAV2LIP_IO.input_names, *WAV2LIP_IO.output_names)},
        )
    return path


def onnx_session(path: str | Path):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def torch_outputs(model, mel: np.ndarray, faces: np.ndarray) -> np.ndarray:
    import torch

    with torch.inference_mode():
        return model(torch.from_numpy(mel), torch.from_numpy(faces)).numpy()


def onnx_parity(model, path: str | Path, batches: tuple[int, ...] = (1, 3)) -> dict[int, float]:
    """Max |onnxruntime - torch| over the outputs, per batch size (several sizes: the batch axis is dynamic)."""
    session = onnx_session(path)
    result = {}
    for batch in batches:
        mel, faces = example_inputs(batch, seed=batch)
        (onnx_out,) = session.run(WAV2LIP_IO.output_names, dict(zip(WAV2LIP_IO.input_names, (mel, faces))))
        result[batch] = float(np.max(np.abs(onnx_out - torch_outputs(model, mel, faces))))
    return result
