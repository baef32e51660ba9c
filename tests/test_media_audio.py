import numpy as np
import pytest

from schemas.errors import AudioTooLong, EmptyAudio, NotAudio, SilentAudio, UnreadableInput
from engines.media_audio import ANALYSIS_RATE, OUTPUT_RATE, load_audio, write_wav
from tests.media_fixtures import PORTRAIT, encode_audio, tone


@pytest.mark.parametrize(
    "name,codec,container,rate,layout",
    [
        ("a.wav", "pcm_s16le", "wav", 22050, "mono"),
        ("a.mp3", "libmp3lame", "mp3", 44100, "stereo"),
        ("a.m4a", "aac", "mp4", 48000, "mono"),
        ("a.ogg", "libopus", "ogg", 48000, "stereo"),
        ("a.flac", "flac", "flac", 16000, "mono"),
    ],
)
def test_round_trip_each_format(tmp_path, name, codec, container, rate, layout):
    seconds = 1.5
    path = encode_audio(tmp_path / name, tone(seconds, rate), rate, codec, container, layout)
    audio = load_audio(path)
    assert audio.sample_rate == OUTPUT_RATE
    # Encoders pad by at most a few frames; the length must match the input closely.
    assert abs(audio.duration - seconds) < 0.08, audio.duration
    assert 0.2 < float(np.max(np.abs(audio.samples))) <= 1.0
    analysis = audio.analysis_samples()
    assert abs(len(analysis) / ANALYSIS_RATE - audio.duration) < 1e-3
    # The 220 Hz tone survives resampling: its spectral peak is where it should be.
    spectrum = np.abs(np.fft.rfft(analysis[: ANALYSIS_RATE]))
    assert abs(np.argmax(spectrum) - 220) <= 2


def test_silent_audio(tmp_path):
    path = write_wav(tmp_path / "silence.wav", np.zeros(OUTPUT_RATE, np.float32))
    with pytest.raises(SilentAudio, match="silent"):
        load_audio(path)


def test_zero_byte_audio(tmp_path):
    path = tmp_path / "zero.wav"
    path.write_bytes(b"")
    with pytest.raises(EmptyAudio, match="0 bytes"):
        load_audio(path)


def test_wav_without_samples(tmp_path):
    path = write_wav(tmp_path / "header_only.wav", np.zeros(0, np.float32))
    with pytest.raises(EmptyAudio, match="no samples"):
        load_audio(path)


def test_corrupt_audio(tmp_path):
    path = tmp_path / "noise.mp3"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 20_000, dtype=np.uint8).tobytes())
    with pytest.raises(NotAudio):
        load_audio(path)


def test_an_image_is_not_audio():
    with pytest.raises(NotAudio):
        load_audio(PORTRAIT)


def test_too_long(tmp_path):
    path = write_wav(tmp_path / "long.wav", tone(3.0))
    with pytest.raises(AudioTooLong, match="2 s limit"):
        load_audio(path, max_seconds=2)


def test_unreadable_path(tmp_path):
    with pytest.raises(UnreadableInput, match="Cannot read the audio"):
        load_audio(tmp_path / "missing.wav")


def test_open_audio_refuses_what_load_audio_refuses(tmp_path):
    """Renders read speech with open_audio (streamed): the same limit, silence and emptiness checks."""
    from engines.media_audio import open_audio

    with pytest.raises(AudioTooLong, match="2 s limit"):
        open_audio(write_wav(tmp_path / "long.wav", tone(3.0)), max_seconds=2)
    with pytest.raises(SilentAudio):
        open_audio(write_wav(tmp_path / "silence.wav", np.zeros(OUTPUT_RATE, np.float32)))
    with pytest.raises(NotAudio):
        open_audio(PORTRAIT)
    streamed = open_audio(write_wav(tmp_path / "tone.wav", tone(1.5)))
    assert streamed.n_samples == int(1.5 * OUTPUT_RATE) and streamed.duration == 1.5
    assert sum(len(chunk) for chunk in streamed.output_chunks()) == streamed.n_samples
