//! The landing page: how much config there is, how the fleet serves it (proxies, backends
//! by state, traffic), refreshed live as a fragment.

use askama::Template;
use axum::Extension;
use axum::extract::State;
use axum::response::Response;

use crate::console::ConsoleState;
use crate::console::session::Visitor;
use crate::console::states::{StateBadge, badge};
use crate::console::view::{self, Chrome};
use crate::fleet::usage::{DAY_MS, HOUR_MS, ceil, floor};
use crate::fleet::{FleetSnapshot, ProxyState, proxy_views, read_fleet};
use crate::store::{BackendState, StoreError, UsageCounts, UsageFilter};

/// The window "attempts per second now" is measured over: the current minute alone would
/// read low early in each minute.
const RATE_MINUTES: u32 = 2;

/// One figure on the overview.
pub(crate) struct Stat {
    pub label: String,
    pub value: String,
    /// Where to read more.
    pub href: &'static str,
}

fn stat(label: impl Into<String>, value: impl ToString, href: &'static str) -> Stat {
    Stat {
        label: label.into(),
        value: value.to_string(),
        href,
    }
}

/// The part of the overview that refreshes.
pub(crate) struct OverviewLive {
    config: Vec<Stat>,
    fleet: Vec<Stat>,
    /// Backends of every pool by the worst state a connected proxy reports for them.
    backend_states: Vec<(StateBadge, usize)>,
    traffic: Vec<Stat>,
}

#[derive(Template)]
#[template(path = "console/overview.html")]
struct OverviewPage {
    chrome: Chrome,
    live: OverviewLive,
}

#[derive(Template)]
#[template(path = "console/overview_live.html")]
struct OverviewFragment {
    live: OverviewLive,
}

async fn read(state: &ConsoleState) -> Result<OverviewLive, StoreError> {
    let store = &state.admin.store;
    let revision = store.revision().await?;
    let pools = store.list_pools().await?.len();
    let keys = store.list_keys().await?.len();
    let fleet = read_fleet(store, state.admin.fleet.gone_after, RATE_MINUTES).await?;
    let recent = recent_usage(state, fleet.now_unix_ms).await?;
    Ok(summarize(revision, pools, keys, &fleet, recent, state))
}

/// Usage of the current and the previous UTC hour: history is kept by the hour, so this is
/// the shortest span that always covers the last sixty minutes.
async fn recent_usage(state: &ConsoleState, now: i64) -> Result<(i64, UsageCounts), StoreError> {
    let from = floor(now, HOUR_MS) - HOUR_MS;
    let rows = state
        .admin
        .store
        .usage_history(&UsageFilter {
            client_key: None,
            pool: None,
            from_unix_ms: from,
            to_unix_ms: ceil(now, HOUR_MS),
            // One bucket per (key, pool) for the span, or two across midnight.
            bucket_ms: DAY_MS,
            max_rows: u32::MAX - 1,
        })
        .await?;
    let mut total = UsageCounts::default();
    for row in &rows {
        total.add(&row.counts);
    }
    Ok((from, total))
}

fn summarize(
    revision: u64,
    pools: usize,
    keys: usize,
    fleet: &FleetSnapshot,
    (since, usage): (i64, UsageCounts),
    state: &ConsoleState,
) -> OverviewLive {
    let backends: usize = fleet.pools.iter().map(|p| p.backends.len()).sum();
    let config = vec![
        stat("Config revision", revision, "/ui/audit"),
        stat("Pools", pools, "/ui/pools"),
        stat("Backends", backends, "/ui/pools"),
        stat("Client keys", keys, "/ui/keys"),
    ];
    let proxies = proxy_views(
        &fleet.proxies,
        fleet.now_unix_ms,
        state.admin.fleet.gone_after,
    );
    let connected: Vec<_> = proxies
        .iter()
        .filter(|p| p.state == ProxyState::Connected)
        .collect();
    let acked = connected
        .iter()
        .filter(|p| p.acked_revision.is_some_and(|acked| acked >= revision))
        .count();
    let fleet_stats = vec![
        stat("Proxies connected", connected.len(), "/ui/proxies"),
        stat(
            "Proxies gone",
            proxies.len() - connected.len(),
            "/ui/proxies",
        ),
        stat(
            format!("Connected proxies that acked revision {revision}"),
            format!("{acked} / {}", connected.len()),
            "/ui/proxies",
        ),
    ];
    let worst: Vec<Option<BackendState>> = fleet
        .pools
        .iter()
        .flat_map(|p| p.backends.iter().map(|b| b.proxies.worst()))
        .collect();
    let mut backend_states: Vec<(StateBadge, usize)> = BackendState::ALL
        .iter()
        .map(|state| {
            let count = worst.iter().filter(|w| **w == Some(*state)).count();
            (badge(Some(*state)), count)
        })
        .collect();
    let unreported = worst.iter().filter(|w| w.is_none()).count();
    if unreported > 0 {
        backend_states.push((badge(None), unreported));
    }
    let attempts: u64 = fleet
        .pools
        .iter()
        .flat_map(|p| p.backends.iter().map(|b| b.traffic.requests))
        .sum();
    let per_second = attempts as f64 / (f64::from(RATE_MINUTES) * 60.0);
    let hour = crate::console::states::clock(&crate::admin::rfc3339(since));
    let hour = hour.get(..5).unwrap_or(&hour);
    let traffic = vec![
        stat(
            format!("Requests since {hour} UTC"),
            usage.requests,
            "/ui/usage",
        ),
        stat(
            format!("Tokens since {hour} UTC"),
            usage.input_tokens.saturating_add(usage.output_tokens),
            "/ui/usage",
        ),
        stat(
            format!("Attempts per second (last {RATE_MINUTES} min)"),
            format!("{per_second:.2}"),
            "/ui/pools",
        ),
    ];
    OverviewLive {
        config,
        fleet: fleet_stats,
        backend_states,
        traffic,
    }
}

pub(crate) async fn show(
    State(state): State<ConsoleState>,
    Extension(visitor): Extension<Visitor>,
) -> Response {
    match read(&state).await {
        Ok(live) => view::ok(&OverviewPage {
            chrome: Chrome::for_visitor(&visitor, "overview"),
            live,
        }),
        Err(error) => view::store_failure(&error),
    }
}

/// The refreshing part alone, for htmx to swap in.
pub(crate) async fn live(State(state): State<ConsoleState>) -> Response {
    match read(&state).await {
        Ok(live) => view::ok(&OverviewFragment { live }),
        Err(error) => view::store_failure(&error),
    }
}
