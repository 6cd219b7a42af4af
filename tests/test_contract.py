"""Contract test: the OpenAPI schema served at /api/schema/ matches what the live server answers.

Schemathesis generates requests for every operation of the schema, valid and invalid ones, and
sends them to a real server (daphne + a Celery model worker with the tiny SAM3, Postgres, Redis)
with a non-staff user's key. Every response must be no server error, and its status code, content
type and body must be ones the schema documents. No operation is excluded: the schema has no admin
or websocket routes, and the staff-only ones (users) are sent too (they must answer the documented
403 to this key).

Random ids address nothing (404), and random bodies are mostly refused (400), so that success
responses get checked too, the schema's own request examples are sent, and two cases in three
address real objects of the user instead: an image and a video upload, an open session (with an
object in it, or a propagation running, where the operation needs one), a spare API key. Such cases
carry sentinel ids, swapped for the real objects just before sending (the objects are made again
when an earlier case deleted or closed them). The test then asserts that every operation answered
with a success at least once, besides finding nothing.

The generation is derandomized (Hypothesis derives its seed from the test code), so a run is
reproducible; findings are reported unshrunk, as found, with a curl line to reproduce them. The test
drives schemathesis's strategies itself, one Hypothesis run per operation against one server:
``schemathesis.pytest.from_fixture`` would do the same, but it fails on pytest 9.2 (it rewrites
``Function._nodeid``, which pytest no longer has).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import hypothesis
import jsonschema
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.errors import FailureGroup
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from accounts.models import ApiKey
from accounts.services import api_key_create
from sam3site.errors import error_body
from sessions.models import VideoSession
from tests.conftest import KeyedClient, LiveServer, mp4_bytes, png_bytes
from uploads.models import Upload

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
EXAMPLES_PER_OPERATION = 20  # generated cases per operation, besides the schema's request examples
# The users endpoints are staff-only: this non-staff key can only be refused there (403, checked).
# Label Studio's /predict succeeds only on tasks whose files a Label Studio serves: tests/labelstudio.
NO_SUCCESS_EXPECTED = {"/api/v1/users/", "/api/v1/users/{id}/", "/label-studio/predict"}

# Sentinels, swapped for real objects' ids before a case is sent (distinct from anything generated).
REAL_SESSION = "c0ffee00-5e55-4000-8000-000000000001"
REAL_IMAGE = "c0ffee00-1a6e-4000-8000-000000000002"
REAL_VIDEO = "c0ffee00-71de-4000-8000-000000000003"
REAL_KEY = 987_654_321
REAL_OBJECT = 987_654_322
PNG = png_bytes(48, 32, seed=7)
MP4 = mp4_bytes(frames=4)
CLICK = {"frame": 0, "points": [[32, 24]], "point_labels": [1]}


class RealObjects:
    """The user's real objects, made again through the API when a case has deleted or closed them."""

    def __init__(self, server: LiveServer, client: KeyedClient) -> None:
        self.server, self.client = server, client
        self.ids: dict[str, Any] = {}

    def api(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        headers = {"X-API-Key": self.client.key}
        return requests.request(method, f"{self.server.url}/api/v1{path}", headers=headers, timeout=60, **kwargs)

    def _upload(self, name: str, content: bytes) -> str:
        current = self.ids.get(name)
        if current is None or not Upload.objects.filter(pk=current).exists():
            response = self.api("POST", "/uploads/", files={"file": (name, content)})
            assert response.status_code == 201, response.text
            self.ids[name] = response.json()["id"]
        return self.ids[name]

    def image(self) -> str:
        return self._upload("image.png", PNG)

    def video(self) -> str:
        return self._upload("video.mp4", MP4)

    def session(self) -> str:
        current = self.ids.get("session")
        if current is None or not VideoSession.objects.filter(pk=current, status__in=VideoSession.OPEN_STATUSES).exists():
            response = self.api("POST", "/sessions/", json={"video": self.video()})
            assert response.status_code == 201, response.text
            self.ids["session"] = response.json()["id"]
        return self.ids["session"]

    def ready_session(self) -> str:
        """The session, once no propagation runs in it any more (a running one is cancelled)."""
        session_id = self.session()
        deadline = time.monotonic() + 60
        while (session := VideoSession.objects.get(pk=session_id)).status != VideoSession.Status.READY:
            assert time.monotonic() < deadline, f"session {session_id} stayed {session.status}: {session.propagation}"
            status = session.status
            if status == VideoSession.Status.PROPAGATING:
                self.api("POST", f"/sessions/{session_id}/cancel/")
            time.sleep(0.2)
        return session_id

    def new_object(self) -> int:
        """A new object tracked in the session (a click on frame 0)."""
        response = self.api("POST", f"/sessions/{self.ready_session()}/prompts/", json=CLICK)
        assert response.status_code == 200, response.text
        return response.json()["object_id"]

    def start_propagation(self) -> None:
        self.new_object()
        response = self.api("POST", f"/sessions/{self.session()}/propagate/", json={})
        assert response.status_code == 202, response.text

    def key(self) -> int:
        current = self.ids.get("key")
        if current is None or not ApiKey.objects.filter(pk=current, revoked=False).exists():
            api_key, _full_key = api_key_create(user=self.client.user, name="spare")
            self.ids["key"] = api_key.pk
        return self.ids["key"]

    def resolve(self, value: Any) -> Any:
        makers: dict[Any, Callable[[], Any]] = {
            REAL_SESSION: self.session, REAL_IMAGE: self.image, REAL_VIDEO: self.video, REAL_KEY: self.key,
            REAL_OBJECT: self.new_object,
        }
        return makers[value]() if isinstance(value, str | int) and value in makers else value

    def prepare(self, case: schemathesis.Case) -> None:
        parameters = case.path_parameters or {}
        if parameters.get("session_id") == REAL_SESSION:
            action = case.path.rstrip("/").rsplit("/", 1)[-1]
            if action == "cancel":
                self.start_propagation()  # cancelling needs a propagation running
            elif action == "propagate":
                self.new_object()  # propagating needs something to track
            elif action in ("prompts", "remove-object", "reset"):
                self.ready_session()
        case.path_parameters = {name: self.resolve(value) for name, value in parameters.items()}
        if isinstance(case.body, dict):
            case.body = {name: self.resolve(value) for name, value in case.body.items()}

    def tidy(self, case: schemathesis.Case, response: requests.Response) -> None:
        # A session opened by a case is closed again, so that the user's session quota never runs out.
        if case.method == "POST" and case.path.endswith("/sessions/") and response.status_code == 201:
            self.api("DELETE", f"/sessions/{response.json()['id']}/")


def with_real_objects(case: schemathesis.Case, upload: str) -> schemathesis.Case:
    """The case with its ids replaced by sentinels of real objects (``upload``: which upload a path's id names)."""
    parameters = dict(case.path_parameters or {})
    if "session_id" in parameters:
        parameters["session_id"] = REAL_SESSION
    elif "id" in parameters and "/uploads/" in case.path:
        parameters["id"] = upload
    elif "id" in parameters and "/keys/" in case.path:
        parameters["id"] = REAL_KEY
    case.path_parameters = parameters
    if isinstance(case.body, dict):
        body = dict(case.body)
        for name, sentinel in (("video", REAL_VIDEO), ("image", REAL_IMAGE), ("object_id", REAL_OBJECT)):
            if name in body:
                body[name] = sentinel
        if "file" in body and case.media_type == "multipart/form-data":
            body["file"] = PNG
        case.body = body
    return case


@pytest.fixture
def contract(start_server, model_worker, make_client):
    server = start_server()
    client = make_client("contract-user")  # not staff
    # The key goes in every request's headers; generated X-API-Key values would only test 401s.
    config = schemathesis.Config.from_dict({"generation": {"with-security-parameters": False}})
    schema = schemathesis.openapi.from_url(f"{server.url}/api/schema/", config=config)
    schema.config.update(base_url=server.url)
    return schema, RealObjects(server, client), ApiKey.objects.get(user=client.user, name="test").pk


def run_operation(operation: schemathesis.APIOperation, real: RealObjects, own_key: int, statuses: Counter) -> None:
    def send(case: schemathesis.Case, upload: str | None) -> None:
        if upload is not None:
            case = with_real_objects(case, upload)
        # Never revoke the key this test authenticates with: every later case would be a 401.
        if case.method == "DELETE" and "/keys/" in case.path and case.path_parameters.get("id") == own_key:
            case.path_parameters = {**case.path_parameters, "id": REAL_KEY}
        real.prepare(case)
        response = case.call_and_validate(headers={"X-API-Key": real.client.key}, checks=CHECKS)
        statuses[response.status_code] += 1
        real.tidy(case, response)

    settings = hypothesis.settings(
        derandomize=True, database=None, deadline=None,
        phases=[Phase.explicit, Phase.generate],  # no shrinking: a finding is reported as found
        suppress_health_check=list(HealthCheck),
    )
    # The schema's request examples, with real objects.
    for example in operation.get_strategies_from_examples():
        hypothesis.settings(settings, max_examples=1)(hypothesis.given(case=example)(lambda case: send(case, REAL_IMAGE)))()
    # Generated cases, valid and invalid; two in three address real objects (a path's upload: the image or the video).
    cases = st.one_of(operation.as_strategy(GenerationMode.POSITIVE), operation.as_strategy(GenerationMode.NEGATIVE))
    uploads = st.sampled_from([None, REAL_IMAGE, REAL_VIDEO])
    hypothesis.settings(settings, max_examples=EXAMPLES_PER_OPERATION)(hypothesis.given(case=cases, upload=uploads)(send))()


def test_the_server_keeps_its_openapi_contract(contract) -> None:
    schema, real, own_key = contract
    findings: list[str] = []
    statuses: dict[str, Counter] = {}
    for result in schema.get_all_operations():
        operation = result.ok()  # raises for an operation the schema describes invalidly
        statuses[operation.label] = Counter()
        try:
            run_operation(operation, real, own_key, statuses[operation.label])
        except FailureGroup as finding:  # every operation runs; all findings are reported together
            findings.append(f"{operation.label}:\n{finding}")
    print("\n".join(f"{label}: {dict(sorted(counts.items()))}" for label, counts in statuses.items()))
    assert not findings, f"{len(findings)} operation(s) break the contract:\n\n" + "\n\n".join(findings)
    assert len(statuses) >= 28
    never_succeeded = [
        label for label, counts in statuses.items()
        if label.split(" ")[1] not in NO_SUCCESS_EXPECTED and not any(200 <= status < 300 for status in counts)
    ]
    assert not never_succeeded, f"no success response was checked for {never_succeeded}"


@pytest.mark.django_db
def test_every_operation_documents_the_errors_it_can_give(client) -> None:
    schema = client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()
    # The one error body (sam3site.errors.error_body) is what the schema's ErrorResponse describes.
    error_response = {"$ref": "#/components/schemas/ErrorResponse", "components": schema["components"]}
    jsonschema.validate(error_body("invalid", "Some fields are invalid.", {"prompts": ["required"]}, "abc"), error_response)
    fields = schema["components"]["schemas"]["Error"]["properties"]
    assert fields["detail"]["nullable"] and fields["request_id"]["nullable"]  # OpenAPI 3.0's null, unknown to jsonschema
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            responses = operation["responses"]
            expected = {"401", "403", "429"}
            if "requestBody" in operation:
                expected |= {"400", "413", "415"}
            if any(parameter["in"] == "path" for parameter in operation.get("parameters", [])):
                expected.add("404")
            assert expected <= set(responses), (method, path, sorted(responses))
            for status, response in responses.items():
                if status.startswith(("4", "5")):
                    assert response["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/ErrorResponse"}
                if status in ("429", "503"):
                    assert "Retry-After" in response["headers"], (method, path, status)
    content = schema["paths"]["/api/v1/uploads/{id}/content/"]["get"]["responses"]["200"]["content"]
    assert {"image/png", "image/jpeg", "video/mp4", "video/webm"} <= set(content)
    assert "application/octet-stream" not in content
