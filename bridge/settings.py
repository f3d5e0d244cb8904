"""Configuration: YAML file, then ``${VAR}`` substitution, then ``EG_BRIDGE_*`` environment
overrides, validated by pydantic (shared/design.md §3).

``load_settings(path)`` is the one entry point. Every problem found (a bad field, an unset
variable, an unreadable secret file) is collected into one :class:`~bridge.errors.ConfigError`;
its text names fields and variables, never a value, so a secret cannot leak through it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, Self

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from bridge.errors import ConfigError

# EG rules for a custom source name (shared/eg-api.md §3.1): 1-128 chars of [a-z0-9._-],
# starting with a letter or digit, never starting with "hc." (reserved for cloud services).
SOURCE_NAME_PATTERN = r"^(?!hc\.)[a-z0-9][a-z0-9._-]{0,127}$"
CONFIG_ENV = "EG_BRIDGE_CONFIG"
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_HOST_PORT = re.compile(r"^(\[[0-9a-fA-F:.]+\]|[^\s:/@]+):(\d{1,5})$")


def _secret_from(value: SecretStr | None, path: Path | None, name: str) -> SecretStr | None:
    """``value``, or the content of ``path`` (``<name>_file``); both given is an error."""
    if path is None:
        return value
    if value is not None:
        raise ValueError(f"give {name} or {name}_file, not both")
    return _read_secret_file(path)


def _read_secret_file(path: Path) -> SecretStr:
    """Read a secret from ``path`` (one trailing newline stripped). Raises ValueError."""
    try:
        return SecretStr(path.read_text(encoding="utf-8").removesuffix("\n"))
    except OSError as exc:
        raise ValueError(f"cannot read secret file {str(path)!r}: {exc.strerror}") from None


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def host_port(value: str) -> tuple[str, int]:
    """Split ``"host:port"`` (IPv6 in brackets) into (host, port). Raises ValueError."""
    m = _HOST_PORT.match(value)
    if not m or not 0 < int(m.group(2)) < 65536:
        raise ValueError("expected host:port (e.g. 127.0.0.1:5672), without user or scheme")
    return m.group(1).strip("[]"), int(m.group(2))


def _check_host_port(value: str) -> str:
    host_port(value)
    return value


class IamAuth(_Model):
    """IAM password auth scoped to a project (shared/eg-api.md §2.1)."""

    endpoint: str
    domain: str
    user: str
    password: SecretStr | None = None
    password_file: Path | None = None
    project: str

    @model_validator(mode="after")
    def _secret(self) -> Self:
        password = _secret_from(self.password, self.password_file, "password")
        object.__setattr__(self, "password", password)
        if self.password is None:
            raise ValueError("password or password_file is required")
        return self


class AkSkAuth(_Model):
    """AK/SK request signing, SDK-HMAC-SHA256 (shared/eg-api.md §2.2)."""

    access_key: SecretStr
    secret_key: SecretStr | None = None
    secret_key_file: Path | None = None

    @model_validator(mode="after")
    def _secret(self) -> Self:
        secret = _secret_from(self.secret_key, self.secret_key_file, "secret_key")
        object.__setattr__(self, "secret_key", secret)
        if self.secret_key is None:
            raise ValueError("secret_key or secret_key_file is required")
        return self


class AuthSettings(_Model):
    """Exactly one of ``token``, ``iam``, ``aksk`` or ``none: true``."""

    token: SecretStr | None = None
    token_file: Path | None = None
    iam: IamAuth | None = None
    aksk: AkSkAuth | None = None
    none: bool | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> Self:
        object.__setattr__(self, "token", _secret_from(self.token, self.token_file, "token"))
        if self.token is not None and not self.token.get_secret_value().strip():
            raise ValueError("token is empty")
        if self.token is not None and any(
                ord(c) < 0x20 or ord(c) == 0x7F for c in self.token.get_secret_value()):
            raise ValueError("token contains a control character (a stray carriage return or "
                             "newline?); an HTTP header cannot carry it")
        chosen = [k for k in ("token", "iam", "aksk") if getattr(self, k) is not None]
        if self.none:
            chosen.append("none")
        if len(chosen) != 1:
            raise ValueError(
                f"exactly one of token, iam, aksk, none: true is required (got {chosen or 'none'})"
            )
        return self

    @property
    def mode(self) -> str:
        """``"token"``, ``"iam"``, ``"aksk"`` or ``"none"``."""
        for k in ("token", "iam", "aksk"):
            if getattr(self, k) is not None:
                return k
        return "none"


class EventGridSettings(_Model):
    """Where and how to reach EG."""

    endpoint: str = Field(pattern=r"^https?://[^\s/]+(/.*)?$")
    project_id: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")
    auth: AuthSettings
    request_timeout_s: float = Field(default=10.0, gt=0, le=300)


class SourceDetail(BaseModel):
    """The source's ``detail`` (shared/eg-api.md §3.3): how the bridge connects to the broker.

    RABBITMQ uses ``user_name``, ``password``, ``vhost_name``, ``queue_name``; ROCKETMQ uses
    ``group``, ``topic``, ``namesrv_address``, ``access_key``, ``secret_key``, ``enable_acl``,
    ``ssl_enable``. Unknown keys are kept and sent to EG with the rest when ``register_type``
    is an MQ type.
    """

    model_config = ConfigDict(extra="allow", frozen=True)

    instance_id: str = ""
    user_name: str | None = None
    password: SecretStr | None = None
    password_file: Path | None = Field(default=None, exclude=True)
    vhost_name: str = "/"
    queue_name: str | None = None
    group: str | None = None
    topic: str | None = None
    namesrv_address: str | None = None
    access_key: SecretStr | None = None
    secret_key: SecretStr | None = None
    secret_key_file: Path | None = Field(default=None, exclude=True)
    enable_acl: bool = False
    ssl_enable: bool = False

    @model_validator(mode="after")
    def _secret_files(self) -> Self:
        object.__setattr__(self, "password",
                           _secret_from(self.password, self.password_file, "password"))
        object.__setattr__(self, "secret_key",
                           _secret_from(self.secret_key, self.secret_key_file, "secret_key"))
        return self


class ConnectionSettings(_Model):
    """Bridge-only broker settings that EG does not know (design §3)."""

    address: Annotated[str, Field(description="RabbitMQ host:port")] = "127.0.0.1:5672"
    prefetch: int | None = Field(default=None, ge=1, le=65535)
    """basic.qos per consumer; None: enough for every in-flight batch plus two filling
    (see :meth:`Settings.prefetch`)."""
    declare_queue: bool = False
    consumer_timeout_s: float = Field(default=1800, gt=0)
    dead_letter_exchange: str = ""
    dead_letter_topic: str = ""
    """RocketMQ: where a message EG rejects for good is published; "" = ``%DLQ%<group>``."""
    heartbeat_s: int = Field(default=60, ge=0, le=3600)
    reconnect_interval_s: float = Field(default=2.0, gt=0, le=300)
    tags: str = "*"
    threads: int = Field(default=4, ge=1, le=64)
    properties: list[str] = []

    _address = field_validator("address")(_check_host_port)


class SourceSettings(_Model):
    """The EG custom event source and the broker it is fed from."""

    name: str

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not re.fullmatch(SOURCE_NAME_PATTERN, v):
            raise ValueError(
                "must be 1-128 characters of lowercase letters, digits, '.', '_', '-', start "
                "with a letter or digit and not start with 'hc.' (EG rule, eg-api.md §3.1)"
            )
        return v

    description: str = Field(default="", max_length=255)
    channel_id: str = Field(min_length=1, max_length=64)
    type: Literal["RABBITMQ", "ROCKETMQ"]
    register_type: Literal["APPLICATION", "RABBITMQ", "ROCKETMQ"] = "APPLICATION"
    detail: SourceDetail = SourceDetail()
    connection: ConnectionSettings = ConnectionSettings()

    @model_validator(mode="after")
    def _detail_for_type(self) -> Self:
        problems = detail_problems(self.type, self.detail.model_dump())
        if problems:
            raise ValueError(problems[0].removeprefix("source."))
        return self


class RetrySettings(_Model):
    """Backoff for transient failures: exponential with full jitter (design §7)."""

    initial_backoff_s: float = Field(default=0.2, gt=0)
    max_backoff_s: float = Field(default=30.0, gt=0)


class ForwardingSettings(_Model):
    """How events are batched and published."""

    event_type: str = Field(default="com.example.message", min_length=1)
    max_batch_events: int = Field(default=20, ge=1, le=20)  # EG limit, eg-api.md §5
    linger_ms: float = Field(default=5, ge=0, le=10_000)
    max_in_flight_batches: int = Field(default=16, ge=1, le=256)
    retry: RetrySettings = RetrySettings()
    max_hold_s: float = Field(default=600, gt=0)
    shutdown_grace_s: float = Field(default=20, ge=0)


class StatusSettings(_Model):
    """The status server (design §8)."""

    listen: str = "127.0.0.1:8081"
    status_poll_s: float = Field(default=60, gt=0)

    _listen = field_validator("listen")(_check_host_port)


class LoggingSettings(_Model):
    """structlog output: ``auto`` is console on a terminal, JSON otherwise."""

    format: Literal["auto", "json", "console"] = "auto"
    level: Literal["debug", "info", "warning", "error"] = "info"

    @field_validator("level", mode="before")
    @classmethod
    def _lower(cls, v: object) -> object:
        return v.lower() if isinstance(v, str) else v


class Settings(BaseSettings):
    """The whole configuration (design §3). Build it with :func:`load_settings`."""

    model_config = SettingsConfigDict(
        env_prefix="EG_BRIDGE_", env_nested_delimiter="__", extra="forbid", frozen=True
    )

    eventgrid: EventGridSettings
    source: SourceSettings
    forwarding: ForwardingSettings = ForwardingSettings()
    status: StatusSettings = StatusSettings()
    logging: LoggingSettings = LoggingSettings()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Environment overrides win over the YAML file (passed as init values)."""
        return (env_settings, init_settings)

    def prefetch(self) -> int:
        """The RabbitMQ prefetch: ``source.connection.prefetch``, or when unset
        ``(max_in_flight_batches + 2) * max_batch_events`` (360 by default), so a slow EG round
        trip never leaves in-flight slots empty for want of unacked messages."""
        fwd = self.forwarding
        return self.source.connection.prefetch or (
            (fwd.max_in_flight_batches + 2) * fwd.max_batch_events)

    @model_validator(mode="after")
    def _hold_below_consumer_timeout(self) -> Self:
        problems = timing_problems(self.source.type, self.forwarding.max_hold_s,
                                   self.eventgrid.request_timeout_s,
                                   self.source.connection.consumer_timeout_s)
        if problems:
            raise ValueError("\n  - ".join(problems))
        return self


def detail_problems(source_type: object, detail: Mapping[str, Any]) -> list[str]:
    """The ``detail`` keys a source type cannot do without (eg-api.md §3.3), as problems."""
    need = {"RABBITMQ": ("queue_name", "user_name", "password"),
            "ROCKETMQ": ("group", "topic", "namesrv_address")}.get(str(source_type), ())
    missing = [k for k in need if detail.get(k) in (None, "")
               and detail.get(f"{k}_file") in (None, "")]
    if not missing:
        return []
    return [f"source.detail.{', source.detail.'.join(missing)} required for type {source_type}"]


def timing_problems(source_type: object, hold: float, timeout: float, limit: float
                    ) -> list[str]:
    """A message is settled within ``max_hold_s`` (one request included), which must stay
    below the broker's consumer_timeout (RabbitMQ closes the channel of a consumer that holds
    a message longer, design §7 and §10)."""
    problems = []
    if timeout >= hold:
        problems.append(
            "eventgrid.request_timeout_s must stay below forwarding.max_hold_s (a message "
            "is settled within max_hold_s, one request included)")
    if source_type == "RABBITMQ" and hold >= limit:
        problems.append(
            "forwarding.max_hold_s must stay below source.connection.consumer_timeout_s "
            "(the broker closes the channel of a consumer that holds a message longer)")
    if source_type == "RABBITMQ" and timeout >= limit:
        problems.append(
            "eventgrid.request_timeout_s must stay below source.connection.consumer_timeout_s")
    return problems


def _raw_cross_field_problems(data: Mapping[str, Any], *, with_detail: bool) -> list[str]:
    """The checks across fields, on the raw values, for a config that also has field errors:
    pydantic skips model validators then, and an operator should see every problem at once."""
    def section(*path: str) -> Mapping[str, Any]:
        node: Any = data
        for key in path:
            node = node.get(key) if isinstance(node, Mapping) else None
        return node if isinstance(node, Mapping) else {}

    def number(node: Mapping[str, Any], key: str, default: float) -> float | None:
        try:
            return float(node.get(key, default))
        except (TypeError, ValueError):
            return None

    source = section("source")
    problems = detail_problems(source.get("type"), section("source", "detail")) if with_detail \
        else []
    hold = number(section("forwarding"), "max_hold_s", ForwardingSettings().max_hold_s)
    timeout = number(section("eventgrid"), "request_timeout_s", 10.0)
    limit = number(section("source", "connection"), "consumer_timeout_s",
                   ConnectionSettings().consumer_timeout_s)
    if hold is not None and timeout is not None and limit is not None:
        problems += timing_problems(source.get("type"), hold, timeout, limit)
    return problems


def substitute(value: Any, environ: Mapping[str, str], problems: list[str], path: str = "") -> Any:
    """Expand ``${VAR}`` and ``${VAR:-default}`` in every string of a parsed YAML tree.

    A value is expanded once and never re-parsed as YAML. An unset variable without a default
    adds a problem naming the variable and the field (``path``), never a value.
    """
    if isinstance(value, dict):
        return {k: substitute(v, environ, problems, f"{path}.{k}" if path else str(k))
                for k, v in value.items()}
    if isinstance(value, list):
        return [substitute(v, environ, problems, f"{path}[{i}]") for i, v in enumerate(value)]
    if not isinstance(value, str) or "${" not in value:
        return value

    def repl(m: re.Match[str]) -> str:
        name, default = m.group(1), m.group(2)
        if name in environ:
            return environ[name]
        if default is not None:
            return default
        problems.append(f"{path}: environment variable {name} is not set")
        return ""

    return _VAR.sub(repl, value)


def _format_error(err: Mapping[str, Any]) -> str:
    loc = ".".join(str(p) for p in err["loc"])
    msg = str(err["msg"]).removeprefix("Value error, ")
    if msg.startswith("detail."):  # a model check naming its own sub-field
        return f"{loc}.{msg}"
    return f"{loc}: {msg}" if loc else msg


def load_settings(path: str | Path | None = None, environ: Mapping[str, str] | None = None
                  ) -> Settings:
    """Load, substitute and validate the configuration.

    Args:
        path: the YAML file; None means ``$EG_BRIDGE_CONFIG``.
        environ: variables for ``${VAR}`` (default ``os.environ``). ``EG_BRIDGE_*`` overrides
            are always read from ``os.environ`` (pydantic-settings).

    Raises:
        ConfigError: listing every problem (missing file, YAML syntax, unset variables, bad
            fields), never a secret value.
    """
    env = os.environ if environ is None else environ
    path = path or env.get(CONFIG_ENV)
    if not path:
        raise ConfigError([f"no config file: pass -c FILE or set {CONFIG_ENV}"])
    try:
        raw = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError([f"cannot read config file {str(path)!r}: {exc.strerror}"]) from None
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        at = f" at line {where.line + 1}, column {where.column + 1}" if where else ""
        problem = getattr(exc, "problem", None)
        why = f": {problem}" if problem else ""
        raise ConfigError([f"config file {str(path)!r} is not valid YAML{at}{why}"]) from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError([f"config file {str(path)!r} must hold a mapping at the top level"])
    problems: list[str] = []
    data = substitute(raw, env, problems)
    try:
        settings = Settings(**data)
    except ValidationError as exc:
        # A field left empty by an unset variable is reported once, as the variable.
        unset = {p.split(":", 1)[0] for p in problems}
        problems.extend(_format_error(e) for e in exc.errors(include_input=False)
                        if ".".join(str(x) for x in e["loc"]) not in unset)
        detail_checked = any(tuple(e["loc"]) == ("source",) for e in exc.errors())
        problems.extend(_raw_cross_field_problems(data, with_detail=not detail_checked))
        raise ConfigError(problems) from None
    if problems:
        raise ConfigError(problems)
    return settings
