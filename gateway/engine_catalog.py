"""The engines this build contains and whether each can run on this machine (REST /engines, MCP list_engines)."""

from __future__ import annotations

from typing import Any

from engines.registry import EngineRegistry


def engine_catalog(engines: EngineRegistry) -> list[dict[str, Any]]:
    """Each engine's name, mode, description, needsGpu, available (with the reason when not) and, once loaded,
    what it holds; sorted by name."""
    return sorted(engines.describe(), key=lambda entry: entry["name"])
