"""ONNX export and TensorRT FP16 engines for the Wav2Lip generator, with an on-disk engine cache.

checkpoint -> ONNX (dynamic batch; parity against torch checked with onnxruntime) -> TensorRT FP16 engine
(built with the `tensorrt` package on the GPU that will run it) -> cache keyed by GPU name, TensorRT
version and checkpoint SHA-256 -> executed by engines.tensorrt_runner when the real_time engine finds it.
Run it as `avatar-renderer trt-build` (cli/trt_build.py). Nothing here imports torch or tensorrt at package import time.
"""
