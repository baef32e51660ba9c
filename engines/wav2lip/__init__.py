"""Wav2Lip real_time engine: upstream-compatible model + audio features, paste-back over the mouth.

Importing this package does not import torch; only loading a checkpoint or rendering does.
"""

from ..model_io import BATCH, ModelIO, TensorSpec

FACE_SIZE = 96  # model input/output crop, pixels
MEL_BANDS = 80
MEL_STEPS = 16  # mel columns per video frame

# forward(mel, faces) -> generated. faces: the masked crop and the reference crop stacked (BGR, [0, 1]).
WAV2LIP_IO = ModelIO(
    inputs=(TensorSpec("mel", (BATCH, 1, MEL_BANDS, MEL_STEPS), low=-4.0, high=4.0),
            TensorSpec("faces", (BATCH, 6, FACE_SIZE, FACE_SIZE))),
    outputs=(TensorSpec("generated", (BATCH, 3, FACE_SIZE, FACE_SIZE)),),
)
