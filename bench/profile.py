"""Summaries of a py-spy ``--format raw`` profile (collapsed stacks: ``f1;f2;...;fn COUNT``).

Each frame reads ``function (path:line)``. Self time is charged to the innermost frame,
inclusive time to every distinct function on the stack; packages group frames by where their
file lives (a site-packages distribution, a ``bridge/`` module, or the standard library).
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

_FRAME = re.compile(r"^(?P<func>.*?) \((?P<path>[^()]*?)(?::\d+)?\)$")


def parse_collapsed(text: str) -> list[tuple[list[str], int]]:
    """``(frames outermost first, samples)`` per line; malformed lines are skipped."""
    stacks = []
    for line in text.splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            stacks.append((stack.split(";"), int(count)))
    return stacks


def _function(frame: str) -> str:
    match = _FRAME.match(frame)
    if not match:
        return frame
    return f"{match['func']} ({_short_path(match['path'])})"


def _short_path(path: str) -> str:
    if "site-packages/" in path:
        return path.split("site-packages/", 1)[1]
    if "/bridge/" in path:
        return "bridge/" + path.split("/bridge/", 1)[1]
    if "lib/python3" in path:
        tail = path.split("lib/python3", 1)[1]
        return tail.split("/", 1)[1] if "/" in tail else path
    return path


def package_of(frame: str) -> str:
    """Where a frame's code lives: ``aiormq``, ``bridge/pipeline.py``, ``asyncio``...

    py-spy prints paths relative to the ``sys.path`` entry they were found in, so the first
    path component is the top-level package (full paths are shortened the same way).
    """
    match = _FRAME.match(frame)
    path = _short_path(match["path"] if match else frame)
    head, _, rest = path.partition("/")
    if head == "bridge" and rest:
        return path
    return head.removesuffix(".py")


_AMQP = "AMQP client (aio-pika, aiormq, pamqp)"
_HTTP = "HTTP client (aiohttp, yarl, multidict)"
LAYERS = {"aio_pika": _AMQP, "aiormq": _AMQP, "pamqp": _AMQP,
          "aiohttp": _HTTP, "yarl": _HTTP, "multidict": _HTTP}
"""Site-packages distributions grouped into layers."""


def layer_of(frame: str) -> str:
    """The coarse layer of a frame: AMQP client, HTTP client, eg-bridge, asyncio, other."""
    package = package_of(frame)
    if package.startswith("bridge/"):
        return "eg-bridge (bridge/)"
    if package in LAYERS:
        return LAYERS[package]
    if package in ("asyncio", "selectors", "socket"):
        return "asyncio event loop, streams, sockets"
    return "other (stdlib, structlog, orjson, ...)"


def _is_bridge_code(frame: str) -> bool:
    package = package_of(frame)
    return package.startswith("bridge/") and package not in ("bridge/cli.py", "bridge/__main__.py")


def summarize(text: str, top: int = 15) -> dict[str, object]:
    """Top functions by self samples, self samples per package, and eg-bridge's own functions
    by inclusive samples (the click/asyncio wrappers around everything are left out); percent
    of all samples."""
    stacks = parse_collapsed(text)
    total = sum(count for _, count in stacks)
    if not total:
        return {"samples": 0}
    self_time: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    packages: Counter[str] = Counter()
    layers: Counter[str] = Counter()
    for frames, count in stacks:
        self_time[_function(frames[-1])] += count
        packages[package_of(frames[-1])] += count
        layers[layer_of(frames[-1])] += count
        for name in {_function(f) for f in frames if _is_bridge_code(f)}:
            inclusive[name] += count

    def pct(counter: Counter[str]) -> list[tuple[str, float]]:
        return [(name, round(100 * n / total, 1)) for name, n in counter.most_common(top)]

    return {"samples": total, "layers": pct(layers), "self": pct(self_time),
            "inclusive": pct(inclusive), "packages": pct(packages)}


def write_summary(raw_path: Path, out_path: Path, top: int = 15) -> dict[str, object]:
    """Summarize ``raw_path`` into a Markdown file; returns the summary."""
    summary = summarize(raw_path.read_text(errors="replace"), top)
    lines = ["# py-spy profile of `eg-bridge run` draining the backlog (instant sink)\n",
             f"{summary['samples']} samples at 200 Hz, on-CPU only (`{raw_path.name}`).\n"]
    for key, title in (("layers", "Self time by layer"), ("self", "Self time"),
                       ("packages", "Self time by package"),
                       ("inclusive", "Inclusive time of eg-bridge's own functions")):
        rows = summary.get(key) or []
        assert isinstance(rows, list)
        lines += [f"\n## {title}\n", "| % | function |", "|---:|---|"]
        lines += [f"| {p} | `{name}` |" for name, p in rows]
    out_path.write_text("\n".join(lines) + "\n")
    return summary
