"""Config loading: YAML, ${VAR} substitution, env overrides, one error listing every problem."""

from __future__ import annotations

from pathlib import Path

import pytest

from bridge.errors import ConfigError
from bridge.settings import load_settings

BASE = """
eventgrid:
  endpoint: http://127.0.0.1:8088
  project_id: 0123456789abcdef0123456789abcdef
  auth:
    token: ${EG_TOKEN}
source:
  name: NAME
  channel_id: 11111111-2222-3333-4444-555555555555
  type: RABBITMQ
  detail:
    user_name: guest
    password: ${MQ_PASSWORD:-guest}
    queue_name: orders
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return path


def test_valid_config_with_defaults(tmp_path: Path) -> None:
    s = load_settings(write(tmp_path, BASE.replace("NAME", "orders-rabbit")), {"EG_TOKEN": "t"})
    assert s.source.name == "orders-rabbit"
    assert s.source.detail.password is not None
    assert s.source.detail.password.get_secret_value() == "guest"
    assert s.source.register_type == "APPLICATION"
    assert s.forwarding.max_batch_events == 20
    assert s.eventgrid.auth.mode == "token"
    assert "guest" not in repr(s.source.detail.password)


@pytest.mark.parametrize("name", ["", "Orders", "hc.orders", "-orders", "a" * 129, "o rders"])
def test_invalid_source_names(tmp_path: Path, name: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_settings(write(tmp_path, BASE.replace("NAME", f"'{name}'")), {"EG_TOKEN": "t"})
    assert any(p.startswith("source.name:") for p in err.value.problems)


@pytest.mark.parametrize("name", ["a", "orders.v1_x-2", "9" * 128, "hcx.orders"])
def test_valid_source_names(tmp_path: Path, name: str) -> None:
    s = load_settings(write(tmp_path, BASE.replace("NAME", f"'{name}'")), {"EG_TOKEN": "t"})
    assert s.source.name == name


def test_every_problem_in_one_error_without_secrets(tmp_path: Path) -> None:
    text = BASE.replace("NAME", "hc.bad").replace("type: RABBITMQ", "type: KAFKA")
    text += "forwarding:\n  max_batch_events: 50\n"
    text = text.replace("source:\n", "source:\n  description: " + "x" * 300 + "\n")
    with pytest.raises(ConfigError) as err:
        load_settings(write(tmp_path, text), {"MQ_PASSWORD": "S3cr3t!x"})
    message = str(err.value)
    for field in ("eventgrid.auth.token: environment variable EG_TOKEN is not set",
                  "source.name", "source.type", "source.description",
                  "forwarding.max_batch_events"):
        assert field in message
    assert "S3cr3t!x" not in message


def test_substitution_is_single_pass_and_typed(tmp_path: Path) -> None:
    text = BASE.replace("NAME", "n") + "forwarding:\n  linger_ms: ${LINGER:-7}\n"
    s = load_settings(write(tmp_path, text), {"EG_TOKEN": "${OTHER}", "OTHER": "no"})
    assert s.eventgrid.auth.token is not None
    assert s.eventgrid.auth.token.get_secret_value() == "${OTHER}"
    assert s.forwarding.linger_ms == 7


def test_env_override_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EG_BRIDGE_SOURCE__CONNECTION__PREFETCH", "50")
    s = load_settings(write(tmp_path, BASE.replace("NAME", "n")), {"EG_TOKEN": "t"})
    assert s.source.connection.prefetch == 50


def test_password_file(tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("from-file\n")
    text = BASE.replace("NAME", "n").replace(
        "password: ${MQ_PASSWORD:-guest}", f"password_file: {secret}")
    s = load_settings(write(tmp_path, text), {"EG_TOKEN": "t"})
    assert s.source.detail.password is not None
    assert s.source.detail.password.get_secret_value() == "from-file"


def test_max_hold_must_stay_below_consumer_timeout(tmp_path: Path) -> None:
    text = BASE.replace("NAME", "n") + "forwarding:\n  max_hold_s: 60\n"
    text = text.replace("    queue_name: orders\n",
                        "    queue_name: orders\n  connection:\n    consumer_timeout_s: 5\n")
    with pytest.raises(ConfigError) as err:
        load_settings(write(tmp_path, text), {"EG_TOKEN": "t"})
    assert "max_hold_s" in str(err.value)


def test_auth_needs_exactly_one_mode(tmp_path: Path) -> None:
    text = BASE.replace("NAME", "n").replace("    token: ${EG_TOKEN}\n",
                                             "    token: t\n    none: true\n")
    with pytest.raises(ConfigError) as err:
        load_settings(write(tmp_path, text), {})
    assert "eventgrid.auth" in str(err.value)


def test_missing_file_and_bad_yaml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_settings(tmp_path / "nope.yaml", {})
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_settings(write(tmp_path, "a: [\n"), {})


def test_checks_across_fields_are_reported_with_field_errors(tmp_path: Path) -> None:
    text = BASE.replace("NAME", "Bad").replace("    queue_name: orders\n",
                                               "    queue_name: ''\n  connection:\n"
                                               "    consumer_timeout_s: 5\n")
    text += "forwarding:\n  max_hold_s: 60\n"
    with pytest.raises(ConfigError) as err:
        load_settings(write(tmp_path, text), {"EG_TOKEN": "t"})
    problems = err.value.problems
    assert any(p.startswith("source.name:") for p in problems)
    assert "source.detail.queue_name required for type RABBITMQ" in problems
    assert any(p.startswith("forwarding.max_hold_s must stay below") for p in problems)
    # Once the name is fixed, the same cross-field problems are reported the same way.
    with pytest.raises(ConfigError) as again:
        load_settings(write(tmp_path, text.replace("name: Bad", "name: good")), {"EG_TOKEN": "t"})
    assert "source.detail.queue_name required for type RABBITMQ" in again.value.problems
    assert len(again.value.problems) == len(problems) - 1
