//! The `sluice` binary as an operator runs it: start-up refusals, flags, logs.

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use sluice_testkit::azure::TestCa;
use support::{ADMIN_TOKEN, PROXY_TOKEN, TestDatabase};

fn sluice() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_sluice"));
    // Tests must not depend on the developer's environment.
    for (key, _) in std::env::vars()
        .filter(|(k, _)| k.starts_with("SLUICE_") && k != "SLUICE_TEST_POSTGRES_URL")
    {
        command.env_remove(key);
    }
    command
}

/// Runs to completion and returns (success, stderr + stdout).
fn run(command: &mut Command) -> (bool, String) {
    let output = command.output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stderr),
        String::from_utf8_lossy(&output.stdout)
    );
    (output.status.success(), text)
}

fn control_plane(db: &TestDatabase) -> Command {
    control_plane_on(db.url())
}

fn control_plane_on(database_url: &str) -> Command {
    let mut command = sluice();
    command
        .args([
            "control-plane",
            "--admin-addr",
            "127.0.0.1:0",
            "--grpc-addr",
            "127.0.0.1:0",
        ])
        .args(["--database-url", database_url])
        .env("SLUICE_PROXY_TOKEN", PROXY_TOKEN);
    command
}

/// The allocator settings `.cargo/config.toml` compiles in (docs/performance.md: pages given
/// back after a second, each thread's cache swept every 1 MiB) are the ones the binary runs
/// with: jemalloc prints its options when asked to print its statistics at exit.
#[test]
fn the_binary_runs_with_the_allocator_settings_it_was_built_with() {
    let (ok, text) = run(sluice()
        .arg("--version")
        .env("_RJEM_MALLOC_CONF", "stats_print:true"));
    assert!(ok, "{text}");
    for option in [
        "opt.dirty_decay_ms: 1000",
        "opt.muzzy_decay_ms: 0",
        "opt.tcache_gc_incr_bytes: 1048576",
    ] {
        assert!(
            text.contains(option),
            "{option} missing from jemalloc's options:\n{text}"
        );
    }
}

#[test]
fn refuses_to_start_without_an_admin_token() {
    let db = TestDatabase::sqlite();
    let (ok, text) = run(&mut control_plane(&db));
    assert!(!ok);
    assert!(
        text.contains("SLUICE_ADMIN_TOKEN") && text.contains("--insecure-no-admin-auth"),
        "{text}"
    );
}

#[test]
fn refuses_a_short_admin_token() {
    let db = TestDatabase::sqlite();
    let (ok, text) = run(control_plane(&db).env("SLUICE_ADMIN_TOKEN", "short"));
    assert!(!ok);
    assert!(text.contains("at least 16 characters"), "{text}");
}

#[test]
fn refuses_to_start_without_a_proxy_token() {
    let db = TestDatabase::sqlite();
    let (ok, text) = run(control_plane(&db)
        .env("SLUICE_ADMIN_TOKEN", ADMIN_TOKEN)
        .env_remove("SLUICE_PROXY_TOKEN"));
    assert!(!ok);
    assert!(text.contains("SLUICE_PROXY_TOKEN"), "{text}");
}

#[test]
fn proxy_needs_a_config_source() {
    let (ok, text) = run(sluice().args(["proxy"]));
    assert!(!ok);
    assert!(
        text.contains("--config") && text.contains("--control-plane"),
        "{text}"
    );
    let (ok, text) = run(sluice().args(["proxy", "--control-plane", "http://127.0.0.1:1"]));
    assert!(!ok);
    assert!(text.contains("--proxy-token"), "{text}");
    let (ok, text) = run(sluice().args([
        "proxy",
        "--config",
        "/nonexistent/sluice.yaml",
        "--addr",
        "127.0.0.1:0",
        "--ops-addr",
        "127.0.0.1:0",
    ]));
    assert!(!ok);
    assert!(
        text.contains("cannot read config file /nonexistent/sluice.yaml"),
        "{text}"
    );
}

#[test]
fn refuses_a_trace_sampler_it_cannot_apply() {
    for (sampler, arg, expected) in [
        (
            "parentbased_traceidratio",
            "ten percent",
            "OTEL_TRACES_SAMPLER_ARG=\"ten percent\" is not a ratio between 0 and 1",
        ),
        (
            "jaeger_remote",
            "",
            "OTEL_TRACES_SAMPLER=\"jaeger_remote\" is not supported",
        ),
    ] {
        let (ok, text) = run(sluice()
            .args(["proxy", "--config", "/nonexistent/sluice.yaml"])
            .env("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:1")
            .env("OTEL_TRACES_SAMPLER", sampler)
            .env("OTEL_TRACES_SAMPLER_ARG", arg));
        assert!(!ok);
        assert!(text.contains(expected), "{text}");
    }
}

#[test]
fn refuses_insecure_mode_off_loopback() {
    let db = TestDatabase::sqlite();
    let (ok, text) = run(sluice().args([
        "control-plane",
        "--insecure-no-admin-auth",
        "--admin-addr",
        "0.0.0.0:0",
        "--database-url",
        db.url(),
    ]));
    assert!(!ok);
    assert!(text.contains("loopback"), "{text}");
}

#[test]
fn refuses_an_unsupported_database_url() {
    let (ok, text) = run(control_plane_on("mysql://x/y").env("SLUICE_ADMIN_TOKEN", ADMIN_TOKEN));
    assert!(!ok);
    assert!(
        text.contains("postgres://") && text.contains("sqlite://"),
        "{text}"
    );
}

#[test]
fn refuses_bad_flag_values() {
    for args in [
        ["control-plane", "--admin-addr", "not-an-address"],
        ["control-plane", "--database-timeout-ms", "5"],
        ["control-plane", "--log-format", "xml"],
        ["proxy", "--workers", "0"],
        ["proxy", "--workers", "many"],
        ["proxy", "--max-concurrent-requests", "lots"],
    ] {
        let (ok, text) = run(sluice().args(args));
        assert!(!ok);
        assert!(text.contains("invalid value"), "{args:?}: {text}");
    }
}

/// A certificate the listener could not present stops the start, naming the flag to fix.
#[test]
fn refuses_unusable_tls_files() {
    let ca = TestCa::new().unwrap();
    let (pem, other) = (
        ca.server_pem(&["localhost"]).unwrap(),
        ca.server_pem(&["localhost"]).unwrap(),
    );
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    };
    let cert = write("tls.crt", &pem.chain);
    let key = write("tls.key", &pem.key);
    let other_key = write("other.key", &other.key);
    let garbage = write("garbage.pem", "not PEM at all");
    let missing = dir.path().join("missing.crt").display().to_string();
    let config = write("sluice.yaml", "pools: []\n");
    let proxy = |cert: &str, key: &str| {
        let mut command = sluice();
        command.args(["proxy", "--config", &config, "--addr", "127.0.0.1:0"]);
        command.args([
            "--ops-addr",
            "127.0.0.1:0",
            "--tls-cert",
            cert,
            "--tls-key",
            key,
        ]);
        command
    };
    for (cert, key, expected) in [
        (&missing, &key, format!("cannot read --tls-cert {missing}")),
        (
            &garbage,
            &key,
            format!("--tls-cert {garbage} holds no PEM certificate"),
        ),
        (
            &cert,
            &garbage,
            format!("--tls-key {garbage} holds no PEM private key"),
        ),
        (
            &cert,
            &other_key,
            format!(
                "the private key in --tls-key {other_key} does not belong to the certificate in --tls-cert {cert}"
            ),
        ),
    ] {
        let (ok, text) = run(&mut proxy(cert, key));
        assert!(!ok, "{text}");
        assert!(text.contains(&expected), "{expected}: {text}");
    }
    // The same through the environment.
    let (ok, text) = run(sluice()
        .args(["proxy", "--config", &config, "--addr", "127.0.0.1:0"])
        .args(["--ops-addr", "127.0.0.1:0"])
        .env("SLUICE_TLS_CERT", &missing)
        .env("SLUICE_TLS_KEY", &key));
    assert!(!ok);
    assert!(
        text.contains(&format!("cannot read --tls-cert {missing}")),
        "{text}"
    );

    // The admin API's, before the database is touched.
    let db = TestDatabase::sqlite();
    let (ok, text) = run(control_plane(&db)
        .env("SLUICE_ADMIN_TOKEN", ADMIN_TOKEN)
        .args(["--tls-cert", &missing, "--tls-key", &key]));
    assert!(!ok);
    assert!(
        text.contains(&format!("cannot read --tls-cert {missing}")),
        "{text}"
    );

    // One without the other.
    let (ok, text) = run(sluice().args(["proxy", "--config", &config, "--tls-cert", &cert]));
    assert!(!ok);
    assert!(text.contains("--tls-key"), "{text}");
    let (ok, text) = run(control_plane(&db).env("SLUICE_TLS_KEY", &key));
    assert!(!ok);
    assert!(text.contains("--tls-cert"), "{text}");
}

/// `--help` is complete: every flag of every command can also be set as `SLUICE_<FLAG>`.
#[test]
fn every_flag_has_an_environment_variable() {
    for command in ["control-plane", "dev", "proxy", "mock-upstream"] {
        let (ok, help) = run(sluice().args([command, "--help"]));
        assert!(ok, "{help}");
        // Each option's block: its `--flag` line and the description lines below it.
        let mut blocks: Vec<(String, String)> = Vec::new();
        for line in help.lines().map(str::trim) {
            if line.starts_with('-') {
                let flag = line
                    .split([' ', '<', ','])
                    .find(|w| w.starts_with("--"))
                    .unwrap_or_default();
                blocks.push((flag.to_owned(), line.to_owned()));
            } else if let Some((_, text)) = blocks.last_mut() {
                text.push_str(line);
            }
        }
        let mut flags = 0;
        for (flag, text) in blocks
            .iter()
            .filter(|(f, _)| f != "--help" && f != "--version")
        {
            flags += 1;
            let env = format!(
                "SLUICE_{}",
                flag.trim_start_matches("--")
                    .replace('-', "_")
                    .to_uppercase()
            );
            assert!(
                text.contains(&format!("[env: {env}")),
                "{command} {flag} lacks {env}: {text}"
            );
        }
        assert!(flags >= 2, "{command}: {help}");
    }
}

/// Starts the real binary with JSON logs on an ephemeral port and returns the bound address.
fn start_and_read_address(command: &mut Command) -> (Child, String) {
    let mut child = command
        .args(["--log-format", "json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    for line in stdout.lines() {
        let line = line.unwrap();
        // `dev` prints a banner for humans between the JSON log lines.
        let Ok(event) = serde_json::from_str::<serde_json::Value>(&line) else {
            continue;
        };
        if let Some(addr) = event["admin.addr"].as_str() {
            return (child, addr.to_owned());
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    panic!("the control plane never logged its address: {stderr}");
}

fn stop(mut child: Child) {
    // SIGTERM, as Kubernetes sends it; the process drains and exits cleanly.
    let pid = child.id().to_string();
    Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    for _ in 0..100 {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "exit status {status}");
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    panic!("the control plane did not stop on SIGTERM");
}

async fn serves_pools(addr: &str) {
    let client = reqwest::Client::new();
    let created = client
        .post(format!("http://{addr}/api/v1/pools"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&support::pool_json("gpt-4o", &["eastus", "westus"]))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let ready = client
        .get(format!("http://{addr}/readyz"))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
}

#[tokio::test]
async fn serves_on_sqlite_and_postgres_and_stops_on_sigterm() {
    for db in [TestDatabase::sqlite(), TestDatabase::postgres().await] {
        let (child, addr) =
            start_and_read_address(control_plane(&db).env("SLUICE_ADMIN_TOKEN", ADMIN_TOKEN));
        serves_pools(&addr).await;
        stop(child);
    }
}

/// `sluice dev` prints a curl line that works: the seeded pool answers through the proxy,
/// which got its config from the control plane over gRPC.
#[tokio::test]
async fn dev_prints_a_curl_line_that_works() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = sluice()
        .args([
            "--log-format",
            "json",
            "dev",
            "--backends",
            "3",
            "--data-dir",
            dir.path().to_str().unwrap(),
        ])
        .args([
            "--admin-addr",
            "127.0.0.1:0",
            "--grpc-addr",
            "127.0.0.1:0",
            "--addr",
            "127.0.0.1:0",
            "--ops-addr",
            "127.0.0.1:0",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let (mut url, mut key) = (None, None);
    for line in lines.by_ref() {
        let line = line.unwrap();
        if let Some(rest) = line.trim().strip_prefix("curl -s '") {
            url = rest.split('\'').next().map(str::to_owned);
        }
        if let Some(rest) = line.trim().strip_prefix("-H 'api-key: ") {
            key = rest.split('\'').next().map(str::to_owned);
            break;
        }
    }
    // Keep reading so the child never blocks on a full pipe.
    std::thread::spawn(move || lines.for_each(drop));
    let (url, key) = (url.expect("a curl line"), key.expect("a demo key"));
    let client = reqwest::Client::new();
    let mut served_by = std::collections::BTreeSet::new();
    for _ in 0..30 {
        let response = client
            .post(&url)
            .header("api-key", &key)
            .json(&serde_json::json!({"messages": [{"role": "user", "content": "Hello"}]}))
            .send()
            .await
            .unwrap();
        if response.status() == 503 {
            // The proxy is still waiting for its first snapshot.
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        }
        assert_eq!(response.status(), 200);
        served_by.insert(
            response.headers()["x-sluice-backend"]
                .to_str()
                .unwrap()
                .to_owned(),
        );
    }
    assert_eq!(
        served_by.len(),
        3,
        "round-robin over the three mock backends: {served_by:?}"
    );
    stop(child);
    assert!(dir.path().join("dev.db").exists());
    assert!(dir.path().join("proxy-cache/snapshot.json").exists());
}
