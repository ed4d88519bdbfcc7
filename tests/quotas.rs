//! Client-key limits end to end: real `sluice proxy` processes, sharing counts through a real
//! Redis, in front of in-process mock upstreams. Fleet-wide bounds, limits changed through the
//! admin API, Redis killed under load, OpenAI's headers and error bodies, streams.

mod support;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sluice_testkit::mock_upstream::{Fault, MockConfig, MockHandle, MockUpstream};
use support::process::ProxyProcess;
use support::redis::{RedisServer, shared_redis_url};
use support::{PROXY_TOKEN, TestControlPlane, TestDatabase, etag, eventually, expect_status};

const POOL: &str = "gpt-4o";
/// A short prompt with an output cap, so token estimates (body bytes / 4 + max_tokens) are
/// small and meaningful; the mock answers with `max_tokens` completion tokens.
const MAX_TOKENS: u64 = 5;

fn small_call() -> Value {
    json!({"messages": [{"role": "user", "content": "Say hello to the sluice."}], "max_tokens": MAX_TOKENS})
}

fn secret(id: &str) -> String {
    format!("sk-test-{id}-0123456789abcdef")
}

fn secret_env(id: &str) -> String {
    format!(
        "SLUICE_TEST_KEY_{}",
        id.to_uppercase().replace(['-', '.'], "_")
    )
}

/// Client-key ids unique to this run: counters in a shared Redis are keyed by them.
fn unique(id: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("{id}-{:x}{:x}", std::process::id(), nanos % 0xffff)
}

async fn mock_upstream(name: &str) -> MockHandle {
    mock_with(MockConfig::named(name)).await
}

async fn mock_with(config: MockConfig) -> MockHandle {
    MockUpstream::start_local(config).await.unwrap()
}

/// One pool's YAML entry over `mock` (no upstream auth); `extra` is more pool fields.
fn pool_yaml(name: &str, mock: &MockHandle, extra: &str) -> String {
    format!(
        "  - {{ name: {name}{extra}, backends: [{{ name: {name}-{mock_name}, url: \"{url}\", kind: azure_openai, auth: {{ type: none }} }}] }}",
        mock_name = mock.name(),
        url = mock.url()
    )
}

/// A static config: `pools` entries, and keys as (id, extra YAML fields such as
/// `limits: {…}` or `pools: [...]`), each key's secret from its environment variable.
fn static_config(pools: &[String], keys: &[(&str, &str)]) -> (String, HashMap<String, String>) {
    let mut yaml = format!("pools:\n{}\nclient_keys:\n", pools.join("\n"));
    let mut env = HashMap::new();
    for (id, extra) in keys {
        let var = secret_env(id);
        let extra = if extra.is_empty() {
            String::new()
        } else {
            format!(", {extra}")
        };
        yaml.push_str(&format!(
            "  - {{ id: {id}, secret: \"env://{var}\"{extra} }}\n"
        ));
        env.insert(var, secret(id));
    }
    (yaml, env)
}

/// The same config on proxies with one worker thread. A call's correction is charged by the
/// next call its worker admits, or by the next sync: on one worker, consecutive calls' headers
/// tell every earlier call's tokens exactly; across workers, within one `--limits-sync-ms`
/// (the unit tests of `quota::counter` hold that bound).
fn on_one_worker(
    (yaml, mut env): (String, HashMap<String, String>),
) -> (String, HashMap<String, String>) {
    env.insert("SLUICE_WORKERS".to_owned(), "1".to_owned());
    (yaml, env)
}

/// Proxies started from one static config file, sharing `redis` when given.
struct Fleet {
    proxies: Vec<ProxyProcess>,
    client: reqwest::Client,
    _dir: tempfile::TempDir,
}

impl Fleet {
    async fn start(
        n: usize,
        config: &(String, HashMap<String, String>),
        redis: Option<&str>,
    ) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("sluice.yaml");
        std::fs::write(&file, &config.0).unwrap();
        let mut args = vec!["--config".to_owned(), file.display().to_string()];
        if let Some(url) = redis {
            args.extend(["--redis-url".to_owned(), url.to_owned()]);
        }
        let starting: Vec<_> = (0..n)
            .map(|i| {
                let (args, env) = (args.clone(), config.1.clone());
                tokio::spawn(async move {
                    ProxyProcess::start(&format!("proxy-{i}"), &args, &env).await
                })
            })
            .collect();
        let mut proxies = Vec::with_capacity(n);
        for proxy in starting {
            proxies.push(proxy.await.unwrap());
        }
        Self {
            proxies,
            client: client(),
            _dir: dir,
        }
    }

    /// Every proxy has synced with Redis, and synced again since all of them were seen, so
    /// each knows how many proxies share the limits.
    async fn wait_shared(&self) {
        for proxy in &self.proxies {
            wait_shared_up(proxy, 1.0, Duration::from_secs(10)).await;
        }
        tokio::time::sleep(Duration::from_millis(350)).await;
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(64)
        .build()
        .unwrap()
}

async fn wait_shared_up(proxy: &ProxyProcess, value: f64, within: Duration) {
    let what = format!("{}: sluice_ratelimit_shared_up {value}", proxy.name);
    eventually(within, &what, || async {
        proxy.metric("sluice_ratelimit_shared_up").await == Some(value)
    })
    .await;
}

/// A proxy's answer, body read.
#[derive(Debug)]
struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Value,
    text: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    fn header_u64(&self, name: &str) -> u64 {
        self.header(name)
            .unwrap_or_else(|| panic!("no {name}: {:?}", self.headers))
            .parse()
            .unwrap()
    }

    fn total_tokens(&self) -> u64 {
        self.body["usage"]["total_tokens"]
            .as_u64()
            .unwrap_or_else(|| panic!("no usage: {}", self.text))
    }
}

async fn call_url(
    client: &reqwest::Client,
    base: &str,
    key: &str,
    pool: &str,
    body: &Value,
) -> Answer {
    let response = client
        .post(format!(
            "{base}/openai/deployments/{pool}/chat/completions?api-version=2024-10-21"
        ))
        .header("api-key", key)
        .json(body)
        .send()
        .await
        .unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let text = response.text().await.unwrap();
    let body = serde_json::from_str(&text).unwrap_or(Value::Null);
    Answer {
        status,
        headers,
        body,
        text,
    }
}

async fn call(
    client: &reqwest::Client,
    proxy: &ProxyProcess,
    key_id: &str,
    pool: &str,
    body: &Value,
) -> Answer {
    call_url(client, &proxy.url(""), &secret(key_id), pool, body).await
}

/// Concurrent load on every proxy at once: `workers` per proxy, each making `rounds` calls
/// with `pause` after each. Answers are tagged with their round: in round 0 all the proxies'
/// workers hit them together from a standing start; the later rounds, a sync interval or more
/// apart, show whether the fleet goes on to hand out the rest of the limit.
async fn burst(
    fleet: &Fleet,
    key_id: &str,
    workers: usize,
    rounds: usize,
    pause: Duration,
    body: &Value,
) -> Vec<(usize, Answer)> {
    let mut running = Vec::new();
    for proxy in &fleet.proxies {
        for _ in 0..workers {
            let (client, base, key, body) = (
                fleet.client.clone(),
                proxy.url(""),
                secret(key_id),
                body.clone(),
            );
            running.push(tokio::spawn(async move {
                let mut answers = Vec::with_capacity(rounds);
                for round in 0..rounds {
                    answers.push((round, call_url(&client, &base, &key, POOL, &body).await));
                    tokio::time::sleep(pause).await;
                }
                answers
            }));
        }
    }
    let mut answers = Vec::new();
    for worker in running {
        answers.extend(worker.await.unwrap());
    }
    answers
}

fn first_round(answers: &[(usize, Answer)]) -> Vec<&Answer> {
    answers
        .iter()
        .filter(|(round, _)| *round == 0)
        .map(|(_, a)| a)
        .collect()
}

fn untagged(answers: Vec<(usize, Answer)>) -> Vec<Answer> {
    answers.into_iter().map(|(_, a)| a).collect()
}

/// Calls one at a time, round robin over the proxies.
/// Calls one at a time, round robin over the proxies, `pause` after each: paced so that the
/// run spans many syncs.
async fn round_robin(
    fleet: &Fleet,
    key_id: &str,
    total: usize,
    pause: Duration,
    body: &Value,
) -> Vec<Answer> {
    let mut answers = Vec::with_capacity(total);
    for i in 0..total {
        let proxy = &fleet.proxies[i % fleet.proxies.len()];
        answers.push(call(&fleet.client, proxy, key_id, POOL, body).await);
        tokio::time::sleep(pause).await;
    }
    answers
}

/// `+` admitted, `.` refused, for the log.
fn pattern(answers: &[Answer]) -> String {
    answers
        .iter()
        .map(|a| if a.status == 200 { '+' } else { '.' })
        .collect()
}

/// The range of `retry-after-ms` over refused calls, for the log.
fn retry_range(answers: &[&Answer]) -> (u64, u64) {
    answers
        .iter()
        .filter(|a| a.status == 429)
        .map(|a| a.header_u64("retry-after-ms"))
        .fold((u64::MAX, 0), |(lo, hi), ms| (lo.min(ms), hi.max(ms)))
}

/// Rolling-minute limits weigh the previous minute by whole seconds: a run that straddles a
/// minute boundary gets a little capacity back as it goes. Starts runs clear of the boundary.
async fn clear_of_minute_end(needed: Duration) {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    let into_minute = Duration::from_millis((now.as_millis() % 60_000) as u64);
    let left = Duration::from_secs(60) - into_minute;
    if left < needed {
        tokio::time::sleep(left + Duration::from_millis(50)).await;
    }
}

/// A refusal by a per-minute limit: OpenAI's 429 shape, code and headers.
fn assert_rate_limited(answer: &Answer, kind: &str, limit: u64) {
    assert_eq!(answer.status, 429, "{}", answer.text);
    let error = &answer.body["error"];
    assert_eq!(error["code"], "rate_limit_exceeded", "{}", answer.text);
    assert_eq!(error["type"], kind, "{}", answer.text);
    let per_minute = if kind == "requests" {
        "requests per minute"
    } else {
        "tokens per minute"
    };
    let message = error["message"].as_str().unwrap();
    assert!(
        message.contains(per_minute) && message.contains(&format!("Limit {limit}")),
        "{message}"
    );
    assert!(
        answer.header_u64("retry-after") >= 1,
        "{:?}",
        answer.headers
    );
    assert!(
        answer.header_u64("retry-after-ms") >= 1,
        "{:?}",
        answer.headers
    );
    assert!(answer.header("x-should-retry").is_none(), "rates recover");
    let limit_header = format!("x-ratelimit-limit-{kind}");
    assert_eq!(answer.header_u64(&limit_header), limit);
}

/// A refusal by a token quota or budget: `insufficient_quota`, not to be retried.
fn assert_insufficient_quota(answer: &Answer, what: &str) {
    assert_eq!(answer.status, 429, "{}", answer.text);
    let error = &answer.body["error"];
    assert_eq!(error["code"], "insufficient_quota", "{}", answer.text);
    assert_eq!(error["type"], "insufficient_quota", "{}", answer.text);
    let message = error["message"].as_str().unwrap();
    assert!(
        message.contains(what) && message.contains("resets at"),
        "{message}"
    );
    assert_eq!(answer.header("x-should-retry"), Some("false"));
    assert!(answer.header_u64("retry-after") >= 1);
    assert!(answer.header_u64("retry-after-ms") >= 1);
}

fn count_ok(answers: &[Answer]) -> usize {
    answers.iter().filter(|a| a.status == 200).count()
}

fn assert_only_ok_or_limited(answers: &[Answer], kind: &str, limit: u64) {
    for answer in answers.iter().filter(|a| a.status != 200) {
        assert_rate_limited(answer, kind, limit);
    }
}

/// `requests_per_minute: 30` on three proxies sharing one Redis: hit all at once from a
/// standing start, then one call at a time round robin, the fleet admits the limit (±10%).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_per_minute_hold_across_three_proxies() {
    clear_of_minute_end(Duration::from_secs(8)).await;
    let redis = RedisServer::start();
    let mock = mock_upstream("rpm").await;
    let (burst_key, sequential_key, back_to_back) =
        ("rpm-burst", "rpm-sequential", "rpm-back-to-back");
    let limits = "limits: { requests_per_minute: 30 }";
    let config = static_config(
        &[pool_yaml(POOL, &mock, "")],
        &[
            (burst_key, limits),
            (sequential_key, limits),
            (back_to_back, limits),
        ],
    );
    let fleet = Fleet::start(3, &config, Some(&redis.url())).await;
    fleet.wait_shared().await;

    // 3 proxies x 10 workers x 8 calls: 30 calls at once, then seven more rounds 150 ms
    // (more than a sync interval) apart: the proxies' leases grow with what they spend.
    let answers = burst(
        &fleet,
        burst_key,
        10,
        8,
        Duration::from_millis(150),
        &small_call(),
    )
    .await;
    let at_once = first_round(&answers)
        .iter()
        .filter(|a| a.status == 200)
        .count();
    let (shortest, longest) = retry_range(&first_round(&answers));
    eprintln!("refused in the first round with retry-after-ms {shortest} to {longest}");
    let answers = untagged(answers);
    let admitted = count_ok(&answers);
    eprintln!(
        "requests_per_minute 30, 3 proxies, 3x80 concurrent calls (10 at a time per proxy, 8 rounds): admitted {admitted} vs limit 30 ({at_once} of the first 30 calls, sent at once)"
    );
    assert_only_ok_or_limited(&answers, "requests", 30);
    assert_eq!(
        mock.request_count(),
        admitted as u64,
        "refused calls never reach the upstream"
    );
    assert!(
        (27..=33).contains(&admitted),
        "admitted {admitted} of a limit of 30"
    );

    // 120 calls 10 ms apart: over a second, some ten syncs.
    let started = Instant::now();
    let answers = round_robin(
        &fleet,
        sequential_key,
        120,
        Duration::from_millis(10),
        &small_call(),
    )
    .await;
    let admitted = count_ok(&answers);
    eprintln!("{} in {:?}", pattern(&answers), started.elapsed());
    eprintln!(
        "requests_per_minute 30, 3 proxies, 120 sequential calls round robin, 10 ms apart: admitted {admitted} vs limit 30"
    );
    assert_only_ok_or_limited(&answers, "requests", 30);
    assert!(
        (27..=33).contains(&admitted),
        "admitted {admitted} of a limit of 30"
    );

    // The same without pauses: over in about one sync interval, so the proxies' leases do
    // not grow to the limit in time; never more than it, though.
    let started = Instant::now();
    let answers = round_robin(&fleet, back_to_back, 120, Duration::ZERO, &small_call()).await;
    let admitted = count_ok(&answers);
    eprintln!(
        "requests_per_minute 30, 3 proxies, 120 sequential calls round robin, back to back ({:?}): admitted {admitted} vs limit 30\n{}",
        started.elapsed(),
        pattern(&answers)
    );
    assert_only_ok_or_limited(&answers, "requests", 30);
    assert!(admitted <= 33, "admitted {admitted} of a limit of 30");

    for proxy in &fleet.proxies {
        let metrics = proxy.metrics().await;
        assert!(
            metrics.contains(&format!(
                "sluice_ratelimited_total{{pool=\"{POOL}\",client_key=\"{burst_key}\",limit=\"requests_per_minute\"}}"
            )),
            "{}: {metrics}",
            proxy.name
        );
    }
}

/// `tokens_per_minute: 180` on three proxies: calls with `max_tokens` hold their estimate,
/// settle to the backend's usage, and the fleet's usage stays within the limit (+10%).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_per_minute_hold_across_three_proxies() {
    clear_of_minute_end(Duration::from_secs(8)).await;
    let redis = RedisServer::start();
    let mock = mock_upstream("tpm").await;
    let (burst_key, sequential_key) = ("tpm-burst", "tpm-sequential");
    let limits = "limits: { tokens_per_minute: 180 }";
    let config = static_config(
        &[pool_yaml(POOL, &mock, "")],
        &[(burst_key, limits), (sequential_key, limits)],
    );
    let fleet = Fleet::start(3, &config, Some(&redis.url())).await;
    fleet.wait_shared().await;

    // 3 proxies x 5 workers x 8 calls, the rounds 150 ms apart.
    let answers = burst(
        &fleet,
        burst_key,
        5,
        8,
        Duration::from_millis(150),
        &small_call(),
    )
    .await;
    let at_once: u64 = first_round(&answers)
        .iter()
        .filter(|a| a.status == 200)
        .map(|a| a.total_tokens())
        .sum();
    let answers = untagged(answers);
    let tokens: u64 = answers
        .iter()
        .filter(|a| a.status == 200)
        .map(Answer::total_tokens)
        .sum();
    let per_call = answers
        .iter()
        .find(|a| a.status == 200)
        .map_or(0, Answer::total_tokens);
    eprintln!(
        "tokens_per_minute 180, 3 proxies, 3x40 concurrent calls of {per_call} tokens (estimate {}; 5 at a time per proxy, 8 rounds): admitted {tokens} tokens in {} calls vs limit 180 ({at_once} tokens of the first 15 calls, sent at once)",
        estimate(&small_call()),
        count_ok(&answers)
    );
    assert_only_ok_or_limited(&answers, "tokens", 180);
    assert!(tokens <= 198, "admitted {tokens} tokens of a limit of 180");
    assert!(tokens > 0);

    let answers = round_robin(
        &fleet,
        sequential_key,
        60,
        Duration::from_millis(20),
        &small_call(),
    )
    .await;
    eprintln!("{}", pattern(&answers));
    let tokens: u64 = answers
        .iter()
        .filter(|a| a.status == 200)
        .map(Answer::total_tokens)
        .sum();
    eprintln!(
        "tokens_per_minute 180, 3 proxies, 60 sequential calls round robin, 20 ms apart: admitted {tokens} tokens in {} calls vs limit 180",
        count_ok(&answers)
    );
    assert_only_ok_or_limited(&answers, "tokens", 180);
    assert!(tokens <= 198, "admitted {tokens} tokens of a limit of 180");
    assert!(tokens > 0);
}

/// The proxy's token estimate of a JSON body: its bytes / 4, plus `max_tokens`.
fn estimate(body: &Value) -> u64 {
    let bytes = serde_json::to_vec(body).unwrap().len() as u64;
    bytes.div_ceil(4) + body["max_tokens"].as_u64().unwrap_or(0)
}

/// Limits changed through the admin API reach every proxy following the control plane, and
/// apply without a restart: lowered, every proxy refuses; raised again, every proxy serves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_changed_through_the_admin_api_apply_on_every_proxy() {
    let cp = TestControlPlane::start(TestDatabase::sqlite()).await;
    let mock = mock_upstream("admin").await;
    let redis = shared_redis_url();
    let proxies = following_fleet(&cp, &redis, &mock, "proxy", 3).await;
    let id = unique("admin-rpm");
    let created = expect_status(
        cp.post(
            "/api/v1/keys",
            &json!({"id": id, "limits": {"requests_per_minute": 1000}}),
        )
        .await,
        201,
    )
    .await;
    let key = created["secret"].as_str().unwrap().to_owned();
    let client = client();
    for proxy in &proxies {
        eventually(
            Duration::from_secs(10),
            &format!("{} serves the key", proxy.name),
            || async {
                let answer = call_url(&client, &proxy.url(""), &key, POOL, &small_call()).await;
                answer.status == 200 && answer.header("x-ratelimit-limit-requests") == Some("1000")
            },
        )
        .await;
    }

    set_requests_per_minute(&cp, &id, 2).await;
    for proxy in &proxies {
        eventually(
            Duration::from_secs(10),
            &format!("{} refuses the key over its new limit", proxy.name),
            || async {
                let answer = call_url(&client, &proxy.url(""), &key, POOL, &small_call()).await;
                if answer.status == 429 {
                    assert_rate_limited(&answer, "requests", 2);
                }
                answer.status == 429
            },
        )
        .await;
    }

    set_requests_per_minute(&cp, &id, 1000).await;
    for proxy in &proxies {
        eventually(
            Duration::from_secs(10),
            &format!("{} serves the key under its raised limit", proxy.name),
            || async {
                let answer = call_url(&client, &proxy.url(""), &key, POOL, &small_call()).await;
                answer.status == 200 && answer.header("x-ratelimit-limit-requests") == Some("1000")
            },
        )
        .await;
    }
}

/// `count` proxy processes following `cp` and sharing limits through `redis`, once `cp` has
/// pool `gpt-4o` on `mock`.
async fn following_fleet(
    cp: &TestControlPlane,
    redis: &str,
    mock: &MockHandle,
    name: &str,
    count: usize,
) -> Vec<ProxyProcess> {
    let env = HashMap::from([("SLUICE_PROXY_TOKEN".to_owned(), PROXY_TOKEN.to_owned())]);
    let mut proxies = Vec::with_capacity(count);
    for i in 0..count {
        let args = vec![
            "--control-plane".to_owned(),
            format!("http://{}", cp.grpc_addr),
            "--redis-url".to_owned(),
            redis.to_owned(),
        ];
        proxies.push(ProxyProcess::start(&format!("{name}-{i}"), &args, &env).await);
    }
    let pool = json!({"name": POOL, "backends": [{"name": "m", "url": mock.url(),
        "kind": "azure_openai", "auth": {"type": "none"}}]});
    expect_status(cp.post("/api/v1/pools", &pool).await, 201).await;
    proxies
}

/// Changes a key's limit to `rpm` requests a minute through the admin API (under If-Match).
async fn set_requests_per_minute(cp: &TestControlPlane, id: &str, rpm: u64) {
    let path = format!("/api/v1/keys/{id}");
    let tag = etag(&cp.get(&path).await);
    let changed = cp
        .request(Method::PUT, &path)
        .header("if-match", tag)
        .json(&json!({"pools": [], "limits": {"requests_per_minute": rpm}}))
        .send()
        .await
        .unwrap();
    expect_status(changed, 200).await;
}

/// Redis killed with SIGKILL under steady load and restarted a second later on the same
/// port: no call fails, `sluice_ratelimit_shared_up` drops to 0 and comes back to 1 on every
/// proxy, each proxy warns once, and the counts kept meanwhile reach the new Redis.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_and_restarted_under_load_fails_no_call() {
    let mut redis = RedisServer::start();
    let mock = mock_upstream("outage").await;
    let key_id = "outage-load";
    let config = static_config(
        &[pool_yaml(POOL, &mock, "")],
        &[(key_id, "limits: { requests_per_minute: 1000000 }")],
    );
    let fleet = Arc::new(Fleet::start(2, &config, Some(&redis.url())).await);
    fleet.wait_shared().await;

    let stop = Arc::new(AtomicBool::new(false));
    let mut workers = Vec::new();
    for (i, proxy) in fleet.proxies.iter().enumerate() {
        for _ in 0..2 {
            let (client, base, stop) = (fleet.client.clone(), proxy.url(""), stop.clone());
            workers.push(tokio::spawn(async move {
                let mut statuses = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let answer =
                        call_url(&client, &base, &secret(key_id), POOL, &small_call()).await;
                    if answer.status != 200 {
                        eprintln!("proxy-{i}: {} {}", answer.status, answer.text);
                    }
                    statuses.push(answer.status);
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                statuses
            }));
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let calls_before = mock.request_count();
    redis.kill();
    let killed = Instant::now();
    for proxy in &fleet.proxies {
        wait_shared_up(proxy, 0.0, Duration::from_secs(5)).await;
    }
    tokio::time::sleep(Duration::from_secs(1).saturating_sub(killed.elapsed())).await;
    let calls_during = mock.request_count() - calls_before;
    redis.restart();
    let restarted = Instant::now();
    for proxy in &fleet.proxies {
        wait_shared_up(proxy, 1.0, Duration::from_secs(10)).await;
    }
    eprintln!(
        "Redis down for {:?}; shared again on every proxy {:?} after the restart; {calls_during} calls while it was down",
        restarted - killed,
        restarted.elapsed()
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    let mut statuses = Vec::new();
    for worker in workers {
        statuses.extend(worker.await.unwrap());
    }
    let failed = statuses.iter().filter(|s| **s != 200).count();
    eprintln!("{} calls under load, {failed} failed", statuses.len());
    assert_eq!(failed, 0, "no call fails while Redis is away");
    assert!(calls_during > 0, "calls went on while Redis was down");

    for proxy in &fleet.proxies {
        proxy.logs_once("quota store unreachable");
        assert!(
            proxy.log_text().contains("quota store is back"),
            "{}",
            proxy.log_text()
        );
    }
    // The new Redis started empty: what it holds for the key came from the deltas the
    // proxies kept while it was away, and from the calls since.
    let counted = redis.sum_of(&format!("{{sluice:{key_id}}}:key:requests:minute:*"));
    assert!(
        counted >= calls_during,
        "Redis counts {counted} calls; {calls_during} were made while it was down"
    );
}

/// Proxies started while Redis is down serve anyway, each holding the limit on its own
/// counts; when Redis comes up they push what they counted and the fleet-wide limit holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxies_started_without_redis_serve_and_hold_limits_per_proxy() {
    clear_of_minute_end(Duration::from_secs(15)).await;
    let port = RedisServer::unused_port();
    let mock = mock_upstream("no-redis").await;
    let (low, open) = ("down-low", "down-open");
    let config = static_config(
        &[pool_yaml(POOL, &mock, "")],
        &[
            (low, "limits: { requests_per_minute: 5 }"),
            (open, "limits: { requests_per_minute: 100000 }"),
        ],
    );
    let fleet = Fleet::start(2, &config, Some(&RedisServer::url_for(port))).await;
    for proxy in &fleet.proxies {
        wait_shared_up(proxy, 0.0, Duration::from_secs(5)).await;
    }
    // Past the first (failed) sync: the proxy counts alone.
    tokio::time::sleep(Duration::from_millis(300)).await;
    for proxy in &fleet.proxies {
        let mut admitted = 0;
        for _ in 0..10 {
            let answer = call(&fleet.client, proxy, low, POOL, &small_call()).await;
            if answer.status == 200 {
                admitted += 1;
            } else {
                assert_rate_limited(&answer, "requests", 5);
            }
        }
        eprintln!(
            "{} without Redis: requests_per_minute 5, 10 calls: admitted {admitted}",
            proxy.name
        );
        assert!(
            (1..=5).contains(&admitted),
            "{}: {admitted} admitted",
            proxy.name
        );
        for _ in 0..5 {
            let answer = call(&fleet.client, proxy, open, POOL, &small_call()).await;
            assert_eq!(answer.status, 200, "{}", answer.text);
        }
        proxy.logs_once("quota store unreachable");
    }

    // Redis comes up: each proxy pushes the 5 it admitted; 10 of 5 are used fleet-wide.
    let _redis = RedisServer::start_on(port);
    for proxy in &fleet.proxies {
        wait_shared_up(proxy, 1.0, Duration::from_secs(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    for proxy in &fleet.proxies {
        let answer = call(&fleet.client, proxy, low, POOL, &small_call()).await;
        assert_rate_limited(&answer, "requests", 5);
        let remaining = answer.header_u64("x-ratelimit-remaining-requests");
        assert_eq!(remaining, 0, "{}", proxy.name);
    }
}

/// OpenAI's rate-limit headers and error bodies, on one proxy counting alone: per-minute
/// limits, an exhausted token quota, a budget priced by the pool, a per-pool override, and a
/// key without limits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limited_keys_get_openai_headers_and_errors() {
    clear_of_minute_end(Duration::from_secs(5)).await;
    let mock = mock_upstream("headers").await;
    let other = mock_upstream("other").await;
    let priced = mock_upstream("priced").await;
    let config = static_config(
        &[
            pool_yaml(POOL, &mock, ""),
            pool_yaml("other", &other, ""),
            pool_yaml(
                "priced",
                &priced,
                ", price: { input_per_1m_usd: 2.5, output_per_1m_usd: 10 }",
            ),
        ],
        &[
            (
                "hdr-rate",
                "limits: { requests_per_minute: 5, tokens_per_minute: 10000 }",
            ),
            (
                "hdr-quota",
                "limits: { token_quota: { tokens: 60, period: month } }",
            ),
            (
                "hdr-budget",
                "pools: [priced], limits: { budget: { usd: 0.00015, period: day } }",
            ),
            (
                "hdr-pool",
                "limits: { pools: { gpt-4o: { requests_per_minute: 2 } } }",
            ),
            ("hdr-open", ""),
        ],
    );
    let fleet = Fleet::start(1, &on_one_worker(config), None).await;
    let proxy = &fleet.proxies[0];
    let client = &fleet.client;

    // Per-minute limits: the limit, what is left (going down), and when it is back.
    let mut remaining = Vec::new();
    let mut tokens_left = Vec::new();
    for _ in 0..5 {
        let answer = call(client, proxy, "hdr-rate", POOL, &small_call()).await;
        assert_eq!(answer.status, 200, "{}", answer.text);
        assert_eq!(answer.header_u64("x-ratelimit-limit-requests"), 5);
        assert_eq!(answer.header_u64("x-ratelimit-limit-tokens"), 10000);
        for name in ["x-ratelimit-reset-requests", "x-ratelimit-reset-tokens"] {
            let reset = answer.header(name).unwrap();
            assert!(is_go_duration(reset), "{name}: {reset}");
        }
        remaining.push(answer.header_u64("x-ratelimit-remaining-requests"));
        tokens_left.push(answer.header_u64("x-ratelimit-remaining-tokens"));
    }
    eprintln!("x-ratelimit-remaining-requests: {remaining:?}, -tokens: {tokens_left:?}");
    assert_eq!(remaining, [4, 3, 2, 1, 0]);
    assert!(
        tokens_left.windows(2).all(|w| w[1] < w[0]),
        "{tokens_left:?}"
    );
    let refused = call(client, proxy, "hdr-rate", POOL, &small_call()).await;
    assert_rate_limited(&refused, "requests", 5);
    assert_eq!(refused.header_u64("x-ratelimit-remaining-requests"), 0);
    let retry_ms = refused.header_u64("retry-after-ms");
    // Back once this minute is over and enough of it has slid out of the rolling minute.
    let into_minute = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis()
        % 60_000;
    let minute_left = 60_000 - into_minute as u64;
    assert!(
        retry_ms + 1_000 >= minute_left && retry_ms <= minute_left + 60_000,
        "retry-after-ms {retry_ms} with {minute_left} ms of the minute left"
    );
    assert_eq!(refused.header_u64("retry-after"), retry_ms.div_ceil(1000));
    assert!(
        refused.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("key 'hdr-rate'")
    );

    // A call larger than the whole quota: no wait makes it fit, so it is not to be retried.
    let huge = json!({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 1000});
    let too_large = call(client, proxy, "hdr-quota", POOL, &huge).await;
    assert_eq!(too_large.status, 429, "{}", too_large.text);
    assert_eq!(too_large.body["error"]["code"], "insufficient_quota");
    assert!(too_large.text.contains("too large"), "{}", too_large.text);
    assert_eq!(too_large.header("x-should-retry"), Some("false"));

    // A token quota: calls go through until the next one's estimate no longer fits.
    let mut used = 0;
    let quota_refusal = loop {
        let answer = call(client, proxy, "hdr-quota", POOL, &small_call()).await;
        if answer.status != 200 {
            break answer;
        }
        used += answer.total_tokens();
        assert!(
            answer.header("x-ratelimit-limit-tokens").is_none(),
            "a quota is not a per-minute limit"
        );
        assert!(used <= 60, "{used} tokens used of a quota of 60");
    };
    eprintln!("token_quota 60: refused after {used} tokens used");
    assert!(used > 0);
    assert_insufficient_quota(&quota_refusal, "token quota");
    assert!(
        quota_refusal.header_u64("retry-after") > 60,
        "a month's quota is not back within a minute"
    );

    // A budget priced by the pool: $0.00015 lasts one call (it holds $0.00011, uses $0.000065).
    let first = call(client, proxy, "hdr-budget", "priced", &small_call()).await;
    assert_eq!(first.status, 200, "{}", first.text);
    let second = call(client, proxy, "hdr-budget", "priced", &small_call()).await;
    assert_insufficient_quota(&second, "budget");
    assert!(
        second.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("$0.000150"),
        "{}",
        second.text
    );

    // A per-pool override limits that pool only.
    let mut statuses = Vec::new();
    for _ in 0..3 {
        let answer = call(client, proxy, "hdr-pool", POOL, &small_call()).await;
        if answer.status == 200 {
            assert_eq!(answer.header_u64("x-ratelimit-limit-requests"), 2);
        } else {
            assert_rate_limited(&answer, "requests", 2);
            let message = answer.body["error"]["message"].as_str().unwrap();
            assert!(message.contains("on pool 'gpt-4o'"), "{message}");
        }
        statuses.push(answer.status.as_u16());
    }
    assert_eq!(statuses, [200, 200, 429]);
    for _ in 0..5 {
        let answer = call(client, proxy, "hdr-pool", "other", &small_call()).await;
        assert_eq!(answer.status, 200, "{}", answer.text);
        assert!(answer.header("x-ratelimit-limit-requests").is_none());
    }

    // No limits: no rate-limit headers of the proxy's; the backend's pass through.
    let open = call(client, proxy, "hdr-open", POOL, &small_call()).await;
    assert_eq!(open.status, 200);
    assert!(open.header("x-ratelimit-limit-requests").is_none());
    assert!(open.header("x-ratelimit-limit-tokens").is_none());
    assert!(open.header("x-ratelimit-reset-requests").is_none());
    assert_eq!(open.header("x-ratelimit-remaining-requests"), Some("999"));
    assert_eq!(open.header("x-ratelimit-remaining-tokens"), Some("999000"));

    let metrics = proxy.metrics().await;
    for (pool, key, limit, refused) in [
        (POOL, "hdr-rate", "requests_per_minute", 1.0),
        (POOL, "hdr-quota", "token_quota", 2.0),
        ("priced", "hdr-budget", "budget", 1.0),
        (POOL, "hdr-pool", "requests_per_minute", 1.0),
    ] {
        let series = format!(
            "sluice_ratelimited_total{{pool=\"{pool}\",client_key=\"{key}\",limit=\"{limit}\"}}"
        );
        assert_eq!(
            support::process::metric_value(&metrics, &series),
            Some(refused),
            "{series}:\n{metrics}"
        );
    }
}

/// A call that no backend answered (its connection reset, then no backend left) consumed
/// nothing: its token estimate is given back, so failures never use up a key's tokens, and
/// its error still carries the key's rate-limit headers. Its request counts, as every call's.
#[tokio::test]
async fn a_call_no_backend_answered_gives_its_estimate_back() {
    clear_of_minute_end(Duration::from_secs(5)).await;
    let mock = mock_upstream("gone").await;
    mock.inject(Fault::reset()).unwrap();
    let config = static_config(
        &[pool_yaml(POOL, &mock, "")],
        &[(
            "gone-tpm",
            "limits: { requests_per_minute: 1000, tokens_per_minute: 100 }",
        )],
    );
    let fleet = Fleet::start(1, &config, None).await;
    let (proxy, client) = (&fleet.proxies[0], &fleet.client);

    // Each call holds back about 28 tokens: without the refund, the fourth would be refused.
    for call_number in 1..=6 {
        let failed = call(client, proxy, "gone-tpm", POOL, &small_call()).await;
        // The reset is a 502; the backend is then ejected, and the pool has none to offer.
        if call_number == 1 {
            assert_eq!(failed.status, 502, "{}", failed.text);
        } else {
            assert_eq!(failed.status, 429, "{}", failed.text);
            let message = failed.body["error"]["message"].as_str().unwrap();
            assert!(message.starts_with("All backends of"), "{message}");
        }
        assert_eq!(failed.header_u64("x-ratelimit-limit-tokens"), 100);
        assert_eq!(
            failed.header_u64("x-ratelimit-remaining-tokens"),
            100,
            "call {call_number}: the estimate was given back"
        );
        assert_eq!(
            failed.header_u64("x-ratelimit-remaining-requests"),
            1000 - call_number
        );
    }
    assert_eq!(mock.request_count(), 1, "the reset backend was ejected");
}

/// `0s`, `250ms`, `1.5s`, `6m0s`: how Go, and OpenAI, print durations.
fn is_go_duration(text: &str) -> bool {
    let (minutes, rest) = match text.split_once('m') {
        Some((m, rest)) if !rest.is_empty() && !rest.starts_with('s') => (Some(m), rest),
        _ => (None, text),
    };
    if minutes.is_some_and(|m| m.is_empty() || !m.bytes().all(|b| b.is_ascii_digit())) {
        return false;
    }
    let number = rest
        .strip_suffix("ms")
        .or_else(|| rest.strip_suffix('s'))
        .unwrap_or("");
    !number.is_empty()
        && number.bytes().all(|b| b.is_ascii_digit() || b == b'.')
        && number.parse::<f64>().is_ok()
}

/// The `data:` events of an SSE body, parsed (`[DONE]` left out).
fn sse_events(text: &str) -> Vec<Value> {
    text.lines()
        .filter_map(|line| line.strip_prefix("data:"))
        .map(str::trim)
        .filter(|data| *data != "[DONE]")
        .map(|data| serde_json::from_str(data).unwrap())
        .collect()
}

fn is_usage_event(event: &Value) -> bool {
    event["choices"] == json!([]) && event["usage"].is_object()
}

/// A stream from a key with token limits whose client did not ask for usage: the proxy asks
/// the backend for it, keeps its usage event from the client, and counts the tokens. A client
/// that asked gets its usage event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_are_counted_without_showing_usage_the_client_did_not_ask_for() {
    clear_of_minute_end(Duration::from_secs(5)).await;
    let mock = mock_with(MockConfig::named("stream").completion_tokens(40)).await;
    let config = static_config(
        &[pool_yaml(POOL, &mock, "")],
        &[
            ("stream-tpm", "limits: { tokens_per_minute: 100000 }"),
            ("stream-rpm", "limits: { requests_per_minute: 100 }"),
        ],
    );
    let fleet = Fleet::start(1, &on_one_worker(config), None).await;
    let (proxy, client) = (&fleet.proxies[0], &fleet.client);
    let messages = json!([{"role": "user", "content": "Say hello to the sluice."}]);

    let before = call(client, proxy, "stream-tpm", POOL, &small_call()).await;
    assert_eq!(before.status, 200);
    let before_remaining = before.header_u64("x-ratelimit-remaining-tokens");

    let stream = call(
        client,
        proxy,
        "stream-tpm",
        POOL,
        &json!({"messages": messages, "stream": true}),
    )
    .await;
    assert_eq!(stream.status, 200, "{}", stream.text);
    // A streamed response to a limited key carries the key's headers too, sent with its head.
    assert_eq!(stream.header_u64("x-ratelimit-limit-tokens"), 100_000);
    assert!(stream.header_u64("x-ratelimit-remaining-tokens") < before_remaining);
    let reset = stream.header("x-ratelimit-reset-tokens").unwrap();
    assert!(is_go_duration(reset), "{reset}");
    let upstream = mock.last_request().unwrap().body.unwrap();
    assert_eq!(
        upstream["stream_options"]["include_usage"], true,
        "the proxy asks for usage: {upstream}"
    );
    let events = sse_events(&stream.text);
    assert!(events.len() > 2, "{}", stream.text);
    assert!(
        !events.iter().any(is_usage_event),
        "the client did not ask for usage: {}",
        stream.text
    );
    assert!(stream.text.trim_end().ends_with("data: [DONE]"));
    let content: String = events
        .iter()
        .filter_map(|e| e["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert!(!content.is_empty());

    // The stream's 40 completion tokens (and its prompt) count against the key.
    let after = call(client, proxy, "stream-tpm", POOL, &small_call()).await;
    let after_remaining = after.header_u64("x-ratelimit-remaining-tokens");
    let small_tokens = before.total_tokens();
    eprintln!(
        "x-ratelimit-remaining-tokens before the stream {before_remaining}, after {after_remaining} (a small call holds {}, uses {small_tokens})",
        estimate(&small_call())
    );
    // From `before` to `after`: the first call settled to its usage, the stream (at least its
    // 40 completion tokens), and the second call's estimate held.
    assert!(
        before_remaining - after_remaining >= 40 + small_tokens,
        "the stream's tokens were counted: {before_remaining} then {after_remaining}"
    );

    // A client that asked for usage gets it.
    let asked = call(
        client,
        proxy,
        "stream-tpm",
        POOL,
        &json!({"messages": messages, "stream": true, "stream_options": {"include_usage": true}}),
    )
    .await;
    let events = sse_events(&asked.text);
    let usage: Vec<_> = events.iter().filter(|e| is_usage_event(e)).collect();
    assert_eq!(usage.len(), 1, "{}", asked.text);
    assert_eq!(usage[0]["usage"]["completion_tokens"], 40);

    // `"stream_options": null` asks for nothing either: the proxy asks in its place.
    let null_options = call(
        client,
        proxy,
        "stream-tpm",
        POOL,
        &json!({"messages": messages, "stream": true, "stream_options": null}),
    )
    .await;
    assert_eq!(null_options.status, 200, "{}", null_options.text);
    let upstream = mock.last_request().unwrap().body.unwrap();
    assert_eq!(
        upstream["stream_options"]["include_usage"], true,
        "the proxy asks for usage: {upstream}"
    );
    assert!(
        !sse_events(&null_options.text).iter().any(is_usage_event),
        "{}",
        null_options.text
    );

    // Request limits only: nothing to count, the stream is passed as the client asked.
    let plain = call(
        client,
        proxy,
        "stream-rpm",
        POOL,
        &json!({"messages": messages, "stream": true}),
    )
    .await;
    assert_eq!(plain.status, 200);
    let upstream = mock.last_request().unwrap().body.unwrap();
    assert!(upstream.get("stream_options").is_none(), "{upstream}");
    assert!(!sse_events(&plain.text).iter().any(is_usage_event));
}

/// `GET /api/v1/keys/{id}/usage` on a control plane that reads the proxies' Redis reports the
/// fleet's use of each limit; one without Redis gives the windows and says counts are per
/// proxy; one whose Redis is gone answers 503.
#[tokio::test]
async fn the_usage_report_reads_what_the_fleet_used() {
    let mut redis = RedisServer::start();
    let database = TestDatabase::sqlite();
    let config = sluice_control_plane::ControlPlaneConfig {
        redis_url: Some(redis.url()),
        ..support::test_config(database.url().to_owned())
    };
    let cp = TestControlPlane::start_config(database, config).await;
    let mock = mock_upstream("usage").await;
    let proxies = following_fleet(&cp, &redis.url(), &mock, "usage", 2).await;
    let limits =
        json!({"requests_per_minute": 1000, "token_quota": {"tokens": 1000000, "period": "day"}});
    let created = expect_status(
        cp.post("/api/v1/keys", &json!({"id": "usage-a", "limits": limits}))
            .await,
        201,
    )
    .await;
    let key = created["secret"].as_str().unwrap().to_owned();
    clear_of_minute_end(Duration::from_secs(20)).await;
    let client = client();
    let mut served = 0;
    for proxy in &proxies {
        eventually(
            Duration::from_secs(10),
            "the proxy serves the key",
            || async {
                call_url(&client, &proxy.url(""), &key, POOL, &small_call())
                    .await
                    .status
                    == 200
            },
        )
        .await;
        served += 1;
        for _ in 0..4 {
            let answer = call_url(&client, &proxy.url(""), &key, POOL, &small_call()).await;
            assert_eq!(answer.status, 200, "{}", answer.text);
            served += 1;
        }
    }
    let report = || async { expect_status(cp.get("/api/v1/keys/usage-a/usage").await, 200).await };
    // Synced within a moment; what is leased and not spent yet counts as used too.
    eventually(
        Duration::from_secs(5),
        "the fleet's calls in the report",
        || async {
            let report = report().await;
            report["limits"][0]["used"]
                .as_f64()
                .is_some_and(|used| used >= served as f64)
        },
    )
    .await;
    let report = report().await;
    assert_eq!(report["scope"], "fleet");
    let rpm = &report["limits"][0];
    assert_eq!(rpm["limit"], "requests_per_minute");
    assert_eq!(
        (rpm["unit"].clone(), rpm["window"].clone()),
        (json!("requests"), json!("minute"))
    );
    assert_eq!(rpm["allowed"], 1000.0);
    let used = rpm["used"].as_f64().unwrap();
    assert!(
        used < 1000.0 / 2.0,
        "leases stay small at this pace: {used}"
    );
    assert_eq!(rpm["remaining"].as_f64().unwrap(), 1000.0 - used);
    let quota = &report["limits"][1];
    assert_eq!(
        (quota["limit"].clone(), quota["window"].clone()),
        (json!("token_quota"), json!("day"))
    );
    assert!(quota["used"].as_f64().unwrap() > 0.0, "{quota}");
    assert!(
        quota["resets_at"].as_str().unwrap().ends_with("T00:00:00Z"),
        "{quota}"
    );

    expect_status(cp.get("/api/v1/keys/nobody/usage").await, 404).await;
    redis.kill();
    let down = cp.get("/api/v1/keys/usage-a/usage").await;
    let body = expect_status(down, 503).await;
    assert_eq!(body["error"]["code"], "quota_store_unavailable");

    let alone = TestControlPlane::start(TestDatabase::sqlite()).await;
    expect_status(
        alone
            .post("/api/v1/keys", &json!({"id": "usage-b", "limits": limits}))
            .await,
        201,
    )
    .await;
    let report = expect_status(alone.get("/api/v1/keys/usage-b/usage").await, 200).await;
    assert_eq!(report["scope"], "per_proxy");
    assert!(report["limits"][0].get("used").is_none(), "{report}");
    assert_eq!(report["limits"][1]["allowed"], 1000000.0);
}
