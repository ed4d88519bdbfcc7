//! What the admin API shows of the fleet tables: each proxy with its state, and a pool's
//! backends as the proxies that are still reporting see them.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;
use utoipa::ToSchema;

use super::registry::Nack;
use crate::admin::rfc3339;
use crate::store::{BackendState, ProxyRecord, TrafficRow};

/// Whether a proxy is still part of the fleet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ProxyState {
    /// Its config stream is open and its replica refreshed it recently.
    Connected,
    /// Its stream closed, or nothing was heard from it (or from its replica) for
    /// `--proxy-gone-after`.
    Gone,
}

/// One proxy of the fleet, whichever replica it is connected to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, ToSchema)]
pub struct FleetProxy {
    pub node_id: String,
    pub state: ProxyState,
    /// The control-plane replica holding (or that last held) its config stream.
    pub replica: String,
    /// Peer address of the config stream.
    pub address: String,
    /// Software version the proxy reported.
    pub version: String,
    /// Last revision the proxy acknowledged as applied.
    pub acked_revision: Option<u64>,
    pub last_nack: Option<Nack>,
    /// RFC 3339.
    pub connected_since: String,
    /// RFC 3339.
    pub last_seen: String,
    /// RFC 3339; absent until the proxy sent a report (a proxy that predates reports never
    /// does).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_report: Option<String>,
}

fn is_live(record: &ProxyRecord, now_unix_ms: i64, gone_after: Duration) -> bool {
    let gone_after = i64::try_from(gone_after.as_millis()).unwrap_or(i64::MAX);
    record.connected && now_unix_ms.saturating_sub(record.last_seen_unix_ms) <= gone_after
}

pub fn proxy_views(
    records: &[ProxyRecord],
    now_unix_ms: i64,
    gone_after: Duration,
) -> Vec<FleetProxy> {
    records
        .iter()
        .map(|record| FleetProxy {
            node_id: record.node_id.clone(),
            state: if is_live(record, now_unix_ms, gone_after) {
                ProxyState::Connected
            } else {
                ProxyState::Gone
            },
            replica: record.replica.clone(),
            address: record.address.clone(),
            version: record.version.clone(),
            acked_revision: record.acked_revision,
            last_nack: record.last_nack.as_ref().map(Nack::from),
            connected_since: rfc3339(record.connected_since_unix_ms),
            last_seen: rfc3339(record.last_seen_unix_ms),
            last_report: record.last_report_unix_ms.map(rfc3339),
        })
        .collect()
}

/// How many reporting proxies see a backend in each state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, ToSchema)]
pub struct StateCounts {
    pub available: u32,
    pub cooling: u32,
    pub ejected: u32,
    pub no_credential: u32,
    pub disabled: u32,
}

impl StateCounts {
    pub fn get(&self, state: BackendState) -> u32 {
        match state {
            BackendState::Available => self.available,
            BackendState::Cooling => self.cooling,
            BackendState::Ejected => self.ejected,
            BackendState::NoCredential => self.no_credential,
            BackendState::Disabled => self.disabled,
        }
    }

    /// The state that matters most to an operator among those some proxy reports: one proxy
    /// unable to use a backend is worth seeing before the others that can. `None` when no
    /// proxy reports the backend.
    pub fn worst(&self) -> Option<BackendState> {
        [
            BackendState::Ejected,
            BackendState::NoCredential,
            BackendState::Cooling,
            BackendState::Disabled,
            BackendState::Available,
        ]
        .into_iter()
        .find(|state| self.get(*state) > 0)
    }

    fn count(&mut self, state: BackendState) {
        let cell = match state {
            BackendState::Available => &mut self.available,
            BackendState::Cooling => &mut self.cooling,
            BackendState::Ejected => &mut self.ejected,
            BackendState::NoCredential => &mut self.no_credential,
            BackendState::Disabled => &mut self.disabled,
        };
        *cell += 1;
    }
}

/// Attempts to the backend over the last minutes, from every proxy.
#[derive(Clone, Debug, Default, PartialEq, Serialize, ToSchema)]
pub struct Traffic {
    /// Length of the window the rates cover.
    pub minutes: u32,
    pub requests: u64,
    pub errors: u64,
    pub requests_per_second: f64,
    pub errors_per_second: f64,
    /// Oldest minute first; minutes without traffic are left out.
    pub by_minute: Vec<MinuteTraffic>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, ToSchema)]
pub struct MinuteTraffic {
    /// RFC 3339 start of the minute.
    pub minute: String,
    pub requests: u64,
    pub errors: u64,
}

/// One configured backend of the pool as the fleet sees it.
#[derive(Clone, Debug, PartialEq, Serialize, ToSchema)]
pub struct BackendFleetState {
    pub name: String,
    /// Whether the config enables it.
    pub enabled: bool,
    /// Connected proxies whose latest report includes the backend.
    pub reported_by: u32,
    pub proxies: StateCounts,
    /// Soonest and latest end of a cooldown or ejection any proxy reported (RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unavailable_until_soonest: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unavailable_until_latest: Option<String>,
    pub traffic: Traffic,
}

#[derive(Clone, Debug, PartialEq, Serialize, ToSchema)]
pub struct PoolStatus {
    pub pool: String,
    /// Connected proxies with a report; proxies that are gone are not counted.
    pub reporting_proxies: u32,
    pub backends: Vec<BackendFleetState>,
}

/// Folds the connected proxies' latest reports and the traffic minutes of one pool.
/// `backends` are the pool's configured backends, in order, with whether each is enabled.
pub fn pool_status(
    pool: &str,
    backends: &[(String, bool)],
    records: &[ProxyRecord],
    traffic: &[TrafficRow],
    now_unix_ms: i64,
    gone_after: Duration,
    minutes: u32,
) -> PoolStatus {
    let mut states: BTreeMap<&str, BackendFleetState> = backends
        .iter()
        .map(|(name, enabled)| {
            (
                name.as_str(),
                BackendFleetState {
                    name: name.clone(),
                    enabled: *enabled,
                    reported_by: 0,
                    proxies: StateCounts::default(),
                    unavailable_until_soonest: None,
                    unavailable_until_latest: None,
                    traffic: Traffic {
                        minutes,
                        ..Traffic::default()
                    },
                },
            )
        })
        .collect();
    let mut until: BTreeMap<&str, (i64, i64)> = BTreeMap::new();
    let live = records
        .iter()
        .filter(|r| is_live(r, now_unix_ms, gone_after) && r.last_report_unix_ms.is_some());
    let mut reporting_proxies = 0;
    for record in live {
        reporting_proxies += 1;
        for seen in record.backends.iter().filter(|b| b.pool == pool) {
            let Some(state) = states.get_mut(seen.backend.as_str()) else {
                continue;
            };
            state.reported_by += 1;
            state.proxies.count(seen.state);
            if let Some(end) = seen
                .until_unix_ms
                .filter(|_| matches!(seen.state, BackendState::Cooling | BackendState::Ejected))
            {
                let span = until.entry(seen.backend.as_str()).or_insert((end, end));
                span.0 = span.0.min(end);
                span.1 = span.1.max(end);
            }
        }
    }
    let seconds = f64::from(minutes.max(1)) * 60.0;
    for row in traffic.iter().filter(|t| t.pool == pool) {
        let Some(state) = states.get_mut(row.backend.as_str()) else {
            continue;
        };
        let traffic = &mut state.traffic;
        traffic.requests += row.requests;
        traffic.errors += row.errors;
        traffic.by_minute.push(MinuteTraffic {
            minute: rfc3339(row.minute_unix_ms),
            requests: row.requests,
            errors: row.errors,
        });
    }
    let backends = backends
        .iter()
        .filter_map(|(name, _)| states.remove(name.as_str()))
        .map(|mut state| {
            if let Some((soonest, latest)) = until.get(state.name.as_str()) {
                state.unavailable_until_soonest = Some(rfc3339(*soonest));
                state.unavailable_until_latest = Some(rfc3339(*latest));
            }
            state.traffic.requests_per_second = state.traffic.requests as f64 / seconds;
            state.traffic.errors_per_second = state.traffic.errors as f64 / seconds;
            state
        })
        .collect();
    PoolStatus {
        pool: pool.to_owned(),
        reporting_proxies,
        backends,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::BackendSeen;

    const NOW: i64 = 1_764_000_000_000;
    const GONE_AFTER: Duration = Duration::from_secs(30);

    fn proxy(node: &str, last_seen: i64, backends: Vec<BackendSeen>) -> ProxyRecord {
        ProxyRecord {
            node_id: node.into(),
            replica: "cp-a".into(),
            connection: format!("cp-a/{node}"),
            address: "10.0.0.1:5000".into(),
            version: "0.1.0".into(),
            connected: true,
            connected_since_unix_ms: NOW - 60_000,
            last_seen_unix_ms: last_seen,
            acked_revision: Some(3),
            last_nack: None,
            served_revision: Some(3),
            last_report_unix_ms: Some(last_seen),
            backends,
        }
    }

    fn seen(backend: &str, state: BackendState, until: Option<i64>) -> BackendSeen {
        BackendSeen {
            pool: "gpt-4o".into(),
            backend: backend.into(),
            state,
            until_unix_ms: until,
        }
    }

    #[test]
    fn the_worst_state_reported_wins() {
        let mut counts = StateCounts::default();
        assert_eq!(counts.worst(), None);
        counts.count(BackendState::Available);
        counts.count(BackendState::Available);
        assert_eq!(counts.worst(), Some(BackendState::Available));
        counts.count(BackendState::Cooling);
        assert_eq!(counts.worst(), Some(BackendState::Cooling));
        counts.count(BackendState::Ejected);
        assert_eq!(counts.worst(), Some(BackendState::Ejected));
        assert_eq!(counts.get(BackendState::Available), 2);
    }

    #[test]
    fn proxies_not_heard_from_or_disconnected_are_gone() {
        let fresh = proxy("fresh", NOW - 1_000, vec![]);
        let silent = proxy("silent", NOW - 31_000, vec![]);
        let mut closed = proxy("closed", NOW, vec![]);
        closed.connected = false;
        let views = proxy_views(&[fresh, silent, closed], NOW, GONE_AFTER);
        let states: Vec<_> = views.iter().map(|v| v.state).collect();
        assert_eq!(
            states,
            [ProxyState::Connected, ProxyState::Gone, ProxyState::Gone]
        );
    }

    #[test]
    fn pool_status_counts_states_of_live_proxies_only() {
        let records = [
            proxy(
                "p1",
                NOW,
                vec![
                    seen("eastus", BackendState::Cooling, Some(NOW + 5_000)),
                    seen("westus", BackendState::Available, None),
                ],
            ),
            proxy(
                "p2",
                NOW,
                vec![seen("eastus", BackendState::Cooling, Some(NOW + 9_000))],
            ),
            proxy(
                "gone",
                NOW - 60_000,
                vec![seen("eastus", BackendState::Available, None)],
            ),
        ];
        let traffic = [
            TrafficRow {
                minute_unix_ms: NOW - 60_000,
                pool: "gpt-4o".into(),
                backend: "eastus".into(),
                requests: 120,
                errors: 60,
            },
            TrafficRow {
                minute_unix_ms: NOW - 60_000,
                pool: "other".into(),
                backend: "eastus".into(),
                requests: 1,
                errors: 1,
            },
        ];
        let status = pool_status(
            "gpt-4o",
            &[
                ("eastus".into(), true),
                ("westus".into(), true),
                ("spare".into(), false),
            ],
            &records,
            &traffic,
            NOW,
            GONE_AFTER,
            1,
        );
        assert_eq!(status.reporting_proxies, 2);
        let eastus = &status.backends[0];
        assert_eq!(eastus.reported_by, 2);
        assert_eq!(eastus.proxies.cooling, 2);
        assert_eq!(eastus.proxies.available, 0, "the gone proxy is not counted");
        assert_eq!(
            eastus.unavailable_until_soonest.as_deref(),
            Some(rfc3339(NOW + 5_000).as_str())
        );
        assert_eq!(
            eastus.unavailable_until_latest.as_deref(),
            Some(rfc3339(NOW + 9_000).as_str())
        );
        assert_eq!(eastus.traffic.requests, 120);
        assert!((eastus.traffic.requests_per_second - 2.0).abs() < 1e-9);
        assert!((eastus.traffic.errors_per_second - 1.0).abs() < 1e-9);
        assert_eq!(status.backends[1].proxies.available, 1);
        let spare = &status.backends[2];
        assert_eq!((spare.enabled, spare.reported_by), (false, 0));
    }
}
