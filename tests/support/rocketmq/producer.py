"""Send messages with the real ``rocketmq.client.Producer`` (rocketmq-client-python over
librocketmq), in a process of its own: the native library keeps per-process global state.

Usage: ``python -m tests.support.rocketmq.producer < spec.json``; the spec is
``{"namesrv": "h:p", "topic": str, "group": str, "acl": [ak, sk] | null,
"messages": [{"body": str, "tags": str, "keys": str, "properties": {str: str}}]}``.
Prints one JSON line per message: ``{"msg_id": str, "status": int, "offset": int}``; exits 1
with the error on stderr when a send fails.
"""

from __future__ import annotations

import json
import sys
from typing import Any


def send_all(spec: dict[str, Any]) -> int:
    """Start a producer, send every message synchronously, shut down; return an exit code."""
    from rocketmq.client import Message, Producer  # noqa: PLC0415 - loads the native library

    producer = Producer(spec.get("group") or "eg-bridge-test-producer", timeout=5000)
    producer.set_name_server_address(spec["namesrv"])
    if spec.get("acl"):
        producer.set_session_credentials(spec["acl"][0], spec["acl"][1], "")
    producer.start()
    try:
        for item in spec["messages"]:
            msg = Message(spec["topic"])
            msg.set_body(item["body"])
            if item.get("tags"):
                msg.set_tags(item["tags"])
            if item.get("keys"):
                msg.set_keys(item["keys"])
            for key, value in (item.get("properties") or {}).items():
                msg.set_property(key, value)
            result = producer.send_sync(msg)
            print(json.dumps({"msg_id": result.msg_id, "status": int(result.status),
                              "offset": result.offset}), flush=True)
    except Exception as exc:
        print(f"send failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    finally:
        producer.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(send_all(json.load(sys.stdin)))
