"""Image-feature cache of a model worker: keyed by image content hash, bounded by real tensor bytes."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

Value = TypeVar("Value")


@dataclass
class _Entry(Generic[Value]):
    value: Value
    nbytes: int
    expires_at: float


class FeatureCache(Generic[Value]):
    """LRU with a byte budget and a time-to-live. ``max_bytes == 0`` disables it."""

    def __init__(
        self, *, max_bytes: int, ttl_seconds: float, size_of: Callable[[Value], int], clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.max_bytes = max_bytes
        self.ttl_seconds = ttl_seconds
        self._size_of = size_of
        self._clock = clock
        self._entries: OrderedDict[str, _Entry[Value]] = OrderedDict()
        self._lock = threading.Lock()
        self.bytes_used = 0
        self.hits = 0
        self.misses = 0
        self.evictions = 0

    def get(self, key: str) -> Value | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and entry.expires_at <= self._clock():
                self._drop(key)
                entry = None
            if entry is None:
                self.misses += 1
                return None
            self._entries.move_to_end(key)
            self.hits += 1
            return entry.value

    def put(self, key: str, value: Value) -> bool:
        """Store ``value``; False when it is larger than the whole budget (or the cache is off)."""
        nbytes = self._size_of(value)
        if nbytes > self.max_bytes:
            return False
        with self._lock:
            if key in self._entries:
                self._drop(key)
            self._entries[key] = _Entry(value, nbytes, self._clock() + self.ttl_seconds)
            self.bytes_used += nbytes
            now = self._clock()
            for stale in [k for k, e in self._entries.items() if e.expires_at <= now]:
                self._drop(stale)
            while self.bytes_used > self.max_bytes:
                oldest = next(iter(self._entries))
                self._drop(oldest)
                self.evictions += 1
            return True

    def __contains__(self, key: str) -> bool:
        with self._lock:
            entry = self._entries.get(key)
            return entry is not None and entry.expires_at > self._clock()

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self.bytes_used = 0

    def stats(self) -> dict[str, int]:
        return {
            "entries": len(self._entries), "bytes": self.bytes_used, "max_bytes": self.max_bytes,
            "hits": self.hits, "misses": self.misses, "evictions": self.evictions,
        }

    def _drop(self, key: str) -> None:
        entry = self._entries.pop(key)
        self.bytes_used -= entry.nbytes
