"""ONNX export and TensorRT engine builds for the neural engines, with an on-disk engine cache.

Empty until the Wav2Lip engine lands (see the README's roadmap): nothing here is called yet.
"""
