"""Diff2Lip lip-sync stage of high_quality mode: the guided-diffusion UNet in its Diff2Lip variant (upstream-exact
state dict), strict loading of the official `checkpoint.pt`, DDIM sampling, and the face crop / paste-back.

Importing this package does not import torch; only loading a checkpoint or rendering does.
"""

from ..model_io import BATCH, ModelIO, TensorSpec

IMAGE_SIZE = 128  # the model's face crop, pixels
MEL_BANDS = 80
MEL_STEPS = 16  # mel columns per video frame (the Wav2Lip mel, reused)
CHECKPOINT_NAME = "checkpoint.pt"  # the file upstream's scripts load from DIFF2LIP_CKPT_DIR

# forward(x, timesteps, cond_img, mask, ref_img, indiv_mels) -> 6 channels: [:3] predicted noise, [3:] the
# learned-variance interpolation (unused by DDIM). Images are RGB in [-1, 1]; mask is 1 on the lower half.
DIFF2LIP_IO = ModelIO(
    inputs=(TensorSpec("x", (BATCH, 3, IMAGE_SIZE, IMAGE_SIZE), low=-1.0, high=1.0),
            TensorSpec("timesteps", (BATCH,), dtype="int64", low=0, high=999),
            TensorSpec("cond_img", (BATCH, 3, IMAGE_SIZE, IMAGE_SIZE), low=-1.0, high=1.0),
            TensorSpec("mask", (BATCH, 1, IMAGE_SIZE, IMAGE_SIZE)),
            TensorSpec("ref_img", (BATCH, 3, IMAGE_SIZE, IMAGE_SIZE), low=-1.0, high=1.0),
            TensorSpec("indiv_mels", (BATCH, MEL_BANDS, MEL_STEPS), low=-4.0, high=4.0)),
    outputs=(TensorSpec("model_output", (BATCH, 6, IMAGE_SIZE, IMAGE_SIZE)),),
)
