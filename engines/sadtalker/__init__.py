"""SadTalker (256) real_time engine: portrait + speech -> head pose, expression and blinks, rendered by the
3D-keypoint face renderer, pasted back into the portrait, then lip-synced by Wav2Lip.

Modules, one job each (importing this package does not import torch):
- blocks.py: the building blocks shared by the face renderer (hourglasses, SPADE, spectral-norm convs)
- renderer.py: keypoint detector, mapping net, OcclusionAwareSPADEGenerator and the keypoint transform
- audio_nets.py: audio2exp (SimpleWrapperV2) and audio2pose (CVAE + the training-only parts a strict load needs)
- recon.py: the ResNet-50 3DMM reconstruction net (face_3drecon)
- checkpoint.py: strict loading of SadTalker_V0.0.2_256.safetensors and mapping_00229-model.pth.tar
- coefficients.py: mel -> expression, pose (seeded), blinks; 27-frame windows for the mapping net
- crop.py: the face crop from Face Mesh landmarks, the 5-point 3DMM alignment, the seamless paste-back
- engine.py: the SadTalkerEngine (real_time) chaining SadTalker -> Wav2Lip
"""

SAFETENSORS_256 = "SadTalker_V0.0.2_256.safetensors"
MAPPING_CROP = "mapping_00229-model.pth.tar"  # crop / still modes (upstream's mapping_00109 is for "full")
FACE_SIZE = 256  # the face renderer's input and output crop
RECON_SIZE = 224  # the 3DMM reconstruction net's input
COEFF_FPS = 25  # SadTalker's audio -> coefficient models work at 25 frames a second
SEMANTIC_RADIUS = 13  # the mapping net sees 2 * 13 + 1 = 27 frames of coefficients
POSE_STYLES = 46  # audio2pose classes (pose styles 0..45)
