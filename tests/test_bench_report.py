"""Bench variants write where --out says, but never over `bench`'s own default report."""

import json
from pathlib import Path

from cli.bench_report import write_report


def test_variant_reports_go_to_out_but_never_over_the_default_bench_file(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert write_report({"a": 1}, None, "bench_hq.json") == Path("out/bench_hq.json")
    assert write_report({"a": 2}, "out/bench.json", "bench_hq.json") == Path("out/bench_hq.json")
    assert json.loads(Path("out/bench_hq.json").read_text()) == {"a": 2}
    assert not Path("out/bench.json").exists()
    chosen = write_report({"b": 3}, str(tmp_path / "deep" / "mine.json"), "bench_hq.json")
    assert json.loads(chosen.read_text()) == {"b": 3}
    assert '"b": 3' in capsys.readouterr().out
