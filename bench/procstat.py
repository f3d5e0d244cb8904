"""CPU time and memory of other processes, read from ``/proc`` (Linux only, no dependency).

:class:`Sampler` polls a few processes from a background thread, so the CPU a process spent
between two wall-clock instants (e.g. the first and the last event of a drain) can be
interpolated afterwards, and RSS can be followed while a long backlog drains.
"""

from __future__ import annotations

import bisect
import contextlib
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

_CLK_TCK = os.sysconf("SC_CLK_TCK")
MACHINE = "machine"
"""Name of the :class:`Sampler` series holding the whole machine's busy CPU."""


def cpu_seconds(pid: int) -> float | None:
    """utime + stime of ``pid`` in seconds (its threads included, its children not), or None
    if the process is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may contain spaces and parentheses: split after the last ')'.
    fields = raw[raw.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK


def machine_busy_seconds() -> float:
    """CPU seconds every core of the machine spent busy since boot (``/proc/stat``: all but
    idle and iowait), summed over cores."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    ticks = [int(v) for v in fields[:8]]
    return (sum(ticks) - ticks[3] - ticks[4]) / _CLK_TCK


def load_average() -> list[float]:
    """The 1, 5 and 15 minute load averages."""
    return [float(v) for v in Path("/proc/loadavg").read_text().split()[:3]]


def memory_kb(pid: int) -> dict[str, int]:
    """``VmRSS``/``VmHWM`` (and the other ``Vm*`` lines) of ``pid`` in KiB; empty if gone."""
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return {}
    out: dict[str, int] = {}
    for line in lines:
        if line.startswith("Vm"):
            key, _, value = line.partition(":")
            with contextlib.suppress(ValueError, IndexError):
                out[key] = int(value.split()[0])
    return out


def pids_with_env(key: str, value: str) -> list[int]:
    """Pids of the processes whose environment holds ``key=value`` (e.g. a RabbitMQ node's
    marker variable); processes we may not read are skipped."""
    needle = f"{key}={value}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            env = (entry / "environ").read_bytes()
        except OSError:
            continue
        if needle in env.split(b"\0"):
            found.append(int(entry.name))
    return found


@dataclass
class Series:
    """Samples of one process: wall time (``time.time()``), CPU seconds, RSS in KiB."""

    times: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    rss_kb: list[int] = field(default_factory=list)

    def cpu_at(self, when: float) -> float | None:
        """CPU seconds at wall time ``when``, linearly interpolated (clamped at the ends)."""
        if not self.times:
            return None
        i = bisect.bisect_left(self.times, when)
        if i <= 0:
            return self.cpu[0]
        if i >= len(self.times):
            return self.cpu[-1]
        t0, t1 = self.times[i - 1], self.times[i]
        c0, c1 = self.cpu[i - 1], self.cpu[i]
        return c0 + (c1 - c0) * ((when - t0) / (t1 - t0) if t1 > t0 else 0.0)

    def cpu_between(self, start: float, end: float) -> float | None:
        """CPU seconds spent between two wall times, or None without samples."""
        a, b = self.cpu_at(start), self.cpu_at(end)
        return None if a is None or b is None else max(0.0, b - a)

    def max_rss_mb(self, start: float = 0.0, end: float = float("inf")) -> float | None:
        """Largest sampled RSS between two wall times, MiB."""
        values = [r for t, r in zip(self.times, self.rss_kb, strict=True) if start <= t <= end]
        return max(values) / 1024 if values else None


class Sampler:
    """Sample CPU and RSS of named processes every ``interval_s`` from a daemon thread.

    Use as a context manager; :attr:`series` maps each name to its :class:`Series`, plus
    ``machine``: the busy CPU seconds of the whole machine (RSS 0). A process that exits simply
    stops producing samples.
    """

    def __init__(self, pids: dict[str, int], interval_s: float = 0.05) -> None:
        self.pids = dict(pids)
        self.interval_s = interval_s
        self.series: dict[str, Series] = {name: Series() for name in [*pids, MACHINE]}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="bench-sampler", daemon=True)

    def __enter__(self) -> Sampler:
        self._sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._sample()

    def _sample(self) -> None:
        machine = self.series[MACHINE]
        machine.times.append(time.time())
        machine.cpu.append(machine_busy_seconds())
        machine.rss_kb.append(0)
        for name, pid in self.pids.items():
            now = time.time()
            cpu = cpu_seconds(pid)
            if cpu is None:
                continue
            rss = memory_kb(pid).get("VmRSS", 0)
            series = self.series[name]
            series.times.append(now)
            series.cpu.append(cpu)
            series.rss_kb.append(rss)
