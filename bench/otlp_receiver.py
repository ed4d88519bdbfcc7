#!/usr/bin/env python3
"""A minimal OTLP/HTTP receiver for bench/run: answers 200 to every export and counts them.

Accepts POST /v1/traces and /v1/metrics in `http/protobuf` (gzip or not), counts requests,
bytes, spans, distinct traces and metrics by walking the protobuf wire format (no generated
code needed), and answers GET /stats with the counts as JSON. Anything else gets 404; a body that does not parse
is answered 400 and counted as malformed, so a broken exporter shows in the report.

usage: otlp_receiver.py PORT
"""
import gzip
import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

# Field numbers from opentelemetry-proto: the path from the export request down to the items.
#   ExportTraceServiceRequest.resource_spans=1 / ResourceSpans.scope_spans=2 / ScopeSpans.spans=2
#   ExportMetricsServiceRequest.resource_metrics=1 / ResourceMetrics.scope_metrics=2 / ScopeMetrics.metrics=2
ITEM_PATH = {"/v1/traces": (1, 2, 2), "/v1/metrics": (1, 2, 2)}
ITEM_NAME = {"/v1/traces": "spans", "/v1/metrics": "metrics"}


class Malformed(ValueError):
    pass


def varint(buf, pos):
    value = shift = 0
    while True:
        if pos >= len(buf):
            raise Malformed("truncated varint")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7


def fields(buf):
    """Yields (field number, payload) of the length-delimited fields; skips the others."""
    pos = 0
    while pos < len(buf):
        key, pos = varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            _, pos = varint(buf, pos)
        elif wire == 1:
            pos += 8
        elif wire == 5:
            pos += 4
        elif wire == 2:
            length, pos = varint(buf, pos)
            if pos + length > len(buf):
                raise Malformed("truncated field")
            yield number, buf[pos:pos + length]
            pos += length
        else:
            raise Malformed(f"unsupported wire type {wire}")
    if pos != len(buf):
        raise Malformed("trailing bytes")


def items(buf, path):
    """The payloads found by following `path` (field numbers) down from `buf`."""
    if not path:
        yield buf
        return
    for number, payload in fields(buf):
        if number == path[0]:
            yield from items(payload, path[1:])


def trace_id(span):
    """Span.trace_id (field 1): spans of one sampled request share it."""
    return next((payload for number, payload in fields(span) if number == 1), None)


class Counts:
    def __init__(self):
        self.lock = threading.Lock()
        self.by_path = {p: {"requests": 0, "bytes": 0, ITEM_NAME[p]: 0} for p in ITEM_PATH}
        self.trace_ids = set()
        self.malformed = 0
        self.other = 0

    def snapshot(self):
        with self.lock:
            counts = {p: dict(v) for p, v in self.by_path.items()}
            counts["/v1/traces"]["traces"] = len(self.trace_ids)
            return {**counts, "malformed": self.malformed, "other": self.other}


COUNTS = Counts()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length") or 0))
        path = self.path.split("?", 1)[0]
        if path not in ITEM_PATH:
            with COUNTS.lock:
                COUNTS.other += 1
            return self.answer(404, b"")
        try:
            if self.headers.get("content-encoding", "").lower() == "gzip":
                body = gzip.decompress(body)
            found = list(items(body, ITEM_PATH[path]))
            traces = {trace_id(span) for span in found} if path == "/v1/traces" else set()
        except (Malformed, OSError, EOFError):
            with COUNTS.lock:
                COUNTS.malformed += 1
            return self.answer(400, b"")
        with COUNTS.lock:
            counts = COUNTS.by_path[path]
            counts["requests"] += 1
            counts["bytes"] += len(body)
            counts[ITEM_NAME[path]] += len(found)
            COUNTS.trace_ids.update(traces)
        # An empty Export*ServiceResponse: no partial success to report.
        self.answer(200, b"", "application/x-protobuf")

    def do_GET(self):
        if self.path != "/stats":
            return self.answer(404, b"")
        self.answer(200, json.dumps(COUNTS.snapshot()).encode(), "application/json")

    def answer(self, status, body, content_type="text/plain"):
        self.send_response(status)
        self.send_header("content-type", content_type)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def main():
    server = ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler)
    server.daemon_threads = True
    server.serve_forever()


if __name__ == "__main__":
    main()
