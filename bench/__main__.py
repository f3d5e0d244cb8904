"""``python -m bench [--messages N] [--out DIR] [--long] [--profile]``: see :mod:`bench`."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

from bench.runners import Options
from bench.suite import run

HEADLINE = ("raw_msgs_per_s", "naive_msgs_per_s", "bridge_msgs_per_s", "ratio_vs_raw",
            "ratio_vs_naive", "naive_msgs_per_s_20ms", "bridge_msgs_per_s_20ms",
            "ratio_20ms_vs_0ms", "p50_ms", "p99_ms", "peak_rss_mb", "first_event_s",
            "rss_1m_backlog_mb")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line (defaults: issue 7's sizes)."""
    d = Options()
    p = argparse.ArgumentParser(
        prog="python -m bench",
        description="Throughput, latency, CPU and memory of eg-bridge next to a raw aio-pika "
                    "ceiling and a naive consume-POST-ack loop, on a private RabbitMQ node and "
                    "the EG emulator. Writes DIR/results.json, results.md, results.png.")
    p.add_argument("--messages", type=int, default=d.messages, metavar="N",
                   help="backlog size (default %(default)s)")
    p.add_argument("--size", type=int, default=d.size, metavar="BYTES",
                   help="message body size (default %(default)s)")
    p.add_argument("--out", type=Path, default=d.out, metavar="DIR",
                   help="output directory (default bench/out)")
    p.add_argument("--long", action="store_true",
                   help="also sample RSS while a 1,000,000-message backlog drains (+5-8 min)")
    p.add_argument("--long-messages", type=int, default=d.long_messages, metavar="N",
                   help="backlog of the --long run (default %(default)s)")
    p.add_argument("--profile", action="store_true",
                   help="also record one eg-bridge drain with py-spy (DIR/profile.md)")
    p.add_argument("--latency-seconds", type=float, default=d.latency_seconds, metavar="S",
                   help="length of each 1,000 msg/s latency run (default %(default)s)")
    p.add_argument("--naive-limit", type=int, default=d.naive_limit, metavar="N",
                   help="naive bridge: at most N messages (default %(default)s)")
    p.add_argument("--naive-seconds", type=float, default=d.naive_seconds, metavar="S",
                   help="naive bridge: at most S seconds (default %(default)s)")
    p.add_argument("--repeat", type=int, default=d.repeat, metavar="N",
                   help="throughput rounds per consumer, best one reported (default %(default)s)")
    p.add_argument("--keep-workdir", action="store_true",
                   help="keep the broker data and process logs (path printed at start)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; print the headline figures as JSON on stdout."""
    args = parse_args(argv)
    opts = Options(messages=args.messages, size=args.size, out=args.out.resolve(),
                   naive_limit=args.naive_limit, naive_seconds=args.naive_seconds,
                   latency_seconds=args.latency_seconds, long_messages=args.long_messages,
                   repeat=max(1, args.repeat))
    results = asyncio.run(run(opts, long=args.long, profile=args.profile,
                              keep=args.keep_workdir))
    print(json.dumps({k: results[k] for k in HEADLINE if k in results}, indent=2))
    failed = [name for name, r in results["runs"].items() if "error" in r]
    if failed:
        print(f"bench: phases failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
