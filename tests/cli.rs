//! The `sluice` binary as an operator runs it: start-up refusals, flags, logs.

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use support::{ADMIN_TOKEN, TestDatabase};

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
    let mut command = sluice();
    command.args([
        "control-plane",
        "--admin-addr",
        "127.0.0.1:0",
        "--database-url",
        db.url(),
    ]);
    command
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
    let (ok, text) = run(sluice()
        .args([
            "control-plane",
            "--admin-addr",
            "127.0.0.1:0",
            "--database-url",
            "mysql://x/y",
        ])
        .env("SLUICE_ADMIN_TOKEN", ADMIN_TOKEN));
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
    ] {
        let (ok, text) = run(sluice().args(args));
        assert!(!ok);
        assert!(text.contains("invalid value"), "{args:?}: {text}");
    }
}

/// `--help` is complete: every flag of every command can also be set as `SLUICE_<FLAG>`.
#[test]
fn every_flag_has_an_environment_variable() {
    for command in ["control-plane", "dev"] {
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

#[tokio::test]
async fn dev_serves_on_loopback_without_a_token() {
    let dir = tempfile::tempdir().unwrap();
    let (child, addr) = start_and_read_address(sluice().args([
        "dev",
        "--admin-addr",
        "127.0.0.1:0",
        "--data-dir",
        dir.path().to_str().unwrap(),
    ]));
    assert!(addr.starts_with("127.0.0.1:"), "{addr}");
    let pools = reqwest::get(format!("http://{addr}/api/v1/pools"))
        .await
        .unwrap();
    assert_eq!(pools.status(), 200);
    stop(child);
    assert!(dir.path().join("dev.db").exists());
}
