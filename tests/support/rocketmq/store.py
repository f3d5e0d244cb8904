"""The test broker's in-memory message store: topics, queues, consumer offsets, retry and
dead-letter topics (shared/rocketmq.md §1 "Concurrent mode", §2).

It survives a broker stop/restart (the real broker keeps its commit log on disk). Retries
follow the Java broker's ``SendMessageProcessor.consumerSendMsgBack`` in shape: the message is
copied to ``%RETRY%<group>`` with ``reconsume_times + 1``, ``RETRY_TOPIC`` and
``ORIGIN_MESSAGE_ID``; once ``reconsume_times`` reaches ``maxReconsumeTimes`` it goes to
``%DLQ%<group>`` instead. The delay levels are replaced by one fixed ``retry_delay_s``.

Topic creation follows the Java broker too: ``%RETRY%<group>`` exists as soon as anyone asks
(the Java broker creates it at the group's first heartbeat), ``%DLQ%<group>`` only from the
group's first dead letter of the broker's own (``createTopicInSendMessageBackMethod``); until
then the name server has no route for it and a send to it fails with "No route info" (no
``TBW102`` here: auto-creation is off, as on production brokers). Tests that need it earlier
create it, as an operator would.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field

from tests.support.rocketmq.codec import StoredMessage

RETRY_PREFIX = "%RETRY%"
DLQ_PREFIX = "%DLQ%"


def now_ms() -> int:
    """Wall-clock milliseconds, as RocketMQ timestamps are."""
    return int(time.time() * 1000)


@dataclass
class Topic:
    """A topic: ``queues[queue_id]`` lists the messages in queue-offset order."""

    name: str
    queues: list[list[StoredMessage]]


@dataclass
class SendBack:
    """One CONSUMER_SEND_MSG_BACK the broker processed (for test assertions)."""

    group: str
    msg_id: str
    reconsume_times: int
    to_dlq: bool


@dataclass
class Store:
    """Messages, offsets and send-back history.

    Args:
        store_host: the broker's address, written into stored messages (offset ids).
        retry_delay_s: how long a sent-back message waits before it is on ``%RETRY%<group>``.
        unknown_offset_is_zero: answer QUERY_CONSUMER_OFFSET for an unknown group with 0 (the
            Java broker does so while offset 0 of the queue is still cached) instead of
            QUERY_NOT_FOUND (cold data: the client then starts at the newest offset).
        max_reconsume_times: a test shortcut that caps the client's ``maxReconsumeTimes``
            (16), so a dead-letter test is quick; None keeps the client's value.
    """

    store_host: tuple[str, int] = ("127.0.0.1", 0)
    retry_delay_s: float = 1.0
    unknown_offset_is_zero: bool = False
    max_reconsume_times: int | None = None
    topics: dict[str, Topic] = field(default_factory=dict)
    offsets: dict[tuple[str, str, int], int] = field(default_factory=dict)
    by_commit_offset: dict[int, StoredMessage] = field(default_factory=dict)
    send_backs: list[SendBack] = field(default_factory=list)
    commits: int = 0
    _next_commit: int = 0
    _arrival: asyncio.Event | None = None
    _timers: set[asyncio.TimerHandle] = field(default_factory=set)

    def create_topic(self, name: str, queues: int = 4) -> Topic:
        """Create ``name`` with ``queues`` queues (kept if it exists)."""
        if name not in self.topics:
            self.topics[name] = Topic(name, [[] for _ in range(queues)])
        return self.topics[name]

    def topic(self, name: str) -> Topic | None:
        """The topic, creating ``%RETRY%`` topics on demand (``%DLQ%``: see the module)."""
        if name not in self.topics and name.startswith(RETRY_PREFIX):
            self.create_topic(name, 1)
        return self.topics.get(name)

    def messages(self, topic: str) -> list[StoredMessage]:
        """Every message of ``topic`` (all queues), in commit order."""
        t = self.topics.get(topic)
        if t is None:
            return []
        return sorted((m for q in t.queues for m in q), key=lambda m: m.commit_offset)

    def append(self, topic: str, queue_id: int, body: bytes, properties: dict[str, str], *,
               born_timestamp: int, born_host: tuple[str, int], flag: int = 0, sys_flag: int = 0,
               reconsume_times: int = 0) -> StoredMessage:
        """Store one message at the end of ``topic``/``queue_id`` and wake long polls.

        Raises:
            KeyError: no such topic.
        """
        t = self.topic(topic)
        if t is None:
            raise KeyError(topic)
        queue = t.queues[queue_id % len(t.queues)]
        msg = StoredMessage(topic, queue_id % len(t.queues), len(queue), self._next_commit, body,
                            dict(properties), born_timestamp, now_ms(), born_host,
                            self.store_host, flag, sys_flag, reconsume_times)
        self._next_commit += 1000 + len(body)
        queue.append(msg)
        self.by_commit_offset[msg.commit_offset] = msg
        self._notify()
        return msg

    # -- offsets ---------------------------------------------------------------------------

    def max_offset(self, topic: str, queue_id: int) -> int:
        """The queue's next offset (0 for an unknown topic or queue)."""
        t = self.topic(topic)
        if t is None or not 0 <= queue_id < len(t.queues):
            return 0
        return len(t.queues[queue_id])

    def consumer_offset(self, group: str, topic: str, queue_id: int) -> int | None:
        """The committed offset, or None when the group has none for this queue."""
        found = self.offsets.get((group, topic, queue_id))
        if found is None and self.unknown_offset_is_zero:
            return 0
        return found

    def commit(self, group: str, topic: str, queue_id: int, offset: int) -> None:
        """Store a consumer offset (UPDATE_CONSUMER_OFFSET or a PULL's commitOffset)."""
        if offset >= 0:
            self.offsets[(group, topic, queue_id)] = offset
            self.commits += 1

    def reset_group(self, group: str, topic: str, offset: int = 0) -> None:
        """What ``mqadmin resetOffsetByTime`` does for a stopped group: every queue to
        ``offset``."""
        t = self.topic(topic)
        for queue_id in range(len(t.queues) if t else 0):
            self.offsets[(group, topic, queue_id)] = offset

    # -- retries ----------------------------------------------------------------------------

    def send_back(self, group: str, commit_offset: int, origin_msg_id: str,
                  max_reconsume_times: int) -> bool:
        """Re-queue a message the consumer gave back. False when the offset is unknown."""
        msg = self.by_commit_offset.get(commit_offset)
        if msg is None:
            return False
        times = msg.reconsume_times + 1
        props = dict(msg.properties)
        props.setdefault("RETRY_TOPIC", msg.topic)
        props["ORIGIN_MESSAGE_ID"] = origin_msg_id or msg.msg_id
        if self.max_reconsume_times is not None:
            max_reconsume_times = min(max_reconsume_times, self.max_reconsume_times)
        to_dlq = msg.reconsume_times >= max_reconsume_times
        self.send_backs.append(SendBack(group, msg.msg_id, times, to_dlq))
        target = (DLQ_PREFIX if to_dlq else RETRY_PREFIX) + group
        self.create_topic(target, 1)

        def store() -> None:
            self.append(target, 0, msg.body, props, born_timestamp=msg.born_timestamp,
                        born_host=msg.born_host, flag=msg.flag, sys_flag=msg.sys_flag,
                        reconsume_times=times)

        if to_dlq or self.retry_delay_s <= 0:
            store()
        else:
            loop = asyncio.get_running_loop()
            handle = loop.call_later(self.retry_delay_s, lambda: (self._timers.discard(handle),
                                                                    store()))
            self._timers.add(handle)
        return True

    # -- long polling ------------------------------------------------------------------------

    def _notify(self) -> None:
        if self._arrival is not None:
            self._arrival.set()
            self._arrival = None

    async def wait_for_arrival(self, timeout_s: float) -> None:
        """Return when any message is stored, or after ``timeout_s``."""
        if self._arrival is None:
            self._arrival = asyncio.Event()
        arrival = self._arrival
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(arrival.wait(), timeout_s)

    def close(self) -> None:
        """Cancel pending retry timers (at the end of a test)."""
        for handle in list(self._timers):
            handle.cancel()
        self._timers.clear()
