"""The README's server command on the embedded default, CORS, the browsable API, admin and Celery wiring."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from django.test import Client

from tests.conftest import png_bytes

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.django_db


@pytest.mark.slow
def test_embedded_default_serves_without_postgres_or_redis(start_server, tmp_path: Path) -> None:
    embedded = {
        "DATABASE_URL": "", "REDIS_URL": "", "DATA_DIR": str(tmp_path / "var"), "DJANGO_SECRET_KEY": "",
        "API_KEYS": '["your-api-key-1", "your-api-key-2"]',  # the contract's default: the guide's examples
    }
    env = {**os.environ, **embedded}
    subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=ROOT, env=env, check=True, timeout=120)
    key = subprocess.run(
        [sys.executable, "manage.py", "create_api_key", "--user", "quickstart"],
        cwd=ROOT, env=env, check=True, capture_output=True, text=True, timeout=60,
    ).stdout.strip()
    assert (tmp_path / "var" / "db.sqlite3").exists()
    assert (tmp_path / "var" / "secret_key").stat().st_mode & 0o077 == 0  # generated, private

    server = start_server(**embedded)
    ready = requests.get(f"{server.url}/readyz", timeout=10).json()
    assert ready["checks"]["redis"]["mode"].startswith("embedded")
    # The quick start keeps the guide's example keys, and says so loudly.
    assert len(ready["warnings"]) == 2 and all("API_KEYS" in warning for warning in ready["warnings"])
    assert "INSECURE" in server.log() and "your-api-key-1" not in server.log()
    headers = {"X-API-Key": key}
    assert requests.get(f"{server.url}/api/v1/me/", headers=headers, timeout=10).json()["username"] == "quickstart"
    made = requests.post(f"{server.url}/api/v1/uploads/", files={"file": ("a.png", png_bytes())}, headers=headers, timeout=30)
    assert made.status_code == 201, made.text
    assert requests.get(f"{server.url}/api/docs/", timeout=10).status_code == 200
    assert requests.get(f"{server.url}/admin/login/", timeout=10).status_code == 200
    static = requests.get(f"{server.url}/static/admin/css/base.css", timeout=10)
    assert static.status_code == 200 and "text/css" in static.headers["Content-Type"]


# In the embedded server, the session writer stores frames (read the session row, then index the
# file, in one transaction) while web requests write the same row. Run in a process of its own on
# the embedded default's SQLite database, as `manage.py serve` has it.
CONCURRENT_WRITERS = """
import json, threading
import django
django.setup()
from django.contrib.auth import get_user_model
from django.core.management import call_command
from sessions import services
from sessions.models import FrameResult, VideoSession

call_command("migrate", verbosity=0)
owner = get_user_model().objects.create(username="writer")
session_id = str(VideoSession.objects.create(owner=owner, kind="live", status="ready", frame_count=0, width=64, height=48).pk)
failures, stored = [], threading.Event()

def store_frames():
    for frame in range(150):
        try:
            services.frame_result_store(session_id=session_id, epoch=1, payload={"frame": frame, "objects": []})
        except Exception as failure:
            failures.append(repr(failure))
    stored.set()

def web_requests():
    while not stored.is_set():
        try:
            services.propagation_update(session_id=session_id, epoch=1, frames_done=1)
            services.session_touch(session_id=session_id)
        except Exception as failure:
            failures.append(repr(failure))

threads = [threading.Thread(target=store_frames), threading.Thread(target=web_requests)]
[thread.start() for thread in threads]
[thread.join() for thread in threads]
print(json.dumps({"frames": FrameResult.objects.filter(session_id=session_id).count(), "failures": failures[:3]}))
"""


def test_embedded_database_orders_concurrent_writers_instead_of_losing_a_frame(tmp_path: Path) -> None:
    embedded = {"DATABASE_URL": "", "REDIS_URL": "", "DATA_DIR": str(tmp_path / "var"), "OUTPUT_DIR": str(tmp_path / "outputs"),
                "DJANGO_SECRET_KEY": "", "DJANGO_SETTINGS_MODULE": "sam3site.settings"}
    done = subprocess.run(
        [sys.executable, "-c", CONCURRENT_WRITERS], cwd=ROOT, env={**os.environ, **embedded}, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr
    outcome = json.loads(done.stdout.strip().splitlines()[-1])
    assert outcome == {"frames": 150, "failures": []}  # SQLite's deferred transactions failed with "database is locked"


def test_a_deployment_refuses_to_start_with_the_guides_example_keys(tmp_path: Path) -> None:
    env = {**os.environ, "DATA_DIR": str(tmp_path), "API_KEYS": '["key1", "key2", "key3"]'}
    result = subprocess.run([sys.executable, "manage.py", "check"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert "API_KEYS" in result.stderr and "example key" in result.stderr
    assert "Traceback" not in result.stderr
    env["DEBUG"] = "true"  # development keeps them, with a warning
    result = subprocess.run([sys.executable, "manage.py", "check"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "INSECURE" in result.stderr


def test_embedded_default_refuses_several_workers(tmp_path: Path) -> None:
    env = {**os.environ, "REDIS_URL": "", "DATABASE_URL": "", "DATA_DIR": str(tmp_path), "SERVER_WORKERS": "2"}
    result = subprocess.run(
        [sys.executable, "manage.py", "serve"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode != 0
    assert "SERVER_WORKERS > 1 needs REDIS_URL" in result.stderr


def test_cors_preflight_allows_the_api_key_header(settings) -> None:
    response = Client().options(
        "/api/v1/me/", HTTP_ORIGIN="https://labeling.example.com",
        HTTP_ACCESS_CONTROL_REQUEST_METHOD="GET", HTTP_ACCESS_CONTROL_REQUEST_HEADERS="x-api-key",
    )
    assert response.status_code == 200
    assert response["Access-Control-Allow-Origin"] in ("*", "https://labeling.example.com")
    assert "x-api-key" in response["Access-Control-Allow-Headers"].lower()


def test_browsable_api_and_admin_pages_render(admin_user, alice) -> None:
    browser = Client()
    browser.force_login(admin_user)
    for page in ("/api/v1/", "/api/v1/me/", "/api/v1/uploads/", "/api/v1/keys/", "/api/v1/users/"):
        response = browser.get(page, HTTP_ACCEPT="text/html")
        assert response.status_code == 200, page
        assert b"Django REST framework" in response.content
    for page in ("/admin/accounts/apikey/", "/admin/accounts/dailyusage/", f"/admin/auth/user/{alice.user.pk}/change/"):
        assert browser.get(page).status_code == 200, page


def test_celery_is_configured_from_django_settings(settings) -> None:
    from sam3site.celery import app

    assert app.conf.broker_url == settings.REDIS_URL
    assert app.conf.task_always_eager is False  # a real broker with REDIS_URL set


@pytest.mark.slow
def test_reload_restarts_the_server_when_code_changes(start_server) -> None:
    server = start_server(RELOAD="true")
    watched = ROOT / "sam3site" / "views.py"
    time.sleep(1.5)  # let the reloader take its first snapshot of modification times
    os.utime(watched)
    deadline = time.monotonic() + 30
    while "changed, reloading" not in server.log() and time.monotonic() < deadline:
        time.sleep(0.3)
    assert "changed, reloading" in server.log()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if requests.get(f"{server.url}/healthz", timeout=2).ok and server.log().count("Listening on TCP") >= 2:
                break
        except requests.RequestException:  # refused or timed out while the server restarts
            pass
        time.sleep(0.3)
    assert server.log().count("Listening on TCP") >= 2
    assert requests.get(f"{server.url}/healthz", timeout=5).ok


def test_browsable_api_offers_a_file_upload_form(admin_user) -> None:
    browser = Client()
    browser.force_login(admin_user)
    page = browser.get("/api/v1/uploads/", HTTP_ACCEPT="text/html").content.decode()
    assert 'type="file"' in page and 'name="file"' in page
