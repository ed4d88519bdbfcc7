//! The measuring and building scripts (`bench/instructions`, `scripts/build-pgo`) refuse a bad
//! setting with an error that names it, before they install, build or start anything.

use std::path::Path;
use std::process::Command;

/// Runs `script` from the repository's root with `settings`, on a PATH without cargo or the
/// user's tools: a script that went past its checks would stop at a missing tool, not build.
/// Returns (success, stderr).
fn run(script: &str, settings: &[(&str, &str)]) -> (bool, String) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let output = Command::new("bash")
        .arg(root.join(script))
        .current_dir(root)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .envs(settings.iter().copied())
        .output()
        .unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn assert_refused(script: &str, prefix: &str, settings: &[(&str, &str)], error: &str) {
    let (ok, stderr) = run(script, settings);
    assert!(!ok, "{script} {settings:?} ran: {stderr}");
    let expected = format!("{prefix} error: {error}\n");
    assert_eq!(stderr, expected, "{script} {settings:?}");
}

#[test]
fn bench_instructions_refuses_bad_settings() {
    for (settings, error) in [
        (
            &[("MISSES", "sometimes")][..],
            "MISSES must be off or on (got 'sometimes')",
        ),
        (
            &[("WORKLOAD", "xml")],
            "WORKLOAD must be json, sse or sse-no-usage (got 'xml')",
        ),
        (
            &[("KEY", "gold")],
            "KEY must be plain or limits (got 'gold')",
        ),
        (&[("OTLP", "yes")], "OTLP must be off or on (got 'yes')"),
        (
            &[("OTLP_RATIO", "2")],
            "OTLP_RATIO must be a ratio from 0 to 1 (got '2')",
        ),
        (
            &[("TARGET", "envoy")],
            "TARGET must be sluice, bare or nginx (got 'envoy')",
        ),
        (
            &[("TARGET", "nginx"), ("KEY", "limits")],
            "KEY=limits: only Sluice has client keys with limits",
        ),
        (
            &[("TARGET", "bare"), ("OTLP", "on")],
            "OTLP=on: only Sluice exports telemetry",
        ),
        (
            &[("COUNT_SECONDS", "0")],
            "COUNT_SECONDS must be a whole number above 0",
        ),
        (&[("WARMUP", "soon")], "WARMUP must be a whole number"),
    ] {
        assert_refused("bench/instructions", "[instructions]", settings, error);
    }
}

#[test]
fn build_pgo_refuses_bad_settings_before_it_installs_or_builds_anything() {
    let scratch = tempfile::tempdir().unwrap();
    let pgo_dir = scratch.path().join("pgo");
    let pgo_dir = pgo_dir.to_str().unwrap();
    for (settings, error) in [
        (
            &[("BOLT", "maybe"), ("PGO_DIR", pgo_dir)][..],
            "BOLT must be on or off (got 'maybe')",
        ),
        (
            &[("TRAIN_SECONDS", "0"), ("PGO_DIR", pgo_dir)],
            "TRAIN_SECONDS must be a whole number above 0",
        ),
    ] {
        assert_refused("scripts/build-pgo", "[build-pgo]", settings, error);
        assert!(
            !Path::new(pgo_dir).exists(),
            "{settings:?}: build-pgo made its build directory before refusing"
        );
    }
}
