"""Running a built TensorRT engine through TensorRT's own runtime bindings, with torch CUDA tensors as the
device buffers (torch is already there for the engine; no pycuda needed).

Called like the torch runner: the model's inputs (numpy float32, in its ModelIO order) -> its first output;
batches larger than the engine's profile are split. UNTESTED ON A GPU in this repository's CI (see the `gpu`
tests and `make gpu-check`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from schemas.errors import CheckpointError

from .model_io import ModelIO


class TensorRTRunner:
    label = "tensorrt-fp16"
    precision = "fp16"

    def __init__(self, engine_path: str | Path, io: ModelIO):
        import tensorrt as trt
        import torch

        self._torch = torch
        self.io = io
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        self.engine = self._runtime.deserialize_cuda_engine(Path(engine_path).read_bytes())
        if self.engine is None:
            raise CheckpointError(f"TensorRT could not load {engine_path}; rebuild it with `avatar-renderer trt-build`")
        self.context = self.engine.create_execution_context()
        first = io.inputs[0].name
        self.max_batch = int(self.engine.get_tensor_profile_shape(first, 0)[2][0])
        self.device = torch.device("cuda")

    def _run(self, arrays: tuple[np.ndarray, ...]) -> np.ndarray:
        torch = self._torch
        batch = len(arrays[0])
        out_spec = self.io.outputs[0]
        output = torch.empty(out_spec.with_batch(batch), dtype=torch.float32, device=self.device)
        inputs = [torch.from_numpy(np.ascontiguousarray(a)).to(self.device) for a in arrays]
        for spec, tensor in zip(self.io.inputs, inputs):
            self.context.set_input_shape(spec.name, tuple(tensor.shape))
            self.context.set_tensor_address(spec.name, tensor.data_ptr())
        self.context.set_tensor_address(out_spec.name, output.data_ptr())
        stream = torch.cuda.current_stream()
        if not self.context.execute_async_v3(stream.cuda_stream):
            raise RuntimeError("TensorRT execution failed")
        stream.synchronize()
        return output.cpu().numpy()

    def __call__(self, *arrays: np.ndarray) -> np.ndarray:
        step = self.max_batch
        parts = [self._run(tuple(a[i : i + step] for a in arrays)) for i in range(0, len(arrays[0]), step)]
        return np.concatenate(parts)

    def close(self) -> None:
        self.context = None
        self.engine = None
