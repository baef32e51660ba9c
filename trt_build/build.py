"""ONNX -> serialized TensorRT FP16 engine, with one optimisation profile over the batch axis.

Written against the TensorRT 10 Python API (explicit batch networks, memory-pool limits). UNTESTED ON A
GPU in this repository's CI: the GPU tests (tests/test_trt_build.py, marked `gpu`) exercise it where one exists.
"""

from __future__ import annotations

from pathlib import Path

from engines.model_io import ModelIO
from engines.wav2lip import WAV2LIP_IO
from schemas.errors import TensorRTBuildError


def build_engine(onnx_path: str | Path, engine_path: str | Path, *, max_batch: int = 128, opt_batch: int = 32,
                 fp16: bool = True, workspace_bytes: int = 4 << 30,
                 io: ModelIO = WAV2LIP_IO) -> Path:
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # TensorRT 10: every network has an explicit batch dimension
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(Path(onnx_path).read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise TensorRTBuildError(f"TensorRT could not parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_bytes)
    if fp16:
        if not builder.platform_has_fast_fp16:
            raise TensorRTBuildError("this GPU has no fast FP16; build with --fp32")
        config.set_flag(trt.BuilderFlag.FP16)
    profile = builder.create_optimization_profile()
    opt_batch = max(1, min(opt_batch, max_batch))
    for spec in io.inputs:
        profile.set_shape(spec.name, spec.with_batch(1), spec.with_batch(opt_batch), spec.with_batch(max_batch))
    config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise TensorRTBuildError("TensorRT failed to build the engine (see its log above)")
    engine_path = Path(engine_path)
    engine_path.parent.mkdir(parents=True, exist_ok=True)
    partial = engine_path.with_name(engine_path.name + ".partial")
    partial.write_bytes(bytes(serialized))
    partial.replace(engine_path)
    return engine_path
