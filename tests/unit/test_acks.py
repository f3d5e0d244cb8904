"""Coalesced AMQP settlement: which frames go out, in which order (a recording channel stands in
for aiormq's; the real broker is exercised by tests/integration)."""

from __future__ import annotations

import asyncio

from bridge.consumers.acks import ChannelAcker, Fate


class RecordingChannel:
    def __init__(self) -> None:
        self.frames: list[tuple[str, int, bool]] = []
        self.is_closed = False

    async def basic_ack(self, tag: int, multiple: bool = False, wait: bool = True) -> None:
        self.frames.append(("ack", tag, multiple))

    async def basic_nack(self, tag: int, requeue: bool = True, wait: bool = True) -> None:
        self.frames.append(("requeue" if requeue else "reject", tag, False))


async def settle(acker: ChannelAcker, fates: dict[int, Fate]) -> None:
    for tag, fate in fates.items():
        acker.settle(tag, fate)
    await asyncio.sleep(0)
    await asyncio.sleep(0.01)


async def test_contiguous_acks_become_one_multiple_ack() -> None:
    ch = RecordingChannel()
    acker = ChannelAcker(ch)
    for tag in range(1, 101):
        acker.track(tag)
    await settle(acker, dict.fromkeys(range(1, 101), Fate.ACK))
    assert ch.frames == [("ack", 100, True)]


async def test_a_nack_is_written_before_the_acks_after_it() -> None:
    ch = RecordingChannel()
    acker = ChannelAcker(ch)
    for tag in range(1, 6):
        acker.track(tag)
    await settle(acker, {1: Fate.ACK, 2: Fate.ACK, 3: Fate.REJECT, 4: Fate.ACK, 5: Fate.REQUEUE})
    assert ch.frames == [("ack", 2, True), ("reject", 3, False), ("ack", 4, True),
                         ("requeue", 5, False)]


async def test_settled_tags_wait_behind_an_unsettled_head_up_to_the_limit() -> None:
    ch = RecordingChannel()
    acker = ChannelAcker(ch, hold_limit=3)
    for tag in range(1, 7):
        acker.track(tag)
    await settle(acker, {2: Fate.ACK, 3: Fate.ACK})
    assert ch.frames == []  # tag 1 is unsettled: a multiple ack would cover it
    await settle(acker, {4: Fate.ACK, 5: Fate.ACK})
    assert ch.frames == [("ack", t, False) for t in (2, 3, 4, 5)]  # over the limit: one by one
    await settle(acker, {1: Fate.ACK, 6: Fate.ACK})
    assert ch.frames[4:] == [("ack", 6, True)]  # covers 1 and 6; 2-5 are already acked


async def test_a_closed_channel_gets_no_frames() -> None:
    ch = RecordingChannel()
    acker = ChannelAcker(ch)
    acker.track(1)
    ch.is_closed = True
    await settle(acker, {1: Fate.ACK})
    assert ch.frames == []
    assert acker.dropped == 1


async def test_drain_writes_everything_decided() -> None:
    ch = RecordingChannel()
    acker = ChannelAcker(ch, hold_limit=100)
    for tag in (1, 2, 3):
        acker.track(tag)
    acker.settle(3, Fate.ACK)
    await acker.drain()
    assert ch.frames == [("ack", 3, False)]
