//! The live part of a pool's page: each backend as the fleet sees it (state on how many
//! proxies, until when) and its traffic over the last minutes.

use askama::Template;
use axum::extract::{Path, State};
use axum::response::Response;
use sluice_model::Name;

use crate::console::ConsoleState;
use crate::console::states::{StateBadge, badge, clock};
use crate::console::view;
use crate::fleet::{BackendFleetState, read_pool_status};
use crate::store::{BackendState, StoreError};

/// Traffic on the pool page covers this many minutes.
pub(crate) const MINUTES: u32 = 5;

pub(crate) struct BackendLive {
    pub name: String,
    pub badge: StateBadge,
    /// `Cooling on 2 of 3 proxies, until 14:03:12 UTC; available on 1 of 3`.
    pub states: String,
    pub traffic: String,
}

pub(crate) struct PoolLive {
    pub pool: String,
    pub reporting: u32,
    pub minutes: u32,
    pub backends: Vec<BackendLive>,
}

impl PoolLive {
    pub fn backend(&self, name: &str) -> Option<&BackendLive> {
        self.backends.iter().find(|b| b.name == name)
    }
}

fn states_text(backend: &BackendFleetState) -> String {
    if backend.reported_by == 0 {
        return "No connected proxy reports it yet.".to_owned();
    }
    let of = backend.reported_by;
    let mut parts = Vec::new();
    for state in [
        BackendState::Ejected,
        BackendState::NoCredential,
        BackendState::Cooling,
        BackendState::Disabled,
        BackendState::Available,
    ] {
        let count = backend.proxies.get(state);
        if count == 0 {
            continue;
        }
        let noun = if of == 1 { "proxy" } else { "proxies" };
        let mut part = format!(
            "{} on {count} of {of} {noun}",
            badge(Some(state)).label.to_lowercase()
        );
        if matches!(state, BackendState::Cooling | BackendState::Ejected)
            && let Some(until) = &backend.unavailable_until_latest
        {
            part.push_str(&format!(", until {}", clock(until)));
        }
        parts.push(part);
    }
    let mut text = parts.join("; ");
    if let Some(first) = text.get(..1) {
        text = first.to_uppercase() + &text[1..];
    }
    text
}

fn traffic_text(backend: &BackendFleetState) -> String {
    let t = &backend.traffic;
    if t.requests == 0 {
        return format!("No attempts in the last {} min.", t.minutes);
    }
    let share = t.errors as f64 * 100.0 / t.requests as f64;
    format!(
        "{} attempts, {} failed ({share:.1} %) in the last {} min · {:.2} per second",
        t.requests, t.errors, t.minutes, t.requests_per_second
    )
}

pub(crate) async fn read(state: &ConsoleState, pool: &Name) -> Result<PoolLive, StoreError> {
    let status = read_pool_status(
        &state.admin.store,
        state.admin.fleet.gone_after,
        pool,
        MINUTES,
    )
    .await?;
    Ok(PoolLive {
        pool: status.pool,
        reporting: status.reporting_proxies,
        minutes: MINUTES,
        backends: status
            .backends
            .iter()
            .map(|b| BackendLive {
                name: b.name.clone(),
                badge: badge(b.proxies.worst()),
                states: states_text(b),
                traffic: traffic_text(b),
            })
            .collect(),
    })
}

#[derive(Template)]
#[template(path = "console/pool_live.html")]
struct PoolFragment {
    live: PoolLive,
}

/// The refreshing part alone: the summary, and each backend's state swapped into its card.
pub(crate) async fn live(State(state): State<ConsoleState>, Path(pool): Path<String>) -> Response {
    let Ok(name) = Name::try_from(pool.as_str()) else {
        return view::not_found(format!("There is no pool named {pool}."));
    };
    match read(&state, &name).await {
        Ok(live) => view::ok(&PoolFragment { live }),
        Err(StoreError::NotFound(resource)) => {
            view::not_found(format!("The {resource} does not exist."))
        }
        Err(error) => view::store_failure(&error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::{StateCounts, Traffic};

    fn backend(proxies: StateCounts, until: Option<&str>) -> BackendFleetState {
        BackendFleetState {
            name: "eastus".into(),
            enabled: true,
            reported_by: proxies.available + proxies.cooling + proxies.ejected,
            proxies,
            unavailable_until_soonest: until.map(str::to_owned),
            unavailable_until_latest: until.map(str::to_owned),
            traffic: Traffic {
                minutes: 5,
                requests: 12,
                errors: 3,
                requests_per_second: 0.04,
                ..Traffic::default()
            },
        }
    }

    #[test]
    fn states_read_as_a_sentence() {
        let cooling = backend(
            StateCounts {
                cooling: 2,
                available: 1,
                ..StateCounts::default()
            },
            Some("2026-12-03T14:03:12Z"),
        );
        assert_eq!(
            states_text(&cooling),
            "Cooling on 2 of 3 proxies, until 14:03:12 UTC; available on 1 of 3 proxies"
        );
        assert_eq!(
            traffic_text(&cooling),
            "12 attempts, 3 failed (25.0 %) in the last 5 min · 0.04 per second"
        );
        let unseen = backend(StateCounts::default(), None);
        assert_eq!(states_text(&unseen), "No connected proxy reports it yet.");
    }
}
