"""A protocol-level RocketMQ test broker and helpers to drive the real client against it
(issue 6; shared/rocketmq.md §2; shared/design.md §10).

:class:`~tests.support.rocketmq.broker.TestBroker` serves the name-server and broker roles on
one asyncio port, enough for the real rocketmq-client-python 2.0.0 over librocketmq (client-cpp
2.1.0) to produce, consume, retry, commit offsets, sign ACL requests and survive a broker
restart. The real client runs in processes of its own (the bridge; :func:`produce`), because
librocketmq keeps per-process global state.

What it does NOT prove (a real broker, or Huawei DMS, may behave differently):

* real scheduling: one in-memory store, no commit log, no flush or replication, no page cache;
  a new group gets QUERY_NOT_FOUND (the client then starts at the newest offset) unless the
  test resets the group, as an operator would;
* delay levels: a sent-back message waits one fixed ``retry_delay_s`` (1 s by default), not
  10 s, 30 s, 1 min, ... per reconsume time; the DLQ threshold is the client's
  ``maxReconsumeTimes`` (16), checked as the Java broker does;
* dead-letter topics as a real broker keeps them: ``%DLQ%<group>`` has no route until the
  group's first broker-made dead letter (as in Java), but then it is readable and takes
  producer sends from anyone; older Java 4.x brokers create it write-only (perm 2), and
  whether Huawei DMS accepts client sends to ``%DLQ%`` topics (and which ACL topic
  permission that needs) is unverified;
* rebalancing across several consumers of a group (no NOTIFY_CONSUMER_IDS_CHANGED, no
  lock/unlock for orderly mode), tag filtering by hash code, SQL92 filters, transactions;
* TLS (the client has none), ACL permissions per topic or group (only the signature and the
  access key are checked), name-server ACL (none, like the Java name server);
* Huawei DMS specifics: its name-server addresses and ports, console offset resets, quotas,
  throttling, its message-trace topic (trace records are refused here: no route).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tests.support.rocketmq.broker import TestBroker
from tests.support.rocketmq.store import DLQ_PREFIX, RETRY_PREFIX, Store

__all__ = ["DLQ_PREFIX", "RETRY_PREFIX", "Store", "TestBroker", "produce", "rocketmq_source"]

ROOT = Path(__file__).resolve().parents[3]


def rocketmq_source(broker: TestBroker, *, topic: str, group: str,
                    acl: tuple[str, str] | None = None, tags: str = "*", threads: int = 4,
                    properties: Sequence[str] = (), dead_letter_topic: str = ""
                    ) -> dict[str, Any]:
    """The ``source.detail`` and ``source.connection`` of a bridge config for ``broker``."""
    detail: dict[str, Any] = {"namesrv_address": broker.address, "group": group,
                              "topic": topic, "enable_acl": acl is not None}
    if acl is not None:
        detail.update(access_key=acl[0], secret_key=acl[1])
    return {"type": "ROCKETMQ", "detail": detail,
            "connection": {"tags": tags, "threads": threads, "properties": list(properties),
                           "dead_letter_topic": dead_letter_topic}}


async def produce(broker: TestBroker, topic: str, messages: Sequence[Mapping[str, Any]], *,
                  acl: tuple[str, str] | None = None, workdir: Path | None = None,
                  timeout_s: float = 120.0) -> list[str]:
    """Send ``messages`` (``body``, ``tags``, ``keys``, ``properties``) with the real producer
    in a subprocess; return the message ids it reported, in order. The native client's log
    goes to ``workdir/rocketmq-logs`` when ``workdir`` is given.

    Raises:
        AssertionError: the producer failed (its stderr is in the message).
    """
    spec = {"namesrv": broker.address, "topic": topic, "acl": list(acl) if acl else None,
            "messages": list(messages)}
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    if workdir is not None:
        env["ROCKETMQ_CLIENT_LOG_DIR"] = str(workdir / "rocketmq-logs")  # the native client's log
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.support.rocketmq.producer", stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=ROOT, env=env)
    out, err = await asyncio.wait_for(proc.communicate(json.dumps(spec).encode()), timeout_s)
    if proc.returncode != 0:
        raise AssertionError(f"producer exited {proc.returncode}: {err.decode()[-2000:]}")
    return [json.loads(line)["msg_id"] for line in out.decode().splitlines() if line.strip()]
