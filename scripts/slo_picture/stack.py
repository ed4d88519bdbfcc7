"""The processes the picture is made from: two `sluice mock-upstream` backends, a Sluice proxy
in front of them and Debian's Prometheus scraping the proxy, each on a free loopback port.

`Stack` owns every process it starts and stops them all in `close()`, whatever happened before.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

# The pools the load calls. Their names are the Azure deployments in the client's path.
POOLS = ("gpt-4o", "gpt-4o-mini")


class StackError(RuntimeError):
    """A process did not start or did not answer."""


@dataclass
class ClientKeys:
    """Client keys as the load sends them; their secrets only travel in environment variables
    and request headers, never in a file or a log line written by this script."""

    team_a: str = field(default_factory=lambda: "sk-team-a-" + secrets.token_hex(12))
    team_b: str = field(default_factory=lambda: "sk-team-b-" + secrets.token_hex(12))
    wrong: str = field(default_factory=lambda: "sk-wrong-" + secrets.token_hex(12))


@dataclass
class Endpoints:
    proxy: str
    ops: str
    prometheus: str
    mocks: dict[str, str]


def free_ports(count: int) -> list[int]:
    """`count` distinct free loopback ports (held together while picked, so they differ)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def wait_until_answers(url: str, what: str, process: subprocess.Popen, log: Path) -> None:
    """Polls `url` until any HTTP answer comes; fails with the log's tail if the process exits or
    nothing answers within 30 s."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise StackError(f"{what} exited with {process.returncode}: {tail(log)}")
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except urllib.error.HTTPError:
            return
        except OSError:
            time.sleep(0.1)
    raise StackError(f"{what} did not answer {url} within 30 s: {tail(log)}")


def tail(log: Path, lines: int = 5) -> str:
    try:
        return " | ".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


class Stack:
    def __init__(self, sluice_bin: Path, workdir: Path, scrape_interval_s: float) -> None:
        self.sluice_bin = sluice_bin
        self.workdir = workdir
        self.scrape_interval_s = scrape_interval_s
        self.keys = ClientKeys()
        self.mock_key = "mock-" + secrets.token_hex(12)
        self.processes: list[subprocess.Popen] = []
        self.endpoints: Endpoints | None = None

    def start(self, team_b_requests_per_minute: int) -> Endpoints:
        mock1, mock2, proxy, ops, prometheus = free_ports(5)
        mocks = {"m1": mock1, "m2": mock2}
        # Different speeds, so the pools and the latency percentiles are told apart.
        self._start_mock("m1", mock1, latency_ms=40, tokens_per_second=150)
        self._start_mock("m2", mock2, latency_ms=70, tokens_per_second=90)
        self._start_proxy(mocks, proxy, ops, team_b_requests_per_minute)
        self._start_prometheus(ops, prometheus)
        self.endpoints = Endpoints(
            proxy=f"http://127.0.0.1:{proxy}",
            ops=f"http://127.0.0.1:{ops}",
            prometheus=f"http://127.0.0.1:{prometheus}",
            mocks={name: f"http://127.0.0.1:{port}" for name, port in mocks.items()},
        )
        self._wait_for_first_scrape()
        return self.endpoints

    def _spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None):
        log = self.workdir / f"{name}.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                argv,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, **(env or {})},
            )
        self.processes.append(process)
        return process, log

    def _start_mock(self, name: str, port: int, latency_ms: int, tokens_per_second: int) -> None:
        process, log = self._spawn(
            name,
            [
                str(self.sluice_bin),
                "--log-format=json",
                "mock-upstream",
                f"--addr=127.0.0.1:{port}",
                f"--name={name}",
                f"--latency-ms={latency_ms}",
                f"--tokens-per-second={tokens_per_second}",
                "--completion-tokens=48",
                "--no-record",
            ],
            env={"SLUICE_API_KEY": self.mock_key},
        )
        wait_until_answers(f"http://127.0.0.1:{port}/_mock/stats", f"mock {name}", process, log)

    def _start_proxy(
        self, mocks: dict[str, int], port: int, ops: int, team_b_requests_per_minute: int
    ) -> None:
        def backend(name: str) -> str:
            return (
                f'{{ name: {name}, url: "http://127.0.0.1:{mocks[name]}", kind: azure_openai, '
                f'auth: {{ type: api_key, secret: "env://SLO_MOCK_KEY" }} }}'
            )

        pools = "\n".join(
            f"  - name: {pool}\n"
            "    strategy: round_robin\n"
            "    retry: { max_attempts: 2 }\n"
            "    price: { input_per_1m_usd: 2.5, output_per_1m_usd: 10 }\n"
            "    backends:\n"
            f"      - {backend('m1')}\n"
            f"      - {backend('m2')}"
            for pool in POOLS
        )
        config = (
            f"pools:\n{pools}\n"
            "client_keys:\n"
            f'  - {{ id: team-a, secret: "env://SLO_TEAM_A_KEY", pools: [{", ".join(POOLS)}] }}\n'
            "  - id: team-b\n"
            '    secret: "env://SLO_TEAM_B_KEY"\n'
            f"    pools: [{', '.join(POOLS)}]\n"
            f"    limits: {{ requests_per_minute: {team_b_requests_per_minute} }}\n"
        )
        config_path = self.workdir / "sluice.yaml"
        config_path.write_text(config)
        process, log = self._spawn(
            "sluice",
            [
                str(self.sluice_bin),
                "--log-format=json",
                "proxy",
                f"--config={config_path}",
                f"--addr=127.0.0.1:{port}",
                f"--ops-addr=127.0.0.1:{ops}",
            ],
            env={
                "SLO_MOCK_KEY": self.mock_key,
                "SLO_TEAM_A_KEY": self.keys.team_a,
                "SLO_TEAM_B_KEY": self.keys.team_b,
            },
        )
        wait_until_answers(f"http://127.0.0.1:{ops}/readyz", "sluice proxy", process, log)

    def _start_prometheus(self, ops: int, port: int) -> None:
        interval = f"{self.scrape_interval_s:g}s"
        config_path = self.workdir / "prometheus.yml"
        config_path.write_text(
            "global:\n"
            f"  scrape_interval: {interval}\n"
            f"  evaluation_interval: {interval}\n"
            "scrape_configs:\n"
            "  - job_name: sluice-proxy\n"
            "    static_configs:\n"
            f"      - targets: ['127.0.0.1:{ops}']\n"
        )
        process, log = self._spawn(
            "prometheus",
            [
                "prometheus",
                f"--config.file={config_path}",
                f"--storage.tsdb.path={self.workdir / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
        )
        wait_until_answers(f"http://127.0.0.1:{port}/-/ready", "prometheus", process, log)

    def _wait_for_first_scrape(self) -> None:
        """The load starts once Prometheus holds a sample of the proxy, so the first rates are
        not lost."""
        assert self.endpoints is not None
        query = urllib.parse.urlencode({"query": "up{job='sluice-proxy'} == 1"})
        url = f"{self.endpoints.prometheus}/api/v1/query?{query}"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with urllib.request.urlopen(url, timeout=2) as response:
                if json.load(response)["data"]["result"]:
                    return
            time.sleep(self.scrape_interval_s / 2)
        raise StackError("prometheus did not scrape the proxy's /metrics within 30 s")

    def close(self) -> None:
        """SIGTERM to each process started, SIGKILL to those still up 5 s later."""
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 5
        for process in self.processes:
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.processes.clear()
