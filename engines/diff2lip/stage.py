"""The Diff2Lip stage of high_quality mode: repaints the mouth of every incoming frame to match the speech.

Per job: the Wav2Lip mel of the speech (Diff2Lip was trained on the same features), one fixed noise image drawn
from job.seed (upstream's "consistent initial noise": every frame starts from the same noise, which keeps the
mouth's texture steady from frame to frame), and one reference frame, the first frame's face crop. Per batch
of frames: face crops (stable boxes), the lower half replaced by the noise, the mel window of each frame,
DDIM sampling of the UNet (settings.hq_ddim_steps steps), and the generated lower half pasted back over the
mouth through a feathered mask. Landmarks pass through unchanged. The same job renders the same frames.
"""

from __future__ import annotations

import importlib.util
import itertools
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from ..base import Availability, EngineJob, Holding
from ..files import remembered_sha256
from ..stages import FrameStage, Pair, torch_device
from ..wav2lip.mel import frame_windows, melspectrogram
from ..wav2lip.sources import with_boxes
from . import CHECKPOINT_NAME, IMAGE_SIZE
from .crops import face_crops, lower_half_mask, paste_face


def job_noise(seed: int):
    """(1, 3, 128, 128) float32 standard normal noise drawn on the CPU from ``seed`` (the same on any device)."""
    import torch

    generator = torch.Generator().manual_seed(int(seed))
    return torch.randn((1, 3, IMAGE_SIZE, IMAGE_SIZE), generator=generator)


def mel_windows(job: EngineJob) -> np.ndarray:
    """(frame_count, 80, 16): frame i hears the 16 mel columns from frame max(i - 1, 0) on, as upstream's
    generate.py pairs them (its 5-frame audio window starts two 1-based frame ids before the frame)."""
    windows = frame_windows(melspectrogram(job.audio.analysis_samples()), float(job.fps), job.frame_count)
    return windows[np.maximum(np.arange(job.frame_count) - 1, 0)]


class Diff2LipStage(FrameStage):
    name = "diff2lip"
    description = "Diff2Lip diffusion lip-sync: 128x128 face crops, DDIM sampling (official checkpoint)"

    def __init__(self, settings, hardware):
        super().__init__(settings, hardware)
        self.checkpoint = Path(settings.diff2lip_ckpt_dir) / CHECKPOINT_NAME
        self.model = None
        self.schedule = None
        self.device = torch_device(hardware.cuda)

    def required_checkpoints(self) -> list[Path]:
        return [self.checkpoint]

    def availability(self) -> Availability:
        if importlib.util.find_spec("torch") is None:
            return Availability(False, "diff2lip needs PyTorch; install the extra: pip install 'avatar-renderer[neural]'")
        return super().availability()

    def _load(self) -> Holding:
        from .checkpoint import load_diff2lip
        from .sampler import DdimSchedule

        fp16 = self.hardware.cuda  # upstream runs fp16 convolutions on the GPU; the CPU stays in fp32
        self.model = load_diff2lip(self.checkpoint, self.device, fp16=fp16)
        self.schedule = DdimSchedule.respaced(self.settings.hq_ddim_steps)
        return Holding(device=self.device, precision="fp16" if fp16 else "fp32",
                       backend="torch-cuda" if self.hardware.cuda else "torch-cpu", batch_size=self.batch_size,
                       checkpoints={str(self.checkpoint): remembered_sha256(self.checkpoint)})

    def warm_up(self) -> None:
        """One UNet forward at batch 1, so CUDA kernels are chosen before the first job."""
        import torch

        from . import DIFF2LIP_IO

        self.load()
        device = torch.device(self.device)
        with torch.inference_mode():
            self.model(*(torch.from_numpy(a).to(device) for a in DIFF2LIP_IO.example_inputs(1)))

    def _release(self) -> None:
        self.model = self.schedule = None
        if self.hardware.cuda:
            import torch

            torch.cuda.empty_cache()

    def transform(self, job: EngineJob, pairs: Iterable[Pair]) -> Iterator[Pair]:
        self.load()
        stream = iter(pairs)
        first = next(stream, None)
        if first is None:
            return
        boxed = with_boxes(itertools.chain([first], stream), first[0].shape[:2])
        windows = mel_windows(job)
        noise = job_noise(job.seed)
        reference = None
        done = 0
        while chunk := list(itertools.islice(boxed, self.batch_size)):
            frames, landmarks, boxes = zip(*chunk)
            crops = face_crops(list(frames), list(boxes))
            if reference is None:
                reference = crops[:1]
            frame_index = np.minimum(np.arange(done, done + len(chunk)), len(windows) - 1)
            faces = self.generate(crops, reference, windows[frame_index], noise)
            for frame, marks, box, face in zip(frames, landmarks, boxes, faces):
                yield paste_face(frame, face, box, marks), marks
            done += len(chunk)

    def generate(self, crops: np.ndarray, reference: np.ndarray, mels: np.ndarray, noise) -> np.ndarray:
        """(B, 128, 128, 3) float32 RGB faces in [0, 1]: the crops with their lower halves sampled anew."""
        import torch

        from .sampler import ddim_sample

        count = len(crops)
        device = torch.device(self.device)
        image = torch.from_numpy(crops).to(device)
        mask = torch.from_numpy(lower_half_mask(count)).to(device)
        start = noise.to(device).expand(count, -1, -1, -1).contiguous()
        conditions = {
            "cond_img": image * (1.0 - mask) + mask * start,
            "mask": mask,
            "ref_img": torch.from_numpy(reference).to(device).expand(count, -1, -1, -1),
            "indiv_mels": torch.from_numpy(np.ascontiguousarray(mels, dtype=np.float32)).to(device),
        }
        with torch.inference_mode():
            sample = ddim_sample(self.model, start, self.schedule, **conditions)
            faces = sample * mask + (1.0 - mask) * image
            faces = ((faces + 1.0) * 0.5).clamp(0.0, 1.0)
        return faces.permute(0, 2, 3, 1).float().cpu().numpy()
