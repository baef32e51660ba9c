"""The engines this build contains and whether each can run on this machine (REST /engines, MCP list_engines)."""

from __future__ import annotations

from typing import Any

from engines.hardware import detect
from engines.registry import all_engines
from engines.settings import ModelSettings


def engine_catalog() -> list[dict[str, Any]]:
    settings = ModelSettings.from_env()
    hardware = detect()
    catalog = []
    for name, engine in sorted(all_engines().items()):
        availability = engine.availability(settings, hardware)
        catalog.append({
            "name": name,
            "mode": engine.mode,
            "description": engine.description,
            "needsGpu": engine.needs_gpu,
            "available": availability.ok,
            "reason": availability.reason or None,
        })
    return catalog
