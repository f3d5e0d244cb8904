"""docker-compose.yml and the Dockerfile refer to real commands, options and config files.

No Docker engine runs here, so these files are checked by parsing, not by running them.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import click
import pytest
import yaml

from bridge.cli import main
from bridge.settings import load_settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def parse_command(args: list[str]) -> click.Context:
    """Parse ``eg-bridge ARGS`` exactly as the CLI would, without running it."""
    command = main.commands[args[0]]
    return command.make_context(args[0], list(args[1:]))


def host_path(service: dict[str, Any], container_path: str) -> Path:
    for volume in service.get("volumes", []):
        src, _, rest = volume.partition(":")
        dst = rest.split(":")[0]
        if src.startswith(".") and container_path.startswith(dst + "/"):
            return ROOT / src / container_path[len(dst) + 1:]
    raise AssertionError(f"{container_path} is not mounted from the repository")


@pytest.mark.parametrize("name", ["emulator", "bridge"])
def test_compose_commands_are_real(name: str) -> None:
    service = COMPOSE["services"][name]
    ctx = parse_command(service["command"])
    assert ctx.command.name in {"emulator", "run"}


def test_compose_bridge_config_loads_with_the_compose_environment() -> None:
    bridge = COMPOSE["services"]["bridge"]
    ctx = parse_command(bridge["command"])
    config = host_path(bridge, ctx.params["config_path"])
    settings = load_settings(config, bridge["environment"])
    assert settings.source.connection.address == "rabbitmq:5672"
    assert settings.eventgrid.endpoint == "http://emulator:8088"
    assert settings.status.listen.startswith("0.0.0.0:")
    emulator = parse_command(COMPOSE["services"]["emulator"]["command"])
    channels = dict(c.split("=", 1) for c in emulator.params["channels"])
    assert settings.source.channel_id in channels.values()
    assert bridge["stop_grace_period"].rstrip("s").isdigit()
    assert int(bridge["stop_grace_period"].rstrip("s")) > settings.forwarding.shutdown_grace_s


def test_compose_healthchecks_use_real_commands() -> None:
    test = COMPOSE["services"]["bridge"]["healthcheck"]["test"]
    assert test[:2] == ["CMD", "eg-bridge"]
    parse_command(test[2:])
    for name, service in COMPOSE["services"].items():
        assert "healthcheck" in service, name
    depends = COMPOSE["services"]["bridge"]["depends_on"]
    assert set(depends) == {"rabbitmq", "emulator"}


def test_dockerfile_refers_to_real_files_and_commands() -> None:
    text = (ROOT / "Dockerfile").read_text()
    for line in re.findall(r"^COPY (.+)$", text, re.MULTILINE):
        for src in line.split()[:-1]:
            assert (ROOT / src).exists(), src
    cmd = json.loads(re.search(r"^CMD (\[.*\])$", text, re.MULTILINE).group(1))
    ctx = parse_command(cmd)
    assert (ROOT / ctx.params["config_path"].removeprefix("/")).exists()
    health = re.search(r"CMD (\[\"eg-bridge\", \"health\".*\])", text).group(1)
    parse_command(json.loads(health)[1:])
    assert re.search(r'^ENTRYPOINT \["eg-bridge"\]$', text, re.MULTILINE)
