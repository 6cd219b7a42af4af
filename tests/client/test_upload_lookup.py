"""The uploads list filtered by content digest (``?sha256=``), which lets clients skip re-uploads."""

from __future__ import annotations

import hashlib

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from tests.conftest import png_bytes

pytestmark = pytest.mark.django_db
UPLOADS = "/api/v1/uploads/"


def test_uploads_are_found_by_sha256_of_their_owner_only(alice, bob) -> None:
    first, second = png_bytes(seed=1), png_bytes(seed=2)
    made = [alice.client.post(UPLOADS, {"file": SimpleUploadedFile("a.png", c)}, format="multipart").json() for c in (first, second)]
    bob.client.post(UPLOADS, {"file": SimpleUploadedFile("b.png", first)}, format="multipart")
    digest = hashlib.sha256(first).hexdigest()

    found = alice.client.get(UPLOADS, {"sha256": digest}).json()
    assert [u["id"] for u in found["results"]] == [made[0]["id"]] and found["count"] == 1
    assert alice.client.get(UPLOADS, {"sha256": digest.upper()}).json()["count"] == 1  # hex in any case
    assert alice.client.get(UPLOADS, {"sha256": "0" * 64}).json()["count"] == 0
    assert alice.client.get(UPLOADS).json()["count"] == 2  # no filter: everything of hers
    assert bob.client.get(UPLOADS, {"sha256": hashlib.sha256(second).hexdigest()}).json()["count"] == 0  # alice's, not his


@pytest.mark.parametrize("value", ["abc", "g" * 64, "0" * 63, "0" * 65, ""])
def test_a_malformed_sha256_is_a_400_naming_it(alice, value: str) -> None:
    response = alice.client.get(UPLOADS, {"sha256": value})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "invalid_sha256" and "sha256" in error["message"]


def test_the_filter_is_in_the_schema(client) -> None:
    schema = client.get("/api/schema/?format=json").json()
    parameters = {p["name"]: p for p in schema["paths"]["/api/v1/uploads/"]["get"]["parameters"]}
    assert parameters["sha256"]["schema"]["pattern"] == "^[0-9a-fA-F]{64}$"
    assert "400" in schema["paths"]["/api/v1/uploads/"]["get"]["responses"]
