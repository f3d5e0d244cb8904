"""A start-up check of a RocketMQ route, over the 4.x remoting protocol
(shared/rocketmq.md §2).

The native push consumer starts "successfully" with a wrong name server, a missing topic or
wrong ACL keys and then consumes nothing (seen with client-cpp 2.1.0; its producer reports
all three as "No route info"). Before the native consumer starts, :func:`check_route` asks a
name server for the topic's route (GET_ROUTEINFO_BY_TOPIC, code 105) and the master broker for
the group's offset of queue 0 (QUERY_CONSUMER_OFFSET, code 14, ACL-signed as the client signs:
``Base64(HmacSHA1(secret, sorted ext values + body))``), and names what failed. Error texts
never contain the access key or the secret key. :func:`topic_exists` asks the name servers
whether a topic has a route (the dead-letter topic, whose absence is only worth a warning).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import itertools
import json
import re
import struct
from typing import Any

from bridge.errors import ConsumerError

LIKELY_CAUSES = ("likely causes: a wrong detail.namesrv_address, a topic that does not exist "
                 "on that instance, or wrong ACL keys (detail.access_key/secret_key)")
"""What "No route info" means from this client; appended to every route problem."""
ROUTE, QUERY_OFFSET = 105, 14
SUCCESS, TOPIC_NOT_EXIST, QUERY_NOT_FOUND = 0, 17, 22
_opaque = itertools.count(1)
_NUMERIC_KEY = re.compile(r'([{,]\s*)(-?\d+)\s*:')


class RouteProblem(ConsumerError):
    """The route check found why the consumer would receive nothing."""


def sign(secret_key: str, ext: dict[str, str], body: bytes = b"") -> str:
    """The ACL signature of a request (Java ``AclUtils``, C++ ``ClientRPCHook``)."""
    content = "".join(v for k, v in sorted(ext.items()) if k != "Signature").encode() + body
    return base64.b64encode(hmac.new(secret_key.encode(), content, hashlib.sha1).digest()).decode()


def encode_request(code: int, ext: dict[str, str], credentials: tuple[str, str] | None) -> bytes:
    """One JSON-serialized remoting request frame (signed when ``credentials`` = (ak, sk))."""
    ext = dict(ext)
    if credentials is not None:
        ext["AccessKey"], ext["OnsChannel"] = credentials[0], ""
        ext["Signature"] = sign(credentials[1], ext)
    header = json.dumps({"code": code, "language": "PYTHON", "version": 373,
                         "opaque": next(_opaque), "flag": 0, "remark": "",
                         "extFields": ext}).encode()
    return struct.pack(">ii", 4 + len(header), len(header)) + header


async def request(address: str, code: int, ext: dict[str, str],
                  credentials: tuple[str, str] | None, timeout_s: float
                  ) -> tuple[int, str, bytes]:
    """Send one request to ``host:port``; return (response code, remark, body).

    Raises:
        OSError, TimeoutError: no connection or no answer in ``timeout_s`` seconds.
        ValueError: the answer is not a remoting frame.
    """
    host, _, port = address.rpartition(":")
    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, int(port)), timeout_s)
    try:
        writer.write(encode_request(code, ext, credentials))
        (length,) = struct.unpack(">i", await asyncio.wait_for(reader.readexactly(4), timeout_s))
        frame = await asyncio.wait_for(reader.readexactly(length), timeout_s)
    except asyncio.IncompleteReadError:
        raise ValueError("connection closed before the answer") from None
    finally:
        writer.close()
    head_len = struct.unpack_from(">i", frame)[0] & 0xFFFFFF
    head = json.loads(frame[4:4 + head_len])
    return int(head["code"]), str(head.get("remark") or ""), frame[4 + head_len:]


def master_address(route_body: bytes) -> str:
    """The master broker (id 0) of the first broker with readable queues in a route.

    Raises:
        ValueError: no such broker in the route.
    """
    # Java writes brokerAddrs with bare numeric keys ({0:"h:p"}), which JSON does not allow.
    route: dict[str, Any] = json.loads(_NUMERIC_KEY.sub(r'\1"\2":', route_body.decode()))
    readable = {q["brokerName"] for q in route.get("queueDatas") or []
                if int(q.get("readQueueNums", 0)) > 0}
    for broker in route.get("brokerDatas") or []:
        address = (broker.get("brokerAddrs") or {}).get("0")
        if broker.get("brokerName") in readable and address:
            return str(address)
    raise ValueError("the route names no master broker with readable queues")


def _scrub(text: str, credentials: tuple[str, str] | None) -> str:
    for secret in credentials or ():
        if secret:
            text = text.replace(secret, "***")
    return text[:300]


async def check_route(namesrv: str, topic: str, group: str,
                      credentials: tuple[str, str] | None, timeout_s: float = 5.0) -> None:
    """Check that ``group`` could consume ``topic`` through the name servers ``namesrv``.

    Args:
        namesrv: ``host:port`` list separated by ``;``.
        topic, group: ``detail.topic``/``detail.group``.
        credentials: (access_key, secret_key) when ACL is enabled, else None.
        timeout_s: per connection and per answer, in seconds.

    Raises:
        RouteProblem: no name server answered; the topic has no route; the broker is
            unreachable or refused the group's (signed) request. The text names the failed
            step and :data:`LIKELY_CAUSES`, never a credential.
    """
    failures: list[str] = []
    for address in [a.strip() for a in namesrv.split(";") if a.strip()]:
        try:
            code, remark, body = await request(address, ROUTE, {"topic": topic}, credentials,
                                               timeout_s)
        except (OSError, TimeoutError, ValueError) as exc:
            failures.append(f"{address}: {type(exc).__name__}")
            continue
        if code == TOPIC_NOT_EXIST:
            raise RouteProblem(f"no route info for topic {topic!r}: name server {address} does "
                               f"not know it; {LIKELY_CAUSES}")
        if code != SUCCESS:
            raise RouteProblem(f"no route info for topic {topic!r}: name server {address} "
                               f"answered code {code} ({_scrub(remark, credentials)}); "
                               f"{LIKELY_CAUSES}")
        break
    else:
        raise RouteProblem(f"no route info for topic {topic!r}: no name server answered "
                           f"({', '.join(failures) or 'none configured'}); {LIKELY_CAUSES}")
    try:
        broker = master_address(body)
    except (ValueError, KeyError, TypeError) as exc:
        raise RouteProblem(f"no route info for topic {topic!r}: {exc}; {LIKELY_CAUSES}"
                           ) from None
    ext = {"consumerGroup": group, "topic": topic, "queueId": "0"}
    try:
        code, remark, _ = await request(broker, QUERY_OFFSET, ext, credentials, timeout_s)
    except (OSError, TimeoutError, ValueError) as exc:
        raise RouteProblem(f"broker {broker} of topic {topic!r} is unreachable from here "
                           f"({type(exc).__name__}); {LIKELY_CAUSES}") from None
    if code not in (SUCCESS, QUERY_NOT_FOUND):
        raise RouteProblem(f"broker {broker} refused group {group!r} on topic {topic!r}: code "
                           f"{code} ({_scrub(remark, credentials)}); {LIKELY_CAUSES}")


async def topic_exists(namesrv: str, topic: str, credentials: tuple[str, str] | None,
                       timeout_s: float = 5.0) -> bool | None:
    """Whether the name servers ``namesrv`` (``h:p;h:p``) know a route for ``topic``.

    Returns:
        True or False from the first name server that answers SUCCESS or TOPIC_NOT_EXIST;
        None when none answered or an answer was another error. Never raises.
    """
    for address in [a.strip() for a in namesrv.split(";") if a.strip()]:
        try:
            code, _, _ = await request(address, ROUTE, {"topic": topic}, credentials, timeout_s)
        except (OSError, TimeoutError, ValueError):
            continue
        return {SUCCESS: True, TOPIC_NOT_EXIST: False}.get(code)
    return None
