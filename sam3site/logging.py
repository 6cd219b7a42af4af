"""Everything logs through loguru: Django's, Celery's and libraries' stdlib records are routed into it."""

from __future__ import annotations

import inspect
import logging
import sys

from loguru import logger

_FORMAT = (
    "<green>{time:YYYY-MM-DD HH:mm:ss.SSS}</green> | <level>{level: <8}</level> | "
    "{process} | <cyan>{name}</cyan> - <level>{message}</level>"
)


class InterceptHandler(logging.Handler):
    """The recipe from loguru's documentation: re-emit a stdlib record through loguru."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            level: str | int = logger.level(record.levelname).name
        except ValueError:
            level = record.levelno
        frame, depth = inspect.currentframe(), 0
        while frame and (depth == 0 or frame.f_code.co_filename == logging.__file__):
            frame = frame.f_back
            depth += 1
        logger.opt(depth=depth, exception=record.exc_info).log(level, record.getMessage())


def configure_logging(level: str) -> None:
    logger.remove()
    logger.add(sys.stderr, level=level, format=_FORMAT, backtrace=False, diagnose=False)
    logging.basicConfig(handlers=[InterceptHandler()], level=0, force=True)
    # Third-party loggers that install their own handlers would print twice otherwise.
    for name in ("django", "django.server", "django.request", "celery", "daphne", "asyncio"):
        logging.getLogger(name).handlers = []
        logging.getLogger(name).propagate = True
    # Our request log line reports every response; Django's own line repeats it, and would call
    # deliberate 503/504 answers (overload, deadline) errors. Crashes still come through.
    logging.getLogger("django.request").addFilter(_only_crashes)


def _only_crashes(record: logging.LogRecord) -> bool:
    return record.exc_info is not None or getattr(record, "status_code", 500) == 500
