//! Redis for client-key limits. `scripts/test` starts one for the suite (`scripts/ensure-redis`)
//! and exports its URL as `SLUICE_TEST_REDIS_URL`; tests that kill or restart Redis, or that
//! need to be the only proxies on it (the proxies' count is per Redis, not per key), start a
//! `redis-server` of their own on a free port.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use super::process::TiedChild;

const RUN_THE_SUITE: &str = "run scripts/test, which installs redis-server and starts the \
     tests' Redis, or `export SLUICE_TEST_REDIS_URL=$(scripts/ensure-redis)` before cargo nextest";

/// `redis-server` on the PATH; fails the test with what to do when it is missing.
pub fn redis_server_binary() -> PathBuf {
    let found = std::process::Command::new("sh")
        .args(["-c", "command -v redis-server"])
        .output()
        .ok()
        .filter(|output| output.status.success())
        .map(|output| String::from_utf8_lossy(&output.stdout).trim().to_owned())
        .filter(|path| !path.is_empty());
    match found {
        Some(path) => PathBuf::from(path),
        None => panic!("redis-server is not installed: {RUN_THE_SUITE}"),
    }
}

/// The suite's Redis (`SLUICE_TEST_REDIS_URL`). Tests on it must use client-key ids of their
/// own: the ids prefix every counter's key.
pub fn shared_redis_url() -> String {
    let url = std::env::var("SLUICE_TEST_REDIS_URL")
        .unwrap_or_else(|_| panic!("SLUICE_TEST_REDIS_URL is not set: {RUN_THE_SUITE}"));
    let addr = url
        .trim_start_matches("redis://")
        .rsplit('@')
        .next()
        .and_then(|rest| rest.split('/').next())
        .and_then(|hostport| {
            std::net::ToSocketAddrs::to_socket_addrs(hostport)
                .ok()?
                .next()
        })
        .unwrap_or_else(|| panic!("SLUICE_TEST_REDIS_URL={url} is not redis://HOST:PORT"));
    assert!(
        ping(addr),
        "the Redis at SLUICE_TEST_REDIS_URL={url} does not answer: {RUN_THE_SUITE}"
    );
    url
}

/// A `redis-server` of the test's own on a free loopback port, without persistence; killed
/// when dropped.
pub struct RedisServer {
    port: u16,
    child: Option<TiedChild>,
}

impl RedisServer {
    pub fn start() -> Self {
        Self::start_on(free_port())
    }

    /// On `port`, e.g. the port of a server the test killed.
    pub fn start_on(port: u16) -> Self {
        let mut server = Self { port, child: None };
        server.restart();
        server
    }

    /// A free loopback port with nothing listening on it (yet), for a Redis that is down.
    pub fn unused_port() -> u16 {
        free_port()
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn url_for(port: u16) -> String {
        format!("redis://127.0.0.1:{port}")
    }

    /// SIGKILL: the server is gone at once, connections reset, nothing saved.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill();
        }
    }

    /// Starts the server (again) on its port, empty, and waits until it answers.
    pub fn restart(&mut self) {
        self.kill();
        let binary = redis_server_binary();
        let args: Vec<String> = [
            "--bind",
            "127.0.0.1",
            "--port",
            &self.port.to_string(),
            "--save",
            "",
            "--appendonly",
            "no",
            "--daemonize",
            "no",
            "--loglevel",
            "warning",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        let dir = std::env::temp_dir();
        let child = TiedChild::spawn(&binary, &args, |command| {
            command.current_dir(&dir).stdout(Stdio::null());
        });
        self.child = Some(child);
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        let deadline = Instant::now() + Duration::from_secs(10);
        while !ping(addr) {
            assert!(
                Instant::now() < deadline,
                "redis-server did not answer on port {} within 10 s",
                self.port
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl RedisServer {
    /// Runs one command; the reply as text (integers and bulk strings), or a list of them.
    pub fn command(&self, args: &[&str]) -> Reply {
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        let mut stream = TcpStream::connect(addr).expect("Redis is up");
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut request = format!("*{}\r\n", args.len());
        for arg in args {
            request.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
        }
        stream.write_all(request.as_bytes()).unwrap();
        read_reply(&mut std::io::BufReader::new(stream))
    }

    /// The sum of the integer values of the keys matching `pattern`.
    pub fn sum_of(&self, pattern: &str) -> u64 {
        let Reply::List(keys) = self.command(&["KEYS", pattern]) else {
            panic!("KEYS answers a list");
        };
        keys.iter()
            .filter_map(|key| match key {
                Reply::Text(key) => match self.command(&["GET", key]) {
                    Reply::Text(value) => value.parse::<u64>().ok(),
                    _ => None,
                },
                _ => None,
            })
            .sum()
    }
}

/// A Redis reply, as far as the tests read them.
#[derive(Debug, PartialEq)]
pub enum Reply {
    Nil,
    Text(String),
    List(Vec<Reply>),
}

fn read_reply(reader: &mut impl std::io::BufRead) -> Reply {
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    let line = line.trim_end();
    let (kind, rest) = line.split_at(1);
    match kind {
        "+" | ":" => Reply::Text(rest.to_owned()),
        "-" => panic!("Redis error: {rest}"),
        "$" if rest == "-1" => Reply::Nil,
        "$" => {
            let len: usize = rest.parse().unwrap();
            let mut data = vec![0u8; len + 2];
            reader.read_exact(&mut data).unwrap();
            data.truncate(len);
            Reply::Text(String::from_utf8(data).unwrap())
        }
        "*" if rest == "-1" => Reply::Nil,
        "*" => Reply::List(
            (0..rest.parse::<usize>().unwrap())
                .map(|_| read_reply(reader))
                .collect(),
        ),
        _ => panic!("unexpected Redis reply: {line}"),
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `PING` over a raw connection: `+PONG`.
fn ping(addr: SocketAddr) -> bool {
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(500)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    if stream.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut reply = [0u8; 7];
    stream.read_exact(&mut reply).is_ok() && &reply == b"+PONG\r\n"
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("a free loopback port")
}
