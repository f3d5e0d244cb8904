"""The local stack of README command 1: RabbitMQ, the EG emulator and ``eg-bridge run``.

    python scripts/stack.py up      start all three in the background, publish sample messages,
                                    print the events the emulator received, exit 0
    python scripts/stack.py down    stop the stack (the bridge drains first)
    python scripts/stack.py status  print the bridge's /status

State and logs live in ``.run/`` of the checkout. Preferred ports are 5672 (AMQP), 8088
(emulator) and 8081 (bridge status); a taken port is replaced by a free one and printed.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.rabbit import RabbitServer, free_port  # noqa: E402

RUN = ROOT / ".run"
STATE = RUN / "stack.json"
CHANNEL_ID = "11111111-2222-3333-4444-555555555555"
SOURCE = "demo-orders"
QUEUE = "demo-orders"
# One node name per checkout: two clones can run their stacks side by side.
NODE = f"egb-demo-{hashlib.sha256(str(ROOT).encode()).hexdigest()[:8]}@localhost"
EG_BRIDGE = [sys.executable, "-m", "bridge"]


def port_or_free(preferred: int) -> int:
    """``preferred`` when nothing listens there, else a free port."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT is free
        try:
            sock.bind(("127.0.0.1", preferred))
        except OSError:
            return free_port()
    return preferred


def spawn(name: str, args: list[str], env: dict[str, str] | None = None) -> int:
    """Start a detached process logging to ``.run/NAME.log``; return its pid."""
    log = (RUN / f"{name}.log").open("ab")
    proc = subprocess.Popen(  # noqa: S603 - our own interpreter and module
        args, stdout=log, stderr=log, stdin=subprocess.DEVNULL, cwd=ROOT,
        env={**os.environ, **(env or {})}, start_new_session=True,
    )
    return proc.pid


def http_json(url: str, timeout: float = 3.0) -> Any:
    """GET ``url`` and decode JSON (also for 503 answers)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 - localhost
            return json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return json.loads(exc.read())


def wait_for(what: str, check: Any, timeout_s: float, log: Path | None = None) -> None:
    """Poll ``check()`` until truthy; exit with the log tail on timeout."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError, ValueError):
            if check():
                return
        time.sleep(0.2)
    tail = log.read_text(errors="replace")[-3000:] if log and log.exists() else ""
    sys.exit(f"stack: {what} did not come up in {timeout_s:.0f}s\n{tail}")


async def publish_samples(amqp_url: str) -> list[str]:
    """Publish one JSON, one plain-text and one binary message (persistent, confirmed)."""
    import aio_pika  # noqa: PLC0415

    samples = [
        aio_pika.Message(json.dumps({"order_id": 1001, "item": "coffee", "qty": 2}).encode(),
                         content_type="application/json", message_id="order-1001",
                         headers={"tenant": "acme"}, type="com.example.order.created"),
        aio_pika.Message(b"plain text: thank you for your order",
                         content_type="text/plain; charset=utf-8", message_id="note-1"),
        aio_pika.Message(bytes([0x89, 0x50, 0x4E, 0x47, 0x00, 0xFF, 0x10]),
                         content_type="application/octet-stream", message_id="blob-1"),
    ]
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        await channel.declare_queue(QUEUE, durable=True)
        for message in samples:
            message.delivery_mode = aio_pika.DeliveryMode.PERSISTENT
            await channel.default_exchange.publish(message, routing_key=QUEUE)
    return [str(m.message_id) for m in samples]


def up() -> None:
    """Start the stack, publish the samples, show the events."""
    if STATE.exists():
        print("stack: stopping the stack that is still running first")
        down(quiet=True)
    RUN.mkdir(exist_ok=True)
    amqp_port, emu_port, status_port = port_or_free(5672), port_or_free(8088), port_or_free(8081)
    print(f"stack: starting RabbitMQ on 127.0.0.1:{amqp_port} (node {NODE}) ...", flush=True)
    rabbit = RabbitServer(RUN / "rabbitmq", node_name=NODE, amqp_port=amqp_port,
                          owner="demo-stack")
    rabbit.start()
    state: dict[str, Any] = {"rabbit": {"base": str(rabbit.base_dir), "node": NODE,
                                        "amqp_port": amqp_port, "dist_port": rabbit.dist_port}}
    emu_url = f"http://127.0.0.1:{emu_port}"
    state["emulator"] = spawn("emulator", [
        *EG_BRIDGE, "emulator", "--listen", f"127.0.0.1:{emu_port}",
        "--channel", f"demo={CHANNEL_ID}", "--data-dir", str(RUN / "emulator")])
    STATE.write_text(json.dumps(state))
    wait_for("the emulator", lambda: http_json(emu_url + "/emulator/health"), 30,
             RUN / "emulator.log")
    print(f"stack: EG emulator on {emu_url}", flush=True)
    status_url = f"http://127.0.0.1:{status_port}"
    state["bridge"] = spawn("bridge", [*EG_BRIDGE, "run", "-c", "config/demo.yaml"], env={
        "MQ_ADDRESS": rabbit.address, "EG_ENDPOINT": emu_url,
        "STATUS_LISTEN": f"127.0.0.1:{status_port}"})
    state["status_url"] = status_url
    STATE.write_text(json.dumps(state))
    wait_for("the bridge", lambda: http_json(status_url + "/readyz").get("ready"), 60,
             RUN / "bridge.log")
    print(f"stack: eg-bridge ready, status on {status_url}/status", flush=True)
    ids = asyncio.run(publish_samples(rabbit.amqp_url))
    print(f"stack: published {len(ids)} messages to queue {QUEUE!r}: {', '.join(ids)}")

    def arrived() -> bool:
        return bool(http_json(f"{emu_url}/emulator/events?source={SOURCE}&limit=0")["total"]
                    >= len(ids))

    wait_for("the events", arrived, 30, RUN / "bridge.log")
    events = http_json(f"{emu_url}/emulator/events?source={SOURCE}")["events"]
    print(f"\nEvents the EG emulator received ({len(events)}):")
    for row in events[-len(ids):]:
        print(json.dumps(row["event"], indent=2, ensure_ascii=False))
    status = http_json(status_url + "/status")
    print(f"\nBridge state: {status['state']}; published {status['counters']['events_published']}"
          f" event(s); source {status['source']['name']} ({status['source']['status']})")
    print(f"Status:   curl {status_url}/status   (also /readyz /healthz /metrics)")
    print(f"Events:   curl '{emu_url}/emulator/events?source={SOURCE}'")
    print(f"Publish:  any AMQP client to {rabbit.amqp_url} queue {QUEUE!r}")
    print(f"Logs:     {RUN}/bridge.log, {RUN}/emulator.log")
    print("Stop:     scripts/demo.sh down")


def _stop_pid(pid: int, timeout_s: float) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            os.kill(pid, 0)
            if Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z":
                return
            time.sleep(0.1)
        os.kill(pid, signal.SIGKILL)


def down(*, quiet: bool = False) -> None:
    """Stop the bridge (it drains), the emulator, then RabbitMQ."""
    if not STATE.exists():
        if not quiet:
            print("stack: not running")
        return
    state = json.loads(STATE.read_text())
    for name in ("bridge", "emulator"):
        if name in state:
            _stop_pid(int(state[name]), 30)
    r = state["rabbit"]
    rabbit = RabbitServer(Path(r["base"]), node_name=r["node"], amqp_port=r["amqp_port"],
                          dist_port=r["dist_port"], owner="demo-stack")
    with contextlib.suppress(Exception):
        rabbit.ctl("stop", timeout_s=30)
    rabbit.kill()
    STATE.unlink()
    print("stack: stopped (data kept in .run/; remove it to start afresh)")


def status() -> None:
    """Print the bridge's /status."""
    if not STATE.exists():
        sys.exit("stack: not running")
    print(json.dumps(http_json(json.loads(STATE.read_text())["status_url"] + "/status"),
                     indent=2))


if __name__ == "__main__":
    command = sys.argv[1] if len(sys.argv) > 1 else "up"
    {"up": up, "down": down, "status": status}.get(command, lambda: sys.exit(
        f"usage: {sys.argv[0]} up|down|status"))()
