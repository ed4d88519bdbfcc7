#!/usr/bin/env python3
"""Time to first byte of a streaming chat completion, per target, for bench/run.

Sends N sequential SSE requests to every target over one keep-alive connection each,
interleaving the targets request by request (order rotated every request), after a few
discarded warm-up requests. Measures, from just before the request is written:
  head  - status line and headers parsed,
  first - first body bytes (the first SSE chunk),
and checks every response is 200 and ends with `data: [DONE]`.

usage: ttfb.py N PATH BODY NAME=HOST:PORT=KEY [NAME=HOST:PORT=KEY ...]
prints one JSON object: {name: {n, errors, head_p50_us, first_p50_us, first_p90_us}}
"""
import http.client
import json
import statistics
import sys
import time

WARMUP = 10


def percentile(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q / 100 * (len(values) - 1))))]


class Target:
    def __init__(self, spec):
        self.name, addr, self.key = spec.split("=", 2)
        self.host, port = addr.rsplit(":", 1)
        self.port = int(port)
        self.conn = None
        self.head, self.first, self.errors = [], [], 0

    def one(self, path, body, record):
        if self.conn is None:
            self.conn = http.client.HTTPConnection(self.host, self.port, timeout=10)
            self.conn.connect()
        headers = {"content-type": "application/json", "api-key": self.key}
        try:
            t0 = time.perf_counter_ns()
            self.conn.request("POST", path, body=body, headers=headers)
            resp = self.conn.getresponse()
            t_head = time.perf_counter_ns()
            chunk = resp.read1(65536)
            t_first = time.perf_counter_ns()
            rest = chunk + resp.read()
            ok = resp.status == 200 and rest.rstrip().endswith(b"data: [DONE]")
        except (OSError, http.client.HTTPException):
            ok = False
        if not ok:
            self.errors += 1
            self.conn.close()
            self.conn = None
            return
        if record:
            self.head.append((t_head - t0) / 1000)
            self.first.append((t_first - t0) / 1000)


def main():
    n, path, body = int(sys.argv[1]), sys.argv[2], sys.argv[3].encode()
    targets = [Target(spec) for spec in sys.argv[4:]]
    for i in range(WARMUP + n):
        k = i % len(targets)
        for t in targets[k:] + targets[:k]:
            t.one(path, body, record=i >= WARMUP)
    out = {}
    for t in targets:
        out[t.name] = {
            "n": len(t.first),
            "errors": t.errors,
            "head_p50_us": statistics.median(t.head) if t.head else None,
            "first_p50_us": statistics.median(t.first) if t.first else None,
            "first_p90_us": percentile(t.first, 90) if t.first else None,
        }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
