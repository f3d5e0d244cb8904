"""A private RabbitMQ node for tests, started from Debian's ``rabbitmq-server`` package.

Each :class:`RabbitServer` owns a directory (data, logs, config, Erlang cookie), a node name and
two ports, so several nodes (other test sessions on the same machine included) run side by side
without touching the system broker. As root, the node and ``rabbitmqctl`` run as the
``rabbitmq`` user (Python drops privileges itself: no ``su``, no shell, so ``$`` in arguments is
safe); as any other user they run as that user.

Every process of a node carries ``EGB_RABBIT_NODE`` and ``EGB_RABBIT_OWNER`` (the pid of the
test process) in its environment: :meth:`RabbitServer.kill` finds the whole tree by the first,
:func:`reap_orphans` finds nodes left behind by a test run that was killed by the second.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import pwd
import secrets
import shutil
import signal
import socket
import string
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any, Self

RABBITMQ_BIN = Path("/usr/lib/rabbitmq/bin")
SERVER_SCRIPT = RABBITMQ_BIN / "rabbitmq-server"
CTL_SCRIPT = RABBITMQ_BIN / "rabbitmqctl"
SERVICE_USER = "rabbitmq"
NODE_MARK = "EGB_RABBIT_NODE"
OWNER_MARK = "EGB_RABBIT_OWNER"


class RabbitServerError(RuntimeError):
    """The node did not start, or a ``rabbitmqctl`` command failed."""


def free_port() -> int:
    """Return a TCP port that is free on all interfaces right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("", 0))
        port: int = sock.getsockname()[1]
        return port


def _pid_environ(pid: int) -> dict[str, str]:
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return {}
    pairs = (item.partition(b"=") for item in raw.split(b"\0") if item)
    return {k.decode(errors="replace"): v.decode(errors="replace") for k, _, v in pairs}


def _marked_processes() -> list[tuple[int, dict[str, str]]]:
    """(pid, environ) of every live process started by a RabbitServer, epmd excepted.

    epmd is shared by every Erlang node on the machine, so it is never killed.
    """
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        env = _pid_environ(int(entry.name))
        if NODE_MARK not in env:
            continue
        with contextlib.suppress(OSError):
            if (entry / "comm").read_text().strip() == "epmd":
                continue
        found.append((int(entry.name), env))
    return found


def _sigkill(pids: list[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


def reap_orphans() -> list[int]:
    """SIGKILL nodes whose test process is gone (a run killed before its teardown).

    Nodes of live test processes, other sessions' included, are left alone.
    Returns the pids killed.
    """
    orphans = [
        pid
        for pid, env in _marked_processes()
        if env.get(OWNER_MARK, "").isdigit() and not Path(f"/proc/{env[OWNER_MARK]}").exists()
    ]
    _sigkill(orphans)
    return orphans


def _tail(path: Path, lines: int) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return f"({path} not readable)"
    return "\n".join(text.splitlines()[-lines:])


def _check_reachable(path: Path, uid: int, gid: int) -> None:
    """Raise if a directory above ``path`` cannot be traversed by ``uid``."""
    for parent in path.resolve().parents:
        st = parent.stat()
        if st.st_uid == uid:
            ok = bool(st.st_mode & 0o100)
        elif st.st_gid == gid:
            ok = bool(st.st_mode & 0o010)
        else:
            ok = bool(st.st_mode & 0o001)
        if not ok:
            raise RabbitServerError(
                f"{parent} (mode {st.st_mode & 0o777:o}) cannot be traversed by uid {uid}: put the"
                " node's base_dir somewhere the rabbitmq user can reach, e.g. tempfile.mkdtemp()"
            )


class RabbitServer:
    """One RabbitMQ node with its own data dir, ports, config and Erlang cookie.

    :param base_dir: created if missing; holds ``etc/``, ``home/``, ``mnesia/``, ``log/`` and
        ``server.out`` (the server's stdout and stderr).
    :param node_name: defaults to ``egb-<pid>-<random>@localhost``.
    :param amqp_port: 0 picks a free port once; restarts reuse it.
    :param dist_port: Erlang distribution port, 0 picks a free port once.
    :param conf_extra: lines appended to the generated ``rabbitmq.conf``.
    :param advanced_config: the whole ``advanced.config`` (Erlang terms), default ``[].``.
    :param owner: what the node's processes carry as their owner: by default this process's
        pid (the node is killed when this process exits, or reaped by a later test run once it
        is gone); any other text detaches the node (the demo stack), which then lives until
        stopped.
    """

    def __init__(
        self,
        base_dir: Path,
        *,
        node_name: str | None = None,
        amqp_port: int = 0,
        dist_port: int = 0,
        conf_extra: str = "",
        advanced_config: str | None = None,
        owner: str | None = None,
    ) -> None:
        self.base_dir = Path(base_dir).resolve()
        self.node_name = node_name or f"egb-{os.getpid()}-{secrets.token_hex(3)}@localhost"
        self.amqp_port = amqp_port or free_port()
        self.dist_port = dist_port or free_port()
        self.conf_extra = conf_extra
        self.advanced_config = advanced_config if advanced_config is not None else "[].\n"
        self._proc: subprocess.Popen[bytes] | None = None
        self._as_service_user = os.geteuid() == 0
        self.owner = owner or str(os.getpid())
        if owner is None:
            atexit.register(self._kill_quietly)

    # -- addresses -------------------------------------------------------------------------------

    @property
    def address(self) -> str:
        """``127.0.0.1:PORT`` of the AMQP listener."""
        return f"127.0.0.1:{self.amqp_port}"

    @property
    def amqp_url(self) -> str:
        """URL for the default ``guest`` user (allowed because we connect over loopback)."""
        return f"amqp://guest:guest@{self.address}/"

    @property
    def log_file(self) -> Path:
        """The node's main log."""
        return self.base_dir / "log" / f"{self.node_name}.log"

    @property
    def running(self) -> bool:
        """True while the server process started by :meth:`start` is alive."""
        return self._proc is not None and self._proc.poll() is None

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self, timeout_s: float = 90.0) -> None:
        """Start the node and block until ``rabbitmqctl await_startup`` succeeds.

        Raises :class:`RabbitServerError` with the tail of the logs if it does not come up.
        """
        if self.running:
            return
        if not SERVER_SCRIPT.exists():
            raise RabbitServerError(
                f"{SERVER_SCRIPT} not found: install rabbitmq-server (run scripts/setup.sh)"
            )
        self._prepare_dirs()
        env = self._env() | {NODE_MARK: self.node_name, OWNER_MARK: self.owner}
        with (self.base_dir / "server.out").open("ab") as out:
            self._proc = subprocess.Popen(
                [str(SERVER_SCRIPT)],
                env=env,
                cwd=self.base_dir,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                **self._user_kwargs(),
            )
        try:
            self._wait_started(time.monotonic() + timeout_s)
        except BaseException:
            self.kill()
            raise

    def stop(self, timeout_s: float = 30.0) -> None:
        """Stop the node cleanly (SIGTERM, as the Debian script expects); idempotent.

        Falls back to :meth:`kill` if the node is not gone after ``timeout_s``.
        """
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout_s)
        self.kill()

    def kill(self) -> None:
        """SIGKILL every process of this node (not epmd): a broker crash. Idempotent."""
        deadline = time.monotonic() + 10
        while mine := self._node_processes():
            _sigkill(mine)
            if time.monotonic() > deadline:
                raise RabbitServerError(f"processes {mine} of {self.node_name} survive SIGKILL")
            time.sleep(0.02)  # the listening sockets close only once the processes are gone
        if self._proc is not None:
            with contextlib.suppress(ProcessLookupError):
                self._proc.kill()
            self._proc.wait()
            self._proc = None

    def _node_processes(self) -> list[int]:
        return [pid for pid, env in _marked_processes() if env.get(NODE_MARK) == self.node_name]

    def restart(self, timeout_s: float = 90.0) -> None:
        """Stop the node if it runs, then start it on the same ports, name and data dir."""
        self.stop()
        self.start(timeout_s)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _kill_quietly(self) -> None:
        with contextlib.suppress(Exception):
            self.kill()

    def _wait_started(self, deadline: float) -> None:
        # A TCP probe is cheap; each rabbitmqctl run boots an Erlang VM, so call it once the
        # AMQP port answers (and retry: it fails at once while the node is not registered).
        last_error = "AMQP port never opened"
        while time.monotonic() < deadline:
            self._raise_if_exited()
            try:
                with socket.create_connection(("127.0.0.1", self.amqp_port), timeout=1):
                    pass
            except OSError:
                time.sleep(0.1)
                continue
            remaining = max(1, int(deadline - time.monotonic()))
            try:
                self.ctl("await_startup", "--timeout", str(remaining), timeout_s=remaining + 15)
            except RabbitServerError as exc:
                last_error = str(exc)
                time.sleep(0.5)
            else:
                return
        raise RabbitServerError(self._failure_report(f"not started after timeout: {last_error}"))

    def _raise_if_exited(self) -> None:
        assert self._proc is not None
        code = self._proc.poll()
        if code is not None:
            raise RabbitServerError(self._failure_report(f"server exited with status {code}"))

    def _failure_report(self, what: str) -> str:
        out = self.base_dir / "server.out"
        return (
            f"RabbitMQ node {self.node_name} (port {self.amqp_port}): {what}\n"
            f"--- tail of {out}\n{_tail(out, 30)}\n"
            f"--- tail of {self.log_file}\n{_tail(self.log_file, 30)}"
        )

    # -- files and environment -----------------------------------------------------------------

    def _prepare_dirs(self) -> None:
        etc, home = self.base_dir / "etc", self.base_dir / "home"
        for sub in ("etc", "home", "mnesia", "log"):
            (self.base_dir / sub).mkdir(parents=True, exist_ok=True)
        conf = [
            f"listeners.tcp.1 = 127.0.0.1:{self.amqp_port}",
            "log.file.level = info",
            self.conf_extra,
        ]
        (etc / "rabbitmq.conf").write_text("\n".join(conf) + "\n")
        (etc / "advanced.config").write_text(self.advanced_config)
        (etc / "enabled_plugins").write_text("[].\n")
        (etc / "rabbitmq-env.conf").write_text("")  # shadows /etc/rabbitmq/rabbitmq-env.conf
        cookie = home / ".erlang.cookie"
        if not cookie.exists():
            cookie.write_text("".join(secrets.choice(string.ascii_uppercase) for _ in range(20)))
            cookie.chmod(0o400)
        if self._as_service_user:
            user = pwd.getpwnam(SERVICE_USER)
            _check_reachable(self.base_dir, user.pw_uid, user.pw_gid)
            for path in [self.base_dir, *self.base_dir.rglob("*")]:
                os.chown(path, user.pw_uid, user.pw_gid, follow_symlinks=False)

    def _env(self) -> dict[str, str]:
        """The environment shared by the server and ``rabbitmqctl`` (same HOME, same cookie)."""
        etc = self.base_dir / "etc"
        return {
            "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "LANG": "C.UTF-8",
            "LC_ALL": "C.UTF-8",
            "HOME": str(self.base_dir / "home"),
            "RABBITMQ_NODENAME": self.node_name,
            "RABBITMQ_NODE_PORT": str(self.amqp_port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_MNESIA_BASE": str(self.base_dir / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.base_dir / "log"),
            "RABBITMQ_CONFIG_FILE": str(etc / "rabbitmq.conf"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(etc / "advanced.config"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(etc / "enabled_plugins"),
            "RABBITMQ_FEATURE_FLAGS_FILE": str(self.base_dir / "mnesia" / "feature_flags"),
            "RABBITMQ_CONF_ENV_FILE": str(etc / "rabbitmq-env.conf"),
            # rabbitmqctl listens on 35672-35682 by default: too few for parallel sessions.
            "RABBITMQ_CTL_DIST_PORT_MIN": "0",
            "RABBITMQ_CTL_DIST_PORT_MAX": "0",
        }

    def _user_kwargs(self) -> dict[str, Any]:
        if not self._as_service_user:
            return {}
        return {"user": SERVICE_USER, "group": SERVICE_USER, "extra_groups": []}

    # -- rabbitmqctl -----------------------------------------------------------------------------

    def ctl(self, *args: str, timeout_s: float = 60.0) -> str:
        """Run ``rabbitmqctl -n NODE *args`` (no shell involved) and return its stdout."""
        cmd = [str(CTL_SCRIPT), "-n", self.node_name, *args]
        try:
            done = subprocess.run(
                cmd,
                env=self._env(),
                cwd=self.base_dir,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=timeout_s,
                check=False,
                **self._user_kwargs(),
            )
        except subprocess.TimeoutExpired as exc:
            raise RabbitServerError(f"rabbitmqctl {' '.join(args)}: timed out") from exc
        if done.returncode != 0:
            raise RabbitServerError(
                f"rabbitmqctl {' '.join(args)} exited {done.returncode}:\n"
                f"{done.stderr.strip() or done.stdout.strip()}"
            )
        out: str = done.stdout
        return out

    def _ctl_json(self, *args: str) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = json.loads(self.ctl(*args, "--formatter", "json", "-q"))
        return rows

    def queue_counts(self, queue: str, vhost: str = "/") -> tuple[int, int]:
        """(messages_ready, messages_unacknowledged) of ``queue``; KeyError if it is absent."""
        rows = self._ctl_json(
            "list_queues", "-p", vhost, "name", "messages_ready", "messages_unacknowledged"
        )
        for row in rows:
            if row["name"] == queue:
                return int(row["messages_ready"]), int(row["messages_unacknowledged"])
        raise KeyError(f"queue {queue!r} not found in vhost {vhost!r}")

    def list_consumers(self, vhost: str = "/") -> list[dict[str, Any]]:
        """Rows of ``list_consumers``: queue_name, consumer_tag, ack_required, prefetch_count..."""
        return self._ctl_json("list_consumers", "-p", vhost)

    def channel_prefetch(self) -> list[int]:
        """The per-consumer ``prefetch_count`` of every open channel, all vhosts."""
        return [
            int(row["prefetch_count"]) for row in self._ctl_json("list_channels", "prefetch_count")
        ]

    def add_user(self, user: str, password: str) -> None:
        """Create a user (any characters in the password are safe)."""
        self.ctl("add_user", user, password)

    def add_vhost(self, vhost: str) -> None:
        """Create a virtual host."""
        self.ctl("add_vhost", vhost)

    def set_permissions(
        self,
        user: str,
        vhost: str = "/",
        configure: str = ".*",
        write: str = ".*",
        read: str = ".*",
    ) -> None:
        """Grant ``user`` the configure/write/read regexes on ``vhost``."""
        self.ctl("set_permissions", "-p", vhost, user, configure, write, read)

    def remove_data(self) -> None:
        """Kill the node and delete ``base_dir``."""
        self.kill()
        shutil.rmtree(self.base_dir, ignore_errors=True)


RabbitFactory = Callable[..., RabbitServer]
"""Type of the ``rabbit_factory`` fixture: keyword arguments of :class:`RabbitServer`."""
