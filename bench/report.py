"""Turn the measurements into ``results.json``, ``results.md`` and ``results.png``.

The top-level keys of ``results.json`` are issue 7's (``raw_msgs_per_s`` ... ``first_event_s``)
plus a few more; ``runs`` holds every measurement in detail, ``targets`` compares the figures
with design §11.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

from bench.stats import CDF_POINTS, ratio

ROWS = (
    ("raw", "raw ceiling (aio-pika, no forwarding)", "-"),
    ("bridge_0ms", "eg-bridge (default config)", "instant"),
    ("naive_0ms", "naive (consume, POST, ack)", "instant"),
    ("bridge_20ms", "eg-bridge (default config)", "+20 ms"),
    ("naive_20ms", "naive (consume, POST, ack)", "+20 ms"),
)


def _get(runs: dict[str, Any], run: str, part: str, key: str) -> Any:
    return ((runs.get(run) or {}).get(part) or {}).get(key)


def summarize(runs: dict[str, Any], config: dict[str, Any]) -> dict[str, Any]:
    """The results document: headline figures, targets, config, machine, detailed runs."""
    raw = _get(runs, "raw", "drain", "msgs_per_s")
    naive = _get(runs, "naive_0ms", "drain", "msgs_per_s")
    bridge = _get(runs, "bridge_0ms", "drain", "msgs_per_s")
    naive20 = _get(runs, "naive_20ms", "drain", "msgs_per_s")
    bridge20 = _get(runs, "bridge_20ms", "drain", "msgs_per_s")
    first = (runs.get("first_event") or {}).get("first_event_s")
    long_run = runs.get("long") or {}
    out: dict[str, Any] = {
        "raw_msgs_per_s": raw,
        "naive_msgs_per_s": naive,
        "bridge_msgs_per_s": bridge,
        "ratio_vs_raw": ratio(bridge, raw),
        "ratio_vs_naive": ratio(bridge, naive),
        "naive_msgs_per_s_20ms": naive20,
        "bridge_msgs_per_s_20ms": bridge20,
        "ratio_20ms_vs_0ms": ratio(bridge20, bridge),
        "ratio_20ms_vs_naive_20ms": ratio(bridge20, naive20),
        "p50_ms": _get(runs, "bridge_0ms", "latency", "p50_ms"),
        "p99_ms": _get(runs, "bridge_0ms", "latency", "p99_ms"),
        "max_ms": _get(runs, "bridge_0ms", "latency", "max_ms"),
        "p50_ms_20ms": _get(runs, "bridge_20ms", "latency", "p50_ms"),
        "p99_ms_20ms": _get(runs, "bridge_20ms", "latency", "p99_ms"),
        "cpu_s_per_10k": _get(runs, "bridge_0ms", "drain", "cpu_s_per_10k"),
        "raw_cpu_s_per_10k": _get(runs, "raw", "drain", "cpu_s_per_10k"),
        "naive_cpu_s_per_10k": _get(runs, "naive_0ms", "drain", "cpu_s_per_10k"),
        "peak_rss_mb": _get(runs, "bridge_0ms", "drain", "peak_rss_mb"),
        "first_event_s": first,
    }
    if long_run:
        out["rss_1m_backlog_mb"] = long_run.get("rss_max_mb")
        out["rss_1m_growth_mb"] = long_run.get("growth_after_10pct_mb")
    out["targets"] = targets(out)
    out["config"] = config
    out["machine"] = machine()
    cdfs = {}
    for name, run in runs.items():
        latency = (run or {}).get("latency") or {}
        if "cdf_ms" in latency:
            cdfs[name] = latency.pop("cdf_ms")
    out["runs"] = runs
    out["latency_cdf_ms"] = cdfs
    return out


def targets(res: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Design §11 targets: measured value, threshold, met (None when not measured)."""

    def check(value: float | None, op: str, limit: float) -> dict[str, Any]:
        met = None if value is None else (value >= limit if op == ">=" else value < limit)
        return {"value": value, "target": f"{op} {limit:g}", "met": met}

    out = {
        "instant: bridge / raw": check(res["ratio_vs_raw"], ">=", 0.7),
        "instant: bridge / naive": check(res["ratio_vs_naive"], ">=", 5),
        "20 ms: bridge / bridge instant": check(res["ratio_20ms_vs_0ms"], ">=", 0.8),
        "20 ms: bridge / naive": check(res["ratio_20ms_vs_naive_20ms"], ">=", 100),
        "p99 ms at 1,000 msg/s": check(res["p99_ms"], "<", 50),
        "peak RSS MB (100k drain)": check(res["peak_rss_mb"], "<", 150),
        "first event s": check(res["first_event_s"], "<", 1),
    }
    if "rss_1m_backlog_mb" in res:
        out["RSS MB, 1M backlog"] = check(res["rss_1m_backlog_mb"], "<", 150)
    return out


def machine() -> dict[str, Any]:
    """Where the run happened: CPU, cores, memory, Python, library versions, git commit."""
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gb = None
    try:
        mem_kb = int(Path("/proc/meminfo").read_text().split()[1])
        mem_gb = round(mem_kb / 1024 / 1024, 1)
    except (OSError, ValueError, IndexError):
        pass
    versions: dict[str, str | None] = {}
    for dist in ("eg-bridge", "aio-pika", "aiormq", "aiohttp", "orjson"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = None
    return {
        "cpu": cpu, "cores": os.cpu_count(), "memory_gb": mem_gb,
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(), "rabbitmq": _rabbitmq_version(),
        "versions": versions, "commit": _git("rev-parse", "--short", "HEAD"),
        "dirty": bool(_git("status", "--porcelain", "--", "bridge")),
    }


def _git(*args: str) -> str | None:
    try:
        return subprocess.run(["git", *args], capture_output=True, text=True, check=True,
                              cwd=Path(__file__).parent, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


def _rabbitmq_version() -> str | None:
    try:
        out = subprocess.run(["dpkg-query", "-W", "-f=${Version}", "rabbitmq-server"],
                             capture_output=True, text=True, check=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return out.strip() or None


def _fmt(value: Any, digits: int = 0) -> str:
    if value is None:
        return "-"
    if isinstance(value, float | int):
        return f"{value:,.{digits}f}"
    return str(value)


def markdown(res: dict[str, Any]) -> str:
    """The results as a Markdown table (plus the targets) for the README."""
    runs, cfg, mach = res["runs"], res["config"], res["machine"]
    raw = res["raw_msgs_per_s"]
    lines = [
        "# eg-bridge benchmark",
        "",
        f"{cfg['messages']:,} persistent JSON messages of {cfg['size']} bytes with message ids,"
        f" one private RabbitMQ {mach.get('rabbitmq') or ''} node, the EG emulator in its own"
        f" process; {mach['cores']} cores ({mach['cpu']}), {mach['memory_gb']} GB,"
        f" Python {mach['python']}, commit {mach.get('commit')}"
        f"{' (bridge/ modified)' if mach.get('dirty') else ''}, {cfg['started_at']}.",
        "",
        "| consumer | sink | msg/s | vs raw | p50 ms | p99 ms | max ms | CPU s / 10k msgs"
        " | peak RSS MB |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for key, name, sink in ROWS:
        run = runs.get(key) or {}
        drain, latency = run.get("drain") or {}, run.get("latency") or {}
        rss = drain.get("peak_rss_mb")
        lines.append(
            f"| {name} | {sink} | {_fmt(drain.get('msgs_per_s'))} |"
            f" {_fmt(ratio(drain.get('msgs_per_s'), raw), 2)} |"
            f" {_fmt(latency.get('p50_ms'), 1)} | {_fmt(latency.get('p99_ms'), 1)} |"
            f" {_fmt(latency.get('max_ms'), 1)} | {_fmt(drain.get('cpu_s_per_10k'), 2)} |"
            f" {_fmt(rss, 0)} |"
        )
    rounds = []
    noise = []
    for key, name, sink in ROWS:
        run = runs.get(key) or {}
        values = [d.get("msgs_per_s") for d in run.get("drain_rounds") or []]
        p99s = [r.get("p99_ms") for r in run.get("latency_rounds") or []]
        short = f"{name.split(' (')[0]}{'' if sink == '-' else ' ' + sink}"
        if len(values) > 1:
            text = f"{short} {' / '.join(_fmt(v) for v in values)} msg/s"
            if len(p99s) > 1:
                text += f", p99 {' / '.join(_fmt(v, 1) for v in p99s)} ms"
            rounds.append(text)
        others = ((run.get("drain") or {}).get("cores_busy") or {}).get("others")
        if others is not None:
            noise.append(f"{short} {others:.2f}")
    if rounds:
        lines += ["", f"Each figure is the best of {cfg.get('repeat')} interleaved rounds (other"
                      f" work on a shared machine only slows a run down); per round:"
                      f" {'; '.join(rounds)}."]
    if noise:
        lines += ["", "Cores kept busy by other work on the machine during the best drain"
                      f" (of {mach['cores']}): {'; '.join(noise)}."]
    lines += [
        "",
        f"Throughput: backlog drained, first to last event received at the emulator (raw: first"
        f" to last message consumed); naive capped at {cfg['naive_limit']:,} messages or"
        f" {cfg['naive_seconds']:.0f} s. Latency: publish time to emulator receipt at a fixed"
        f" {cfg['latency_rate']:,.0f} msg/s for {cfg['latency_seconds']:.0f} s (raw: to"
        " consumption; naive at +20 ms cannot keep up with that load and is not measured)."
        " CPU: the consumer process only, between the first and the last event.",
        "",
        f"First event after launch (one message waiting, broker and EG up): "
        f"**{_fmt(res['first_event_s'], 3)} s** (median of"
        f" {len((runs.get('first_event') or {}).get('runs_s') or [])}).",
    ]
    if "rss_1m_backlog_mb" in res:
        lines.append(f"RSS while a {cfg.get('long_messages', 0):,}-message backlog drains: max "
                     f"{_fmt(res['rss_1m_backlog_mb'], 1)} MB, growth after the first 10 %: "
                     f"{_fmt(res.get('rss_1m_growth_mb'), 1)} MB.")
    lines += ["", "## Targets (design §11)", "", "| target | measured | wanted | met |",
              "|---|---:|---|---|"]
    for name, t in res["targets"].items():
        met = {True: "yes", False: "**no**", None: "-"}[t["met"]]
        lines.append(f"| {name} | {_fmt(t['value'], 3)} | {t['target']} | {met} |")
    return "\n".join(lines) + "\n"


def chart(res: dict[str, Any], path: Path) -> bool:
    """Throughput bars and latency CDFs as a PNG; False when matplotlib is not installed."""
    try:
        import matplotlib  # noqa: PLC0415

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # noqa: PLC0415
    except ImportError:
        return False
    runs = res["runs"]
    samples = (runs.get("long") or {}).get("samples") or []
    if samples:
        fig, (bars, cdf, rss) = plt.subplots(1, 3, figsize=(18, 5.2))
        _rss_panel(rss, samples)
    else:
        fig, (bars, cdf) = plt.subplots(1, 2, figsize=(13, 5.2))
    labels, values, colors = [], [], []
    palette = {"raw": "#888888", "bridge": "#1f77b4", "naive": "#ff7f0e"}
    for key, name, sink in ROWS:
        value = _get(runs, key, "drain", "msgs_per_s")
        if value is None:
            continue
        labels.append(f"{name.split(' (')[0]}\n{sink if sink != '-' else 'no sink'}")
        values.append(value)
        colors.append(palette[key.split("_")[0]])
    ypos = list(range(len(values)))[::-1]
    bars.barh(ypos, values, color=colors)
    bars.set_yticks(ypos, labels)
    bars.set_xscale("log")
    bars.set_xlabel("messages per second (log scale)")
    bars.set_title(f"Draining a backlog of {res['config']['messages']:,} messages")
    for y, v in zip(ypos, values, strict=True):
        bars.text(v * 1.05, y, f"{v:,.0f}", va="center", fontsize=9)
    bars.set_xlim(right=max(values, default=1) * 4)
    styles = {"raw": ("raw ceiling (to the consumer)", "#888888", ":"),
              "bridge_0ms": ("eg-bridge, instant", "#1f77b4", "-"),
              "bridge_20ms": ("eg-bridge, +20 ms", "#1f77b4", "--"),
              "naive_0ms": ("naive, instant", "#ff7f0e", "-")}
    pct = [100 * i / (CDF_POINTS - 1) for i in range(CDF_POINTS)]
    fastest, slowest = 1.0, 100.0
    for key, (name, color, style) in styles.items():
        values_ms = res["latency_cdf_ms"].get(key)
        if values_ms:
            cdf.plot([max(v, 0.01) for v in values_ms], pct, style, color=color, label=name)
            fastest = min(fastest, max(values_ms[0], 0.01) / 1.3)
            slowest = max(slowest, values_ms[-1] * 1.3)
    cdf.axvline(50, color="red", linewidth=0.8, alpha=0.6)
    cdf.axhline(99, color="red", linewidth=0.8, alpha=0.6)
    cdf.text(53, 50, "p99 target:\n< 50 ms", color="red", fontsize=8)
    cdf.set_xscale("log")
    cdf.set_xlim(fastest, slowest)
    cdf.set_xlabel("end-to-end latency, ms (log scale)")
    cdf.set_ylabel("percent of messages")
    cdf.set_ylim(0, 100.5)
    cdf.set_title(f"Latency CDF at {res['config']['latency_rate']:,.0f} msg/s")
    cdf.legend(loc="lower right", fontsize=8)
    cdf.grid(alpha=0.3, which="both")
    mach = res["machine"]
    fig.suptitle(f"eg-bridge benchmark - {mach['cores']} cores, {mach['cpu']}, "
                 f"commit {mach.get('commit')}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def _rss_panel(ax: Any, samples: list[list[float]]) -> None:
    """eg-bridge's RSS against messages drained during the ``--long`` run."""
    ax.plot([s[1] / 1000 for s in samples], [s[2] for s in samples], color="#1f77b4")
    ax.axhline(150, color="red", linewidth=0.8, alpha=0.6)
    ax.text(0, 152, "target: < 150 MB", color="red", fontsize=8)
    ax.set_ylim(0, 200)
    ax.set_xlabel("thousand messages drained")
    ax.set_ylabel("eg-bridge RSS, MB")
    ax.set_title(f"RSS while {samples[-1][1]:,.0f} messages drain")
    ax.grid(alpha=0.3)


def write(res: dict[str, Any], out: Path) -> list[Path]:
    """Write ``results.json``, ``results.md`` and (with matplotlib) ``results.png``."""
    out.mkdir(parents=True, exist_ok=True)
    written = [out / "results.json", out / "results.md"]
    written[0].write_text(json.dumps(res, indent=2) + "\n")
    written[1].write_text(markdown(res))
    if chart(res, out / "results.png"):
        written.append(out / "results.png")
    return written
