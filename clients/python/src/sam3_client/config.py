"""Client settings: where the server is, the key, timeouts and the retry policy."""

from __future__ import annotations

import email.utils
import os
import random
from dataclasses import dataclass, field
from datetime import UTC, datetime

DEFAULT_SERVER_URL = "http://localhost:8000"
API_PREFIX = "/api/v1/"


@dataclass(frozen=True)
class RetryPolicy:
    """Retries of requests the server refused before doing any work.

    429 and 503 answers are retried after their ``Retry-After`` (or an exponential backoff with
    jitter when they have none), at most ``max_retries`` times; an answer asking to wait longer than
    ``max_wait`` seconds (a daily quota: until midnight) is raised at once. A connection that could
    not be opened is retried the same way; other broken connections only for requests that are safe
    to repeat (GET, HEAD, DELETE).
    """

    max_retries: int = 3
    max_wait: float = 60.0
    backoff: float = 0.5
    backoff_cap: float = 8.0
    statuses: frozenset[int] = frozenset({429, 503})

    def backoff_delay(self, attempt: int) -> float:
        base = min(self.backoff_cap, self.backoff * 2**attempt)
        return float(base * (1 + random.random() / 4))  # jitter keeps many clients from retrying in step

    def delay_for_status(self, attempt: int, status: int, retry_after: float | None) -> float | None:
        """Seconds to wait before retrying an answer with this status; None: do not retry."""
        if attempt >= self.max_retries or status not in self.statuses:
            return None
        delay = retry_after if retry_after is not None else self.backoff_delay(attempt)
        return delay if delay <= self.max_wait else None

    def delay_for_failure(self, attempt: int, *, connected: bool, idempotent: bool) -> float | None:
        if attempt >= self.max_retries or (connected and not idempotent):
            return None
        return self.backoff_delay(attempt)


def parse_retry_after(value: str | None) -> float | None:
    """``Retry-After`` as seconds: an integer, or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


@dataclass(frozen=True)
class ClientConfig:
    """``base_url`` and ``api_key`` default to the ``SAM3_SERVER_URL`` and ``SAM3_API_KEY`` variables.

    ``timeout`` bounds each HTTP request (seconds; a model on a CPU can take a minute per image),
    ``connect_timeout`` the opening of a connection or websocket.
    """

    base_url: str = ""
    api_key: str | None = None
    timeout: float = 300.0
    connect_timeout: float = 10.0
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    user_agent: str = ""

    @classmethod
    def build(
        cls, base_url: str | None, api_key: str | None, *, timeout: float, connect_timeout: float, retry: RetryPolicy | None,
        user_agent: str,
    ) -> ClientConfig:
        url = (base_url or os.environ.get("SAM3_SERVER_URL") or DEFAULT_SERVER_URL).rstrip("/")
        url = url.removesuffix(API_PREFIX.rstrip("/"))  # accept the API root as well as the server's
        key = api_key if api_key is not None else (os.environ.get("SAM3_API_KEY") or None)
        return cls(url, key, timeout, connect_timeout, retry or RetryPolicy(), user_agent)

    @property
    def api_url(self) -> str:
        return self.base_url + API_PREFIX

    @property
    def websocket_url(self) -> str:
        scheme, rest = self.base_url.split("://", 1)
        return ("wss" if scheme == "https" else "ws") + "://" + rest

    def headers(self) -> dict[str, str]:
        headers = {"User-Agent": self.user_agent, "Accept": "application/json"}
        if self.api_key:
            headers["X-API-Key"] = self.api_key
        return headers
