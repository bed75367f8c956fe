"""Convergence with the Kubernetes source through the real hub and spoke (bench/run, section "kube").

kube.py toggle --api URL --offer-kubeconfig F --consume-kubeconfig F --service NS/NAME --generated NS/NAME
               --app NAME --runs N [--trigger patch|kubectl]
    N times: annotate the offering cluster's Service with wormhole.glothriel.github.com/exposed=yes and time until it
    is reachable on the consuming side: listed in the consumer's /api/apps (by app name) AND the generated Service
    exists in the consumer's cluster (GET from its API) AND an HTTP GET /1k through that Service's targetPort on
    127.0.0.1 answers 200 with 1,024 bytes. Then annotate exposed=no and time until it is gone: not listed AND the
    generated Service is gone (404) AND the port refuses connections.
    --trigger patch: the clock starts just before one PATCH (application/merge-patch+json, the body kubectl annotate
    sends) on a kept-alive HTTPS connection, i.e. at the API write; the product's convergence alone.
    --trigger kubectl: the clock starts just before `kubectl annotate --overwrite` starts, as a user sees it; also
    prints kubectl's own wall time (start to exit) as kubectl_ms.
    Prints "expose MS", "expose_listed MS", "expose_service MS", "unexpose MS", "unexpose_unlisted MS",
    "unexpose_service MS" lines (and *_timeout 1 on a 15 s timeout).
Runs in the consumer's network namespace (its admin API, its cluster's API and its listeners are local there); the
offering cluster's API must be reachable from there too (bench/run makes it listen on the veth address).
"""
import argparse
import base64
import http.client
import json
import random
import re
import ssl
import subprocess
import sys
import time
import urllib.parse
import urllib.request

from converge import reachable, refused, wait

ANNOTATION = "wormhole.glothriel.github.com/exposed"


class Api:
    """A kept-alive HTTPS connection to one API server, trusting exactly the CA of its kubeconfig."""

    def __init__(self, kubeconfig):
        self.kubeconfig = kubeconfig
        text = open(kubeconfig).read()
        url = urllib.parse.urlparse(re.search(r"server:\s*(\S+)", text).group(1))
        self.host, self.port = url.hostname, url.port or 443
        self.token = re.search(r"token:\s*(\S+)", text).group(1).strip("\"'")
        ca = base64.b64decode(re.search(r"certificate-authority-data:\s*(\S+)", text).group(1)).decode()
        self.ctx = ssl.create_default_context(cadata=ca)
        self.conn = None

    def request(self, method, path, body=None, content_type=None):
        headers = {"Authorization": f"Bearer {self.token}", "Accept": "application/json"}
        if content_type:
            headers["Content-Type"] = content_type
        for attempt in (0, 1):
            if self.conn is None:
                self.conn = http.client.HTTPSConnection(self.host, self.port, context=self.ctx, timeout=5)
            try:
                self.conn.request(method, path, body=body, headers=headers)
                r = self.conn.getresponse()
                data = r.read()
                return r.status, data
            except (OSError, http.client.HTTPException) as e:
                self.conn.close()
                self.conn = None
                if attempt:
                    raise OSError(f"{method} {path}: {e!r}") from e

    def get(self, ns, name):
        status, data = self.request("GET", f"/api/v1/namespaces/{ns}/services/{name}")
        return json.loads(data) if status == 200 else None

    def annotate(self, ns, name, value):
        body = json.dumps({"metadata": {"annotations": {ANNOTATION: value}}})
        status, data = self.request("PATCH", f"/api/v1/namespaces/{ns}/services/{name}", body, "application/merge-patch+json")
        if status != 200:
            raise RuntimeError(f"PATCH {ns}/{name} answered {status}: {data[:300]!r}")


def listed(api, app):
    with urllib.request.urlopen(api, timeout=2) as r:
        return any(x["name"] == app for x in json.load(r))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["toggle"])
    p.add_argument("--api", required=True)
    p.add_argument("--offer-kubeconfig", required=True)
    p.add_argument("--consume-kubeconfig", required=True)
    p.add_argument("--service", required=True)
    p.add_argument("--generated", required=True)
    p.add_argument("--app", required=True)
    p.add_argument("--runs", type=int, default=50)
    p.add_argument("--trigger", choices=["patch", "kubectl"], default="patch")
    a = p.parse_args()
    offer, consume = Api(a.offer_kubeconfig), Api(a.consume_kubeconfig)
    svc_ns, svc = a.service.split("/", 1)
    gen_ns, gen = a.generated.split("/", 1)

    def trigger(value):
        if a.trigger == "patch":
            offer.annotate(svc_ns, svc, value)
            return
        t = time.monotonic()
        subprocess.run(["kubectl", "--kubeconfig", offer.kubeconfig, "annotate", "svc", svc, "-n", svc_ns, "--overwrite",
                        f"{ANNOTATION}={value}"], check=True, stdout=subprocess.DEVNULL)
        print(f"kubectl_ms {(time.monotonic() - t) * 1000:.2f}", flush=True)

    for _ in range(a.runs):
        seen, state = {}, {}

        def exposed():
            now = time.monotonic()
            if "listed" not in seen and listed(a.api, a.app):
                seen["listed"] = now
            if "service" not in seen:
                s = consume.get(gen_ns, gen)
                if s is not None:
                    seen["service"] = now
                    state["port"] = int(s["spec"]["ports"][0]["targetPort"])
            return len(seen) == 2 and reachable(state["port"])

        t0 = time.monotonic()
        trigger("yes")
        if not wait(exposed, 15):
            print("expose_timeout 1", flush=True)
            trigger("no")
            time.sleep(2)
            continue
        print(f"expose {(time.monotonic() - t0) * 1000:.2f}", flush=True)
        for k in ("listed", "service"):
            print(f"expose_{k} {(seen[k] - t0) * 1000:.2f}", flush=True)
        time.sleep(random.uniform(0.05, 0.25))

        seen = {}

        def gone():
            now = time.monotonic()
            if "unlisted" not in seen and not listed(a.api, a.app):
                seen["unlisted"] = now
            if "service" not in seen and consume.get(gen_ns, gen) is None:
                seen["service"] = now
            return len(seen) == 2 and refused(state["port"])

        t0 = time.monotonic()
        trigger("no")
        if not wait(gone, 15):
            print("unexpose_timeout 1", flush=True)
            continue
        print(f"unexpose {(time.monotonic() - t0) * 1000:.2f}", flush=True)
        for k in ("unlisted", "service"):
            print(f"unexpose_{k} {(seen[k] - t0) * 1000:.2f}", flush=True)
        time.sleep(random.uniform(0.05, 0.25))


if __name__ == "__main__":
    sys.exit(main())
