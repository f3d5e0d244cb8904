"""Coalesced AMQP settlement for one channel (AMQP 0-9-1 ``basic.ack`` with ``multiple``).

Delivery tags grow per channel. Settlements are collected and written once per event-loop
turn: the settled run at the head of the unsettled tags goes out as one ``basic.ack
multiple=true`` (a nack in the run is written before the acks after it, so a multiple ack never
covers a tag that was meant to be nacked); settlements behind an unsettled head wait, unless
more than ``hold_limit`` wait, which sends them one by one so a slow message never stalls the
prefetch window. Acks never travel on another channel: once the channel is closed, settlements
are dropped and the broker redelivers those messages (shared/design.md §7).
"""

from __future__ import annotations

import asyncio
import enum
from collections import deque
from typing import Any

import structlog

log = structlog.get_logger("bridge.consumers.rabbitmq")


class Fate(enum.Enum):
    """What to send for one delivery tag."""

    ACK = "ack"
    REQUEUE = "requeue"
    REJECT = "reject"


class ChannelAcker:
    """Settles deliveries of one aiormq channel.

    Args:
        channel: the aiormq channel that delivered the messages (``basic_ack``/``basic_nack``).
        hold_limit: how many settled tags may wait behind an unsettled head.
    """

    def __init__(self, channel: Any, hold_limit: int = 100) -> None:
        self.channel = channel
        self._hold_limit = hold_limit
        self._unsettled: deque[int] = deque()
        self._fates: dict[int, Fate] = {}
        self._scheduled = False
        self._writer: asyncio.Task[None] | None = None
        self.dropped = 0

    @property
    def open(self) -> bool:
        """True while the channel can carry settlements."""
        return not self.channel.is_closed

    def track(self, tag: int) -> None:
        """Note a new delivery tag (tags arrive in increasing order)."""
        self._unsettled.append(tag)

    def settle(self, tag: int, fate: Fate) -> None:
        """Decide ``tag``'s fate; the frame goes out on the next loop turn."""
        self._fates[tag] = fate
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._scheduled = False
        frames: list[tuple[Fate, int, bool]] = []
        run_ack: int | None = None
        while self._unsettled and self._unsettled[0] in self._fates:
            tag = self._unsettled.popleft()
            fate = self._fates.pop(tag)
            if fate is Fate.ACK:
                run_ack = tag
                continue
            if run_ack is not None:
                frames.append((Fate.ACK, run_ack, True))
                run_ack = None
            frames.append((fate, tag, False))
        if run_ack is not None:
            frames.append((Fate.ACK, run_ack, True))
        if len(self._fates) > self._hold_limit:
            for tag in sorted(self._fates):
                frames.append((self._fates.pop(tag), tag, False))
                self._unsettled.remove(tag)
        if frames:
            self._write(frames)

    def _write(self, frames: list[tuple[Fate, int, bool]]) -> None:
        previous = self._writer
        self._writer = asyncio.create_task(self._send(previous, frames))

    async def _send(self, previous: asyncio.Task[None] | None,
                    frames: list[tuple[Fate, int, bool]]) -> None:
        if previous is not None and not previous.done():
            await asyncio.wait([previous])
        for fate, tag, multiple in frames:
            if self.channel.is_closed:
                self.dropped += len(frames)
                log.debug("channel closed, settlement dropped; the broker redelivers",
                          frames=len(frames))
                return
            try:
                if fate is Fate.ACK:
                    await self.channel.basic_ack(tag, multiple=multiple, wait=False)
                else:
                    await self.channel.basic_nack(tag, requeue=fate is Fate.REQUEUE, wait=False)
            except Exception as exc:
                self.dropped += 1
                log.debug("settlement not sent; the broker redelivers", error=type(exc).__name__)
                return

    async def drain(self) -> None:
        """Write what is decided (even behind an unsettled head) and wait for it."""
        self._hold_limit = -1
        self._flush()
        if self._writer is not None:
            await asyncio.wait([self._writer])
