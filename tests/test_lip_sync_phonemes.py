"""A lip-sync instrument of our own: sentences with known phonemes (eSpeak NG says them and reports each
phoneme's time) are rendered by the built-in engine, and the *output video* is measured with Face Mesh per
phoneme class: bilabials (M/B/P) close the lips, rounded vowels (OO, OH) narrow the mouth against spread ones
(EE), open vowels (AA) open it. Three portraits (the bundled astronaut, who smiles with parted lips;
matplotlib's Grace Hopper, closed lips; the astronaut dim, warm and small, enlarged by the framing) and two
voices (eSpeak's en-us male and its female variant f3)."""

from __future__ import annotations

import av
import cv2
import numpy as np
import pytest
from scipy.signal import resample_poly

from engines import face
from engines.hardware import Hardware
from engines.media_audio import OUTPUT_RATE, write_wav
from engines.pipeline import RenderRequest, render
from engines.registry import EngineRegistry
from engines.settings import ModelSettings
from tests.speech_synth import speak

SIZE, FPS = 256, 25
ENGINES = EngineRegistry(ModelSettings(), Hardware(cuda=False))
VOICES = {  # voice -> sentence rich in each class
    "en-us": "Bob may buy a blue boat, papa. We see cheap beef by the pool.",
    "en-us+f3": "Please bring Pam a bowl of warm soup. Father sees a large blue moon, Steve.",
}
BILABIAL = {"m", "b", "p"}
ROUNDED = {"u:", "U", "oU", "O:", "w"}
SPREAD = {"i:", "I", "i", "eI", "E"}
OPEN = {"A:", "a", "aI", "aU", "0", "A@", "aa"}
MARGIN = 0.04  # seconds either side of a phoneme searched for its shape (one video frame)
CLOSED = 0.06  # inner-lip gap / mouth width at or below which the lips are shut (Face Mesh's own noise ~0.02)


def _portraits(folder) -> dict[str, object]:
    from cli.mouth_sheets import sample_faces

    faces = sample_faces()
    chosen = {"astronaut": faces["astronaut"], "hopper": faces["hopper"], "astronaut-small-dim": faces["astronaut-variant"]}
    paths = {}
    for name, photo in chosen.items():
        paths[name] = folder / f"{name}.png"
        cv2.imwrite(str(paths[name]), cv2.cvtColor(photo, cv2.COLOR_RGB2BGR))
    return paths


def _measure(frames: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Per frame: inner-lip gap over mouth width, and mouth width over face width."""
    analyzer = face.shared_analyzer()
    gaps, widths = [], []
    for frame in frames:
        points = analyzer.landmarks(frame)
        gaps.append(face.mouth_opening(points))
        widths.append(np.linalg.norm(points[61] - points[291]) / np.linalg.norm(points[234] - points[454]))
    return np.array(gaps), np.array(widths)


@pytest.fixture(scope="module")
def measured(tmp_path_factory):
    folder = tmp_path_factory.mktemp("lipsync")
    results = {}
    for voice, text in VOICES.items():
        said = speak(text, voice)
        audio = write_wav(folder / f"{voice}.wav", resample_poly(said.samples, OUTPUT_RATE // 150, said.rate // 150))
        for name, portrait in _portraits(folder).items():
            out = folder / f"{name}-{voice}.mp4"
            render(RenderRequest(portrait, audio, out, mode="real_time", size=SIZE, fps=FPS), ENGINES)
            with av.open(str(out)) as container:
                frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
            rest_gap, rest_width = _measure([face.frame_portrait(cv2.cvtColor(cv2.imread(str(portrait)), cv2.COLOR_BGR2RGB), SIZE).image])
            gaps, widths = _measure(frames)
            results[(name, voice)] = (said.phonemes, gaps, widths, float(rest_gap[0]), float(rest_width[0]))
    return results


def _windows(phonemes, names, values, reduce):
    """`reduce` (min or max) of the per-frame values over each phoneme of the class, a frame either side."""
    out = []
    for phoneme in phonemes:
        if phoneme.name in names:
            first = max(0, int(np.floor((phoneme.start - MARGIN) * FPS)))
            last = min(len(values), int(np.ceil((phoneme.end + MARGIN) * FPS)))
            if last > first:
                out.append(reduce(values[first:last]))
    return np.array(out)


CASES = [(name, voice) for name in ("astronaut", "hopper", "astronaut-small-dim") for voice in VOICES]


@pytest.mark.parametrize("case", CASES, ids=[f"{n}-{v}" for n, v in CASES])
def test_bilabials_close_the_lips(measured, case):
    phonemes, gaps, _, rest_gap, _ = measured[case]
    closest = _windows(phonemes, BILABIAL, gaps, np.min)
    assert len(closest) >= 6
    # Most shut (the engine hears them from phones and loudness dips; a few hide in a fricative's noise).
    assert np.median(closest) <= CLOSED and np.mean(closest <= CLOSED) >= 2 / 3, (np.round(closest, 3), rest_gap)


@pytest.mark.parametrize("case", CASES, ids=[f"{n}-{v}" for n, v in CASES])
def test_open_vowels_open_the_mouth(measured, case):
    phonemes, gaps, _, rest_gap, _ = measured[case]
    widest = _windows(phonemes, OPEN, gaps, np.max)
    closest = _windows(phonemes, BILABIAL, gaps, np.min)
    assert len(widest) >= 3
    assert np.median(widest) > rest_gap + 0.1, (np.round(widest, 3), rest_gap)
    assert np.median(widest) > np.median(closest) + 0.2


@pytest.mark.parametrize("case", CASES, ids=[f"{n}-{v}" for n, v in CASES])
def test_rounded_vowels_narrow_the_mouth(measured, case):
    phonemes, _, widths, _, rest_width = measured[case]
    rounded = _windows(phonemes, ROUNDED, widths, np.min)
    spread = _windows(phonemes, SPREAD, widths, np.max)
    assert len(rounded) >= 3 and len(spread) >= 3
    assert np.median(rounded) < rest_width - 0.02, (np.round(rounded, 3), rest_width)
    assert np.median(rounded) < np.median(spread) - 0.03, (np.round(rounded, 3), np.round(spread, 3))
