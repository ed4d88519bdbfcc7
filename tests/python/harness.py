"""Harness for the openai-SDK compatibility tests: real `sluice` processes on ephemeral ports.

One session starts three mock upstreams (`east` and `west` speak Azure OpenAI, `oai` speaks
OpenAI) and one proxy over them, from a YAML config written to a temp dir:

| pool          | backends (mock)                                  | used for                     |
| ------------- | ------------------------------------------------ | ---------------------------- |
| gpt-4o        | east (east), west (west), round robin            | the happy paths              |
| gpt-4o-mini   | oai (oai), kind openai                           | OpenAI-kind backends, 403    |
| failover      | fo-east (east) priority 0, fo-west (west) prio 1 | retry after a 500            |
| failover-stream | fs-east (east) prio 0, fs-west (west) prio 1   | streamed retry after a 500   |
| ratelimited   | rl-east (east), rl-west (west)                   | 429 with every backend down  |
| aborts        | ab-east (east)                                   | a stream cut off mid-way     |
| idle          | id-east (east), idle_timeout_ms 500              | a stream gone silent mid-way |
| missing-deployment | md-east (east) prio 0, md-west (west) prio 1 | failover on DeploymentNotFound |

Backend state (cooldowns, ejections) is per pool, and mock faults are filtered by deployment,
so the fault tests use their own pools and never disturb `gpt-4o`. Faults are cleared around
every test.

`SLUICE_BIN` names the binary (default `target/debug/sluice` under the repo root).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
SLUICE_BIN = Path(os.environ.get("SLUICE_BIN", REPO_ROOT / "target" / "debug" / "sluice"))
if not SLUICE_BIN.is_absolute():
    SLUICE_BIN = REPO_ROOT / SLUICE_BIN

# Loopback only: never let an HTTP(S)_PROXY from the environment see test traffic.
os.environ["NO_PROXY"] = os.environ["no_proxy"] = "127.0.0.1,localhost"

START_TIMEOUT_S = 15.0

CLIENT_KEY = "sk-sluice-team-a-client-key-0123456789"
OTHER_CLIENT_KEY = "sk-sluice-team-b-client-key-9876543210"
WRONG_KEY = "sk-sluice-not-a-key-at-all-000000000000"
BACKEND_KEYS = {
    "east": "upstream-east-key-aaaaaaaaaaaaaaaa",
    "west": "upstream-west-key-bbbbbbbbbbbbbbbb",
    "oai": "upstream-oai-key-cccccccccccccccccc",
}

_NO_PROXY_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def http_json(method: str, url: str, body: Any = None, timeout: float = 5.0) -> tuple[int, Any]:
    """One HTTP call with an optional JSON body; returns (status, parsed JSON or text)."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        request.add_header("content-type", "application/json")
    try:
        with _NO_PROXY_OPENER.open(request, timeout=timeout) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as error:
        status, raw = error.code, error.read()
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw.decode(errors="replace")


@dataclass
class Process:
    """A `sluice` child process whose JSON log lines are collected by a reader thread."""

    name: str
    popen: subprocess.Popen
    lines: list[dict[str, Any]] = field(default_factory=list)
    raw: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._cond = threading.Condition()
        threading.Thread(target=self._read, name=f"log-{self.name}", daemon=True).start()

    def _read(self) -> None:
        assert self.popen.stdout is not None
        for line in self.popen.stdout:
            with self._cond:
                self.raw.append(line.rstrip("\n"))
                try:
                    record = json.loads(line)
                except ValueError:
                    record = None
                if isinstance(record, dict):
                    self.lines.append(record)
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    def wait_for_field(self, key: str, timeout: float = START_TIMEOUT_S) -> str:
        """The value of the first log field `key` (e.g. `mock.addr`), waiting for it to appear."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for record in self.lines:
                    if key in record:
                        return str(record[key])
                if self.popen.poll() is not None:
                    raise RuntimeError(f"{self.name} exited ({self.popen.returncode}):\n{self.log()}")
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise RuntimeError(f"{self.name}: no `{key}` in its log:\n{self.log()}")
                self._cond.wait(min(remaining, 0.1))

    def log(self) -> str:
        return "\n".join(self.raw[-50:])

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it has not exited within 5 s."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(timeout=5)


def _inherited_env() -> dict[str, str]:
    """The caller's environment without SLUICE_* settings, which would override flag defaults."""
    return {k: v for k, v in os.environ.items() if not k.startswith("SLUICE_")}


def spawn(name: str, args: list[str], env: dict[str, str] | None = None) -> Process:
    popen = subprocess.Popen(
        [str(SLUICE_BIN), "--log-format", "json", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
        env={**_inherited_env(), "SLUICE_LOG": "info", **(env or {})},
    )
    return Process(name, popen)


@dataclass
class Mock:
    """A running `sluice mock-upstream`, driven over its `/_mock/…` endpoints."""

    name: str
    url: str
    key: str
    process: Process

    def add_fault(self, **fault: Any) -> None:
        """Arms a fault, e.g. `add_fault(kind="status", status=500, times=1)`."""
        status, body = http_json("POST", f"{self.url}/_mock/faults", fault)
        assert status == 200, f"{self.name}: fault refused: {status} {body}"

    def clear_faults(self) -> None:
        status, body = http_json("DELETE", f"{self.url}/_mock/faults")
        assert status == 200, f"{self.name}: {status} {body}"

    def requests(self) -> list[dict[str, Any]]:
        """Recorded requests: `seq`, `method`, `path`, `query`, `headers`, `body`."""
        status, body = http_json("GET", f"{self.url}/_mock/requests")
        assert status == 200, f"{self.name}: {status} {body}"
        return body["requests"]

    def stats(self) -> dict[str, Any]:
        status, body = http_json("GET", f"{self.url}/_mock/stats")
        assert status == 200, f"{self.name}: {status} {body}"
        return body


@dataclass
class Sluice:
    """The running proxy and its mocks."""

    url: str
    ops_url: str
    mocks: dict[str, Mock]
    process: Process
    config_path: Path

    def clear_faults(self) -> None:
        for mock in self.mocks.values():
            mock.clear_faults()


# Pools: name → (extra pool YAML, [(backend name, mock, kind, extra backend YAML)]).
POOLS: dict[str, tuple[str, list[tuple[str, str, str, str]]]] = {
    "gpt-4o": (
        "strategy: round_robin, retry: { max_attempts: 3 }",
        [("east", "east", "azure_openai", ""), ("west", "west", "azure_openai", "")],
    ),
    "gpt-4o-mini": ("", [("oai", "oai", "openai", "")]),
    "failover": (
        "retry: { max_attempts: 3 }",
        [("fo-east", "east", "azure_openai", "priority: 0"),
         ("fo-west", "west", "azure_openai", "priority: 1")],
    ),
    "failover-stream": (
        "retry: { max_attempts: 3 }",
        [("fs-east", "east", "azure_openai", "priority: 0"),
         ("fs-west", "west", "azure_openai", "priority: 1")],
    ),
    "ratelimited": (
        "retry: { max_attempts: 3 }",
        [("rl-east", "east", "azure_openai", ""), ("rl-west", "west", "azure_openai", "")],
    ),
    "aborts": ("", [("ab-east", "east", "azure_openai", "")]),
    "idle": ("retry: { idle_timeout_ms: 500 }", [("id-east", "east", "azure_openai", "")]),
    "missing-deployment": (
        "",
        [("md-east", "east", "azure_openai", "priority: 0"),
         ("md-west", "west", "azure_openai", "priority: 1")],
    ),
}
OTHER_KEY_POOLS = ["gpt-4o-mini"]

# Client keys with limits, on gpt-4o: id → (key, `limits` as YAML). Each test that uses one has
# it to itself, so the counts it meets are its own (counts live in the proxy: no Redis here).
LIMITED_KEYS: dict[str, tuple[str, str]] = {
    "team-rpm": ("sk-sluice-team-rpm-client-key-11111111111", "{ requests_per_minute: 1 }"),
    "team-retry": ("sk-sluice-team-retry-client-key-2222222222", "{ requests_per_minute: 1 }"),
    "team-quota": (
        "sk-sluice-team-quota-client-key-3333333333",
        "{ token_quota: { tokens: 60, period: month } }",
    ),
}


def limited_key_env(key_id: str) -> str:
    """The environment variable the proxy reads a limited key from."""
    return f"SLUICE_TEST_{key_id.upper().replace('-', '_')}_KEY"


def config_yaml(mocks: dict[str, Mock]) -> str:
    """The proxy's static config; backend keys are `env://SLUICE_TEST_<MOCK>_KEY` references."""
    lines = ["pools:"]
    for pool, (pool_extra, backends) in POOLS.items():
        lines.append(f"  - {{ name: {pool}{', ' + pool_extra if pool_extra else ''}, backends: [")
        for name, mock, kind, extra in backends:
            lines.append(
                f'      {{ name: {name}, url: "{mocks[mock].url}", kind: {kind},'
                f"{' ' + extra + ',' if extra else ''}"
                f' auth: {{ type: api_key, secret: "env://SLUICE_TEST_{mock.upper()}_KEY" }} }},'
            )
        lines.append("    ] }")
    lines += [
        "client_keys:",
        f'  - {{ id: team-a, secret: "env://SLUICE_TEST_TEAM_A_KEY", pools: [{", ".join(POOLS)}] }}',
        f'  - {{ id: team-b, secret: "env://SLUICE_TEST_TEAM_B_KEY", pools: [{", ".join(OTHER_KEY_POOLS)}] }}',
    ]
    lines += [
        f'  - {{ id: {key_id}, secret: "env://{limited_key_env(key_id)}", pools: [gpt-4o], limits: {limits} }}'
        for key_id, (_, limits) in LIMITED_KEYS.items()
    ]
    return "\n".join(lines) + "\n"


def wait_ready(ops_url: str, process: Process) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    last: Any = None
    while time.monotonic() < deadline:
        if process.popen.poll() is not None:
            raise RuntimeError(f"proxy exited ({process.popen.returncode}):\n{process.log()}")
        try:
            last = http_json("GET", f"{ops_url}/readyz", timeout=1)
            if last[0] == 200:
                return
        except OSError as error:
            last = error
        time.sleep(0.05)
    raise RuntimeError(f"proxy not ready ({last}):\n{process.log()}")
