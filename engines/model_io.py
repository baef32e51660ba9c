"""Tensor contracts of the neural models: names, shapes (with a symbolic batch axis) and dtypes, declared once.

Export (ONNX input/output names, dynamic axes), the TensorRT build (optimisation profiles), the runtimes
(output buffers), the benches and the tests all read a model's `ModelIO` instead of repeating its shapes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

BATCH = "batch"  # the symbolic leading axis of every tensor


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple[int | str, ...]  # BATCH first, then fixed sizes
    dtype: str = "float32"
    low: float = 0.0  # the value range of real inputs, for example data
    high: float = 1.0

    def fixed(self) -> tuple[int, ...]:
        """The shape after the batch axis."""
        return tuple(int(d) for d in self.shape[1:])

    def with_batch(self, batch: int) -> tuple[int, ...]:
        return (batch, *self.fixed())


@dataclass(frozen=True)
class ModelIO:
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]

    @property
    def input_names(self) -> list[str]:
        return [t.name for t in self.inputs]

    @property
    def output_names(self) -> list[str]:
        return [t.name for t in self.outputs]

    def example_inputs(self, batch: int, seed: int = 0) -> tuple[np.ndarray, ...]:
        """Random inputs in each tensor's range, in declaration order (seeded: the same call, the same data)."""
        rng = np.random.default_rng(seed)
        return tuple(rng.uniform(t.low, t.high, t.with_batch(batch)).astype(t.dtype) for t in self.inputs)

    def check_inputs(self, *arrays: np.ndarray) -> None:
        """ValueError naming the tensor when an array does not have its declared shape after the batch axis."""
        for spec, array in zip(self.inputs, arrays, strict=True):
            if tuple(array.shape[1:]) != spec.fixed():
                raise ValueError(f"{spec.name}: expected (batch, {', '.join(map(str, spec.fixed()))}), got {array.shape}")
