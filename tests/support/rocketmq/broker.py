"""An asyncio RocketMQ 4.x name server and broker on one port, for tests
(shared/rocketmq.md §2; what it does not prove: see the package docstring).

Requests served, from the C++ client's sequence: GET_ROUTEINFO_BY_TOPIC, HEART_BEAT,
GET_CONSUMER_LIST_BY_GROUP, QUERY/UPDATE_CONSUMER_OFFSET, GET_MAX/MIN_OFFSET, SEND_MESSAGE and
SEND_MESSAGE_V2, PULL_MESSAGE (long polling up to ``suspendTimeoutMillis``),
CONSUMER_SEND_MSG_BACK (to ``%RETRY%<group>``, then ``%DLQ%<group>``) and UNREGISTER_CLIENT.
With ``acl`` set, every broker request must carry a valid signature (name-server requests are
not checked, as the Java name server does not); a bad one is answered SYSTEM_ERROR with the
Java broker's AclException text.
"""

from __future__ import annotations

import asyncio
import json
import struct
import time
from collections import Counter
from collections.abc import Awaitable, Callable

from tests.support.rocketmq.codec import (
    V2_KEYS,
    Code,
    Command,
    decode_frame,
    decode_properties,
    encode_command,
    encode_stored,
    offset_message_id,
    signature,
)
from tests.support.rocketmq.store import Store

BROKER_NAME = "broker-a"
Handler = Callable[[Command, tuple[str, int]], Awaitable[Command | None]]


def tag_matches(expression: str, tags: str) -> bool:
    """The broker/client tag filter: ``*`` (or empty) matches all, else ``a || b``."""
    expression = expression.strip()
    if expression in ("", "*"):
        return True
    return tags in {t.strip() for t in expression.split("||")}


class TestBroker:
    """Name server + broker for the real C++ client.

    Args:
        host: the address to listen on and to advertise in routes.
        port: 0 picks a free port on the first start; later starts reuse it.
        acl: access key -> secret key; None disables ACL.
        store: the message store (kept across :meth:`stop`/:meth:`start`).
        max_suspend_s: a long poll is held at most this long (the client asks 15 s).
    """

    __test__ = False  # not a pytest test class

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *,
                 acl: dict[str, str] | None = None, store: Store | None = None,
                 max_suspend_s: float = 15.0) -> None:
        self.host = host
        self.port = port
        self.acl = acl
        self.store = store or Store()
        self.max_suspend_s = max_suspend_s
        self.requests: Counter[int] = Counter()
        self.route_queries: Counter[str] = Counter()
        self.acl_rejections = 0
        self.clients: dict[str, set[str]] = {}
        self._server: asyncio.Server | None = None
        self._conns: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._handlers: dict[int, Handler] = {
            Code.GET_ROUTEINFO_BY_TOPIC: self._route, Code.HEART_BEAT: self._heartbeat,
            Code.GET_CONSUMER_LIST_BY_GROUP: self._consumer_list,
            Code.QUERY_CONSUMER_OFFSET: self._query_offset,
            Code.UPDATE_CONSUMER_OFFSET: self._update_offset,
            Code.GET_MAX_OFFSET: self._max_offset, Code.GET_MIN_OFFSET: self._min_offset,
            Code.SEND_MESSAGE: self._send, Code.SEND_MESSAGE_V2: self._send,
            Code.PULL_MESSAGE: self._pull, Code.CONSUMER_SEND_MSG_BACK: self._send_back,
            Code.UNREGISTER_CLIENT: self._unregister,
        }

    @property
    def address(self) -> str:
        """``host:port``, the name-server address clients are given."""
        return f"{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        """The broker accepts connections."""
        return self._server is not None

    async def start(self) -> None:
        """Listen (on the same port as before after a :meth:`stop`)."""
        self._server = await asyncio.start_server(self._serve, self.host, self.port,
                                                  reuse_address=True)
        self.port = self._server.sockets[0].getsockname()[1]
        self.store.store_host = (self.host, self.port)

    async def stop(self) -> None:
        """Close the port and every connection, as a crashed broker would; the store stays."""
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in list(self._conns):
            writer.transport.abort()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self.clients.clear()

    async def close(self) -> None:
        """Stop for good (end of a test)."""
        await self.stop()
        self.store.close()

    # -- connections -------------------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._conns.add(writer)
        peer = writer.get_extra_info("peername") or ("127.0.0.1", 0)
        try:
            while True:
                (length,) = struct.unpack(">i", await reader.readexactly(4))
                request = decode_frame(await reader.readexactly(length))
                task = asyncio.create_task(self._answer(request, (peer[0], peer[1]), writer))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
        except (asyncio.IncompleteReadError, ConnectionError, ValueError):
            pass
        finally:
            self._conns.discard(writer)
            writer.close()

    async def _answer(self, request: Command, peer: tuple[str, int],
                      writer: asyncio.StreamWriter) -> None:
        self.requests[request.code] += 1
        if request.code == Code.GET_ROUTEINFO_BY_TOPIC:
            self.route_queries[request.ext.get("topic", "")] += 1
        handler = self._handlers.get(request.code)
        if handler is None:
            response: Command | None = request.reply(
                Code.REQUEST_CODE_NOT_SUPPORTED, remark=f"code {request.code} not supported")
        elif (rejected := self._check_acl(request)) is not None:
            response = rejected
        else:
            response = await handler(request, peer)
        if response is not None and not request.oneway and not writer.is_closing():
            writer.write(encode_command(response))

    def _check_acl(self, request: Command) -> Command | None:
        if self.acl is None or request.code == Code.GET_ROUTEINFO_BY_TOPIC:
            return None
        access_key = request.ext.get("AccessKey", "")
        secret = self.acl.get(access_key)
        if secret is None:
            remark = f"org.apache.rocketmq.acl.common.AclException: No acl config for {access_key}"
        elif signature(secret, request.ext, request.body) != request.ext.get("Signature"):
            remark = ("org.apache.rocketmq.acl.common.AclException: Check signature failed for "
                      f"accessKey={access_key}")
        else:
            return None
        self.acl_rejections += 1
        return request.reply(Code.SYSTEM_ERROR, remark=remark)

    # -- name server -------------------------------------------------------------------------

    async def _route(self, req: Command, _peer: tuple[str, int]) -> Command:
        name = req.ext.get("topic", "")
        topic = self.store.topic(name)
        if topic is None:
            return req.reply(Code.TOPIC_NOT_EXIST,
                             remark=f"No topic route info in name server for the topic: {name}")
        nums = len(topic.queues)
        route = {"orderTopicConf": "", "filterServerTable": {},
                 "queueDatas": [{"brokerName": BROKER_NAME, "readQueueNums": nums,
                                 "writeQueueNums": nums, "perm": 6, "topicSynFlag": 0}],
                 "brokerDatas": [{"cluster": "test", "brokerName": BROKER_NAME,
                                  "brokerAddrs": {"0": self.address}}]}
        return req.reply(body=json.dumps(route).encode())

    # -- broker: clients and offsets -----------------------------------------------------------

    async def _heartbeat(self, req: Command, _peer: tuple[str, int]) -> Command:
        data = json.loads(req.body or b"{}")
        for consumer in data.get("consumerDataSet") or []:
            self.clients.setdefault(consumer["groupName"], set()).add(data["clientID"])
        return req.reply()

    async def _unregister(self, req: Command, _peer: tuple[str, int]) -> Command:
        self.clients.get(req.ext.get("consumerGroup", ""), set()).discard(
            req.ext.get("clientID", ""))
        return req.reply()

    async def _consumer_list(self, req: Command, _peer: tuple[str, int]) -> Command:
        group = req.ext.get("consumerGroup", "")
        ids = sorted(self.clients.get(group, ()))
        if not ids:
            return req.reply(Code.SYSTEM_ERROR, remark=f"no consumer for this group, {group}")
        return req.reply(body=json.dumps({"consumerIdList": ids}).encode())

    async def _query_offset(self, req: Command, _peer: tuple[str, int]) -> Command:
        offset = self.store.consumer_offset(req.ext["consumerGroup"], req.ext["topic"],
                                            int(req.ext["queueId"]))
        if offset is None:
            return req.reply(Code.QUERY_NOT_FOUND, remark="Not found, maybe this group consumer "
                             "boot first")
        return req.reply(ext={"offset": offset})

    async def _update_offset(self, req: Command, _peer: tuple[str, int]) -> Command:
        self.store.commit(req.ext["consumerGroup"], req.ext["topic"], int(req.ext["queueId"]),
                          int(req.ext["commitOffset"]))
        return req.reply()

    async def _max_offset(self, req: Command, _peer: tuple[str, int]) -> Command:
        return req.reply(ext={"offset": self.store.max_offset(req.ext["topic"],
                                                              int(req.ext["queueId"]))})

    async def _min_offset(self, req: Command, _peer: tuple[str, int]) -> Command:
        return req.reply(ext={"offset": 0})

    # -- broker: messages ----------------------------------------------------------------------

    async def _send(self, req: Command, peer: tuple[str, int]) -> Command:
        ext = {V2_KEYS.get(k, k): v for k, v in req.ext.items()}
        name = ext.get("topic", "")
        if self.store.topic(name) is None:
            return req.reply(Code.TOPIC_NOT_EXIST,
                             remark=f"topic[{name}] not exist, apply first please!")
        msg = self.store.append(
            name, int(ext.get("queueId", "0")), req.body,
            decode_properties(ext.get("properties", "")),
            born_timestamp=int(ext.get("bornTimestamp", "0")), born_host=peer,
            flag=int(ext.get("flag", "0")), sys_flag=int(ext.get("sysFlag", "0")),
            reconsume_times=int(ext.get("reconsumeTimes", "0") or 0))
        return req.reply(ext={"msgId": offset_message_id(msg.store_host, msg.commit_offset),
                              "queueId": msg.queue_id, "queueOffset": msg.queue_offset})

    async def _send_back(self, req: Command, _peer: tuple[str, int]) -> Command:
        ok = self.store.send_back(req.ext["group"], int(req.ext["offset"]),
                                  req.ext.get("originMsgId", ""),
                                  int(req.ext.get("maxReconsumeTimes", "16") or 16))
        if not ok:
            return req.reply(Code.SYSTEM_ERROR, remark="look message by offset failed")
        return req.reply()

    async def _pull(self, req: Command, _peer: tuple[str, int]) -> Command:
        ext = req.ext
        group, name, queue_id = ext["consumerGroup"], ext["topic"], int(ext["queueId"])
        offset, sys_flag = int(ext["queueOffset"]), int(ext.get("sysFlag", "0"))
        if sys_flag & 1:
            self.store.commit(group, name, queue_id, int(ext.get("commitOffset", "-1")))
        topic = self.store.topic(name)
        if topic is None or not 0 <= queue_id < len(topic.queues):
            return req.reply(Code.TOPIC_NOT_EXIST, remark=f"topic[{name}] not exist")
        queue = topic.queues[queue_id]
        suspend_s = min(int(ext.get("suspendTimeoutMillis", "0")) / 1000, self.max_suspend_s)
        deadline = time.monotonic() + (suspend_s if sys_flag & 2 else 0)
        while True:
            head = {"minOffset": 0, "maxOffset": len(queue), "suggestWhichBrokerId": 0}
            if offset > len(queue):
                return req.reply(Code.PULL_OFFSET_MOVED,
                                 ext={**head, "nextBeginOffset": len(queue)})
            batch = queue[offset:offset + int(ext.get("maxMsgNums", "32"))]
            if batch:
                head["nextBeginOffset"] = batch[-1].queue_offset + 1
                matched = [m for m in batch if tag_matches(ext.get("subscription", "*"), m.tags)]
                if not matched:
                    return req.reply(Code.PULL_RETRY_IMMEDIATELY, ext=head)
                return req.reply(ext=head, body=b"".join(encode_stored(m) for m in matched))
            left = deadline - time.monotonic()
            if left <= 0:
                return req.reply(Code.PULL_NOT_FOUND, ext={**head, "nextBeginOffset": offset})
            await self.store.wait_for_arrival(left)

