#!/usr/bin/env python3
"""Prints the key fields of loadgen JSON results, one line each.

    python3 bench/summarize.py DIR                 # every *.json in a directory (run-all.sh, compare.sh)
    python3 bench/summarize.py [SESSION]           # a session of bench/results.json (default: all)
"""
import json, sys, glob, os
arg = sys.argv[1] if len(sys.argv) > 1 else None
def ms(ns): return "%.2f" % (ns / 1e6) if ns is not None else "n/a"
def load():
    if arg and os.path.isdir(arg):
        for f in sorted(glob.glob(os.path.join(arg, "*.json"))):
            name = os.path.basename(f)[:-5]
            try:
                yield name, json.load(open(f))
            except Exception as e:
                print(f"{name}: unreadable ({e})")
        return
    packed = json.load(open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "results.json")))
    for session in sorted(packed):
        if arg is None or arg == session:
            for name, r in sorted(packed[session]["results"].items()):
                yield f"{session}/{name}", r
for name, r in load():
    if not isinstance(r, dict) or "mode" not in r: continue
    m = r["mode"]
    fails = r.get("failures")
    if m == "idle":
        rss = r["server_rss_before_after"]
        print(f"{name}: subscribed {r['connections']['subscribed']}/{r['connections']['requested']} fail {fails} "
              f"rate {r['connect_rate']:.0f}/s rss {rss['before_kb']}->{rss['after_kb']} KiB "
              f"per-conn {r['rss_delta_per_connection']:.0f} B closes-unexpected {r['unexpected_server_closes']} "
              f"setup-cpu {r['server_cpu_during_setup']['cpu_s']}")
    elif m == "fanout":
        p = r["published"]; dl = r["delivered_expected"]; lat = r["latency_p50_p90_p99_max"]
        cpu = r["server_cpu_publish_window"]; wc = r.get("server_write_calls_cpu_per_write", {})
        print(f"{name}: subs {r['subscribers']['subscribed']} pub {p['sent']}/{p['requested']} in {p['seconds']:.2f}s "
              f"({p['sent']/max(p['seconds'],1e-9):.0f}/s of {p['rate_offered']:.0f}) "
              f"deliv {dl['delivered']}/{dl['expected']} drained={dl['drained']} loss {r['loss']} "
              f"dup/ooo {r['duplicates_out_of_order']['duplicates']}/{r['duplicates_out_of_order']['out_of_order']} "
              f"wall {r['deliveries_s_wall']:.0f}/s cpu {cpu['cpu_s']} s/{cpu['window_s']:.2f}s "
              f"per-cpu {r['deliveries_per_server_cpu_second']} fpw {r['frames_per_write_syscall']} "
              f"writes {wc.get('write_calls')} us/write {wc.get('cpu_us_per_write')} "
              f"lat p50 {ms(lat['p50_ns'])} p90 {ms(lat['p90_ns'])} p99 {ms(lat['p99_ns'])} max {ms(lat['max_ns'])} ms "
              f"fail {fails} srvclose {r['unexpected_server_closes']} rss/sub {r['server_rss_delta_per_subscriber']}")
    elif m == "connect":
        print(f"{name}: c {r['concurrency']} dur {r['duration']:.2f} hs {r['handshakes_subscribed']} fail {fails} "
              f"rate {r['handshakes_s']:.0f}/s cpu {r['server_cpu']} per-cpu {r['handshakes_per_server_cpu_second']} "
              f"children-cpu {r.get('server_children_cpu_forked_handlers')} "
              f"hs p50 {ms(r['handshake_p50_p99']['p50_ns'])} p99 {ms(r['handshake_p50_p99']['p99_ns'])} ms")
    elif m == "route":
        lat = r["latency_p50_p90_p99_max"]; c = r["server_cpu_children_cpu"]
        print(f"{name}: c {r['connections']['open']} window {r['window']:.2f}s replies {r['replies_in_window']} "
              f"rate {r['requests_s']:.0f}/s unexpected {r['unexpected_replies']} fail {fails} "
              f"cpu {c['server_cpu_s']} children {c['children_cpu_s']} per-cpu {r['requests_per_server_cpu_second']} "
              f"lat p50 {ms(lat['p50_ns'])} p90 {ms(lat['p90_ns'])} p99 {ms(lat['p99_ns'])} max {ms(lat['max_ns'])} ms")
