"""Liveness (/healthz) and readiness (/readyz) of this web process and what it depends on."""

from __future__ import annotations

import time
from collections.abc import Callable

import redis
from django.conf import settings
from django.db import connection
from django.http import HttpRequest, JsonResponse

from sam3site import redis_clients

ReadinessCheck = Callable[[], tuple[bool, dict]]


def check_database() -> tuple[bool, dict]:
    started = time.perf_counter()
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except Exception as error:  # noqa: BLE001 - any failure means not ready
        connection.close()
        return False, {"error": f"{type(error).__name__}: {str(error).strip().splitlines()[0][:200]}"}
    return True, {"latency_ms": round((time.perf_counter() - started) * 1000, 1)}


def check_redis() -> tuple[bool, dict]:
    if not settings.REDIS_URL:
        return True, {"mode": "embedded (no REDIS_URL): in-memory layers"}
    started = time.perf_counter()
    try:
        redis_clients.client(timeout=1).ping()
    except redis.RedisError as error:
        return False, {"error": f"{type(error).__name__}: {str(error)[:200]}"}
    return True, {"latency_ms": round((time.perf_counter() - started) * 1000, 1)}


# Apps append their own checks (the model workers do).
READINESS_CHECKS: dict[str, ReadinessCheck] = {"database": check_database, "redis": check_redis}


def healthz(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"status": "ok"})


def readyz(request: HttpRequest) -> JsonResponse:
    results = {}
    ready = True
    for name, check in READINESS_CHECKS.items():
        ok, info = check()
        ready &= ok
        results[name] = {"ok": ok, **info}
    body = {"status": "ready" if ready else "not_ready", "checks": results, "warnings": settings.STATIC_API_KEY_WARNINGS}
    return JsonResponse(body, status=200 if ready else 503)
