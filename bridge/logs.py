"""structlog set-up: one JSON (or console) line per event on stderr, secrets redacted.

The redaction step runs last, after exceptions are rendered to text, so neither a message, a
field, nor a traceback can carry a password, token, AK/SK or credentials inside a URL. The
standard library's loggers (aio-pika, aiohttp) go through the same chain.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterable, MutableMapping
from typing import Any

import structlog
from pydantic import SecretStr

from bridge.settings import Settings

_URL_CREDENTIALS = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<user>[^:/@\s]*):[^@/\s]+@")
MASK = "***"


class Redactor:
    """A structlog processor that replaces secret values and URL passwords in every string.

    Args:
        secrets: literal values to mask (shorter than 4 characters are ignored: masking them
            would garble ordinary text without protecting anything).
    """

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self.secrets = sorted({s for s in secrets if len(s) >= 4}, key=len, reverse=True)

    def redact(self, text: str) -> str:
        """``text`` with every secret and URL password replaced by ``***``."""
        for secret in self.secrets:
            if secret in text:
                text = text.replace(secret, MASK)
        if "://" in text:
            text = _URL_CREDENTIALS.sub(rf"\g<scheme>\g<user>:{MASK}@", text)
        return text

    def _value(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.redact(value)
        if isinstance(value, dict):
            return {k: self._value(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self._value(v) for v in value]
        if isinstance(value, bytes | bytearray):
            return self.redact(bytes(value).decode("utf-8", "replace"))
        if isinstance(value, int | float | bool) or value is None:
            return value
        return self.redact(str(value))

    def __call__(self, _logger: Any, _name: str, event: MutableMapping[str, Any]
                 ) -> MutableMapping[str, Any]:
        """Process one log event."""
        return {k: self._value(v) for k, v in event.items()}


class _ReconnectNoise(logging.Filter):
    """The AMQP driver's own lines while a broker is away: aio-pika logs its close-callback
    errors at ERROR (the bridge reports the loss itself, so they become WARNING), and aiormq /
    aio-pika repeat one line per reconnect attempt; the same line is let through once a minute.
    """

    REPEAT_S = 60.0

    def __init__(self) -> None:
        super().__init__()
        self._last: dict[tuple[str, str], float] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith(("aio_pika", "aiormq")):
            return True
        if record.name == "aio_pika.tools" and record.levelno == logging.ERROR:
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        key = (record.name, str(record.msg)[:40])
        if record.created - self._last.get(key, -self.REPEAT_S) < self.REPEAT_S:
            return False
        self._last[key] = record.created
        return True


def settings_secrets(settings: Settings) -> list[str]:
    """Every secret value in ``settings`` (passwords, tokens, AK/SK), for the redactor."""
    found: list[str] = []

    def walk(value: Any) -> None:
        if isinstance(value, SecretStr):
            found.append(value.get_secret_value())
        elif hasattr(value, "__pydantic_fields__"):
            for name in type(value).model_fields:
                walk(getattr(value, name))
            for extra in (getattr(value, "__pydantic_extra__", None) or {}).values():
                walk(extra)

    walk(settings)
    return found


def configure_logging(fmt: str = "auto", level: str = "info",
                      secrets: Iterable[str] = ()) -> Redactor:
    """Configure structlog and the standard library's logging to write to stderr.

    Args:
        fmt: ``json``, ``console`` or ``auto`` (console on a terminal, JSON otherwise).
        level: ``debug``, ``info``, ``warning`` or ``error``.
        secrets: values that must never be printed.

    Returns:
        The redactor in use (``redact()`` also serves /status).
    """
    redactor = Redactor(secrets)
    console = fmt == "console" or (fmt == "auto" and sys.stderr.isatty())
    renderer: Any = (
        structlog.dev.ConsoleRenderer(colors=False) if console
        else structlog.processors.JSONRenderer()
    )
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    tail: list[Any] = [structlog.processors.format_exc_info, redactor, renderer]
    numeric = logging.getLevelName(level.upper())
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        cache_logger_on_first_use=False,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *tail],
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    handler.addFilter(_ReconnectNoise())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(numeric)
    for noisy in ("aiormq", "aio_pika", "aiohttp.access"):
        logging.getLogger(noisy).setLevel(max(numeric, logging.WARNING))
    return redactor
