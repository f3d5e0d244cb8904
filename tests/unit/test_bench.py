"""Smoke tests of the benchmark's pure helpers (bench/): no broker, no processes, < 5 s."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from bench import profile, report
from bench.__main__ import parse_args
from bench.procstat import Sampler, Series, cpu_seconds, memory_kb
from bench.stats import latency_summary, make_body, parse_rfc3339, percentile, rate, ratio
from bench.suite import merge_rounds


def test_bodies_have_the_exact_size_and_carry_the_publish_time() -> None:
    body = make_body(123456, 512, 1_700_000_000.123456)
    assert len(body) == 512
    decoded = json.loads(body)
    assert decoded["seq"] == 123456
    assert decoded["ts"] == pytest.approx(1_700_000_000.123456)
    with pytest.raises(ValueError, match="too small"):
        make_body(1, 20, 1.0)


def test_percentiles_and_latency_summary() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 0) == 1
    assert percentile(values, 50) == pytest.approx(50.5)
    assert percentile(values, 100) == 100
    summary = latency_summary(list(reversed(values)))
    assert summary["count"] == 100
    assert summary["p99_ms"] == pytest.approx(99.01)
    assert summary["max_ms"] == 100
    cdf = summary["cdf_ms"]
    assert isinstance(cdf, list)
    assert cdf[0] == 1
    assert cdf[-1] == 100
    assert latency_summary([]) == {"count": 0}


def test_rates_ratios_and_times() -> None:
    assert rate(1000, 10.0, 12.0) == 500
    assert rate(1, 10.0, 10.0) is None
    assert ratio(7.0, 10.0) == 0.7
    assert ratio(None, 10.0) is None
    assert ratio(1.0, 0.0) is None
    assert parse_rfc3339("1970-01-01T00:00:01.500000Z") == 1.5


def test_series_interpolates_cpu_between_samples() -> None:
    series = Series(times=[0.0, 1.0, 2.0], cpu=[0.0, 0.5, 1.5], rss_kb=[1024, 2048, 1024])
    assert series.cpu_at(0.5) == pytest.approx(0.25)
    assert series.cpu_at(-1) == 0
    assert series.cpu_at(9) == 1.5
    assert series.cpu_between(0.5, 1.5) == pytest.approx(0.75)
    assert series.max_rss_mb() == 2
    assert Series().cpu_at(1.0) is None


def test_sampler_reads_this_process() -> None:
    assert cpu_seconds(os.getpid()) is not None
    assert memory_kb(os.getpid())["VmRSS"] > 0
    with Sampler({"me": os.getpid()}, interval_s=0.01) as sampler:
        sum(range(200_000))
    assert len(sampler.series["me"].times) >= 2
    assert sampler.series["machine"].cpu[-1] >= sampler.series["machine"].cpu[0]


def test_profile_summary_of_collapsed_stacks() -> None:
    text = "\n".join([
        "<module> (/x/bin/eg-bridge:8);run (/w/bridge/cli.py:60);"
        "_publish (/w/bridge/pipeline.py:100);"
        "write (/x/lib/python3.11/asyncio/selector_events.py:1) 30",
        "<module> (/x/bin/eg-bridge:8);run (/w/bridge/cli.py:60);"
        "ack (/x/lib/python3.11/site-packages/aiormq/channel.py:5) 10",
        "garbage line",
    ])
    summary = profile.summarize(text)
    assert summary["samples"] == 40
    assert summary["self"][0] == ("write (asyncio/selector_events.py)", 75.0)
    assert ("aiormq", 25.0) in summary["packages"]
    assert ("asyncio event loop, streams, sockets", 75.0) in summary["layers"]
    assert summary["inclusive"] == [("_publish (bridge/pipeline.py)", 75.0)]


def _runs() -> dict[str, object]:
    def run(msgs: float, p99: float | None = None) -> dict[str, object]:
        latency = {"p50_ms": 1.0, "p99_ms": p99, "max_ms": 9.0, "cdf_ms": [1.0] * 201}
        return {"drain": {"msgs_per_s": msgs, "cpu_s_per_10k": 1.0, "peak_rss_mb": 60.0},
                "latency": latency if p99 is not None else {}}

    return {"raw": run(10_000, 2), "bridge_0ms": run(7_500, 20), "naive_0ms": run(1_000, 900),
            "bridge_20ms": run(6_500, 40), "naive_20ms": run(45),
            "first_event": {"first_event_s": 0.6, "runs_s": [0.6]}}


def test_report_has_the_issue_keys_and_writes_its_files(tmp_path: Path) -> None:
    config = {"messages": 100, "size": 512, "naive_limit": 10, "naive_seconds": 1.0,
              "latency_rate": 1000.0, "latency_seconds": 1.0, "started_at": "now"}
    results = report.summarize(_runs(), config)  # type: ignore[arg-type]
    for key in ("raw_msgs_per_s", "naive_msgs_per_s", "bridge_msgs_per_s", "ratio_vs_raw",
                "ratio_vs_naive", "naive_msgs_per_s_20ms", "bridge_msgs_per_s_20ms",
                "ratio_20ms_vs_0ms", "p50_ms", "p99_ms", "peak_rss_mb", "first_event_s"):
        assert results[key] is not None, key
    assert results["ratio_vs_raw"] == 0.75
    assert results["targets"]["instant: bridge / raw"]["met"] is True
    assert results["targets"]["20 ms: bridge / naive"]["met"] is True
    written = report.write(results, tmp_path)
    assert json.loads((tmp_path / "results.json").read_text())["bridge_msgs_per_s"] == 7500
    assert "| eg-bridge (default config) | instant | 7,500 | 0.75 |" in (
        tmp_path / "results.md").read_text()
    if (tmp_path / "results.png").exists():
        assert (tmp_path / "results.png") in written


def test_command_line_defaults_follow_issue_7() -> None:
    args = parse_args([])
    assert args.messages == 100_000
    assert args.size == 512
    assert args.naive_limit == 5_000
    assert args.naive_seconds == 60
    assert not args.long


def test_rounds_keep_the_first_run_and_the_best_drain() -> None:
    first = {"drain": {"msgs_per_s": 100.0, "peak_rss_mb": 50.0}, "latency": {"p99_ms": 5},
             "phase_seconds": 1.0}
    later = {"drain": {"msgs_per_s": 150.0, "peak_rss_mb": 40.0}, "phase_seconds": 2.0}
    merged = merge_rounds(first, later)
    assert merged["drain"] == {"msgs_per_s": 150.0, "peak_rss_mb": 50.0}
    assert merged["latency"] == {"p99_ms": 5}
    again = merge_rounds(merged, later | {"latency": {"p99_ms": 3}})
    assert again["latency"] == {"p99_ms": 3}
    assert [r["p99_ms"] for r in again["latency_rounds"]] == [5, 3]
    assert [d["msgs_per_s"] for d in merged["drain_rounds"]] == [100.0, 150.0]
    assert merged["phase_seconds"] == 3.0
    failed = merge_rounds(merged, {"error": "boom", "phase_seconds": 0.1})
    assert failed["drain"]["msgs_per_s"] == 150.0
    assert failed["failed_rounds"] == ["boom"]
