"""The front doors' own settings (REST gateway), built once by the entry point from the environment it passes in.

Input limits and allowed sources are not here: they are worker.security.SecurityPolicy, shared with the
worker so both refuse the same things.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

from engines.settings import int_env
from schemas.errors import SettingsError

# A render request is a few hundred bytes of JSON; 64 KiB leaves ample room and refuses floods early.
DEFAULT_MAX_JSON_BODY_BYTES = 64 * 1024
# Presigned S3 download URLs: one hour by default; SigV4 caps a presigned URL at 7 days.
DEFAULT_DOWNLOAD_URL_EXPIRY_SECONDS = 3600
MAX_DOWNLOAD_URL_EXPIRY_SECONDS = 7 * 24 * 3600


@dataclass(frozen=True)
class GatewaySettings:
    """API_KEYS (comma-separated; empty: no key needed), MAX_JSON_BODY_BYTES (limit of JSON request bodies) and
    DOWNLOAD_URL_EXPIRY_SECONDS (how long a presigned s3:// download URL works)."""

    api_keys: frozenset[str] = field(default_factory=frozenset)
    max_json_body_bytes: int = DEFAULT_MAX_JSON_BODY_BYTES
    download_url_expiry_seconds: int = DEFAULT_DOWNLOAD_URL_EXPIRY_SECONDS

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> "GatewaySettings":
        keys = frozenset(k.strip() for k in env.get("API_KEYS", "").split(",") if k.strip())
        expiry = int_env(dict(env), "DOWNLOAD_URL_EXPIRY_SECONDS", DEFAULT_DOWNLOAD_URL_EXPIRY_SECONDS, minimum=1,
                         unit="seconds")
        if expiry > MAX_DOWNLOAD_URL_EXPIRY_SECONDS:
            raise SettingsError(f"DOWNLOAD_URL_EXPIRY_SECONDS={expiry} is longer than a presigned URL may live "
                                f"({MAX_DOWNLOAD_URL_EXPIRY_SECONDS} seconds, 7 days).")
        return cls(
            api_keys=keys,
            max_json_body_bytes=int_env(dict(env), "MAX_JSON_BODY_BYTES", DEFAULT_MAX_JSON_BODY_BYTES,
                                        minimum=1024, unit="bytes"),
            download_url_expiry_seconds=expiry,
        )
