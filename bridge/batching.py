"""Group encoded events into PutEvents requests within EG's limits; no I/O.

Limits (shared/eg-api.md §5): at most 20 events and 256 KiB per request body, the
``{"events":[...]}`` wrapper included. Events over 64 KiB never reach the batcher (the pipeline
dead-letters them). An event id appears at most once per batch, because EG reports results by
``event_id`` and two entries with one id could not be told apart (design §7).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from bridge.eventgrid.models import MAX_EVENTS_PER_REQUEST, MAX_REQUEST_BYTES

T = TypeVar("T")
_HEAD = b'{"events":['
_TAIL = b"]}"
WRAPPER_BYTES = len(_HEAD) + len(_TAIL)


@dataclass(slots=True)
class Item(Generic[T]):
    """One event on its way: the delivery to settle, its id and its encoded bytes.

    Attributes:
        delivery: what settles the broker message.
        event_id: the CloudEvent ``id`` (results are matched by it).
        encoded: the event's compact JSON.
        held_since: ``time.monotonic()`` when the bridge received the message (for
            ``max_hold_s``).
        attempts: PutEvents attempts so far.
    """

    delivery: T
    event_id: str
    encoded: bytes
    held_since: float = field(default_factory=time.monotonic)
    attempts: int = 0


@dataclass(slots=True)
class Batch(Generic[T]):
    """Items that travel in one PutEvents request."""

    items: list[Item[T]]

    def body(self) -> bytes:
        """The request body ``{"events":[e1,e2,...]}`` from the pre-encoded events."""
        return _HEAD + b",".join(i.encoded for i in self.items) + _TAIL

    def __len__(self) -> int:
        return len(self.items)


def request_size(sizes: Iterable[int]) -> int:
    """Bytes of a request body holding events of these encoded sizes (commas included)."""
    total, n = 0, 0
    for s in sizes:
        total, n = total + s, n + 1
    return WRAPPER_BYTES + total + max(n - 1, 0)


class Batcher(Generic[T]):
    """Accumulates items into batches; the caller owns timing and sending.

    Args:
        max_events: events per request, 1..20 (EG limit 20, eg-api.md §5).
        max_bytes: request body bytes (EG limit 256 KiB, eg-api.md §5).
        linger_s: how long the first item of a batch may wait for company, in seconds.
    """

    def __init__(self, max_events: int = MAX_EVENTS_PER_REQUEST,
                 max_bytes: int = MAX_REQUEST_BYTES, linger_s: float = 0.005) -> None:
        if not 1 <= max_events <= MAX_EVENTS_PER_REQUEST:
            raise ValueError(f"max_events must be 1..{MAX_EVENTS_PER_REQUEST}")
        self.max_events = max_events
        self.max_bytes = min(max_bytes, MAX_REQUEST_BYTES)
        self.linger_s = linger_s
        self._items: list[Item[T]] = []
        self._ids: set[str] = set()
        self._bytes = WRAPPER_BYTES - 1
        self.opened_at = 0.0

    def __len__(self) -> int:
        return len(self._items)

    def fits_alone(self, item: Item[T]) -> bool:
        """True when ``item`` fits in a request by itself."""
        return WRAPPER_BYTES + len(item.encoded) <= self.max_bytes

    def add(self, item: Item[T]) -> list[Batch[T]]:
        """Add ``item``; return the batches that are now complete (zero, one or two).

        The open batch closes first when ``item`` would break the byte limit or repeat an id;
        the batch holding ``item`` closes when it reaches ``max_events``.

        Raises:
            ValueError: the item cannot fit in any request (check :meth:`fits_alone`).
        """
        if not self.fits_alone(item):
            raise ValueError("event larger than a whole request")
        done: list[Batch[T]] = []
        if self._items and (
            self._bytes + 1 + len(item.encoded) > self.max_bytes or item.event_id in self._ids
        ):
            done.append(self._close())
        if not self._items:
            self.opened_at = time.monotonic()
        self._items.append(item)
        self._ids.add(item.event_id)
        self._bytes += 1 + len(item.encoded)
        if len(self._items) >= self.max_events:
            done.append(self._close())
        return done

    def flush(self) -> Batch[T] | None:
        """Close and return the open batch, or None when it is empty."""
        return self._close() if self._items else None

    def until_due(self, now: float | None = None) -> float:
        """Seconds until the open batch's linger ends (0 when due or empty)."""
        if not self._items:
            return 0.0
        now = time.monotonic() if now is None else now
        return max(0.0, self.opened_at + self.linger_s - now)

    def _close(self) -> Batch[T]:
        batch = Batch(self._items)
        self._items, self._ids, self._bytes = [], set(), WRAPPER_BYTES - 1
        return batch
