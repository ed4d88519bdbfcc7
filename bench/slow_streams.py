#!/usr/bin/env python3
"""Many concurrent slow SSE streams through one server, and the server's memory, for bench/run.

Opens N streaming chat completions (one connection each, `Connection: close`), spread evenly
over RAMP seconds, reads every one to its end and checks it is a 200 ending in `data: [DONE]`.
Meanwhile samples the resident memory (VmRSS from /proc/PID/status, summed over PIDS) every
100 ms. Before the first connection it samples the idle RSS.

A stream is *open* from its response head (status 200) to its end; the peak RSS is the highest
sample between the first connection and the last stream's end, and `peak_all_open_kb` the
highest while all N were open at once.

usage: slow_streams.py HOST:PORT KEY PATH BODY N RAMP TIMEOUT PID [PID ...]
prints one JSON object (see `result` in main)
"""
import asyncio
import json
import sys
import time

SAMPLE_EVERY = 0.1


def rss_kb(pids):
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
                        break
        except OSError:
            pass
    return total


class Run:
    def __init__(self, n):
        self.n = n
        self.open = 0
        self.open_peak = 0
        self.completed = 0
        self.errors = {}
        self.durations = []

    def error(self, kind):
        self.errors[kind] = self.errors.get(kind, 0) + 1


async def read_body(reader, headers):
    """The response body, de-chunked when it is chunked."""
    if "chunked" in headers.get("transfer-encoding", ""):
        body = bytearray()
        while True:
            size = int((await reader.readline()).split(b";", 1)[0], 16)
            if size == 0:
                while (await reader.readline()) not in (b"\r\n", b""):
                    pass
                return bytes(body)
            body += (await reader.readexactly(size + 2))[:-2]
    if "content-length" in headers:
        return await reader.readexactly(int(headers["content-length"]))
    return await reader.read()


async def one_stream(run, i, host, port, request, ramp, timeout):
    await asyncio.sleep(i * ramp / run.n)
    opened = False
    writer = None
    start = time.monotonic()
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(host, port)
            writer.write(request)
            await writer.drain()
            status = int((await reader.readline()).split(b" ", 2)[1])
            headers = {}
            while (line := await reader.readline()) not in (b"\r\n", b""):
                name, _, value = line.decode("latin-1").partition(":")
                headers[name.strip().lower()] = value.strip().lower()
            if status != 200:
                run.error(f"status {status}")
                return
            opened = True
            run.open += 1
            run.open_peak = max(run.open_peak, run.open)
            body = await read_body(reader, headers)
            if body.rstrip().endswith(b"data: [DONE]"):
                run.completed += 1
                run.durations.append(time.monotonic() - start)
            else:
                run.error("incomplete stream")
    except TimeoutError:
        run.error("timeout")
    except (OSError, asyncio.IncompleteReadError, ValueError, IndexError) as e:
        run.error(type(e).__name__)
    finally:
        if opened:
            run.open -= 1
        if writer is not None:
            writer.close()


async def sample(run, pids, done, out):
    while not done.is_set():
        kb = rss_kb(pids)
        out["peak_kb"] = max(out["peak_kb"], kb)
        if run.open == run.n:
            out["peak_all_open_kb"] = max(out["peak_all_open_kb"], kb)
            out["all_open_samples"] += 1
        try:
            await asyncio.wait_for(done.wait(), SAMPLE_EVERY)
        except TimeoutError:
            pass


async def main():
    addr, key, path, body = sys.argv[1:5]
    n, ramp, timeout = int(sys.argv[5]), float(sys.argv[6]), float(sys.argv[7])
    pids = [int(p) for p in sys.argv[8:]]
    host, port = addr.rsplit(":", 1)
    request = (
        f"POST {path} HTTP/1.1\r\nHost: {addr}\r\ncontent-type: application/json\r\n"
        f"api-key: {key}\r\ncontent-length: {len(body.encode())}\r\nconnection: close\r\n\r\n"
    ).encode() + body.encode()
    idle_kb = rss_kb(pids)
    run = Run(n)
    done = asyncio.Event()
    samples = {"peak_kb": 0, "peak_all_open_kb": 0, "all_open_samples": 0}
    sampler = asyncio.create_task(sample(run, pids, done, samples))
    start = time.monotonic()
    await asyncio.gather(*(one_stream(run, i, host, int(port), request, ramp, timeout) for i in range(n)))
    done.set()
    await sampler
    durations = sorted(run.durations)
    result = {
        "streams": n,
        "open_peak": run.open_peak,
        "completed": run.completed,
        "errors": sum(run.errors.values()),
        "error_kinds": run.errors,
        "idle_kb": idle_kb,
        "peak_kb": samples["peak_kb"],
        "peak_all_open_kb": samples["peak_all_open_kb"] or None,
        "all_open_s": round(samples["all_open_samples"] * SAMPLE_EVERY, 1),
        "stream_p50_s": round(durations[len(durations) // 2], 2) if durations else None,
        "wall_s": round(time.monotonic() - start, 1),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    asyncio.run(main())
