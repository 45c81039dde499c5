"""The OpenAPI document, built once when the app is created and served as ready bytes, and `/docs`,
a Swagger UI page whose script, style sheet and icon come from the installed `fastapi-offline`
package, so the page works without internet and loads nothing from a CDN.

The document is fixed by the task files, so building it per request would only cost time (and a
large schema would cost it on every unauthenticated GET).
"""

from __future__ import annotations

import importlib.resources
import json
from collections.abc import Container
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse, Response
from starlette.staticfiles import StaticFiles

from promptcast.server.problems import PROBLEM_SCHEMA
from promptcast.server.routes import problem_doc

__all__ = ["ASSETS_PATH", "DOCS_PATH", "OPENAPI_PATH", "build", "install"]

OPENAPI_PATH = "/openapi.json"
DOCS_PATH = "/docs"
ASSETS_PATH = "/docs-assets"
# Swagger UI's files, shipped by fastapi-offline (part of the `server` extra); importing this
# module without it fails, so `promptcast serve` names the missing extra.
_ASSETS = importlib.resources.files("fastapi_offline") / "static"

_FASTAPI_422 = "#/components/schemas/HTTPValidationError"


def build(
    app: FastAPI,
    *,
    secured: bool,
    host_checked: bool,
    open_paths: Container[str],
    probe_paths: Container[str],
) -> dict[str, Any]:
    """The document of `app`'s routes, with the Problem schema, and on each operation the bearer
    requirement and the 401 (when `secured`) and the 421 (when Host names are checked)."""
    schema = get_openapi(
        title=app.title, version=app.version, description=app.description, routes=app.routes
    )
    _drop_fastapi_422(schema)
    components = schema.setdefault("components", {})
    components.setdefault("schemas", {})["Problem"] = PROBLEM_SCHEMA
    if secured:
        components["securitySchemes"] = {"bearerAuth": {"type": "http", "scheme": "bearer"}}
    for path, item in schema.get("paths", {}).items():
        for operation in item.values():
            responses = operation.setdefault("responses", {})
            if secured and path not in open_paths:
                operation["security"] = [{"bearerAuth": []}]
                responses["401"] = problem_doc("Missing or wrong bearer token.")
            if host_checked and path not in probe_paths:
                responses["421"] = problem_doc(
                    "The Host header names neither loopback nor a host in PROMPTCAST_ALLOWED_HOSTS."
                )
    return schema


def _drop_fastapi_422(schema: dict[str, Any]) -> None:
    """Remove the 422 `HTTPValidationError` FastAPI documents for path parameters: a path
    parameter here is any string, and the real 422s are problem details, documented as such."""
    for item in schema.get("paths", {}).values():
        for operation in item.values():
            responses = operation.get("responses", {})
            content = responses.get("422", {}).get("content", {})
            if content.get("application/json", {}).get("schema", {}).get("$ref") == _FASTAPI_422:
                del responses["422"]
    schemas = schema.get("components", {}).get("schemas", {})
    text = json.dumps(schema)
    for name in ("HTTPValidationError", "ValidationError"):
        if f'"#/components/schemas/{name}"' not in text:
            schemas.pop(name, None)


def install(app: FastAPI, schema: dict[str, Any]) -> None:
    """Serve `schema` at /openapi.json (bytes made once), Swagger UI at /docs and its assets.

    Every URL on the page is relative, so it works under any root path (a mounted app, a proxy
    prefix) without building the page per request.
    """
    app.openapi = lambda: schema  # type: ignore[method-assign]
    document = json.dumps(schema, ensure_ascii=False, separators=(",", ":")).encode()
    page = get_swagger_ui_html(
        openapi_url=OPENAPI_PATH.lstrip("/"),
        title=f"{app.title} - Swagger UI",
        swagger_js_url=f"{ASSETS_PATH.lstrip('/')}/swagger-ui-bundle.js",
        swagger_css_url=f"{ASSETS_PATH.lstrip('/')}/swagger-ui.css",
        swagger_favicon_url=f"{ASSETS_PATH.lstrip('/')}/favicon.png",
        oauth2_redirect_url=None,
        swagger_ui_parameters={"validatorUrl": None},  # no call to validator.swagger.io
    ).body

    async def openapi_document() -> Response:
        return Response(document, media_type="application/json")

    async def swagger_ui() -> HTMLResponse:
        return HTMLResponse(page)

    app.add_api_route(OPENAPI_PATH, openapi_document, methods=["GET"], include_in_schema=False)
    app.add_api_route(DOCS_PATH, swagger_ui, methods=["GET"], include_in_schema=False)
    app.mount(ASSETS_PATH, StaticFiles(directory=str(_ASSETS)), name="docs-assets")
