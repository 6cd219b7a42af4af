"""The one place Redis clients are made and this server's key names are built.

Every key lives under REDIS_KEY_PREFIX (several deployments may share one Redis). redis-py clients
are thread-safe connection pools, so one client per timeout setting serves a whole process; an
asyncio client belongs to its event loop, so there is one per loop.
"""

from __future__ import annotations

import asyncio
import uuid
import weakref

import redis
import redis.asyncio as aioredis
from django.conf import settings


def key(*parts: str) -> str:
    return ":".join((settings.CONFIG.redis_key_prefix, *parts))


WORKERS_KEY = key("workers")  # hash: worker name -> its heartbeat (inference.registry)


def inflight_key(queue: str) -> str:
    """Sorted set of the image requests admitted to one worker queue (score: their deadline)."""
    return key("inflight", queue)


def new_reply_key() -> str:
    """A list a model worker pushes one reply to; the web process awaits it with BLPOP."""
    return key("reply", uuid.uuid4().hex)


def _redis_url() -> str:
    if not settings.REDIS_URL:
        raise RuntimeError("REDIS_URL is not set: this process runs the embedded default, without Redis")
    return settings.REDIS_URL


_clients: dict[tuple[str, float | None], redis.Redis] = {}
_async_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, aioredis.Redis] = weakref.WeakKeyDictionary()


def client(*, timeout: float | None = 2.0) -> redis.Redis:
    """The process's client whose connects and reads give up after ``timeout`` seconds (None: never)."""
    url = _redis_url()
    found = _clients.get((url, timeout))
    if found is None:
        connect = 2.0 if timeout is None else timeout
        found = _clients[url, timeout] = redis.Redis.from_url(url, socket_connect_timeout=connect, socket_timeout=timeout)
    return found


def async_client() -> aioredis.Redis:
    """The running loop's client. No socket timeout: BLPOP waits on the server side, up to each call's deadline."""
    loop = asyncio.get_running_loop()
    found = _async_clients.get(loop)
    if found is None:
        found = _async_clients[loop] = aioredis.Redis.from_url(_redis_url(), socket_connect_timeout=2, socket_timeout=None)
    return found
