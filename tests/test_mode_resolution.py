"""Quality mode -> engine, from hardware and checkpoints present; settings from the seed's variables."""

from pathlib import Path
from typing import Iterator

import numpy as np
import pytest

from engines.base import Engine, EngineJob
from engines.hardware import Hardware
from engines.landmark_warp import LandmarkWarpEngine
from engines.registry import EngineRegistry
from engines.settings import ModelSettings
from schemas.errors import EngineUnavailable, InvalidParameter, SettingsError

CPU = Hardware(cuda=False)
GPU = Hardware(cuda=True)


class CheckpointEngine(Engine):
    """A test double of a neural engine: availability comes from the real base-class checks."""

    def __init__(self, settings, hardware, name, mode, needs_gpu, checkpoint):
        super().__init__(settings, hardware)
        self.name, self.mode, self.needs_gpu, self._checkpoint = name, mode, needs_gpu, checkpoint
        self.description = name

    def required_checkpoints(self):
        return [self._checkpoint(self.settings)]

    def render(self, job: EngineJob) -> Iterator[np.ndarray]:
        raise AssertionError("not rendered in these tests")


def _settings(tmp_path, **env):
    return ModelSettings.from_env({"MODEL_ROOT": str(tmp_path / "models"), **env})


def _engines(settings, hardware, with_hq=True):
    """A registry with the built-in engine, a wav2lip double and (optionally) a high_quality double."""
    engines = [LandmarkWarpEngine(settings, hardware),
               CheckpointEngine(settings, hardware, "wav2lip", "real_time", False, lambda s: s.wav2lip_ckpt)]
    if with_hq:
        engines.append(CheckpointEngine(settings, hardware, "fomm-diff2lip-gfpgan", "high_quality", True,
                                        lambda s: s.diff2lip_ckpt_dir / "checkpoint.pt"))
    return EngineRegistry(settings, hardware, engines)


def resolve(mode, engine, settings, hardware, registry=None):
    return (registry or _engines(settings, hardware)).resolve(mode, engine)


def _touch(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"weights")


def test_fresh_machine_uses_builtin_and_says_why(tmp_path, caplog):
    caplog.set_level("INFO")
    chosen = resolve("auto", None, _settings(tmp_path), CPU)
    assert chosen.engine.name == "landmark-warp" and chosen.mode == "real_time"
    assert "models download" in chosen.why and "GPU" in chosen.why
    assert "landmark-warp" in caplog.text


def test_fallback_reason_names_the_download_once_with_the_real_engines(tmp_path):
    chosen = EngineRegistry(_settings(tmp_path), CPU).resolve("auto", None)
    assert chosen.engine.name == "landmark-warp"
    assert "wav2lip" in chosen.why and chosen.why.count("models download") == 1, chosen.why


def test_auto_picks_neural_real_time_when_its_checkpoint_is_there(tmp_path):
    settings = _settings(tmp_path)
    _touch(settings.wav2lip_ckpt)
    chosen = resolve("auto", None, settings, CPU)
    assert chosen.engine.name == "wav2lip" and chosen.mode == "real_time"


def _touch_hq(settings):
    _touch(settings.fomm_ckpt_dir / "vox-cpk.pth.tar")
    _touch(settings.diff2lip_ckpt_dir / "checkpoint.pt")
    _touch(settings.gfpgan_ckpt)


def test_auto_picks_high_quality_with_gpu_and_all_three_checkpoints(tmp_path):
    settings = _settings(tmp_path)
    _touch_hq(settings)
    assert resolve("auto", None, settings, GPU).mode == "high_quality"
    # Same checkpoints, no GPU: falls back to the real_time path.
    assert resolve("auto", None, settings, CPU).engine.name == "landmark-warp"
    # Without GFPGAN, auto does not pick high_quality either, and high_quality names the file.
    settings.gfpgan_ckpt.unlink()
    assert resolve("auto", None, settings, GPU).mode == "real_time"
    with pytest.raises(EngineUnavailable, match="GFPGAN_CKPT"):
        resolve("high_quality", None, settings, GPU)


def test_high_quality_without_gpu_names_what_is_missing(tmp_path):
    with pytest.raises(EngineUnavailable) as error:
        resolve("high_quality", None, _settings(tmp_path), CPU)
    message = str(error.value)
    assert "GPU" in message and "FOMM_CKPT_DIR" in message and "DIFF2LIP_CKPT_DIR" in message
    assert "GFPGAN_CKPT" in message


def test_high_quality_with_gpu_but_no_checkpoints(tmp_path):
    with pytest.raises(EngineUnavailable) as error:
        resolve("high_quality", None, _settings(tmp_path), GPU)
    assert "GPU" not in str(error.value) and "FOMM" in str(error.value)


def test_high_quality_in_a_build_without_its_engine(tmp_path):
    settings = _settings(tmp_path)
    _touch_hq(settings)
    with pytest.raises(EngineUnavailable, match="high_quality mode .* is not built into this version yet"):
        resolve("high_quality", None, settings, GPU, _engines(settings, GPU, with_hq=False))


def test_real_time_falls_back_to_builtin_on_cpu(tmp_path):
    assert resolve("real_time", None, _settings(tmp_path), CPU).engine.name == "landmark-warp"


def test_explicit_engine(tmp_path):
    settings = _settings(tmp_path)
    assert resolve(None, "landmark-warp", settings, CPU).engine.name == "landmark-warp"
    with pytest.raises(InvalidParameter, match="Unknown engine 'wav2lip2'.*landmark-warp"):
        resolve(None, "wav2lip2", settings, CPU)
    with pytest.raises(EngineUnavailable, match="wav2lip cannot run here: .*checkpoints are missing"):
        resolve(None, "wav2lip", settings, CPU)


def test_default_mode_from_environment(tmp_path):
    settings = _settings(tmp_path, DEFAULT_QUALITY_MODE="high_quality")
    with pytest.raises(EngineUnavailable, match="high_quality"):
        resolve(None, None, settings, CPU)


def test_unknown_mode(tmp_path):
    with pytest.raises(InvalidParameter, match="Unknown quality mode 'fast'"):
        resolve("fast", None, _settings(tmp_path), CPU)


def test_settings_follow_seed_variables(tmp_path):
    settings = ModelSettings.from_env({
        "MODEL_ROOT": str(tmp_path / "root"),
        "WAV2LIP_CKPT": str(tmp_path / "w.pth"),
        "FOMM_CKPT_DIR": str(tmp_path / "fomm"),
    })
    assert settings.wav2lip_ckpt == tmp_path / "w.pth"
    assert settings.fomm_ckpt_dir == tmp_path / "fomm"
    assert settings.sadtalker_ckpt_dir == tmp_path / "root" / "sadtalker"
    assert settings.default_quality_mode == "auto"


@pytest.mark.parametrize("env,needle", [
    ({"DEFAULT_QUALITY_MODE": "best"}, "DEFAULT_QUALITY_MODE"),
    ({"MAX_IMAGE_PIXELS": "lots"}, "MAX_IMAGE_PIXELS"),
    ({"MAX_AUDIO_SECONDS": "-1"}, "MAX_AUDIO_SECONDS must be at least"),
    # float() parses these; NaN passes the minimum check and inf became an OverflowError later.
    ({"MAX_AUDIO_SECONDS": "nan"}, "^MAX_AUDIO_SECONDS='nan' is not a finite number.$"),
    ({"MAX_AUDIO_SECONDS": "inf"}, "^MAX_AUDIO_SECONDS='inf' is not a finite number.$"),
    ({"MAX_AUDIO_SECONDS": "-Infinity"}, "^MAX_AUDIO_SECONDS='-Infinity' is not a finite number.$"),
])
def test_bad_settings_are_named(env, needle):
    with pytest.raises(SettingsError, match=needle):
        ModelSettings.from_env(env)


def test_an_engine_with_a_mode_it_does_not_serve_is_refused_not_silently_changed(tmp_path):
    settings = _settings(tmp_path)
    with pytest.raises(InvalidParameter, match="landmark-warp serves real_time, not high_quality"):
        resolve("high_quality", "landmark-warp", settings, CPU)
    assert resolve("auto", "landmark-warp", settings, CPU).mode == "real_time"
    assert resolve("real_time", "landmark-warp", settings, CPU).engine.name == "landmark-warp"
    # The server's DEFAULT_QUALITY_MODE does not override an engine the request names.
    hq_default = _settings(tmp_path, DEFAULT_QUALITY_MODE="high_quality")
    assert resolve(None, "landmark-warp", hq_default, CPU).engine.name == "landmark-warp"


def test_this_build_registers_high_quality_and_says_what_it_lacks(tmp_path):
    """The real registry: high_quality names each missing checkpoint, and the GPU only when there is none."""
    with pytest.raises(EngineUnavailable) as error:
        EngineRegistry(_settings(tmp_path), GPU).resolve("high_quality", None)
    message = str(error.value)
    assert "GPU" not in message and all(v in message for v in ("FOMM_CKPT_DIR", "DIFF2LIP_CKPT_DIR", "GFPGAN_CKPT"))
    with pytest.raises(EngineUnavailable, match="NVIDIA GPU"):
        EngineRegistry(_settings(tmp_path), CPU).resolve("high_quality", None)
    fallback = EngineRegistry(_settings(tmp_path), CPU).resolve("auto", None)
    assert fallback.engine.name == "landmark-warp" and "high_quality needs" in fallback.why


def test_hq_allow_cpu_runs_high_quality_on_a_cpu_when_asked_but_auto_never_picks_it(tmp_path):
    settings = _settings(tmp_path, HQ_ALLOW_CPU="1")
    _touch_hq(settings)
    engines = EngineRegistry(settings, CPU)
    chosen = engines.resolve("high_quality", None)
    assert chosen.engine.name == "fomm-diff2lip-gfpgan" and "HQ_ALLOW_CPU" in chosen.why
    assert engines.resolve(None, "fomm-diff2lip-gfpgan").mode == "high_quality"
    assert engines.resolve("auto", None).engine.name == "landmark-warp"
    with pytest.raises(EngineUnavailable, match="HQ_ALLOW_CPU"):  # without the setting, the error says how
        EngineRegistry(_settings(tmp_path), CPU).resolve(None, "fomm-diff2lip-gfpgan")


def test_registry_builds_each_engine_once(tmp_path):
    engines = EngineRegistry(_settings(tmp_path), CPU)
    first = engines.resolve("real_time", None).engine
    assert engines.resolve("auto", None).engine is first is engines.engines["landmark-warp"]
    assert {e["name"] for e in engines.describe()} == {"landmark-warp", "sadtalker", "wav2lip", "fomm-diff2lip-gfpgan"}
