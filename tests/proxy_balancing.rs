//! Balancing over loopback mock upstreams: rotation, weights, priority tiers, cooldowns.

mod support;

use std::time::{Duration, Instant};

use sluice_testkit::mock_upstream::Fault;
use support::proxy::{TestProxy, mock, pool_yaml, served_by};

/// Round-robin visits three backends in strict rotation.
#[tokio::test]
async fn round_robin_rotates_exactly_over_three_backends() {
    let (a, b, c) = (mock("a").await, mock("b").await, mock("c").await);
    let pool = pool_yaml("gpt-4o", "", &[(&a, ""), (&b, ""), (&c, "")]);
    let proxy = TestProxy::start(&pool, &[&a, &b, &c]).await;
    let served = proxy.backends_of("gpt-4o", 30).await;
    let first = served.iter().position(|s| s == "a").unwrap();
    for (i, name) in served.iter().enumerate().skip(first) {
        assert_eq!(name, ["a", "b", "c"][(i - first) % 3], "{served:?}");
    }
    assert_eq!(
        [a.request_count(), b.request_count(), c.request_count()],
        [10, 10, 10]
    );
}

/// The weighted strategy gives each backend its share within 2%.
#[tokio::test]
async fn weighted_shares_are_within_two_percent() {
    let (a, b, c) = (mock("a").await, mock("b").await, mock("c").await);
    let pool = pool_yaml(
        "p",
        "strategy: weighted",
        &[
            (&a, ", weight: 5"),
            (&b, ", weight: 3"),
            (&c, ", weight: 2"),
        ],
    );
    let proxy = TestProxy::start(&pool, &[&a, &b, &c]).await;
    let served = proxy.backends_of("p", 500).await;
    for (name, weight) in [("a", 0.5), ("b", 0.3), ("c", 0.2)] {
        let share = served.iter().filter(|s| *s == name).count() as f64 / served.len() as f64;
        assert!((share - weight).abs() <= 0.02, "{name}: {share}");
    }
}

/// Least-latency prefers the fast backend over one that answers 150 ms slower.
#[tokio::test]
async fn least_latency_prefers_the_faster_backend() {
    let fast = mock("fast").await;
    let slow = support::proxy::mock_with(
        sluice_testkit::mock_upstream::MockConfig::named("slow")
            .latency(Duration::from_millis(150)),
    )
    .await;
    let pool = pool_yaml("p", "strategy: least_latency", &[(&fast, ""), (&slow, "")]);
    let proxy = TestProxy::start(&pool, &[&fast, &slow]).await;
    let served = proxy.backends_of("p", 40).await;
    let fast_share = served.iter().filter(|s| *s == "fast").count();
    assert!(
        fast_share >= 30,
        "fast served {fast_share} of 40: {served:?}"
    );
}

/// The next tier serves only while the whole tier above is unavailable, and traffic returns
/// to the better tier once it recovers, whatever the strategy.
#[tokio::test]
async fn priority_tiers_fail_over_and_back() {
    for strategy in ["round_robin", "weighted", "least_latency"] {
        tiers_fail_over_and_back(strategy).await;
    }
}

async fn tiers_fail_over_and_back(strategy: &str) {
    let (primary, secondary) = (mock("primary").await, mock("secondary").await);
    let pool = pool_yaml(
        "p",
        &format!("strategy: {strategy}\n    retry: {{ max_attempts: 2 }}"),
        &[
            (&primary, ", priority: 0"),
            (&secondary, ", priority: 1, weight: 5"),
        ],
    );
    let proxy = TestProxy::start(&pool, &[&primary, &secondary]).await;
    assert_eq!(
        proxy.backends_of("p", 5).await,
        vec!["primary"; 5],
        "{strategy}"
    );

    primary.inject(Fault::status(503).once()).unwrap();
    let failed_over = proxy.chat("p").send().await.unwrap();
    assert_eq!(
        served_by(&failed_over),
        "secondary",
        "{strategy}: the failed call moved to the next tier"
    );
    assert_eq!(
        proxy.backends_of("p", 3).await,
        vec!["secondary"; 3],
        "{strategy}: primary is ejected"
    );

    // The first ejection lasts one second; then the primary tier takes traffic again.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(
        proxy.backends_of("p", 3).await,
        vec!["primary"; 3],
        "{strategy}"
    );
}

/// A 429 with `retry-after-ms: 2000` keeps that backend out of rotation for two seconds while
/// the others serve, then it takes traffic again.
#[tokio::test]
async fn retry_after_ms_cools_a_backend_down_for_that_long() {
    let (a, b) = (mock("a").await, mock("b").await);
    let pool = pool_yaml("p", "", &[(&a, ""), (&b, "")]);
    let proxy = TestProxy::start(&pool, &[&a, &b]).await;
    a.inject(Fault::status(429).header("retry-after-ms", "2000").once())
        .unwrap();
    // Whichever call lands on `a` first gets the 429 and moves to `b`.
    let mut cooled_at = None;
    for _ in 0..4 {
        let response = proxy.chat("p").send().await.unwrap();
        assert_eq!(response.status(), 200);
        if a.faults_applied() == 1 && cooled_at.is_none() {
            cooled_at = Some(Instant::now());
        }
    }
    let cooled_at = cooled_at.expect("a was tried");
    let a_calls = a.request_count();
    while cooled_at.elapsed() < Duration::from_millis(1800) {
        assert_eq!(served_by(&proxy.chat("p").send().await.unwrap()), "b");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        a.request_count(),
        a_calls,
        "no traffic reached a while it cooled down"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let after = proxy.backends_of("p", 4).await;
    assert!(
        after.iter().any(|s| s == "a"),
        "a is back after its cooldown: {after:?}"
    );
}

/// With every backend cooling down, Sluice answers 429 itself with the shortest remaining
/// wait in `Retry-After` and `retry-after-ms`, and calls no backend.
#[tokio::test]
async fn all_backends_cooling_answers_429_with_the_shortest_wait() {
    let (a, b) = (mock("a").await, mock("b").await);
    let pool = pool_yaml("p", "", &[(&a, ""), (&b, "")]);
    let proxy = TestProxy::start(&pool, &[&a, &b]).await;
    a.inject(Fault::status(429).header("retry-after-ms", "3000").once())
        .unwrap();
    b.inject(Fault::status(429).header("retry-after", "6").once())
        .unwrap();
    let last_failure = proxy.chat("p").send().await.unwrap();
    assert_eq!(
        last_failure.status(),
        429,
        "both tried: the last 429 is passed on as sent"
    );
    assert!(
        last_failure.headers().get("x-mock-upstream").is_some(),
        "it is the backend's own answer"
    );

    let calls = a.request_count() + b.request_count();
    let response = proxy.chat("p").send().await.unwrap();
    assert_eq!(response.status(), 429);
    assert_eq!(response.headers()["retry-after"], "3");
    let wait_ms: u64 = response.headers()["retry-after-ms"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((2000..=3000).contains(&wait_ms), "{wait_ms}");
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "rate_limit_exceeded");
    assert_eq!(
        a.request_count() + b.request_count(),
        calls,
        "no backend was called"
    );
    let metrics = proxy.metrics().await;
    assert!(
        metrics.contains(r#"sluice_all_backends_unavailable_total{pool="p"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"sluice_backend_state{pool="p",backend="a",state="cooling"} 1"#),
        "{metrics}"
    );
}

/// A disabled backend takes no traffic and counts as unavailable for its tier; a pool whose
/// backends are all disabled answers 503 without calling anyone.
#[tokio::test]
async fn disabled_backends_take_no_traffic() {
    let (a, b, c) = (mock("a").await, mock("b").await, mock("c").await);
    let pools = [
        pool_yaml("p", "", &[(&a, ", enabled: false"), (&b, ", priority: 1")]),
        pool_yaml("off", "", &[(&c, ", enabled: false")]),
    ]
    .join("\n");
    let proxy = TestProxy::start(&pools, &[&a, &b, &c]).await;
    assert_eq!(
        proxy.backends_of("p", 4).await,
        vec!["b"; 4],
        "the next tier serves"
    );
    let response = proxy.chat("off").send().await.unwrap();
    assert_eq!(response.status(), 503);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "no_backend");
    assert_eq!(a.request_count() + c.request_count(), 0);
    let metrics = proxy.metrics().await;
    assert!(
        metrics.contains(r#"sluice_backend_state{pool="p",backend="a",state="disabled"} 1"#),
        "{metrics}"
    );
}
