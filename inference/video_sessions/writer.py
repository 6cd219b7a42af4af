"""Storing and publishing beside the model thread: one writer thread per worker.

The model thread only computes; what it produces for the session records (frame results, progress,
the final status) and for the websocket clients (events) is handed to this thread, which does the
writes in the order they were handed over. The queue is bounded: when the writer falls behind
(slow disk or database), the model thread blocks on ``submit`` until there is room, so memory stays
bounded and no result is dropped.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable

from django.db import close_old_connections
from loguru import logger

from inference.session_store import SessionFenced

MAX_PENDING_WRITES = 32  # about 32 frames of masks waiting at most; then the model thread waits


class ResultWriter:
    """``on_fenced`` hears of every write refused because another worker owns its session since."""

    def __init__(self, *, on_fenced: Callable[[SessionFenced], None], max_pending: int = MAX_PENDING_WRITES) -> None:
        self._on_fenced = on_fenced
        self._queue: queue.Queue[Callable[[], None] | None] = queue.Queue(max_pending)
        self._thread = threading.Thread(target=self._run, name="session-writer", daemon=True)
        self._thread.start()

    def submit(self, write: Callable[[], None]) -> None:
        """Queue ``write``; blocks while MAX_PENDING_WRITES are waiting (back-pressure on the caller)."""
        self._queue.put(write)

    def drain(self, timeout: float | None = None) -> None:
        """Wait until everything submitted so far is written."""
        done = threading.Event()
        self._queue.put(done.set)
        done.wait(timeout)

    def stop(self) -> None:
        self._queue.put(None)

    def _run(self) -> None:
        while (write := self._queue.get()) is not None:
            try:
                write()
            except SessionFenced as fenced:
                self._on_fenced(fenced)
            except Exception:  # noqa: BLE001 - one failed write must not stop the ones after it
                logger.exception("Session write failed")
            finally:
                close_old_connections()
