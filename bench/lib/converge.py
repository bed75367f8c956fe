"""Control-plane convergence through the real hub and spoke (bench/run, section 3).

converge.py toggle --apps-file F --api URL --runs N [--base NAME=HOST:PORT ...] [--app NAME] [--target HOST:PORT]
    N times: add app NAME to the offering side's apps file (atomic rename), time until it is reachable on the
    consuming side (listed in the consumer's /api/apps AND an HTTP GET /1k through the listed port answers 200 with
    1,024 bytes); then remove it and time until it is gone (not listed AND its port refuses connections).
    Prints "expose MS" / "unexpose MS" lines.
converge.py bulk --apps-file F --api URL --count C --reps R [--base ...] [--target HOST:PORT]
    R times: add C apps at once (bulk-00000 ...); time until the consumer's /api/apps lists all of them; then remove
    them and time until none is listed. Prints "bulk_expose MS", "bulk_withdraw MS", "bulk_file_bytes B".
Runs in the consumer's network namespace (the API URL and the listeners are local there).
"""
import argparse
import http.client
import json
import os
import random
import socket
import sys
import time
import urllib.request

POLL = 0.005


def write_apps(path, apps):
    text = "apps:\n" + "".join(f"  - name: {n}\n    address: {a}\n" for n, a in apps) if apps else "apps: []\n"
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)
    return len(text.encode())


def listed(api):
    with urllib.request.urlopen(api, timeout=2) as r:
        return json.load(r)


def reachable(port):
    try:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
        c.request("GET", "/1k")
        r = c.getresponse()
        ok = r.status == 200 and len(r.read()) == 1024
        c.close()
        return ok
    except (OSError, http.client.HTTPException):
        return False


def refused(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return False
    except ConnectionRefusedError:
        return True
    except OSError:
        return False


def wait(cond, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if cond():
                return True
        except OSError:
            pass
        time.sleep(POLL)
    return False


def toggle(a, base):
    for _ in range(a.runs):
        state = {}

        def exposed():
            if "port" not in state:
                entry = next((x for x in listed(a.api) if x["name"] == a.app), None)
                if entry is None:
                    return False
                state["port"] = int(entry["address"].rsplit(":", 1)[1])
            return reachable(state["port"])

        t0 = time.monotonic()
        write_apps(a.apps_file, base + [(a.app, a.target)])
        if not wait(exposed, 15):
            print("expose_timeout 1", flush=True)
            write_apps(a.apps_file, base)
            time.sleep(2)
            continue
        print(f"expose {(time.monotonic() - t0) * 1000:.2f}", flush=True)
        time.sleep(random.uniform(0.05, 0.25))

        port = state["port"]
        t0 = time.monotonic()
        write_apps(a.apps_file, base)
        if not wait(lambda: all(x["name"] != a.app for x in listed(a.api)) and refused(port), 15):
            print("unexpose_timeout 1", flush=True)
            continue
        print(f"unexpose {(time.monotonic() - t0) * 1000:.2f}", flush=True)
        time.sleep(random.uniform(0.05, 0.25))


def bulk(a, base):
    global POLL
    POLL = 0.02  # a big /api/apps answer: do not load the hub with the polling itself
    names = [f"bulk-{i:05d}" for i in range(a.count)]
    for _ in range(a.reps):
        t0 = time.monotonic()
        size = write_apps(a.apps_file, base + [(n, a.target) for n in names])
        ok = wait(lambda: sum(1 for x in listed(a.api) if x["name"].startswith("bulk-")) >= a.count, 60)
        print(f"bulk_expose {(time.monotonic() - t0) * 1000:.1f}" if ok else "bulk_expose_timeout 1", flush=True)
        print(f"bulk_file_bytes {size}", flush=True)
        t0 = time.monotonic()
        write_apps(a.apps_file, base)
        ok = wait(lambda: not any(x["name"].startswith("bulk-") for x in listed(a.api)), 60)
        print(f"bulk_withdraw {(time.monotonic() - t0) * 1000:.1f}" if ok else "bulk_withdraw_timeout 1", flush=True)
        time.sleep(0.5)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["toggle", "bulk"])
    p.add_argument("--apps-file", required=True)
    p.add_argument("--api", required=True)
    p.add_argument("--base", action="append", default=[])
    p.add_argument("--app", default="conv")
    p.add_argument("--target", default="127.0.0.1:8088")
    p.add_argument("--runs", type=int, default=50)
    p.add_argument("--count", type=int, default=1000)
    p.add_argument("--reps", type=int, default=3)
    a = p.parse_args()
    base = [tuple(b.split("=", 1)) for b in a.base]
    toggle(a, base) if a.mode == "toggle" else bulk(a, base)


if __name__ == "__main__":
    sys.exit(main())
