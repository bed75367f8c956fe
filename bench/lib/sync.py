"""One sync of many apps, sent to the hub the way a spoke sends it (bench/run, section 3).

sync.py --source SPOKE_TUNNEL_IP --sync URL --peer NAME --api HUB_API_URL --counts 1000,10000 --reps R
Runs in the spoke's namespace: POST /sync to the hub's tunnel address, bound to the spoke's tunnel address (the
only source the hub accepts for that peer), no long-poll header. For each count and repetition: first an empty
sync (and wait until the hub lists none of the peer's apps), then one sync of COUNT apps; prints the body size, the
POST round trip, the time until the hub's /api/apps lists every app it can expose, and how many it exposes.
"""
import argparse
import http.client
import json
import time
import urllib.parse
import urllib.request

REMOTE_PORTS = 29999 - 25001 + 1  # the hub's remote listener range


def body(peer, source, count):
    apps = [{"name": f"app-{i:05d}", "address": f"{source}:{20000 + i % 5000}", "peer": peer,
             "originalPort": 80, "targetLabels": ""} for i in range(count)]
    return json.dumps({"Peer": peer, "Metadata": None, "Apps": apps}, separators=(",", ":")).encode()


def post(url, source, data):
    u = urllib.parse.urlsplit(url)
    c = http.client.HTTPConnection(u.hostname, u.port, timeout=30, source_address=(source, 0))
    t0 = time.monotonic()
    c.request("POST", u.path, body=data, headers={"Content-Type": "application/octet-stream"})
    r = c.getresponse()
    answer = r.read()
    elapsed = (time.monotonic() - t0) * 1000
    c.close()
    if r.status != 200:
        raise SystemExit(f"sync answered {r.status}: {answer[:200]!r}")
    return elapsed


def count_listed(api, peer):
    with urllib.request.urlopen(api, timeout=5) as r:
        data = r.read()
    return sum(1 for x in json.loads(data) if x["peer"] == peer), len(data)


def wait_count(api, peer, want, timeout):
    deadline = time.monotonic() + timeout
    last = (-1, 0)
    while time.monotonic() < deadline:
        last = count_listed(api, peer)
        if last[0] == want:
            return last
        time.sleep(0.02)
    return last


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--source", required=True)
    p.add_argument("--sync", required=True)
    p.add_argument("--peer", required=True)
    p.add_argument("--api", required=True)
    p.add_argument("--counts", default="1000,10000")
    p.add_argument("--reps", type=int, default=3)
    a = p.parse_args()
    for count in [int(c) for c in a.counts.split(",")]:
        data = body(a.peer, a.source, count)
        want = min(count, REMOTE_PORTS)
        for _ in range(a.reps):
            post(a.sync, a.source, body(a.peer, a.source, 0))
            wait_count(a.api, a.peer, 0, 60)
            time.sleep(0.3)
            t0 = time.monotonic()
            post_ms = post(a.sync, a.source, data)
            got, api_bytes = wait_count(a.api, a.peer, want, 120)
            done_ms = (time.monotonic() - t0) * 1000
            print(f"{count} body_bytes {len(data)}", flush=True)
            print(f"{count} post_ms {post_ms:.1f}", flush=True)
            print(f"{count} exposed_ms {done_ms:.1f}" if got == want else f"{count} exposed_timeout 1", flush=True)
            print(f"{count} exposed_count {got}", flush=True)
            print(f"{count} api_bytes {api_bytes}", flush=True)
    post(a.sync, a.source, body(a.peer, a.source, 0))


if __name__ == "__main__":
    main()
