//! The proxies connected to this replica, refreshed live.

use askama::Template;
use axum::Extension;
use axum::extract::State;
use axum::response::Response;

use crate::console::ConsoleState;
use crate::console::session::Visitor;
use crate::console::view::{self, Chrome, readable};

pub(crate) struct ProxyRow {
    pub node_id: String,
    pub address: String,
    pub version: String,
    /// `ok`, `warn` or `bad`: the colour; `state` says the same in words.
    pub tone: &'static str,
    pub state: String,
    pub last_nack: Option<String>,
    pub connected_since: String,
    pub last_seen: String,
}

#[derive(Template)]
#[template(path = "console/proxies.html")]
struct ProxiesPage {
    chrome: Chrome,
    revision: u64,
    proxies: Vec<ProxyRow>,
}

pub(crate) async fn list(
    State(state): State<ConsoleState>,
    Extension(visitor): Extension<Visitor>,
) -> Response {
    let revision = state.admin.store.last_known_revision();
    let proxies = state
        .admin
        .proxies
        .list()
        .into_iter()
        .map(|proxy| {
            let (tone, state) = match proxy.acked_revision {
                Some(acked) if acked >= revision => ("ok", "In sync".to_owned()),
                Some(acked) => ("warn", format!("Behind: at revision {acked}")),
                None => ("warn", "Waiting for its first config".to_owned()),
            };
            let rejected = proxy.last_nack.as_ref().filter(|nack| {
                proxy
                    .acked_revision
                    .is_none_or(|acked| nack.revision > acked)
            });
            let (tone, state) = match rejected {
                Some(nack) => ("bad", format!("Rejected revision {}", nack.revision)),
                None => (tone, state),
            };
            ProxyRow {
                last_nack: proxy
                    .last_nack
                    .map(|nack| format!("revision {}: {}", nack.revision, nack.error)),
                node_id: proxy.node_id,
                address: proxy.address,
                version: proxy.version,
                tone,
                state,
                connected_since: readable(&proxy.connected_since),
                last_seen: readable(&proxy.last_seen),
            }
        })
        .collect();
    view::ok(&ProxiesPage {
        chrome: Chrome::for_visitor(&visitor, "proxies"),
        revision,
        proxies,
    })
}
