"""pytest fixtures: one proxy and its mock upstreams per session (see `harness.py`)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import pytest

from harness import (
    BACKEND_KEYS,
    CLIENT_KEY,
    LIMITED_KEYS,
    OTHER_CLIENT_KEY,
    SLUICE_BIN,
    Mock,
    Process,
    Sluice,
    config_yaml,
    limited_key_env,
    spawn,
    wait_ready,
)


@pytest.fixture(scope="session")
def sluice() -> Any:
    """Three mock upstreams and a proxy over them, for the whole session."""
    if not os.access(SLUICE_BIN, os.X_OK):
        pytest.exit(f"no sluice binary at {SLUICE_BIN}: run `cargo build --bin sluice`", 2)
    started: list[Process] = []
    workdir = tempfile.TemporaryDirectory(prefix="sluice-sdk-")
    try:
        mocks: dict[str, Mock] = {}
        for name, key in BACKEND_KEYS.items():
            process = spawn(
                f"mock-{name}",
                ["mock-upstream", "--addr", "127.0.0.1:0", "--name", name, "--api-key", key],
            )
            started.append(process)
            mocks[name] = Mock(name, "", key, process)
        for mock in mocks.values():
            mock.url = "http://" + mock.process.wait_for_field("mock.addr")

        config_path = Path(workdir.name) / "sluice.yaml"
        config_path.write_text(config_yaml(mocks))
        env = {f"SLUICE_TEST_{name.upper()}_KEY": key for name, key in BACKEND_KEYS.items()}
        env["SLUICE_TEST_TEAM_A_KEY"] = CLIENT_KEY
        env["SLUICE_TEST_TEAM_B_KEY"] = OTHER_CLIENT_KEY
        env.update({limited_key_env(key_id): key for key_id, (key, _) in LIMITED_KEYS.items()})
        proxy = spawn(
            "proxy",
            ["proxy", "--config", str(config_path), "--addr", "127.0.0.1:0",
             "--ops-addr", "127.0.0.1:0"],
            env,
        )
        started.append(proxy)
        url = "http://" + proxy.wait_for_field("proxy.addr")
        ops_url = "http://" + proxy.wait_for_field("ops.addr")
        wait_ready(ops_url, proxy)
        yield Sluice(url, ops_url, mocks, proxy, config_path)
    finally:
        for process in reversed(started):
            process.stop()
        workdir.cleanup()


@pytest.fixture(autouse=True)
def _clean_faults(request: pytest.FixtureRequest) -> Any:
    """No fault outlives the test that armed it."""
    if "sluice" not in request.fixturenames:
        yield
        return
    env = request.getfixturevalue("sluice")
    env.clear_faults()
    yield
    env.clear_faults()
