"""The REST gateway's API docs: /openapi.json and a Swagger UI at /docs that works offline and with API keys.

FastAPI's own /docs loads Swagger UI from a CDN (a blank page offline) and leaves /docs and /openapi.json
open even when API_KEYS is set. Here the Swagger UI files come from the `fastapi-offline` package (served
under /docs/assets), and when keys are configured /openapi.json takes the same X-API-Key check as the API.
The /docs page itself is then only a key prompt holding nothing about the API: the key typed there is sent
as the X-API-Key header with the spec request and with every "Try it out" call (Authorize shows it).
"""

from __future__ import annotations

import html
import json
from importlib.resources import files
from typing import Any, Sequence

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles

ASSETS_PATH = "/docs/assets"
SPEC_PATH = "/openapi.json"
KEY_HEADER = "X-API-Key"
KEY_SCHEME = "APIKeyHeader"  # the security scheme's name in the spec (FastAPI names it after the class)

_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{title} - API docs</title>
<link rel="stylesheet" href="{assets}/swagger-ui.css">
<link rel="icon" href="{assets}/favicon.png">
</head>
<body>
{key_form}
<div id="swagger-ui"></div>
<script src="{assets}/swagger-ui-bundle.js"></script>
<script>
function show(key) {{
  const ui = SwaggerUIBundle({{
    url: {spec}, dom_id: "#swagger-ui", validatorUrl: null,
    requestInterceptor: (request) => {{ if (key) request.headers[{header}] = key; return request; }},
    onComplete: () => {{ if (key) ui.preauthorizeApiKey({scheme}, key); }},
  }});
}}
{start}
</script>
</body>
</html>
"""

_KEY_FORM = """<form id="key-form" style="font-family: sans-serif; margin: 2em">
<label>This API needs a key (X-API-Key): <input id="key" type="password" autocomplete="off" autofocus></label>
<button type="submit">Show the API</button>
</form>"""

_START_WITH_KEY = """document.getElementById("key-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const key = document.getElementById("key").value;
  document.getElementById("key-form").remove();
  show(key);
});"""


def add_docs(app: FastAPI, auth: Sequence[Any], keys_required: bool) -> None:
    """Serve /openapi.json (behind `auth`), /docs and its assets. Build the app with openapi_url=None,
    docs_url=None and redoc_url=None (ReDoc cannot send the key header, so it is not offered)."""
    app.mount(ASSETS_PATH, StaticFiles(directory=str(files("fastapi_offline") / "static")), name="docs-assets")

    @app.get(SPEC_PATH, include_in_schema=False, dependencies=list(auth))
    def openapi_spec() -> JSONResponse:
        return JSONResponse(app.openapi())

    @app.get("/docs", include_in_schema=False)
    def docs(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        page = _PAGE.format(
            title=html.escape(app.title), assets=root + ASSETS_PATH, spec=json.dumps(root + SPEC_PATH),
            header=json.dumps(KEY_HEADER), scheme=json.dumps(KEY_SCHEME),
            key_form=_KEY_FORM if keys_required else "", start=_START_WITH_KEY if keys_required else "show(null);",
        )
        return HTMLResponse(page)
