import pytest
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


# --- streaming: phones recognised an utterance at a time while frames render (issue 11) ---------------------

from scipy.ndimage import gaussian_filter1d, maximum_filter1d  # noqa: E402

from engines import mouth_track as track_module  # noqa: E402
from engines.mouth_track import StreamedMouthTrack, utterance_spans  # noqa: E402


def _sample_speech():
    from engines import SAMPLES

    return load_audio(SAMPLES / "speech.wav").analysis_pcm()


def test_utterances_start_short_grow_and_cut_at_quiet_steps():
    pcm = _sample_speech()
    envelope = loudness_envelope(pcm)
    spans = utterance_spans(envelope)
    assert spans[0][0] == 0 and spans[-1][1] == len(envelope)
    assert all(a[1] == b[0] for a, b in zip(spans, spans[1:]))  # contiguous, nothing skipped
    low, high = track_module.FIRST_UTTERANCE_STEPS
    assert low <= spans[0][1] <= high  # the first frame waits for at most 1 s of speech
    assert len(spans) >= 3
    for first, end in spans[:-1]:
        assert end - first <= track_module.MAX_UTTERANCE_STEPS
        assert envelope[end] <= np.percentile(envelope[first:end], 50)  # cut at a quiet step, not mid-vowel
    hour = np.tile(envelope, 400)
    longest = max(end - first for first, end in utterance_spans(hour))
    assert track_module.MAX_UTTERANCE_STEPS // 2 <= longest <= track_module.MAX_UTTERANCE_STEPS


@pytest.mark.parametrize("fps", [25.0, 30000 / 1001, 60.0])
def test_streamed_track_equals_smoothing_the_whole_clip_at_once(fps):
    """Frames made utterance by utterance are exactly the whole-clip computation (here without phones, whose
    formulas need no recogniser): streaming changes nothing but where the recogniser's utterances are cut."""
    pcm = _sample_speech()
    n_frames = int(np.ceil(len(pcm) / 16000 * fps))
    streamed = StreamedMouthTrack(pcm, fps, n_frames, use_phones=False)
    for frame in range(n_frames):
        streamed.wait_for(frame)
        assert streamed.ready > frame
    envelope = loudness_envelope(pcm)
    sigma = track_module.SIGMA_STEPS
    shut = track_module._any_in_video_frame(track_module.closure_dips(envelope), fps, n_frames)
    frames = np.arange(n_frames)
    opening = track_module._per_video_frame(gaussian_filter1d(envelope ** 1.3, sigma), fps, frames)
    opening[shut] = 0.0
    width = gaussian_filter1d(track_module.spectral_width(pcm, len(envelope)) * envelope, 1.5 * sigma)
    press = np.maximum(shut, 0.5 * maximum_filter1d(shut.astype(np.float32), 3))
    np.testing.assert_array_equal(streamed.opening, opening)
    np.testing.assert_array_equal(streamed.width, track_module._per_video_frame(width, fps, frames))
    np.testing.assert_array_equal(streamed.press, press)
    assert shut.sum() > 10


class _CountingRecogniser:
    """Recognises in the calling thread and counts the utterances whose phones were asked for."""

    def __init__(self):
        self.submitted = self.taken = self.cancelled = 0

    def submit(self, pcm):
        self.submitted += 1
        counter = self

        class Pending:
            def result(self):
                counter.taken += 1
                return recognise_phones(pcm)

            def cancel(self):
                counter.cancelled += 1

        return Pending()


def test_the_first_frame_waits_for_the_first_utterance_only():
    pcm = _sample_speech()
    recogniser = _CountingRecogniser()
    streamed = StreamedMouthTrack(pcm, 25.0, int(np.ceil(len(pcm) / 16000 * 25)), recogniser=recogniser)
    assert recogniser.submitted == track_module.IN_FLIGHT and recogniser.taken == 0
    streamed.wait_for(0)
    assert recogniser.taken == 1 and 0 < streamed.ready < streamed.n_frames
    whole = streamed.whole()
    assert whole.used_phones and recogniser.taken == len(utterance_spans(loudness_envelope(pcm)))
    # The same job with the phones recognised in this thread: the same track.
    again = mouth_track(pcm, 25.0, streamed.n_frames)
    np.testing.assert_array_equal(again.opening, whole.opening)
    np.testing.assert_array_equal(again.press, whole.press)


def test_a_job_stopped_early_leaves_no_utterances_queued():
    pcm = _sample_speech()
    recogniser = _CountingRecogniser()
    streamed = StreamedMouthTrack(pcm, 25.0, int(np.ceil(len(pcm) / 16000 * 25)), recogniser=recogniser)
    streamed.wait_for(0)
    streamed.close()
    assert recogniser.cancelled == track_module.IN_FLIGHT and recogniser.taken == 1


def test_the_phone_process_gives_this_threads_phones_and_survives_being_killed():
    import os
    import signal

    import psutil

    from engines.phone_process import PhoneProcess

    pcm = _sample_speech()[: 3 * 16000]
    expected = recognise_phones(pcm)
    process = PhoneProcess()
    try:
        assert process.submit(pcm).result() == expected
        child = psutil.Process(process.pid)
        assert child.pid != os.getpid() and child.memory_info().rss < 150 * 2**20  # numpy + pocketsphinx only
        os.kill(child.pid, signal.SIGKILL)  # killed for memory, say
        child.wait(10)
        assert process.submit(pcm).result() == expected  # recognised here, or in a fresh child
        assert process.submit(pcm).result() == expected
        assert process.pid is not None and process.pid != child.pid
        queued = [process.submit(pcm) for _ in range(3)]
        queued[-1].cancel()  # a job that stopped: its utterance is dropped, the others still come
        assert queued[0].result() == expected and queued[1].result() == expected
        garbled = process._recognise
        process._recognise = lambda pcm: (_ for _ in ()).throw(ValueError("not JSON"))  # an unreadable answer
        assert process.submit(pcm).result() == expected  # recognised in this thread, no hang
        process._recognise = garbled
        assert process.submit(pcm).result() == expected
    finally:
        process.close()
    assert process.pid is None


@pytest.mark.parametrize("kind", ["tone", "constant"])
def test_audio_without_speech_sounds_has_no_phones_and_a_loudness_driven_mouth(tmp_path, kind):
    """A 440 Hz tone or a constant level: the recogniser may have no hypothesis at all (here for the clip's last
    utterance, 10 ms long). That is no phones, not a crash: the mouth is the loudness-driven one."""
    from engines.media_audio import OUTPUT_RATE, open_audio, write_wav

    t = np.arange(2 * OUTPUT_RATE) / OUTPUT_RATE
    samples = 0.3 * np.sin(2 * np.pi * 440 * t) if kind == "tone" else np.full(t.size, 0.5)
    audio = open_audio(write_wav(tmp_path / f"{kind}.wav", samples.astype(np.float32)))
    pcm = audio.analysis_pcm()
    assert utterance_spans(loudness_envelope(pcm))[-1] == (199, 201)  # the 10 ms utterance
    assert recognise_phones(pcm[-160:]) == []
    frames = int(np.ceil(audio.duration * FPS))
    track = mouth_track(pcm, FPS, frames)
    assert not track.used_phones
    np.testing.assert_array_equal(track.opening, mouth_track(pcm, FPS, frames, use_phones=False).opening)
    assert track.opening.max() > 0.5  # a steady sound keeps the mouth open
