"""Where a bench variant writes its JSON: --out, except that bench's own default (out/bench.json, the built-in
engine's figures) is swapped for the variant's file, so `bench --hq` never overwrites `bench`'s report."""

from __future__ import annotations

import json
from pathlib import Path

BENCH_DEFAULT = Path("out/bench.json")


def write_report(report: dict, out: str | None, variant_file: str) -> Path:
    """Write ``report`` as indented JSON, print it, and return the path it went to."""
    path = Path(out) if out else Path("out") / variant_file
    if path == BENCH_DEFAULT:
        path = Path("out") / variant_file
    text = json.dumps(report, indent=2)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text + "\n")
    print(text)
    return path
