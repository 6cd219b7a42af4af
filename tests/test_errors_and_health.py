"""One error shape everywhere; liveness and readiness against real and unreachable dependencies."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import requests
from django.test import Client
from django.urls import path
from loguru import logger
from rest_framework.test import APIClient
from rest_framework.views import APIView

from sam3site import urls as site_urls
from tests.conftest import free_port

pytestmark = pytest.mark.django_db
ROOT = Path(__file__).resolve().parent.parent


class ExplodingView(APIView):
    anonymous_allowed = True

    def get(self, request):
        raise RuntimeError("secret internal detail /etc/passwd")


urlpatterns = [path("boom/", ExplodingView.as_view()), *site_urls.urlpatterns]
handler404 = site_urls.handler404
handler500 = site_urls.handler500


def assert_error_shape(response, status: int, code: str) -> dict:
    assert response.status_code == status
    assert response["Content-Type"].startswith("application/json")
    error = response.json()["error"]
    assert set(error) == {"code", "message", "detail", "request_id"}
    assert error["code"] == code
    assert error["message"]
    assert error["request_id"] == response["X-Request-ID"]
    return error


def test_error_shape_for_each_kind_of_error(alice) -> None:
    assert_error_shape(APIClient().get("/api/v1/uploads/"), 401, "authentication_required")
    assert_error_shape(alice.client.get("/api/v1/users/"), 403, "forbidden")
    assert_error_shape(alice.client.get("/api/v1/uploads/9b2b0f0e-0000-0000-0000-000000000000/"), 404, "not_found")
    assert_error_shape(alice.client.put("/api/v1/me/"), 405, "method_not_allowed")
    invalid = assert_error_shape(alice.client.post("/api/v1/keys/", {}, format="json"), 400, "invalid")
    assert "name" in invalid["detail"]
    malformed = alice.client.post("/api/v1/keys/", "{not json", content_type="application/json")
    assert_error_shape(malformed, 400, "malformed_request")
    assert_error_shape(Client().get("/no/such/page/"), 404, "not_found")


def test_client_request_id_is_kept_when_sane(alice) -> None:
    assert alice.client.get("/api/v1/me/", HTTP_X_REQUEST_ID="trace-123").headers["X-Request-ID"] == "trace-123"
    odd = alice.client.get("/api/v1/me/", HTTP_X_REQUEST_ID="bad id\nwith newline").headers["X-Request-ID"]
    assert odd != "bad id\nwith newline" and len(odd) == 32


@pytest.mark.urls("tests.test_errors_and_health")
def test_unexpected_errors_are_logged_with_request_id_and_answered_without_internals() -> None:
    lines: list[str] = []
    sink = logger.add(lambda message: lines.append(str(message)), level="ERROR")
    try:
        response = APIClient().get("/boom/")
    finally:
        logger.remove(sink)
    error = assert_error_shape(response, 500, "internal_error")
    assert "passwd" not in response.content.decode() and "RuntimeError" not in response.content.decode()
    logged = "".join(lines)
    assert error["request_id"] in logged
    assert "RuntimeError" in logged


def test_healthz_and_readyz_with_real_services() -> None:
    health = Client().get("/healthz")
    assert health.status_code == 200 and health.json() == {"status": "ok"}
    response = Client().get("/readyz")
    ready = response.json()
    assert ready["checks"]["database"]["ok"] is True
    assert ready["checks"]["redis"]["ok"] is True
    # No model worker runs in this test: not ready because of the model alone (workers: test_model_workers).
    assert response.status_code == 503 and ready["status"] == "not_ready"
    assert [name for name, check in ready["checks"].items() if not check["ok"]] == ["model"]
    assert ready["warnings"] == []  # the suite's API_KEYS are real-looking keys


def test_readyz_reports_unreachable_redis(settings) -> None:
    settings.REDIS_URL = "redis://127.0.0.1:1/0"  # closed port
    ready = Client().get("/readyz")
    assert ready.status_code == 503
    body = ready.json()
    assert body["status"] == "not_ready"
    assert body["checks"]["redis"]["ok"] is False
    assert "Connection" in body["checks"]["redis"]["error"]
    assert body["checks"]["database"]["ok"] is True
    assert Client().get("/healthz").status_code == 200


@pytest.mark.slow
def test_readyz_reports_unreachable_database(start_server) -> None:
    server = start_server(DATABASE_URL="postgres://postgres@127.0.0.1:1/nowhere")
    assert requests.get(f"{server.url}/healthz", timeout=10).status_code == 200
    ready = requests.get(f"{server.url}/readyz", timeout=20)
    assert ready.status_code == 503
    assert ready.json()["checks"]["database"]["ok"] is False
    assert ready.json()["checks"]["redis"]["ok"] is True


@pytest.mark.slow
def test_metrics_are_exported_by_the_serving_process_only(start_server, alice) -> None:
    server = start_server(SERVER_WORKERS="2")
    for _ in range(6):
        assert requests.get(f"{server.url}/api/v1/me/", headers={"X-API-Key": alice.key}, timeout=10).ok
    metrics = requests.get(f"{server.metrics_url}/metrics", timeout=10).text
    assert "django_http_requests_total_by_method_total" in metrics
    served = [
        float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
        if line.startswith('django_http_requests_total_by_method_total{method="GET"}')
    ]
    assert served and sum(served) >= 6  # aggregated over both worker processes

    # Any other process that loads Django (a manage.py command, a Celery worker) leaves METRICS_PORT alone:
    # inside such a process, with metrics enabled, the port is still free to bind.
    port = free_port()
    probe = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c",
         f"import socket; s = socket.socket(); s.bind(('0.0.0.0', {port})); print('port free')"],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
        env={**os.environ, "METRICS_PORT": str(port), "ENABLE_METRICS": "true"},
    )
    assert probe.returncode == 0, probe.stderr
    assert "port free" in probe.stdout


@pytest.mark.slow
def test_metrics_off_means_no_listener(start_server) -> None:
    server = start_server(ENABLE_METRICS="false")
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{server.metrics_url}/metrics", timeout=5)


def test_openapi_schema_is_valid_and_covers_the_api() -> None:
    result = subprocess.run(
        [sys.executable, "manage.py", "spectacular", "--validate", "--fail-on-warn", "--file", "/dev/null"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    schema = APIClient().get("/api/schema/", HTTP_ACCEPT="application/json").json()
    for endpoint in ("/api/v1/me/", "/api/v1/keys/", "/api/v1/users/", "/api/v1/uploads/", "/api/v1/uploads/{id}/content/"):
        assert endpoint in schema["paths"], endpoint
    assert "ApiKeyAuth" in str(schema["components"].get("securitySchemes", {}))
    assert Client().get("/api/docs/").status_code == 200


def test_check_deploy_is_clean_under_production_settings() -> None:
    env = {
        **os.environ, "DEBUG": "false", "SECURE_SSL_REDIRECT": "true", "ALLOWED_HOSTS": '["sam3.example.com"]',
        "DJANGO_SECRET_KEY": "a-very-long-random-production-secret-key-0123456789-abcdefghijkl",
    }
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT, capture_output=True, text=True, timeout=120, env=env,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout
