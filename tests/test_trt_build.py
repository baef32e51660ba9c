"""trt_build: ONNX export with a dynamic batch and onnxruntime parity on CPU; the engine cache key; the CLI
without a GPU. TensorRT build, parity and speed are `gpu` tests, skipped where there is no CUDA."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime")

from engines.wav2lip import WAV2LIP_IO  # noqa: E402
from engines.wav2lip.runtime import TorchRunner  # noqa: E402
from tests.wav2lip_fixtures import random_model, save_upstream  # noqa: E402
from engines.tensorrt_cache import engine_filename, engine_path, find_engine  # noqa: E402
from trt_build.onnx_export import example_inputs, export_onnx, onnx_parity, onnx_session  # noqa: E402

torch.set_num_threads(2)
HAS_CUDA = torch.cuda.is_available()
gpu = pytest.mark.gpu


@pytest.fixture(scope="module")
def model():
    return random_model(seed=11)


@pytest.fixture(scope="module")
def onnx_file(model, tmp_path_factory):
    return export_onnx(model, tmp_path_factory.mktemp("onnx") / "wav2lip.onnx")


def test_onnx_matches_torch_at_several_batch_sizes(model, onnx_file):
    parity = onnx_parity(model, onnx_file, batches=(1, 3))
    print("onnxruntime vs torch, max abs diff:", parity)
    assert set(parity) == {1, 3}
    assert max(parity.values()) < 1e-4
    session = onnx_session(onnx_file)
    assert [i.shape[0] for i in session.get_inputs()] == ["batch", "batch"]
    assert [i.name for i in session.get_inputs()] == ["mel", "faces"]


def test_parity_check_catches_a_different_model(model, onnx_file):
    other = random_model(seed=12)
    assert max(onnx_parity(other, onnx_file, batches=(1,)).values()) > 1e-3


def test_engine_cache_key_covers_gpu_tensorrt_and_weights(tmp_path):
    a = save_upstream(random_model(seed=1), tmp_path / "a.pth")
    b = save_upstream(random_model(seed=2), tmp_path / "b.pth")
    base = engine_path(a, gpu="NVIDIA H100 80GB HBM3", trt_version="10.3.0", folder=tmp_path)
    assert base.name.startswith("wav2lip-") and base.name.endswith("-nvidia-h100-80gb-hbm3-trt10.3.0-fp16.engine")
    assert engine_path(b, gpu="NVIDIA H100 80GB HBM3", trt_version="10.3.0", folder=tmp_path) != base
    assert engine_path(a, gpu="NVIDIA L4", trt_version="10.3.0", folder=tmp_path) != base
    assert engine_path(a, gpu="NVIDIA H100 80GB HBM3", trt_version="10.4.0", folder=tmp_path) != base
    assert engine_filename("x", "1", "ab" * 32, precision="fp32").endswith("-fp32.engine")


def test_cli_exports_and_checks_onnx_without_a_gpu(tmp_path, capsys, monkeypatch):
    from cli.main import main

    monkeypatch.setenv("AVATAR_FORCE_CPU", "1")
    from engines.hardware import detect

    detect.cache_clear()
    checkpoint = save_upstream(random_model(seed=3), tmp_path / "w.pth", data_parallel=True)
    try:
        code = main(["trt-build", "--checkpoint", str(checkpoint), "--cache-dir", str(tmp_path / "cache")])
    finally:
        detect.cache_clear()
    out, err = capsys.readouterr()
    report = json.loads(out)
    assert code == 3 and "NVIDIA GPU" in err
    assert max(report["onnxruntime_max_abs_diff"].values()) < 1e-4
    assert len(list((tmp_path / "cache").glob("*.onnx"))) == 1
    assert report["tensorrt"].startswith("not built")


def test_runtime_falls_back_to_torch_without_gpu(tmp_path):
    from engines.wav2lip.runtime import build_runner

    checkpoint = save_upstream(random_model(seed=4), tmp_path / "w.pth")
    runner = build_runner(checkpoint, cuda=False, tensorrt=False, backend="auto", trt_cache_dir=tmp_path)
    assert isinstance(runner, TorchRunner) and runner.label == "torch-cpu"
    mel, faces = example_inputs(2)
    assert runner(mel, faces).shape == (2, 3, 96, 96)


# ---- GPU only: TensorRT. Not run in this repository's CI (no GPU there). ----

@gpu
@pytest.mark.skipif(not HAS_CUDA, reason="needs an NVIDIA GPU with CUDA")
def test_tensorrt_fp16_engine_matches_torch_and_is_faster(model, onnx_file, tmp_path, monkeypatch):
    pytest.importorskip("tensorrt")
    from trt_build.build import build_engine
    from engines.tensorrt_runner import TensorRTRunner

    engine_file = build_engine(onnx_file, tmp_path / "w.engine", max_batch=128, opt_batch=32)
    trt_runner = TensorRTRunner(engine_file, WAV2LIP_IO)
    torch_runner = TorchRunner(model, "cuda")
    for batch in (1, 32, 128, 130):  # 130: split over the profile's maximum
        mel, faces = example_inputs(batch, seed=batch)
        diff = np.max(np.abs(trt_runner(mel, faces) - torch_runner(mel, faces)))
        print(f"batch {batch}: TensorRT FP16 vs torch max abs diff {diff:.4g}")
        assert diff < 2e-2
    mel, faces = example_inputs(128)
    timings = {}
    for name, runner in (("torch", torch_runner), ("tensorrt", trt_runner)):
        runner(mel, faces)
        started = time.perf_counter()
        for _ in range(5):
            runner(mel, faces)
        timings[name] = 5 * 128 / (time.perf_counter() - started)
    print("frames/s at batch 128:", timings)
    assert timings["tensorrt"] > timings["torch"]


@gpu
@pytest.mark.skipif(not HAS_CUDA, reason="needs an NVIDIA GPU with CUDA")
def test_engine_found_in_cache_is_used(model, onnx_file, tmp_path, monkeypatch):
    pytest.importorskip("tensorrt")
    from engines.wav2lip.runtime import build_runner
    from trt_build.build import build_engine

    checkpoint = save_upstream(model, tmp_path / "w.pth")
    assert find_engine(checkpoint, tmp_path) is None
    build_engine(onnx_file, engine_path(checkpoint, tmp_path), max_batch=16, opt_batch=8)
    assert build_runner(checkpoint, cuda=True, tensorrt=True, backend="auto", trt_cache_dir=tmp_path).label == "tensorrt-fp16"
