"""`avatar-renderer trt-build`: checkpoint -> ONNX (+ onnxruntime parity) -> TensorRT FP16 engine in the cache."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from engines.settings import ModelSettings


def gpu_ready(settings: ModelSettings) -> str:
    """Empty when a CUDA GPU and the tensorrt package are both usable; otherwise what is missing."""
    import importlib.util

    from engines.hardware import detect

    if not detect(settings.force_cpu).cuda:
        return "no NVIDIA GPU with CUDA was found"
    if importlib.util.find_spec("tensorrt") is None:
        return "the tensorrt package is not installed (pip install 'avatar-renderer[tensorrt]')"
    return ""


def run_trt_build(args: argparse.Namespace) -> int:
    from engines.files import remembered_sha256
    from engines.tensorrt_cache import engine_path
    from engines.wav2lip.checkpoint import load_wav2lip
    from schemas.errors import CheckpointError
    from trt_build.onnx_export import export_onnx, onnx_parity

    settings = ModelSettings.from_env(os.environ)
    checkpoint = Path(args.checkpoint) if args.checkpoint else settings.wav2lip_ckpt
    try:
        model = load_wav2lip(checkpoint)
    except CheckpointError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 2
    folder = Path(args.cache_dir) if args.cache_dir else settings.trt_cache_dir
    report: dict = {"checkpoint": str(checkpoint), "checkpoint_sha256": remembered_sha256(checkpoint)}
    started = time.perf_counter()
    onnx_path = export_onnx(model, folder / f"wav2lip-{report['checkpoint_sha256'][:16]}.onnx")
    report["onnx"] = str(onnx_path)
    report["onnx_export_seconds"] = round(time.perf_counter() - started, 2)
    parity = onnx_parity(model, onnx_path)
    report["onnxruntime_max_abs_diff"] = {str(b): d for b, d in parity.items()}
    ok = max(parity.values()) <= args.tolerance
    if not ok:
        report["error"] = f"onnxruntime differs from torch by more than {args.tolerance}"
    if args.onnx_only or not ok:
        print(json.dumps(report, indent=2))
        return 0 if ok else 1
    missing = gpu_ready(settings)
    if missing:
        report["tensorrt"] = f"not built: {missing}"
        print(json.dumps(report, indent=2))
        print(f"error: a TensorRT engine needs an NVIDIA GPU and TensorRT: {missing}. "
              "The ONNX file above was exported and checked; run with --onnx-only to stop there.", file=sys.stderr)
        return 3
    return _build_and_check(args, model, checkpoint, onnx_path, folder, report, engine_path)


def _build_and_check(args, model, checkpoint, onnx_path, folder, report, engine_path) -> int:
    import numpy as np

    from engines.tensorrt_runner import TensorRTRunner
    from engines.wav2lip import WAV2LIP_IO
    from trt_build.build import build_engine
    from trt_build.onnx_export import example_inputs, torch_outputs

    target = engine_path(checkpoint, folder)
    started = time.perf_counter()
    build_engine(onnx_path, target, max_batch=args.max_batch, opt_batch=args.opt_batch, fp16=not args.fp32,
                 workspace_bytes=int(args.workspace_gb * (1 << 30)))
    report["engine"] = str(target)
    report["engine_build_seconds"] = round(time.perf_counter() - started, 1)
    runner = TensorRTRunner(target, WAV2LIP_IO)
    mel, faces = example_inputs(4, seed=9)
    diff = float(np.max(np.abs(runner(mel, faces) - torch_outputs(model.cpu(), mel, faces))))
    report["tensorrt_max_abs_diff"] = diff
    print(json.dumps(report, indent=2))
    return 0 if diff <= args.trt_tolerance else 1


def add_trt_build_command(commands) -> None:
    build = commands.add_parser("trt-build", help="export Wav2Lip to ONNX and build a TensorRT FP16 engine for this GPU")
    build.add_argument("--checkpoint", default=None, help="Wav2Lip checkpoint (default WAV2LIP_CKPT)")
    build.add_argument("--cache-dir", default=None, help="engine cache folder (default TRT_CACHE_DIR or MODEL_ROOT/trt)")
    build.add_argument("--onnx-only", action="store_true", help="stop after the ONNX export and its parity check")
    build.add_argument("--max-batch", type=int, default=128)
    build.add_argument("--opt-batch", type=int, default=32, help="batch size TensorRT tunes its kernels for")
    build.add_argument("--workspace-gb", type=float, default=4.0)
    build.add_argument("--fp32", action="store_true", help="build in FP32 instead of FP16")
    build.add_argument("--tolerance", type=float, default=1e-4, help="largest onnxruntime-vs-torch difference allowed")
    build.add_argument("--trt-tolerance", type=float, default=2e-2, help="largest TensorRT-vs-torch difference allowed")
    build.set_defaults(handler=run_trt_build)
