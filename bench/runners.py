"""The measurements: drain a backlog, hold a fixed offered load, time a cold start.

Every consumer runs as its own process: the raw ceiling and the naive bridge through
:mod:`bench.consumers`, eg-bridge as ``eg-bridge run -c FILE`` with its default forwarding
config. While a consumer runs, a :class:`~bench.procstat.Sampler` records the CPU time and RSS
of the consumer, the emulator and the broker, so CPU can be attributed to the exact window
between the first and the last event.

Throughput is events per second from the first to the last event received at the emulator
(raw: first to last message consumed); latency is the emulator's ``received_at`` minus the
publish time the publisher wrote into the message body.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from bench.procstat import MACHINE, Sampler, memory_kb
from bench.stack import (
    CHANNEL_ID,
    PROJECT_ID,
    QUEUE,
    Emulator,
    Stack,
    log,
    publish_backlog,
    publish_paced,
    reset_queue,
)
from bench.stats import latency_summary, parse_rfc3339, rate
from tests.support.rabbit import free_port

REPO = Path(__file__).resolve().parent.parent
BRIDGE_SOURCE = "bench-bridge"
NAIVE_SOURCE = "bench-naive"


@dataclass
class Options:
    """What to measure; defaults are issue 7's."""

    messages: int = 100_000
    size: int = 512
    naive_limit: int = 5_000
    naive_seconds: float = 60.0
    latency_rate: float = 1_000.0
    latency_seconds: float = 12.0
    sink_latency_ms: int = 20
    first_event_repeats: int = 3
    repeat: int = 2
    raw_prefetch: int = 1000
    naive_prefetch: int = 200
    long_messages: int = 1_000_000
    out: Path = field(default_factory=lambda: REPO / "bench" / "out")

    @property
    def latency_total(self) -> int:
        """Messages of one latency run."""
        return int(self.latency_rate * self.latency_seconds)


# -- processes ------------------------------------------------------------------------------


class ConsumerProcess:
    """``python -m bench.consumers KIND ...``: waits for its ``READY`` line, reads its result.

    As an async context manager it starts on entry and is killed on exit if still running.
    """

    def __init__(self, kind: str, args: Sequence[str]) -> None:
        self.kind = kind
        self.args = [sys.executable, "-m", "bench.consumers", kind, *args]
        self.proc: asyncio.subprocess.Process | None = None

    @property
    def pid(self) -> int:
        """The consumer's pid."""
        assert self.proc is not None
        return self.proc.pid

    async def __aenter__(self) -> ConsumerProcess:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.kill()
        if self.proc is not None:
            await self.proc.wait()

    async def start(self, timeout_s: float = 30.0) -> None:
        """Launch and wait until it is attached to the queue."""
        self.proc = await asyncio.create_subprocess_exec(
            *self.args, cwd=REPO, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            start_new_session=True,
        )
        assert self.proc.stdout is not None
        line = await asyncio.wait_for(self.proc.stdout.readline(), timeout_s)
        if line.strip() != b"READY":
            raise RuntimeError(f"{self.kind} consumer did not start: {line!r}")

    async def result(self, timeout_s: float) -> dict[str, Any]:
        """The JSON line it prints when it stops; SIGTERM after ``timeout_s``."""
        assert self.proc is not None
        assert self.proc.stdout is not None
        try:
            out = await asyncio.wait_for(self.proc.stdout.read(), timeout_s)
        except TimeoutError:
            self.terminate()
            out = await asyncio.wait_for(self.proc.stdout.read(), 30)
        await self.proc.wait()
        lines = out.decode().strip().splitlines()
        if not lines:
            raise RuntimeError(f"{self.kind} consumer exited {self.proc.returncode} silently")
        result: dict[str, Any] = json.loads(lines[-1])
        return result

    def terminate(self) -> None:
        """SIGTERM: it stops, prints its result and exits."""
        if self.proc is not None and self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        """SIGKILL if still running."""
        if self.proc is not None and self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()


def bridge_command() -> list[str]:
    """``eg-bridge`` from this interpreter's environment (``python -m bridge`` if absent)."""
    script = Path(sys.executable).with_name("eg-bridge")
    return [str(script)] if script.exists() else [sys.executable, "-m", "bridge"]


def bridge_config(stack: Stack, status_port: int) -> dict[str, Any]:
    """eg-bridge's config: only endpoint, auth, source, connection and status address set;
    everything under ``forwarding`` is the default."""
    return {
        "eventgrid": {"endpoint": stack.emulator.url, "project_id": PROJECT_ID,
                      "auth": {"none": True}},
        "source": {
            "name": BRIDGE_SOURCE,
            "description": "eg-bridge benchmark",
            "channel_id": CHANNEL_ID,
            "type": "RABBITMQ",
            "detail": {"user_name": "guest", "password": "guest", "vhost_name": "/",
                       "queue_name": QUEUE},
            "connection": {"address": stack.rabbit.address},
        },
        "status": {"listen": f"127.0.0.1:{status_port}"},
        "logging": {"format": "json"},
    }


class BridgeProcess:
    """``eg-bridge run -c FILE``; stdout and stderr go to ``bridge-N.log`` in the workdir."""

    _serial = 0

    def __init__(self, stack: Stack) -> None:
        BridgeProcess._serial += 1
        self.status_url = f"http://127.0.0.1:{free_port()}"
        port = int(self.status_url.rsplit(":", 1)[1])
        self.config_path = stack.workdir / f"bridge-{self._serial}.yaml"
        self.config_path.write_text(yaml.safe_dump(bridge_config(stack, port)))
        self.log_path = stack.workdir / f"bridge-{self._serial}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.launched_at = 0.0

    @property
    def pid(self) -> int:
        """The bridge's pid."""
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> None:
        """Launch; :attr:`launched_at` is the wall time just before the fork."""
        with self.log_path.open("ab") as out:
            self.launched_at = time.time()
            self.proc = subprocess.Popen(
                [*bridge_command(), "run", "-c", str(self.config_path)],
                cwd=REPO, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                start_new_session=True,
            )

    def alive(self) -> bool:
        """True while the process runs."""
        return self.proc is not None and self.proc.poll() is None

    async def wait_ready(self, timeout_s: float = 30.0) -> None:
        """Poll ``/readyz`` until 200; RuntimeError with the log tail otherwise."""
        deadline = time.monotonic() + timeout_s
        async with aiohttp.ClientSession() as http:
            while time.monotonic() < deadline and self.alive():
                with contextlib.suppress(aiohttp.ClientError):
                    async with http.get(self.status_url + "/readyz") as resp:
                        if resp.status == 200:
                            return
                await asyncio.sleep(0.1)
        raise RuntimeError(f"eg-bridge not ready:\n{self.log_tail()}")

    def peak_rss_mb(self) -> float | None:
        """``VmHWM`` (the kernel's peak resident set size) in MiB."""
        hwm = memory_kb(self.pid).get("VmHWM")
        return hwm / 1024 if hwm else None

    async def stop(self, timeout_s: float = 30.0) -> int | None:
        """SIGTERM and wait (SIGKILL after ``timeout_s``); returns the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return await asyncio.to_thread(self.proc.wait, timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()

    def log_tail(self, chars: int = 3000) -> str:
        """The end of the bridge's log."""
        return self.log_path.read_text(errors="replace")[-chars:] if self.log_path.exists() else ""

    def log_counts(self) -> dict[str, int]:
        """How many log lines per level (JSON logs)."""
        counts: dict[str, int] = {}
        if not self.log_path.exists():
            return counts
        for line in self.log_path.read_text(errors="replace").splitlines():
            try:
                level = str(json.loads(line).get("level", "?"))
            except (ValueError, AttributeError):
                level = "other"
            counts[level] = counts.get(level, 0) + 1
        return counts


# -- helpers --------------------------------------------------------------------------------


def _window(sampler: Sampler, first: float, last: float, count: int) -> dict[str, Any]:
    """CPU of each sampled process over ``[first, last]``: consumer seconds per 10,000
    messages and the cores each process kept busy."""
    span = last - first
    out: dict[str, Any] = {}
    cores: dict[str, float] = {}
    for name, series in sampler.series.items():
        spent = series.cpu_between(first, last)
        if spent is None:
            continue
        if name == "consumer" and count:
            out["cpu_s_per_10k"] = round(spent / count * 10_000, 3)
        if span > 0:
            cores[name] = round(spent / span, 3)
    if MACHINE in cores:
        # Everything not sampled by name: other sessions' tests on a shared machine, the kernel.
        ours = sum(v for k, v in cores.items() if k != MACHINE)
        cores["others"] = round(max(0.0, cores[MACHINE] - ours), 3)
    out["cores_busy"] = cores
    return out


def _pids(stack: Stack, consumer: int) -> dict[str, int]:
    pids = {"consumer": consumer, "emulator": stack.emulator.pid, "bench": os.getpid()}
    broker = stack.broker_pid()
    if broker is not None:
        pids["broker"] = broker
    return pids


async def _emulator_span(emu: Emulator) -> tuple[int, float | None, float | None]:
    total, first, last = await emu.first_last()
    if not total:
        return 0, None, None
    return total, parse_rfc3339(first["received_at"]), parse_rfc3339(last["received_at"])


async def _emulator_latencies(emu: Emulator) -> tuple[list[float], int]:
    """Latency of every stored event (ms) in publish order, and how many distinct event ids
    there were."""
    rows = await emu.all_events()
    pairs, ids = [], set()
    for row in rows:
        event = row["event"]
        ids.add(event.get("id"))
        ts = (event.get("data") or {}).get("ts")
        if isinstance(ts, int | float):
            pairs.append((ts, (parse_rfc3339(row["received_at"]) - ts) * 1000))
    pairs.sort()
    return [latency for _, latency in pairs], len(ids)


def _drain_result(count: int, first: float | None, last: float | None,
                  expected: int, sampler: Sampler) -> dict[str, Any]:
    out: dict[str, Any] = {"messages": count, "expected": expected,
                           "complete": count >= expected}
    if first is not None and last is not None:
        out["seconds"] = round(last - first, 3)
        msgs = rate(count, first, last)
        out["msgs_per_s"] = round(msgs, 1) if msgs else None
        out |= _window(sampler, first, last, count)
    return out


# -- raw ceiling ----------------------------------------------------------------------------


async def run_raw(stack: Stack, opts: Options, *, latency: bool = True) -> dict[str, Any]:
    """Drain ``opts.messages`` with the raw consumer, then (``latency``) hold 1,000 msg/s to
    a fresh one."""
    url = stack.amqp_url
    common = ["--url", url, "--queue", QUEUE, "--prefetch", str(opts.raw_prefetch)]
    published = await publish_backlog(url, opts.messages, opts.size)
    log(f"raw: backlog of {opts.messages:,} published ({published:,.0f} msg/s); draining")
    async with ConsumerProcess("raw", [*common, "--limit", str(opts.messages)]) as consumer:
        with Sampler(_pids(stack, consumer.pid)) as sampler:
            res = await consumer.result(timeout_s=max(120.0, opts.messages / 500))
    drain = _drain_result(res["count"], res["first"], res["last"], opts.messages, sampler)
    log(f"raw: {drain.get('msgs_per_s')} msg/s")
    out: dict[str, Any] = {"drain": drain, "publish_msgs_per_s": round(published, 1)}
    if not latency:
        return out
    await reset_queue(url)
    total = opts.latency_total
    async with ConsumerProcess("raw", [*common, "--limit", str(total), "--latency"]) as consumer:
        await publish_paced(url, opts.latency_rate, total, opts.size)
        res = await consumer.result(timeout_s=30)
    summary = latency_summary(res.get("latencies_ms", []), int(opts.latency_rate))
    log(f"raw: latency p50 {summary.get('p50_ms')} ms, p99 {summary.get('p99_ms')} ms")
    return out | {"latency": summary}


# -- naive bridge ---------------------------------------------------------------------------


async def run_naive(stack: Stack, emu: Emulator, opts: Options, *,
                    latency: bool) -> dict[str, Any]:
    """Drain up to ``opts.naive_limit`` messages or ``opts.naive_seconds`` with the naive loop;
    with ``latency``, then hold 1,000 msg/s to a fresh naive process."""
    url = stack.amqp_url
    common = ["--url", url, "--queue", QUEUE, "--prefetch", str(opts.naive_prefetch),
              "--endpoint", stack.emulator.url, "--source", NAIVE_SOURCE]
    backlog = min(opts.messages, opts.naive_limit)
    await publish_backlog(url, backlog, opts.size)
    await emu.reset()
    log(f"naive: draining {backlog:,} messages (at most {opts.naive_seconds:.0f} s)")
    args = [*common, "--limit", str(backlog), "--max-seconds", str(opts.naive_seconds)]
    async with ConsumerProcess("naive", args) as consumer:
        with Sampler(_pids(stack, consumer.pid)) as sampler:
            res = await consumer.result(timeout_s=opts.naive_seconds + 60)
    total, first, last = await _emulator_span(emu)
    drain = _drain_result(total, first, last, backlog, sampler)
    drain["complete"] = True  # capped by design
    drain["errors"] = res.get("errors", 0)
    log(f"naive: {drain.get('msgs_per_s')} msg/s over {total:,} events")
    out: dict[str, Any] = {"drain": drain}
    if latency:
        out["latency"] = await _latency_naive(stack, emu, opts, common)
    await reset_queue(url)
    return out


async def _latency_naive(stack: Stack, emu: Emulator, opts: Options,
                         common: list[str]) -> dict[str, Any]:
    await reset_queue(stack.amqp_url)
    await emu.reset()
    total = opts.latency_total
    async with ConsumerProcess("naive", [*common, "--limit", str(total)]) as consumer:
        await publish_paced(stack.amqp_url, opts.latency_rate, total, opts.size)
        await emu.wait_accepted(total, stall_s=10)
        consumer.terminate()
        await consumer.result(timeout_s=30)
    latencies, distinct = await _emulator_latencies(emu)
    summary = latency_summary(latencies, int(opts.latency_rate))
    summary |= {"published": total, "distinct_ids": distinct}
    log(f"naive: latency p50 {summary.get('p50_ms')} ms, p99 {summary.get('p99_ms')} ms"
        f" ({len(latencies):,} of {total:,} received)")
    return summary


# -- eg-bridge ------------------------------------------------------------------------------


async def run_bridge(stack: Stack, emu: Emulator, opts: Options, *, label: str,
                     profile: Path | None = None, latency: bool = True) -> dict[str, Any]:
    """Publish the backlog, launch ``eg-bridge run``, time the drain, then (``latency``) hold
    1,000 msg/s through the same process. ``profile``: record it with py-spy instead (the
    numbers of a profiled drain are not reported)."""
    url = stack.amqp_url
    await publish_backlog(url, opts.messages, opts.size)
    await emu.reset()
    bridge = BridgeProcess(stack)
    log(f"eg-bridge{label}: backlog of {opts.messages:,} published; launching")
    spy: subprocess.Popen[bytes] | None = None
    bridge.start()
    try:
        with Sampler(_pids(stack, bridge.pid)) as sampler:
            if profile is not None:  # from the first event on: the drain, not the imports
                await emu.wait_accepted(1, poll_s=0.01, alive=bridge.alive)
                spy = _start_py_spy(bridge.pid, profile)
            seen = await emu.wait_accepted(opts.messages, alive=bridge.alive)
            rss_after_drain = bridge.peak_rss_mb()
        if spy is not None:
            _stop_py_spy(spy)
        total, first, last = await _emulator_span(emu)
        drain = _drain_result(total, first, last, opts.messages, sampler)
        if seen < opts.messages:
            drain["log_tail"] = bridge.log_tail(1500)
        stats = await emu.stats()
        requests = stats.get("put_events_requests") or 0
        drain["put_events_requests"] = requests
        drain["events_per_request"] = round(total / requests, 2) if requests else None
        drain["peak_rss_mb"] = round(rss_after_drain, 1) if rss_after_drain else None
        drain["rss_max_sampled_mb"] = sampler.series["consumer"].max_rss_mb()
        if first is not None:
            drain["first_event_with_backlog_s"] = round(first - bridge.launched_at, 3)
        log(f"eg-bridge{label}: {drain.get('msgs_per_s')} msg/s, "
            f"{drain['events_per_request']} events/request, peak RSS {drain['peak_rss_mb']} MB")
        out: dict[str, Any] = {"drain": drain}
        if latency and profile is None and bridge.alive():
            out["latency"] = await _latency_bridge(stack, emu, opts, label)
            out["peak_rss_mb_end"] = bridge.peak_rss_mb()
    finally:
        if spy is not None and spy.poll() is None:
            spy.kill()
        code = await bridge.stop()
    out["exit_code"] = code
    out["log_levels"] = bridge.log_counts()
    await reset_queue(url)
    return out


async def _latency_bridge(stack: Stack, emu: Emulator, opts: Options,
                          label: str) -> dict[str, Any]:
    await emu.reset()
    total = opts.latency_total
    await publish_paced(stack.amqp_url, opts.latency_rate, total, opts.size)
    await emu.wait_accepted(total, stall_s=10)
    latencies, distinct = await _emulator_latencies(emu)
    summary = latency_summary(latencies, int(opts.latency_rate))
    summary |= {"published": total, "distinct_ids": distinct}
    log(f"eg-bridge{label}: latency p50 {summary.get('p50_ms')} ms, p99 "
        f"{summary.get('p99_ms')} ms, max {summary.get('max_ms')} ms")
    return summary


async def first_event(stack: Stack, emu: Emulator, repeats: int) -> dict[str, Any]:
    """Launch -> first event at the emulator, with one message waiting and the source already
    registered; ``repeats`` cold starts, the median is the result."""
    times: list[float] = []
    ready: list[float] = []
    for _ in range(repeats):
        await publish_backlog(stack.amqp_url, 1, 512)
        await emu.reset()
        bridge = BridgeProcess(stack)
        bridge.start()
        try:
            await emu.wait_accepted(1, stall_s=15, poll_s=0.01, alive=bridge.alive)
            total, first, _ = await _emulator_span(emu)
            if total and first is not None:
                times.append(first - bridge.launched_at)
            await bridge.wait_ready()
            ready.append(time.time() - bridge.launched_at)
        finally:
            await bridge.stop()
    times.sort()
    median = times[len(times) // 2] if times else None
    log(f"eg-bridge: first event {median and round(median, 3)} s after launch ({times})")
    return {"first_event_s": round(median, 3) if median is not None else None,
            "runs_s": [round(t, 3) for t in times],
            "ready_after_s": [round(t, 3) for t in ready]}


# -- long run -------------------------------------------------------------------------------


async def long_rss(stack: Stack, emu: Emulator, opts: Options) -> dict[str, Any]:
    """RSS of eg-bridge sampled every 0.5 s while a ``opts.long_messages`` backlog drains."""
    url, count = stack.amqp_url, opts.long_messages
    log(f"long: publishing {count:,} messages")
    await publish_backlog(url, count, opts.size, progress_every=100_000)
    await emu.reset()
    bridge = BridgeProcess(stack)
    bridge.start()
    samples: list[tuple[float, float, float]] = []  # (elapsed s, events, RSS MiB)
    try:
        seen, moved = 0, time.monotonic()
        while seen < count and bridge.alive() and time.monotonic() - moved < 30:
            await asyncio.sleep(0.5)
            now = await emu.accepted()
            if now != seen:
                seen, moved = now, time.monotonic()
            rss = memory_kb(bridge.pid).get("VmRSS", 0) / 1024
            samples.append((round(time.time() - bridge.launched_at, 2), now, round(rss, 1)))
            if len(samples) % 20 == 0:
                await emu.clear_events()  # keep the emulator small; its counters go on
                log(f"long: {now:,} events, RSS {rss:.1f} MB")
        hwm = bridge.peak_rss_mb()
    finally:
        await bridge.stop()
    await reset_queue(url)
    busy = [s for s in samples if s[1] > 0]
    # "Flat": RSS once 10 % of the backlog is through vs. the largest RSS after that.
    settled = next((s[2] for s in busy if s[1] >= count * 0.1), None)
    late_max = max((s[2] for s in busy if s[1] >= count * 0.1), default=None)
    result = {
        "messages": count, "drained": seen,
        "rss_max_mb": max((s[2] for s in samples), default=None),
        "vm_hwm_mb": round(hwm, 1) if hwm else None,
        "rss_at_10pct_mb": settled, "rss_max_after_10pct_mb": late_max,
        "growth_after_10pct_mb": round(late_max - settled, 1)
        if settled is not None and late_max is not None else None,
        "samples": samples[:: max(1, len(samples) // 200)],
    }
    log(f"long: drained {seen:,}; RSS max {result['rss_max_mb']} MB")
    return result


# -- profiling ------------------------------------------------------------------------------


def _start_py_spy(pid: int, out: Path) -> subprocess.Popen[bytes] | None:
    exe = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not os.path.exists(exe):
        log("profile: py-spy not installed (pip install py-spy); skipped")
        return None
    out.parent.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(
        [exe, "record", "--pid", str(pid), "--rate", "200", "--format", "raw", "--nonblocking",
         "--output", str(out)],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )


def _stop_py_spy(spy: subprocess.Popen[bytes]) -> None:
    """SIGINT makes py-spy write its output and exit."""
    if spy.poll() is None:
        spy.send_signal(signal.SIGINT)
    try:
        spy.wait(30)
    except subprocess.TimeoutExpired:
        spy.kill()
