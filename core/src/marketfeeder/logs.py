"""Logging set-up for the command line: plain text or one JSON object per line, secrets redacted.

The library itself only creates loggers (``marketfeeder.*``); configuring handlers is the
application's business, which for ``marketfeeder run`` is :func:`configure_logging`.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable, Mapping
from typing import Any

import orjson

__all__ = ["JsonFormatter", "RedactingFilter", "configure_logging", "secret_values"]

REDACTED = "***"
_SECRET_NAME = re.compile(r"(secret|token|password|passwd|api[_-]?key|private[_-]?key|signature)", re.IGNORECASE)
# key=value / "key": "value" pairs whose key names a secret
_SECRET_PAIR = re.compile(
    r"""(?P<key>["']?[\w-]*(?:secret|token|password|passwd|api[_-]?key|private[_-]?key|signature)[\w-]*["']?\s*[=:]\s*)"""
    r"""(?P<quote>["']?)(?P<value>[^\s"',&}]+)""",
    re.IGNORECASE,
)
# the userinfo of a URL (scheme://user:password@host, scheme://TOKEN@host)
_URL_USERINFO = re.compile(r"(?P<scheme>\b[a-z][a-z0-9+.-]*://)[^\s/@]+@", re.IGNORECASE)


def secret_values(environ: Mapping[str, str] | None = None) -> list[str]:
    """Values of environment variables whose names say they are secrets (long enough to matter)."""
    env = os.environ if environ is None else environ
    return sorted({value for name, value in env.items() if _SECRET_NAME.search(name) and len(value) >= 6}, key=len, reverse=True)


class RedactingFilter(logging.Filter):
    """Replaces secrets in the rendered message: known secret values and ``key=value`` pairs."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self.secrets = [s for s in secrets if s]

    def redact(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, REDACTED)
        text = _URL_USERINFO.sub(lambda m: f"{m.group('scheme')}{REDACTED}@", text)
        return _SECRET_PAIR.sub(lambda m: f"{m.group('key')}{m.group('quote')}{REDACTED}", text)

    def filter(self, record: logging.LogRecord) -> bool:
        message = self.redact(record.getMessage())
        record.msg, record.args = message, None
        if record.exc_info and record.exc_info[1] is not None:
            record.exc_text = self.redact(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, plus any ``extra=`` fields."""

    _STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}

    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in self._STANDARD and not key.startswith("_"):
                payload[key] = value
        if record.exc_text:
            payload["exception"] = record.exc_text
        return orjson.dumps(payload, default=str).decode()


def configure_logging(*, level: int = logging.INFO, fmt: str = "text", stream: Any = None) -> logging.Handler:
    """Install one handler on the root logger (replacing earlier ones), with redaction."""
    if fmt not in ("text", "json"):
        raise ValueError(f"log format must be 'text' or 'json', got {fmt!r}")
    handler = logging.StreamHandler(stream)
    handler.addFilter(RedactingFilter(secret_values()))
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    # Per-request and per-connection chatter of the libraries is not what a status log is for.
    for noisy in ("httpx", "httpcore", "marketfeeder.transport.server"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))
    return handler
