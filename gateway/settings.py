"""The front doors' own settings (REST gateway), built once by the entry point from the environment it passes in.

Input limits and allowed sources are not here: they are worker.security.SecurityPolicy, shared with the
worker so both refuse the same things.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

from engines.settings import int_env

# A render request is a few hundred bytes of JSON; 64 KiB leaves ample room and refuses floods early.
DEFAULT_MAX_JSON_BODY_BYTES = 64 * 1024


@dataclass(frozen=True)
class GatewaySettings:
    """API_KEYS (comma-separated; empty: no key needed) and MAX_JSON_BODY_BYTES (limit of JSON request bodies)."""

    api_keys: frozenset[str] = field(default_factory=frozenset)
    max_json_body_bytes: int = DEFAULT_MAX_JSON_BODY_BYTES

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> "GatewaySettings":
        keys = frozenset(k.strip() for k in env.get("API_KEYS", "").split(",") if k.strip())
        return cls(
            api_keys=keys,
            max_json_body_bytes=int_env(dict(env), "MAX_JSON_BODY_BYTES", DEFAULT_MAX_JSON_BODY_BYTES,
                                        minimum=1024, unit="bytes"),
        )
