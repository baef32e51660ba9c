"""`avatar-renderer bench --wav2lip` on a short clip: it writes the figures it claims."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("torch")


def test_wav2lip_bench_writes_model_and_end_to_end_figures(tmp_path, monkeypatch, capsys):
    import cli.bench_wav2lip as bench
    from cli.main import main

    monkeypatch.setattr(bench, "BATCHES", (1, 2))
    original = bench.model_speed
    monkeypatch.setattr(bench, "model_speed", lambda runner: original(runner, bench.BATCHES, min_seconds=0.05))
    out = tmp_path / "w.json"
    assert main(["bench", "--wav2lip", "--seconds", "0.4", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    speeds = report["model_frames_per_second"]["torch-cpu"]
    assert set(speeds) == {"1", "2"} and all(v > 0 for v in speeds.values())
    e2e = report["end_to_end_0.4s_512"]
    for base in ("still", "landmark-warp"):
        assert e2e[base]["frames"] == 10
        assert e2e[base]["render_seconds"] > e2e[base]["engine_seconds"] > 0
