"""Accepted events of the EG emulator, kept in memory and optionally as JSON lines (design §9)."""

from __future__ import annotations

from pathlib import Path
from typing import BinaryIO

from bridge.emulator.errors import JsonObject
from bridge.emulator.jsonio import dumps
from bridge.emulator.store import utc_now


class EventLog:
    """Accepted events, oldest first, optionally mirrored to ``DATA_DIR/events.jsonl``.

    Each record is ``{"received_at": <RFC 3339, µs>, "channel_id": str, "event": {...}}``
    (design §9). Appends are O(batch); :meth:`query` is O(stored) when filtering and
    O(result) otherwise.
    """

    def __init__(self, data_dir: str | None) -> None:
        self.records: list[JsonObject] = []
        self._path = Path(data_dir, "events.jsonl") if data_dir else None
        self._file: BinaryIO | None = None

    def open(self) -> None:
        """Create the data dir and open the JSON-lines file for append (OSError if it cannot)."""
        if self._path is not None and self._file is None:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            self._file = self._path.open("ab")

    def close(self) -> None:
        """Close the JSON-lines file, if open."""
        if self._file is not None:
            self._file.close()
            self._file = None

    def append(self, channel_id: str, events: list[JsonObject]) -> None:
        """Store ``events`` (already accepted) as received now on ``channel_id``."""
        received_at = utc_now()
        new = [{"received_at": received_at, "channel_id": channel_id, "event": e} for e in events]
        self.records.extend(new)
        if self._file is not None and new:
            self._file.write(b"".join(dumps(r) + b"\n" for r in new))
            self._file.flush()

    def query(
        self, channel_id: str | None, source: str | None, offset: int, limit: int
    ) -> tuple[int, list[JsonObject]]:
        """``(total matches, records[offset:offset+limit])``; None filters match everything."""
        rows = self.records
        if channel_id or source:
            rows = [
                r
                for r in rows
                if (not channel_id or r["channel_id"] == channel_id)
                and (not source or r["event"].get("source") == source)
            ]
        return len(rows), rows[offset : offset + limit]
