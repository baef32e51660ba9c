"""Face boxes, smoothing, model input crops and the mouth-only paste-back."""

from __future__ import annotations

import numpy as np
import pytest

from engines import face
from scipy.ndimage import uniform_filter1d

from engines.wav2lip.crops import face_box, int_box, model_inputs, mouth_mask, paste_mouth
from engines.wav2lip.sources import tracked, with_boxes


@pytest.fixture(scope="module")
def job():
    from tests.wav2lip_fixtures import portrait_job

    return portrait_job(size=256)


def test_face_box_holds_the_mouth_in_its_lower_half(job):
    x0, y0, x1, y1 = int_box(face_box(job.landmarks, (256, 256)))
    mouth = job.landmarks[face.LIPS_OUTER]
    assert x0 < mouth[:, 0].min() and mouth[:, 0].max() < x1
    assert (y0 + y1) / 2 < mouth[:, 1].min() and mouth[:, 1].max() < y1
    assert y1 > job.landmarks[face.CHIN][1]  # padded below the chin


def test_model_inputs_mask_the_lower_half_and_keep_a_reference(job):
    box = int_box(face_box(job.landmarks, (256, 256)))
    batch = model_inputs([job.portrait], [box])
    assert batch.shape == (1, 6, 96, 96) and batch.dtype == np.float32
    assert np.all(batch[0, :3, 48:] == 0)
    np.testing.assert_array_equal(batch[0, :3, :48], batch[0, 3:, :48])
    assert batch[0, 3:, 48:].std() > 0.02
    # BGR order: channel 0 of the crop is the portrait's blue channel.
    crop = job.portrait[box[1]:box[3], box[0]:box[2]]
    assert abs(batch[0, 3, 48:].mean() * 255 - crop[..., 2][crop.shape[0] // 2:].mean()) < 3


def test_paste_changes_only_the_masked_mouth_region(job):
    box = int_box(face_box(job.landmarks, (256, 256)))
    mask = mouth_mask(job.landmarks, box)
    out = paste_mouth(job.portrait, np.zeros((96, 96, 3), np.float32), box, mask)
    changed = np.any(out != job.portrait, axis=2)
    full_mask = np.zeros(changed.shape, bool)
    full_mask[box[1]:box[3], box[0]:box[2]] = mask > 0
    assert changed.sum() > 100
    assert not np.any(changed & ~full_mask)
    lips = job.landmarks[face.LIPS_OUTER].mean(axis=0).astype(int)
    assert mask[lips[1] - box[1], lips[0] - box[0]] == pytest.approx(1.0)
    # Nothing above the bottom of the nose, the eyes in particular, is touched.
    assert not changed[: int(job.landmarks[2][1])].any()


def test_streamed_smoothing_equals_the_batch_moving_average(job):
    rng = np.random.default_rng(0)
    marks = [job.landmarks + rng.normal(0, 2, (1, 2)).astype(np.float32) for _ in range(11)]
    streamed = [box for _, _, box in with_boxes(((job.portrait, m) for m in marks), (256, 256))]
    # The batch reference: a centred 5-frame moving average with the end boxes repeated (scipy's "nearest").
    boxes = np.stack([face_box(m, (256, 256)) for m in marks])
    batch = [int_box(b) for b in uniform_filter1d(boxes, size=5, axis=0, mode="nearest")]
    assert streamed == batch
    jitter = np.std(np.diff([b[0] for b in batch]))
    assert jitter < np.std(np.diff([face_box(m, (256, 256))[0] for m in marks]))


def test_tracking_interpolates_between_measurements():
    frames = [np.full((4, 4, 3), i, np.uint8) for i in range(9)]
    measured = []

    def detect(frame):
        measured.append(int(frame[0, 0, 0]))
        return np.full((478, 2), float(frame[0, 0, 0]), np.float32)

    pairs = list(tracked(frames, detect, np.zeros((478, 2), np.float32), stride=4))
    assert measured == [3, 7, 8]
    assert [float(lm[0, 0]) for _, lm in pairs] == pytest.approx([0.75, 1.5, 2.25, 3, 4, 5, 6, 7, 8])
