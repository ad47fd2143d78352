"""Log sinks for the command line. The library itself stays silent until a program adds a sink."""

from __future__ import annotations

import sys

from loguru import logger

_TEXT = (
    "<green>{time:YYYY-MM-DD HH:mm:ss.SSS}</green> <level>{level: <7}</level> "
    "<cyan>{extra[component]}</cyan> {message}"
)


def configure_logging(level: str = "INFO", fmt: str = "text") -> None:
    """Send klinetrio's logs to stderr: human-readable text, or one JSON object per line."""
    logger.remove()
    logger.configure(extra={"component": "klinetrio"})
    logger.enable("klinetrio")
    if fmt == "json":
        logger.add(sys.stderr, level=level, serialize=True, backtrace=False, diagnose=False)
    else:
        logger.add(
            sys.stderr,
            level=level,
            format=_TEXT,
            colorize=sys.stderr.isatty(),
            backtrace=False,
            diagnose=False,
        )
