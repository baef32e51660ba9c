"""Encoder properties: codec, pixel format, frame rate, duration against the audio, bitrate, A/V alignment."""

from pathlib import Path

import av
import numpy as np
import pytest

from engines.encoder import PROFILES, Mp4Writer
from engines.media_audio import OUTPUT_RATE, Audio

FPS = 25


def _click_track(seconds: float, click_at: float) -> Audio:
    samples = np.zeros(int(seconds * OUTPUT_RATE), np.float32)
    start = int(click_at * OUTPUT_RATE)
    samples[start : start + 480] = 0.8 * np.sin(np.arange(480) * 2 * np.pi * 1000 / OUTPUT_RATE)
    return Audio(samples)


def _write(path: Path, audio: Audio, mode: str, size: int = 256, noise: bool = True) -> Path:
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (size, size, 3), dtype=np.uint8) if noise else np.full((size, size, 3), 128, np.uint8)
    frames = int(np.ceil(audio.duration * FPS))
    with Mp4Writer(path, fps=FPS, width=size, height=size, mode=mode, audio=audio, use_nvenc=False) as writer:
        for i in range(frames):
            writer.write(np.roll(base, i * 3, axis=1))
    return path


@pytest.fixture(scope="module")
def real_time_file(tmp_path_factory):
    return _write(tmp_path_factory.mktemp("enc") / "rt.mp4", _click_track(3.0, 1.0), "real_time")


def test_streams_codec_format_rate_and_duration(real_time_file):
    with av.open(str(real_time_file)) as container:
        video, audio = container.streams.video[0], container.streams.audio[0]
        assert video.codec_context.name == "h264"
        assert video.codec_context.pix_fmt == "yuv420p"
        assert video.average_rate == FPS
        assert (video.width, video.height) == (256, 256)
        assert audio.codec_context.name == "aac"
        assert audio.sample_rate == OUTPUT_RATE
        video_seconds = float(video.frames / FPS)
        audio_seconds = float(audio.duration * audio.time_base)
    assert abs(video_seconds - 3.0) <= 1 / FPS
    assert abs(audio_seconds - 3.0) <= 1 / FPS


def test_faststart_puts_moov_before_mdat(real_time_file):
    data = real_time_file.read_bytes()
    assert 0 < data.find(b"moov") < data.find(b"mdat")


def test_audio_is_aligned_after_aac_priming(real_time_file):
    """A click at 1.000 s in the input must play at 1.000 s: the encoder's priming samples are hidden by the
    edit list, as a player applies it when it decodes."""
    with av.open(str(real_time_file)) as container:
        chunks = []
        for frame in container.decode(audio=0):
            chunks.append(frame.to_ndarray().reshape(-1))
    decoded = np.concatenate(chunks)
    onset = np.argmax(np.abs(decoded) > 0.2) / OUTPUT_RATE
    assert abs(onset - 1.0) < 0.003, onset


def test_real_time_bitrate_near_two_megabits(real_time_file):
    with av.open(str(real_time_file)) as container:
        video = container.streams.video[0]
        video_bytes = sum(packet.size for packet in container.demux(video) if packet.size)
        seconds = float(video.frames / FPS)
    bitrate = video_bytes * 8 / seconds
    assert 0.7 * PROFILES["real_time"].bit_rate < bitrate < 1.3 * PROFILES["real_time"].bit_rate, bitrate


def _x264_settings(path: Path) -> str:
    """libx264 writes its settings into the stream as a text SEI message."""
    data = path.read_bytes()
    start = data.find(b"x264 - core")
    assert start >= 0, "no x264 settings SEI in the stream"
    return data[start : start + 2000].decode("latin-1")


def test_real_time_profile_is_ultrafast_abr(real_time_file):
    settings = _x264_settings(real_time_file)
    # Average bitrate capped by a VBV of the same rate: x264 reports it as CBR (without filler).
    assert "rc=cbr" in settings and "bitrate=2000" in settings and "vbv_maxrate=2000" in settings
    assert "subme=0" in settings and "me=dia" in settings  # what preset=ultrafast sets


def test_high_quality_profile_is_slow_crf18_capped(tmp_path):
    path = _write(tmp_path / "hq.mp4", _click_track(1.0, 0.5), "high_quality", size=128)
    settings = _x264_settings(path)
    assert "rc=crf" in settings and "crf=18.0" in settings
    assert "vbv_maxrate=6000" in settings
    assert "subme=8" in settings and "ref=5" in settings and "rc_lookahead=50" in settings  # preset=slow
    with av.open(str(path)) as container:
        assert container.streams.video[0].codec_context.pix_fmt == "yuv420p"


def test_odd_sizes_are_made_even(tmp_path):
    audio = _click_track(0.5, 0.1)
    with Mp4Writer(tmp_path / "odd.mp4", fps=FPS, width=101, height=75, mode="real_time", audio=audio, use_nvenc=False) as writer:
        for _ in range(13):
            writer.write(np.zeros((75, 101, 3), np.uint8))
    with av.open(str(tmp_path / "odd.mp4")) as container:
        assert (container.streams.video[0].width, container.streams.video[0].height) == (100, 74)


def test_failed_render_leaves_no_file(tmp_path):
    path = tmp_path / "aborted.mp4"
    with pytest.raises(RuntimeError):
        with Mp4Writer(path, fps=FPS, width=64, height=64, mode="real_time", audio=_click_track(1, 0.1), use_nvenc=False) as writer:
            writer.write(np.zeros((64, 64, 3), np.uint8))
            raise RuntimeError("engine crashed")
    assert not path.exists()


def test_streamed_audio_muxes_the_same_bytes_as_audio_in_memory(tmp_path):
    """open_audio's track, decoded again from the file in chunks while the video is written, gives the file
    the in-memory track gives (so the same A/V alignment), and its click still plays at 1.000 s."""
    from engines.media_audio import load_audio, open_audio, write_wav

    wav = write_wav(tmp_path / "click.wav", _click_track(3.0, 1.0).samples)
    streamed = open_audio(wav)
    assert streamed.n_samples == load_audio(wav).n_samples == 3 * OUTPUT_RATE
    in_memory = _write(tmp_path / "memory.mp4", load_audio(wav), "real_time", size=64)
    from_file = _write(tmp_path / "streamed.mp4", streamed, "real_time", size=64)
    assert from_file.read_bytes() == in_memory.read_bytes()
    with av.open(str(from_file)) as container:
        decoded = np.concatenate([frame.to_ndarray().reshape(-1) for frame in container.decode(audio=0)])
    assert abs(np.argmax(np.abs(decoded) > 0.2) / OUTPUT_RATE - 1.0) < 0.003


def test_streamed_analysis_track_equals_the_whole_signal_resample(tmp_path):
    """The 16 kHz track open_audio builds block by block is the one resample_poly gives on the whole signal
    (here 25 s: blocks of 10 s with their edges)."""
    from engines.media_audio import load_audio, open_audio, write_wav

    rng = np.random.default_rng(3)
    wav = write_wav(tmp_path / "noise.wav", (0.3 * rng.standard_normal(25 * OUTPUT_RATE + 7)).astype(np.float32))
    assert np.array_equal(open_audio(wav).analysis_pcm(), load_audio(wav).analysis_pcm())


def test_audio_bit_rate_follows_the_mode(tmp_path):
    """real_time sends speech at 96 kb/s (AAC's cost grows with the bit rate), high_quality at 128 kb/s."""
    from tests.media_fixtures import speech_samples

    speech = Audio(speech_samples()[: 5 * OUTPUT_RATE])
    for mode, expected in (("real_time", 96_000), ("high_quality", 128_000)):
        assert PROFILES[mode].audio_bit_rate == expected
        path = _write(tmp_path / f"{mode}.mp4", speech, mode, size=64, noise=False)
        with av.open(str(path)) as container:
            stream = container.streams.audio[0]
            sent = sum(packet.size for packet in container.demux(stream)) * 8
            seconds = float(stream.duration * stream.time_base)
        assert 0.8 * expected < sent / seconds < 1.15 * expected, (mode, sent / seconds)
