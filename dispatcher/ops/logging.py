"""Structured JSON logs: one object per line, the request id on every line, no personal data.

The request id comes from the record's ``extra`` or, inside a worker, from :data:`request_id_var`,
which :class:`dispatcher.ops.middleware.RequestContext` sets from the message being processed. Stages
log ids and counts only; :class:`RedactPersonalData` scrubs anything that still looks like an email,
a device token or a coordinate pair (dramatiq itself logs a failed message's arguments, and a
request's payload holds the investigator's email and the area's coordinates) as defense in depth.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import traceback
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any, TextIO

#: The request the current worker thread is processing (``None`` outside a message).
request_id_var: ContextVar[str | None] = ContextVar("dispatcher_request_id", default=None)

REDACTED = "[redacted]"

_EMAIL = re.compile(r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,}")
#: FCM registration tokens are ``<instance id>:<opaque>``; the demo's look the same.
_DEVICE_TOKEN = re.compile(r"[A-Za-z0-9_\-]{6,}:(?=[A-Za-z0-9_\-]*\d)[A-Za-z0-9_\-]{12,}")
#: Any long opaque string (tokens, keys); UUIDs (36 characters) stay readable.
_OPAQUE = re.compile(r"(?<![A-Za-z0-9_\-])[A-Za-z0-9_\-]{40,}(?![A-Za-z0-9_\-])")
#: Two decimal numbers in a row: ``40.015, -105.27`` or ``[-105.28, 40.01]``.
_COORDINATE_PAIR = re.compile(r"-?\d{1,3}\.\d+\s*,\s*-?\d{1,3}\.\d+")
#: ``lat=40.01``, ``"lng": -105.2`` and the like.
_NAMED_COORDINATE = re.compile(r"(?i)\b(lat|lng|lon|latitude|longitude)(['\"]?\s*[:=]\s*)-?\d+(?:\.\d+)?")
#: International phone numbers (investigators' contacts are in a request's payload).
_PHONE = re.compile(r"\+\d[\d .()\-]{6,}\d")
#: A personal field's value inside a logged dict or JSON text: ``'name': 'Det. Jo Park'``.
_KEYED_VALUE = re.compile(r"""(?i)(['"](?:name|phone|email|token|address)['"]\s*:\s*)(['"])(?:(?!\2).)*\2""")
#: Extra fields never logged whatever their value.
_PERSONAL_KEYS = frozenset({
    "email", "emails", "token", "tokens", "lat", "lng", "lon", "latitude", "longitude", "coordinates",
    "location", "area", "name", "phone", "address", "payload",
})
#: Attributes every LogRecord has; anything else on a record came from ``extra``.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "taskName"}


def redact(text: str) -> str:
    """``text`` with emails, device tokens and coordinates replaced by ``[redacted]``."""
    text = _KEYED_VALUE.sub(lambda m: f"{m.group(1)}{m.group(2)}{REDACTED}{m.group(2)}", text)
    text = _EMAIL.sub(REDACTED, text)
    text = _PHONE.sub(REDACTED, text)
    text = _DEVICE_TOKEN.sub(REDACTED, text)
    text = _OPAQUE.sub(REDACTED, text)
    text = _NAMED_COORDINATE.sub(lambda m: f"{m.group(1)}{m.group(2)}{REDACTED}", text)
    return _COORDINATE_PAIR.sub(REDACTED, text)


def _clean(key: str, value: Any) -> Any:
    if key.lower() in _PERSONAL_KEYS:
        return REDACTED
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, bool | int | float) or value is None:
        return value
    return redact(repr(value))


class RedactPersonalData(logging.Filter):
    """Scrub personal data from a record's message, arguments, extras and traceback, in place."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "_dispatcher_redacted", False):
            return True
        record.msg = redact(record.getMessage())
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = "".join(traceback.format_exception(*record.exc_info)).rstrip()
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        for key in [k for k in vars(record) if k not in _STANDARD and not k.startswith("_")]:
            setattr(record, key, _clean(key, getattr(record, key)))
        record._dispatcher_redacted = True
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message, request id, extras, exception."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": getattr(record, "request_id", None) or request_id_var.get(),
            "process": record.process,
            "thread": record.threadName,
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_") and key not in entry:
                entry[key] = value
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exception"] = record.exc_text
        return json.dumps(entry, default=str, ensure_ascii=False)


def _prepare(handler: logging.Handler) -> logging.Handler:
    handler.setFormatter(JsonFormatter())
    if not any(isinstance(f, RedactPersonalData) for f in handler.filters):
        handler.addFilter(RedactPersonalData())
    return handler


def json_handler(stream: TextIO | None = None) -> logging.Handler:
    """A handler writing redacted JSON lines to ``stream`` (standard error by default)."""
    return _prepare(logging.StreamHandler(stream or sys.stderr))


#: Libraries that log every HTTP call at INFO; the engine's own lines say what matters.
QUIET_LIBRARIES = ("httpx", "httpcore", "hpack", "urllib3", "google.auth.transport.requests")


def configure_logging(level: int | str | None = logging.INFO, *,
                      stream: TextIO | None = None) -> logging.Handler | None:
    """Make every log line JSON and redacted.

    Handlers already on the root logger (dramatiq's worker processes log to a pipe) keep their
    destination and get the JSON formatter and the redaction filter; without any, one writing to
    ``stream`` (standard error by default) is added and returned. ``level=None`` keeps the current
    level (dramatiq's ``-v``). Safe to call more than once.
    """
    root = logging.getLogger()
    if level is not None:
        root.setLevel(level)
    for chatty in QUIET_LIBRARIES:  # one INFO line per HTTP call: thousands a second in a fan-out
        logging.getLogger(chatty).setLevel(max(logging.WARNING, root.level))
    added = None
    if stream is not None or not root.handlers:
        added = json_handler(stream)
        root.addHandler(added)
    for handler in root.handlers:
        _prepare(handler)
    return added
