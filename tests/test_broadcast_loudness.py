"""Loudness (issue 12): BS.1770 measurement against pyloudnorm, and normalisation to each target checked on the
decoded AAC of a written MP4 (integrated loudness within 1 LU, true peak under the ceiling)."""

from __future__ import annotations

from fractions import Fraction

import av
import numpy as np
import pyloudnorm
import pytest
from scipy.signal import resample_poly

from engines.encoder import Mp4Writer
from engines.loudness import LoudnessTarget, MeteredAudio, level, measure, metered_report, prepare
from engines.media_audio import Audio
from schemas.errors import InvalidParameter
from tests.media_fixtures import speech_samples


def true_peak_db(samples: np.ndarray) -> float:
    """The reference: the largest magnitude of the whole signal upsampled 4x."""
    return float(20 * np.log10(np.max(np.abs(resample_poly(samples.astype(np.float64), 4, 1)))))


def chunked(samples: np.ndarray, sizes=(997, 4096, 31, 48000)):
    at, i = 0, 0
    while at < samples.size:
        yield samples[at : at + sizes[i % len(sizes)]]
        at += sizes[i % len(sizes)]
        i += 1


def test_the_streamed_meter_equals_pyloudnorm_and_the_whole_signal_true_peak():
    samples = speech_samples()
    measured = measure(chunked(samples))
    assert measured.integrated == pytest.approx(pyloudnorm.Meter(48_000).integrated_loudness(samples.astype(np.float64)), abs=0.01)
    assert measured.true_peak == pytest.approx(true_peak_db(samples), abs=0.01)
    quieter = measure(chunked(samples * 0.1))  # -20 dB: loudness and peak follow exactly
    assert quieter.integrated == pytest.approx(measured.integrated - 20, abs=0.01)
    assert quieter.true_peak == pytest.approx(measured.true_peak - 20, abs=0.01)


def test_levelling_does_not_depend_on_how_the_track_is_cut_into_chunks():
    samples = speech_samples()[: 3 * 48_000]
    whole = np.concatenate(list(level([samples], 12.0, -1.0)))
    pieces = np.concatenate(list(level(chunked(samples), 12.0, -1.0)))
    assert whole.shape == samples.shape
    np.testing.assert_allclose(whole, pieces, atol=1e-6)


def decoded_audio(path) -> np.ndarray:
    with av.open(str(path)) as container:
        return np.concatenate([f.to_ndarray().reshape(-1) for f in container.decode(audio=0)]).astype(np.float64)


@pytest.mark.parametrize("target", ["ebu-r128", "atsc-a85", "web", "-18"])
def test_normalised_mp4_meets_the_target_within_1_lu_and_stays_under_the_ceiling(tmp_path, target):
    audio = Audio(speech_samples())
    wanted = LoudnessTarget.parse(target)
    leveled, report = prepare(audio, wanted)
    path = tmp_path / "out.mp4"
    fps = Fraction(25)
    frames = int(np.ceil(audio.duration * fps))
    with Mp4Writer(path, fps=fps, width=64, height=64, mode="real_time", audio=leveled) as writer:
        for _ in range(frames):
            writer.write(np.zeros((64, 64, 3), np.uint8))
    decoded = decoded_audio(path)
    delivered = pyloudnorm.Meter(48_000).integrated_loudness(decoded)
    assert abs(delivered - wanted.lufs) <= 1.0, (target, delivered)
    assert true_peak_db(decoded) < wanted.true_peak, (target, true_peak_db(decoded))
    assert report["input"]["integratedLufs"] == pytest.approx(-21.16, abs=0.05)
    assert abs(report["output"]["integratedLufs"] - wanted.lufs) <= 1.0
    assert report["target"]["integratedLufs"] == wanted.lufs


def test_without_a_target_the_input_is_measured_and_left_alone():
    audio = Audio(speech_samples())
    same, report = prepare(audio, None)
    assert same is audio
    assert report["input"] == report["output"]
    assert "target" not in report


def test_a_render_without_a_target_is_measured_as_the_encoder_reads_it(tmp_path, monkeypatch):
    """No measuring pass before the first frame: the report comes from the track the encoder read, and equals
    prepare's (which measures it on its own)."""
    from engines.media_audio import open_audio, write_wav

    audio = open_audio(write_wav(tmp_path / "speech.wav", speech_samples()))
    _, expected = prepare(audio, None)
    passes = []
    original = type(audio).output_chunks
    monkeypatch.setattr(type(audio), "output_chunks", lambda self: passes.append(1) or original(self))
    metered = MeteredAudio(audio)
    frames = int(np.ceil(audio.duration * 25))
    with Mp4Writer(tmp_path / "out.mp4", fps=Fraction(25), width=64, height=64, mode="real_time", audio=metered) as writer:
        for _ in range(frames):
            writer.write(np.zeros((64, 64, 3), np.uint8))
    assert metered_report(metered) == expected
    assert len(passes) == 1  # the encoder's pass was the measuring pass


def test_targets_presets_numbers_and_refusals():
    assert LoudnessTarget.parse("EBU-R128") == LoudnessTarget(-23.0, -1.0, "ebu-r128")
    assert LoudnessTarget.parse("atsc-a85").lufs == -24.0
    assert LoudnessTarget.parse("web", -2).true_peak == -2.0
    assert LoudnessTarget.parse(-20).to_wire() == {"target": -20.0, "truePeak": -1.0}
    assert LoudnessTarget.from_wire({"target": "ebu-r128", "truePeak": -3}) == LoudnessTarget(-23.0, -3.0, "ebu-r128")
    for bad in ("loud", -60, 0, float("nan"), None):
        with pytest.raises(InvalidParameter):
            LoudnessTarget.parse(bad)
    with pytest.raises(InvalidParameter):
        LoudnessTarget.parse("web", 3)


@pytest.mark.parametrize("clip", ["short", "faint noise", "short and loud"])
def test_loudness_that_cannot_be_measured_gets_no_gain(tmp_path, clip):
    """Under 0.4 s (no 400 ms gating block) or under the -70 LUFS gate there is no integrated loudness to bring
    to the target: no gain (not MAX_GAIN_DB), reported as such, and the MP4's audio is the input's; the
    true-peak ceiling still holds."""
    from engines.media_audio import open_audio, write_wav

    if clip == "faint noise":
        samples = (np.random.default_rng(0).normal(0, 1e-4, 2 * 48_000)).astype(np.float32)  # about -66 dBTP
    else:
        samples = speech_samples()[: int(0.3 * 48_000)]
        samples = samples / np.max(np.abs(samples)) * (0.99 if clip == "short and loud" else 0.2)
    audio = open_audio(write_wav(tmp_path / "in.wav", samples))
    leveled, report = prepare(audio, LoudnessTarget.parse("web"))
    assert report["gainDb"] == 0.0
    assert report["input"]["integratedLufs"] is None and report["output"]["integratedLufs"] is None
    assert report["output"]["truePeakDbtp"] <= -1.0
    path = tmp_path / "out.mp4"
    with Mp4Writer(path, fps=Fraction(25), width=64, height=64, mode="real_time", audio=leveled) as writer:
        for _ in range(int(np.ceil(audio.duration * 25))):
            writer.write(np.zeros((64, 64, 3), np.uint8))
    decoded_peak = np.max(np.abs(decoded_audio(path)))
    if clip == "short and loud":  # limited to the ceiling (0.5 dB under it), and no more than that
        assert report["output"]["truePeakDbtp"] == pytest.approx(-1.5, abs=0.3)
        assert 0.6 < decoded_peak < 10 ** (-1.0 / 20)
    else:  # left as it came
        assert report["output"] == report["input"]
        np.testing.assert_array_equal(np.concatenate(list(leveled.output_chunks())),
                                      np.concatenate(list(audio.output_chunks())))
        assert decoded_peak < 2 * np.max(np.abs(samples))
