"""Bad input and bad days answer 4xx/503 in the one error shape, never 500: pagination bounds, NUL
characters, Django's request limits, deep JSON, an unreachable or exhausted database, and a bounded
number of database connections under load."""

from __future__ import annotations

import io
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import psycopg
import pytest
import requests
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection

from sam3site.pagination import MAX_PAGE_SIZE
from sam3site.parsers import MAX_JSON_DEPTH
from tests.conftest import _test_database_url, png_bytes

pytestmark = pytest.mark.django_db
LISTS = ("/api/v1/uploads/", "/api/v1/keys/", "/api/v1/sessions/", "/api/v1/users/")


def error_code(response) -> str:
    body = response.json() if hasattr(response, "json") else json.loads(response.content)
    return body["error"]["code"]


@pytest.mark.parametrize("path", LISTS)
@pytest.mark.parametrize(
    "query", ["limit=9223372036854775808", "offset=9223372036854775808", "limit=-1", "limit=0", "limit=abc",
              f"limit={MAX_PAGE_SIZE + 1}", "offset=-5", "offset=1.5", "limit=%00", "offset=", "limit=", "limit=5&limit=6"],
)
def test_out_of_range_or_invalid_pagination_is_a_400(make_client, path: str, query: str) -> None:
    staff = make_client("root", staff=True)
    response = staff.client.get(f"{path}?{query}")
    assert response.status_code == 400, response.content
    assert error_code(response) == "invalid_pagination"
    assert query.split("=")[0] in response.json()["error"]["message"]


@pytest.mark.parametrize("path", LISTS)
def test_pagination_within_bounds_is_served(make_client, path: str) -> None:
    staff = make_client("root", staff=True)
    response = staff.client.get(f"{path}?limit={MAX_PAGE_SIZE}&offset=0")
    assert response.status_code == 200, response.content
    assert {"count", "results"} <= set(response.json())


def test_nul_characters_are_refused_in_every_kind_of_string(alice) -> None:
    as_json = [
        ("/api/v1/keys/", {"name": "a\x00b"}),
        ("/api/v1/keys/", {"name": "ok", "a\x00b": 1}),  # in a key
        ("/api/v1/segment/", {"image": "x", "prompts": [{"text": "dog\x00"}]}),  # deep inside
        ("/api/v1/sessions/", {"video": "\x00"}),
    ]
    for path, body in as_json:
        response = alice.client.post(path, body, format="json")
        assert response.status_code == 400, (path, response.content)
        assert error_code(response) == "nul_character"
    form = alice.client.post("/api/v1/segment/", {"prompts": '[{"text": "a\\u0000"}]', "file": SimpleUploadedFile("a.png", png_bytes())})
    assert form.status_code == 400 and error_code(form) == "nul_character"  # in JSON inside a form field too
    named = alice.client.post("/api/v1/uploads/", {"file": SimpleUploadedFile("a\x00.png", png_bytes())})
    assert named.status_code == 201 and named.json()["original_name"] == "a.png"  # Django drops unprintables in names
    assert alice.client.get("/api/v1/keys/").json()["count"] == 1  # only the fixture's own key exists


def test_nan_and_infinity_are_not_json_numbers(alice) -> None:
    for literal in ("NaN", "Infinity", "-Infinity"):
        body = f'{{"image": "3fa85f64-5717-4562-b3fc-2c963f66afa6", "prompts": [{{"points": [[{literal}, 1]]}}]}}'
        response = alice.client.post("/api/v1/segment/", body, content_type="application/json")
        assert response.status_code == 400, literal
        assert error_code(response) == "malformed_request"
    form = alice.client.post(
        "/api/v1/segment/", {"prompts": '[{"points": [[NaN, 1]], "point_labels": [1]}]', "file": SimpleUploadedFile("a.png", png_bytes())}
    )
    assert form.status_code == 400 and error_code(form) == "invalid"


def test_django_request_limits_are_4xx(alice) -> None:
    big_text = "x" * (2 * 1024 * 1024 + 10)
    huge_json = alice.client.post("/api/v1/segment/", {"prompts": [{"text": big_text}]}, format="json")
    assert huge_json.status_code == 413 and error_code(huge_json) == "request_too_large"
    big_field = alice.client.post("/api/v1/segment/", {"prompts": big_text, "file": SimpleUploadedFile("a.png", png_bytes())})
    assert big_field.status_code == 413 and error_code(big_field) == "request_too_large"
    many_fields = alice.client.post("/api/v1/segment/", {f"f{i}": "1" for i in range(1100)})
    assert many_fields.status_code == 400 and error_code(many_fields) == "too_many_fields"
    many_files = alice.client.post(
        "/api/v1/uploads/", {f"file{i}": SimpleUploadedFile(f"{i}.png", b"x") for i in range(110)}
    )
    assert many_files.status_code == 400 and error_code(many_files) == "too_many_files"


@pytest.mark.parametrize("depth", [MAX_JSON_DEPTH + 1, 100_000])
def test_deeply_nested_json_is_a_400(alice, depth: int) -> None:
    body = '{"prompts": ' + "[" * depth + "]" * depth + "}"
    response = alice.client.post("/api/v1/segment/", body, content_type="application/json")
    assert response.status_code == 400
    assert error_code(response) == "too_deeply_nested"
    form = alice.client.post("/api/v1/segment/", {"prompts": "[" * depth + "]" * depth, "file": SimpleUploadedFile("a.png", png_bytes())})
    assert form.status_code == 400
    assert error_code(form) in ("too_deeply_nested", "invalid")


def test_nesting_within_the_limit_reaches_validation(alice) -> None:
    body = '{"prompts": ' + "[" * (MAX_JSON_DEPTH - 1) + "]" * (MAX_JSON_DEPTH - 1) + "}"
    response = alice.client.post("/api/v1/segment/", body, content_type="application/json")
    assert response.status_code == 400
    assert error_code(response) == "invalid"  # parsed, then refused by the prompt schema


@pytest.mark.slow
def test_limits_hold_through_the_real_server(start_server, alice) -> None:
    server = start_server()
    headers = {"X-API-Key": alice.key, "Content-Type": "application/json"}
    deep = '{"prompts": ' + "[" * 100_000 + "]" * 100_000 + "}"
    answers = {
        "too_deeply_nested": requests.post(f"{server.url}/api/v1/segment/", data=deep, headers=headers, timeout=30),
        "request_too_large": requests.post(
            f"{server.url}/api/v1/segment/", data=json.dumps({"prompts": [{"text": "x" * 3_000_000}]}), headers=headers, timeout=30
        ),
        "invalid_pagination": requests.get(f"{server.url}/api/v1/uploads/?limit=9223372036854775808", headers=headers, timeout=30),
        "nul_character": requests.post(
            f"{server.url}/api/v1/keys/", data='{"name": "x", "user": "a\\u0000b"}', headers=headers, timeout=30
        ),
    }
    for code, response in answers.items():
        assert 400 <= response.status_code < 500, (code, response.status_code, response.text[:300])
        assert response.json()["error"]["code"] == code
    # A multipart body with no parts: answered by Django in our shape, not by twisted with an empty 400.
    boundary = "c637e12e2b1a998d80d1b087531af51c"
    empty_form = requests.post(
        f"{server.url}/api/v1/uploads/", data=f"--{boundary}--\r\n",
        headers={"X-API-Key": alice.key, "Content-Type": f"multipart/form-data; boundary={boundary}"}, timeout=30,
    )
    assert empty_form.status_code == 400 and empty_form.json()["error"]["code"] == "invalid", empty_form.text


@pytest.mark.parametrize("body", ["1", "false", "[]", '"text"', "null"])
def test_a_json_body_that_is_no_object_is_a_400(alice, body: str) -> None:
    for path in ("/api/v1/keys/", "/api/v1/segment/", "/api/v1/sessions/"):
        response = alice.client.post(path, body, content_type="application/json")
        assert response.status_code == 400, (path, body, response.content)


@pytest.mark.slow
def test_unreachable_database_answers_503_with_retry_after(start_server, alice) -> None:
    server = start_server(DATABASE_URL="postgres://postgres@127.0.0.1:1/nowhere", DATABASE_POOL_TIMEOUT_SECONDS="1")
    response = requests.get(f"{server.url}/api/v1/me/", headers={"X-API-Key": alice.key}, timeout=30)
    assert response.status_code == 503, response.text
    assert response.json()["error"]["code"] == "database_unavailable"
    assert int(response.headers["Retry-After"]) > 0
    assert requests.get(f"{server.url}/healthz", timeout=10).status_code == 200
    assert requests.get(f"{server.url}/readyz", timeout=30).status_code == 503

    # A websocket handshake gets an answer too: accepted, told why, closed with 4503.
    from websockets.exceptions import ConnectionClosed
    from websockets.sync.client import connect

    url = f"{server.url.replace('http', 'ws')}/ws/sessions/3fa85f64-5717-4562-b3fc-2c963f66afa6/"
    started = time.monotonic()
    with connect(url, additional_headers={"X-API-Key": alice.key}, open_timeout=30) as socket:
        message = json.loads(socket.recv(timeout=30))
        with pytest.raises(ConnectionClosed) as closed:
            socket.recv(timeout=30)
    assert message["type"] == "error" and message["error"]["code"] == "database_unavailable"
    assert message["error"]["detail"]["retry_after"] > 0
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4503, server.log()[-4000:]
    assert time.monotonic() - started < 15  # within the pool's timeout (1 s) and the retries, not a hang


@pytest.fixture
def role_without_connections() -> str:
    with connection.cursor() as cursor:
        cursor.execute("DROP ROLE IF EXISTS sam3_no_connections")
        cursor.execute("CREATE ROLE sam3_no_connections LOGIN CONNECTION LIMIT 0")
    yield "sam3_no_connections"
    with connection.cursor() as cursor:
        cursor.execute("DROP ROLE IF EXISTS sam3_no_connections")


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_database_out_of_connections_answers_503(start_server, alice, role_without_connections: str) -> None:
    url = _test_database_url().replace("postgres://postgres@", f"postgres://{role_without_connections}@")
    server = start_server(DATABASE_URL=url, DATABASE_POOL_TIMEOUT_SECONDS="1")
    response = requests.get(f"{server.url}/api/v1/me/", headers={"X-API-Key": alice.key}, timeout=30)
    assert response.status_code == 503, response.text
    assert response.json()["error"]["code"] == "database_unavailable"
    assert "Retry-After" in response.headers


def _connections_named(application_name: str) -> int:
    url = _test_database_url().rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(url.replace("postgres://", "postgresql://"), autocommit=True) as probe:
        row = probe.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", [application_name]).fetchone()
    return int(row[0])


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_connections_stay_bounded_under_concurrent_load(start_server, alice) -> None:
    """Two web processes with a pool of 3 each hold at most 6 connections, whatever the load."""
    name = f"sam3-load-{time.monotonic_ns()}"
    server = start_server(
        SERVER_WORKERS="2", DATABASE_POOL_SIZE="3", DATABASE_POOL_TIMEOUT_SECONDS="20",
        DATABASE_URL=f"{_test_database_url()}?application_name={name}",
    )
    alice.client.post("/api/v1/uploads/", {"file": SimpleUploadedFile("a.png", png_bytes())})
    peak, stop = [0], threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], _connections_named(name))
            time.sleep(0.05)

    sampler = threading.Thread(target=sample)
    sampler.start()
    paths = ("/api/v1/me/", "/api/v1/uploads/", "/api/v1/keys/", "/api/v1/sessions/")
    try:
        with ThreadPoolExecutor(16) as pool:
            statuses = list(pool.map(
                lambda i: requests.get(f"{server.url}{paths[i % 4]}", headers={"X-API-Key": alice.key}, timeout=60).status_code,
                range(120),
            ))
    finally:
        stop.set()
        sampler.join()
    assert statuses.count(200) == 120, statuses
    assert 1 <= peak[0] <= 2 * 3, peak[0]


def test_multipart_body_stays_streamed_for_files(alice) -> None:
    """The 2 MiB bound is for text fields only: a file above it still uploads (streamed to disk)."""
    import numpy as np
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (1100, 1100, 3), dtype=np.uint8)).save(buffer, format="PNG")
    assert len(buffer.getvalue()) > 2 * 1024 * 1024
    response = alice.client.post("/api/v1/uploads/", {"file": SimpleUploadedFile("big.png", buffer.getvalue())})
    assert response.status_code == 201, response.content
