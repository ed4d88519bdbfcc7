//! Child processes of a test: `sluice` binaries and servers such as `redis-server`, tied to the
//! test process so that they die with it even when it is killed (a nextest timeout), and
//! `sluice proxy` processes with their JSON logs collected.

use std::collections::HashMap;
use std::io::{BufRead as _, BufReader, Write as _};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A process started through `sh`, which kills it when the test process's end of a pipe
/// closes: on drop, on a panic, or when the test process dies without unwinding.
pub struct TiedChild {
    pub pid: u32,
    shell: Child,
    /// Closing it tells the shell to kill the process.
    tie: Option<ChildStdin>,
}

impl TiedChild {
    /// Starts `program` with `args`; `configure` sets its environment, directory and stdout
    /// (discarded unless piped there). Its stderr is drained and dropped.
    pub fn spawn(program: &Path, args: &[String], configure: impl FnOnce(&mut Command)) -> Self {
        let mut command = Command::new("sh");
        command
            .arg("-c")
            // The inner shell prints its pid, which `exec` hands to the program, before the
            // program can print anything. A background job reads /dev/null, not our pipe.
            .arg(r#"sh -c 'echo $$ >&2; exec "$@"' sh "$@" & child=$!; read -r _; kill -9 "$child" 2>/dev/null; wait"#)
            .arg("sh")
            .arg(program)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        configure(&mut command);
        let mut shell = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", program.display()));
        let tie = shell.stdin.take();
        // The pid comes first on stderr; the rest of stderr is the process's own.
        let mut stderr = BufReader::new(shell.stderr.take().expect("stderr is piped"));
        let mut line = String::new();
        stderr.read_line(&mut line).unwrap();
        let pid = line
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{} did not start: {line}", program.display()));
        // Keep draining stderr so the process never blocks on a full pipe.
        std::thread::spawn(move || {
            let mut sink = String::new();
            while stderr.read_line(&mut sink).is_ok_and(|n| n > 0) {
                sink.clear();
            }
        });
        Self { pid, shell, tie }
    }

    pub fn stdout(&mut self) -> Option<std::process::ChildStdout> {
        self.shell.stdout.take()
    }

    /// SIGKILL, as an OOM killer or a node failure would, and waits until it is gone.
    pub fn kill(&mut self) {
        self.signal("KILL");
        self.wait_gone();
    }

    /// SIGTERM, the way Kubernetes stops a pod; does not wait.
    pub fn terminate(&self) {
        self.signal("TERM");
    }

    fn signal(&self, signal: &str) {
        let _ = Command::new("kill")
            .args([&format!("-{signal}"), &self.pid.to_string()])
            .stderr(Stdio::null())
            .status();
    }

    fn wait_gone(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.running() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Whether the process still runs. An exited child is a zombie until the shell reaps it:
    /// that counts as gone.
    pub fn running(&self) -> bool {
        if !Path::new(&format!("/proc/{}", self.pid)).exists() {
            return false;
        }
        let status =
            std::fs::read_to_string(format!("/proc/{}/stat", self.pid)).unwrap_or_default();
        status.split_whitespace().nth(2) != Some("Z")
    }
}

impl Drop for TiedChild {
    fn drop(&mut self) {
        self.signal("KILL");
        if let Some(mut tie) = self.tie.take() {
            let _ = tie.write_all(b"\n");
        }
        let _ = self.shell.wait();
    }
}

/// The `sluice` binary under test.
pub fn sluice_binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_sluice"))
}

/// The auth of the backend of [`ProxyProcess::start_one_pool`]: its key is read from the
/// process's environment.
pub const BACKEND_KEY_FROM_ENV: &str =
    "{ type: api_key, secret: \"env://SLUICE_TEST_BACKEND_KEY\" }";

/// A `sluice proxy` process on ephemeral ports, with JSON logs kept for the test to read.
pub struct ProxyProcess {
    pub addr: SocketAddr,
    pub ops_addr: SocketAddr,
    pub name: String,
    logs: Arc<Mutex<Vec<String>>>,
    child: TiedChild,
    _dir: tempfile::TempDir,
}

impl ProxyProcess {
    /// `sluice proxy --log-format json --addr 127.0.0.1:0 --ops-addr 127.0.0.1:0 ARGS`, with
    /// only `env` of the SLUICE_* variables (the developer's own must not leak in), run in a
    /// directory of its own (the control-plane cache goes there).
    pub async fn start(name: &str, args: &[String], env: &HashMap<String, String>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut all = vec![
            "--log-format".to_owned(),
            "json".to_owned(),
            "proxy".to_owned(),
            "--addr".to_owned(),
            "127.0.0.1:0".to_owned(),
            "--ops-addr".to_owned(),
            "127.0.0.1:0".to_owned(),
        ];
        all.extend(args.iter().cloned());
        let mut child = TiedChild::spawn(&sluice_binary(), &all, |command| {
            for (key, _) in std::env::vars().filter(|(k, _)| k.starts_with("SLUICE_")) {
                command.env_remove(key);
            }
            command
                .envs(env)
                .env("SLUICE_LOG", "info")
                .env("NO_COLOR", "1")
                .current_dir(dir.path())
                .stdout(Stdio::piped());
        });
        let logs = Arc::new(Mutex::new(Vec::new()));
        let stdout = child.stdout().expect("stdout is piped");
        let sink = logs.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                sink.lock().unwrap().push(line);
            }
        });
        let mut proxy = Self {
            addr: "0.0.0.0:0".parse().unwrap(),
            ops_addr: "0.0.0.0:0".parse().unwrap(),
            name: name.to_owned(),
            logs,
            child,
            _dir: dir,
        };
        proxy.addr = proxy.wait_for_field("proxy.addr").await.parse().unwrap();
        proxy.ops_addr = proxy.wait_for_field("ops.addr").await.parse().unwrap();
        proxy
    }

    /// A proxy whose config (written to `dir`) has one pool, `p`, of `backend` (a backend's YAML
    /// line authenticated by [`BACKEND_KEY_FROM_ENV`], whose key is `backend_key`), and one
    /// client key, `team`, whose secret is `client_key`; `env` adds to its environment.
    pub async fn start_one_pool(
        name: &str,
        dir: &Path,
        backend: &str,
        backend_key: &str,
        client_key: &str,
        env: &[(&str, &str)],
    ) -> Self {
        let config = dir.join("sluice.yaml");
        std::fs::write(
            &config,
            format!(
                "pools:\n{}\nclient_keys:\n  - {{ id: team, secret: \"env://SLUICE_TEST_CLIENT_KEY\" }}\n",
                super::proxy::pool_yaml_of("p", "", &[backend.to_owned()])
            ),
        )
        .unwrap();
        let mut all_env = HashMap::from([
            ("SLUICE_TEST_BACKEND_KEY".to_owned(), backend_key.to_owned()),
            ("SLUICE_TEST_CLIENT_KEY".to_owned(), client_key.to_owned()),
        ]);
        all_env.extend(env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
        let args = ["--config".to_owned(), config.display().to_string()];
        Self::start(name, &args, &all_env).await
    }

    /// The first value of a top-level field of the JSON log, waiting for it.
    async fn wait_for_field(&self, field: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let found = self.logs.lock().unwrap().iter().find_map(|line| {
                let event: serde_json::Value = serde_json::from_str(line).ok()?;
                Some(event.get(field)?.as_str()?.to_owned())
            });
            if let Some(value) = found {
                return value;
            }
            assert!(
                Instant::now() < deadline,
                "{}: no `{field}` in its log:\n{}",
                self.name,
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Every log line so far.
    pub fn log_lines(&self) -> Vec<String> {
        self.logs.lock().unwrap().clone()
    }

    /// Asserts the log says `needle` exactly once (a warning that must not repeat).
    pub fn logs_once(&self, needle: &str) {
        let seen = self
            .log_lines()
            .iter()
            .filter(|line| line.contains(needle))
            .count();
        assert_eq!(
            seen,
            1,
            "{} logs {needle:?} once:\n{}",
            self.name,
            self.log_text()
        );
    }

    pub fn log_text(&self) -> String {
        self.log_lines().join("\n")
    }

    /// The ops port's Prometheus text.
    pub async fn metrics(&self) -> String {
        super::ops_metrics(self.ops_addr).await
    }

    /// The value of the sample whose line starts with `series` (name and labels exactly as
    /// exposed), if present.
    pub async fn metric(&self, series: &str) -> Option<f64> {
        metric_value(&self.metrics().await, series)
    }

    /// SIGTERM.
    pub fn terminate(&self) {
        self.child.terminate();
    }

    pub fn running(&self) -> bool {
        self.child.running()
    }

    pub fn pid(&self) -> u32 {
        self.child.pid
    }
}

/// The value of `series` (e.g. `sluice_ratelimit_shared_up` or
/// `name{label="value",…}`) in a Prometheus text exposition.
pub fn metric_value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| {
            let (name, value) = line.rsplit_once(' ')?;
            (name == series).then(|| value.parse().ok())?
        })
}
