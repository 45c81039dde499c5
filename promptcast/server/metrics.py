"""Prometheus metrics of one server app, in a registry of its own.

A registry per app (not the process-global default) lets several apps live in one process, as
tests do, without "duplicated timeseries" errors, and keeps library users' own metrics apart.

Under `promptcast serve --workers N` (`PROMETHEUS_MULTIPROC_DIR` set, see `_multiproc`) each worker
writes its values to that folder and `/metrics` renders their sum: the worker that answers a
scrape is then irrelevant, and counters never go down between scrapes.
"""

from __future__ import annotations

import os

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, values
from prometheus_client.multiprocess import MultiProcessCollector

from promptcast.server._multiproc import MULTIPROC_DIR_ENV

__all__ = ["Metrics"]

_LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60, 120)


class Metrics:
    """Requests, latency, tokens, cost and errors by task and model, plus the call queue."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        # prometheus-client chose at import whether values go to files; only then is the folder
        # the sum over the workers (and this process's values in it)
        in_files = values.ValueClass is not values.MutexValue
        self.multiprocess_dir = os.environ.get(MULTIPROC_DIR_ENV) if in_files else None
        labels = ["task", "model"]
        self.calls = Counter(
            "promptcast_task_calls",
            "Task calls answered, by task, model and HTTP status (499: the client disconnected and "
            "the call was cancelled).",
            [*labels, "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "promptcast_task_call_duration_seconds",
            "Time from an accepted task request to its answer, queueing included.",
            labels,
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.tokens = Counter(
            "promptcast_tokens",
            "Tokens spent, by task, model and kind (input: uncached, cache_read, cache_write, "
            "output).",
            [*labels, "kind"],
            registry=self.registry,
        )
        self.cost = Counter(
            "promptcast_cost_usd",
            "Cost in US dollars of the calls made, by task and model (unpriced models add 0).",
            labels,
            registry=self.registry,
        )
        self.errors = Counter(
            "promptcast_task_errors",
            "Failed task calls, by task, model and error class.",
            [*labels, "error"],
            registry=self.registry,
        )
        self.provider_requests = Counter(
            "promptcast_provider_requests",
            "Requests sent to providers (a call re-asks when an answer does not validate).",
            labels,
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "promptcast_calls_in_flight",
            "Task calls talking to a provider now (at most PROMPTCAST_MAX_CONCURRENCY per worker).",
            multiprocess_mode="livesum",  # summed over the workers alive
            registry=self.registry,
        )
        self.waiting = Gauge(
            "promptcast_calls_waiting",
            "Task calls queued for a free provider slot.",
            multiprocess_mode="livesum",  # summed over the workers alive
            registry=self.registry,
        )
        self.http = Counter(
            "promptcast_http_responses",
            "HTTP responses of every route, by status (401, 404, 413 and 421 included; 499: the "
            "client disconnected before its answer).",
            ["status"],
            registry=self.registry,
        )

    def render(self) -> bytes:
        if self.multiprocess_dir is None:
            return generate_latest(self.registry)
        merged = CollectorRegistry()
        MultiProcessCollector(merged, path=self.multiprocess_dir)  # type: ignore[no-untyped-call]
        return generate_latest(merged)
