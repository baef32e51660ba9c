"""The built-in weightless engine: no downloaded checkpoints, CPU real time.

Face Mesh landmarks (bundled with mediapipe) rig the portrait; phones from pocketsphinx's bundled English
model plus the loudness envelope drive the mouth; blinks and a little head motion keep it alive. It is a
geometric warp of the one photo, not a neural lip-sync model (not Wav2Lip), and says so in its name and in
the output file's metadata.
"""

from __future__ import annotations

from typing import Iterator

import cv2
import numpy as np

from . import face
from .base import Engine, EngineJob, Holding
from .eye_blink import blink_track, eye_rigs
from .fields import boxes_around
from .head_motion import HeadRig, motion_track
from .mouth_track import StreamedMouthTrack
from .mouth_warp import MouthRig
from .phone_process import shared_phone_process

BLINK_EPSILON = 0.02


class LandmarkWarpEngine(Engine):
    name = "landmark-warp"
    mode = "real_time"
    description = (
        "built-in weightless engine: Face Mesh landmark warp driven by phones and loudness "
        "(not a neural model, not Wav2Lip)"
    )
    needs_gpu = False

    def _load(self) -> Holding:
        """No weights: Face Mesh and the phone decoder are loaded by their own shared instances on first use."""
        return Holding(device="cpu", precision="none", backend="numpy+opencv")

    def warm_up(self) -> None:
        """Start the phone recognition process and build a Face Mesh graph now, so the first job does not pay
        for them."""
        from .face import shared_analyzer

        self.load()
        shared_analyzer()
        shared_phone_process().start()

    def _release(self) -> None:
        """The phone process ends with the engine (a later job starts a new one)."""
        shared_phone_process().close()

    def render(self, job: EngineJob) -> Iterator[np.ndarray]:
        # Phones are recognised in the phone process, an utterance at a time, while frames render: frame i waits
        # only for the utterances its mouth depends on (track.wait_for). int16 PCM: half the memory of float32.
        track = StreamedMouthTrack(job.audio.analysis_pcm(), float(job.fps), job.frame_count,
                                   recogniser=shared_phone_process())
        try:
            yield from self._frames(job, track)
        finally:  # a job stopped early (deadline, failed encoder) leaves no utterances queued
            track.close()

    def _frames(self, job: EngineJob, track: StreamedMouthTrack) -> Iterator[np.ndarray]:
        n_frames = job.frame_count
        fps = float(job.fps)  # frame times i / fps as float arrays; exact timing is the encoder's
        rng = np.random.default_rng(job.seed)
        landmarks = job.landmarks
        mouth = MouthRig(landmarks, job.size, job.portrait)
        eyes = eye_rigs(landmarks, job.size)
        head = HeadRig(landmarks, job.size)
        closure = blink_track(n_frames, fps, rng)
        face_height = float(landmarks[face.CHIN][1] - landmarks[10][1])
        angles, shifts_x, shifts_y = motion_track(n_frames, fps, track.envelope, face_height, rng)

        portrait = job.portrait
        # Warped as RGBA: cv2.remap's bilinear path takes about half the time on four channels that it takes on
        # three, with the same values.
        source = cv2.cvtColor(portrait, cv2.COLOR_RGB2RGBA)
        expression = source.copy()  # portrait with this frame's mouth and eyes; background never changes
        around_head = boxes_around(head.y0, head.y1, head.x0, head.x1, *portrait.shape[:2])
        for i in range(n_frames):
            track.wait_for(i)
            expression[mouth.y0 : mouth.y1, mouth.x0 : mouth.x1] = mouth.render(
                source, float(track.opening[i]), float(track.width[i]), float(track.press[i]),
                float(track.labiodental[i]), float(track.tongue[i]), sharp_source=portrait,
            )
            for eye in eyes:
                region = (slice(eye.y0, eye.y1), slice(eye.x0, eye.x1))
                expression[region] = eye.render(source, float(closure[i])) if closure[i] > BLINK_EPSILON else source[region]
            # Converted back to RGB straight into the frame (cv2 writes into the views): the head region from its
            # warp, the rest from the expression.
            frame = np.empty_like(portrait)
            for rows, cols in around_head:
                cv2.cvtColor(expression[rows, cols], cv2.COLOR_RGBA2RGB, dst=frame[rows, cols])
            cv2.cvtColor(head.render(expression, float(angles[i]), float(shifts_x[i]), float(shifts_y[i])),
                         cv2.COLOR_RGBA2RGB, dst=frame[head.y0 : head.y1, head.x0 : head.x1])
            yield frame
