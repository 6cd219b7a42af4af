"""The Celery side of video sessions in a model worker (task name ``sessions.command``, kept stable)."""

from __future__ import annotations

from typing import Any

import pydantic
from celery import shared_task
from celery.signals import worker_ready, worker_shutdown

from inference.gateway import COMMAND_TIMEOUT_SECONDS, SESSION_COMMAND_TASK
from inference.messages import SessionMessage
from inference.runtime_process import current_runtime
from inference.tasks import reply_when_done
from sam3site.errors import InvalidInput


@shared_task(name=SESSION_COMMAND_TASK, ignore_result=True)
def session_command(message: dict[str, Any], reply_key: str) -> None:
    from inference.video_sessions.manager import require_manager

    def submit(_runtime: object):  # noqa: ANN202
        try:  # validated once, here at the edge; trusted from here on
            command = SessionMessage.from_message(message)
        except pydantic.ValidationError as error:
            raise InvalidInput(f"Malformed session command: {error}", code="invalid_command") from None
        return require_manager().execute(command)

    op = message.get("command", {}).get("op") if isinstance(message, dict) else None
    reply_when_done(reply_key, submit, timeout=COMMAND_TIMEOUT_SECONDS, what=f"Session command {op}")


@worker_ready.connect
def _start_session_manager(**_kwargs: object) -> None:
    runtime = current_runtime()  # started by inference.tasks' handler, which is connected first
    if runtime is not None:
        from inference.video_sessions.manager import start_manager

        start_manager(runtime)


@worker_shutdown.connect
def _stop_session_manager(**_kwargs: object) -> None:
    from inference.video_sessions.manager import current_manager

    manager = current_manager()
    if manager is not None:
        manager.stop()
