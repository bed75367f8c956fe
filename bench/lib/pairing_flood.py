"""Legitimate PSK pairings, paced, from several source addresses (bench/pairing-flood).

pairing_flood.py --url http://HUB:8080/pairing --psk PSK --sources A,B,... --seconds S [--rate R] [--prefix legit]
One thread per source address; each pairs its own peer name (PREFIX-<n>, with an X25519 key derived from the name and PSK, the same on every run) R times a second
(the hub's per-address rate limit is 2/s after a burst of 10), each time over a new connection as a spoke does. The
request is sealed with the PSK exactly as the spoke seals it (AES-128-GCM, 12-byte nonce first, the key is the PSK's
first 16 bytes padded with the reference's constant); an answer counts as a pairing only when it is 200, opens with
the PSK and carries an assigned IP and the hub's key. Prints one line per request: "<status> <ms>" (status "ok" for a
verified pairing, else the HTTP status or "error"), then exits.
"""
import argparse
import base64
import hashlib
import http.client
import json
import os
import threading
import time
import urllib.parse

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

PAD = bytes.fromhex("15777fc294f9a7ef2b575553537c1085")


def derive_key(psk):
    b = psk.encode()
    n = min(len(b), 16)
    return b[:n] + PAD[:16 - n]


def pair_once(url, source, aes, name, public_key):
    u = urllib.parse.urlsplit(url)
    plain = json.dumps({"name": name, "wireguard": {"public_key": public_key}, "metadata": {}}, separators=(",", ":")).encode()
    nonce = os.urandom(12)
    body = nonce + aes.encrypt(nonce, plain, None)
    t0 = time.monotonic()
    try:
        c = http.client.HTTPConnection(u.hostname, u.port, timeout=10, source_address=(source, 0))
        c.request("POST", u.path, body=body, headers={"Content-Type": "application/octet-stream"})
        r = c.getresponse()
        answer = r.read()
        c.close()
    except OSError:
        return "error", (time.monotonic() - t0) * 1000
    ms = (time.monotonic() - t0) * 1000
    if r.status != 200:
        return str(r.status), ms
    try:
        reply = json.loads(aes.decrypt(answer[:12], answer[12:], None))
        ok = bool(reply["assigned_ip"]) and bool(reply["wireguard"]["public_key"])
    except Exception:  # an answer that does not open with the PSK or is not the pairing response
        ok = False
    return ("ok" if ok else "bad_answer"), ms


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--url", required=True)
    p.add_argument("--psk", required=True)
    p.add_argument("--sources", required=True)
    p.add_argument("--seconds", type=float, required=True)
    p.add_argument("--rate", type=float, default=2.0)
    p.add_argument("--prefix", default="legit")
    a = p.parse_args()
    aes = AESGCM(derive_key(a.psk))
    lines, lock = [], threading.Lock()
    end = time.monotonic() + a.seconds

    def run(i, source):
        name = f"{a.prefix}-{i}"
        # the same key for the same name on every run against this hub (a re-pair with a new key is refused: 409)
        private = X25519PrivateKey.from_private_bytes(hashlib.sha256(f"{a.psk}/{name}".encode()).digest())
        key = base64.b64encode(private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)).decode()
        due = time.monotonic()
        while due < end:
            status, ms = pair_once(a.url, source, aes, name, key)
            with lock:
                lines.append(f"{status} {ms:.2f}")
            due += 1 / a.rate
            time.sleep(max(0.0, due - time.monotonic()))

    threads = [threading.Thread(target=run, args=(i, s)) for i, s in enumerate(a.sources.split(","))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print("\n".join(lines), flush=True)


if __name__ == "__main__":
    main()
