"""The librocketmq install step (bridge.consumers.rocketmq_install): it finds the client's
package without importing it, refuses a library whose checksum differs, and is a no-op once
the right library is in place (no download)."""

from __future__ import annotations

import hashlib
import io
import tarfile
from pathlib import Path

import pytest

from bridge.consumers import rocketmq_install as step


def sdist_with(tmp_path: Path, library: bytes) -> Path:
    path = tmp_path / "sdist.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        info = tarfile.TarInfo(step.LIBRARY_MEMBER)
        info.size = len(library)
        tar.addfile(info, io.BytesIO(library))
    return path


def test_a_library_with_another_checksum_is_refused(tmp_path: Path) -> None:
    with pytest.raises(step.InstallError, match="expected " + step.LIBRARY_SHA256):
        step.extract_library(sdist_with(tmp_path, b"\x7fELF not the pinned build"))


def test_an_sdist_without_the_library_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "empty.tar.gz"
    with tarfile.open(path, "w:gz"):
        pass
    with pytest.raises(step.InstallError, match="not in the sdist"):
        step.extract_library(path)


def test_the_installed_library_is_the_pinned_one_and_a_rerun_downloads_nothing(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    package = step.client_package_dir()
    assert (package / "ffi.py").is_file()
    library = package / "librocketmq.so"
    assert hashlib.sha256(library.read_bytes()).hexdigest() == step.LIBRARY_SHA256

    def no_download(_workdir: Path) -> bytes:
        raise AssertionError("downloaded although the library is in place")

    monkeypatch.setattr(step, "download_sdist", no_download)
    assert step.main([]) == 0
    assert "already installed" in capsys.readouterr().out
