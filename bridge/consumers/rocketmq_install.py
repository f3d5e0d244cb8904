"""Install the native librocketmq that rocketmq-client-python 2.0.0 loads (issue 6;
shared/rocketmq.md §0, §4).

PyPI has no librocketmq build for Python 3.11; the one these machines can install is inside
the sdist ``rocketmq-python-cvs==2.1.0.3`` (a third-party build of Apache
rocketmq-client-cpp 2.1.0). Both packages own a top-level ``rocketmq`` package, so they cannot
share a venv: this step downloads that sdist with pip (hash-pinned, so pip checks the archive
before it runs anything from it), checks the sdist and the library against their sha256, and
copies ``rocketmq/librocketmq.so`` into the installed rocketmq-client-python package, where its
``ffi.py`` looks first. Idempotent: a library with the right checksum is left alone.

Usage: ``python -m bridge.consumers.rocketmq_install [--quiet]`` after
``pip install 'eg-bridge[rocketmq]'``. Exit 0 done, 1 failed (the reason on stderr).
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import importlib.util
import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

SDIST = "rocketmq-python-cvs==2.1.0.3"
SDIST_SHA256 = "99e4ce8008554a74193a3ad94b60f939a4666c48ffabbf4c4417a109daf1419d"
LIBRARY_MEMBER = "rocketmq-python-cvs-2.1.0.3/rocketmq/librocketmq.so"
LIBRARY_SHA256 = "ed3fce39f2b926637637a2b8b9122799f207b0cdf98dbd9110505bf43170fa30"
CLIENT = "rocketmq-client-python"
CLIENT_VERSION = "2.0.0"


class InstallError(Exception):
    """The library could not be installed; the message says why."""


def sha256(data: bytes) -> str:
    """Hex sha256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def client_package_dir() -> Path:
    """The installed ``rocketmq/`` package of rocketmq-client-python 2.0.0.

    Found without importing it (its ``ffi.py`` fails to import while the library is missing).

    Raises:
        InstallError: the client is not installed, or another version or package owns
            ``rocketmq``.
    """
    try:
        version = importlib.metadata.version(CLIENT)
    except importlib.metadata.PackageNotFoundError:
        raise InstallError(f"{CLIENT} is not installed: pip install 'eg-bridge[rocketmq]'"
                           ) from None
    if version != CLIENT_VERSION:
        raise InstallError(f"{CLIENT} {version} is installed; this step is for {CLIENT_VERSION}")
    spec = importlib.util.find_spec("rocketmq")
    locations = list(spec.submodule_search_locations or []) if spec else []
    if len(locations) != 1 or not (Path(locations[0]) / "ffi.py").is_file():
        raise InstallError("the installed 'rocketmq' package is not rocketmq-client-python's")
    return Path(locations[0])


def download_sdist(workdir: Path) -> bytes:
    """Download the sdist with pip (hash-checked by pip) and return its bytes, checked again.

    Raises:
        InstallError: pip failed or the archive's sha256 differs.
    """
    requirements = workdir / "requirements.txt"
    requirements.write_text(f"{SDIST} --hash=sha256:{SDIST_SHA256}\n", encoding="utf-8")
    command = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
               "--no-binary", ":all:", "--require-hashes", "--disable-pip-version-check",
               "-r", str(requirements), "-d", str(workdir / "dist")]
    done = subprocess.run(command, capture_output=True, text=True, check=False)  # noqa: S603
    if done.returncode != 0:
        raise InstallError(f"pip download {SDIST} failed:\n{done.stderr.strip()[-2000:]}")
    archives = list((workdir / "dist").glob("*.tar.gz"))
    if len(archives) != 1:
        raise InstallError(f"pip download {SDIST} left {len(archives)} archives")
    data = archives[0].read_bytes()
    if sha256(data) != SDIST_SHA256:
        raise InstallError(f"{archives[0].name}: sha256 {sha256(data)}, expected {SDIST_SHA256}")
    return data


def extract_library(archive: Path) -> bytes:
    """Read ``rocketmq/librocketmq.so`` out of the sdist and check its sha256.

    Raises:
        InstallError: the member is missing or its checksum differs.
    """
    with tarfile.open(archive, "r:gz") as tar:
        try:
            member = tar.extractfile(LIBRARY_MEMBER)
        except KeyError:
            member = None
        if member is None:
            raise InstallError(f"{LIBRARY_MEMBER} is not in the sdist")
        data = member.read()
    if sha256(data) != LIBRARY_SHA256:
        raise InstallError(f"librocketmq.so: sha256 {sha256(data)}, expected {LIBRARY_SHA256}")
    return data


def install(*, quiet: bool = False) -> Path:
    """Put the checked library into the client package (no-op when already there).

    Returns:
        The library's path.

    Raises:
        InstallError: see :func:`client_package_dir`, :func:`download_sdist`,
            :func:`extract_library`; or the package folder is not writable.
    """
    target = client_package_dir() / "librocketmq.so"
    if target.is_file() and sha256(target.read_bytes()) == LIBRARY_SHA256:
        if not quiet:
            print(f"librocketmq.so already installed: {target}")
        return target
    with tempfile.TemporaryDirectory(prefix="eg-bridge-rocketmq-") as tmp:
        workdir = Path(tmp)
        archive = workdir / "sdist.tar.gz"
        archive.write_bytes(download_sdist(workdir))
        library = extract_library(archive)
    partial = target.with_suffix(".so.partial")
    try:
        partial.write_bytes(library)
        partial.chmod(0o755)
        os.replace(partial, target)
    except OSError as exc:
        raise InstallError(f"cannot write {target}: {exc.strerror}") from None
    if not quiet:
        print(f"installed librocketmq.so (client-cpp 2.1.0 from {SDIST}, sha256 "
              f"{LIBRARY_SHA256}) into {target}")
    return target


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit code."""
    parser = argparse.ArgumentParser(prog="python -m bridge.consumers.rocketmq_install",
                                     description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--quiet", action="store_true", help="print nothing on success")
    args = parser.parse_args(argv)
    try:
        install(quiet=args.quiet)
    except InstallError as exc:
        print(f"rocketmq_install: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
