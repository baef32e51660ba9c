"""Versioned JSON Schemas of the events on the wire, with example payloads.

`load(name)` returns the schema dict for e.g. "render.requested.v1"; `example(name)` its example payload.
"""

from __future__ import annotations

import functools
import json
from importlib import resources

EVENT_TYPES = ("render.requested.v1", "render.completed.v1", "render.failed.v1", "render.status.v1")


@functools.lru_cache(maxsize=None)
def load(name: str) -> dict:
    return json.loads(resources.files(__name__).joinpath(f"{name}.json").read_text())


def example(name: str, variant: str = "") -> dict:
    filename = f"{name}.{variant}.json" if variant else f"{name}.json"
    return json.loads(resources.files(__name__).joinpath("examples", filename).read_text())
