"""The Celery side of video sessions in a model worker."""

from __future__ import annotations

from typing import Any

from celery import shared_task
from celery.signals import worker_ready, worker_shutdown

from inference.runtime_process import current_runtime
from inference.tasks import reply_when_done

COMMAND_TIMEOUT_SECONDS = 600  # opening and prompting a long video can take a while on a CPU


@shared_task(name="sessions.command", ignore_result=True)
def session_command(command: dict[str, Any], reply_key: str) -> None:
    from sessions.worker import require_manager

    reply_when_done(
        reply_key, lambda _runtime: require_manager().execute(command),
        timeout=COMMAND_TIMEOUT_SECONDS, what=f"Session command {command.get('op')}",
    )


@worker_ready.connect
def _start_session_manager(**_kwargs: object) -> None:
    runtime = current_runtime()  # started by inference.tasks' handler, which is connected first
    if runtime is not None:
        from sessions.worker import start_manager

        start_manager(runtime)


@worker_shutdown.connect
def _stop_session_manager(**_kwargs: object) -> None:
    from sessions.worker import current_manager

    manager = current_manager()
    if manager is not None:
        manager.stop()
