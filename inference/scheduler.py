"""One thread owns the model; every piece of work goes through its queue.

Image jobs that are waiting together are handed to the host as one batch (at most
``max_batch_size``), so their backbone passes can share a forward. Long work (video propagation)
is submitted as a *stream*: a generator that does one frame per ``next()``; after each step it goes
to the back of the queue, so a long propagation interleaves with everything else at frame
granularity instead of starving it.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Generator
from concurrent.futures import Future
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from loguru import logger

from inference.jobs import ImageJob
from inference.metrics import EXPIRED_JOBS
from sam3site.errors import ApiError, DeadlineExceeded

if TYPE_CHECKING:
    from inference.host import ModelHost


@dataclass
class _ImageWork:
    job: ImageJob
    future: Future


@dataclass
class _StreamWork:
    steps: Generator[Any, None, None]
    future: Future  # resolved with the generator's return value, or its exception


@dataclass
class _CallWork:
    function: Callable[[], Any]
    future: Future


class ModelScheduler:
    def __init__(self, host: ModelHost, *, max_batch_size: int = 1) -> None:
        self.host = host
        self.max_batch_size = max_batch_size
        self._queue: deque[_ImageWork | _StreamWork | _CallWork] = deque()
        self._wakeup = threading.Condition()
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="model-scheduler", daemon=True)

    def start(self, *, load: bool = True) -> None:
        """Start the thread; it loads the model first (so loading never blocks a caller)."""
        if load:
            self._queue.appendleft(_CallWork(self.host.load, Future()))
        self._thread.start()

    def stop(self) -> None:
        with self._wakeup:
            self._stopped = True
            self._wakeup.notify_all()

    @property
    def pending(self) -> int:
        return len(self._queue)

    def submit_image(self, job: ImageJob) -> Future:
        return self._put(_ImageWork(job, Future()))

    def submit_stream(self, steps: Generator[Any, None, None]) -> Future:
        return self._put(_StreamWork(steps, Future()))

    def call(self, function: Callable[[], Any]) -> Future:
        """Run ``function`` on the model thread (e.g. a one-frame video prompt)."""
        return self._put(_CallWork(function, Future()))

    def _put(self, work: _ImageWork | _StreamWork | _CallWork) -> Future:
        with self._wakeup:
            self._queue.append(work)
            self._wakeup.notify()
        return work.future

    def _take(self) -> list[_ImageWork] | _StreamWork | _CallWork | None:
        with self._wakeup:
            while not self._queue and not self._stopped:
                self._wakeup.wait()
            if self._stopped:
                return None
            first = self._queue.popleft()
            if not isinstance(first, _ImageWork):
                return first
            batch = [first]
            for work in list(self._queue):
                if len(batch) >= self.max_batch_size:
                    break
                if isinstance(work, _ImageWork):
                    self._queue.remove(work)
                    batch.append(work)
            return batch

    def _run(self) -> None:
        while (work := self._take()) is not None:
            try:
                if isinstance(work, list):
                    self._run_images(work)
                elif isinstance(work, _StreamWork):
                    self._step(work)
                elif work.future.set_running_or_notify_cancel():
                    work.future.set_result(work.function())
            except BaseException as error:  # noqa: BLE001 - the thread must outlive any one job
                if isinstance(error, ApiError):  # the client's mistake or a refusal, answered as such: no fault here
                    level = "INFO" if error.status_code < 500 else "WARNING"
                    logger.log(level, "Model work refused: {} {} ({})", error.status_code, error.code, error.message)
                else:
                    logger.exception("Model work failed")
                futures = [w.future for w in work] if isinstance(work, list) else [work.future]
                for future in futures:
                    if not future.done():
                        future.set_exception(error)

    def _run_images(self, batch: list[_ImageWork]) -> None:
        live = []
        for work in batch:
            if not work.future.set_running_or_notify_cancel():
                continue
            if work.job.expired:
                EXPIRED_JOBS.inc()
                work.future.set_exception(DeadlineExceeded())
                continue
            live.append(work)
        if not live:
            return
        for work, outcome in zip(live, self.host.run_image_jobs([w.job for w in live]), strict=True):
            if isinstance(outcome, Exception):
                work.future.set_exception(outcome)
            else:
                work.future.set_result(outcome)

    def _step(self, work: _StreamWork) -> None:
        if work.future.cancelled():
            work.steps.close()
            return
        try:
            next(work.steps)
        except StopIteration as finished:
            work.future.set_result(finished.value)
            return
        with self._wakeup:
            self._queue.append(work)  # to the back: others get their turn between frames
