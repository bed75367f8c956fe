"""Failover of global services, measured from a client's side (bench/run, section "failover").

Runs in the hub's namespace. One client per mode sends requests over the hub's global listener of an app (L4: a new
TCP connection per request, HTTP/1.0, as the e2e test does, one every 10 ms whatever the others do; HTTP mode: one
keep-alive HTTP/1.1 connection, the next request 5 ms after each answer, the connection opened again after an error), each backend answering with its site's name; a third thread polls GET /api/global-apps/v1
every 20 ms. Both clients run at once, so both modes see the same fault. Per repetition, two faults:

  kill  SIGKILL to one spoke's process (its wireguard-go lives on: connects to its site are refused); repaired by
        starting the spoke again (the command given; this script owns that process and stops it at the end)
  veth  the other spoke's veth set down (packets vanish, connects time out); repaired by setting it up again
Before each fault: every site healthy in the API, 5 answers to each client, then a random wait of 0-1.2 s.

For each fault and mode it prints (key variant value, one per line; variant = "<fault>-<mode>"):
  fo.recover_ms  fault → end of the first of STREAK requests in a row (in the order sent, sent after the site was dead)
                 answered, all by a surviving site
  fo.failed      requests that failed (error, timeout, non-200) from the fault until then
  fo.failed_inflight  of those, the ones sent before the site was dead (for a kill: before the process had exited
                 and the kernel had closed its sockets; a connection its dying listener still accepted is in flight)
  fo.dead_ms     (variant = fault) from the kill until the process had exited (0 for the veth)
  fo.requests    requests completed in that time
  fo.slowest_ms  the longest of them (a request that waited for a dead site before it was moved to another one)
  fo.down_ms     fault → the API first shows the site down (or gone)
  fo.back_ms     repair → the first request sent after it through the global listener answered by that site
  fo.back_api_ms repair → the API shows the site healthy again
A condition not met within --timeout seconds prints <key>_timeout instead.
"""
import argparse
import http.client
import json
import os
import random
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time

p = argparse.ArgumentParser()
p.add_argument("--api", default="127.0.0.1:8082")
p.add_argument("--app", action="append", required=True, help="MODE=APP, e.g. l4=web, http=web-http")
p.add_argument("--kill-site", required=True)
p.add_argument("--kill-pid", type=int, required=True)
p.add_argument("--restart", required=True, help="shell command that starts the killed spoke again (exec'd)")
p.add_argument("--restart-log", required=True)
p.add_argument("--veth-site", required=True)
p.add_argument("--veth-down", required=True)
p.add_argument("--veth-up", required=True)
p.add_argument("--reps", type=int, default=3)
p.add_argument("--streak", type=int, default=20)
p.add_argument("--pace-ms", type=float, default=5, help="HTTP mode: pause after each answer")
p.add_argument("--interval-ms", type=float, default=10, help="L4: a new connection this often")
p.add_argument("--request-timeout", type=float, default=5)
p.add_argument("--timeout", type=float, default=30)
a = p.parse_args()

api_host, api_port = a.api.split(":")
modes = dict(x.split("=", 1) for x in a.app)  # mode -> app
stop = threading.Event()
log = []  # (mode, t_start, t_end, ok, site)
started = []  # (mode, t_start) of every request, in the order sent (a request is logged when it ends)
done = set()
polls = []  # (t, {app: {peer: healthy}})
children = []


def now():
    return time.monotonic()


def api_get(conn, path):
    conn.request("GET", path)
    r = conn.getresponse()
    body = r.read()
    if r.status != 200:
        raise RuntimeError(f"{path}: {r.status}")
    return json.loads(body)


def global_apps():
    c = http.client.HTTPConnection(api_host, int(api_port), timeout=5)
    try:
        return api_get(c, "/api/global-apps/v1")
    finally:
        c.close()


def port_of(app):
    for x in global_apps():
        if x["name"] == app:
            return int(x["address"].rsplit(":", 1)[1])
    raise SystemExit(f"failover.py: the hub lists no global app {app}")


def poller():
    c = None
    while not stop.is_set():
        try:
            if c is None:
                c = http.client.HTTPConnection(api_host, int(api_port), timeout=5)
            apps = api_get(c, "/api/global-apps/v1")
            polls.append((now(), {x["name"]: {s["peer"]: bool(s["healthy"]) for s in x["sites"]} for x in apps}))
        except Exception:
            if c is not None:
                c.close()
            c = None
        time.sleep(0.02)


def l4_request(mode, port, slots):
    req = b"GET /site HTTP/1.0\r\nHost: web\r\n\r\n"
    t0 = now()
    key = (mode, t0)
    started.append(key)
    ok, site = False, None
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=a.request_timeout) as s:
            s.settimeout(max(0.01, a.request_timeout - (now() - t0)))
            s.sendall(req)
            data = b""
            while True:
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
                if now() - t0 > a.request_timeout:
                    raise TimeoutError()
        head, _, body = data.partition(b"\r\n\r\n")
        if head.split(b" ", 2)[1:2] == [b"200"]:
            ok, site = True, body.decode(errors="replace").strip()
    except (OSError, IndexError):
        pass
    log.append((mode, t0, now(), ok, site))
    done.add(key)
    slots.release()


def l4_client(mode, port):
    """Open loop: a new connection every --interval-ms, each in its own thread (at most 64 at once), so a connection
    lost with its site does not hold up the next ones."""
    slots = threading.Semaphore(64)
    due = now()
    while not stop.is_set():
        slots.acquire()
        threading.Thread(target=l4_request, args=(mode, port, slots), daemon=True).start()
        due += a.interval_ms / 1000
        time.sleep(max(0.0, due - now()))


def http_client(mode, port):
    c = None
    while not stop.is_set():
        t0 = now()
        started.append((mode, t0))
        ok, site = False, None
        try:
            if c is None:
                c = http.client.HTTPConnection("127.0.0.1", port, timeout=a.request_timeout)
            c.request("GET", "/site", headers={"Host": "web"})
            r = c.getresponse()
            body = r.read()
            if r.status == 200:
                ok, site = True, body.decode(errors="replace").strip()
            if r.will_close:
                c.close()
                c = None
        except (OSError, http.client.HTTPException):
            if c is not None:
                c.close()
            c = None
        log.append((mode, t0, now(), ok, site))
        done.add((mode, t0))
        time.sleep(a.pace_ms / 1000)


def health(app, site, after):
    """First poll after `after` where the site is down (False) / healthy (True) for app: its time, or None."""
    def f(want):
        for t, apps in polls[-3000:]:  # the last minute: every wait is shorter
            if t >= after and (apps.get(app, {}).get(site, False) == want):
                return t
        return None
    return f


def streak_end(mode, dead, after, died, i_started, i_log):
    """Once STREAK requests in a row (in the order sent) sent after the site was dead were answered, all by surviving
    sites, and every request sent before the last of them has ended: (time the streak's first request ended, failed,
    requests, longest request, failed of those sent before the site was dead); else None. Requests in flight at the
    fault are counted but are not part of the run (with the L4 client's open loop, one lost with its site holds up
    nothing). Failed and longest cover every request that ended after the fault and was sent before the streak's end."""
    results = {(m, t0): (t1, ok, site) for m, t0, t1, ok, site in log[i_log:] if m == mode}
    sent = [k for k in started[i_started:] if k[0] == mode]
    run = 0
    first = None
    last_start = None
    for m, t0 in sent:
        if t0 < died:
            continue
        r = results.get((m, t0))
        if r is None:
            return None  # not answered yet
        t1, ok, site = r
        if not ok or site == dead:
            run = 0  # failed, or answered by the dying site before the fault reached it (a success, not the survivors')
            continue
        if run == 0:
            first = t1
        run += 1
        if run >= a.streak:
            last_start = t0
            break
    if last_start is None:
        return None
    if any(k not in done for k in sent if k[1] <= last_start):
        return None  # an earlier request (in flight at the fault) has not ended yet
    window = [(k[1], results[k]) for k in sent if k[1] <= last_start and k in results and results[k][0] >= after]
    failed = sum(1 for _, r in window if not r[1])
    inflight = sum(1 for t0, r in window if not r[1] and t0 < died)
    slowest = max((r[0] - t0 for t0, r in window), default=0.0)
    return first, failed, len(window), slowest, inflight


def first_from(mode, site, after, i_log):
    """End of the first request sent after `after` that the site answered (one in flight through a veth that was down
    can still be answered by it once it is up: that is not the site back in rotation)."""
    for m, t0, t1, ok, s in sorted(log[i_log:], key=lambda x: x[2]):
        if m == mode and t0 >= after and ok and s == site:
            return t1
    return None


def wait_for(cond, timeout):
    deadline = now() + timeout
    while now() < deadline:
        v = cond()
        if v is not None:
            return v
        time.sleep(0.02)
    return None


def out(key, variant, value):
    print(f"{key}\t{variant}\t{value}", flush=True)


def steady(sites):
    """Every site healthy for every app in the API, and each client has had 5 successes since."""
    def latest_all_healthy():
        if not polls:
            return None
        t, apps = polls[-1]
        return t if all(apps.get(app, {}).get(s, False) for app in modes.values() for s in sites) else None

    t = wait_for(latest_all_healthy, a.timeout * 2)
    if t is None:
        raise SystemExit(f"failover.py: the sites {sites} are not all healthy in /api/global-apps/v1: {polls[-1:]}")
    for mode in modes:
        if wait_for(lambda: (sum(1 for m, t0, _, ok, _ in log[-500:] if m == mode and t0 >= t and ok) >= 5) or None, a.timeout) is None:
            raise SystemExit(f"failover.py: {mode} requests do not succeed before the fault")


def fault(kind, site, do, undo, sites):
    """do() injects the fault and returns when the site is dead (for a kill: the process has exited, its sockets closed)."""
    steady(sites)
    # The API shows a site healthy right after a probe round, so without this the fault would always strike just after
    # one; a random wait of up to one probe interval (1 s, jittered to 1.2 s) gives it a random phase.
    time.sleep(random.uniform(0, 1.2))
    i_log = len(log)
    t0 = now()
    i_started = len(started)
    while i_started > 0 and started[i_started - 1][1] > t0 - a.request_timeout - 1:
        i_started -= 1  # back to the oldest request that can still be in flight
    do()
    died = now()
    out("fo.dead_ms", kind, round((died - t0) * 1000, 1))
    for mode, app in modes.items():
        r = wait_for(lambda: streak_end(mode, site, t0, died, i_started, i_log), a.timeout)
        if r is None:
            out("fo.recover_ms_timeout", f"{kind}-{mode}", 1)
        else:
            out("fo.recover_ms", f"{kind}-{mode}", round((r[0] - t0) * 1000, 1))
            out("fo.failed", f"{kind}-{mode}", r[1])
            out("fo.requests", f"{kind}-{mode}", r[2])
            out("fo.slowest_ms", f"{kind}-{mode}", round(r[3] * 1000, 1))
            out("fo.failed_inflight", f"{kind}-{mode}", r[4])
        d = wait_for(lambda: health(app, site, t0)(False), a.timeout)
        out("fo.down_ms" if d is not None else "fo.down_ms_timeout", f"{kind}-{mode}", 1 if d is None else round((d - t0) * 1000, 1))
    i_log = len(log)
    t1 = now()
    undo()
    for mode, app in modes.items():
        b = wait_for(lambda: first_from(mode, site, t1, i_log), a.timeout * 2)
        out("fo.back_ms" if b is not None else "fo.back_ms_timeout", f"{kind}-{mode}", 1 if b is None else round((b - t1) * 1000, 1))
        h = wait_for(lambda: health(app, site, t1)(True), a.timeout * 2)
        out("fo.back_api_ms" if h is not None else "fo.back_api_ms_timeout", f"{kind}-{mode}", 1 if h is None else round((h - t1) * 1000, 1))


def stop_children(*_):
    for c in children:
        if c.poll() is None:
            c.terminate()
    for c in children:
        try:
            c.wait(10)
        except subprocess.TimeoutExpired:
            c.kill()
            c.wait()


def on_term(*_):
    raise SystemExit(143)


signal.signal(signal.SIGTERM, on_term)
threads = [threading.Thread(target=poller, daemon=True)]
for mode, app in modes.items():
    threads.append(threading.Thread(target=l4_client if mode == "l4" else http_client, args=(mode, port_of(app)), daemon=True))
for t in threads:
    t.start()

victim = a.kill_pid
sites = sorted({a.kill_site, a.veth_site})
try:
    for rep in range(a.reps):
        def kill():
            os.kill(victim, signal.SIGKILL)
            # Dead once every thread has exited (the leader a zombie, no other thread left, or the process reaped): the
            # last thread to exit closes its descriptors, so its sockets are closed by then. (The leader alone can be a
            # zombie while other threads are still exiting.)
            while True:
                try:
                    with open(f"/proc/{victim}/stat") as st:
                        state = st.read().rsplit(")", 1)[1].split()[0]
                    if state in ("Z", "X") and os.listdir(f"/proc/{victim}/task") == [str(victim)]:
                        return
                except (FileNotFoundError, ProcessLookupError):
                    return
                time.sleep(0.0005)

        def restart():
            global victim
            logf = open(a.restart_log, "ab")
            c = subprocess.Popen(shlex.split(a.restart), stdout=logf, stderr=subprocess.STDOUT)
            children.append(c)
            victim = c.pid

        fault("kill", a.kill_site, kill, restart, sites)
        fault("veth", a.veth_site, lambda: subprocess.run(shlex.split(a.veth_down), check=True),
              lambda: subprocess.run(shlex.split(a.veth_up), check=True), sites)
        print(f"rep {rep + 1} done", file=sys.stderr, flush=True)
    for mode in modes:
        n = sum(1 for m, *_ in log if m == mode)
        out("fo.total_requests", mode, n)
        out("fo.total_failed", mode, sum(1 for m, _, _, ok, _ in log if m == mode and not ok))
finally:
    stop.set()
    stop_children()
