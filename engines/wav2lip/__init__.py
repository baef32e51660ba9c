"""Wav2Lip real_time engine: upstream-compatible model + audio features, paste-back over the mouth.

Importing this package does not import torch; only loading a checkpoint or rendering does.
"""

FACE_SIZE = 96  # model input/output crop, pixels
MEL_BANDS = 80
MEL_STEPS = 16  # mel columns per video frame
