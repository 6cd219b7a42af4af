"""The environment contract: every kind of value parsed, every bad value named."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from sam3site.config import Config, ConfigurationError, get_config
from sam3site.management.commands.config_reference import REFERENCE_PATH, render_reference

ROOT = Path(__file__).resolve().parent.parent
CONTRACT = {
    "SERVER_HOST": "0.0.0.0", "SERVER_PORT": 8000, "SERVER_WORKERS": 1, "LOG_LEVEL": "INFO", "RELOAD": False,
    "IMAGE_MODEL_DEVICE": "cuda:0", "IMAGE_MODEL_COMPILE": False, "IMAGE_MODEL_CONFIDENCE_THRESHOLD": 0.5,
    "IMAGE_MODEL_RESOLUTION": 1008, "IMAGE_MODEL_ENABLED": True, "VIDEO_MODEL_ENABLED": True,
    "VIDEO_MODEL_REQUIRED": False, "VIDEO_GPU_LIST": [0, 1, 2, 3], "VIDEO_MODEL_COMPILE": False,
    "VIDEO_MODEL_TEMPORAL_DISAMBIGUATION": True, "MAX_CONCURRENT_SESSIONS": 10, "SESSION_TIMEOUT_SECONDS": 3600,
    "SESSION_CLEANUP_INTERVAL_SECONDS": 300, "ENABLE_FEATURE_CACHE": True, "FEATURE_CACHE_TTL_SECONDS": 600,
    "MAX_CACHE_SIZE_MB": 4096, "REQUIRE_API_KEY": False, "API_KEYS": ["your-api-key-1", "your-api-key-2"],
    "CORS_ORIGINS_LIST": ["*"], "RATE_LIMIT_ENABLED": True, "RATE_LIMIT_REQUESTS_PER_MINUTE": 100,
    "UPLOAD_DIR": Path("/tmp/sam3_uploads"), "OUTPUT_DIR": Path("/tmp/sam3_outputs"), "MAX_UPLOAD_SIZE_MB": 100,
    "ENABLE_METRICS": True, "METRICS_PORT": 9090,
}


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    for name in list(os.environ):
        if name.lower() in Config.model_fields:
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)  # no stray .env
    return monkeypatch


def load() -> Config:
    get_config.cache_clear()
    try:
        return get_config()
    finally:
        get_config.cache_clear()


def test_defaults_match_the_contract(clean_env: pytest.MonkeyPatch) -> None:
    config = load()
    for variable, expected in CONTRACT.items():
        assert getattr(config, variable.lower()) == expected, variable
    assert config.sam3_checkpoint.name == "sam3.pt"
    assert config.sam3_bpe_path.name == "bpe_simple_vocab_16e6.txt.gz"
    assert config.embedded  # no REDIS_URL: one process


@pytest.mark.parametrize(
    ("variable", "raw", "attribute", "parsed"),
    [
        ("SERVER_PORT", "8123", "server_port", 8123),
        ("RELOAD", "yes", "reload", True),
        ("IMAGE_MODEL_COMPILE", "1", "image_model_compile", True),
        ("IMAGE_MODEL_CONFIDENCE_THRESHOLD", "0.25", "image_model_confidence_threshold", 0.25),
        ("VIDEO_GPU_LIST", "[0,1]", "video_gpu_list", [0, 1]),
        ("API_KEYS", '["k1","k2","k3"]', "api_keys", ["k1", "k2", "k3"]),
        ("LOG_LEVEL", "DEBUG", "log_level", "DEBUG"),
        ("IMAGE_MODEL_DEVICE", "cuda:3", "image_model_device", "cuda:3"),
        ("UPLOAD_DIR", "/srv/up", "upload_dir", Path("/srv/up")),
        ("REDIS_URL", "redis://h:6379/0", "redis_url", "redis://h:6379/0"),
        ("DATABASE_URL", "", "database_url", None),
    ],
)
def test_good_values_are_parsed(clean_env: pytest.MonkeyPatch, variable: str, raw: str, attribute: str, parsed: object) -> None:
    clean_env.setenv("API_KEYS", "[]")  # REDIS_URL leaves the quick start, where example keys are refused
    clean_env.setenv(variable, raw)
    assert getattr(load(), attribute) == parsed


@pytest.mark.parametrize(
    "keys",
    [
        None,  # the contract's default: the source document's examples
        '["your-api-key-1"]',
        '["key1", "key2", "key3"]',  # the source document's REQUIRE_API_KEY example
        '["YOUR-API-KEY"]',
        '["short-but-real"]',
        '["aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"]',
        '["0c5f9e2ab7d4e1f3a6b8c9d0e1f2a3b4", "your-api-key-2"]',
    ],
)
def test_example_and_weak_static_keys_stop_a_deployment(clean_env: pytest.MonkeyPatch, keys: str | None) -> None:
    clean_env.setenv("REDIS_URL", "redis://127.0.0.1:6379/0")
    if keys is not None:
        clean_env.setenv("API_KEYS", keys)
    with pytest.raises(ConfigurationError) as error:
        load()
    message = str(error.value)
    assert "API_KEYS" in message
    for secret in ("your-api-key", "key1", "short-but-real", "aaaaaaaa", "0c5f9e2a"):
        assert secret not in message.lower()  # described, never echoed


def test_real_static_keys_are_accepted_and_examples_only_warn_on_the_quick_start(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("REDIS_URL", "redis://127.0.0.1:6379/0")
    clean_env.setenv("API_KEYS", '["0c5f9e2ab7d4e1f3a6b8c9d0e1f2a3b4", "ops-Key_2026-Xq7LmP9vR2tW"]')
    assert load().weak_static_keys() == []
    clean_env.setenv("API_KEYS", "[]")
    assert load().api_keys == []
    clean_env.delenv("REDIS_URL")  # embedded quick start: kept, but flagged
    clean_env.delenv("API_KEYS")
    assert len(load().weak_static_keys()) == 2
    clean_env.setenv("REDIS_URL", "redis://127.0.0.1:6379/0")
    clean_env.setenv("DEBUG", "true")  # development: kept, flagged
    assert len(load().weak_static_keys()) == 2


@pytest.mark.parametrize(
    ("variable", "raw", "expected_words"),
    [
        ("SERVER_PORT", "eighty", "valid integer"),
        ("SERVER_PORT", "70000", "less than or equal to 65535"),
        ("SERVER_WORKERS", "0", "greater than or equal to 1"),
        ("RELOAD", "maybe", "valid boolean"),
        ("IMAGE_MODEL_CONFIDENCE_THRESHOLD", "1.5", "less than or equal to 1"),
        ("VIDEO_GPU_LIST", "0,1", "error parsing value"),
        ("VIDEO_GPU_LIST", '["a"]', "valid integer"),
        ("LOG_LEVEL", "LOUD", "Input should be"),
        ("IMAGE_MODEL_DEVICE", "tpu", "should match pattern"),
        ("API_KEYS", '[""]', "must not be empty"),
        ("MAX_UPLOAD_SIZE_MB", "-5", "greater than or equal to 1"),
    ],
)
def test_bad_values_name_the_variable(
    clean_env: pytest.MonkeyPatch, variable: str, raw: str, expected_words: str
) -> None:
    clean_env.setenv(variable, raw)
    with pytest.raises(ConfigurationError) as error:
        load()
    message = str(error.value)
    assert variable in message
    assert expected_words.lower() in message.lower()


def test_secret_values_are_never_echoed(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("DJANGO_SECRET_KEY", "short-secret-value")
    with pytest.raises(ConfigurationError) as error:
        load()
    assert "DJANGO_SECRET_KEY" in str(error.value)
    assert "short-secret-value" not in str(error.value)


def test_dotenv_file_is_read_and_environment_wins(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("SERVER_PORT=8500\nMAX_CONCURRENT_SESSIONS=5\n")
    clean_env.setenv("MAX_CONCURRENT_SESSIONS", "7")
    config = load()
    assert config.server_port == 8500
    assert config.max_concurrent_sessions == 7


def test_bad_value_stops_manage_py_with_a_clear_message() -> None:
    env = {**os.environ, "SERVER_WORKERS": "many"}
    result = subprocess.run(
        [sys.executable, "manage.py", "check"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode != 0
    assert "SERVER_WORKERS" in result.stderr
    assert "Traceback" not in result.stderr


def test_configuration_reference_is_current_and_complete() -> None:
    assert REFERENCE_PATH.read_text() == render_reference(), "run: python manage.py config_reference"
    for variable in [*CONTRACT, "SAM3_CHECKPOINT", "SAM3_BPE_PATH", "DATABASE_URL", "REDIS_URL", "DJANGO_SECRET_KEY"]:
        assert f"`{variable}`" in REFERENCE_PATH.read_text()
