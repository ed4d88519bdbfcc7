"""deploy/ against the real binary: the Helm chart (rendered by Helm's Go SDK), compose.yaml,
the Dockerfile, Prometheus/Grafana/OTel wiring, the dashboard's metric names, and the compose
topology re-created with local processes (two control planes on one Postgres, three proxies,
two mocks, the seed script). Run with scripts/check-deploy."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import textwrap
import time
import tomllib
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import pytest
import yaml

from conftest import (
    CHART,
    CHART_VARIANTS,
    Rendered,
    COMPOSE,
    DEPLOY,
    NAMESPACE,
    RELEASE,
    ROOT,
    SUBCOMMANDS,
    environment_of,
    flag_values,
    http,
    port_of,
    postgres_base_url,
    postgres_reachable,
    psql,
    render_chart,
    run_sluice,
    services_running,
    sluice_services,
    subcommand_of,
    TEST_CA_PEM,
    wait_until,
)

PROXY_ENDPOINTS = {"/healthz", "/readyz", "/metrics"}  # ops port
ADMIN_OPS_ENDPOINTS = {"/healthz", "/readyz", "/metrics", "/openapi.json"}  # admin port, no auth
MOCK_ENDPOINTS = {"/_mock/stats", "/_mock/faults", "/_mock/requests"}
# API groups of custom resources the chart renders (Prometheus Operator, cert-manager, Gateway
# API): Kubernetes' own schemas do not know them, so their tests check them field by field.
CRD_GROUPS = ("monitoring.coreos.com/", "cert-manager.io/", "gateway.networking.k8s.io/")
LISTEN_FLAGS = {
    "control-plane": {"admin": "--admin-addr", "grpc": "--grpc-addr"},
    "proxy": {"http": "--addr", "ops": "--ops-addr"},
    "mock-upstream": {"http": "--addr"},
}


def check_argv(argv: list[str], cli, where: str) -> str:
    """Every flag of argv exists for its subcommand, and the binary itself accepts argv (clap
    parses and validates every value before it acts on a trailing --help). Returns the
    subcommand."""
    command = subcommand_of(argv, cli)
    known = cli[command].flags | cli[""].flags
    for flag in flag_values(argv):
        assert flag in known, f"{where}: `sluice {command}` has no {flag}"
    result = run_sluice([*argv, "--help"])
    assert result.returncode == 0, f"{where}: `sluice {' '.join(argv)}` is refused:\n{result.stderr}"
    return command


# Standard variables that are not sluice flags. OpenTelemetry: the ones Sluice honours
# (docs/observability.md), read by src/telemetry or by the OpenTelemetry SDK it uses; any other OTEL_*
# name is a typo or a setting this build ignores. Azure: what the identity chain reads (the AKS
# workload-identity webhook injects all but AZURE_CLIENT_SECRET).
OTEL_VARIABLES = {
    "OTEL_SDK_DISABLED", "OTEL_SERVICE_NAME", "OTEL_RESOURCE_ATTRIBUTES",
    "OTEL_TRACES_EXPORTER", "OTEL_METRICS_EXPORTER", "OTEL_METRIC_EXPORT_INTERVAL",
    "OTEL_TRACES_SAMPLER", "OTEL_TRACES_SAMPLER_ARG",
    *(f"OTEL_EXPORTER_OTLP_{signal}{setting}"
      for signal in ("", "TRACES_", "METRICS_") for setting in ("ENDPOINT", "PROTOCOL", "HEADERS", "TIMEOUT")),
    "OTEL_BSP_SCHEDULE_DELAY", "OTEL_BSP_MAX_QUEUE_SIZE", "OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "OTEL_BSP_EXPORT_TIMEOUT",
}
AZURE_VARIABLES = {
    "AZURE_TENANT_ID", "AZURE_CLIENT_ID", "AZURE_CLIENT_SECRET", "AZURE_CLIENT_CERTIFICATE_PATH", "AZURE_FEDERATED_TOKEN_FILE",
    "AZURE_AUTHORITY_HOST",
}


def check_env_names(names, command: str, cli, where: str) -> None:
    """SLUICE_* names are variables of that command (`--help` lists them); OTEL_* and AZURE_*
    are standard variables, not flags, and must be ones Sluice reads. Other names (pod name,
    env:// backend keys) are the deployer's own."""
    known = cli[command].envs | cli[""].envs
    for name in names:
        if name.startswith("SLUICE_"):
            assert name in known, f"{where}: `sluice {command}` reads no {name}"
        elif name.startswith("OTEL_"):
            assert name in OTEL_VARIABLES, f"{where}: {name} is not an OpenTelemetry variable Sluice reads"
        elif name.startswith("AZURE_"):
            assert command in ("proxy", "dev"), f"{where}: {name} on `sluice {command}`, which has no Azure identity"
            assert name in AZURE_VARIABLES, f"{where}: {name} is not an Azure identity variable Sluice reads"


def env_as_flags(env: dict[str, str], command: str, cli) -> list[str]:
    """The SLUICE_* variables of `env` as the flags they stand for, so that clap validates their
    values too (a trailing --help stops parsing before the environment is read)."""
    argv = []
    for name, value in env.items():
        option = next((o for o in cli[command].options.values() if o.env == name), None)
        if option is None:
            continue
        argv += [option.flag, value] if option.takes_value else ([option.flag] if value == "true" else [])
    return argv


# ================================================================================================
# The binary, the README and docs/
# ================================================================================================

def test_readme_commands_exist(cli):
    readme = (ROOT / "README.md").read_text()
    table = readme.split("\n## Commands\n", 1)[1].split("\n## ", 1)[0]
    documented = {}
    for row in re.findall(r"^\| `sluice ([a-z-]+)([^`]*)` \|(.*)$", table, re.M):
        documented[row[0]] = row[1] + row[2]
    assert set(SUBCOMMANDS) <= set(documented), documented.keys()
    for command, text in documented.items():
        assert command in cli[""].commands, f"README documents `sluice {command}`; the binary has no such command"
        for flag in re.findall(r"(--[a-z][a-z0-9-]+)", text):
            assert flag in cli[command].flags, f"README: `sluice {command}` has no {flag}"


def test_architecture_flag_tables_match_help(cli):
    """The flag tables of docs/architecture.md ("Commands", one `### `sluice <command>``
    section each) name only flags and variables the command has."""
    text = (ROOT / "docs" / "architecture.md").read_text()
    commands = text.split("\n## Commands\n", 1)[1].split("\n## ", 1)[0]
    sections = re.split(r"^### `sluice ([a-z-]+)`\s*$", commands, flags=re.M)
    checked = set()
    for command, body in zip(sections[1::2], sections[2::2]):
        rows = [line for line in body.splitlines() if line.startswith("| `--")]
        for row in rows:
            first_cells = "|".join(row.split("|")[1:3])
            for flag in re.findall(r"`(--[a-z][a-z0-9-]+)`", first_cells):
                assert flag in cli[command].flags, f"docs/architecture.md table: `sluice {command}` has no {flag}"
            for env in re.findall(r"\b(SLUICE_[A-Z0-9_]+)\b", first_cells):
                assert env in cli[command].envs | cli[""].envs, f"docs/architecture.md table: `sluice {command}` reads no {env}"
            checked.add(command)
    assert {"control-plane", "proxy"} <= checked


def test_every_flag_has_its_env_var(cli):
    for command in SUBCOMMANDS:
        for option in cli[command].options.values():
            if option.flag in ("--help", "--version"):
                continue
            expected = "SLUICE_" + option.flag[2:].upper().replace("-", "_")
            assert option.env == expected, f"`sluice {command} {option.flag}`: env {option.env}, expected {expected}"


def test_log_format_is_global(cli):
    assert "--log-format" in cli[""].flags
    for command in SUBCOMMANDS:
        assert "--log-format" in cli[command].flags
        for argv in (["--log-format", "json", command], [command, "--log-format", "json"]):
            result = run_sluice([*argv, "--help"])
            assert result.returncode == 0, result.stderr


def test_operations_guide_mentions_only_real_flags_and_variables(cli):
    text = (ROOT / "docs" / "operations.md").read_text()
    every_env = set().union(*(h.envs for h in cli.values()))
    for env in set(re.findall(r"\b(SLUICE_[A-Z0-9_]+)\b", text)):
        assert env in every_env, f"docs/operations.md mentions {env}, which no command reads"
    for command, rest in re.findall(r"\bsluice (control-plane|proxy|dev|mock-upstream)\b([^`\n|]*)", text):
        for flag in re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]+)", rest):
            assert flag in cli[command].flags | cli[""].flags, f"docs/operations.md: `sluice {command}` has no {flag}"
    # Inline code that starts with a flag (`--drain-timeout-secs`) names a sluice flag; fenced
    # blocks hold other tools' commands (kubectl, pg_dump).
    prose = re.sub(r"^```.*?^```", "", text, flags=re.M | re.S)
    every_flag = set().union(*(h.flags for h in cli.values()))
    inline = re.findall(r"`(--[a-z][a-z0-9-]+)[^`]*`", prose)
    assert inline
    for flag in inline:
        assert flag in every_flag, f"docs/operations.md mentions {flag}, which no command has"


def test_license_is_the_one_the_crates_declare():
    """LICENSE holds the license text Cargo.toml declares, and the image and chart say the same."""
    declared = tomllib.loads((ROOT / "Cargo.toml").read_text())["workspace"]["package"]["license"]
    assert declared == "Apache-2.0"
    text = (ROOT / "LICENSE").read_text()
    assert text.split()[:4] == ["Apache", "License", "Version", "2.0,"], text[:200]
    assert "TERMS AND CONDITIONS FOR USE, REPRODUCTION, AND DISTRIBUTION" in text and "END OF TERMS AND CONDITIONS" in text
    labels = " ".join(rest for instr, rest in dockerfile_instructions() if instr == "LABEL")
    assert f'org.opencontainers.image.licenses="{declared}"' in labels
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["annotations"]["artifacthub.io/license"] == declared
    assert chart["home"] in chart["sources"]


def test_changelog_keeps_a_changelog():
    text = (ROOT / "CHANGELOG.md").read_text()
    assert "[Keep a Changelog](https://keepachangelog.com/" in text
    releases = re.findall(r"^## (.+)$", text, re.M)
    assert releases and releases[0] == "[Unreleased]", releases
    kinds = set(re.findall(r"^### (.+)$", text, re.M))
    assert kinds <= {"Added", "Changed", "Deprecated", "Removed", "Fixed", "Security"}, kinds
    chart_version = yaml.safe_load((CHART / "Chart.yaml").read_text())["version"]
    assert f"Helm chart {chart_version}" in text, "the chart's current version has its entry"


# ================================================================================================
# Dockerfile
# ================================================================================================

def dockerfile_instructions() -> list[tuple[str, str]]:
    lines, current = [], ""
    for raw in (DEPLOY / "Dockerfile").read_text().splitlines():
        stripped = raw.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if current and stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        current += stripped
        instr, _, rest = current.partition(" ")
        lines.append((instr.upper(), rest.strip()))
        current = ""
    return lines


def final_stage(instructions):
    starts = [i for i, (instr, _) in enumerate(instructions) if instr == "FROM"]
    return instructions[starts[-1]:]


def test_dockerfile_entrypoint_is_the_sluice_binary_built_from_this_workspace(cli):
    instructions = dockerfile_instructions()
    runtime = final_stage(instructions)
    entrypoints = [rest for instr, rest in runtime if instr == "ENTRYPOINT"]
    assert len(entrypoints) == 1
    entrypoint = json.loads(entrypoints[0])  # exec form: signals reach sluice itself
    assert entrypoint == ["/usr/local/bin/sluice"]
    copies = [rest for instr, rest in runtime if instr == "COPY"]
    binary = [m for c in copies if (m := re.fullmatch(r"--from=build\s+(\S+)\s+/usr/local/bin/sluice", c))]
    assert len(binary) == 1, copies
    copied_from = binary[0].group(1)

    build = instructions[: [i for i, (x, _) in enumerate(instructions) if x == "FROM"][-1]]
    assert any(instr == "FROM" and re.search(r"\bAS build\b", rest, re.I) for instr, rest in build)
    assert ("COPY", ". .") in build, "the build stage copies the workspace (the repository root context)"
    runs = " ".join(rest for instr, rest in build if instr == "RUN")
    # What ships, and what bench/run measures: the dist profile (Cargo.toml: fat LTO, one codegen
    # unit) optimised with the request path's profile by scripts/build-pgo, which leaves it where
    # the Dockerfile installs it from; SLUICE_PGO=0 ships the dist profile alone.
    assert re.search(r"\bscripts/build-pgo\b", runs), runs
    assert re.search(rf"install .*target/pgo/use/dist/sluice {re.escape(copied_from)}\b", runs), runs
    assert re.search(r"cargo build --profile dist --locked --bin sluice\b", runs), runs
    assert re.search(rf"install .*target/dist/sluice {re.escape(copied_from)}\b", runs), runs
    pgo = (ROOT / "scripts" / "build-pgo").read_text()
    assert 'PGO_DIR=${PGO_DIR:-target/pgo}' in pgo
    assert re.search(r'cargo build --profile dist --locked --bin sluice --target-dir "\$PGO_DIR/use"', pgo), pgo
    # build-pgo lays the binary out with BOLT unless told not to: the stage brings its tools, as it
    # brings llvm-profdata's, rather than have the script install them mid-build.
    assert "BOLT=${BOLT:-on}" in pgo
    for package in ("wrk", "llvm-19", "bolt-19"):
        assert re.search(rf"apt-get install [^&]*\b{re.escape(package)}\b", runs), (package, runs)
    arg = [rest for instr, rest in build if instr == "ARG" and rest.startswith("SLUICE_PGO=")]
    assert arg == ["SLUICE_PGO=1"], arg

    # ... and `sluice` is the workspace's root package binary.
    metadata = json.loads(subprocess.run(
        ["cargo", "metadata", "--no-deps", "--offline", "--format-version", "1"],
        cwd=ROOT, capture_output=True, text=True, check=True, timeout=120,
    ).stdout)
    root = next(p for p in metadata["packages"] if Path(p["manifest_path"]).parent == ROOT)
    bins = [t["name"] for t in root["targets"] if "bin" in t["kind"]]
    assert "sluice" in bins

    cmd = [rest for instr, rest in runtime if instr == "CMD"]
    if cmd:
        argv = json.loads(cmd[-1])
        result = run_sluice(argv)
        assert result.returncode == 0, result.stderr


def test_dockerfile_env_ports_and_user(cli, chart_values, compose):
    runtime = final_stage(dockerfile_instructions())
    env = {}
    for instr, rest in runtime:
        if instr == "ENV":
            for item in shlex.split(rest):
                key, _, value = item.partition("=")
                env[key] = value
    every_env = set().union(*(h.envs for h in cli.values()))
    for key in env:
        if key.startswith("SLUICE_"):
            assert key in every_env, f"Dockerfile sets {key}, which no command reads"
    assert env.get("SLUICE_LOG_FORMAT") in ("json", "text")

    exposed = {int(p.split("/")[0]) for instr, rest in runtime if instr == "EXPOSE" for p in rest.split()}
    defaults = {
        cli["proxy"].default_port("--addr"), cli["proxy"].default_port("--ops-addr"),
        cli["control-plane"].default_port("--admin-addr"), cli["control-plane"].default_port("--grpc-addr"),
    }
    assert exposed == defaults

    user = [rest for instr, rest in runtime if instr == "USER"][-1]
    uid = int(user.split(":")[0])
    assert chart_values["podSecurityContext"]["runAsUser"] == uid
    assert chart_values["podSecurityContext"]["runAsNonRoot"] is True

    # The cache directory the image prepares (owned by that user) is where chart and compose
    # mount the writable cache volume.
    cache = env["SLUICE_CACHE_DIR"]
    runs = " ".join(rest for instr, rest in runtime if instr == "RUN")
    assert re.search(rf"install -d -o {uid} -g {uid} .*{re.escape(cache)}\b", runs), runs
    assert chart_values["proxy"]["cacheDir"] == cache
    for name, service in services_running(compose, "proxy").items():
        assert environment_of(service).get("SLUICE_CACHE_DIR", cache) == cache, name


def test_dockerfile_rust_image_meets_the_workspace_rust_version():
    instructions = dockerfile_instructions()
    args = dict(rest.split("=", 1) for instr, rest in instructions if instr == "ARG" and "=" in rest)
    image = tuple(int(x) for x in args["RUST_VERSION"].split("."))
    cargo = tomllib.loads((ROOT / "Cargo.toml").read_text())
    wanted = tuple(int(x) for x in cargo["workspace"]["package"]["rust-version"].split("."))
    assert image[: len(wanted)] >= wanted, f"rust:{args['RUST_VERSION']} is older than rust-version {wanted}"


def dockerignore_patterns() -> list[tuple[bool, re.Pattern]]:
    patterns = []
    for line in (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        line = line.lstrip("!").strip().strip("/")
        line = os.path.normpath(line)
        regex = ""
        i = 0
        while i < len(line):
            if line.startswith("**/", i):
                regex += "(?:.*/)?"
                i += 3
            elif line.startswith("**", i):
                regex += ".*"
                i += 2
            elif line[i] == "*":
                regex += "[^/]*"
                i += 1
            elif line[i] == "?":
                regex += "[^/]"
                i += 1
            else:
                regex += re.escape(line[i])
                i += 1
        patterns.append((negate, re.compile(regex + r"\Z")))
    return patterns


def docker_ignores(path: str, patterns) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parents decides."""
    parts = PurePosixPath(path).parts
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    excluded = False
    for negate, pattern in patterns:
        if any(pattern.match(c) for c in candidates):
            excluded = not negate
    return excluded


def build_context_files(patterns) -> list[str]:
    files = []
    for dirpath, dirnames, filenames in os.walk(ROOT):
        rel_dir = os.path.relpath(dirpath, ROOT)
        rel_dir = "" if rel_dir == "." else rel_dir
        dirnames[:] = [d for d in dirnames if not docker_ignores(os.path.join(rel_dir, d), patterns)]
        for name in filenames:
            rel = os.path.join(rel_dir, name)
            if not docker_ignores(rel, patterns):
                files.append(rel)
    return files


def test_docker_build_context_holds_the_workspace(tmp_path):
    patterns = dockerignore_patterns()
    for excluded in ("target/debug/sluice", ".git/HEAD", ".sluice/sluice.db", "model/target/x"):
        assert docker_ignores(excluded, patterns), f"{excluded} should stay out of the build context"
    cargo = tomllib.loads((ROOT / "Cargo.toml").read_text())
    # scripts/build-pgo trains the build with bench/'s mocks, config and wrk script; the allocator's
    # settings are compiled in from .cargo/config.toml.
    needed = ["Cargo.toml", "Cargo.lock", ".cargo/config.toml", "deploy/Dockerfile", "scripts/build-pgo",
              "bench/common.sh", "bench/wrk.lua"]
    for member in cargo["workspace"]["members"]:
        needed.append(os.path.normpath(os.path.join(member, "Cargo.toml")))
    # Members may sit below the top level (bench/bare-proxy): a directory is needed when it is
    # inside one.
    trees = [os.path.normpath(m) for m in cargo["workspace"]["members"] if m != "."] + ["src", "migrations"]
    for dirpath, _, filenames in os.walk(ROOT):
        rel = os.path.relpath(dirpath, ROOT)
        if any(rel == tree or rel.startswith(tree + os.sep) for tree in trees):
            if "target" not in rel.split(os.sep):
                needed += [os.path.join(rel, f) for f in filenames]
    for path in needed:
        assert not docker_ignores(path, patterns), f"{path} is needed by the build but the dockerignore drops it"

    # The context as BuildKit would send it is a complete, locked workspace.
    context = tmp_path / "context"
    for rel in build_context_files(patterns):
        dest = context / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, dest)
    # --locked: cargo resolves the whole graph, every platform's dependencies included, and fails
    # if Cargo.lock lacks or contradicts any of it. --filter-platform (this machine's) only trims
    # the output, and with it the crates cargo must have downloaded: --offline then needs just
    # what building and testing here fetched, not e.g. the Windows-only crates of the lockfile.
    host = next(
        line.split(":", 1)[1].strip()
        for line in subprocess.run(["cargo", "-vV"], capture_output=True, text=True, check=True, timeout=30).stdout.splitlines()
        if line.startswith("host:")
    )
    result = subprocess.run(
        ["cargo", "metadata", "--locked", "--offline", "--format-version", "1", "--filter-platform", host,
         "--manifest-path", str(context / "Cargo.toml")],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    packages = {p["name"] for p in json.loads(result.stdout)["packages"]}
    assert "sluice" in packages


# ================================================================================================
# Helm chart
# ================================================================================================

def test_chart_lints_clean():
    import helm_python as helm

    for values in ({}, {"serviceMonitor": {"enabled": True},
                        "azure": {"credential": "workload-identity", "secretRefreshSecs": 60,
                                  "workloadIdentity": {"enabled": True, "clientId": "00000000-0000-0000-0000-000000000001"}},
                        "telemetry": {"otlpEndpoint": "http://otel-collector:4317", "sampler": "parentbased_traceidratio",
                                      "samplerArg": "0.1"},
                        "redis": {"existingSecret": "sluice-redis", "syncMs": 200}},
                   CHART_VARIANTS["exposed"], CHART_VARIANTS["grpc-tls"], CHART_VARIANTS["grpc-tls-ca"],
                   CHART_VARIANTS["cnpg"]):
        report = helm.lint(str(CHART), values, strict=True, namespace=NAMESPACE)
        assert not report["errors"], report
        serious = [m for m in report["messages"] if m["severity"] >= 2]  # warning or error
        assert not serious, serious


def test_rendered_documents_are_yaml_kubernetes_objects(rendered):
    for variant, out in rendered.items():
        assert out.docs, variant
        for path, text in out.files.items():
            if path.endswith(".yaml"):
                list(yaml.safe_load_all(text))  # parses
        for path, doc in out.docs:
            assert isinstance(doc, dict), (variant, path)
            for key in ("apiVersion", "kind", "metadata"):
                assert key in doc, (variant, path, key)
            assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", doc["metadata"]["name"]), doc["metadata"]["name"]
            assert doc["metadata"]["namespace"] == NAMESPACE, (variant, path)


def test_rendered_objects_match_the_kubernetes_schemas(rendered):
    import kubernetes_validate

    minimum = yaml.safe_load((CHART / "Chart.yaml").read_text())["kubeVersion"]
    assert minimum.startswith(">=1.25"), "the oldest version checked below"
    for variant, out in rendered.items():
        # The native preStop sleep action needs Kubernetes 1.30 (values.yaml says so).
        versions = ["1.30.0"] if out.values.get("useSleepAction") else ["1.25.0", "1.30.0"]
        versions.append(kubernetes_validate.latest_version())
        for path, doc in out.docs:
            if doc["apiVersion"].startswith(CRD_GROUPS):
                continue  # a CRD's kind: checked field by field below
            for version in versions:
                try:
                    kubernetes_validate.validate(doc, version, strict=True)
                except kubernetes_validate.ValidationError as error:
                    pytest.fail(f"{variant} {path} {doc['kind']} on Kubernetes {version}: {error}")


def test_default_render_has_the_expected_objects(rendered):
    kinds = Counter(d["kind"] for _, d in rendered["default"].docs)
    assert kinds == Counter({
        "Deployment": 2, "Service": 3, "PodDisruptionBudget": 2, "ServiceAccount": 2,
        "HorizontalPodAutoscaler": 1, "Pod": 1,
    }), kinds
    apis = {(d["kind"], d["apiVersion"]) for _, d in rendered["default"].docs}
    assert ("HorizontalPodAutoscaler", "autoscaling/v2") in apis
    assert ("PodDisruptionBudget", "policy/v1") in apis
    out = rendered["default"]
    assert out.component("Deployment", "control-plane")["spec"]["replicas"] >= 2
    assert "replicas" not in out.component("Deployment", "proxy")["spec"], "the HPA owns the proxy replica count"
    assert out.component("HorizontalPodAutoscaler", "proxy")["spec"]["metrics"][0]["resource"]["name"] == "cpu"

    fixed = rendered["fixed-replicas"]
    assert fixed.component("Deployment", "proxy")["spec"]["replicas"] == 4
    assert not fixed.of_kind("HorizontalPodAutoscaler")

    only = rendered["proxies-only"]
    assert Counter(d["kind"] for _, d in only.docs) == Counter({
        "Deployment": 1, "Service": 2, "PodDisruptionBudget": 1, "ServiceAccount": 1, "HorizontalPodAutoscaler": 1,
        "Pod": 1,
    })
    args = flag_values(only.component("Deployment", "proxy")["spec"]["template"]["spec"]["containers"][0]["args"])
    assert args["--control-plane"] == "https://sluice-cp.example.internal:9091"


def test_service_monitor_and_workload_identity(rendered):
    out = rendered["features"]
    monitors = out.of_kind("ServiceMonitor")
    assert len(monitors) == 1
    monitor = monitors[0]
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    selector = monitor["spec"]["selector"]["matchLabels"]
    services = [s for s in out.of_kind("Service") if selector.items() <= s["metadata"]["labels"].items()]
    assert {s["metadata"]["labels"]["app.kubernetes.io/component"] for s in services} == {"control-plane", "proxy"}
    port_names = {p["name"]: s for s in services for p in s["spec"]["ports"]}
    scraped = set()
    for endpoint in monitor["spec"]["endpoints"]:
        assert endpoint["path"] == "/metrics"
        assert endpoint["port"] in port_names, endpoint
        scraped.add(port_names[endpoint["port"]]["metadata"]["labels"]["app.kubernetes.io/component"])
        assert re.fullmatch(r"\d+[smh]", endpoint["interval"]) and re.fullmatch(r"\d+[smh]", endpoint["scrapeTimeout"])
    assert scraped == {"control-plane", "proxy"}
    assert monitor["spec"]["namespaceSelector"]["matchNames"] == [NAMESPACE]
    # The admin port is the one that serves /metrics on the control plane, ops on the proxy.
    cp = container(out.component("Deployment", "control-plane"))
    px = container(out.component("Deployment", "proxy"))
    assert port_of(flag_values(cp["args"]).get("--admin-addr", ":9090")) == named_port(cp, "admin")
    assert port_of(flag_values(px["args"])["--ops-addr"]) == named_port(px, "ops")

    account = out.component("ServiceAccount", "proxy")
    annotations = account["metadata"]["annotations"]
    assert annotations["azure.workload.identity/client-id"] == "00000000-0000-0000-0000-000000000001"
    assert annotations["azure.workload.identity/tenant-id"] == "00000000-0000-0000-0000-000000000002"
    pod = out.component("Deployment", "proxy")["spec"]["template"]
    assert pod["metadata"]["labels"]["azure.workload.identity/use"] == "true"
    assert pod["spec"]["serviceAccountName"] == account["metadata"]["name"]
    # Not on by default, and never on the control plane (it resolves no secrets).
    assert not rendered["default"].of_kind("ServiceMonitor")
    assert "annotations" not in rendered["default"].component("ServiceAccount", "proxy")["metadata"]
    cp_pod = out.component("Deployment", "control-plane")["spec"]["template"]
    assert "azure.workload.identity/use" not in cp_pod["metadata"]["labels"]


def env_of(deployment: dict) -> list[dict]:
    return container(deployment).get("env", [])


def env_names(deployment: dict) -> list[str]:
    return [e["name"] for e in env_of(deployment)]


AZURE_SETTINGS = {"SLUICE_AZURE_CREDENTIAL", "SLUICE_KEYVAULT_URL_TEMPLATE", "SLUICE_SECRET_REFRESH_SECS"}


def test_chart_azure_settings_only_when_set(rendered, cli):
    # Unset: the proxy runs with the binary's defaults (auto, public Azure, 300 s), and nothing
    # Azure-specific is rendered; workload identity alone adds only the label and annotation.
    for variant in ("default", "features", "telemetry"):
        for deployment in rendered[variant].of_kind("Deployment"):
            names = set(env_names(deployment))
            assert not names & AZURE_SETTINGS, (variant, names & AZURE_SETTINGS)
            assert not {n for n in names if n.startswith("AZURE_")}, "the webhook injects AZURE_*, not the chart"
    assert "azure.workload.identity/use" not in \
        rendered["default"].component("Deployment", "proxy")["spec"]["template"]["metadata"]["labels"]

    out = rendered["azure"]
    proxy = out.component("Deployment", "proxy")
    env = {e["name"]: e.get("value") for e in env_of(proxy)}
    assert env["SLUICE_AZURE_CREDENTIAL"] == "workload-identity"
    assert env["SLUICE_KEYVAULT_URL_TEMPLATE"] == "https://{vault}.vault.azure.cn"
    assert env["SLUICE_SECRET_REFRESH_SECS"] == "120"
    # Each is the variable of a real proxy flag, and the binary accepts the value.
    for name in AZURE_SETTINGS:
        assert name in cli["proxy"].envs, name
    check_argv(["proxy", "--control-plane", "http://cp:9091",
                *env_as_flags({n: env[n] for n in AZURE_SETTINGS}, "proxy", cli)], cli, "azure values")
    # The control plane resolves no secrets: none of it there.
    assert not set(env_names(out.component("Deployment", "control-plane"))) & AZURE_SETTINGS
    assert proxy["spec"]["template"]["metadata"]["labels"]["azure.workload.identity/use"] == "true"
    account = out.component("ServiceAccount", "proxy")
    assert account["metadata"]["annotations"] == {
        "azure.workload.identity/client-id": "00000000-0000-0000-0000-000000000001"}
    assert proxy["spec"]["template"]["spec"]["serviceAccountName"] == account["metadata"]["name"]


REDIS_SETTINGS = {"SLUICE_REDIS_URL", "SLUICE_LIMITS_SYNC_MS"}


def test_chart_redis_settings_only_when_set(rendered, cli):
    """redis.* reaches the proxies only, as SLUICE_REDIS_URL (a plain value, or a secretKeyRef to
    the operator's Secret, so a password never sits in the manifest) and SLUICE_LIMITS_SYNC_MS;
    without it the proxies count alone (the binary's default)."""
    for variant, out in rendered.items():
        if variant.startswith("redis"):
            continue
        for deployment in out.of_kind("Deployment"):
            assert not set(env_names(deployment)) & REDIS_SETTINGS, (variant, deployment["metadata"]["name"])
    for variant in ("redis", "redis-secret"):
        out = rendered[variant]
        assert not set(env_names(out.component("Deployment", "control-plane"))) & REDIS_SETTINGS, \
            "only proxies talk to Redis"
        for name in REDIS_SETTINGS:
            assert name in cli["proxy"].envs, name

    plain = {e["name"]: e for e in env_of(rendered["redis"].component("Deployment", "proxy"))}
    assert plain["SLUICE_REDIS_URL"] == {"name": "SLUICE_REDIS_URL", "value": "redis://sluice-redis-master.cache.svc:6379"}
    assert plain["SLUICE_LIMITS_SYNC_MS"]["value"] == "250"
    # The binary takes these values, and a cluster's seed list too.
    for url in (plain["SLUICE_REDIS_URL"]["value"], "rediss://node-1:6380,rediss://node-2:6380"):
        check_argv(["proxy", "--control-plane", "http://cp:9091",
                    *env_as_flags({"SLUICE_REDIS_URL": url, "SLUICE_LIMITS_SYNC_MS": "250"}, "proxy", cli)],
                   cli, f"redis values ({url})")
    cluster = render_chart({"redis": {"url": "rediss://node-1:6380,rediss://node-2:6380"}})
    assert "rediss://node-1:6380,rediss://node-2:6380" in "".join(cluster.values())

    out = rendered["redis-secret"]
    entries = {e["name"]: e for e in env_of(out.component("Deployment", "proxy"))}
    url = entries["SLUICE_REDIS_URL"]
    assert "value" not in url, "the URL (and its password) comes from the Secret only"
    assert url["valueFrom"] == {"secretKeyRef": {"name": "sluice-redis", "key": "url"}}
    assert entries["SLUICE_LIMITS_SYNC_MS"]["value"] == "200"
    assert not out.of_kind("Secret"), "the operator's Secret, not one the chart makes"
    manifests = "".join(out.files.values())
    assert "redis://" not in manifests and "rediss://" not in manifests
    # The default key name is what values.yaml and the chart README document.
    default_key = render_chart({"redis": {"existingSecret": "sluice-redis"}})
    assert "key: \"redis-url\"" in "".join(default_key.values())


def resolve_pod_env(entries: list[dict], pod_name: str) -> dict[str, str]:
    """A container's env as the kubelet computes it: literal values with $(VAR) references to
    earlier entries expanded, metadata.name from the downward API. Secret references are left
    out (there is no cluster)."""
    resolved: dict[str, str] = {}
    for entry in entries:
        if "value" in entry:
            resolved[entry["name"]] = re.sub(
                r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", lambda m: resolved.get(m.group(1), m.group(0)), entry["value"])
        elif entry.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") == "metadata.name":
            resolved[entry["name"]] = pod_name
    return resolved


def test_chart_telemetry_env_only_when_set(rendered):
    for variant in ("default", "features", "azure", "secrets"):
        for deployment in rendered[variant].of_kind("Deployment"):
            names = env_names(deployment)
            assert not [n for n in names if n.startswith("OTEL_")], (variant, names)
            assert "POD_NAME" not in names, variant

    out = rendered["telemetry"]
    services = {}
    for component in ("control-plane", "proxy"):
        deployment = out.component("Deployment", component)
        entries = env_of(deployment)
        names = [e["name"] for e in entries]
        env = resolve_pod_env(entries, f"sluice-{component}-7d9f-abcde")
        assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://otel-collector.monitoring:4317", component
        assert env["OTEL_TRACES_SAMPLER"] == "parentbased_traceidratio"
        assert env["OTEL_TRACES_SAMPLER_ARG"] == "0.05"
        assert env["OTEL_METRIC_EXPORT_INTERVAL"] == "30000"
        assert env["OTEL_BSP_MAX_QUEUE_SIZE"] == "4096"
        assert "OTEL_EXPORTER_OTLP_HEADERS" in names, "telemetry.extraEnv is rendered as given"
        services[component] = env["OTEL_SERVICE_NAME"]
        # Each pod is its own service instance, or the replicas' OTLP series would collide.
        attributes = dict(item.split("=", 1) for item in env["OTEL_RESOURCE_ATTRIBUTES"].split(","))
        assert attributes["service.instance.id"] == f"sluice-{component}-7d9f-abcde"
        assert attributes["k8s.namespace.name"] == NAMESPACE
        assert attributes["deployment.environment"] == "prod"
        # $(POD_NAME) only expands when POD_NAME comes first.
        assert names.index("POD_NAME") < names.index("OTEL_RESOURCE_ATTRIBUTES")
    assert services == {"control-plane": "sluice-control-plane", "proxy": "sluice-proxy"}


def test_chart_telemetry_env_is_accepted_by_the_binary(rendered, processes, tmp_path):
    """The OTEL_* variables the chart renders, given to the real binary: both components start
    and report OTLP export of traces and metrics to the configured endpoint (nothing listens
    there; exports fail quietly, which is what a missing collector looks like)."""
    out = rendered["telemetry"]
    config = tmp_path / "empty.yaml"
    config.write_text("pools: []\n")
    commands = {
        "proxy": ["--log-format", "json", "proxy", "--config", str(config),
                  "--addr", "127.0.0.1:0", "--ops-addr", "127.0.0.1:0"],
        "control-plane": ["--log-format", "json", "control-plane", "--database-url",
                          f"sqlite://{tmp_path / 'cp.db'}", "--admin-addr", "127.0.0.1:0", "--grpc-addr", "127.0.0.1:0"],
    }
    for component, argv in commands.items():
        env = resolve_pod_env(env_of(out.component("Deployment", component)), f"sluice-{component}-0")
        env = {k: v for k, v in env.items() if not k.startswith("SLUICE_")}
        if component == "control-plane":
            env.update(SLUICE_ADMIN_TOKEN="chart-test-admin-token", SLUICE_PROXY_TOKEN="chart-test-proxy-token")
        proc = processes(component, argv, env)
        proc.wait_for_field("ops.addr" if component == "proxy" else "admin.addr")

        def exporting(signal: str):
            return next((line for line in proc.log_lines() if line.get("message") == f"exporting {signal} over OTLP"), None)

        metrics = wait_until(lambda: exporting("metrics"), what=f"{component} to export metrics")
        assert metrics["endpoint"] == env["OTEL_EXPORTER_OTLP_ENDPOINT"], metrics
        assert metrics["interval"] == "30s", metrics
        assert exporting("traces"), f"{component} does not export traces"
        assert proc.proc.poll() is None, f"{component} exited"


def test_required_values_are_enforced():
    import helm_python as helm

    with pytest.raises(helm.HelmError, match="azure.workloadIdentity.clientId"):
        render_chart({"azure": {"workloadIdentity": {"enabled": True}}})
    with pytest.raises(helm.HelmError, match="secrets.adminToken"):
        render_chart({"secrets": {"create": True}})
    # Chart 0.1's key is refused with a pointer, not silently ignored (Key Vault would break).
    with pytest.raises(helm.HelmError, match="moved to azure.workloadIdentity"):
        render_chart({"workloadIdentity": {"enabled": True, "clientId": "x"}})
    # Redis: one source for the URL, never a password in a plain value, a sane sync interval.
    with pytest.raises(helm.HelmError, match="redis.url or redis.existingSecret, not both"):
        render_chart({"redis": {"url": "redis://r:6379", "existingSecret": "sluice-redis"}})
    for with_password in ("rediss://:s3cret@my-cache.redis.cache.windows.net:6380",
                          "redis://sluice:s3cret@r:6379",
                          "redis://a:6379,redis://:s3cret@b:6379"):
        with pytest.raises(helm.HelmError, match="redis.url holds a password") as refused:
            render_chart({"redis": {"url": with_password}})
        assert "s3cret" not in str(refused.value), "the refusal must not echo the password"
    with pytest.raises(helm.HelmError, match="redis.url: each comma-separated URL") as refused:
        render_chart({"redis": {"url": "my-cache:s3cret@host:6379"}})
    assert "s3cret" not in str(refused.value), "the refusal must not echo what may be a password"
    # Proxies with no control plane of this release need to be told which one to follow.
    with pytest.raises(helm.HelmError, match="proxy.controlPlaneUrl is required when controlPlane.enabled is false"):
        render_chart({"controlPlane": {"enabled": False}})
    with pytest.raises(helm.HelmError, match="proxy.controlPlaneUrl must be an https:// URL while grpcTls.enabled"):
        render_chart({"grpcTls": {"enabled": True}, "proxy": {"controlPlaneUrl": "http://cp:9091"}})
    with pytest.raises(helm.HelmError, match="proxies following another release's control plane need a CA"):
        render_chart({"grpcTls": {"enabled": True}, "controlPlane": {"enabled": False},
                      "proxy": {"controlPlaneUrl": "https://cp.example:9091"}})
    with pytest.raises(helm.HelmError, match="grpcTls.certManager.issuerRef.name is required"):
        render_chart({"grpcTls": {"enabled": True, "certManager": {"enabled": True}}})
    with pytest.raises(helm.HelmError, match="grpcTls.caBundle must hold PEM certificates"):
        render_chart({"grpcTls": {"enabled": True, "caBundle": "not a certificate"}})
    with pytest.raises(helm.HelmError, match="grpcTls.caBundle holds a private key"):
        render_chart({"grpcTls": {"enabled": True, "caBundle": TEST_CA_PEM + "-----BEGIN PRIVATE KEY-----\n"}})
    # HTTPS from cert-manager needs an issuer; an in-flight target the cap never lets pods reach
    # would never scale.
    for key in ("proxy", "controlPlane"):
        with pytest.raises(helm.HelmError, match=f"{key}.tls.certManager.issuerRef.name is required"):
            render_chart({key: {"tls": {"enabled": True, "certManager": {"enabled": True}}}})
    with pytest.raises(helm.HelmError, match=r"proxy.autoscaling.inflightTarget \(1000\) must be below proxy.maxConcurrentRequests \(1000\)"):
        render_chart({"proxy": {"maxConcurrentRequests": 1000, "autoscaling": {"inflightTarget": 1000}}})
    with pytest.raises(helm.HelmError, match=r"proxy.autoscaling.minReplicas \(5\) must not exceed maxReplicas \(4\)"):
        render_chart({"proxy": {"autoscaling": {"minReplicas": 5, "maxReplicas": 4}}})
    # Secret key names: one per value in a Secret the chart makes; one source for the URL.
    with pytest.raises(helm.HelmError, match="secrets.keys: the Secret the chart creates needs a different key"):
        render_chart({"secrets": {**CHART_VARIANTS["secrets"]["secrets"], "keys": {"proxyToken": "admin-token"}}})
    with pytest.raises(helm.HelmError, match="set secrets.databaseUrl or secrets.databaseUrlSecret, not both"):
        render_chart({"secrets": {**CHART_VARIANTS["secrets"]["secrets"], "databaseUrlSecret": "pg-app"}})


def test_every_value_a_template_reads_is_defined(chart_values):
    """values.yaml promises it lists every key the templates read (Helm renders a missing one as
    empty without a word, even with lint --strict)."""
    missing = []
    for template in sorted(p for p in (CHART / "templates").rglob("*") if p.is_file()):
        for path in re.findall(r"\.Values((?:\.[A-Za-z_][A-Za-z0-9_]*)+)", template.read_text()):
            node = chart_values
            for key in path.strip(".").split("."):
                if not isinstance(node, dict) or key not in node:
                    missing.append(f"{template.name}: .Values{path}")
                    break
                node = node[key]
    assert not missing, missing


def container(deployment: dict) -> dict:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def named_port(c: dict, name) -> int:
    if isinstance(name, int):
        return name
    ports = {p["name"]: p["containerPort"] for p in c.get("ports", [])}
    assert name in ports, f"container {c['name']} has no port named {name}"
    return ports[name]


@pytest.mark.parametrize("variant", ["default", "features", "azure", "telemetry", "secrets", "redis", "redis-secret",
                                     "sleep-action", "proxies-only", "grpc-tls", "grpc-tls-ca", "proxies-only-mtls",
                                     "cnpg", "https-secrets", "https-cert-manager"])
def test_chart_container_args_and_env_are_real(rendered, cli, variant):
    for deployment in rendered[variant].of_kind("Deployment"):
        c = container(deployment)
        assert "command" not in c, "the image's ENTRYPOINT is sluice; the chart passes args only"
        where = f"{variant} Deployment {deployment['metadata']['name']}"
        command = check_argv(c["args"], cli, where)
        assert command == deployment["metadata"]["labels"]["app.kubernetes.io/component"]
        names = [e["name"] for e in c.get("env", [])]
        check_env_names(names, command, cli, where)
        assert len(names) == len(set(names)), names
        # A setting given twice (flag and env) would be ambiguous to whoever reads the manifest.
        flags = flag_values(c["args"])
        for name in names:
            flag = next((o.flag for o in cli[command].options.values() if o.env == name), None)
            assert flag not in flags, f"{where}: both {flag} and {name}"
        # The binary accepts the SLUICE_* values the chart sets (as the flags they stand for).
        plain = {e["name"]: e["value"] for e in c.get("env", []) if "value" in e}
        check_argv([*c["args"], *env_as_flags(plain, command, cli)], cli, where)


@pytest.mark.parametrize("variant", ["default", "features", "sleep-action", "exposed", "grpc-tls", "https-secrets",
                                     "https-cert-manager"])
def test_chart_ports_and_probes_match_the_flags(rendered, cli, variant):
    out = rendered[variant]
    for component, listen in LISTEN_FLAGS.items():
        if component == "mock-upstream":
            continue
        if component == "proxy" and out.values["proxy"]["tls"]["enabled"]:
            listen = {"https": listen["http"], "ops": listen["ops"]}
        deployment = out.component("Deployment", component)
        c = container(deployment)
        flags = flag_values(c["args"])
        ports = {p["name"]: p["containerPort"] for p in c["ports"]}
        assert set(ports) == set(listen), ports
        for name, flag in listen.items():
            actual = port_of(flags[flag]) if flag in flags else cli[component].default_port(flag)
            assert ports[name] == actual, f"{component}: containerPort {name}={ports[name]}, but it listens on {actual}"
            assert flags.get(flag, "0.0.0.0:").startswith(("0.0.0.0:", "[::]:")), "pods must listen on all interfaces"
        ops_port = "admin" if component == "control-plane" else "ops"
        for kind in ("readinessProbe", "livenessProbe", "startupProbe"):
            probe = c.get(kind)
            if probe is None:
                continue
            get = probe["httpGet"]
            assert named_port(c, get["port"]) == named_port(c, ops_port), f"{component} {kind} must hit the {ops_port} port"
            assert get["path"] in {"/healthz", "/readyz"}, get
            # Only the admin port serves TLS; the proxies' ops port stays plain.
            https = component == "control-plane" and out.values["controlPlane"]["tls"]["enabled"]
            assert get.get("scheme", "HTTP") == ("HTTPS" if https else "HTTP"), f"{component} {kind}: {get}"
        assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
        assert c["readinessProbe"]["httpGet"]["path"] in {"/healthz", "/readyz"}
        if component == "proxy":
            # A proxy is ready once it holds a config (from the control plane or its cache).
            assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"

        # Services target named container ports of the pods they select.
        pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
        services = [s for s in out.of_kind("Service") if s["metadata"]["labels"]["app.kubernetes.io/component"] == component]
        assert services
        for service in services:
            assert service["spec"]["selector"].items() <= pod_labels.items()
            for port in service["spec"]["ports"]:
                assert named_port(c, port["targetPort"]) == port["port"], port
        assert deployment["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
        pdb = out.component("PodDisruptionBudget", component)
        assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()


def test_chart_proxies_follow_the_control_plane_service(rendered):
    out = rendered["secrets"]
    proxy = container(out.component("Deployment", "proxy"))
    cp = container(out.component("Deployment", "control-plane"))
    service = out.component("Service", "control-plane")
    url = flag_values(proxy["args"])["--control-plane"]
    m = re.fullmatch(r"http://([a-z0-9.-]+):(\d+)", url)
    assert m, url
    assert m.group(1) == service["metadata"]["name"]
    grpc = next(p for p in service["spec"]["ports"] if p["name"] == "grpc")
    assert int(m.group(2)) == grpc["port"]
    hpa = out.component("HorizontalPodAutoscaler", "proxy")
    assert hpa["spec"]["scaleTargetRef"]["name"] == out.component("Deployment", "proxy")["metadata"]["name"]

    # Tokens and the database URL come from the Secret; every key referenced exists in it.
    secret = out.of_kind("Secret")[0]
    refs = {
        (c["name"], e["name"]): e["valueFrom"]["secretKeyRef"]
        for c in (proxy, cp) for e in c["env"] if "secretKeyRef" in e.get("valueFrom", {})
    }
    assert {("control-plane", "SLUICE_DATABASE_URL"), ("control-plane", "SLUICE_ADMIN_TOKEN"),
            ("control-plane", "SLUICE_PROXY_TOKEN"), ("proxy", "SLUICE_PROXY_TOKEN")} <= set(refs)
    for ref in refs.values():
        assert ref["name"] == secret["metadata"]["name"]
        assert ref["key"] in secret["stringData"], ref
    data = secret["stringData"]
    # The proxies present one token; the control plane accepts a list that includes it.
    assert refs[("proxy", "SLUICE_PROXY_TOKEN")]["key"] == "proxy-token"
    assert data["proxy-token"] in data[refs[("control-plane", "SLUICE_PROXY_TOKEN")]["key"]].split(",")
    for key in ("admin-token", "proxy-token", "proxy-tokens"):
        assert all(len(t) >= 16 for t in data[key].split(",")), key

    # Default render: the Secret is brought by the operator, under the documented name.
    default = rendered["default"]
    assert not default.of_kind("Secret")
    name = container(default.component("Deployment", "proxy"))["env"][0]["valueFrom"]["secretKeyRef"]["name"]
    assert name == f"{RELEASE}-secrets"


@pytest.mark.parametrize("variant", ["default", "sleep-action"])
def test_chart_cache_shutdown_and_security(rendered, cli, variant):
    out = rendered[variant]
    for component in ("control-plane", "proxy"):
        deployment = out.component("Deployment", component)
        pod = deployment["spec"]["template"]["spec"]
        c = container(deployment)
        assert c["securityContext"]["readOnlyRootFilesystem"] is True
        assert c["securityContext"]["allowPrivilegeEscalation"] is False
        assert pod["securityContext"]["runAsNonRoot"] is True
        pre_stop = c["lifecycle"]["preStop"]
        if out.values["useSleepAction"]:
            sleep = pre_stop["sleep"]["seconds"]
        else:
            command = pre_stop["exec"]["command"]
            assert command[0] == "/bin/sleep", command
            sleep = int(command[1])
        if component == "proxy":
            flags = flag_values(c["args"])
            drain = int(flags.get("--drain-timeout-secs") or cli["proxy"].options["--drain-timeout-secs"].default)
            assert pod["terminationGracePeriodSeconds"] >= sleep + drain, "SIGKILL would cut the drain short"
            cache = flags.get("--cache-dir") or cli["proxy"].options["--cache-dir"].default
            mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
            assert cache in mounts, f"--cache-dir {cache} is not a mounted volume (the root filesystem is read-only)"
            volume = next(v for v in pod["volumes"] if v["name"] == mounts[cache])
            assert "emptyDir" in volume, "the cache outlives container restarts inside the pod"
        else:
            assert pod["terminationGracePeriodSeconds"] > sleep


# ------------------------------------------------------------------------------------------------
# Helm chart: values schema, checksums, Secret keys, exposure, NetworkPolicy, gRPC TLS, helm test
# ------------------------------------------------------------------------------------------------

def schema_closed_keys(schema: dict, values, path: str = "") -> list[str]:
    """Differences between values.yaml and the schema's closed objects: keys of values.yaml the
    schema does not describe, and properties the schema describes that values.yaml lacks (an
    empty default, like `timeouts: {}`, leaves its optional keys out)."""
    problems = []
    if not isinstance(values, dict) or schema.get("additionalProperties") is not False:
        return problems
    properties = schema.get("properties", {})
    for key, value in values.items():
        if key not in properties:
            problems.append(f"values.yaml {path}{key} is not in values.schema.json")
        else:
            problems += schema_closed_keys(properties[key], value, f"{path}{key}.")
    for key in properties if values else ():
        if key not in values and f"{path}{key}" not in ("global", "workloadIdentity"):
            problems.append(f"values.schema.json {path}{key} is not in values.yaml")
    return problems


def test_values_schema_describes_values_yaml(chart_values):
    """values.schema.json and values.yaml list the same keys (a key only in the schema is a value
    nobody documented; one only in values.yaml would be refused at install), and the defaults
    pass the schema."""
    import jsonschema

    schema = json.loads((CHART / "values.schema.json").read_text())
    assert not schema_closed_keys(schema, chart_values), schema_closed_keys(schema, chart_values)
    jsonschema.validate(chart_values, schema)


# (values, what Helm's refusal says). Each is refused by `helm template`/`install` (render) and
# reported by `helm lint`.
BAD_VALUES = [
    ({"proxy": {"replica": 2}}, "at '/proxy': additional properties 'replica' not allowed"),
    ({"controlPlan": {"replicas": 2}}, "additional properties 'controlPlan' not allowed"),
    ({"proxy": {"port": "8080"}}, "at '/proxy/port': got string, want integer"),
    ({"controlPlane": {"adminPort": 70000}}, "at '/controlPlane/adminPort': maximum: got 70,000, want 65,535"),
    ({"controlPlane": {"replicas": 0}}, "at '/controlPlane/replicas': minimum: got 0, want 1"),
    ({"logFormat": "xml"}, "at '/logFormat': value must be one of 'json', 'text'"),
    ({"image": {"repository": ""}}, "at '/image/repository': minLength: got 0, want 1"),
    ({"image": {"tag": 1.2}}, "at '/image/tag': got number, want string"),
    ({"azure": {"credential": "client-cert"}}, "at '/azure/credential': value must be one of"),
    ({"azure": {"keyvaultUrlTemplate": "http://{vault}.vault.azure.net"}},
     "at '/azure/keyvaultUrlTemplate': 'http://{vault}.vault.azure.net' does not match pattern"),
    ({"redis": {"url": "redis://r:6379", "syncMs": 5}}, "minimum: got 5, want 10"),
    ({"redis": {"existingSecret": "sluice-redis", "secretKey": ""}}, "at '/redis/secretKey'"),
    ({"telemetry": {"protocol": "http"}}, "at '/telemetry/protocol': value must be one of '', 'grpc', 'http/protobuf', 'http/json'"),
    ({"telemetry": {"otlpEndpoint": "otel-collector:4317"}}, "at '/telemetry/otlpEndpoint'"),
    ({"proxy": {"cacheSizeLimit": "64MB"}}, "at '/proxy/cacheSizeLimit': '64MB' does not match pattern"),
    ({"serviceMonitor": {"interval": "30 seconds"}}, "at '/serviceMonitor/interval'"),
    ({"proxy": {"service": {"type": "Ingress"}}}, "at '/proxy/service/type': value must be one of"),
    ({"proxy": {"httpRoute": {"enabled": True}}}, "at '/proxy/httpRoute/parentRefs': minItems: got 0, want 1"),
    ({"proxy": {"ingress": {"enabled": True, "hosts": [{"host": "a.example", "paths": [{"path": "v1"}]}]}}},
     "at '/proxy/ingress/hosts/0/paths/0/path': 'v1' does not match pattern '^/'"),
    ({"secrets": {"keys": {"databaseUrl": "uri/x"}}}, "at '/secrets/keys/databaseUrl'"),
    ({"grpcTls": {"enabled": "yes"}}, "at '/grpcTls/enabled': got string, want boolean"),
    ({"proxy": {"workers": 0}}, "at '/proxy/workers'"),
    ({"proxy": {"workers": "2"}}, "at '/proxy/workers'"),
    ({"proxy": {"maxConcurrentRequests": -1}}, "at '/proxy/maxConcurrentRequests'"),
    ({"proxy": {"autoscaling": {"inflightTarget": 0}}}, "at '/proxy/autoscaling/inflightTarget'"),
    ({"proxy": {"tls": {"enabled": "true"}}}, "at '/proxy/tls/enabled': got string, want boolean"),
    ({"proxy": {"tls": {"secret": "my-proxy-tls"}}}, "at '/proxy/tls': additional properties 'secret' not allowed"),
    ({"controlPlane": {"tls": {"secretName": "My_Secret"}}}, "at '/controlPlane/tls/secretName'"),
    ({"controlPlane": {"tls": {"certManager": {"renewBefore": "30d"}}}}, "at '/controlPlane/tls/certManager/renewBefore'"),
    ({"grpcTls": {"certManager": {"duration": "90d"}}}, "at '/grpcTls/certManager/duration'"),
    ({"networkPolicy": {"clientsFrom": {"namespaceSelector": {}}}}, "at '/networkPolicy/clientsFrom': got object, want array"),
    ({"workloadIdentity": {"enabled": True, "clientId": "x"}},
     "at '/workloadIdentity': value must be 'moved to azure.workloadIdentity (same keys: enabled, clientId, tenantId)'"),
]


@pytest.mark.parametrize("values,message", BAD_VALUES, ids=[m.split("'")[1] if "'" in m else m for _, m in BAD_VALUES])
def test_bad_values_are_refused_by_the_schema(values, message):
    import helm_python as helm

    with pytest.raises(helm.HelmValuesError) as refused:
        render_chart(values)
    assert message in str(refused.value), str(refused.value)
    report = helm.lint(str(CHART), values, strict=True, namespace=NAMESPACE)
    assert any(message in error for error in report["errors"]), report


def test_schema_refusals_never_print_a_secret():
    """Values that hold credentials have no pattern in the schema, so a refusal (which prints a
    value that fails a pattern) cannot show one."""
    import helm_python as helm

    for values in ({"secrets": {"adminToken": 1234567890123456789}},
                   {"secrets": {"databaseUrl": ["postgres://u:s3cret@h/db"]}},
                   {"redis": {"url": {"u": "rediss://:s3cret@h:6380"}}}):
        with pytest.raises(helm.HelmValuesError) as refused:
            render_chart(values)
        assert "s3cret" not in str(refused.value) and "1234567890123456789" not in str(refused.value)
    schema = json.loads((CHART / "values.schema.json").read_text())
    for section, keys in (("secrets", ("adminToken", "proxyToken", "acceptedProxyTokens", "databaseUrl")),
                          ("redis", ("url",))):
        for key in keys:
            assert "pattern" not in schema["properties"][section]["properties"][key], f"{section}.{key}"


def rendered_objects(files: dict[str, str]) -> list[dict]:
    """The Kubernetes objects of a render_chart() result (NOTES.txt left out)."""
    return [d for path, text in files.items() if path.endswith(".yaml") for d in yaml.safe_load_all(text) if d]


def pod_annotations(out: Rendered, component: str) -> dict:
    return out.component("Deployment", component)["spec"]["template"]["metadata"].get("annotations", {})


def test_checksum_annotations_roll_exactly_the_pods_that_read_a_change(rendered):
    """checksum/secret (a Secret the chart makes) covers what each component reads from it;
    checksum/config covers the CA bundle ConfigMap. A change restarts the pods that read it."""
    base = CHART_VARIANTS["secrets"]["secrets"]

    def checksums(values: dict) -> dict[str, dict]:
        files = render_chart(values)
        out = Rendered(values=values, files=files, docs=[("", d) for d in rendered_objects(files)])
        return {c: pod_annotations(out, c) for c in ("control-plane", "proxy")}

    start = checksums({"secrets": base})
    assert all("checksum/secret" in a for a in start.values()), start
    admin = checksums({"secrets": {**base, "adminToken": "another-admin-token-1"}})
    assert admin["control-plane"]["checksum/secret"] != start["control-plane"]["checksum/secret"]
    assert admin["proxy"]["checksum/secret"] == start["proxy"]["checksum/secret"], "the proxies read no admin token"
    proxy = checksums({"secrets": {**base, "proxyToken": "another-proxy-token-1"}})
    for component in ("control-plane", "proxy"):  # the control planes accept it, the proxies present it
        assert proxy[component]["checksum/secret"] != start[component]["checksum/secret"], component
    assert checksums({"secrets": base}) == start, "the checksum is stable"
    # The Secret is yours: the chart cannot see it, so there is no checksum.
    for component in ("control-plane", "proxy"):
        assert "checksum/secret" not in pod_annotations(rendered["default"], component)
        assert "checksum/config" not in pod_annotations(rendered["default"], component)

    out = rendered["grpc-tls-ca"]
    configmap = out.named("ConfigMap", f"{RELEASE}-grpc-ca")
    assert configmap["data"]["ca.crt"].strip() == TEST_CA_PEM.strip()
    other_ca = TEST_CA_PEM.replace("MIIBtest", "MIIBother")
    changed = checksums({"grpcTls": {**CHART_VARIANTS["grpc-tls-ca"]["grpcTls"], "caBundle": other_ca}})
    for component in ("control-plane", "proxy"):
        assert pod_annotations(out, component)["checksum/config"] != changed[component]["checksum/config"], component


def secret_refs(deployment: dict) -> dict[str, dict]:
    return {e["name"]: e["valueFrom"]["secretKeyRef"] for e in env_of(deployment)
            if "secretKeyRef" in e.get("valueFrom", {})}


def test_secret_key_names_are_configurable(rendered):
    """The database URL can come from CloudNativePG's application Secret (key `uri`) while the
    tokens come from the chart's Secret; a Secret the chart makes uses the configured key names."""
    out = rendered["cnpg"]
    cp = secret_refs(out.component("Deployment", "control-plane"))
    assert cp["SLUICE_DATABASE_URL"] == {"name": "pg-app", "key": "uri"}
    assert cp["SLUICE_ADMIN_TOKEN"] == {"name": f"{RELEASE}-secrets", "key": "admin-token"}
    assert cp["SLUICE_PROXY_TOKEN"] == {"name": f"{RELEASE}-secrets", "key": "proxy-tokens"}
    assert "pg-app" in out.files[f"{RELEASE}/templates/NOTES.txt"]

    keys = {"adminToken": "ADMIN_TOKEN", "acceptedProxyTokens": "PROXY_TOKENS", "proxyToken": "PROXY_TOKEN",
            "databaseUrl": "DATABASE_URL"}
    files = render_chart({"secrets": {**CHART_VARIANTS["secrets"]["secrets"], "keys": keys}})
    docs = rendered_objects(files)
    secret = next(d for d in docs if d["kind"] == "Secret")
    assert set(secret["stringData"]) == set(keys.values())
    for deployment in (d for d in docs if d["kind"] == "Deployment"):
        for ref in secret_refs(deployment).values():
            assert ref["name"] == secret["metadata"]["name"] and ref["key"] in secret["stringData"], ref

    # Made by the chart, with the URL elsewhere: the chart's Secret holds the tokens only.
    files = render_chart({"secrets": {**{k: v for k, v in CHART_VARIANTS["secrets"]["secrets"].items() if k != "databaseUrl"},
                                      "databaseUrlSecret": "pg-app", "keys": {"databaseUrl": "uri"}}})
    secret = next(d for d in rendered_objects(files) if d["kind"] == "Secret")
    assert set(secret["stringData"]) == {"admin-token", "proxy-token", "proxy-tokens"}


def test_control_plane_takes_a_cloudnativepg_uri(fresh_database, processes, tmp_path):
    """CloudNativePG's `uri` key holds a postgresql:// URL; the control plane connects with it."""
    url = fresh_database.replace("postgres://", "postgresql://", 1)
    assert url.startswith("postgresql://")
    cp = processes("cp", ["--log-format", "json", "control-plane", "--admin-addr", "127.0.0.1:0", "--grpc-addr", "127.0.0.1:0"],
                   {"SLUICE_DATABASE_URL": url, "SLUICE_ADMIN_TOKEN": "chart-test-admin-token",
                    "SLUICE_PROXY_TOKEN": "chart-test-proxy-token"})
    admin = cp.wait_for_field("admin.addr")
    wait_until(lambda: http("GET", f"http://{admin}/readyz")[0] == 200, what="the control plane's database to answer")


def test_ops_port_has_its_own_service(rendered):
    """The proxies' client Service carries client traffic only, whatever its type; /metrics and
    the health endpoints are on a ClusterIP Service of their own, which the ServiceMonitor and
    `helm test` use."""
    out = rendered["exposed"]
    client = out.named("Service", f"{RELEASE}-proxy")
    ops = out.named("Service", f"{RELEASE}-proxy-ops")
    assert client["spec"]["type"] == "LoadBalancer"
    assert [p["name"] for p in client["spec"]["ports"]] == ["http"]
    assert ops["spec"]["type"] == "ClusterIP"
    assert [p["name"] for p in ops["spec"]["ports"]] == ["ops"]
    proxy = container(out.component("Deployment", "proxy"))
    assert ops["spec"]["ports"][0]["port"] == port_of(flag_values(proxy["args"])["--ops-addr"])
    monitor = out.of_kind("ServiceMonitor")[0]
    selector = monitor["spec"]["selector"]["matchLabels"]
    for endpoint in monitor["spec"]["endpoints"]:
        matched = [s["metadata"]["name"] for s in out.of_kind("Service")
                   if selector.items() <= s["metadata"]["labels"].items()
                   and endpoint["port"] in {p["name"] for p in s["spec"]["ports"]}]
        expected = {"ops": [f"{RELEASE}-proxy-ops"], "admin": [f"{RELEASE}-control-plane"]}[endpoint["port"]]
        assert matched == expected, (endpoint, matched)


def test_ingress_and_httproute_reach_the_proxies_only(rendered):
    out = rendered["exposed"]
    client = out.named("Service", f"{RELEASE}-proxy")
    proxy_port = client["spec"]["ports"][0]

    ingress = out.named("Ingress", f"{RELEASE}-proxy")
    values = CHART_VARIANTS["exposed"]["proxy"]["ingress"]
    assert ingress["spec"]["ingressClassName"] == "nginx"
    assert ingress["metadata"]["annotations"] == values["annotations"]
    assert ingress["spec"]["tls"] == values["tls"]
    rules = ingress["spec"]["rules"]
    assert [r["host"] for r in rules] == ["sluice.example.com"]
    for rule in rules:
        for path in rule["http"]["paths"]:
            assert (path["path"], path["pathType"]) == ("/", "Prefix")
            assert path["backend"]["service"] == {"name": client["metadata"]["name"], "port": {"name": proxy_port["name"]}}
    # Streaming through ingress-nginx: no response buffering, long reads, bodies up to maxBodyBytes.
    annotations = ingress["metadata"]["annotations"]
    assert annotations["nginx.ingress.kubernetes.io/proxy-buffering"] == "off"
    body_size = int(annotations["nginx.ingress.kubernetes.io/proxy-body-size"].rstrip("m")) * 1024 * 1024
    assert body_size >= out.values["proxy"]["maxBodyBytes"]

    route = out.named("HTTPRoute", f"{RELEASE}-proxy")
    assert route["apiVersion"] == "gateway.networking.k8s.io/v1"
    spec = route["spec"]
    assert spec["parentRefs"] == CHART_VARIANTS["exposed"]["proxy"]["httpRoute"]["parentRefs"]
    assert spec["hostnames"] == ["sluice.example.com"]
    assert len(spec["rules"]) == 1
    rule = spec["rules"][0]
    assert rule["matches"] == [{"path": {"type": "PathPrefix", "value": "/"}}]
    assert rule["backendRefs"] == [{"name": client["metadata"]["name"], "port": proxy_port["port"]}]
    assert rule["timeouts"] == {"request": "3600s"}

    # Nothing routes to the admin API or the ops port, in any variant.
    for variant, rendered_variant in rendered.items():
        for doc in rendered_variant.of_kind("Ingress") + rendered_variant.of_kind("HTTPRoute"):
            text = json.dumps(doc)
            assert "control-plane" not in text and "proxy-ops" not in text, variant
    assert not rendered["default"].of_kind("Ingress") and not rendered["default"].of_kind("HTTPRoute")

    # No hosts: one rule for every host.
    files = render_chart({"proxy": {"ingress": {"enabled": True}}})
    ingress = next(d for d in rendered_objects(files) if d["kind"] == "Ingress")
    assert len(ingress["spec"]["rules"]) == 1 and "host" not in ingress["spec"]["rules"][0]


def peer_matches(peer: dict, pod_labels: dict) -> bool:
    """Whether a NetworkPolicyPeer admits a pod of the release's own namespace with these labels
    (matchLabels only: what the chart renders)."""
    if "namespaceSelector" in peer or "ipBlock" in peer:
        return False
    return peer["podSelector"].get("matchLabels", {}).items() <= pod_labels.items()


def test_network_policies_keep_the_admin_api_private(rendered):
    out = rendered["exposed"]
    values = CHART_VARIANTS["exposed"]["networkPolicy"]
    policies = {p["metadata"]["labels"]["app.kubernetes.io/component"]: p for p in out.of_kind("NetworkPolicy")}
    assert set(policies) == {"proxy", "control-plane"}
    pods = {c: out.component("Deployment", c)["spec"]["template"]["metadata"]["labels"] for c in policies}
    test_pod = out.of_kind("Pod")[0]["metadata"]["labels"]

    def rules(component: str) -> dict[str, list | None]:
        """port name -> peers allowed (None: anyone)."""
        policy = policies[component]["spec"]
        assert policy["policyTypes"] == ["Ingress"], "egress stays open (values.yaml says why)"
        assert policy["podSelector"]["matchLabels"].items() <= pods[component].items()
        c = container(out.component("Deployment", component))
        allowed = {}
        for rule in policy["ingress"]:
            for port in rule["ports"]:
                named_port(c, port["port"])  # a port the container has
                allowed[port["port"]] = rule.get("from")
        return allowed

    proxy = rules("proxy")
    assert set(proxy) == {"http", "ops"}
    assert proxy["http"] is None, "clients may come from anywhere unless clientsFrom names them"
    assert any(peer_matches(p, test_pod) for p in proxy["ops"])
    assert values["metricsFrom"][0] in proxy["ops"]
    assert not any(peer_matches(p, pods["control-plane"]) for p in proxy["ops"])

    cp = rules("control-plane")
    assert set(cp) == {"grpc", "admin"}
    assert any(peer_matches(p, pods["proxy"]) for p in cp["grpc"]), "this release's proxies follow the control plane"
    assert values["grpcFrom"][0] in cp["grpc"]
    assert not any(peer_matches(p, test_pod) for p in cp["grpc"])
    assert not any(peer_matches(p, pods["proxy"]) for p in cp["admin"]), "proxies never call the admin API"
    assert any(peer_matches(p, test_pod) for p in cp["admin"])
    assert values["adminFrom"][0] in cp["admin"] and values["metricsFrom"][0] in cp["admin"]
    assert all(p in [*values["adminFrom"], *values["metricsFrom"]] or peer_matches(p, test_pod) for p in cp["admin"])

    clients = [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}}}]
    files = render_chart({"networkPolicy": {"enabled": True, "clientsFrom": clients}})
    policy = next(d for d in rendered_objects(files)
                  if d["kind"] == "NetworkPolicy" and d["metadata"]["name"] == f"{RELEASE}-proxy")
    http_rule = next(r for r in policy["spec"]["ingress"] if r["ports"][0]["port"] == "http")
    assert http_rule["from"] == clients
    assert not rendered["default"].of_kind("NetworkPolicy")


def mounted_file(deployment: dict, path: str) -> tuple[dict, str]:
    """The pod volume a file path lies in, and the key (file name) inside it."""
    c = container(deployment)
    mount = next((m for m in c["volumeMounts"] if path.startswith(m["mountPath"].rstrip("/") + "/")), None)
    assert mount, f"{path} is in no mounted volume"
    volume = next(v for v in deployment["spec"]["template"]["spec"]["volumes"] if v["name"] == mount["name"])
    key = path[len(mount["mountPath"].rstrip("/")) + 1:]
    return volume, key


def volume_source(volume: dict, key: str) -> tuple[str, str]:
    """("Secret" | "ConfigMap", name) a file of a Secret or ConfigMap volume comes from; the key
    is projected (items, when listed)."""
    kind, source = ("Secret", volume["secret"]) if "secret" in volume else ("ConfigMap", volume["configMap"])
    name = source.get("secretName") or source.get("name")
    if "items" in source:
        assert key in {i["path"] for i in source["items"]}, f"{key} is not projected from {name}"
    return kind, name


def test_grpc_tls_values_map_to_the_flags_and_mounted_certificates(rendered):
    out = rendered["grpc-tls"]
    cp = out.component("Deployment", "control-plane")
    proxy = out.component("Deployment", "proxy")
    cp_flags = flag_values(container(cp)["args"])
    proxy_flags = flag_values(container(proxy)["args"])
    certificates = {c["spec"]["secretName"]: c for c in out.of_kind("Certificate")}
    assert set(certificates) == {f"{RELEASE}-grpc-server", f"{RELEASE}-grpc-client"}
    for certificate in certificates.values():
        assert certificate["apiVersion"] == "cert-manager.io/v1"
        assert certificate["spec"]["issuerRef"] == {"name": "sluice-ca", "kind": "ClusterIssuer", "group": "cert-manager.io"}
        assert certificate["spec"]["privateKey"] == {"algorithm": "ECDSA", "size": 256, "encoding": "PKCS8",
                                                     "rotationPolicy": "Always"}
        assert re.fullmatch(r"\d+h", certificate["spec"]["duration"]) and re.fullmatch(r"\d+h", certificate["spec"]["renewBefore"])

    # Control plane: serves with the server certificate, asks proxies for one signed by its CA.
    for flag, key in (("--grpc-tls-cert", "tls.crt"), ("--grpc-tls-key", "tls.key"), ("--grpc-client-ca", "ca.crt")):
        volume, file = mounted_file(cp, cp_flags[flag])
        assert file == key and volume_source(volume, file) == ("Secret", f"{RELEASE}-grpc-server"), flag
    server = certificates[f"{RELEASE}-grpc-server"]["spec"]
    assert "server auth" in server["usages"]
    # Proxies dial a name the server certificate holds, and present the client certificate.
    url = proxy_flags["--control-plane"]
    host = re.fullmatch(r"https://([^:/]+):(\d+)", url)
    assert host, url
    assert host.group(1) in server["dnsNames"] and "sluice-cp.example.internal" in server["dnsNames"]
    assert int(host.group(2)) == next(p["port"] for p in out.component("Service", "control-plane")["spec"]["ports"]
                                      if p["name"] == "grpc")
    for flag, key in (("--control-plane-ca", "ca.crt"), ("--client-cert", "tls.crt"), ("--client-key", "tls.key")):
        volume, file = mounted_file(proxy, proxy_flags[flag])
        assert file == key and volume_source(volume, file) == ("Secret", f"{RELEASE}-grpc-client"), flag
    assert "client auth" in certificates[f"{RELEASE}-grpc-client"]["spec"]["usages"]
    # The proxies never mount the server's key.
    for volume in proxy["spec"]["template"]["spec"]["volumes"]:
        assert volume.get("secret", {}).get("secretName") != f"{RELEASE}-grpc-server"

    # TLS without client certificates, your Secrets, the CA inline: proxies read the CA from
    # the ConfigMap, control planes ask for no client certificate.
    out = rendered["grpc-tls-ca"]
    cp = out.component("Deployment", "control-plane")
    proxy = out.component("Deployment", "proxy")
    cp_flags = flag_values(container(cp)["args"])
    proxy_flags = flag_values(container(proxy)["args"])
    assert "--grpc-client-ca" not in cp_flags and "--client-cert" not in proxy_flags
    assert volume_source(*mounted_file(cp, cp_flags["--grpc-tls-cert"])) == ("Secret", "my-grpc-server")
    assert volume_source(*mounted_file(proxy, proxy_flags["--control-plane-ca"])) == ("ConfigMap", f"{RELEASE}-grpc-ca")
    assert not out.of_kind("Certificate")
    # Without caBundle the proxies read ca.crt alone from the server Secret.
    files = render_chart({"grpcTls": {"enabled": True}})
    proxy = next(d for d in rendered_objects(files)
                 if d["kind"] == "Deployment" and d["metadata"]["name"] == f"{RELEASE}-proxy")
    volume, _ = mounted_file(proxy, flag_values(container(proxy)["args"])["--control-plane-ca"])
    assert volume["secret"] == {"secretName": f"{RELEASE}-grpc-server", "items": [{"key": "ca.crt", "path": "ca.crt"}]}

    # Proxies following another release: their own client Secret, the URL given.
    out = rendered["proxies-only-mtls"]
    proxy = out.component("Deployment", "proxy")
    flags = flag_values(container(proxy)["args"])
    assert flags["--control-plane"] == "https://sluice-control-plane.sluice-core.svc:9091"
    for flag in ("--control-plane-ca", "--client-cert", "--client-key"):
        assert volume_source(*mounted_file(proxy, flags[flag])) == ("Secret", "edge-grpc-client"), flag
    assert not out.of_kind("Certificate")


def openssl(*args: str, cwd: Path) -> None:
    result = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr


def issue_certificates(certificates: list[dict], workdir: Path, extra_dns: list[str]) -> dict[str, dict[str, str]]:
    """What cert-manager would put in each Certificate's Secret (tls.crt, tls.key, ca.crt), from
    one CA, following each spec's names, usages and key (ECDSA P-256, PKCS#8); `extra_dns` names
    are added to server certificates so the test can dial them locally."""
    if not shutil.which("openssl"):
        pytest.skip("openssl is not installed")
    workdir.mkdir(parents=True)
    openssl("req", "-x509", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", "ca.key", "-out", "ca.crt", "-days", "2", "-subj", "/CN=sluice test CA",
            "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=workdir)
    usages = {"digital signature": ("keyUsage", "digitalSignature"), "server auth": ("extendedKeyUsage", "serverAuth"),
              "client auth": ("extendedKeyUsage", "clientAuth")}
    secrets = {}
    for certificate in certificates:
        spec = certificate["spec"]
        assert (spec["privateKey"]["algorithm"], spec["privateKey"]["size"], spec["privateKey"]["encoding"]) == ("ECDSA", 256, "PKCS8")
        name = spec["secretName"]
        extensions: dict[str, list[str]] = {}
        for usage in spec["usages"]:
            field_name, value = usages[usage]
            extensions.setdefault(field_name, []).append(value)
        names = list(spec.get("dnsNames", []))
        if "serverAuth" in extensions.get("extendedKeyUsage", []):
            names += extra_dns
        ext = [f"{k}=critical,{','.join(v)}" if k == "keyUsage" else f"{k}={','.join(v)}" for k, v in extensions.items()]
        if names:
            ext.append("subjectAltName=" + ",".join(f"DNS:{n}" for n in names))
        (workdir / f"{name}.ext").write_text("\n".join(["basicConstraints=CA:FALSE", *ext]) + "\n")
        openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", f"{name}.key",
                "-out", f"{name}.csr", "-subj", f"/CN={spec['commonName']}", cwd=workdir)
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
                "-out", f"{name}.crt", "-days", "2", "-extfile", f"{name}.ext", cwd=workdir)
        key = (workdir / f"{name}.key").read_text()
        assert key.startswith("-----BEGIN PRIVATE KEY-----"), "PKCS#8, as the Certificate asks"
        secrets[name] = {"tls.crt": (workdir / f"{name}.crt").read_text(), "tls.key": key,
                         "ca.crt": (workdir / "ca.crt").read_text()}
    return secrets


def materialize_volumes(deployment: dict, secrets: dict[str, dict[str, str]], root: Path) -> list[str]:
    """Writes the Secret volumes of a pod (what the kubelet mounts) under `root` and returns its
    args with the mount paths pointing there."""
    args = list(container(deployment)["args"])
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    for mount in container(deployment)["volumeMounts"]:
        volume = volumes[mount["name"]]
        if "secret" not in volume:
            continue
        data = secrets[volume["secret"]["secretName"]]
        keys = [i["key"] for i in volume["secret"].get("items", [])] or list(data)
        target = root / mount["name"]
        target.mkdir(parents=True)
        for key in keys:
            (target / key).write_text(data[key])
        args = [a.replace(mount["mountPath"], str(target)) if a.startswith(mount["mountPath"] + "/") else a for a in args]
    return args


def test_grpc_mtls_values_work_with_the_binary(rendered, processes, tmp_path):
    """The chart's mTLS settings against the real binary: certificates made as the rendered
    cert-manager Certificates ask, mounted where the rendered volumes put them, the rendered
    args: the proxy gets its config over mTLS, and a proxy without the client certificate gets
    nothing."""
    out = rendered["grpc-tls"]
    secrets = issue_certificates(out.of_kind("Certificate"), tmp_path / "pki", ["localhost"])
    cp_args = materialize_volumes(out.component("Deployment", "control-plane"), secrets, tmp_path / "cp-volumes")
    proxy_args = materialize_volumes(out.component("Deployment", "proxy"), secrets, tmp_path / "proxy-volumes")

    tokens = {"SLUICE_ADMIN_TOKEN": "chart-test-admin-token", "SLUICE_PROXY_TOKEN": "chart-test-proxy-token"}
    cp_args = rewrite_argv(cp_args, {"--admin-addr": "127.0.0.1:0", "--grpc-addr": "127.0.0.1:0",
                                     "--database-url": f"sqlite://{tmp_path / 'cp.db'}"})
    cp = processes("control-plane", cp_args, tokens)
    admin = cp.wait_for_field("admin.addr")
    grpc_port = port_of(cp.wait_for_field("grpc.addr"))

    def start_proxy(name: str, args: list[str]) -> str:
        args = rewrite_argv(args, {"--control-plane": f"https://localhost:{grpc_port}", "--addr": "127.0.0.1:0",
                                   "--ops-addr": "127.0.0.1:0", "--cache-dir": str(tmp_path / f"{name}-cache")})
        proc = processes(name, args, {"SLUICE_PROXY_TOKEN": tokens["SLUICE_PROXY_TOKEN"], "SLUICE_NODE_ID": name})
        return proc.wait_for_field("ops.addr")

    ops = start_proxy("proxy", proxy_args)
    wait_until(lambda: http("GET", f"http://{ops}/readyz")[0] == 200, what="the proxy to get its config over mTLS")

    def listed_proxies() -> set[str]:
        payload = http("GET", f"http://{admin}/api/v1/proxies",
                       headers={"authorization": f"Bearer {tokens['SLUICE_ADMIN_TOKEN']}"})[2]
        return {p["node_id"] for p in json.loads(payload)["proxies"]}

    # The fleet's rows are written in batches: the proxy can be ready a moment before it is listed.
    wait_until(lambda: "proxy" in listed_proxies(), what="the control plane to list the proxy")

    without_certificate = list(proxy_args)
    for flag in ("--client-cert", "--client-key"):
        i = without_certificate.index(flag)
        del without_certificate[i:i + 2]
    refused = start_proxy("proxy-without-certificate", without_certificate)
    time.sleep(3)
    assert http("GET", f"http://{refused}/readyz")[0] == 503, "the control plane must refuse a proxy without a client certificate"


# ---- HTTPS on the proxies' client port and the admin port; concurrency settings --------------

HTTPS_COMPONENTS = {"control-plane": "controlPlane", "proxy": "proxy"}
CONCURRENCY_SETTINGS = {"SLUICE_WORKERS", "SLUICE_MAX_CONCURRENT_REQUESTS"}


@pytest.mark.parametrize("variant", ["https-secrets", "https-cert-manager"])
def test_https_values_map_to_the_env_and_mounted_certificates(rendered, cli, variant):
    out = rendered[variant]
    certificates = {c["spec"]["secretName"]: c for c in out.of_kind("Certificate")}
    for component, key in HTTPS_COMPONENTS.items():
        deployment = out.component("Deployment", component)
        c = container(deployment)
        tls = out.values[key]["tls"]
        secret = tls["secretName"] or f"{RELEASE}-{component}-tls"
        env = {e["name"]: e.get("value") for e in c["env"]}
        # The variables of the real flags, pointing at the two files of the mounted Secret.
        for name, file in (("SLUICE_TLS_CERT", "tls.crt"), ("SLUICE_TLS_KEY", "tls.key")):
            assert name in cli[component].envs, (component, name)
            volume, mounted = mounted_file(deployment, env[name])
            assert mounted == file and volume_source(volume, mounted) == ("Secret", secret), (component, name)
        mount = next(m for m in c["volumeMounts"] if env["SLUICE_TLS_CERT"].startswith(m["mountPath"] + "/"))
        assert mount["readOnly"] is True
        assert "subPath" not in mount, "a subPath mount never sees a renewed certificate"
        if tls["certManager"]["enabled"]:
            spec = certificates[secret]["spec"]
            service = f"{RELEASE}-{component}"
            assert {service, f"{service}.{NAMESPACE}.svc", f"{service}.{NAMESPACE}.svc.cluster.local"} <= set(spec["dnsNames"])
            assert set(tls["certManager"]["extraDnsNames"]) <= set(spec["dnsNames"])
            assert spec["usages"] == ["digital signature", "server auth"]
            assert spec["issuerRef"] == {"name": "internal-ca", "kind": "ClusterIssuer", "group": "cert-manager.io"}
            assert spec["privateKey"]["algorithm"] == "ECDSA" and spec["privateKey"]["rotationPolicy"] == "Always"
        else:
            assert secret not in certificates, "your own Secret: the chart issues nothing"
    if not any(out.values[k]["tls"]["certManager"]["enabled"] for k in HTTPS_COMPONENTS.values()):
        assert not out.of_kind("Certificate")

    # The proxies' client port is named and declared https end to end; the ops port stays plain.
    proxy = container(out.component("Deployment", "proxy"))
    assert {p["name"] for p in proxy["ports"]} == {"https", "ops"}
    service = out.named("Service", f"{RELEASE}-proxy")
    assert [(p["name"], p["targetPort"], p["appProtocol"]) for p in service["spec"]["ports"]] == [("https", "https", "https")]
    admin = next(p for p in out.component("Service", "control-plane")["spec"]["ports"] if p["name"] == "admin")
    assert admin["appProtocol"] == "https"
    assert next(p for p in out.component("Service", "control-plane")["spec"]["ports"] if p["name"] == "grpc")["appProtocol"] == "grpc"

    # Prometheus scrapes the admin port over HTTPS, verifying the Service name against the CA.
    monitor = out.of_kind("ServiceMonitor")[0]
    endpoints = {e["port"]: e for e in monitor["spec"]["endpoints"]}
    assert endpoints["admin"]["scheme"] == "https"
    assert endpoints["admin"]["tlsConfig"] == {
        "serverName": f"{RELEASE}-control-plane",
        "ca": {"secret": {"name": out.values["controlPlane"]["tls"]["secretName"] or f"{RELEASE}-control-plane-tls",
                          "key": "ca.crt"}}}
    assert "scheme" not in endpoints["ops"] and "tlsConfig" not in endpoints["ops"]
    custom = render_chart({**CHART_VARIANTS[variant], "serviceMonitor": {
        "enabled": True, "adminTlsConfig": {"insecureSkipVerify": True}}})
    monitor = next(d for d in rendered_objects(custom) if d["kind"] == "ServiceMonitor")
    assert monitor["spec"]["endpoints"][0]["tlsConfig"] == {"insecureSkipVerify": True}

    # `helm test` speaks HTTPS to the admin port, plain HTTP to the proxies' ops port.
    targets = dict(arg.split("=", 1) for arg in helm_test_pod(out)["spec"]["containers"][0]["command"][4:])
    assert targets == {"proxy": f"{RELEASE}-proxy-ops:8081/readyz",
                       "control-plane": f"https://{RELEASE}-control-plane:9090/readyz"}
    # Without TLS nothing of it is rendered.
    for variant_off in ("default", "features", "exposed", "grpc-tls"):
        for deployment in rendered[variant_off].of_kind("Deployment"):
            assert not {"SLUICE_TLS_CERT", "SLUICE_TLS_KEY"} & set(env_names(deployment)), variant_off
            assert "tls" not in {v["name"] for v in deployment["spec"]["template"]["spec"]["volumes"]}
        for monitor in rendered[variant_off].of_kind("ServiceMonitor"):
            assert all("scheme" not in e for e in monitor["spec"]["endpoints"])


def test_https_proxies_behind_ingress_nginx_and_network_policies(rendered):
    out = rendered["https-secrets"]
    ingress = out.component("Ingress", "proxy")
    assert ingress["metadata"]["annotations"]["nginx.ingress.kubernetes.io/backend-protocol"] == "HTTPS"
    backend = ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert backend == {"name": f"{RELEASE}-proxy", "port": {"name": "https"}}
    # The NetworkPolicy opens the renamed port to clients.
    policy = next(p for p in out.of_kind("NetworkPolicy") if p["metadata"]["name"] == f"{RELEASE}-proxy")
    assert {"port": "https", "protocol": "TCP"} in policy["spec"]["ingress"][0]["ports"]
    # An annotation set by hand wins; the automatic one can be turned off; none without TLS.
    values = CHART_VARIANTS["https-secrets"]

    def annotations(ingress_values: dict) -> dict:
        files = render_chart({**values, "proxy": {**values["proxy"], "ingress": {**values["proxy"]["ingress"], **ingress_values}}})
        return next(d for d in rendered_objects(files) if d["kind"] == "Ingress")["metadata"].get("annotations", {})

    assert annotations({"annotations": {"nginx.ingress.kubernetes.io/backend-protocol": "GRPCS"}}) == {
        "nginx.ingress.kubernetes.io/backend-protocol": "GRPCS"}
    assert annotations({"backendProtocolAnnotation": False}) == {}
    assert "nginx.ingress.kubernetes.io/backend-protocol" not in \
        rendered["exposed"].component("Ingress", "proxy")["metadata"]["annotations"]
    assert rendered["exposed"].component("Ingress", "proxy")["spec"]["rules"][0]["http"]["paths"][0]["backend"][
        "service"]["port"] == {"name": "http"}


def test_chart_concurrency_settings_only_when_set(rendered, cli):
    """proxy.workers and proxy.maxConcurrentRequests reach the proxies as SLUICE_WORKERS and
    SLUICE_MAX_CONCURRENT_REQUESTS only when set (unset: the binary's defaults), and
    proxy.autoscaling.inflightTarget adds the in-flight Pods metric to the HPA."""
    for variant, out in rendered.items():
        if variant == "https-secrets":
            continue
        for deployment in out.of_kind("Deployment"):
            assert not set(env_names(deployment)) & CONCURRENCY_SETTINGS, (variant, deployment["metadata"]["name"])
        for hpa in out.of_kind("HorizontalPodAutoscaler"):
            assert [m["type"] for m in hpa["spec"]["metrics"]] == ["Resource"], variant
    out = rendered["https-secrets"]
    env = {e["name"]: e.get("value") for e in env_of(out.component("Deployment", "proxy"))}
    assert (env["SLUICE_WORKERS"], env["SLUICE_MAX_CONCURRENT_REQUESTS"]) == ("2", "1000")
    assert not set(env_names(out.component("Deployment", "control-plane"))) & CONCURRENCY_SETTINGS
    for name in CONCURRENCY_SETTINGS:
        assert name in cli["proxy"].envs, name
    check_argv(["proxy", "--control-plane", "http://cp:9091",
                *env_as_flags({n: env[n] for n in CONCURRENCY_SETTINGS}, "proxy", cli)], cli, "concurrency values")
    # 0 is the binary's "no cap", so leaving it out changes nothing.
    assert "SLUICE_MAX_CONCURRENT_REQUESTS" not in "".join(render_chart({"proxy": {"maxConcurrentRequests": 0}}).values())

    cpu, inflight = out.component("HorizontalPodAutoscaler", "proxy")["spec"]["metrics"]
    assert cpu["resource"]["name"] == "cpu"
    assert inflight == {"type": "Pods", "pods": {"metric": {"name": "sluice_inflight_requests"},
                                                 "target": {"type": "AverageValue", "averageValue": "700"}}}
    # The metric the HPA asks for is the one docs/operations.md's prometheus-adapter rule serves.
    guide = (ROOT / "docs" / "operations.md").read_text()
    assert "name: { as: sluice_inflight_requests }" in guide
    assert "proxy.autoscaling.inflightTarget" in guide


def materialized_env(deployment: dict, root: Path) -> dict[str, str]:
    """Plain env values of a pod whose Secret volumes materialize_volumes wrote under `root`,
    with mount paths pointing there."""
    env = {e["name"]: e["value"] for e in env_of(deployment) if "value" in e}
    for mount in container(deployment)["volumeMounts"]:
        for name, value in env.items():
            if value.startswith(mount["mountPath"] + "/"):
                env[name] = str(root / mount["name"]) + value[len(mount["mountPath"]):]
    return env


def curl(*args: str) -> subprocess.CompletedProcess:
    if not shutil.which("curl"):
        pytest.skip("curl is not installed")
    return subprocess.run(["curl", "--silent", "--show-error", "--max-time", "10", *args],
                          capture_output=True, text=True, timeout=30)


def test_https_values_work_with_the_binary(rendered, processes, tmp_path):
    """The chart's HTTPS settings against the real binary: certificates made as the rendered
    cert-manager Certificates ask, mounted where the rendered volumes put them, the rendered env:
    the proxy serves its client port over HTTPS (HTTP/2 by ALPN) that curl verifies with the CA,
    the control plane its admin port, and the `helm test` script passes against both."""
    out = rendered["https-cert-manager"]
    secrets = issue_certificates(out.of_kind("Certificate"), tmp_path / "pki", ["localhost"])
    ca = tmp_path / "pki" / "ca.crt"
    tokens = {"SLUICE_ADMIN_TOKEN": "chart-test-admin-token", "SLUICE_PROXY_TOKEN": "chart-test-proxy-token"}
    started = {}
    for component in ("control-plane", "proxy"):
        deployment = out.component("Deployment", component)
        args = materialize_volumes(deployment, secrets, tmp_path / f"{component}-volumes")
        env = materialized_env(deployment, tmp_path / f"{component}-volumes")
        env = {k: v for k, v in env.items() if k.startswith("SLUICE_")}
        if component == "control-plane":
            args = rewrite_argv(args, {"--admin-addr": "127.0.0.1:0", "--grpc-addr": "127.0.0.1:0",
                                       "--database-url": f"sqlite://{tmp_path / 'cp.db'}"})
            proc = processes(component, args, {**env, **tokens})
            started[component] = (proc.wait_for_field("admin.addr"), proc.wait_for_field("grpc.addr"))
        else:
            # 4 workers, a cap of 10: 3 each, so 12 as enforced (docs/operations.md).
            env.update(SLUICE_WORKERS="4", SLUICE_MAX_CONCURRENT_REQUESTS="10", SLUICE_NODE_ID="proxy",
                       SLUICE_PROXY_TOKEN=tokens["SLUICE_PROXY_TOKEN"])
            args = rewrite_argv(args, {"--control-plane": f"http://{started['control-plane'][1]}",
                                       "--addr": "127.0.0.1:0", "--ops-addr": "127.0.0.1:0",
                                       "--cache-dir": str(tmp_path / "proxy-cache")})
            proc = processes(component, args, env)
            started[component] = (proc.wait_for_field("proxy.addr"), proc.wait_for_field("ops.addr"))
    admin = started["control-plane"][0]
    client, ops = started["proxy"]
    wait_until(lambda: http("GET", f"http://{ops}/readyz")[0] == 200, what="the proxy to get its config")

    port = port_of(client)
    answered = curl("--cacert", str(ca), "--resolve", f"localhost:{port}:127.0.0.1", "--http2",
                    "--write-out", "%{http_version} %{http_code}", "--output", os.devnull,
                    f"https://localhost:{port}/v1/models")
    assert answered.returncode == 0, answered.stderr
    assert answered.stdout == "2 401", "HTTP/2 over TLS, verified with the CA; no client key given"
    plain = curl("--output", os.devnull, "--write-out", "%{http_code}", f"http://127.0.0.1:{port}/v1/models")
    assert plain.returncode != 0 or plain.stdout == "000", "the client port serves HTTPS only"
    admin_port = port_of(admin)
    health = curl("--cacert", str(ca), "--resolve", f"localhost:{admin_port}:127.0.0.1",
                  f"https://localhost:{admin_port}/healthz")
    assert health.returncode == 0, health.stderr
    assert metric_value(f"http://{ops}/metrics", "sluice_proxy_workers") == "4"
    assert metric_value(f"http://{ops}/metrics", "sluice_concurrency_limit") == "12"

    pod = helm_test_pod(out)
    services = {f"{RELEASE}-proxy-ops:{out.values['proxy']['opsPort']}": ops,
                f"{RELEASE}-control-plane:{out.values['controlPlane']['adminPort']}": admin}
    passed = run_helm_test_pod(pod, services)
    assert passed.returncode == 0, passed.stdout + passed.stderr
    assert f"ok: control-plane (GET https://{admin}/readyz)" in passed.stdout, passed.stdout
    assert "ok: proxy" in passed.stdout
    # Pointed at a plain-HTTP port, the HTTPS check fails and says so.
    services[f"{RELEASE}-control-plane:{out.values['controlPlane']['adminPort']}"] = ops
    failed = run_helm_test_pod(pod, services, attempts=1)
    assert failed.returncode == 1 and "FAILED: control-plane: GET https://" in failed.stdout, failed.stdout


def helm_test_pod(out: Rendered) -> dict:
    pods = [d for d in out.of_kind("Pod") if d["metadata"].get("annotations", {}).get("helm.sh/hook") == "test"]
    assert len(pods) == 1
    return pods[0]


def test_helm_test_pod_checks_both_components(rendered):
    for variant in ("default", "exposed", "proxies-only"):
        out = rendered[variant]
        pod = helm_test_pod(out)
        assert pod["metadata"]["annotations"]["helm.sh/hook-delete-policy"] == "before-hook-creation,hook-succeeded"
        spec = pod["spec"]
        assert spec["restartPolicy"] == "Never" and spec["automountServiceAccountToken"] is False
        c = spec["containers"][0]
        proxy = container(out.component("Deployment", "proxy"))
        assert c["image"] == proxy["image"], "the chart's own image: nothing else to pull or configure"
        assert c["securityContext"]["readOnlyRootFilesystem"] is True
        assert c["command"][:2] == ["/bin/bash", "-c"]
        targets = dict(arg.split("=", 1) for arg in c["command"][4:])
        services = {s["metadata"]["name"]: s for s in out.of_kind("Service")}
        expected = {"proxy": (f"{RELEASE}-proxy-ops", "ops")}
        if out.values["controlPlane"]["enabled"]:
            expected["control-plane"] = (f"{RELEASE}-control-plane", "admin")
        assert set(targets) == set(expected), targets
        for name, (service, port_name) in expected.items():
            m = re.fullmatch(r"([a-z0-9-]+):(\d+)(/\S+)", targets[name])
            assert m and m.group(1) == service, targets[name]
            assert int(m.group(2)) == next(p["port"] for p in services[service]["spec"]["ports"] if p["name"] == port_name)
            assert m.group(3) == "/readyz"
    assert not render_chart({"helmTest": {"enabled": False}}).get(f"{RELEASE}/templates/tests/health.yaml", "").strip()


def run_helm_test_pod(pod: dict, addresses: dict[str, str], attempts: int = 30) -> subprocess.CompletedProcess:
    """The test pod's command, with each Service host:port replaced by a local address."""
    command = list(pod["spec"]["containers"][0]["command"])
    for i, arg in enumerate(command[4:], start=4):
        name, target = arg.split("=", 1)
        scheme = "https://" if target.startswith("https://") else ""
        host_port, path = target.removeprefix(scheme).split("/", 1)
        command[i] = f"{name}={scheme}{addresses.get(host_port, host_port)}/{path}"
    return subprocess.run(command, env={**os.environ, "ATTEMPTS": str(attempts)}, capture_output=True, text=True, timeout=120)


def test_helm_test_pod_against_running_processes(rendered, processes, tmp_path):
    """The `helm test` script passes against a control plane and a proxy that follows it, and
    fails, naming the component, when the proxy has no config."""
    out = rendered["default"]
    pod = helm_test_pod(out)
    tokens = {"SLUICE_ADMIN_TOKEN": "chart-test-admin-token", "SLUICE_PROXY_TOKEN": "chart-test-proxy-token"}
    cp = processes("control-plane", ["--log-format", "json", "control-plane", "--database-url", f"sqlite://{tmp_path / 'cp.db'}",
                                     "--admin-addr", "127.0.0.1:0", "--grpc-addr", "127.0.0.1:0"], tokens)
    admin = cp.wait_for_field("admin.addr")
    grpc = cp.wait_for_field("grpc.addr")
    proxy = processes("proxy", ["--log-format", "json", "proxy", "--control-plane", f"http://{grpc}", "--addr", "127.0.0.1:0",
                                "--ops-addr", "127.0.0.1:0", "--cache-dir", str(tmp_path / "cache")],
                      {"SLUICE_PROXY_TOKEN": tokens["SLUICE_PROXY_TOKEN"]})
    ops = proxy.wait_for_field("ops.addr")
    services = {f"{RELEASE}-proxy-ops:{out.values['proxy']['opsPort']}": ops,
                f"{RELEASE}-control-plane:{out.values['controlPlane']['adminPort']}": admin}

    passed = run_helm_test_pod(pod, services)
    assert passed.returncode == 0, passed.stdout + passed.stderr
    assert "ok: proxy" in passed.stdout and "ok: control-plane" in passed.stdout

    # A proxy that follows nothing it can reach holds no config: /readyz answers 503.
    lost = processes("proxy-lost", ["--log-format", "json", "proxy", "--control-plane", f"http://127.0.0.1:{free_port()}",
                                    "--addr", "127.0.0.1:0", "--ops-addr", "127.0.0.1:0", "--cache-dir", str(tmp_path / "lost")],
                     {"SLUICE_PROXY_TOKEN": tokens["SLUICE_PROXY_TOKEN"]})
    services[f"{RELEASE}-proxy-ops:{out.values['proxy']['opsPort']}"] = lost.wait_for_field("ops.addr")
    failed = run_helm_test_pod(pod, services, attempts=2)
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert "FAILED: proxy" in failed.stdout and "answered 503, not 200" in failed.stdout, failed.stdout
    assert "ok: control-plane" in failed.stdout


# ------------------------------------------------------------------------------------------------
# Docs: examples install the image you pushed; commands name objects the chart makes
# ------------------------------------------------------------------------------------------------

DOCS_WITH_CHART_EXAMPLES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), CHART / "README.md",
                            CHART / "values.yaml", CHART / "templates" / "NOTES.txt"]


HELM_COMMAND = r"helm(?:\s+(?:-n|--namespace)[= ]\S+)?\s+(?:install|upgrade|template)\b[^\n`]*"


def helm_commands(text: str) -> list[str]:
    """`helm install|upgrade|template` commands of this chart: lines that start with one (in
    code blocks or comments, continuation lines joined) and inline code that is one."""
    lines = [re.sub(r"^\s*#\s?", "", line) for line in text.splitlines()]
    joined = "\n".join(lines).replace("\\\n", " ")
    commands = [*re.findall(rf"^\s*(?:\$\s*)?({HELM_COMMAND})", joined, re.M), *re.findall(rf"`({HELM_COMMAND})`", joined)]
    return [c for c in commands if "deploy/helm/sluice" in c]  # an example, not prose naming the command


def test_every_helm_example_sets_the_image_repository(chart_values):
    """Every install or upgrade the docs show, and every values file they show, names the image
    you pushed: the default repository is only what a local `docker build` makes."""
    found = 0
    for path in DOCS_WITH_CHART_EXAMPLES:
        for command in helm_commands(path.read_text()):
            found += 1
            assert "image.repository=" in command, f"{path.relative_to(ROOT)}: {command}"
    assert found >= 4, found
    top_level = set(chart_values)
    values_files = 0
    for path in [p for p in DOCS_WITH_CHART_EXAMPLES if p.suffix == ".md"]:
        for indent, block in re.findall(r"^( *)```yaml\n(.*?)^\1```", path.read_text(), re.M | re.S):
            doc = yaml.safe_load(textwrap.dedent(block))
            if isinstance(doc, dict) and set(doc) <= top_level:  # a values file of this chart
                values_files += 1
                assert (doc.get("image") or {}).get("repository"), f"{path.relative_to(ROOT)}: values without image.repository:\n{block}"
    assert values_files >= 10, values_files


def test_docs_name_only_objects_the_chart_makes_or_reads(rendered):
    """kubectl commands in the operations guide and the chart's README name objects of a release
    called sluice: ones the chart renders, or the Secrets it reads."""
    made = {(d["kind"], d["metadata"]["name"]) for out in rendered.values() for _, d in out.docs}
    read = {ref["name"] for out in rendered.values() for d in out.of_kind("Deployment")
            for ref in secret_refs(d).values()}
    kinds = {"deployment": "Deployment", "deploy": "Deployment", "svc": "Service", "service": "Service",
             "hpa": "HorizontalPodAutoscaler", "secret": "Secret", "pdb": "PodDisruptionBudget"}
    checked = 0
    for path in (ROOT / "docs" / "operations.md", CHART / "README.md"):
        for line in path.read_text().splitlines():
            if "kubectl" not in line:
                continue
            for kind, name in re.findall(r"\b(deployment|deploy|svc|service|hpa|secret|pdb)(?:/| )(sluice[a-z0-9-]*)", line):
                checked += 1
                if kinds[kind] == "Secret":
                    assert name in read or ("Secret", name) in made or "redis" in name, f"{path.name}: secret {name}"
                else:
                    assert (kinds[kind], name) in made, f"{path.name}: {kind} {name} is not an object the chart makes"
    assert checked >= 5


# ================================================================================================
# compose.yaml
# ================================================================================================

def compose_argv(service: dict) -> list[str]:
    command = service.get("command") or []
    return shlex.split(command) if isinstance(command, str) else list(command)


def listen_port(service: dict, command: str, name: str, cli) -> int:
    """Port a sluice service listens on for `name` (flag, else SLUICE_* env, else default)."""
    flag = LISTEN_FLAGS[command][name]
    flags = flag_values(compose_argv(service))
    if flag in flags:
        return port_of(flags[flag])
    env = environment_of(service)
    variable = cli[command].options[flag].env
    if variable in env:
        return port_of(env[variable])
    return cli[command].default_port(flag)


def test_compose_is_a_valid_compose_file():
    import compose_spec

    raw = yaml.safe_load(COMPOSE.read_text())  # merge keys (<<) applied, as Compose does
    parsed = compose_spec.PyCompose.from_json(json.dumps(raw))
    assert parsed.name == "sluice"
    assert set(parsed.services) == set(raw["services"])


def test_compose_has_the_whole_picture(compose):
    services = compose["services"]
    assert len(services_running(compose, "control-plane")) == 2
    assert len(services_running(compose, "proxy")) == 3
    assert len(services_running(compose, "mock-upstream")) == 2
    for name in ("postgres", "seed", "otel-collector", "prometheus", "grafana"):
        assert name in services, name
    for name, service in services.items():
        for dependency, condition in (service.get("depends_on") or {}).items():
            assert dependency in services, (name, dependency)
            if condition.get("condition") == "service_healthy":
                assert "healthcheck" in services[dependency], f"{name} waits for {dependency} to be healthy; it has no healthcheck"
        for volume in service.get("volumes") or []:
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (DEPLOY / source).exists(), f"{name}: {source} does not exist"
            else:
                assert source in compose["volumes"], f"{name}: undeclared volume {source}"


def test_compose_sluice_commands_and_env_are_real(compose, cli):
    for name, service in sluice_services(compose).items():
        argv = compose_argv(service)
        command = check_argv(argv, cli, f"compose service {name}")
        check_env_names(environment_of(service), command, cli, f"compose service {name}")
    build = compose["x-sluice"]["build"]
    assert (DEPLOY / build["context"] / build["dockerfile"]).resolve() == (DEPLOY / "Dockerfile").resolve()


def test_compose_control_planes_share_postgres_and_tokens(compose):
    cps = services_running(compose, "control-plane")
    envs = [environment_of(s) for s in cps.values()]
    for key in ("SLUICE_DATABASE_URL", "SLUICE_ADMIN_TOKEN", "SLUICE_PROXY_TOKEN"):
        values = {e.get(key) for e in envs}
        assert len(values) == 1 and None not in values, f"control planes differ on {key}"
    url = envs[0]["SLUICE_DATABASE_URL"]
    m = re.fullmatch(r"postgres://([^:]+):([^@]+)@([^:/]+):(\d+)/(\w+)", url)
    assert m, url
    postgres = environment_of(compose["services"]["postgres"])
    assert m.group(3) == "postgres" and m.group(4) == "5432"
    assert (m.group(1), m.group(2), m.group(5)) == (postgres["POSTGRES_USER"], postgres["POSTGRES_PASSWORD"], postgres["POSTGRES_DB"])
    for key in ("SLUICE_ADMIN_TOKEN", "SLUICE_PROXY_TOKEN"):
        assert all(len(t) >= 16 for t in envs[0][key].split(",")), f"{key}: the control plane refuses tokens under 16 characters"
    for service in cps.values():
        assert service["depends_on"]["postgres"]["condition"] == "service_healthy"


def aliases_of(service: dict) -> set[str]:
    networks = service.get("networks") or {}
    if isinstance(networks, list):
        return set()
    return {a for n in networks.values() for a in ((n or {}).get("aliases") or [])}


def test_compose_proxies_follow_the_control_planes(compose, cli):
    cps = services_running(compose, "control-plane")
    cp_tokens = environment_of(next(iter(cps.values())))["SLUICE_PROXY_TOKEN"].split(",")
    node_ids = set()
    for name, service in services_running(compose, "proxy").items():
        env = environment_of(service)
        url = flag_values(compose_argv(service)).get("--control-plane") or env.get("SLUICE_CONTROL_PLANE")
        m = re.fullmatch(r"http://([a-z0-9.-]+):(\d+)", url or "")
        assert m, f"{name}: --control-plane {url}"
        host, port = m.group(1), int(m.group(2))
        targets = [cp for cp_name, cp in cps.items() if host == cp_name or host in aliases_of(cp)]
        assert targets, f"{name} follows {host}, which is neither a control plane nor an alias of one"
        for cp in targets:
            assert listen_port(cp, "control-plane", "grpc", cli) == port
        assert env["SLUICE_PROXY_TOKEN"] in cp_tokens, f"{name} presents a token the control planes refuse"
        node_ids.add(env.get("SLUICE_NODE_ID", name))
        cache = env["SLUICE_CACHE_DIR"]
        mounts = {v.split(":")[1]: v.split(":")[0] for v in service.get("volumes", [])}
        assert cache in mounts and mounts[cache] in compose["volumes"], f"{name}: the cache dir is not a named volume"
        drain = int(env.get("SLUICE_DRAIN_TIMEOUT_SECS") or cli["proxy"].options["--drain-timeout-secs"].default)
        grace = int(re.fullmatch(r"(\d+)s", service["stop_grace_period"]).group(1))
        assert grace > drain, f"{name}: stop_grace_period {grace}s cuts the {drain}s drain short"
    assert len(node_ids) == 3
    # "either replica": the alias names both of them.
    shared = set.intersection(*(aliases_of(cp) for cp in cps.values()))
    assert shared, "no network alias shared by both control planes"


def redis_port(service: dict) -> int:
    """The port the compose Redis/Valkey service listens on (--port, else 6379)."""
    return int(flag_values(compose_argv(service)).get("--port") or 6379)


def test_compose_proxies_share_limits_through_redis(compose, cli):
    """Every proxy counts client-key limits in the compose Redis (one URL for all, or each would
    count alone), with values the binary takes; the Redis keeps nothing on disk and runs
    hardened."""
    redis = compose["services"]["redis"]
    image, _, tag = redis["image"].rpartition(":")
    assert image in ("valkey/valkey", "redis") and re.match(r"\d+\.\d+\.\d+", tag), f"pin the Redis image: {redis['image']}"
    argv = compose_argv(redis)
    assert argv[0] in ("valkey-server", "redis-server"), argv
    flags = flag_values(argv)
    assert argv[argv.index("--save") + 1] == "" and flags.get("--appendonly") == "no", "counts are short-lived: no persistence"
    assert redis.get("read_only") is True
    assert any(str(t).split(":")[0] == "/data" for t in redis.get("tmpfs", [])), "the working directory must be writable"
    assert redis.get("cap_drop") == ["ALL"]
    assert "no-new-privileges:true" in redis.get("security_opt", [])
    assert not redis.get("ports"), "only the proxies talk to Redis"
    assert redis["healthcheck"]["test"][:2] == ["CMD", argv[0].replace("-server", "-cli")]

    urls = set()
    for name, service in services_running(compose, "proxy").items():
        env = environment_of(service)
        url = env.get("SLUICE_REDIS_URL")
        m = re.fullmatch(r"redis://([a-z0-9-]+):(\d+)", url or "")
        assert m, f"{name}: SLUICE_REDIS_URL {url}"
        host = compose["services"].get(m.group(1)) or next(
            (s for s in compose["services"].values() if m.group(1) in aliases_of(s)), None)
        assert host is redis, f"{name} counts in {m.group(1)}, which is not the redis service"
        assert int(m.group(2)) == redis_port(redis)
        assert service["depends_on"]["redis"]["condition"] == "service_started", \
            "proxies serve without Redis: they need not wait for it to be healthy"
        check_argv([*compose_argv(service), *env_as_flags(
            {k: v for k, v in env.items() if k in ("SLUICE_REDIS_URL", "SLUICE_LIMITS_SYNC_MS")}, "proxy", cli)],
            cli, f"compose service {name}")
        urls.add(url)
    assert len(urls) == 1, f"proxies count in different places: {urls}"


def seed_backends() -> list[tuple[str, str, str]]:
    """(backend name, URL variable, env:// variable) of the pool deploy/seed.sh creates."""
    text = (DEPLOY / "seed.sh").read_text()
    found = re.findall(
        r'\{"name": "([a-z0-9-]+)", "url": "\'"\$(\w+)"\'".*?"secret": "env://(\w+)"', text, re.S)
    assert len(found) == 2, found
    return found


def test_compose_seed_wires_mock_keys_through_the_proxies(compose, cli):
    seed = environment_of(compose["services"]["seed"])
    mocks = services_running(compose, "mock-upstream")
    proxies = services_running(compose, "proxy")
    for backend, url_var, key_var in seed_backends():
        m = re.fullmatch(r"http://([a-z0-9-]+):(\d+)", seed[url_var])
        assert m, seed[url_var]
        mock = mocks.get(m.group(1))
        assert mock is not None, f"{url_var} points at {m.group(1)}, which is not a mock-upstream service"
        assert listen_port(mock, "mock-upstream", "http", cli) == int(m.group(2))
        expected_key = environment_of(mock).get("SLUICE_API_KEY") or flag_values(compose_argv(mock)).get("--api-key")
        assert expected_key, f"{m.group(1)} accepts any key: the check proves nothing"
        for name, proxy in proxies.items():
            assert environment_of(proxy).get(key_var) == expected_key, (
                f"{name} resolves env://{key_var} to something else than {m.group(1)}'s key")
    assert compose["services"]["seed"]["entrypoint"][-1] == "/seed.sh"
    assert any(v.startswith("./seed.sh:/seed.sh") for v in compose["services"]["seed"]["volumes"])
    admin = re.fullmatch(r"http://([a-z0-9-]+):(\d+)", seed["ADMIN_URL"])
    cp = services_running(compose, "control-plane")[admin.group(1)]
    assert listen_port(cp, "control-plane", "admin", cli) == int(admin.group(2))
    assert seed["ADMIN_TOKEN"] in environment_of(cp)["SLUICE_ADMIN_TOKEN"].split(",")
    proxy = re.fullmatch(r"http://([a-z0-9-]+):(\d+)", seed["PROXY_URL"])
    assert listen_port(proxies[proxy.group(1)], "proxy", "http", cli) == int(proxy.group(2))


def healthcheck_target(service: dict) -> tuple[str, int, str]:
    test = service["healthcheck"]["test"]
    script = test[-1] if test[0] == "CMD" else test[1]
    m = re.search(r"/dev/tcp/([^/]+)/(\d+)", script)
    path = re.search(r"GET (\S+) HTTP/1\.[01]", script)
    assert m and path, script
    return m.group(1), int(m.group(2)), path.group(1)


def test_compose_healthchecks_and_ports_hit_real_endpoints(compose, cli):
    for name, service in sluice_services(compose).items():
        command = subcommand_of(compose_argv(service), cli)
        host, port, path = healthcheck_target(service)
        assert host == "127.0.0.1"
        if command == "control-plane":
            assert port == listen_port(service, command, "admin", cli) and path in ADMIN_OPS_ENDPOINTS
        elif command == "proxy":
            assert port == listen_port(service, command, "ops", cli) and path in PROXY_ENDPOINTS
        else:
            assert port == listen_port(service, command, "http", cli) and path in MOCK_ENDPOINTS
        for mapping in service.get("ports", []):
            container_port = int(str(mapping).rsplit(":", 1)[1])
            listening = {listen_port(service, command, n, cli) for n in LISTEN_FLAGS[command]}
            assert container_port in listening, f"{name} publishes {container_port}; it listens on {listening}"
            assert str(mapping).startswith("127.0.0.1:"), f"{name}: demo ports stay on loopback"


def test_prometheus_scrapes_every_control_plane_and_proxy(compose, cli):
    config = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
    targets = {}
    for job in config["scrape_configs"]:
        for static in job.get("static_configs", []):
            for target in static["targets"]:
                targets[target] = job.get("metrics_path", "/metrics")
    for target in targets:
        assert target.split(":")[0] in compose["services"], f"Prometheus scrapes {target}: no such service"
    for name, service in services_running(compose, "control-plane").items():
        assert targets.get(f"{name}:{listen_port(service, 'control-plane', 'admin', cli)}") == "/metrics", name
    for name, service in services_running(compose, "proxy").items():
        assert targets.get(f"{name}:{listen_port(service, 'proxy', 'ops', cli)}") == "/metrics", name
    prometheus = compose["services"]["prometheus"]
    assert "./prometheus.yml:/etc/prometheus/prometheus.yml:ro" in prometheus["volumes"]
    assert "--config.file=/etc/prometheus/prometheus.yml" in prometheus["command"]


def test_grafana_is_provisioned_with_the_dashboard(compose):
    grafana = compose["services"]["grafana"]
    mounts = {v.split(":")[1]: v.split(":")[0] for v in grafana["volumes"]}
    assert mounts["/etc/grafana/provisioning"] == "./grafana/provisioning"
    datasources = yaml.safe_load((DEPLOY / "grafana/provisioning/datasources/prometheus.yaml").read_text())
    source = datasources["datasources"][0]
    assert source["type"] == "prometheus"
    assert re.fullmatch(r"http://prometheus:9090/?", source["url"])  # the container port, not the published one
    providers = yaml.safe_load((DEPLOY / "grafana/provisioning/dashboards/sluice.yaml").read_text())["providers"]
    folder = providers[0]["options"]["path"]
    dashboard_mount = next(target for target, src in mounts.items() if src == "./grafana/sluice-dashboard.json")
    assert str(PurePosixPath(dashboard_mount).parent) == folder
    assert grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"] == dashboard_mount

    dashboard = json.loads((DEPLOY / "grafana/sluice-dashboard.json").read_text())
    uids = {source["uid"], "${datasource}"}
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["query"] == "prometheus"
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    assert panels
    assert len({p["id"] for p in dashboard["panels"]}) == len(dashboard["panels"])
    for panel in panels:
        assert panel["datasource"]["uid"] in uids, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] in uids
            assert "sluice_" in target["expr"], panel["title"]


def test_otel_collector_config_is_consistent(compose, cli):
    config = yaml.safe_load((DEPLOY / "otel-collector.yaml").read_text())
    for pipeline in config["service"]["pipelines"].values():
        for kind in ("receivers", "processors", "exporters"):
            for component in pipeline.get(kind, []):
                assert component in config[kind], component
    for extension in config["service"].get("extensions", []):
        assert extension in config["extensions"]
    # Sluice sends both signals over OTLP/gRPC; the collector takes both in.
    pipelines = config["service"]["pipelines"]
    for signal in ("traces", "metrics"):
        assert "otlp" in pipelines[signal]["receivers"], signal
        assert pipelines[signal]["exporters"], signal
    grpc = config["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"]

    # Every control plane and proxy exports there, under its own service name and instance id.
    instances = set()
    for command, service_name in (("control-plane", "sluice-control-plane"), ("proxy", "sluice-proxy")):
        for name, service in services_running(compose, command).items():
            env = environment_of(service)
            check_env_names(env, command, cli, f"compose service {name}")
            assert env.get("OTEL_EXPORTER_OTLP_ENDPOINT") == f"http://otel-collector:{port_of(grpc)}", name
            assert env.get("OTEL_SERVICE_NAME") == service_name, name
            assert int(env["OTEL_METRIC_EXPORT_INTERVAL"]) > 0, name
            attributes = dict(a.split("=", 1) for a in env["OTEL_RESOURCE_ATTRIBUTES"].split(","))
            instances.add(attributes["service.instance.id"])
    assert len(instances) == 5, f"OTLP series of different replicas would collide: {instances}"

    # Prometheus scrapes /metrics itself; the same series re-exported from the collector would
    # be stored twice (the names are identical), so the collector exports none to Prometheus and
    # Prometheus scrapes only the collector's own telemetry port.
    exporters = set(config["exporters"])
    assert not {e for e in exporters if e.split("/")[0] in ("prometheus", "prometheusremotewrite")}, exporters
    own = config["service"]["telemetry"]["metrics"]["readers"][0]["pull"]["exporter"]["prometheus"]["port"]
    scrape = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
    collector_targets = {t for job in scrape["scrape_configs"] for st in job.get("static_configs", [])
                         for t in st["targets"] if t.startswith("otel-collector:")}
    assert collector_targets == {f"otel-collector:{own}"}, collector_targets

    collector = compose["services"]["otel-collector"]
    config_path = collector["command"][0].split("=", 1)[1]
    assert f"./otel-collector.yaml:{config_path}:ro" in collector["volumes"]


def test_compose_traces_reach_jaeger(compose):
    """The collector sends the traces it receives to the compose Jaeger over OTLP/gRPC, Jaeger
    takes OTLP on that port, its UI is published on loopback and Grafana has it as a data
    source."""
    config = yaml.safe_load((DEPLOY / "otel-collector.yaml").read_text())
    traces = config["service"]["pipelines"]["traces"]["exporters"]
    otlp = [e for e in traces if e.split("/")[0] == "otlp"]
    assert len(otlp) == 1, traces
    exporter = config["exporters"][otlp[0]]
    host, port = exporter["endpoint"].rsplit(":", 1)
    assert exporter["tls"]["insecure"] is True, "plaintext inside the compose network"
    jaeger = compose["services"][host]
    assert jaeger["image"].startswith("jaegertracing/all-in-one:") and re.search(r":\d+\.\d+\.\d+$", jaeger["image"])
    assert int(port) == 4317 and environment_of(jaeger).get("COLLECTOR_OTLP_ENABLED") == "true"
    assert "127.0.0.1:16686:16686" in jaeger["ports"]
    assert host in compose["services"]["otel-collector"]["depends_on"]
    # Metrics still go nowhere but the debug exporter (Prometheus scrapes /metrics).
    assert config["service"]["pipelines"]["metrics"]["exporters"] == ["debug"]
    source = yaml.safe_load((DEPLOY / "grafana/provisioning/datasources/jaeger.yaml").read_text())["datasources"][0]
    assert (source["type"], source["url"]) == ("jaeger", f"http://{host}:16686")


def test_compose_services_are_hardened(compose):
    """Every service: read-only root filesystem, no capabilities, no privilege gain, a non-root
    user (its image's, or one set here), writable only where a volume or tmpfs says so."""
    image_users = {"postgres": None, "curlimages/curl": "curl_user", "otel/opentelemetry-collector-contrib": "10001",
                   "prom/prometheus": "nobody", "grafana/grafana": "472", "jaegertracing/all-in-one": "10001",
                   "valkey/valkey": None, "sluice": "65532"}
    for name, service in compose["services"].items():
        assert service.get("read_only") is True, name
        assert service.get("cap_drop") == ["ALL"], name
        assert "no-new-privileges:true" in service.get("security_opt", []), name
        assert not service.get("cap_add") and not service.get("privileged"), name
        image = service["image"].rsplit(":", 1)[0]
        # Images that start as root (postgres, valkey) are given their own user instead.
        assert service.get("user") or image_users[image], f"{name} would run as root"
    assert compose["services"]["postgres"]["user"] == "postgres"
    assert any(t.startswith("/var/run/postgresql:") for t in compose["services"]["postgres"]["tmpfs"]), \
        "Postgres' socket directory must be writable"


def test_compose_grafana_admin_password_comes_from_the_environment(compose_raw):
    from conftest import interpolate

    grafana = compose_raw["services"]["grafana"]["environment"]
    raw = grafana["GF_SECURITY_ADMIN_PASSWORD"]
    assert re.fullmatch(r"\$\{GRAFANA_ADMIN_PASSWORD:-[^}]+\}", raw), raw
    assert interpolate(raw, {"GRAFANA_ADMIN_PASSWORD": "from-the-env"}) == "from-the-env"
    assert interpolate(raw, {}) != "admin", "not the password everyone tries first"
    header = (DEPLOY / "compose.yaml").read_text().split("\nname: sluice", 1)[0]
    assert "GRAFANA_ADMIN_PASSWORD" in header, "the header lists the variables that override the demo defaults"


# ================================================================================================
# Live: the dashboard's metric names, and the compose topology on local processes
# ================================================================================================

def scrape(url: str) -> dict[str, set[str]]:
    """metric sample name -> label names seen on it."""
    status, headers, body = http("GET", url)
    assert status == 200, url
    samples: dict[str, set[str]] = {}
    for line in body.decode().splitlines():
        if not line or line.startswith("#"):
            continue
        m = re.match(r'([a-zA-Z_:][a-zA-Z0-9_:]*)(\{((?:[^"}]|"(?:[^"\\]|\\.)*")*)\})?\s', line)
        assert m, line
        samples.setdefault(m.group(1), set()).update(re.findall(r'([a-zA-Z_]\w*)="', m.group(3) or ""))
    return samples


@dataclass
class Dev:
    """A running `sluice dev`, from its banner."""
    proxy: str
    ops: str
    admin: str
    mocks: list[str]
    key: str


def start_dev(processes, tmp_path) -> Dev:
    dev = processes("dev", [
        "dev", "--admin-addr", "127.0.0.1:0", "--grpc-addr", "127.0.0.1:0", "--addr", "127.0.0.1:0",
        "--ops-addr", "127.0.0.1:0", "--data-dir", str(tmp_path / "data"),
    ])
    banner = wait_until(lambda: "api-key: sk-sluice-" in dev.log_path.read_text() and dev.log_path.read_text(),
                        timeout=30, what="sluice dev's banner")
    proxy = re.search(r"proxy\s+(http://\S+)\s+\(ops (http://\S+?)/metrics\)", banner)
    return Dev(
        proxy=proxy.group(1),
        ops=proxy.group(2),
        admin=re.search(r"admin API\s+(http://\S+)", banner).group(1),
        mocks=re.search(r"backends\s+(.+)", banner).group(1).replace(",", " ").split(),
        key=re.search(r"api-key: (sk-sluice-[A-Za-z0-9]+)", banner).group(1),
    )


def create_key(admin: str, key_id: str, limits: dict, headers: dict | None = None) -> str:
    """A client key for pool gpt-4o with `limits`, through the admin API; returns its secret."""
    status, _, payload = http("POST", f"{admin}/api/v1/keys", {"id": key_id, "pools": ["gpt-4o"], "limits": limits},
                              headers)
    assert status == 201, payload
    return json.loads(payload)["secret"]


def wait_for_key(proxy: str, secret: str) -> None:
    """Until the proxy knows the key (a model listing counts against no limit)."""
    wait_until(lambda: http("GET", f"{proxy}/v1/models", headers={"api-key": secret})[0] == 200,
               what=f"{proxy} to know a new client key")


def exercise_dev(dev: Dev) -> None:
    """Normal and streamed calls, a client key taken past its limit, then every backend
    answering 429, so retries, cooldowns, refusals and "all unavailable" show up in the metrics
    too."""
    call = f"{dev.proxy}/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21"
    message = {"messages": [{"role": "user", "content": "Hello"}]}
    for stream in (False, False, True):
        status, _, _ = http("POST", call, {**message, "stream": stream}, {"api-key": dev.key})
        assert status == 200
    limited = create_key(dev.admin, "limited", {"requests_per_minute": 1})
    wait_for_key(dev.proxy, limited)
    statuses = [http("POST", call, message, {"api-key": limited})[0] for _ in range(2)]
    assert statuses == [200, 429], statuses
    for mock in dev.mocks:
        status, _, _ = http("POST", f"{mock}/_mock/faults", {"kind": "status", "status": 429, "retry_after_ms": 5000})
        assert status == 200
    for _ in range(3):
        http("POST", call, message, {"api-key": dev.key})
    http("GET", f"{dev.admin}/api/v1/pools")


def test_dashboard_queries_use_metrics_sluice_really_exports(processes, tmp_path):
    dev = start_dev(processes, tmp_path)
    exercise_dev(dev)

    samples = scrape(f"{dev.ops}/metrics")
    for name, labels in scrape(f"{dev.admin}/metrics").items():
        samples.setdefault(name, set()).update(labels)
    # Added by Prometheus (instance, job) and by the Prometheus Operator from the ServiceMonitor
    # (namespace); compose series have no namespace, which `=~".*"` still matches.
    target_labels = {"instance", "job", "namespace"}

    dashboard = json.loads((DEPLOY / "grafana/sluice-dashboard.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            exprs.append(variable["definition"])
    assert exprs
    for expr in exprs:
        names = re.findall(r"\b(sluice_[a-z0-9_]+)\b", expr)
        assert names, expr
        for name in names:
            assert name in samples, f"dashboard query uses {name}, which neither /metrics serves: {expr}"
        used = set()
        for name, selector in re.findall(r"\b(sluice_[a-z0-9_]+)\{([^}]*)\}", expr):
            for label in re.findall(r"(\w+)\s*(?:=~|!~|!=|=)", selector):
                assert label in samples[name] | target_labels, f"{name} has no label {label}: {expr}"
        for group in re.findall(r"\b(?:by|on)\s*\(([^)]*)\)", expr):
            used |= {g.strip() for g in group.split(",") if g.strip()}
        for label in re.findall(r"label_values\(\s*sluice_\w+\s*,\s*(\w+)\s*\)", expr):
            used.add(label)
        available = set().union(*(samples[n] for n in names)) | target_labels
        assert used <= available, f"labels {used - available} exist on none of {names}: {expr}"


def scrape_families(url: str) -> dict[str, tuple[str, set[str]]]:
    """metric family -> (type, label names without `le`), from the Prometheus text."""
    status, _, body = http("GET", url)
    assert status == 200, url
    text = body.decode()
    families = {name: (kind, set()) for name, kind in re.findall(r"^# TYPE (\S+) (\S+)$", text, re.M)}
    for name, labels in scrape(url).items():
        family = next((f for f in families if name == f or name in (f + "_bucket", f + "_sum", f + "_count")), None)
        assert family, f"{name} has no # TYPE line"
        families[family][1].update(labels - {"le"})
    return families


def documented_metric_tables() -> dict[str, dict[str, tuple[str, set[str]]]]:
    """The metric tables of docs/observability.md: plane ("proxy" / "control-plane") -> metric ->
    (type, labels)."""
    text = (ROOT / "docs" / "observability.md").read_text()
    metrics = text.split("\n## Metrics\n", 1)[1].split("\n## ", 1)[0]
    planes = {}
    for heading, table in re.findall(r"^### (.+?)\n(.*?)(?=^### |\Z)", metrics, re.M | re.S):
        plane = "proxy" if heading.startswith("Proxy") else "control-plane" if heading.startswith("Control plane") else None
        assert plane, heading
        rows = {}
        for row in re.findall(r"^\| `((?:sluice|process)_[a-z0-9_]+)` \|(.*)$", table, re.M):
            cells = [c.strip() for c in row[1].split("|")]
            rows[row[0]] = (cells[0], set(re.findall(r"`([a-z_]+)`", cells[1])))
        planes[plane] = rows
    assert set(planes) == {"proxy", "control-plane"}, planes.keys()
    return planes


def test_documented_metric_tables_match_what_sluice_exports(processes, tmp_path):
    """Every metric of both planes is in docs/observability.md with its real type and labels,
    and the tables list none that /metrics does not serve."""
    dev = start_dev(processes, tmp_path)
    exercise_dev(dev)
    documented = documented_metric_tables()
    for plane, url in (("proxy", f"{dev.ops}/metrics"), ("control-plane", f"{dev.admin}/metrics")):
        served = scrape_families(url)
        assert set(documented[plane]) == set(served), (
            f"docs/observability.md {plane} metrics: missing {sorted(set(served) - set(documented[plane]))}, "
            f"not served {sorted(set(documented[plane]) - set(served))}")
        for name, (kind, labels) in served.items():
            assert documented[plane][name] == (kind, labels), f"docs/observability.md {name}: {documented[plane][name]}, /metrics: {(kind, labels)}"


ALERT_RULES = CHART / "files" / "sluice-alerts.yml"
ALERT_TESTS = ROOT / "tests" / "deploy" / "sluice-alerts-test.yml"


def operations_alert_rules() -> str:
    """The shipped rule file: the chart's PrometheusRule and the compose Prometheus load it."""
    return ALERT_RULES.read_text()


def test_operations_alert_rules_are_valid_and_use_real_metrics(processes, tmp_path):
    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing (Debian package prometheus; scripts/check-deploy installs it)"
    rules = tmp_path / "sluice-rules.yml"
    rules.write_text(operations_alert_rules())
    check = subprocess.run([promtool, "check", "rules", str(rules)], capture_output=True, text=True, timeout=30)
    assert check.returncode == 0, check.stdout + check.stderr

    dev = start_dev(processes, tmp_path)
    exercise_dev(dev)
    samples = scrape(f"{dev.ops}/metrics")
    for name, labels in scrape(f"{dev.admin}/metrics").items():
        samples.setdefault(name, set()).update(labels)
    for group in yaml.safe_load(rules.read_text())["groups"]:
        for rule in group["rules"]:
            for name, selector in re.findall(r"\b(sluice_[a-z0-9_]+)(?:\{([^}]*)\})?", rule["expr"]):
                assert name in samples, f"alert {rule['alert']} uses {name}, which neither /metrics serves"
                for label in re.findall(r"(\w+)\s*(?:=~|!~|!=|=)", selector):
                    assert label in samples[name], f"alert {rule['alert']}: {name} has no label {label}"


def test_alert_rules_pass_their_promtool_unit_tests(tmp_path):
    """`promtool test rules`: the alerts fire on the series they watch and stay quiet on healthy
    ones (tests/deploy/sluice-alerts-test.yml)."""
    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing (Debian package prometheus; scripts/check-deploy installs it)"
    shutil.copy(ALERT_RULES, tmp_path / "sluice-alerts.yml")
    shutil.copy(ALERT_TESTS, tmp_path / "sluice-alerts-test.yml")
    run = subprocess.run([promtool, "test", "rules", "sluice-alerts-test.yml"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stdout + run.stderr


def test_every_alert_has_a_runbook_section():
    """Each alert links to a section of docs/operations.md named after it, and that section exists."""
    text = (ROOT / "docs" / "operations.md").read_text()
    sections = set(re.findall(r"^### (Sluice\w+)$", text, re.M))
    alerts = [rule for group in yaml.safe_load(ALERT_RULES.read_text())["groups"] for rule in group["rules"]]
    assert alerts
    for rule in alerts:
        assert rule["alert"] in sections, f"docs/operations.md has no runbook section for {rule['alert']}"
        assert rule["annotations"]["runbook"] == f"docs/operations.md#{rule['alert'].lower()}", rule
    assert sections == {rule["alert"] for rule in alerts}, "runbook sections for alerts that do not exist"


def test_prometheus_rule_is_opt_in_and_carries_the_shipped_file(rendered, compose):
    assert not rendered["default"].of_kind("PrometheusRule")
    rules = rendered["features"].of_kind("PrometheusRule")
    assert len(rules) == 1
    rule = rules[0]
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert rule["spec"] == yaml.safe_load(ALERT_RULES.read_text())
    # The compose Prometheus loads the same file.
    prometheus = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
    mounts = {m.split(":")[1]: m.split(":")[0] for m in compose["services"]["prometheus"]["volumes"] if ":" in m}
    for path in prometheus["rule_files"]:
        assert (DEPLOY / mounts[path]).resolve() == ALERT_RULES.resolve(), (path, mounts)


def test_otel_variables_sluice_reads_are_the_documented_ones():
    """OTEL_VARIABLES (what the env checks accept) covers every variable src/telemetry reads, and
    docs/observability.md documents exactly those."""
    code = set()
    for path in (ROOT / "src" / "telemetry").rglob("*.rs"):
        code |= set(re.findall(r'const [A-Z_]+: &str = "(OTEL_[A-Z_]+)"', path.read_text()))
    assert code, "no OTEL_* variable found in src/telemetry"
    assert code <= OTEL_VARIABLES, f"read by src/telemetry but unknown to the checks: {sorted(code - OTEL_VARIABLES)}"
    text = (ROOT / "docs" / "observability.md").read_text()
    settings = text.split("\n## OpenTelemetry settings\n", 1)[1].split("\n## ", 1)[0]
    table = "\n".join(line for line in settings.splitlines() if line.startswith("| `OTEL_"))
    documented = set(re.findall(r"`(OTEL_[A-Z_]+)`", table))
    assert documented == OTEL_VARIABLES, (
        f"docs/observability.md table misses {sorted(OTEL_VARIABLES - documented)}, lists unknown {sorted(documented - OTEL_VARIABLES)}")


def test_metrics_pass_promtool_check(processes, tmp_path):
    """Both /metrics (the proxy's ops port, the admin API) are valid, lint-clean Prometheus
    text for `promtool check metrics`, after normal, streamed and retried calls; a scraper
    that asks for OpenMetrics (Prometheus does) gets it."""
    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing (Debian package prometheus; scripts/check-deploy installs it)"
    dev = start_dev(processes, tmp_path)
    exercise_dev(dev)

    for url in (f"{dev.ops}/metrics", f"{dev.admin}/metrics"):
        status, headers, body = http("GET", url)
        assert status == 200, url
        assert headers["content-type"].startswith("text/plain; version=0.0.4"), (url, headers["content-type"])
        assert b"sluice_" in body, url
        check = subprocess.run([promtool, "check", "metrics"], input=body, capture_output=True, timeout=30)
        problems = (check.stdout + check.stderr).decode()
        assert check.returncode == 0 and not problems.strip(), f"promtool on {url}:\n{problems}"

        accept = "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"
        status, headers, body = http("GET", url, headers={"accept": accept})
        assert status == 200, url
        assert headers["content-type"].startswith("application/openmetrics-text"), url
        assert body.endswith(b"# EOF\n"), url


GO_DURATION = re.compile(r"\d+(?:\.\d+)?(?:ms|s)|\d+m\d+(?:\.\d+)?s")


def test_client_key_limits_answer_as_docs_quotas_md_says(processes, tmp_path):
    """What docs/quotas.md and the README promise a client over a limit, against the binary: a
    429 made by the proxy in OpenAI's shape (type and code per limit, the pool named when its
    own limit was hit), retry-after and retry-after-ms, x-should-retry: false for quotas and
    budgets with the reset time in RFC 3339, OpenAI's x-ratelimit-* headers for per-minute
    limits, and sluice_ratelimited_total by limit."""
    dev = start_dev(processes, tmp_path)
    status, _, payload = http("PUT", f"{dev.admin}/api/v1/pools/gpt-4o", {
        "strategy": "round_robin", "price": {"input_per_1m_usd": 2.5, "output_per_1m_usd": 10}})
    assert status == 200, payload
    # Estimates: this body is 18 tokens (bytes / 4) + max_tokens 5 = 23; the mock reports 2 + 5 = 7.
    # Limits of 25 admit one such call and refuse the next, whether or not the first settled yet.
    keys = {
        "rpm": {"requests_per_minute": 1},
        "tpm": {"pools": {"gpt-4o": {"tokens_per_minute": 25}}},
        "quota": {"token_quota": {"tokens": 25, "period": "day"}},
        "budget": {"budget": {"usd": 0.000001, "period": "month"}},
    }
    secrets = {key_id: create_key(dev.admin, key_id, limits) for key_id, limits in keys.items()}
    for secret in secrets.values():
        wait_for_key(dev.proxy, secret)
    call = f"{dev.proxy}/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21"
    body = {"messages": [{"role": "user", "content": "Hello"}], "max_tokens": 5}
    assert -(-len(json.dumps(body).encode()) // 4) + body["max_tokens"] == 23, "the estimate the limits above assume"

    def refused(key_id: str) -> tuple[dict, dict]:
        answers = [http("POST", call, body, {"api-key": secrets[key_id]}) for _ in range(2)]
        statuses = [a[0] for a in answers]
        too_large = key_id == "budget"  # 95 micro-dollars held > $0.000001: no wait makes it fit
        expected = [429, 429] if too_large else [200, 429]
        assert statuses == expected, (key_id, statuses, answers[-1][2][:300])
        status, headers, payload = answers[-1]
        assert headers["content-type"] == "application/json"
        assert "x-sluice-backend" not in headers, "no backend was called"
        if too_large:
            assert "retry-after" not in headers and headers["x-should-retry"] == "false", headers
        else:
            assert int(headers["retry-after"]) >= 1 and int(headers["retry-after-ms"]) >= 1
        return json.loads(payload)["error"], headers

    for key_id, kind in (("rpm", "requests"), ("tpm", "tokens")):
        error, headers = refused(key_id)
        assert (error["type"], error["code"]) == (kind, "rate_limit_exceeded"), error
        assert f"key '{key_id}'" in error["message"] and "Please try again in" in error["message"], error
        assert "x-should-retry" not in headers, "rates come back: the SDKs retry after retry-after-ms"
        limit = str(keys[key_id].get("requests_per_minute") or keys[key_id]["pools"]["gpt-4o"]["tokens_per_minute"])
        assert headers[f"x-ratelimit-limit-{kind}"] == limit, headers
        assert int(headers[f"x-ratelimit-remaining-{kind}"]) < int(limit)
        assert GO_DURATION.fullmatch(headers[f"x-ratelimit-reset-{kind}"]), headers[f"x-ratelimit-reset-{kind}"]
    assert "on pool 'gpt-4o'" in refused_message(dev, call, body, secrets["tpm"])

    for key_id in ("quota", "budget"):
        error, headers = refused(key_id)
        assert (error["type"], error["code"]) == ("insufficient_quota", "insufficient_quota"), error
        assert headers["x-should-retry"] == "false", "the official SDKs must not retry an exhausted quota"
        if key_id == "budget":
            assert error["message"].startswith("Request too large"), error["message"]
        else:
            m = re.search(r"It resets at (\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ)\.", error["message"])
            assert m, error["message"]
        assert "x-ratelimit-limit-requests" not in headers, "no per-minute limit on this key"
    assert "$0.000001" in refused_message(dev, call, body, secrets["budget"])

    families = scrape_families(f"{dev.ops}/metrics")
    assert families["sluice_ratelimited_total"] == ("counter", {"pool", "client_key", "limit"})
    seen = set()
    for line in http("GET", f"{dev.ops}/metrics")[2].decode().splitlines():
        m = re.match(r'sluice_ratelimited_total\{(.*)\} (\d+)', line)
        if m:
            labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group(1)))
            assert labels["pool"] == "gpt-4o"
            seen.add((labels["client_key"], labels["limit"]))
    assert seen >= {("rpm", "requests_per_minute"), ("tpm", "tokens_per_minute"),
                    ("quota", "token_quota"), ("budget", "budget")}, seen


def refused_message(dev: Dev, call: str, body: dict, secret: str) -> str:
    status, _, payload = http("POST", call, body, {"api-key": secret})
    assert status == 429, payload
    return json.loads(payload)["error"]["message"]


def rewrite_argv(argv: list[str], overrides: dict[str, str]) -> list[str]:
    out, i = [], 0
    while i < len(argv):
        if argv[i] in overrides:
            i += 2
            continue
        out.append(argv[i])
        i += 1
    for flag, value in overrides.items():
        out += [flag, value]
    return out


def run_healthcheck(service: dict, port: int) -> bool:
    script = service["healthcheck"]["test"][-1]
    script = re.sub(r"/dev/tcp/127\.0\.0\.1/\d+", f"/dev/tcp/127.0.0.1/{port}", script)
    return subprocess.run(["bash", "-c", script], capture_output=True, timeout=10).returncode == 0


def busybox_shell(tmp_path: Path) -> tuple[list[str], dict[str, str]]:
    """The seed job runs in curlimages/curl (Alpine: busybox sh, sed, tail). Use busybox for
    the same applets when it is installed, else the system's sh."""
    busybox = shutil.which("busybox")
    if not busybox:
        return ["sh"], {}
    bin_dir = tmp_path / "busybox-bin"
    bin_dir.mkdir()
    for applet in ("sh", "sed", "tail", "cat", "sleep", "printf"):
        (bin_dir / applet).symlink_to(busybox)
    return [busybox, "sh"], {"PATH": f"{bin_dir}:{os.environ['PATH']}"}


@pytest.fixture
def fresh_database():
    """A new, empty Postgres database (dropped afterwards), like the compose stack's first start."""
    if not postgres_reachable():
        pytest.skip(f"no Postgres at {postgres_base_url()} (scripts/check-deploy starts one)")
    database = f"sluice_deploy_{uuid.uuid4().hex[:12]}"
    psql(f"CREATE DATABASE {database}")
    yield f"{postgres_base_url()}/{database}"
    psql(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def redis_answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


@pytest.fixture
def compose_redis(compose, tmp_path):
    """The compose `redis` service as a local process: its own command (valkey-server, or
    redis-server, whichever is installed: the same arguments), on a free loopback port. None
    when neither is installed: the proxies then get an address where nothing listens, which is
    what a Redis outage looks like to them."""
    argv = compose_argv(compose["services"]["redis"])
    server = next((shutil.which(b) for b in (argv[0], "valkey-server", "redis-server") if shutil.which(b)), None)
    if server is None:
        yield None
        return
    data = tmp_path / "redis"
    data.mkdir()
    proc = None
    for _ in range(3):  # the free port may be taken in between: try another
        port = free_port()
        log = open(data / "redis.log", "wb")
        proc = subprocess.Popen([server, *argv[1:], "--bind", "127.0.0.1", "--port", str(port), "--dir", str(data)],
                                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        log.close()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and proc.poll() is None and not redis_answers(port):
            time.sleep(0.05)
        if redis_answers(port):
            break
        proc.kill()
        proc.wait()
        proc = None
    assert proc, f"{server} did not start:\n" + (data / "redis.log").read_text(errors="replace")[-2000:]
    yield f"redis://127.0.0.1:{port}"
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


# fresh_database and compose_redis come before processes: the processes stop first.
def test_compose_topology_on_local_processes(fresh_database, compose_redis, processes, compose, cli, tmp_path):
    """deploy/compose.yaml, service by service, as local processes with the same commands and
    environment: two control planes on one (fresh) Postgres database, three proxies (spread over
    both replicas) sharing client-key limits through the compose Redis, two mocks, the compose
    healthchecks, deploy/seed.sh, calls through every proxy, and proxies serving on after both
    control planes stop, a restarted one from its cache. Without redis-server or valkey-server
    installed, the proxies run with Redis down instead (and the shared-limit check is skipped)."""
    _run_topology(processes, compose, cli, tmp_path, fresh_database, compose_redis)


def image_env() -> dict[str, str]:
    """The ENV of the Dockerfile's runtime stage: what every container starts with."""
    env = {}
    for instr, rest in final_stage(dockerfile_instructions()):
        if instr == "ENV":
            env.update(item.split("=", 1) for item in shlex.split(rest))
    return env


def container_env(service: dict) -> dict[str, str]:
    return {**image_env(), **environment_of(service)}


def metric_value(url: str, name: str) -> str | None:
    """The value of an unlabelled sample on /metrics."""
    for line in http("GET", url)[2].decode().splitlines():
        if line.startswith(name + " "):
            return line.split()[1]
    return None


def _run_topology(processes, compose, cli, tmp_path, database_url, redis_url):
    local: dict[tuple[str, int], str] = {}  # (service, container port) -> local host:port
    started = {}
    assert image_env().get("SLUICE_LOG_FORMAT") == "json"  # the addresses are read from JSON logs

    for name, service in services_running(compose, "mock-upstream").items():
        argv = rewrite_argv(compose_argv(service), {"--addr": "127.0.0.1:0"})
        proc = processes(name, argv, container_env(service))
        local[(name, listen_port(service, "mock-upstream", "http", cli))] = proc.wait_for_field("mock.addr")
        started[name] = (proc, service)

    cps = services_running(compose, "control-plane")
    cp_procs = {}
    for name, service in cps.items():  # both at once: migrations race for the advisory lock
        env = container_env(service)
        assert env["SLUICE_DATABASE_URL"].startswith("postgres://")
        env["SLUICE_DATABASE_URL"] = database_url
        argv = rewrite_argv(compose_argv(service), {"--admin-addr": "127.0.0.1:0", "--grpc-addr": "127.0.0.1:0"})
        cp_procs[name] = (processes(name, argv, env), service)
    for name, (proc, service) in cp_procs.items():
        local[(name, listen_port(service, "control-plane", "admin", cli))] = proc.wait_for_field("admin.addr")
        local[(name, listen_port(service, "control-plane", "grpc", cli))] = proc.wait_for_field("grpc.addr")
        started[name] = (proc, service)
    cp_names = sorted(cps)

    proxy_launch = {}
    for i, (name, service) in enumerate(sorted(services_running(compose, "proxy").items())):
        env = container_env(service)
        env["SLUICE_CACHE_DIR"] = str(tmp_path / f"{name}-cache")
        # The compose Redis, run locally; or, without one, an address where nothing listens.
        assert env["SLUICE_REDIS_URL"].startswith("redis://redis:")
        env["SLUICE_REDIS_URL"] = redis_url or f"redis://127.0.0.1:{free_port()}"
        # Each proxy follows one replica (the compose alias resolves to either).
        cp = cp_names[i % len(cp_names)]
        grpc = local[(cp, listen_port(cps[cp], "control-plane", "grpc", cli))]
        argv = rewrite_argv(compose_argv(service), {
            "--control-plane": f"http://{grpc}", "--addr": "127.0.0.1:0", "--ops-addr": "127.0.0.1:0"})
        proxy_launch[name] = (argv, env)
        proc = processes(name, argv, env)
        local[(name, listen_port(service, "proxy", "http", cli))] = proc.wait_for_field("proxy.addr")
        local[(name, listen_port(service, "proxy", "ops", cli))] = proc.wait_for_field("ops.addr")
        started[name] = (proc, service)

    # The compose healthchecks pass against the real processes.
    for name, (proc, service) in started.items():
        _, port, _ = healthcheck_target(service)
        addr = local[(name, port)]
        wait_until(lambda: run_healthcheck(service, port_of(addr)), what=f"{name}'s compose healthcheck")

    # The seed job, with the compose environment; service URLs point at the local processes.
    seed_env = environment_of(compose["services"]["seed"])
    for key, value in seed_env.items():
        m = re.fullmatch(r"http://([a-z0-9-]+):(\d+)", value)
        if m and (m.group(1), int(m.group(2))) in local:
            seed_env[key] = f"http://{local[(m.group(1), int(m.group(2)))]}"
    shell, shell_env = busybox_shell(tmp_path)
    seed = subprocess.run(
        [*shell, str(DEPLOY / "seed.sh")], env={**os.environ, **seed_env, **shell_env, "WAIT_SECS": "20"},
        capture_output=True, text=True, timeout=90,
    )
    assert seed.returncode == 0, seed.stdout + seed.stderr
    assert "answered by backend mock-" in seed.stdout, seed.stdout
    key = re.search(r"^\s+(sk-sluice-\S+)$", seed.stdout, re.M).group(1)

    proxies = services_running(compose, "proxy")
    path = "/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21"
    body = {"messages": [{"role": "user", "content": "Hello"}]}

    def serves(name: str) -> set[str]:
        addr = local[(name, listen_port(proxies[name], "proxy", "http", cli))]
        backends = set()
        for _ in range(4):
            status, headers, payload = http("POST", f"http://{addr}{path}", body, {"api-key": key})
            assert status == 200, (name, status, payload[:300])
            backends.add(headers["x-sluice-backend"])
        return backends

    for name in proxies:
        # Keys and pools reach every proxy, through either replica (LISTEN/NOTIFY).
        addr = local[(name, listen_port(proxies[name], "proxy", "http", cli))]
        wait_until(lambda: http("POST", f"http://{addr}{path}", body, {"api-key": key})[0] == 200,
                   what=f"{name} to serve the seeded pool")
        assert serves(name) == {"mock-a", "mock-b"}, name

    token = environment_of(cps[cp_names[0]])["SLUICE_ADMIN_TOKEN"].split(",")[0]

    def connected() -> set[str]:
        nodes = set()
        for cp in cp_names:
            admin = local[(cp, listen_port(cps[cp], "control-plane", "admin", cli))]
            status, _, payload = http("GET", f"http://{admin}/api/v1/proxies", headers={"authorization": f"Bearer {token}"})
            assert status == 200
            nodes |= {p["node_id"] for p in json.loads(payload)["proxies"]}
        return nodes

    # The fleet's rows are written in batches: a proxy can serve a moment before it is listed.
    expected = {environment_of(p)["SLUICE_NODE_ID"] for p in proxies.values()}
    wait_until(lambda: connected() == expected, what="the control planes to list every proxy")

    # Client-key limits. With the compose Redis, the three proxies count one limit together: a
    # key's calls spread over them get at most the limit plus the documented lease slack
    # (docs/quotas.md, "Accuracy"), where proxies counting alone would each admit the limit.
    # Without Redis, every proxy says so and keeps serving (checked above).
    for name in sorted(proxies):
        ops = local[(name, listen_port(proxies[name], "proxy", "ops", cli))]
        want = "1" if redis_url else "0"
        wait_until(lambda: metric_value(f"http://{ops}/metrics", "sluice_ratelimit_shared_up") == want,
                   what=f"{name}: sluice_ratelimit_shared_up {want}")
        if not redis_url:
            assert any("quota store unreachable" in (line.get("message") or "") for line in started[name][0].log_lines()), name
    if redis_url:
        admin = local[(cp_names[0], listen_port(cps[cp_names[0]], "control-plane", "admin", cli))]
        limit = 6
        limited = create_key(f"http://{admin}", "shared-limit", {"requests_per_minute": limit},
                             {"authorization": f"Bearer {token}"})
        addrs = [local[(name, listen_port(proxies[name], "proxy", "http", cli))] for name in sorted(proxies)]
        for addr in addrs:
            wait_for_key(f"http://{addr}", limited)
        time.sleep(0.5)  # a few syncs: each proxy now spends from a lease, not its first allowance
        outcomes = Counter()
        for i in range(5 * limit):
            status, _, payload = http("POST", f"http://{addrs[i % len(addrs)]}{path}", body, {"api-key": limited})
            if status == 429:
                error = json.loads(payload)["error"]
                assert (error["type"], error["code"]) == ("requests", "rate_limit_exceeded"), error
            else:
                assert status == 200, (status, payload[:300])
            outcomes[status] += 1
        bound = limit + max(limit // 10, len(addrs))
        assert 1 <= outcomes[200] <= bound, f"{dict(outcomes)}: one limit of {limit} over {len(addrs)} proxies"

    # What Prometheus scrapes is there, and every control plane and proxy took the compose
    # OTEL_* settings: it exports traces and metrics to the collector's address (which does not
    # resolve here, so those exports fail quietly).
    for name, (proc, service) in started.items():
        command = subcommand_of(compose_argv(service), cli)
        if command in ("control-plane", "proxy"):
            port = listen_port(service, command, "admin" if command == "control-plane" else "ops", cli)
            assert any(n.startswith("sluice_") for n in scrape(f"http://{local[(name, port)]}/metrics")), name
            messages = {line.get("message"): line for line in proc.log_lines()}
            assert "exporting traces over OTLP" in messages, name
            exporting = messages.get("exporting metrics over OTLP")
            assert exporting and exporting["endpoint"] == environment_of(service)["OTEL_EXPORTER_OTLP_ENDPOINT"], name

    # Both control planes gone: proxies keep serving; a restarted proxy serves from its cache.
    for cp in cp_names:
        started[cp][0].stop()
    for name in proxies:
        assert serves(name) == {"mock-a", "mock-b"}
    restarted = sorted(proxies)[-1]
    started[restarted][0].stop()
    argv, env = proxy_launch[restarted]
    proc = processes(f"{restarted}-restarted", argv, env)
    ops = proc.wait_for_field("ops.addr")
    http_addr = proc.wait_for_field("proxy.addr")
    wait_until(lambda: http("GET", f"http://{ops}/readyz")[0] == 200, what="the restarted proxy to load its cache")
    status, _, _ = http("POST", f"http://{http_addr}{path}", body, {"api-key": key})
    assert status == 200
