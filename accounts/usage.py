"""Requests per user, key and UTC day: counted in Redis on the request path, written to Postgres in
batches.

Each request is one Redis call (``_COUNT``: HINCRBY on the user's hash for the day, checking the
daily quota first when there is one). Every FLUSH_INTERVAL_SECONDS the web process that gets there
first takes all pending counts atomically (``_TAKE``) and adds them to ``DailyUsage`` with ``F()``
increments; a web process also flushes when it stops (SIGTERM), so nothing is lost when one stops.
Readers (the quota check, ``/api/v1/me/``) add the pending counts to the stored ones.

Without REDIS_URL (the embedded default: one process, SQLite) a request writes its count to the
database directly (write-through): simple, and nothing to lose.

Limits: while a flush is between Redis and Postgres (milliseconds) a quota check does not see the
counts in transit; a web process killed with SIGKILL in that window loses them. Redis must be a
single instance (the scripts touch keys they discover), as everything else here assumes.
"""

from __future__ import annotations

import atexit
import datetime as dt
import os
import signal
import threading
from collections import defaultdict
from typing import Any

import redis
from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import IntegrityError, close_old_connections, transaction
from django.db.models import F
from loguru import logger

from accounts.cache import cached
from accounts.models import ApiKey, DailyUsage
from sam3site import processes, redis_clients

FLUSH_INTERVAL_SECONDS = 5.0
PENDING_KEY = redis_clients.key("usage", "pending")  # the set of per-user-day hashes holding counts
# Incremented after every flush: readers cache what Postgres holds per generation (accounts.cache).
GENERATION_KEY = redis_clients.key("usage", "generation")
_NO_KEY = "-"  # hash field of requests made without a database key (env keys, browser sessions)

# KEYS: the user's hash for the day, PENDING_KEY. ARGV: field, daily limit (-1: none), stored count.
# Returns 1 (counted) or 0 (refused: the quota is used up; nothing counted).
_COUNT = """
local limit = tonumber(ARGV[2])
if limit >= 0 then
  local used = tonumber(ARGV[3])
  for _, value in ipairs(redis.call('HVALS', KEYS[1])) do used = used + tonumber(value) end
  if used >= limit then return 0 end
end
redis.call('HINCRBY', KEYS[1], ARGV[1], 1)
redis.call('SADD', KEYS[2], KEYS[1])
return 1
"""

# KEYS: PENDING_KEY. Takes (reads and deletes) every pending hash: [hash name, [field, count, ...], ...].
_TAKE = """
local taken = {}
for _, name in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local counts = redis.call('HGETALL', name)
  if #counts > 0 then
    redis.call('DEL', name)
    taken[#taken + 1] = name
    taken[#taken + 1] = counts
  end
end
redis.call('DEL', KEYS[1])
return taken
"""

Counts = dict[tuple[int, int | None, dt.date], int]  # (user id, api key id, day) -> requests

_scripts: dict[tuple[int, str], Any] = {}
_flush_lock = threading.Lock()
_flusher_lock = threading.Lock()
_flusher: threading.Thread | None = None
_stopping = threading.Event()


def _redis() -> redis.Redis:
    return redis_clients.client()


def _script(text: str) -> Any:
    """``text`` as a script of this process's client (EVALSHA, loaded on first use)."""
    client = _redis()
    script = _scripts.get((id(client), text))
    if script is None:
        script = _scripts[id(client), text] = client.register_script(text)
    return script


def user_day_key(user_id: int, day: dt.date) -> str:
    return redis_clients.key("usage", day.isoformat(), str(user_id))


def _parse_key(name: bytes) -> tuple[int, dt.date]:
    _, day, user_id = name.decode().rsplit(":", 2)
    return int(user_id), dt.date.fromisoformat(day)


def count_request(*, user_id: int, api_key_id: int | None, day: dt.date, daily_limit: int | None) -> bool:
    """Count one request, unless ``daily_limit`` is set and already reached: then False, nothing counted."""
    if not settings.REDIS_URL:
        return _count_write_through(user_id=user_id, api_key_id=api_key_id, day=day, daily_limit=daily_limit)
    stored = 0
    if daily_limit is not None:
        stored = stored_requests(user_id=user_id, day=day, generation=int(_redis().get(GENERATION_KEY) or 0))
    field = _NO_KEY if api_key_id is None else str(api_key_id)
    limit = -1 if daily_limit is None else daily_limit
    counted = _script(_COUNT)(keys=[user_day_key(user_id, day), PENDING_KEY], args=[field, limit, stored])
    _start_flusher()
    return bool(counted)


def stored_requests(*, user_id: int, day: dt.date, generation: int | None = None) -> int:
    """What Postgres holds for the user's day; with a flush ``generation``, from this process's cache."""
    from accounts.selectors import usage_stored_on

    if generation is None:
        return usage_stored_on(user_id=user_id, day=day)
    return cached("usage-stored", (user_id, day, generation), lambda: usage_stored_on(user_id=user_id, day=day))


def usage_state(*, user_id: int, day: dt.date) -> tuple[int | None, dict[int | None, int]]:
    """(flush generation, requests counted but not yet in the database per api key id (None: without
    a database key)), in one round trip. The generation is None without Redis: nothing to cache by."""
    if not settings.REDIS_URL:
        return None, {}
    pipeline = _redis().pipeline(transaction=False)
    pipeline.get(GENERATION_KEY)
    pipeline.hgetall(user_day_key(user_id, day))
    generation, raw = pipeline.execute()
    return int(generation or 0), {None if field == _NO_KEY.encode() else int(field): int(n) for field, n in raw.items()}


def pending_requests(*, user_id: int, day: dt.date) -> dict[int | None, int]:
    return usage_state(user_id=user_id, day=day)[1]


def _count_write_through(*, user_id: int, api_key_id: int | None, day: dt.date, daily_limit: int | None) -> bool:
    if daily_limit is not None and stored_requests(user_id=user_id, day=day) >= daily_limit:
        return False
    _store({(user_id, api_key_id, day): 1})
    return True


def flush() -> int:
    """Move every pending count from Redis into ``DailyUsage``; the number of requests moved."""
    if not settings.REDIS_URL:
        return 0
    with _flush_lock:
        taken = _script(_TAKE)(keys=[PENDING_KEY])
        counts: Counts = defaultdict(int)
        for name, fields in zip(taken[0::2], taken[1::2], strict=True):
            user_id, day = _parse_key(name)
            for field, value in zip(fields[0::2], fields[1::2], strict=True):
                api_key_id = None if field == _NO_KEY.encode() else int(field)
                counts[(user_id, api_key_id, day)] += int(value)
        if not counts:
            return 0
        try:
            _store(counts)
        except Exception:
            _give_back(counts)  # counted again by the next flush, of this process or another
            raise
        _redis().incr(GENERATION_KEY)  # what every process cached of Postgres is out of date now
        return sum(counts.values())


def _give_back(counts: Counts) -> None:
    pipeline = _redis().pipeline()
    for (user_id, api_key_id, day), requests in counts.items():
        name = user_day_key(user_id, day)
        pipeline.hincrby(name, _NO_KEY if api_key_id is None else str(api_key_id), requests)
        pipeline.sadd(PENDING_KEY, name)
    pipeline.execute()


def _store(counts: Counts) -> None:
    """Add ``counts`` to ``DailyUsage`` in one transaction. A deleted user's counts go with it; a
    deleted key's stay with its user, keyless (as ``on_delete=SET_NULL`` does with stored rows)."""
    user_ids = {user_id for user_id, _, _ in counts}
    key_ids = {key_id for _, key_id, _ in counts if key_id is not None}
    users = set(get_user_model().objects.filter(pk__in=user_ids).values_list("pk", flat=True))
    keys = set(ApiKey.objects.filter(pk__in=key_ids).values_list("pk", flat=True)) if key_ids else set()
    merged: Counts = defaultdict(int)
    for (user_id, key_id, day), requests in counts.items():
        if user_id in users:
            merged[(user_id, key_id if key_id in keys else None, day)] += requests
    with transaction.atomic():
        for (user_id, key_id, day), requests in merged.items():
            rows = DailyUsage.objects.filter(user_id=user_id, api_key_id=key_id, day=day)
            if rows.update(requests=F("requests") + requests) == 0:
                try:
                    with transaction.atomic():
                        DailyUsage.objects.create(user_id=user_id, api_key_id=key_id, day=day, requests=requests)
                except IntegrityError:  # another process created the row first
                    rows.update(requests=F("requests") + requests)


def _start_flusher() -> None:
    """In web processes (``manage.py serve``'s children), the first count starts the periodic flush
    and the flush at exit. Elsewhere (tests, commands) counts wait for a web process, or ``flush()``."""
    global _flusher
    if _flusher is not None or not os.environ.get(processes.SERVING_ENV):
        return
    with _flusher_lock:
        if _flusher is not None:
            return
        _flusher = threading.Thread(target=_flush_periodically, name="usage-flush", daemon=True)
        _flusher.start()
        atexit.register(_flush_at_exit)


def _flush_periodically() -> None:
    while not _stopping.wait(FLUSH_INTERVAL_SECONDS):
        try:
            flush()
        except Exception as error:  # noqa: BLE001 - Redis or Postgres away: the counts wait in Redis
            logger.warning("Usage flush failed, retrying in {}s: {}", FLUSH_INTERVAL_SECONDS, error)
        finally:
            close_old_connections()


def _flush_at_exit() -> None:
    # The supervisor may send a second SIGTERM while this runs: let it not cut the flush short.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    _stopping.set()
    try:
        moved = flush()
    except Exception as error:  # noqa: BLE001
        logger.warning("Usage flush at exit failed; the counts stay in Redis for another process: {}", error)
        return
    if moved:
        logger.info("Usage flushed at exit: {} requests", moved)

