"""What every request asks about its caller (the key, its user, their quota), kept in this process
for at most IDENTITY_TTL_SECONDS instead of asked of Postgres on every request.

The bound is the promise: a key revoked, a user deactivated or deleted, a quota changed in any way
(the API, the admin, the ORM, SQL) is honoured by every web process within IDENTITY_TTL_SECONDS.
Changes made through the ORM (the API, the admin, ``save()``/``delete()``) clear this process's
entries at once (signals below); queryset ``update()`` calls in this app clear them explicitly.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from django.contrib.auth import get_user_model
from django.core.signals import setting_changed
from django.db.models.signals import post_delete, post_save

IDENTITY_TTL_SECONDS = 2.0
MAX_ENTRIES = 10_000  # distinct keys, users and quotas seen within one TTL; beyond it the cache starts over

T = TypeVar("T")
_entries: dict[tuple[str, Any], tuple[float, Any]] = {}
_lock = threading.Lock()


def cached(kind: str, key: Any, load: Callable[[], T], *, keep_none: bool = True) -> T:
    """``load()``'s value for (kind, key), reused for IDENTITY_TTL_SECONDS (``keep_none=False``: a
    None is asked again next time)."""
    now = time.monotonic()
    entry = _entries.get((kind, key))
    if entry is not None and entry[0] > now:
        return entry[1]
    value = load()
    if value is None and not keep_none:
        return value
    with _lock:
        if len(_entries) >= MAX_ENTRIES:
            _entries.clear()
        _entries[(kind, key)] = (now + IDENTITY_TTL_SECONDS, value)
    return value


def forget_all(**_kwargs: object) -> None:
    """Drop every entry of this process (other processes drop theirs within the TTL)."""
    with _lock:
        _entries.clear()


def connect_signals() -> None:
    from accounts.models import ApiKey, Quota

    for model in (ApiKey, Quota, get_user_model()):
        post_save.connect(forget_all, sender=model, dispatch_uid=f"accounts.cache.save.{model.__name__}")
        post_delete.connect(forget_all, sender=model, dispatch_uid=f"accounts.cache.delete.{model.__name__}")
    setting_changed.connect(forget_all, dispatch_uid="accounts.cache.settings")  # tests override quotas' defaults
