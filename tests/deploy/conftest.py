"""Shared fixtures for the deploy/ checks: the real `sluice` binary and its --help, the Helm chart
rendered by Helm's own Go SDK, deploy/compose.yaml with Compose's interpolation applied, and
helpers that run sluice processes on loopback (port 0) and find their bound addresses in the
JSON logs.

Run through scripts/check-deploy, which installs the pinned tools into target/venv-deploy and
builds the binary. SLUICE_BIN points at another binary (default target/debug/sluice).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
CHART = DEPLOY / "helm" / "sluice"
COMPOSE = DEPLOY / "compose.yaml"
SUBCOMMANDS = ("control-plane", "proxy", "dev", "mock-upstream")


def sluice_bin() -> Path:
    return Path(os.environ.get("SLUICE_BIN", ROOT / "target" / "debug" / "sluice"))


def clean_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """This process' environment without any SLUICE_* or OTEL_* (so the machine's settings
    never leak into a check), plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLUICE_", "OTEL_"))}
    env.update(extra or {})
    return env


def run_sluice(args: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(sluice_bin()), *args],
        env=clean_env(env),
        capture_output=True,
        text=True,
        timeout=30,
    )


# ---- --help -------------------------------------------------------------------------------------

@dataclass
class Option:
    flag: str
    takes_value: bool
    env: str | None
    default: str | None


@dataclass
class Help:
    text: str
    options: dict[str, Option] = field(default_factory=dict)
    commands: list[str] = field(default_factory=list)

    @property
    def flags(self) -> set[str]:
        return set(self.options)

    @property
    def envs(self) -> set[str]:
        return {o.env for o in self.options.values() if o.env}

    def default_port(self, flag: str) -> int:
        default = self.options[flag].default
        assert default, f"{flag} has no default"
        return port_of(default)


_OPTION_LINE = re.compile(r"^\s{2,8}(?:-\w, )?(--[a-z0-9][a-z0-9-]*)(?: <([A-Z0-9_]+)>)?(?:\s|$)")


def parse_help(text: str) -> Help:
    help_ = Help(text=text)
    section = None
    current: list[str] = []

    def flush() -> None:
        if not current:
            return
        entry = " ".join(line.strip() for line in current)
        m = _OPTION_LINE.match(current[0])
        assert m
        env = re.search(r"\[env: ([A-Z0-9_]+)", entry)
        default = re.search(r"\[default: ([^\]]*)\]", entry)
        help_.options[m.group(1)] = Option(
            flag=m.group(1),
            takes_value=m.group(2) is not None,
            env=env.group(1) if env else None,
            default=default.group(1) if default else None,
        )
        current.clear()

    for line in text.splitlines():
        if re.match(r"^[A-Z][A-Za-z ]*:$", line):
            flush()
            section = line[:-1]
            continue
        if section == "Commands":
            m = re.match(r"^\s{2}([a-z][a-z0-9-]*)\s", line)
            if m:
                help_.commands.append(m.group(1))
        elif section == "Options":
            if _OPTION_LINE.match(line):
                flush()
                current.append(line)
            elif current and line.strip():
                current.append(line)
    flush()
    return help_


@pytest.fixture(scope="session")
def cli() -> dict[str, Help]:
    """`sluice --help` (key "") and `sluice <command> --help` for every command, parsed."""
    binary = sluice_bin()
    if not binary.is_file():
        pytest.fail(f"no sluice binary at {binary}: run `cargo build --bin sluice` or set SLUICE_BIN")
    helps = {}
    top = run_sluice(["--help"])
    assert top.returncode == 0, top.stderr
    helps[""] = parse_help(top.stdout)
    for command in helps[""].commands:
        if command == "help":
            continue
        result = run_sluice([command, "--help"])
        assert result.returncode == 0, result.stderr
        helps[command] = parse_help(result.stdout)
    return helps


def port_of(addr_or_url: str) -> int:
    m = re.search(r":(\d+)(?:/.*)?$", addr_or_url.strip())
    assert m, f"no port in {addr_or_url!r}"
    return int(m.group(1))


def flag_values(argv: list[str]) -> dict[str, str | None]:
    """--flag VALUE / --flag=VALUE / bare --flag, as clap reads them (values never start with -)."""
    values: dict[str, str | None] = {}
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg.startswith("--"):
            if "=" in arg:
                name, value = arg.split("=", 1)
                values[name] = value
            elif i + 1 < len(argv) and not argv[i + 1].startswith("-"):
                values[arg] = argv[i + 1]
                i += 1
            else:
                values[arg] = None
        i += 1
    return values


def subcommand_of(argv: list[str], cli: dict[str, Help]) -> str:
    """The subcommand in argv, skipping global options (e.g. `--log-format json proxy ...`)."""
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg in cli[""].commands:
            return arg
        if arg.startswith("--") and "=" not in arg and cli[""].options.get(arg, Option(arg, False, None, None)).takes_value:
            i += 2
        else:
            i += 1
    raise AssertionError(f"no sluice subcommand in {argv}")


# ---- Helm --------------------------------------------------------------------------------------

# Stands in for a CA certificate in values: the chart renders it, it is never parsed here.
TEST_CA_PEM = "-----BEGIN CERTIFICATE-----\nMIIBtest\n-----END CERTIFICATE-----\n"

CHART_VARIANTS: dict[str, dict] = {
    "default": {},
    "features": {
        "serviceMonitor": {"enabled": True, "labels": {"release": "kube-prometheus-stack"}},
        "prometheusRule": {"enabled": True, "labels": {"release": "kube-prometheus-stack"}},
        "azure": {"workloadIdentity": {
            "enabled": True,
            "clientId": "00000000-0000-0000-0000-000000000001",
            "tenantId": "00000000-0000-0000-0000-000000000002",
        }},
    },
    "azure": {
        "azure": {
            "credential": "workload-identity",
            "keyvaultUrlTemplate": "https://{vault}.vault.azure.cn",
            "secretRefreshSecs": 120,
            "workloadIdentity": {"enabled": True, "clientId": "00000000-0000-0000-0000-000000000001"},
        },
    },
    "telemetry": {
        "telemetry": {
            "otlpEndpoint": "http://otel-collector.monitoring:4317",
            "sampler": "parentbased_traceidratio",
            "samplerArg": "0.05",
            "metricExportIntervalMs": 30000,
            "resourceAttributes": {"deployment.environment": "prod"},
            "extraEnv": [
                {"name": "OTEL_BSP_MAX_QUEUE_SIZE", "value": "4096"},
                {"name": "OTEL_EXPORTER_OTLP_HEADERS",
                 "valueFrom": {"secretKeyRef": {"name": "otel-auth", "key": "headers"}}},
            ],
        },
    },
    "secrets": {
        "secrets": {
            "create": True,
            "adminToken": "chart-test-admin-token",
            "proxyToken": "chart-test-proxy-token",
            "databaseUrl": "postgres://sluice:pw@postgres:5432/sluice",
        },
    },
    "redis": {"redis": {"url": "redis://sluice-redis-master.cache.svc:6379", "syncMs": 250}},
    "redis-secret": {"redis": {"existingSecret": "sluice-redis", "secretKey": "url", "syncMs": 200}},
    "sleep-action": {"useSleepAction": True},
    "fixed-replicas": {"proxy": {"autoscaling": {"enabled": False}, "replicas": 4}},
    "proxies-only": {
        "controlPlane": {"enabled": False},
        "proxy": {"controlPlaneUrl": "https://sluice-cp.example.internal:9091"},
    },
    # The proxies exposed through an Ingress (ingress-nginx, streaming-friendly) and a Gateway
    # API HTTPRoute, with NetworkPolicies keeping the rest private.
    "exposed": {
        "proxy": {
            "service": {"type": "LoadBalancer"},
            "ingress": {
                "enabled": True,
                "className": "nginx",
                "annotations": {
                    "nginx.ingress.kubernetes.io/proxy-buffering": "off",
                    "nginx.ingress.kubernetes.io/proxy-read-timeout": "3600",
                    "nginx.ingress.kubernetes.io/proxy-send-timeout": "3600",
                    "nginx.ingress.kubernetes.io/proxy-body-size": "16m",
                },
                "hosts": [{"host": "sluice.example.com"}],
                "tls": [{"secretName": "sluice-example-tls", "hosts": ["sluice.example.com"]}],
            },
            "httpRoute": {
                "enabled": True,
                "parentRefs": [{"name": "public", "namespace": "gateway-system", "sectionName": "https"}],
                "hostnames": ["sluice.example.com"],
                "timeouts": {"request": "3600s"},
            },
        },
        "networkPolicy": {
            "enabled": True,
            "metricsFrom": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}],
            "adminFrom": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ops"}}}],
            "grpcFrom": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "sluice-edge"}},
                          "podSelector": {"matchLabels": {"app.kubernetes.io/component": "proxy"}}}],
        },
        "serviceMonitor": {"enabled": True},
    },
    # mTLS on the config stream with certificates from cert-manager.
    "grpc-tls": {
        "grpcTls": {
            "enabled": True,
            "clientAuth": True,
            "certManager": {
                "enabled": True,
                "issuerRef": {"name": "sluice-ca", "kind": "ClusterIssuer"},
                "extraDnsNames": ["sluice-cp.example.internal"],
            },
        },
    },
    # TLS (no client certificates) with Secrets of your own and the CA given inline.
    "grpc-tls-ca": {
        "grpcTls": {"enabled": True, "serverSecret": "my-grpc-server", "caBundle": TEST_CA_PEM},
    },
    # Proxies following another release's control plane over mTLS, with their own client Secret.
    "proxies-only-mtls": {
        "controlPlane": {"enabled": False},
        "proxy": {"controlPlaneUrl": "https://sluice-control-plane.sluice-core.svc:9091"},
        "grpcTls": {"enabled": True, "clientAuth": True, "clientSecret": "edge-grpc-client"},
    },
    # HTTPS on the proxies' client port and the admin port from Secrets of your own, the
    # proxies' concurrency settings, the in-flight HPA metric, exposed through ingress-nginx and
    # scraped over HTTPS, with NetworkPolicies.
    "https-secrets": {
        "controlPlane": {"tls": {"enabled": True, "secretName": "my-admin-tls"}},
        "proxy": {
            "tls": {"enabled": True, "secretName": "my-proxy-tls"},
            "workers": 2,
            "maxConcurrentRequests": 1000,
            "autoscaling": {"inflightTarget": 700},
            "ingress": {"enabled": True, "className": "nginx", "hosts": [{"host": "sluice.example.com"}]},
        },
        "serviceMonitor": {"enabled": True},
        "networkPolicy": {"enabled": True},
    },
    # The same with both certificates from cert-manager.
    "https-cert-manager": {
        "controlPlane": {"tls": {"enabled": True, "certManager": {
            "enabled": True, "issuerRef": {"name": "internal-ca", "kind": "ClusterIssuer"}}}},
        "proxy": {"tls": {"enabled": True, "certManager": {
            "enabled": True, "issuerRef": {"name": "internal-ca", "kind": "ClusterIssuer"},
            "extraDnsNames": ["llm.example.com"]}}},
        "serviceMonitor": {"enabled": True},
    },
    # The database URL from CloudNativePG's application Secret, the tokens from the chart's.
    "cnpg": {
        "secrets": {"databaseUrlSecret": "pg-app", "keys": {"databaseUrl": "uri"}},
    },
}

RELEASE = "sluice"
NAMESPACE = "sluice"


@dataclass
class Rendered:
    values: dict
    files: dict[str, str]
    docs: list[tuple[str, dict]]

    def of_kind(self, kind: str) -> list[dict]:
        return [d for _, d in self.docs if d["kind"] == kind]

    def named(self, kind: str, name: str) -> dict:
        found = [d for d in self.of_kind(kind) if d["metadata"]["name"] == name]
        assert len(found) == 1, f"{kind}/{name}: {len(found)} found"
        return found[0]

    def component(self, kind: str, component: str) -> dict:
        found = [
            d for d in self.of_kind(kind)
            if d["metadata"].get("labels", {}).get("app.kubernetes.io/component") == component
        ]
        assert len(found) == 1, f"{kind} of component {component}: {len(found)} found"
        return found[0]


def render_chart(values: dict, name: str = RELEASE, namespace: str = NAMESPACE) -> dict[str, str]:
    import helm_python as helm

    with helm.Chart.load(str(CHART)) as chart:
        return chart.render(values, name=name, namespace=namespace)


@pytest.fixture(scope="session")
def chart_values() -> dict:
    return yaml.safe_load((CHART / "values.yaml").read_text())


@pytest.fixture(scope="session")
def rendered() -> dict[str, Rendered]:
    import helm_python as helm

    out = {}
    for variant, values in CHART_VARIANTS.items():
        files = render_chart(values)
        docs = []
        for path, text in sorted(files.items()):
            if not path.endswith((".yaml", ".yml")):
                continue  # NOTES.txt
            for doc in yaml.safe_load_all(text):
                if doc:
                    docs.append((path, doc))
        with helm.Chart.load(str(CHART)) as chart:
            merged = chart.merge_values(values)
        out[variant] = Rendered(values=merged, files=files, docs=docs)
    return out


# ---- Compose -----------------------------------------------------------------------------------

_INTERPOLATION = re.compile(r"\$(?:\$|\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?+])([^}]*))?\}|([A-Za-z_][A-Za-z0-9_]*))")


def interpolate(value, env: dict[str, str]):
    """Compose's variable interpolation (${VAR}, ${VAR:-default}, ${VAR-default}, $VAR, $$)."""
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def sub(m: re.Match) -> str:
        if m.group(0) == "$$":
            return "$"
        name = m.group(1) or m.group(4)
        op, arg = m.group(2), m.group(3)
        current = env.get(name)
        if op == ":-":
            return current if current else arg
        if op == "-":
            return current if current is not None else arg
        if op in (":?", "?"):
            if not current:
                raise AssertionError(f"compose requires ${name}: {arg}")
            return current
        if op == ":+":
            return arg if current else ""
        if op == "+":
            return arg if current is not None else ""
        return current or ""

    return _INTERPOLATION.sub(sub, value)


def environment_of(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {k: "" if v is None else str(v) for k, v in env.items()}


@pytest.fixture(scope="session")
def compose_raw() -> dict:
    """compose.yaml as YAML (merge keys applied), before interpolation."""
    return yaml.safe_load(COMPOSE.read_text())


@pytest.fixture(scope="session")
def compose(compose_raw) -> dict:
    """compose.yaml as `docker compose config` would see it with no .env file and none of the
    override variables set: every ${VAR:-default} takes its default."""
    return interpolate(compose_raw, {})


def sluice_services(compose: dict) -> dict[str, dict]:
    image = compose["x-sluice"]["image"]
    return {name: s for name, s in compose["services"].items() if s.get("image") == image}


def services_running(compose: dict, command: str) -> dict[str, dict]:
    return {
        name: s for name, s in sluice_services(compose).items()
        if command in (s.get("command") or [])[:3]
    }


# ---- processes on loopback ---------------------------------------------------------------------

class Process:
    """A sluice process with its stdout+stderr in a file; addresses come from the JSON logs."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log_dir: Path):
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            argv, env=env, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )

    def log_lines(self) -> list[dict]:
        lines = []
        for raw in self.log_path.read_text(errors="replace").splitlines():
            raw = raw.strip()
            if raw.startswith("{"):
                try:
                    lines.append(json.loads(raw))
                except json.JSONDecodeError:
                    pass
        return lines

    def wait_for_field(self, key: str, timeout: float = 20.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.log_lines():
                if key in line:
                    return str(line[key])
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(
            f"{self.name}: no {key!r} in its log (exit code {self.proc.poll()}):\n"
            + self.log_path.read_text(errors="replace")[-4000:]
        )

    def stop(self, timeout: float = 10.0) -> int | None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode


@pytest.fixture
def processes(tmp_path):
    """Starts sluice processes; every one is stopped (by its own pid) at the end of the test."""
    started: list[Process] = []

    def start(name: str, args: list[str], env: dict[str, str] | None = None) -> Process:
        proc = Process(name, [str(sluice_bin()), *args], clean_env(env), tmp_path)
        started.append(proc)
        return proc

    yield start
    for proc in reversed(started):
        proc.stop()


def http(method: str, url: str, body=None, headers: dict | None = None, timeout: float = 10.0):
    """(status, headers, body bytes); never raises on HTTP error statuses."""
    data = None
    headers = dict(headers or {})
    if body is not None:
        data = json.dumps(body).encode() if not isinstance(body, bytes) else body
        headers.setdefault("content-type", "application/json")
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers, error.read()


def wait_until(predicate, timeout: float = 15.0, interval: float = 0.05, what: str = "condition"):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = predicate()
            if last:
                return last
        except (OSError, urllib.error.URLError) as error:
            last = error
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what} (last: {last!r})")


# ---- Postgres ----------------------------------------------------------------------------------

def postgres_base_url() -> str:
    return os.environ.get("SLUICE_TEST_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432").rstrip("/")


def postgres_reachable() -> bool:
    m = re.match(r"postgres(?:ql)?://(?:[^@/]*@)?([^:/]+)(?::(\d+))?", postgres_base_url())
    if not m or not shutil.which("psql"):
        return False
    try:
        with socket.create_connection((m.group(1), int(m.group(2) or 5432)), timeout=1):
            return True
    except OSError:
        return False


def psql(sql: str) -> None:
    subprocess.run(
        ["psql", f"{postgres_base_url()}/postgres", "-v", "ON_ERROR_STOP=1", "-q", "-c", sql],
        check=True, capture_output=True, text=True, timeout=30,
    )
