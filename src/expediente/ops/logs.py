"""Structured (JSON lines) logs. They carry request facts, never patient data or resource bodies."""

from __future__ import annotations

import logging
import os
from datetime import UTC, datetime

import orjson

_STANDARD = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        out.update((k, v) for k, v in record.__dict__.items() if k not in _STANDARD)
        if record.exc_info:
            out["error"] = self.formatException(record.exc_info)
        return orjson.dumps(out, default=str).decode()


class LineHandler(logging.Handler):
    """Writes each record with one write(2) on stderr, so lines from several server processes
    sharing the stream never interleave (writes up to PIPE_BUF bytes are atomic)."""

    def __init__(self, level: int = logging.NOTSET):
        super().__init__(level)
        self.setFormatter(JsonFormatter())

    def emit(self, record: logging.LogRecord) -> None:
        try:
            os.write(2, (self.format(record) + "\n").encode())
        except Exception:  # noqa: BLE001 - logging must never break a request
            self.handleError(record)


def configure_logging(level: str = "info") -> None:
    handler = LineHandler()
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("granian.access", "_granian"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True


def server_log_config(level: str = "info") -> dict:
    """logging.dictConfig for the HTTP server's own loggers: the same JSON lines."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "handlers": {"console": {"()": LineHandler}},
        "loggers": {
            "_granian": {"handlers": ["console"], "level": level.upper(), "propagate": False},
            "granian.access": {"handlers": ["console"], "level": level.upper(), "propagate": False},
        },
    }
