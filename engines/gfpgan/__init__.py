"""GFPGAN v1.4 face restoration, the last stage of high_quality mode.

The network (arch.py, stylegan2.py) reproduces upstream TencentARC/GFPGAN's ``GFPGANv1Clean`` with its
"clean" StyleGAN2 decoder key for key, so the official ``GFPGANv1.4.pth`` / ``GFPGANv1.3.pth`` load strictly
(checkpoint.py). Faces are aligned from our MediaPipe landmarks to the FFHQ-512 five-point template and pasted
back with a feathered mask (align.py) instead of upstream's facexlib helper, which downloads detector weights at
run time. stage.py is the FrameStage the high_quality engine chains.
"""

FACE_SIZE = 512  # the network's input and output side (out_size of the official checkpoints)
