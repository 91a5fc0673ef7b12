#!/usr/bin/env python3
"""The table of bench/loops.sh: medians over the rounds, one row per measure, one column per
number of loops.

    python3 bench/loops-table.py DIR          # bench/out/loops
    python3 bench/loops-table.py SESSION      # a session packed into bench/results.json
"""
import glob, json, os, re, statistics, sys

arg = sys.argv[1]
if os.path.isdir(arg):
    results = {os.path.basename(f)[:-5]: json.load(open(f)) for f in glob.glob(os.path.join(arg, "*.json"))}
else:
    packed = json.load(open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "results.json")))
    results = packed[arg]["results"]


def runs(scenario, loops):
    pat = re.compile(rf"^{re.escape(scenario)}-l{loops}-r\d+$")
    return [r for n, r in results.items() if pat.match(n)]


def med(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


MEASURES = [
    ("p99 latency, 1 000 × 50 msg/s, read by loadgen (ms)", "latency-1000x50",
     lambda r: r["latency_p50_p90_p99_max"]["p99_ns"] / 1e6),
    ("p50 latency, 1 000 × 50 msg/s, read by loadgen (ms)", "latency-1000x50",
     lambda r: r["latency_p50_p90_p99_max"]["p50_ns"] / 1e6),
    ("p99 latency, 1 000 × 50 msg/s, kernel arrival (ms)", "latency-kernel-1000x50",
     lambda r: r["latency_p50_p90_p99_max"]["p99_ns"] / 1e6),
    ("p50 latency, 1 000 × 50 msg/s, kernel arrival (ms)", "latency-kernel-1000x50",
     lambda r: r["latency_p50_p90_p99_max"]["p50_ns"] / 1e6),
    ("deliveries per server CPU-s, 1 000 × 2 000 msg/s", "fanout-1000x2000",
     lambda r: r["deliveries_per_server_cpu_second"]),
    ("deliveries per server CPU-s, 10 000 × 5 msg/s", "fanout-10000x5",
     lambda r: r["deliveries_per_server_cpu_second"]),
    ("cores kept busy, 10 000 × 5 msg/s (server CPU-s ÷ s)", "fanout-10000x5",
     lambda r: r["server_cpu_publish_window"]["cpu_s"] / r["server_cpu_publish_window"]["window_s"]),
    ("p99 latency, 10 000 × 5 msg/s, read by loadgen (ms)", "fanout-10000x5",
     lambda r: r["latency_p50_p90_p99_max"]["p99_ns"] / 1e6),
    ("handshakes per s (64 at a time)", "connect-64", lambda r: r["handshakes_s"]),
    ("handshakes per server CPU-s", "connect-64", lambda r: r["handshakes_per_server_cpu_second"]),
    ("server RSS per idle connection (bytes)", "idle-10000", lambda r: r["rss_delta_per_connection"]),
]

print("| measure | 1 loop | 2 loops | 2 ÷ 1 |")
print("|---|---:|---:|---:|")
for label, scenario, get in MEASURES:
    one, two = (med([get(r) for r in runs(scenario, l)]) for l in (1, 2))
    ratio = f"{two / one:.2f}×" if one and two else ""
    fmt = (lambda v: "" if v is None else (f"{v:,.0f}" if v >= 100 else f"{v:.2f}"))
    print(f"| {label} | {fmt(one)} | {fmt(two)} | {ratio} |")
spread = [r["sockets_per_loop"] for n, r in sorted(results.items()) if n.startswith("spread-")]
if spread:
    print()
    print("Sockets per loop with 10 000 idle connections (each loop also holds a few of its own): "
          + "; ".join(" / ".join(str(x) for x in s) for s in spread))
