"""Running a built TensorRT engine through TensorRT's own runtime bindings, with torch CUDA tensors as the
device buffers (torch is already there for the engine; no pycuda needed).

Same call as the torch runner: (mel (B,1,80,16), faces (B,6,96,96)) float32 -> (B,3,96,96) float32; batches
larger than the engine's profile are split. UNTESTED ON A GPU in this repository's CI (see the `gpu` tests).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


class TensorRTRunner:
    label = "tensorrt-fp16"

    def __init__(self, engine_path: str | Path):
        import tensorrt as trt
        import torch

        self._torch = torch
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        self.engine = self._runtime.deserialize_cuda_engine(Path(engine_path).read_bytes())
        if self.engine is None:
            raise RuntimeError(f"TensorRT could not load {engine_path}; rebuild it with `avatar-renderer trt-build`")
        self.context = self.engine.create_execution_context()
        self.max_batch = int(self.engine.get_tensor_profile_shape("faces", 0)[2][0])
        self.device = torch.device("cuda")

    def _run(self, mel: np.ndarray, faces: np.ndarray) -> np.ndarray:
        torch = self._torch
        batch = len(faces)
        inputs = {"mel": torch.from_numpy(np.ascontiguousarray(mel)).to(self.device),
                  "faces": torch.from_numpy(np.ascontiguousarray(faces)).to(self.device)}
        output = torch.empty((batch, 3, 96, 96), dtype=torch.float32, device=self.device)
        for name, tensor in inputs.items():
            self.context.set_input_shape(name, tuple(tensor.shape))
            self.context.set_tensor_address(name, tensor.data_ptr())
        self.context.set_tensor_address("generated", output.data_ptr())
        stream = torch.cuda.current_stream()
        if not self.context.execute_async_v3(stream.cuda_stream):
            raise RuntimeError("TensorRT execution failed")
        stream.synchronize()
        return output.cpu().numpy()

    def __call__(self, mel: np.ndarray, faces: np.ndarray) -> np.ndarray:
        parts = [self._run(mel[i : i + self.max_batch], faces[i : i + self.max_batch])
                 for i in range(0, len(faces), self.max_batch)]
        return np.concatenate(parts)
