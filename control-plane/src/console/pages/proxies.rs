//! Every proxy of the fleet, from the shared database so every replica shows the same list,
//! refreshed live as a fragment.

use askama::Template;
use axum::Extension;
use axum::extract::State;
use axum::response::Response;

use crate::console::ConsoleState;
use crate::console::session::Visitor;
use crate::console::view::{self, Chrome, readable};
use crate::fleet::{FleetProxy, ProxyState, proxy_views};
use crate::store::{StoreError, unix_millis};

pub(crate) struct ProxyRow {
    pub node_id: String,
    pub connected: bool,
    pub replica: String,
    pub address: String,
    pub version: String,
    /// `ok`, `warn` or `bad`: the colour; `sync` says the same in words.
    pub tone: &'static str,
    pub sync: String,
    pub last_nack: Option<String>,
    pub last_report: String,
    pub last_seen: String,
}

pub(crate) struct ProxiesLive {
    revision: u64,
    proxies: Vec<ProxyRow>,
}

#[derive(Template)]
#[template(path = "console/proxies.html")]
struct ProxiesPage {
    chrome: Chrome,
    live: ProxiesLive,
}

#[derive(Template)]
#[template(path = "console/proxies_live.html")]
struct ProxiesFragment {
    live: ProxiesLive,
}

/// Whether the proxy serves the current revision, in a colour and in words.
fn sync(proxy: &FleetProxy, revision: u64) -> (&'static str, String) {
    let rejected = proxy.last_nack.as_ref().filter(|nack| {
        proxy
            .acked_revision
            .is_none_or(|acked| nack.revision > acked)
    });
    if let Some(nack) = rejected {
        return ("bad", format!("Rejected revision {}", nack.revision));
    }
    match proxy.acked_revision {
        Some(acked) if acked >= revision => ("ok", format!("In sync at revision {acked}")),
        Some(acked) => ("warn", format!("Behind: at revision {acked} of {revision}")),
        None => ("warn", "Waiting for its first config".to_owned()),
    }
}

fn row(proxy: FleetProxy, revision: u64) -> ProxyRow {
    let (tone, sync) = sync(&proxy, revision);
    ProxyRow {
        connected: proxy.state == ProxyState::Connected,
        tone,
        sync,
        last_nack: proxy
            .last_nack
            .map(|nack| format!("revision {}: {}", nack.revision, nack.error)),
        last_report: proxy
            .last_report
            .as_deref()
            .map_or_else(|| "never".to_owned(), readable),
        last_seen: readable(&proxy.last_seen),
        node_id: proxy.node_id,
        replica: proxy.replica,
        address: proxy.address,
        version: proxy.version,
    }
}

async fn read(state: &ConsoleState) -> Result<ProxiesLive, StoreError> {
    let revision = state.admin.store.revision().await?;
    let records = state.admin.store.fleet_proxies().await?;
    let proxies = proxy_views(&records, unix_millis(), state.admin.fleet.gone_after)
        .into_iter()
        .map(|proxy| row(proxy, revision))
        .collect();
    Ok(ProxiesLive { revision, proxies })
}

pub(crate) async fn list(
    State(state): State<ConsoleState>,
    Extension(visitor): Extension<Visitor>,
) -> Response {
    match read(&state).await {
        Ok(live) => view::ok(&ProxiesPage {
            chrome: Chrome::for_visitor(&visitor, "proxies"),
            live,
        }),
        Err(error) => view::store_failure(&error),
    }
}

pub(crate) async fn live(State(state): State<ConsoleState>) -> Response {
    match read(&state).await {
        Ok(live) => view::ok(&ProxiesFragment { live }),
        Err(error) => view::store_failure(&error),
    }
}
