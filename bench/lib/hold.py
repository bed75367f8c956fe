"""Holds N idle proxied connections: bench/run measures the proxy's memory while they are open.

hold.py HOST PORT N READY_FILE RELEASE_FILE [PATH]
Opens N connections, sends one keep-alive HTTP GET PATH (default /1k) on each and reads the answer (so every
connection has carried data both ways), writes READY_FILE, then waits (at most 120 s) until RELEASE_FILE exists, and closes them.
"""
import os
import socket
import sys
import time

host, port, count, ready, release = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]
path = sys.argv[6] if len(sys.argv) > 6 else "/1k"
REQUEST = f"GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n".encode()


def read_response(s):
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(65536)
        if not chunk:
            raise RuntimeError("connection closed before the response headers")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    while len(body) < length:
        chunk = s.recv(65536)
        if not chunk:
            raise RuntimeError("connection closed in the response body")
        body += chunk
    if not head.startswith(b"HTTP/1.1 200"):
        raise RuntimeError("unexpected response: " + head.split(b"\r\n")[0].decode(errors="replace"))


socks = []
try:
    for _ in range(count):
        s = socket.create_connection((host, port), timeout=10)
        s.sendall(REQUEST)
        socks.append(s)
    for s in socks:
        s.settimeout(60)
        read_response(s)
    with open(ready, "w") as f:
        f.write(str(len(socks)))
    deadline = time.monotonic() + 120
    while not os.path.exists(release) and time.monotonic() < deadline:
        time.sleep(0.05)
finally:
    for s in socks:
        s.close()
