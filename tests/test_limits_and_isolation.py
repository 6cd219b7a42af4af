"""Rate limits and daily quotas (429 + Retry-After, shared across processes) and object isolation."""

from __future__ import annotations

import pytest
import requests
from rest_framework.test import APIClient

from accounts.models import DailyUsage, Quota
from accounts.usage import flush
from tests.conftest import png_bytes

pytestmark = pytest.mark.django_db
ME = "/api/v1/me/"


def test_rate_limit_answers_429_with_retry_after(alice, settings) -> None:
    settings.RATE_LIMIT_REQUESTS_PER_MINUTE = 3
    statuses = [alice.client.get(ME).status_code for _ in range(4)]
    assert statuses == [200, 200, 200, 429]
    refused = alice.client.get(ME)
    assert 1 <= int(refused["Retry-After"]) <= 60
    assert refused.json()["error"]["code"] == "rate_limited"


def test_per_user_rate_overrides_the_default_and_clients_are_counted_apart(alice, bob) -> None:
    Quota.objects.create(user=alice.user, requests_per_minute=2)
    assert [alice.client.get(ME).status_code for _ in range(3)] == [200, 200, 429]
    assert bob.client.get(ME).status_code == 200  # bob has the (high) default


def test_anonymous_clients_are_limited_by_address(settings) -> None:
    settings.RATE_LIMIT_REQUESTS_PER_MINUTE = 2
    client = APIClient()
    assert [client.get("/api/v1/uploads/").status_code for _ in range(3)] == [401, 401, 429]


def test_rate_limiting_can_be_turned_off(alice, settings) -> None:
    settings.RATE_LIMIT_REQUESTS_PER_MINUTE = 1
    settings.RATE_LIMIT_ENABLED = False
    assert {alice.client.get(ME).status_code for _ in range(5)} == {200}


def test_daily_quota_counts_per_key_and_answers_429_until_midnight(make_client) -> None:
    first = make_client("gina")
    second = make_client("gina")  # a second key of the same user
    Quota.objects.create(user=first.user, daily_requests=3)
    assert first.client.get(ME).status_code == 200
    assert second.client.get(ME).status_code == 200
    me = first.client.get(ME).json()
    assert me["requests_today"] == 3
    assert sorted(row["requests"] for row in me["usage"]) == [1, 2]
    refused = second.client.get(ME)
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "daily_quota_exceeded"
    assert 0 < int(refused["Retry-After"]) <= 86400
    flush()  # counts reach Postgres in batches (accounts.usage); web processes flush every few seconds
    assert sum(DailyUsage.objects.filter(user=first.user).values_list("requests", flat=True)) == 3


@pytest.mark.slow
def test_rate_limit_is_shared_by_two_web_processes(start_server, alice) -> None:
    first = start_server(RATE_LIMIT_REQUESTS_PER_MINUTE="4")
    second = start_server(RATE_LIMIT_REQUESTS_PER_MINUTE="4")
    headers = {"X-API-Key": alice.key}
    statuses = [
        requests.get(f"{server.url}{ME}", headers=headers, timeout=10).status_code
        for server in (first, second, first, second, first, second)
    ]
    assert statuses == [200, 200, 200, 200, 429, 429]
    refused = requests.get(f"{second.url}{ME}", headers=headers, timeout=10)
    assert refused.headers["Retry-After"].isdigit()
    assert refused.json()["error"]["code"] == "rate_limited"


@pytest.mark.slow
def test_daily_quota_is_shared_by_two_web_processes(start_server, alice) -> None:
    Quota.objects.create(user=alice.user, daily_requests=3)
    first, second = start_server(), start_server()
    headers = {"X-API-Key": alice.key}
    statuses = [requests.get(f"{s.url}{ME}", headers=headers, timeout=10).status_code for s in (first, second) * 2]
    assert statuses == [200, 200, 200, 429]


def test_no_client_sees_another_clients_objects(alice, bob, make_client) -> None:
    from django.core.files.uploadedfile import SimpleUploadedFile

    made = alice.client.post("/api/v1/uploads/", {"file": SimpleUploadedFile("a.png", png_bytes())}, format="multipart")
    upload_id = made.json()["id"]
    alice_key_id = alice.client.get("/api/v1/keys/").json()["results"][0]["id"]
    env_client = APIClient()
    env_client.credentials(HTTP_X_API_KEY="test-env-key-1-9f8e7d6c5b4a")
    for other in (bob.client, env_client):
        assert other.get("/api/v1/uploads/").json()["results"] == []
        assert other.get(f"/api/v1/uploads/{upload_id}/").status_code == 404
        assert other.get(f"/api/v1/uploads/{upload_id}/content/").status_code == 404
        assert other.delete(f"/api/v1/uploads/{upload_id}/").status_code == 404
        assert other.get(f"/api/v1/keys/{alice_key_id}/").status_code == 404
        assert other.delete(f"/api/v1/keys/{alice_key_id}/").status_code == 404
        assert other.get("/api/v1/users/").status_code == 403
        assert alice.user.username not in str(other.get(ME).json())
    assert alice.client.get(f"/api/v1/uploads/{upload_id}/").status_code == 200
    # two env keys are two identities too
    env_other = APIClient()
    env_other.credentials(HTTP_X_API_KEY="test-env-key-2-1a2b3c4d5e6f")
    env_made = env_client.post("/api/v1/uploads/", {"file": SimpleUploadedFile("b.png", png_bytes())}, format="multipart")
    assert env_other.get(f"/api/v1/uploads/{env_made.json()['id']}/").status_code == 404
    # staff see every key, as administrators
    staff = make_client("root", staff=True)
    assert staff.client.get(f"/api/v1/keys/{alice_key_id}/").status_code == 200
