"""The whole benchmark in one run: start the stack, measure each consumer, write the report.

Order: ``repeat`` rounds of raw ceiling, eg-bridge and naive with an instant sink (each a
drain, then a latency run); then, with ``latency_ms`` added to every PutEvents, ``repeat``
eg-bridge rounds and one capped naive drain; then eg-bridge's cold start; optionally a py-spy
profile of an eg-bridge drain and the RSS of a 1,000,000-message drain. Interference from
other work on the machine only ever slows a drain down or delays a message, so each figure is
the best of its rounds (every round is kept in ``drain_rounds``/``latency_rounds``). A phase
that fails is recorded with its error and the others still run.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Awaitable
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import profile as profiling
from bench import report, runners
from bench.procstat import load_average
from bench.runners import NAIVE_SOURCE, Options
from bench.stack import Emulator, Stack, log


async def _phase(runs: dict[str, Any], name: str, body: Awaitable[Any]) -> None:
    """Run one measurement into ``runs[name]``; a second one of the same name (a later round)
    is merged by :func:`merge_rounds`."""
    started = time.monotonic()
    load = load_average()
    try:
        result = await body
    except Exception as exc:  # one broken phase must not lose the others
        log(f"{name}: FAILED: {exc!r}")
        result = {"error": repr(exc), "traceback": traceback.format_exc()[-3000:]}
    result["phase_seconds"] = round(time.monotonic() - started, 1)
    result["load_average_before"] = load
    runs[name] = merge_rounds(runs[name], result) if name in runs else result


def merge_rounds(first: dict[str, Any], later: dict[str, Any]) -> dict[str, Any]:
    """Merge two rounds of one measurement: the faster drain, the latency run with the lower
    p99, the larger peak RSS; every round's figures stay in ``drain_rounds`` and
    ``latency_rounds``."""
    if "error" in later or "drain" not in later:
        return first | {"failed_rounds": [*first.get("failed_rounds", []), later.get("error")]}
    if "error" in first or "drain" not in first:
        return later | {"failed_rounds": [first.get("error")]}
    rounds = [*(first.get("drain_rounds") or [first["drain"]]), later["drain"]]
    best = max(rounds, key=lambda d: d.get("msgs_per_s") or 0)
    peaks = [d["peak_rss_mb"] for d in rounds if d.get("peak_rss_mb") is not None]
    merged = first | {"drain": dict(best), "drain_rounds": rounds}
    if peaks:
        merged["drain"]["peak_rss_mb"] = max(peaks)
    latencies = list(first.get("latency_rounds") or [first[k] for k in ["latency"] if k in first])
    latencies += [later[k] for k in ["latency"] if k in later]
    if latencies:
        merged["latency"] = min(latencies, key=lambda r: r.get("p99_ms", float("inf")))
        merged["latency_rounds"] = [
            {k: r.get(k) for k in ("p50_ms", "p99_ms", "max_ms", "count")} for r in latencies]
    merged["phase_seconds"] = round(first["phase_seconds"] + later["phase_seconds"], 1)
    return merged


async def run(opts: Options, *, long: bool = False, profile: bool = False,
              keep: bool = False) -> dict[str, Any]:
    """Run every measurement and write ``opts.out``; returns the results document."""
    started = time.monotonic()
    config: dict[str, Any] = {k: (str(v) if isinstance(v, Path) else v)
                              for k, v in asdict(opts).items()}
    config["started_at"] = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    config["long"] = long
    if not long:
        config.pop("long_messages")
    stack = Stack(keep=keep)
    log(f"starting RabbitMQ and the emulator in {stack.workdir}")
    stack.start()
    runs: dict[str, Any] = {}
    try:
        async with Emulator(stack.emulator.url) as emu:
            await emu.register_source(NAIVE_SOURCE)
            await emu.set_latency(0)
            for i in range(opts.repeat):
                log(f"round {i + 1} of {opts.repeat}, instant sink")
                await _phase(runs, "raw", runners.run_raw(stack, opts))
                await _phase(runs, "bridge_0ms",
                             runners.run_bridge(stack, emu, opts, label=" (instant)"))
                await _phase(runs, "naive_0ms", runners.run_naive(stack, emu, opts, latency=True))
            log(f"emulator: +{opts.sink_latency_ms} ms on every PutEvents")
            await emu.set_latency(opts.sink_latency_ms)
            label = f" (+{opts.sink_latency_ms} ms)"
            for _ in range(opts.repeat):
                await _phase(runs, "bridge_20ms", runners.run_bridge(stack, emu, opts, label=label))
            await _phase(runs, "naive_20ms",
                         runners.run_naive(stack, emu, opts, latency=False))
            await emu.set_latency(0)
            await _phase(runs, "first_event",
                         runners.first_event(stack, emu, opts.first_event_repeats))
            if profile:
                await _phase(runs, "profile", _profile(stack, emu, opts))
            if long:
                await _phase(runs, "long", runners.long_rss(stack, emu, opts))
    finally:
        log("stopping RabbitMQ and the emulator")
        stack.stop()
    config["duration_s"] = round(time.monotonic() - started, 1)
    results = report.summarize(runs, config)
    for path in report.write(results, opts.out):
        log(f"wrote {path}")
    return results


async def _profile(stack: Stack, emu: Emulator, opts: Options) -> dict[str, Any]:
    raw = opts.out / "profile-bridge.txt"
    raw.unlink(missing_ok=True)
    result = await runners.run_bridge(stack, emu, opts, label=" (py-spy)", profile=raw,
                                      latency=False)
    if raw.exists():
        summary = profiling.write_summary(raw, opts.out / "profile.md")
        result["summary"] = summary
        log(f"profile: {summary.get('samples')} samples -> {opts.out / 'profile.md'}")
    return result
