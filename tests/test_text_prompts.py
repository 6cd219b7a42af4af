"""Text prompts and the text encoder's real limit (32 CLIP tokens, start and end markers included).

Two refusals, one code (`prompt_too_long`), both in the API's words: the web refuses a text with
more words than the limit allows (every word is at least one token) without asking a worker; a
worker refuses a text its tokenizer makes too long (exact count). Nothing is silently cut.
"""

from __future__ import annotations

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from inference.jobs import TEXT_PROMPT_MAX_TOKENS
from sam3site.errors import InvalidInput
from segmentation.serializers import PromptSerializer
from tests.conftest import png_bytes

pytestmark = pytest.mark.django_db
SEGMENT = "/api/v1/segment/"
# 4 words the tiny model's vocabulary does not know: 31 pieces + 2 markers = 33 tokens.
FEW_WORDS_MANY_TOKENS = "quixotic zephyrs juxtapose xylophones"


def test_schema_states_the_real_limit() -> None:
    help_text = PromptSerializer().fields["text"].help_text
    assert f"at most {TEXT_PROMPT_MAX_TOKENS} CLIP tokens" in help_text and "prompt_too_long" in help_text


def test_serializer_refuses_more_words_than_tokens() -> None:
    assert PromptSerializer(data={"text": "dog " * 30}).is_valid()  # 30 words + 2 markers: may fit
    with pytest.raises(InvalidInput) as refused:
        PromptSerializer(data={"text": "dog " * 31}).is_valid()
    assert refused.value.code == "prompt_too_long"
    assert refused.value.message.startswith("The text prompt has at least 33 tokens; the text encoder reads at most 32")


def _image(client) -> str:
    response = client.post("/api/v1/uploads/", {"file": SimpleUploadedFile("p.png", png_bytes(64, 48, seed=5))}, format="multipart")
    assert response.status_code == 201, response.json()
    return response.json()["id"]


def _segment(client, image_id: str, text: str):
    return client.post(SEGMENT, {"image": image_id, "prompts": [{"text": text}], "threshold": 0.0}, format="json")


def test_too_many_words_are_refused_by_the_web(model_worker, alice) -> None:
    image_id = _image(alice.client)
    text = " ".join(["dog"] * 40)  # 159 characters: within the 200-character bound
    response = _segment(alice.client, image_id, text)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "prompt_too_long"
    assert error["message"].startswith("The text prompt has at least 42 tokens; the text encoder reads at most 32")


def test_too_many_tokens_are_refused_by_the_worker_in_our_words(model_worker, alice) -> None:
    image_id = _image(alice.client)
    response = _segment(alice.client, image_id, FEW_WORDS_MANY_TOKENS)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "prompt_too_long"
    assert error["message"].startswith("The text prompt has 33 tokens; the text encoder reads at most 32")
    assert "max_position_embeddings" not in error["message"]  # not transformers' internals


def test_a_prompt_of_exactly_the_limit_is_answered(model_worker, alice) -> None:
    image_id = _image(alice.client)
    response = _segment(alice.client, image_id, " ".join(["dog"] * 30))  # 30 one-token words + 2 markers = 32
    assert response.status_code == 200, response.json()
    assert len(response.json()["results"][0]["instances"]) > 0
