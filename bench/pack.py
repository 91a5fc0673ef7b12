#!/usr/bin/env python3
"""Packs one benchmark session (a directory of loadgen --json results written by run-all.sh or
compare.sh) into the single committed results file, bench/results.json.

    python3 bench/pack.py OUT_DIR SESSION [--note TEXT] [--rename PATH=LABEL ...]

--rename replaces a path of the machine (a binary's location, say) by a label in the logs.

The file maps SESSION -> {"machine": ..., "commands": [...], "results": {name: loadgen JSON}, "note"}.
Raw per-run files stay out of the repository; summarize.py reads either form.
"""
import argparse, glob, json, os

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results.json")


def read_text(path):
    try:
        with open(path) as f:
            return f.read()
    except FileNotFoundError:
        return ""


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out_dir")
    ap.add_argument("session")
    ap.add_argument("--note", default="")
    ap.add_argument("--rename", action="append", default=[], metavar="PATH=LABEL")
    a = ap.parse_args()
    results = {}
    for path in sorted(glob.glob(os.path.join(a.out_dir, "*.json"))):
        with open(path) as f:
            results[os.path.basename(path)[:-5]] = json.load(f)
    # Side measurements a script writes beside a result (php-handlers.sh: the php-fpm pool's CPU).
    for path in glob.glob(os.path.join(a.out_dir, "*.fpm-cpu")):
        name = os.path.basename(path)[: -len(".fpm-cpu")]
        if name in results:
            results[name]["fpm_cpu_secs"] = float(read_text(path).strip() or 0)
    if not results:
        raise SystemExit(f"no *.json results in {a.out_dir}")
    packed = {}
    if os.path.exists(RESULTS):
        with open(RESULTS) as f:
            packed = json.load(f)
    renames = [r.split("=", 1) for r in a.rename]

    def lines(name):
        text = read_text(os.path.join(a.out_dir, name))
        for path, label in renames:
            text = text.replace(path, label)
        return text.splitlines()

    packed[a.session] = {
        "note": a.note,
        "machine": lines("machine.txt"),
        "commands": lines("commands.log"),
        "results": results,
    }
    with open(RESULTS, "w") as f:
        json.dump(packed, f, indent=1, sort_keys=True)
        f.write("\n")
    print(f"{RESULTS}: session {a.session!r} with {len(results)} results")


if __name__ == "__main__":
    main()
