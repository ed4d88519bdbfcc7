"""Client traffic for the picture: open-loop calls (Poisson arrivals at a rate that drifts
over the run, so the panels look like a day's traffic and not a flat benchmark) from two client
keys to two pools, JSON and streamed, plus calls with a wrong key.

Every call is a plain HTTP/1.1 request on a kept-alive connection of its worker thread.
"""

from __future__ import annotations

import http.client
import json
import math
import random
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable
from urllib.parse import urlsplit

from faults import FaultTimeline
from stack import ClientKeys

API_VERSION = "2024-10-21"
# team-b's requests per minute before and during its burst; its limit sits between the two
# (see `team_b_limit`), so the burst is refused with 429s by the key's own limit.
TEAM_B_RATE = 2.0
TEAM_B_BURST = (0.65, 0.85)
TEAM_B_BURST_FACTOR = 4.0


def team_b_limit(duration_s: float) -> int:
    """A requests-per-minute limit that team-b's steady rate stays under and its burst goes
    over, also in a run shorter than the limit's minute."""
    return int(TEAM_B_RATE * min(60.0, duration_s) * 1.3)


def drift(progress: float, phase: float) -> float:
    """A slow swell of ±30 % over the run."""
    return 1.0 + 0.3 * math.sin(2 * math.pi * (1.5 * progress + phase))


@dataclass(frozen=True)
class Flow:
    """One kind of call: who calls which pool, how often, how many of them stream."""

    name: str
    key: str
    pool: str
    stream_share: float
    rate: Callable[[float], float]  # progress of the run (0..1) → calls per second


def flows(keys: ClientKeys) -> list[Flow]:
    def team_b_rate(progress: float) -> float:
        start, end = TEAM_B_BURST
        return TEAM_B_RATE * (TEAM_B_BURST_FACTOR if start <= progress < end else 1.0)

    return [
        Flow("team-a gpt-4o", keys.team_a, "gpt-4o", 0.4, lambda p: 6.0 * drift(p, 0.0)),
        Flow("team-a gpt-4o-mini", keys.team_a, "gpt-4o-mini", 0.3, lambda p: 3.0 * drift(p, 0.3)),
        Flow("team-b gpt-4o-mini", keys.team_b, "gpt-4o-mini", 0.5, team_b_rate),
        Flow("wrong key", keys.wrong, "gpt-4o", 0.0, lambda p: 0.6),
    ]


class Caller:
    """Sends calls from worker threads, one kept-alive connection per thread, and counts the
    statuses (a transport failure counts as its exception's name)."""

    def __init__(self, base_url: str) -> None:
        url = urlsplit(base_url)
        self.host, self.port = url.hostname, url.port
        self.local = threading.local()
        self.lock = threading.Lock()
        self.outcomes: Counter[str] = Counter()

    def call(self, flow: Flow, stream: bool, max_tokens: int) -> None:
        body = {
            "messages": [{"role": "user", "content": "Summarise the incident in one line."}],
            "max_tokens": max_tokens,
        }
        if stream:
            body |= {"stream": True, "stream_options": {"include_usage": True}}
        path = f"/openai/deployments/{flow.pool}/chat/completions?api-version={API_VERSION}"
        headers = {"api-key": flow.key, "content-type": "application/json"}
        try:
            status = self._send(path, json.dumps(body).encode(), headers)
            outcome = str(status)
        except (OSError, http.client.HTTPException) as error:
            self.local.connection = None
            outcome = type(error).__name__
        with self.lock:
            self.outcomes[f"{flow.name} {'stream' if stream else 'json'} {outcome}"] += 1

    def _send(self, path: str, body: bytes, headers: dict[str, str]) -> int:
        connection = getattr(self.local, "connection", None)
        if connection is not None:
            try:
                return self._exchange(connection, path, body, headers)
            except (ConnectionError, http.client.RemoteDisconnected):
                # The server closed the kept-alive connection between two calls: send again on
                # a new one, as HTTP clients (and the OpenAI SDKs) do.
                connection.close()
        connection = http.client.HTTPConnection(self.host, self.port, timeout=30)
        self.local.connection = connection
        return self._exchange(connection, path, body, headers)

    def _exchange(
        self,
        connection: http.client.HTTPConnection,
        path: str,
        body: bytes,
        headers: dict[str, str],
    ) -> int:
        connection.request("POST", path, body=body, headers=headers)
        response = connection.getresponse()
        response.read()  # the whole body, to the stream's end
        if response.will_close:
            connection.close()
            self.local.connection = None
        return response.status


def drive(
    base_url: str,
    keys: ClientKeys,
    faults: FaultTimeline,
    duration_s: float,
    seed: int = 14,
) -> Counter[str]:
    """Runs the load and the fault timeline for `duration_s`; returns the outcome counts."""
    rng = random.Random(seed)
    caller = Caller(base_url)
    all_flows = flows(keys)
    start = time.monotonic()
    next_at = {flow.name: start for flow in all_flows}
    with ThreadPoolExecutor(max_workers=48, thread_name_prefix="call") as pool:
        while (now := time.monotonic()) < start + duration_s:
            progress = (now - start) / duration_s
            faults.tick(progress)
            for flow in all_flows:
                while next_at[flow.name] <= now:
                    stream = rng.random() < flow.stream_share
                    pool.submit(caller.call, flow, stream, rng.randint(16, 48))
                    next_at[flow.name] += rng.expovariate(flow.rate(progress))
            time.sleep(max(0.0, min(0.05, min(next_at.values()) - time.monotonic())))
        faults.tick(1.0)
    return caller.outcomes
