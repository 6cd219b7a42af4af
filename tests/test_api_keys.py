"""Key authentication: header, hashing, revocation, expiry, env keys, anonymous mode, admin and command."""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import re

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.test import Client
from django.utils import timezone
from loguru import logger
from rest_framework.test import APIClient

from accounts.models import ApiKey

pytestmark = pytest.mark.django_db
ME = "/api/v1/me/"


def get_with_key(key: str | None, path: str = ME):
    client = APIClient()
    if key is not None:
        client.credentials(HTTP_X_API_KEY=key)
    return client.get(path)


def test_key_authenticates_and_is_stored_only_hashed(alice) -> None:
    response = alice.client.get(ME)
    assert response.status_code == 200
    assert response.json()["username"] == "alice"
    stored = ApiKey.objects.get(user=alice.user)
    assert alice.key.startswith(stored.prefix + ".")
    assert stored.hashed_key == hashlib.sha256(alice.key.encode()).hexdigest()
    secret = alice.key.split(".", 1)[1]
    for value in ApiKey.objects.values_list().get(pk=stored.pk):
        assert secret not in str(value)
    assert stored.last_used_at is not None


@pytest.mark.parametrize(
    "key", ["", "nonsense", "abcd1234.wrongsecret", "abcd1234", ".", "x" * 500], ids=lambda key: key[:12] or "blank"
)
def test_wrong_keys_are_401(alice, key: str) -> None:
    response = get_with_key(key or " ")
    assert response.status_code == 401
    assert response.json()["error"]["code"] in {"invalid_api_key", "authentication_required"}


def test_right_prefix_wrong_secret_is_401(alice) -> None:
    prefix = alice.key.split(".")[0]
    response = get_with_key(f"{prefix}.not-the-secret")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_api_key"
    assert response["WWW-Authenticate"] == "X-API-Key"


def test_revoked_key_is_refused(alice) -> None:
    ApiKey.objects.filter(user=alice.user).update(revoked=True)
    response = alice.client.get(ME)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "api_key_revoked"


def test_expired_key_is_refused_and_unexpired_accepted(make_client) -> None:
    expired = make_client("carol", expires_at=timezone.now() - dt.timedelta(seconds=1))
    assert expired.client.get(ME).json()["error"]["code"] == "api_key_expired"
    fresh = make_client("dave", expires_at=timezone.now() + dt.timedelta(days=1))
    assert fresh.client.get(ME).status_code == 200


def test_inactive_user_key_is_refused(alice) -> None:
    get_user_model().objects.filter(pk=alice.user.pk).update(is_active=False)
    assert alice.client.get(ME).status_code == 401


def test_env_keys_are_accepted_each_as_its_own_user() -> None:
    first = get_with_key("test-env-key-1-9f8e7d6c5b4a").json()
    second = get_with_key("test-env-key-2-1a2b3c4d5e6f").json()
    assert first["username"] != second["username"]
    assert first["api_key"].startswith("env:")
    assert "test-env-key-1-9f8e7d6c5b4a" not in str(first)
    assert get_with_key("test-env-key-1-9f8e7d6c5b4a").json()["id"] == first["id"]  # stable identity


def test_anonymous_mode_serves_stateless_endpoints_but_not_stored_objects(settings) -> None:
    settings.REQUIRE_API_KEY = False
    assert get_with_key(None, "/api/schema/").status_code == 200
    response = get_with_key(None, "/api/v1/uploads/")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "authentication_required"


def test_required_mode_refuses_anonymous_everywhere_in_the_api(settings, alice) -> None:
    settings.REQUIRE_API_KEY = True
    for path in (ME, "/api/v1/uploads/", "/api/v1/keys/"):
        response = get_with_key(None, path)
        assert response.status_code == 401, path
        assert response.json()["error"]["code"] == "authentication_required"
    assert alice.client.get(ME).status_code == 200


def test_keys_never_reach_the_logs(alice) -> None:
    lines: list[str] = []
    sink = logger.add(lines.append, level="TRACE")
    try:
        alice.client.get(ME)
        get_with_key("abcd1234.super-secret-guess")
    finally:
        logger.remove(sink)
    text = "".join(lines)
    assert alice.key.split(".")[0] in text  # the public prefix is logged...
    assert alice.key.split(".")[1] not in text  # ...the secret never
    assert "super-secret-guess" not in text


def test_create_api_key_command_prints_a_working_key() -> None:
    out, err = io.StringIO(), io.StringIO()
    call_command("create_api_key", "--user", "erin", "--name", "ci", "--expires-in-days", "3", stdout=out, stderr=err)
    key = out.getvalue().strip()
    assert re.fullmatch(r"[0-9a-f]{8}\.[A-Za-z0-9_-]{40,}", key)
    assert get_with_key(key).json()["username"] == "erin"
    assert key not in err.getvalue()
    assert ApiKey.objects.get(prefix=key.split(".")[0]).expires_at is not None


def test_admin_shows_the_full_key_exactly_once(admin_user) -> None:
    browser = Client()
    browser.force_login(admin_user)
    response = browser.post(
        "/admin/accounts/apikey/add/", {"user": admin_user.pk, "name": "from admin", "expires_at_0": "", "expires_at_1": ""},
        follow=True,
    )
    assert response.status_code == 200
    page = response.content.decode()
    key = re.search(r"([0-9a-f]{8}\.[A-Za-z0-9_-]{40,})", page).group(1)
    assert get_with_key(key).status_code == 200
    api_key = ApiKey.objects.get(prefix=key.split(".")[0])
    again = browser.get(f"/admin/accounts/apikey/{api_key.pk}/change/").content.decode()
    assert key.split(".")[1] not in again
    assert api_key.prefix in again


def test_users_manage_their_own_keys_over_the_api(alice, bob) -> None:
    created = alice.client.post("/api/v1/keys/", {"name": "second"}, format="json")
    assert created.status_code == 201
    new_key = created.json()["key"]
    assert get_with_key(new_key).json()["username"] == "alice"
    listed = alice.client.get("/api/v1/keys/").json()["results"]
    assert {item["name"] for item in listed} == {"test", "second"}
    assert all("key" not in item for item in listed)
    # bob cannot see or revoke alice's key
    key_id = created.json()["id"]
    assert bob.client.get(f"/api/v1/keys/{key_id}/").status_code == 404
    assert bob.client.delete(f"/api/v1/keys/{key_id}/").status_code == 404
    assert alice.client.delete(f"/api/v1/keys/{key_id}/").status_code == 204
    assert get_with_key(new_key).json()["error"]["code"] == "api_key_revoked"


def test_staff_manage_users_and_quotas_over_the_api(make_client, alice) -> None:
    staff = make_client("root", staff=True)
    assert alice.client.get("/api/v1/users/").status_code == 403
    created = staff.client.post(
        "/api/v1/users/", {"username": "frank", "quota": {"requests_per_minute": 5, "daily_requests": 100}}, format="json"
    )
    assert created.status_code == 201, created.json()
    user_id = created.json()["id"]
    key = staff.client.post("/api/v1/keys/", {"name": "for frank", "user": "frank"}, format="json").json()["key"]
    me = get_with_key(key).json()
    assert me["username"] == "frank"
    assert me["quota"]["requests_per_minute"] == 5
    assert me["quota"]["daily_requests"] == 100
    patched = staff.client.patch(f"/api/v1/users/{user_id}/", {"quota": {"daily_requests": 7}}, format="json")
    assert patched.json()["quota"]["daily_requests"] == 7
    # a non-staff user may not name an owner at all, and cannot tell whether the user exists
    answers = [
        alice.client.post("/api/v1/keys/", {"name": "sneaky", "user": username}, format="json")
        for username in ("frank", "nobody-by-that-name")
    ]
    assert {response.status_code for response in answers} == {400}
    assert {response.json()["error"]["code"] for response in answers} == {"field_not_allowed"}
    assert len({response.json()["error"]["message"] for response in answers}) == 1
    assert not ApiKey.objects.filter(name="sneaky").exists()
