"""Structured JSON log lines on stderr, written by a background thread.

Handlers only enqueue (QueueHandler); a QueueListener thread formats and writes, so a
slow terminal or pipe never stalls the event loop. The access log goes the same way.
"""
from __future__ import annotations

import json
import logging
import logging.handlers
import queue
import sys
import time
from typing import Any

_listener: logging.handlers.QueueListener | None = None


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "service": self.service,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            line.update(fields)
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


def setup_logging(service: str, level: str = "INFO") -> None:
    """Route all logging through a queue to one JSON-lines stderr writer. Idempotent."""
    global _listener
    if _listener is not None:
        _listener.stop()
    q: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
    out = logging.StreamHandler(sys.stderr)
    out.setFormatter(JsonFormatter(service))
    _listener = logging.handlers.QueueListener(q, out, respect_handler_level=False)
    _listener.start()
    root = logging.getLogger()
    root.handlers[:] = [logging.handlers.QueueHandler(q)]
    root.setLevel(level.upper())


def stop_logging() -> None:
    global _listener
    if _listener is not None:
        _listener.stop()
        _listener = None


def event(logger: logging.Logger, msg: str, level: int = logging.INFO, **fields: Any) -> None:
    """Log one structured event: `event(log, "listening", url=...)`."""
    logger.log(level, msg, extra={"fields": fields})


def now() -> float:
    return time.time()
