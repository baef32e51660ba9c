"""Property-based run of the REST gateway's OpenAPI spec (schemathesis, in-process ASGI): no input ever gets a 5xx,
and responses match the documented status codes and schemas."""

from __future__ import annotations

import tempfile
from pathlib import Path

import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import positive_data_acceptance

from gateway.rest import create_app
from gateway.settings import GatewaySettings
from tests.gateway_fixtures import in_process_backend
from worker.security import SecurityPolicy


API_KEY = "schemathesis-key"


def _app(root: Path):
    root.mkdir(parents=True, exist_ok=True)
    env = {"ALLOWED_INPUT_ROOTS": str(root / "inputs"), "UPLOAD_DIR": str(root / "uploads"),
           "MAX_IMAGE_BYTES": "200000", "MAX_AUDIO_BYTES": "200000"}
    (root / "inputs").mkdir(exist_ok=True)
    return create_app(in_process_backend(env, root / "renders"), SecurityPolicy.from_env(env),
                      GatewaySettings(api_keys=frozenset({API_KEY})))


# With API_KEYS set the spec itself needs the key.
schema = schemathesis.openapi.from_asgi("/openapi.json", _app(Path(tempfile.mkdtemp(prefix="schemathesis-"))),
                                        headers={"X-API-Key": API_KEY})


@schema.parametrize()
@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_server_errors_and_documented_responses(case) -> None:
    # Schema-valid bodies may still name files the server does not have (a 422 with a reason), so the
    # "positive data is accepted" check does not apply; every other default check does.
    case.call_and_validate(headers={"X-API-Key": API_KEY}, excluded_checks=[positive_data_acceptance])
