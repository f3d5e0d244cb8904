"""``eventgrid.auth`` in a config file becomes the right auth (design §3), and ``eg-bridge
check`` accepts every mode without printing a secret."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from bridge.cli import main
from bridge.eventgrid import signer
from bridge.eventgrid.auth import AkSkAuth, NoAuth, TokenAuth
from bridge.eventgrid.iam import IamTokenAuth
from bridge.runtime import build_auth
from bridge.settings import load_settings

CONFIG = """
eventgrid:
  endpoint: http://127.0.0.1:8088
  project_id: 0123456789abcdef0123456789abcdef
  auth:
{auth}
source:
  name: orders
  channel_id: 11111111-2222-3333-4444-555555555555
  type: RABBITMQ
  detail: {{user_name: guest, password: guest, queue_name: orders}}
"""
MODES = {
    "token": ("    token: tok-SECRET-0001", TokenAuth, "tok-SECRET-0001"),
    "iam": ("    iam: {endpoint: http://127.0.0.1:8088, domain: acme, user: bridge,\n"
            "          password: iam-SECRET-0001, project: cn-north-4}",
            IamTokenAuth, "iam-SECRET-0001"),
    "aksk": ("    aksk: {access_key: AK-SECRET-0001, secret_key: sk-SECRET-0001}",
             AkSkAuth, "sk-SECRET-0001"),
    "none": ("    none: true", NoAuth, None),
}


@pytest.mark.parametrize("mode", list(MODES))
async def test_each_mode_builds_and_checks_without_leaking(tmp_path: Path, mode: str) -> None:
    auth_yaml, auth_type, secret = MODES[mode]
    path = tmp_path / "config.yaml"
    path.write_text(CONFIG.format(auth=auth_yaml))
    auth = build_auth(load_settings(path, {}))
    assert isinstance(auth, auth_type)
    await auth.close()
    result = CliRunner().invoke(main, ["check", "-c", str(path)])
    assert result.exit_code == 0, result.output
    if secret is not None:
        assert secret not in result.output
        assert secret not in repr(auth)


async def test_secret_files_are_read(tmp_path: Path) -> None:
    (tmp_path / "sk").write_text("sk-from-file\n")
    path = tmp_path / "config.yaml"
    path.write_text(CONFIG.format(
        auth=f"    aksk: {{access_key: AK1, secret_key_file: {tmp_path / 'sk'}}}"))
    auth = build_auth(load_settings(path, {}))
    assert isinstance(auth, AkSkAuth)
    assert "sk-from-file" not in repr(auth)
    url = "http://127.0.0.1:8088/v1/p/sources"
    headers = dict(await auth.headers("GET", url, b""))
    expected = signer.sign("GET", url, {k: v for k, v in headers.items() if k != "Authorization"},
                           b"", access_key="AK1", secret_key="sk-from-file")
    assert headers["Authorization"] == expected
