"""``eg-bridge`` commands (shared/design.md §4). Logs go to stderr; stdout carries only a
command's output. A bad config exits 2 from every command."""

from __future__ import annotations

import asyncio
import sys
import urllib.error
import urllib.request
from typing import Any, NoReturn

import click
import orjson

from bridge import __version__
from bridge.errors import BridgeError, ConfigError
from bridge.logs import Redactor, configure_logging, settings_secrets
from bridge.settings import Settings, load_settings

EXIT_ERROR = 1
EXIT_CONFIG = 2
_config_option = click.option(
    "-c", "--config", "config_path", envvar="EG_BRIDGE_CONFIG", metavar="FILE",
    help="YAML config (default $EG_BRIDGE_CONFIG).",
)


def _fail_config(exc: ConfigError) -> NoReturn:
    click.echo(f"eg-bridge: {exc}", err=True)
    sys.exit(EXIT_CONFIG)


def _load(path: str | None) -> Settings:
    try:
        settings = load_settings(path)
        # Build what the config selects now, so unsupported modes fail as config errors.
        from bridge.runtime import build_auth, build_consumer  # noqa: PLC0415

        build_auth(settings)
        build_consumer(settings)
    except ConfigError as exc:
        _fail_config(exc)
    return settings


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="eg-bridge")
def main() -> None:
    """Bridge RabbitMQ messages into Huawei Cloud EventGrid as CloudEvents."""


@main.command()
@_config_option
def run(config_path: str | None) -> None:
    """Run the daemon: register, consume, forward, report."""
    settings = _load(config_path)
    redactor = configure_logging(settings.logging.format, settings.logging.level,
                                 settings_secrets(settings))
    from bridge.runtime import Bridge  # noqa: PLC0415

    async def _run() -> None:
        await Bridge(settings, redact=redactor.redact).run()

    try:
        asyncio.run(_run())
    except OSError as exc:
        click.echo(f"eg-bridge: could not start: {redactor.redact(str(exc))}", err=True)
        sys.exit(EXIT_ERROR)


@main.command()
@_config_option
def check(config_path: str | None) -> None:
    """Validate the config and print it with secrets masked."""
    settings = _load(config_path)
    text = orjson.dumps(settings.model_dump(mode="json"), option=orjson.OPT_INDENT_2).decode()
    click.echo(Redactor(settings_secrets(settings)).redact(text))  # URL credentials too


@main.command()
@_config_option
def register(config_path: str | None) -> None:
    """Ensure the EG source exists and matches; print it as one JSON object."""
    settings = _load(config_path)
    redactor = configure_logging(settings.logging.format, settings.logging.level,
                                 settings_secrets(settings))
    from bridge.eventgrid.registration import ensure_source  # noqa: PLC0415
    from bridge.runtime import build_client, mask_source, source_spec  # noqa: PLC0415

    async def _register() -> dict[str, Any]:
        client = build_client(settings)
        try:
            source, _ = await ensure_source(client, source_spec(settings))
            return source
        finally:
            await client.close()

    try:
        source = asyncio.run(_register())
    except BridgeError as exc:
        click.echo(f"eg-bridge: registration failed: {redactor.redact(str(exc))}", err=True)
        sys.exit(EXIT_ERROR)
    click.echo(orjson.dumps(mask_source(source)).decode())


@main.command()
@click.option("--url", default="http://127.0.0.1:8081/readyz", show_default=True)
@click.option("--timeout", default=3.0, show_default=True, help="Seconds.")
def health(url: str, timeout: float) -> None:
    """Exit 0 when the bridge at URL is ready, 1 otherwise (container HEALTHCHECK)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 - operator URL
            ok = resp.status == 200
            body = resp.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as exc:
        ok, body = False, exc.read().decode("utf-8", "replace")
    except (OSError, ValueError) as exc:
        ok, body = False, f"{type(exc).__name__}: {exc}"
    click.echo(body.strip())
    sys.exit(0 if ok else EXIT_ERROR)


@main.command()
@click.option("--listen", default="127.0.0.1:8088", show_default=True, metavar="HOST:PORT")
@click.option("--project-id", "project_ids", multiple=True, metavar="P",
              help="Known project (repeatable; default 0123456789abcdef0123456789abcdef).")
@click.option("--channel", "channels", multiple=True, metavar="NAME=ID",
              help="A CUSTOM channel (repeatable).")
@click.option("--auth", type=click.Choice(["none", "token", "aksk"]), default="none",
              show_default=True)
@click.option("--token", "tokens", multiple=True, metavar="T",
              help="Accepted X-Auth-Token (repeatable), besides tokens the IAM endpoint issues.")
@click.option("--iam-user", "iam_users", multiple=True, metavar="DOMAIN/USER:PASSWORD",
              help="A user of the IAM endpoint POST /v3/auth/tokens (repeatable).")
@click.option("--token-ttl", default=86400.0, show_default=True,
              help="Lifetime of issued tokens, seconds.")
@click.option("--ak", "aks", multiple=True, metavar="AK", help="Access key (pairs with --sk).")
@click.option("--sk", "sks", multiple=True, metavar="SK", help="Secret key of the --ak before.")
@click.option("--data-dir", type=click.Path(file_okay=False), default=None,
              help="Append accepted events to DIR/events.jsonl.")
def emulator(listen: str, project_ids: tuple[str, ...], channels: tuple[str, ...], auth: str,
             tokens: tuple[str, ...], iam_users: tuple[str, ...], token_ttl: float,
             aks: tuple[str, ...], sks: tuple[str, ...], data_dir: str | None) -> None:
    """Run the local EG API emulator (design §4, §9)."""
    from bridge.emulator import EmulatorConfig, run_emulator  # noqa: PLC0415
    from bridge.settings import host_port  # noqa: PLC0415

    problems: list[str] = []
    try:
        host, port = host_port(listen)
    except ValueError as exc:
        problems.append(f"--listen: {exc}")
        host, port = "127.0.0.1", 8088
    chans: dict[str, str] = {}
    for spec in channels:
        name, sep, cid = spec.partition("=")
        if not sep or not name or not cid:
            problems.append(f"--channel: expected NAME=ID, got {spec!r}")
        chans[name] = cid
    users: dict[str, str] = {}
    for spec in iam_users:
        who, sep, password = spec.partition(":")
        if not sep or "/" not in who or not password:
            problems.append("--iam-user: expected DOMAIN/USER:PASSWORD"
                            f" (got one for {who.partition(':')[0]!r})")
        users[who] = password
    if len(aks) != len(sks):
        problems.append(f"--ak and --sk come in pairs (got {len(aks)} --ak, {len(sks)} --sk)")
    if auth == "token" and not tokens and not users:
        problems.append("--auth token needs at least one --token or --iam-user")
    if auth == "aksk" and not aks:
        problems.append("--auth aksk needs at least one --ak/--sk pair")
    if problems:
        _fail_config(ConfigError(problems))
    configure_logging("auto", "info")
    cfg = EmulatorConfig(host=host, port=port, channels=chans, auth=auth, tokens=list(tokens),
                         token_ttl_s=token_ttl, iam_users=users,
                         access_keys=dict(zip(aks, sks, strict=True)), data_dir=data_dir)
    if project_ids:
        cfg.project_ids = list(project_ids)
    try:
        asyncio.run(run_emulator(cfg))
    except ConfigError as exc:
        _fail_config(exc)
    except OSError as exc:
        click.echo(f"eg-bridge emulator: could not start: {exc}", err=True)
        sys.exit(EXIT_ERROR)
