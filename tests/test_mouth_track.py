import numpy as np

from engines.media_audio import load_audio
from engines.mouth_track import VISEMES, loudness_envelope, mouth_track
from engines.phonemes import recognise_phones
from tests.media_fixtures import speech_with_pause

FPS = 25


def test_phones_are_recognised_in_english_speech(tmp_path):
    audio = load_audio(speech_with_pause(tmp_path / "s.wav"))
    phones = recognise_phones(audio.analysis_samples())
    spoken = [p for p in phones if p.label != "SIL"]
    assert len(spoken) > 10
    assert all(p.label in VISEMES for p in spoken), {p.label for p in spoken} - set(VISEMES)
    assert all(b.start >= a.start for a, b in zip(phones, phones[1:]))


def test_mouth_closes_in_the_pause_and_moves_in_speech(tmp_path):
    audio = load_audio(speech_with_pause(tmp_path / "s.wav", before=2.0, pause=1.2, after=2.0))
    frames = int(np.ceil(audio.duration * FPS))
    track = mouth_track(audio.analysis_samples(), FPS, frames)
    assert track.used_phones
    pause = track.opening[int(2.25 * FPS) : int(3.0 * FPS)]
    speech = np.concatenate([track.opening[: int(2.0 * FPS)], track.opening[int(3.3 * FPS) :]])
    assert pause.max() < 0.05
    assert speech.max() > 0.5 and speech.std() > 0.1  # opens and closes within speech, not a constant
    assert np.all((track.opening >= 0) & (track.opening <= 1))
    assert np.all((track.width >= -1) & (track.width <= 1))


def test_opening_follows_loudness(tmp_path):
    audio = load_audio(speech_with_pause(tmp_path / "s.wav"))
    frames = int(np.ceil(audio.duration * FPS))
    track = mouth_track(audio.analysis_samples(), FPS, frames)
    correlation = np.corrcoef(track.opening, track.envelope)[0, 1]
    assert correlation > 0.6, correlation


def test_energy_only_fallback_still_speaks(tmp_path):
    audio = load_audio(speech_with_pause(tmp_path / "s.wav"))
    frames = int(np.ceil(audio.duration * FPS))
    track = mouth_track(audio.analysis_samples(), FPS, frames, use_phones=False)
    assert not track.used_phones
    assert track.opening[int(2.25 * FPS) : int(3.0 * FPS)].max() < 0.05
    assert track.opening.max() > 0.5


def test_envelope_spans_zero_to_one():
    rate = 16_000
    t = np.arange(rate) / rate
    signal = np.where(t < 0.5, 0.5 * np.sin(2 * np.pi * 200 * t), 0.0005 * np.sin(2 * np.pi * 200 * t))
    envelope = loudness_envelope(signal.astype(np.float32))
    assert envelope[10:40].min() > 0.9 and envelope[60:90].max() < 0.1


def test_phones_do_not_depend_on_what_was_decoded_before(tmp_path):
    """A worker decodes many jobs on one thread: a job's phones (so its video) must not depend on the one before."""
    from engines import SAMPLES
    from engines.media_audio import load_audio
    from engines.phonemes import recognise_phones
    from tests.media_fixtures import speech_with_pause

    speech = load_audio(speech_with_pause(tmp_path / "speech.wav", before=2.0, pause=1.2, after=2.5))
    samples = speech.analysis_samples()
    first = recognise_phones(samples)
    recognise_phones(load_audio(SAMPLES / "speech.wav").trimmed(0.4).analysis_samples())  # a short job between
    assert recognise_phones(samples) == first
