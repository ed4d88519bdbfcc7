//! The landing page: how much config there is and how many proxies follow it.

use askama::Template;
use axum::Extension;
use axum::extract::State;
use axum::response::Response;

use crate::console::ConsoleState;
use crate::console::session::Visitor;
use crate::console::view::{self, Chrome};

/// One figure on the overview.
pub(crate) struct Stat {
    pub label: &'static str,
    pub value: String,
    /// Where to read more.
    pub href: &'static str,
}

#[derive(Template)]
#[template(path = "console/overview.html")]
struct OverviewPage {
    chrome: Chrome,
    config: Vec<Stat>,
    fleet: Vec<Stat>,
}

pub(crate) async fn show(
    State(state): State<ConsoleState>,
    Extension(visitor): Extension<Visitor>,
) -> Response {
    let store = &state.admin.store;
    let read = async {
        let revision = store.revision().await?;
        let pools = store.list_pools().await?;
        let keys = store.list_keys().await?;
        Ok::<_, crate::store::StoreError>((revision, pools, keys))
    };
    let (revision, pools, keys) = match read.await {
        Ok(read) => read,
        Err(error) => return view::store_failure(&error),
    };
    let backends: usize = pools.iter().map(|p| p.value.backends.len()).sum();
    let config = vec![
        Stat {
            label: "Config revision",
            value: revision.to_string(),
            href: "/ui/audit",
        },
        Stat {
            label: "Pools",
            value: pools.len().to_string(),
            href: "/ui/pools",
        },
        Stat {
            label: "Backends",
            value: backends.to_string(),
            href: "/ui/pools",
        },
        Stat {
            label: "Client keys",
            value: keys.len().to_string(),
            href: "/ui/keys",
        },
    ];
    // The fleet section: what the proxies report. Further fleet figures (pool health,
    // usage) belong in this list, next to the connected count.
    let fleet = vec![Stat {
        label: "Connected proxies",
        value: state.admin.proxies.list().len().to_string(),
        href: "/ui/proxies",
    }];
    view::ok(&OverviewPage {
        chrome: Chrome::for_visitor(&visitor, "overview"),
        config,
        fleet,
    })
}
