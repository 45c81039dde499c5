"""`create_app(registry)`: the FastAPI app with one typed route per task, behind the gate."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from promptcast._config import get_config
from promptcast.backends import ModelRequest, aclose_shared, resolve
from promptcast.errors import ConfigurationError
from promptcast.pricing import cost_usd
from promptcast.render import Prompt
from promptcast.server import _openapi
from promptcast.server.gate import Gate, logger
from promptcast.server.hosts import HostPolicy
from promptcast.server.problems import scrub
from promptcast.server.routes import (
    catalog,
    on_http_error,
    on_invalid_request,
    ops,
    task_router,
    unknown,
)
from promptcast.server.state import CallLimit, ServerState
from promptcast.task import TaskRegistry, builtin_tasks, load_tasks

__all__ = ["OPEN_PATHS", "PROBE_PATHS", "create_app", "default_registry"]

PROBE_PATHS = frozenset({"/healthz", "/readyz"})
"""Answered whatever the Host header: a load balancer's or kubelet's probe names the pod's IP."""
OPEN_PATHS = PROBE_PATHS | {_openapi.DOCS_PATH, _openapi.OPENAPI_PATH}
"""Answered without a token, for probes and tooling (and the docs' assets below `/docs-assets/`)."""


def default_registry(prompts: Sequence[str | Path] | None = None) -> TaskRegistry:
    """The built-in tasks plus the task files of `prompts` (default: `PROMPTCAST_PROMPTS`)."""
    registry = TaskRegistry(builtin_tasks())
    folders = [Path(p) for p in (get_config().prompts if prompts is None else prompts)]
    for task in load_tasks(*folders).values() if folders else ():
        registry.add(task)
    return registry


def create_app(
    registry: TaskRegistry | None = None,
    *,
    tokens: Iterable[str] | None = None,
    max_body_bytes: int | None = None,
    max_concurrency: int | None = None,
    allowed_hosts: Iterable[str] | None = None,
) -> FastAPI:
    """A FastAPI app with one typed route per task of `registry`.

    `registry` defaults to the built-ins plus `PROMPTCAST_PROMPTS`; the rest to their settings:
    `tokens` to `PROMPTCAST_API_TOKENS` (no tokens: no auth, so bind to loopback only);
    `max_body_bytes` to `PROMPTCAST_MAX_BODY_BYTES` (1 MiB); `max_concurrency` (provider calls in
    flight per event loop; more requests wait in line) to `PROMPTCAST_MAX_CONCURRENCY` (64);
    `allowed_hosts` (Host names answered besides loopback's) to `PROMPTCAST_ALLOWED_HOSTS`.
    """
    config = get_config()
    # as strict as the settings they stand in for: a 0 or negative limit would make every
    # call fail later (no semaphore below 0, no body under 1 byte) instead of now
    max_concurrency = _at_least_1("max_concurrency", max_concurrency, config.max_concurrency)
    max_body_bytes = _at_least_1("max_body_bytes", max_body_bytes, config.max_body_bytes)
    registry = default_registry() if registry is None else registry
    for name, given in (("tokens", tokens), ("allowed_hosts", allowed_hosts)):
        if isinstance(given, (str, bytes)):  # its characters would each be a token or host
            raise ConfigurationError(
                f"create_app({name}=…) takes a list of strings, not one string: {name}=[…]",
                env_var=f"PROMPTCAST_{'API_TOKENS' if name == 'tokens' else 'ALLOWED_HOSTS'}",
            )
    # stripped as the setting's are: a token read from a file ends with a newline, and the
    # header's token never does
    given_tokens = config.api_tokens if tokens is None else tokens
    token_list = [t.strip() for t in given_tokens if t.strip()]
    hosts = HostPolicy.of(config.allowed_hosts if allowed_hosts is None else allowed_hosts)
    state = ServerState(registry, CallLimit(max_concurrency))

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await asyncio.to_thread(warm_up, registry)
        yield
        await aclose_shared()  # no provider connection outlives the server

    # With an OpenTelemetry SDK set, FastAPI traces each request itself: one HTTP server span
    # that continues an incoming `traceparent`; the task and provider spans nest under it.
    app = FastAPI(
        title="promptcast",
        version=_version(),
        description="Prompt-file tasks as typed HTTP endpoints. Errors are RFC 9457 problem "
        "details (application/problem+json).",
        lifespan=lifespan,
        docs_url=None,  # served by _openapi, from installed assets
        redoc_url=None,
        openapi_url=None,
        exception_handlers={
            RequestValidationError: on_invalid_request,
            StarletteHTTPException: on_http_error,
        },
    )
    app.state.promptcast = state
    for router in (catalog, task_router(state), unknown, ops):  # unknown: after the tasks' paths
        app.include_router(router)
        state.routes.extend(router.routes)
    secured = bool(token_list)
    schema = _openapi.build(
        app,
        secured=secured,
        host_checked=bool(hosts.allowed) or not secured,
        open_paths=OPEN_PATHS,
        probe_paths=PROBE_PATHS,
    )
    _openapi.install(app, schema)
    app.add_middleware(
        Gate,
        tokens=token_list,
        hosts=hosts,
        max_body_bytes=max_body_bytes,
        metrics=state.metrics,
        open_paths=OPEN_PATHS,
        open_prefix=_openapi.ASSETS_PATH + "/",
        probe_paths=PROBE_PATHS,
    )
    return app


def _at_least_1(name: str, given: int | None, default: int) -> int:
    if given is None:
        return default
    if isinstance(given, bool) or not isinstance(given, int) or given < 1:
        raise ConfigurationError(
            f"create_app({name}={given!r}) must be a whole number of at least 1; leave it out "
            f"for PROMPTCAST_{name.upper()} (now {default})",
            env_var=f"PROMPTCAST_{name.upper()}",
        )
    return given


def _version() -> str:
    from promptcast import __version__

    return __version__


def warm_up(registry: TaskRegistry) -> None:
    """Import the provider SDKs, build output schemas and load prices before the first request,
    so the first callers do not pay for it. A failure only makes the first call slower."""
    for task in registry.values():
        try:
            backend, model_name = resolve(task.model)
            request = ModelRequest(
                model=model_name, prompt=Prompt(system=None), output_model=task.output_model
            )
            backend.warm_up(request)
            cost_usd(task.model, 0, 0)
        except Exception as exc:
            logger.warning(
                "warm-up of %s skipped: %s", task.name, scrub(f"{type(exc).__name__}: {exc}")
            )
