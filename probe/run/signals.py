"""Stopping a run between records: SIGINT and SIGTERM become one exception the run catches."""

from __future__ import annotations

from typing import Any, NoReturn


class Interrupted(BaseException):
    """Raised by the command's signal handlers to stop a run between records."""


def raise_interrupted(signum: int, frame: Any) -> NoReturn:
    raise Interrupted(signum)
