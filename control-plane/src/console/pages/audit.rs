//! The audit log, newest first, a page at a time.

use askama::Template;
use axum::Extension;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::response::Response;
use serde::Deserialize;

use crate::console::ConsoleState;
use crate::console::session::Visitor;
use crate::console::view::{self, Chrome, timestamp};

const PAGE: u32 = 50;

#[derive(Deserialize)]
pub(crate) struct AuditQuery {
    before: Option<i64>,
}

pub(crate) struct EntryRow {
    pub id: i64,
    pub revision: u64,
    pub at: String,
    pub actor: String,
    pub action: String,
    pub resource: String,
}

#[derive(Template)]
#[template(path = "console/audit.html")]
struct AuditPage {
    chrome: Chrome,
    entries: Vec<EntryRow>,
    /// Link to the next (older) page, when there is one.
    older: Option<i64>,
    paged: bool,
}

pub(crate) async fn list(
    State(state): State<ConsoleState>,
    Extension(visitor): Extension<Visitor>,
    query: Result<Query<AuditQuery>, QueryRejection>,
) -> Response {
    // A malformed page link shows the newest entries rather than an error.
    let before = query.ok().and_then(|Query(q)| q.before).filter(|b| *b > 0);
    let entries = match state.admin.store.audit_log_newest(before, PAGE).await {
        Ok(entries) => entries,
        Err(error) => return view::store_failure(&error),
    };
    let older = entries
        .last()
        .filter(|_| entries.len() == PAGE as usize)
        .map(|e| e.id);
    view::ok(&AuditPage {
        chrome: Chrome::for_visitor(&visitor, "audit"),
        entries: entries
            .into_iter()
            .map(|e| EntryRow {
                id: e.id,
                revision: e.revision,
                at: timestamp(e.at_unix_ms),
                actor: e.actor,
                action: e.action,
                resource: e.resource,
            })
            .collect(),
        older,
        paged: before.is_some(),
    })
}
