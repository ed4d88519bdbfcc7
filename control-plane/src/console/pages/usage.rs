//! Usage history: a GET form of filters, charts of requests and tokens per key or pool, the
//! rows as a table, and the same rows as the API's CSV download.

use askama::Template;
use axum::Extension;
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::Response;

use crate::admin::csv_response;
use crate::console::ConsoleState;
use crate::console::form::{Draft, Form, Problem};
use crate::console::session::Visitor;
use crate::console::usage_chart::{Charts, SplitBy, charts};
use crate::console::view::{self, Chrome, timestamp};
use crate::fleet::usage::{
    UsageError, UsageParams, group_name, usage_filter, usage_rows, usd_text,
};
use crate::store::{StoreError, UsageCounts, UsageFilter, UsageRow, unix_millis};

/// Rows shown in the page's table; the CSV holds them all.
const TABLE_ROWS: usize = 500;
/// The filters the page and its download take.
const FIELDS: [&str; 5] = ["key", "pool", "from", "to", "group_by"];

pub(crate) struct RowView {
    pub start: String,
    pub key: String,
    pub pool: String,
    pub requests: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cost: String,
    pub rate_limited: u64,
}

impl RowView {
    fn of(row: &UsageRow) -> Self {
        let c = &row.counts;
        Self {
            start: timestamp(row.start_unix_ms),
            key: row.client_key.clone(),
            pool: row.pool.clone(),
            requests: c.requests,
            input_tokens: c.input_tokens,
            output_tokens: c.output_tokens,
            cost: usd_text(c.cost_micro_usd),
            rate_limited: c.rate_limited,
        }
    }
}

pub(crate) struct Results {
    pub group_by: &'static str,
    pub split: &'static str,
    pub span: String,
    pub totals: UsageCounts,
    pub cost: String,
    pub charts: Charts,
    pub requests_json: String,
    pub tokens_json: String,
    pub rows: Vec<RowView>,
    pub row_count: usize,
    pub csv_href: String,
}

#[derive(Template)]
#[template(path = "console/usage.html")]
struct UsagePage {
    chrome: Chrome,
    draft: Draft,
    keys: Vec<String>,
    pools: Vec<String>,
    results: Option<Results>,
}

/// The query's non-empty filters: an empty field of the form means "any".
fn params(form: &Form) -> UsageParams<'_> {
    let value = |name| Some(form.value(name)).filter(|v| !v.is_empty());
    UsageParams {
        key: value("key"),
        pool: value("pool"),
        from: value("from"),
        to: value("to"),
        group_by: value("group_by"),
    }
}

fn problem(error: UsageError) -> Result<Problem, StoreError> {
    match error {
        UsageError::Invalid { field, message } => Ok(Problem::new(field, message)),
        UsageError::TooManyRows => Ok(Problem::new("", error.to_string())),
        UsageError::Store(error) => Err(error),
    }
}

/// The download's address: the page's filters, as typed.
fn csv_href(form: &Form) -> String {
    let mut query = form_urlencoded::Serializer::new(String::new());
    for name in FIELDS {
        let value = form.value(name);
        if !value.is_empty() {
            query.append_pair(name, value);
        }
    }
    let query = query.finish();
    if query.is_empty() {
        "/ui/usage.csv".to_owned()
    } else {
        format!("/ui/usage.csv?{query}")
    }
}

fn results(form: &Form, filter: &UsageFilter, rows: &[UsageRow], split: SplitBy) -> Results {
    let mut totals = UsageCounts::default();
    for row in rows {
        totals.add(&row.counts);
    }
    let charts = charts(filter, rows, split);
    let json = |chart| serde_json::to_string(chart).unwrap_or_default();
    Results {
        group_by: group_name(filter),
        split: split.name(),
        span: format!(
            "{} to {}",
            timestamp(filter.from_unix_ms),
            timestamp(filter.to_unix_ms)
        ),
        cost: usd_text(totals.cost_micro_usd),
        totals,
        requests_json: json(&charts.requests),
        tokens_json: json(&charts.tokens),
        charts,
        rows: rows.iter().take(TABLE_ROWS).map(RowView::of).collect(),
        row_count: rows.len(),
        csv_href: csv_href(form),
    }
}

pub(crate) async fn show(
    State(state): State<ConsoleState>,
    Extension(visitor): Extension<Visitor>,
    RawQuery(query): RawQuery,
) -> Response {
    let form = Form::parse(query.unwrap_or_default().as_bytes());
    let store = &state.admin.store;
    let (keys, pools) = match (store.list_keys().await, store.list_pools().await) {
        (Ok(keys), Ok(pools)) => (
            keys.into_iter().map(|k| k.key.id.to_string()).collect(),
            pools
                .into_iter()
                .map(|p| p.value.name.to_string())
                .collect(),
        ),
        (Err(error), _) | (_, Err(error)) => return view::store_failure(&error),
    };
    let outcome = match query_results(&state, &form).await {
        Ok(outcome) => outcome,
        Err(error) => return view::store_failure(&error),
    };
    let (status, draft, results) = match outcome {
        Ok(results) => (StatusCode::OK, Draft::new(form), Some(results)),
        Err(problem) => (StatusCode::BAD_REQUEST, Draft::refused(form, problem), None),
    };
    view::render(
        status,
        &UsagePage {
            chrome: Chrome::for_visitor(&visitor, "usage"),
            draft,
            keys,
            pools,
            results,
        },
    )
}

/// What the query finds, or the problem with it to show on the form.
async fn query_results(
    state: &ConsoleState,
    form: &Form,
) -> Result<Result<Results, Problem>, StoreError> {
    let Some(split) = SplitBy::parse(form.value("split")) else {
        return Ok(Err(Problem::new("split", "chart by key or by pool")));
    };
    let filter = match usage_filter(&params(form), unix_millis()) {
        Ok(filter) => filter,
        Err(error) => return problem(error).map(Err),
    };
    match usage_rows(&state.admin.store, &filter).await {
        Ok(rows) => Ok(Ok(results(form, &filter, &rows, split))),
        Err(error) => problem(error).map(Err),
    }
}

/// The page's rows as the API's CSV (`GET /api/v1/usage` with `Accept: text/csv`), for a
/// signed-in browser that holds no API token.
pub(crate) async fn csv(State(state): State<ConsoleState>, RawQuery(query): RawQuery) -> Response {
    let form = Form::parse(query.unwrap_or_default().as_bytes());
    let refused = |problem: Problem| {
        view::failure(
            StatusCode::BAD_REQUEST,
            view::Failure::new("No download", problem.message)
                .with_link("/ui/usage", "Back to usage"),
        )
    };
    let filter = match usage_filter(&params(&form), unix_millis()) {
        Ok(filter) => filter,
        Err(error) => {
            return match problem(error) {
                Ok(problem) => refused(problem),
                Err(error) => view::store_failure(&error),
            };
        }
    };
    match usage_rows(&state.admin.store, &filter).await {
        Ok(rows) => csv_response(&filter, &rows),
        Err(error) => match problem(error) {
            Ok(problem) => refused(problem),
            Err(error) => view::store_failure(&error),
        },
    }
}
