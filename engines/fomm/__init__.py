"""FOMM (First Order Motion Model, vox-256): the motion stage of high_quality mode.

The portrait's own keypoints (with local Jacobians) are moved by a speech-driven head-motion track (or by a
user's driving video, relatively, as upstream `animate.normalize_kp` does); the dense motion network turns the
keypoint motion into a deformation field and an occlusion map, which are carried to the full-resolution portrait.

Modules: model.py (the networks, upstream state-dict layout), checkpoint.py (strict loading of
`vox-cpk.pth.tar`, random upstream-format files for tests and the bench), motion.py (driving keypoints),
warp.py (full-resolution warp and landmarks), stage.py (the FrameStage). Importing this package does not import
torch.
"""

MODEL_SIZE = 256  # vox-256: the networks see 256x256 RGB in [0, 1]
NUM_KP = 10
CHECKPOINT_NAME = "vox-cpk.pth.tar"
