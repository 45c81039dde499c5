"""Every task an HTTP endpoint: `create_app(registry)` builds a FastAPI app, `promptcast serve`
runs it on uvicorn.

Routes are generated from the task specs, so `/openapi.json` shows each task's own input and output
schemas and any language can call a task:

- `POST /v1/tasks/{name}` with the inputs as a JSON object → the output, usage, model, version,
  template hash and attempts;
- `GET /v1/tasks`, `GET /v1/tasks/{name}` (spec and JSON schemas), `GET /healthz`, `GET /readyz`,
  `GET /metrics` (Prometheus), `/docs` (Swagger UI, served from installed files).

Errors are RFC 9457 problem details (`promptcast.server.problems` lists the statuses). Needs the
`server` extra: `pip install 'promptcast[server]'`.

The modules: `app` (the factory), `routes` and `calls` (the handlers), `gate` (request ids, Host
check, tokens, body limit, the log line), `hosts`, `problems`, `metrics`, `logs`, `runner`
(`serve` on uvicorn).
"""

from __future__ import annotations

from promptcast.server.app import create_app
from promptcast.server.hosts import is_loopback
from promptcast.server.runner import app_from_env, serve

__all__ = ["app_from_env", "create_app", "is_loopback", "serve"]
