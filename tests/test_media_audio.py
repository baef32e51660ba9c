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


def _both_forms(path):
    """(48 kHz samples, 16 kHz analysis PCM) as load_audio gives them, after checking open_audio (what renders
    use) gives the same: its output track decoded chunk by chunk, its analysis track at once."""
    from engines.media_audio import open_audio

    loaded, streamed = load_audio(path), open_audio(path)
    np.testing.assert_array_equal(np.concatenate(list(streamed.output_chunks())), loaded.samples)
    np.testing.assert_array_equal(streamed.analysis_pcm(), loaded.analysis_pcm())
    return loaded.samples, loaded.analysis_pcm()


def test_non_finite_float_samples_become_silence(tmp_path):
    """A float WAV with NaN and +-Inf samples: those samples are silence and the rest is decoded as it is (the
    same as the file with zeros there), so the AAC encoder gets finite samples and the render succeeds."""
    import soundfile
    from fractions import Fraction

    import av

    from engines.encoder import Mp4Writer

    clean = tone(2.0, ANALYSIS_RATE)
    clean[[1000, 8000, 20000]] = 0.0
    broken = clean.copy()
    broken[[1000, 8000, 20000]] = [np.nan, np.inf, -np.inf]
    soundfile.write(tmp_path / "broken.wav", broken, ANALYSIS_RATE, subtype="FLOAT")
    soundfile.write(tmp_path / "clean.wav", clean, ANALYSIS_RATE, subtype="FLOAT")
    samples, pcm = _both_forms(tmp_path / "broken.wav")
    expected_samples, expected_pcm = _both_forms(tmp_path / "clean.wav")
    np.testing.assert_array_equal(samples, expected_samples)
    np.testing.assert_array_equal(pcm, expected_pcm)

    from engines.media_audio import open_audio

    out = tmp_path / "out.mp4"
    with Mp4Writer(out, fps=Fraction(25), width=64, height=64, mode="real_time",
                   audio=open_audio(tmp_path / "broken.wav")) as writer:
        for _ in range(50):
            writer.write(np.zeros((64, 64, 3), np.uint8))
    with av.open(str(out)) as container:
        decoded = np.concatenate([f.to_ndarray().reshape(-1) for f in container.decode(audio=0)])
    assert decoded.size >= 2 * OUTPUT_RATE and np.all(np.isfinite(decoded))
    assert 0.2 < np.max(np.abs(decoded)) < 0.4  # the 0.3 tone, not clipped noise


@pytest.mark.parametrize("channels", [2, 6])
def test_identical_channels_mix_down_to_the_mono_signal(tmp_path, channels):
    """Mixing to mono averages the channels: dual-mono at a 0.89 peak comes out as the mono file, neither louder
    (FFmpeg's default downmix adds each channel at -3 dB: +3 dB for stereo, +9.4 dB for six) nor clipped."""
    import soundfile

    mono = tone(2.0, ANALYSIS_RATE) * np.float32(0.89 / 0.3)
    soundfile.write(tmp_path / "mono.wav", mono, ANALYSIS_RATE, subtype="PCM_16")
    soundfile.write(tmp_path / "multi.wav", np.tile(mono[:, None], (1, channels)), ANALYSIS_RATE, subtype="PCM_16")
    samples, pcm = _both_forms(tmp_path / "multi.wav")
    expected_samples, expected_pcm = _both_forms(tmp_path / "mono.wav")
    np.testing.assert_allclose(samples, expected_samples, atol=1e-6)
    assert np.max(np.abs(pcm.astype(np.int32) - expected_pcm)) <= 1
    assert np.max(np.abs(samples)) < 0.95  # nothing reached full scale


def test_different_channels_are_averaged(tmp_path):
    import soundfile

    left = tone(1.0, ANALYSIS_RATE)
    soundfile.write(tmp_path / "left.wav", np.stack([left, np.zeros_like(left)], axis=1), ANALYSIS_RATE, subtype="FLOAT")
    soundfile.write(tmp_path / "half.wav", left / 2, ANALYSIS_RATE, subtype="FLOAT")
    np.testing.assert_allclose(_both_forms(tmp_path / "left.wav")[0], _both_forms(tmp_path / "half.wav")[0], atol=1e-6)
