"""structlog set-up: JSON lines when not on a TTY (journald), a console renderer otherwise.

Callers log events with ids, sizes and durations only; never message content, keys or passwords.
"""

from __future__ import annotations

import logging
import sys
from typing import Any, TextIO

import structlog

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
           "error": logging.ERROR}


def configure_logging(fmt: str | None, level: str, stream: TextIO | None = None) -> None:
    """Install the renderer for this process; `fmt` None picks by whether stdout is a TTY.

    The daemon logs to stdout (the journal); a command whose stdout is its answer logs to
    `stream` (stderr)."""
    if fmt is None:
        fmt = "console" if sys.stdout.isatty() else "json"
    renderer: Any = (structlog.processors.JSONRenderer() if fmt == "json"
                     else structlog.dev.ConsoleRenderer(colors=False))
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        logger_factory=structlog.PrintLoggerFactory(stream or sys.stdout),
        cache_logger_on_first_use=True,
    )
    # Libraries log through stdlib logging; keep them quiet unless they warn.
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    for noisy in ("mail.log", "aiosmtpd", "uvicorn.access"):
        logging.getLogger(noisy).setLevel(logging.CRITICAL)
