"""The sink's one backoff state: exponential with full jitter, honouring Retry-After
(shared/design.md §7)."""

from __future__ import annotations

import asyncio
import random
import time


class Backoff:
    """Shared by every in-flight request to one sink.

    While failing, the pipeline sends one probe at a time, spaced by :meth:`delay`; the first
    success resets it. Failures of requests that were already in flight when the sink started
    failing do not grow the delay again (they are one outage, not several).

    Args:
        initial_s: the first delay ceiling, in seconds (``retry.initial_backoff_s``).
        max_s: the largest delay, in seconds (``retry.max_backoff_s``); also caps Retry-After.
        rng: random source for the jitter (tests pass a seeded one).
    """

    def __init__(self, initial_s: float, max_s: float, rng: random.Random | None = None) -> None:
        self.initial_s = initial_s
        self.max_s = max_s
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not cryptography
        self.failures = 0
        self._next_at = 0.0

    @property
    def active(self) -> bool:
        """True from a failure until the next success."""
        return self.failures > 0

    def failure(self, retry_after_s: float | None = None, *, floor_s: float = 0.0) -> float:
        """Record a failure; return the seconds until the next probe.

        Args:
            retry_after_s: the server's ``Retry-After`` in seconds (None when absent, unparsable
                or past: then the normal backoff applies); capped by ``max_s``.
            floor_s: the least delay, even above ``max_s`` (the slow retry of a configuration
                error).
        """
        now = time.monotonic()
        if self.failures == 0 or now >= self._next_at:
            self.failures += 1
            ceiling = min(self.max_s, self.initial_s * 2 ** min(self.failures - 1, 32))
            delay = self._rng.uniform(0, ceiling)
        else:
            delay = self._next_at - now
        if retry_after_s is not None:
            delay = max(delay, min(retry_after_s, self.max_s))
        delay = max(delay, floor_s)
        self._next_at = max(self._next_at, now + delay)
        return self._next_at - now

    def success(self) -> None:
        """The sink answered: reset."""
        self.failures = 0
        self._next_at = 0.0

    async def wait(self) -> None:
        """Sleep until the next probe is due."""
        delay = self._next_at - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
