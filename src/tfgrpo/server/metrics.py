"""Prometheus metrics of `tfgrpo serve` (prometheus_client, in the `serve` extra), one registry per app
so that several proxies in one process (tests) do not share counters."""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from typing import Any

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class ProxyMetrics:
    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("tfgrpo_requests", "HTTP requests answered", ["endpoint", "status"], registry=r)
        self.latency = Histogram(
            "tfgrpo_request_seconds", "time to answer a request", ["endpoint"], buckets=_LATENCY_BUCKETS, registry=r
        )
        self.upstream_latency = Histogram(
            "tfgrpo_upstream_seconds",
            "time the upstream took per call",
            ["endpoint"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.upstream_retries = Counter("tfgrpo_upstream_retries", "upstream calls sent again", registry=r)
        self.injected = Counter(
            "tfgrpo_injected_items", "lessons and experiences put into prompts", ["library", "kind"], registry=r
        )
        self.injection_skipped = Counter(
            "tfgrpo_injection_skipped",
            "requests that got no experience: none in the library was relevant enough (--min-relevance)",
            ["library"],
            registry=r,
        )
        self.feedback = Counter("tfgrpo_feedback", "feedback posts by outcome", ["library", "status"], registry=r)
        self.groups = Counter("tfgrpo_groups", "groups formed", ["library", "signal"], registry=r)
        self.groups_skipped = Counter(
            "tfgrpo_groups_skipped",
            "groups the learner could not learn (logged with the reason)",
            ["library"],
            registry=r,
        )
        # (with several worker processes: the most recent value any of them set)
        self.library_size, self.library_version, self.lessons = (
            Gauge(name, help, ["library"], registry=r, multiprocess_mode="mostrecent")
            for name, help in (
                ("tfgrpo_library_size", "experiences in the library"),
                ("tfgrpo_lessons_version", "current lesson version"),
                ("tfgrpo_lessons", "current lessons"),
            )
        )

    def render(self) -> tuple[bytes, str]:
        """The figures; with several worker processes (`PROMETHEUS_MULTIPROC_DIR`), those of all of them."""
        from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest, multiprocess

        if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            return generate_latest(self.registry), CONTENT_TYPE_LATEST
        every = CollectorRegistry()
        multiprocess.MultiProcessCollector(every)
        return generate_latest(every), CONTENT_TYPE_LATEST

    def set_library(self, name: str, size: int, version: int, lessons: int) -> None:
        self.library_size.labels(name).set(size)
        self.library_version.labels(name).set(version)
        self.lessons.labels(name).set(lessons)


def log_fields(**fields: Any) -> dict[str, Any]:
    """A structured log record's fields (`extra={"fields": ...}`), dropping the None ones."""
    return {"fields": {k: v for k, v in fields.items() if v is not None}}


class Observe:
    """ASGI middleware: every HTTP request's latency and status, by endpoint (a plain ASGI wrapper, so
    streaming and disconnects pass through untouched)."""

    def __init__(self, app, metrics: ProxyMetrics) -> None:
        self.app = app
        self.metrics = metrics
        self._children: dict[tuple[str, int], tuple[Any, Any]] = {}  # (endpoint, status) -> its metrics

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def sending(message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            path = scope["path"]
            endpoint = "/v1/libraries" if path.startswith("/v1/libraries/") else path
            if endpoint not in _ENDPOINTS:
                endpoint = "other"
            children = self._children.get((endpoint, status))
            if children is None:  # `labels()` locks and checks its arguments on every call: once per pair
                children = (self.metrics.latency.labels(endpoint), self.metrics.requests.labels(endpoint, str(status)))
                self._children[endpoint, status] = children
            children[0].observe(time.perf_counter() - started)
            children[1].inc()


_ENDPOINTS = {
    "/v1/chat/completions",
    "/v1/completions",
    "/v1/models",
    "/v1/feedback",
    "/v1/libraries",
    "/healthz",
    "/health",
    "/metrics",
}


class JsonFormatter(logging.Formatter):
    """One JSON object per log line: time, level, logger, message, and the record's `fields`."""

    def format(self, record: logging.LogRecord) -> str:
        line = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
            **getattr(record, "fields", {}),
        }
        if record.exc_info:
            line["error"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False, default=str)


def setup_json_logs(level: int = logging.INFO) -> None:
    """`tfgrpo.serve` log records as JSON lines on stderr (replacing the CLI's plain handler there)."""
    logger = logging.getLogger("tfgrpo.serve")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    logger.handlers = [handler]
    logger.setLevel(level)
    logger.propagate = False
