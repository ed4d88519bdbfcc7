//! Client keys: the list with a creation form (the secret shown once), one key's pools and
//! limits, revocation.

use askama::Template;
use axum::Extension;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use sluice_model::{Limits, MicroUsd, Name, Period};

use super::pools::ConfirmPage;
use super::{number_field, refusal, removal_outcome, see, usd_field};
use crate::admin::parse_json;
use crate::console::ConsoleState;
use crate::console::form::{Draft, Form, Problem};
use crate::console::session::Visitor;
use crate::console::view::{self, Chrome, timestamp};
use crate::store::{ClientKeyRecord, KeyUpdate, NewClientKey, Precondition, StoreError};

/// The fields of the limits part of the key forms.
const LIMIT_FIELDS: [&str; 6] = [
    "requests_per_minute",
    "tokens_per_minute",
    "quota_tokens",
    "quota_period",
    "budget_usd",
    "budget_period",
];

pub(crate) struct KeyRow {
    pub id: String,
    pub pools: String,
    pub limits: String,
    pub hint: String,
    pub created_at: String,
}

/// `$12.50` rather than the model's six decimals.
fn usd(amount: MicroUsd) -> String {
    let text = format!("{:.6}", amount.as_usd());
    let trimmed = text.trim_end_matches('0');
    let decimals = trimmed.split('.').nth(1).map_or(0, str::len);
    if decimals < 2 {
        format!("${:.2}", amount.as_usd())
    } else {
        format!("${trimmed}")
    }
}

fn period(period: Period) -> &'static str {
    period.as_str()
}

/// A key's limits in a few words; "no limits" when it has none.
fn limits_summary(limits: &Limits) -> String {
    let mut parts = Vec::new();
    if let Some(n) = limits.requests_per_minute {
        parts.push(format!("{} requests/min", n.get()));
    }
    if let Some(n) = limits.tokens_per_minute {
        parts.push(format!("{} tokens/min", n.get()));
    }
    if let Some(q) = limits.token_quota {
        parts.push(format!("{} tokens/{}", q.tokens.get(), period(q.period)));
    }
    if let Some(b) = limits.budget {
        parts.push(format!("{}/{}", usd(b.usd), period(b.period)));
    }
    if !limits.pools.is_empty() {
        let pools: Vec<_> = limits.pools.keys().map(Name::as_str).collect();
        parts.push(format!("per-pool limits on {}", pools.join(", ")));
    }
    if parts.is_empty() {
        "no limits".to_owned()
    } else {
        parts.join(" · ")
    }
}

fn pools_summary(pools: &[Name]) -> String {
    if pools.is_empty() {
        "every pool".to_owned()
    } else {
        pools
            .iter()
            .map(Name::as_str)
            .collect::<Vec<_>>()
            .join(", ")
    }
}

impl KeyRow {
    fn of(record: &ClientKeyRecord) -> Self {
        Self {
            id: record.key.id.to_string(),
            pools: pools_summary(&record.key.pools),
            limits: limits_summary(&record.key.limits),
            hint: record.hint.clone(),
            created_at: timestamp(record.created_at_unix_ms),
        }
    }
}

#[derive(Template)]
#[template(path = "console/keys.html")]
struct KeysPage {
    chrome: Chrome,
    keys: Vec<KeyRow>,
    pools: Vec<String>,
    draft: Draft,
}

impl KeysPage {
    fn general_error(&self) -> Option<&str> {
        let mut shown = vec!["id", "pools"];
        shown.extend(LIMIT_FIELDS);
        self.draft.general_error(&shown)
    }
}

async fn pool_names(state: &ConsoleState) -> Result<Vec<String>, StoreError> {
    let pools = state.admin.store.list_pools().await?;
    Ok(pools
        .into_iter()
        .map(|p| p.value.name.to_string())
        .collect())
}

async fn keys_page(
    state: &ConsoleState,
    visitor: &Visitor,
    status: StatusCode,
    draft: Draft,
) -> Response {
    let read = async {
        let keys = state.admin.store.list_keys().await?;
        Ok::<_, StoreError>((keys, pool_names(state).await?))
    };
    let (keys, pools) = match read.await {
        Ok(read) => read,
        Err(error) => return view::store_failure(&error),
    };
    view::render(
        status,
        &KeysPage {
            chrome: Chrome::for_visitor(visitor, "keys"),
            keys: keys.iter().map(KeyRow::of).collect(),
            pools,
            draft,
        },
    )
}

fn default_periods() -> Form {
    Form::with([
        ("quota_period", "month".to_owned()),
        ("budget_period", "month".to_owned()),
    ])
}

pub(crate) async fn list(
    State(state): State<ConsoleState>,
    Extension(visitor): Extension<Visitor>,
) -> Response {
    keys_page(
        &state,
        &visitor,
        StatusCode::OK,
        Draft::new(default_periods()),
    )
    .await
}

/// The API's field path for a key request, as the form's field.
fn key_field(path: &str) -> &'static str {
    let path = path.strip_prefix("limits.").unwrap_or(path);
    match path.split(['.', '[']).next().unwrap_or("") {
        "id" => "id",
        "pools" if path.starts_with("pools[") => "pools",
        "requests_per_minute" => "requests_per_minute",
        "tokens_per_minute" => "tokens_per_minute",
        "token_quota" => "quota_tokens",
        "budget" => "budget_usd",
        _ => "",
    }
}

/// The limits typed into the form, keeping the per-pool limits the key already has (the
/// console shows those but leaves their editing to the API).
fn limits_from(form: &Form, per_pool: &Limits) -> Result<Limits, Problem> {
    let mut body = Map::new();
    for field in ["requests_per_minute", "tokens_per_minute"] {
        if let Some(n) = number_field(form.value(field), field)? {
            body.insert(field.into(), n);
        }
    }
    if let Some(tokens) = number_field(form.value("quota_tokens"), "quota_tokens")? {
        body.insert(
            "token_quota".into(),
            json!({"tokens": tokens, "period": form.value("quota_period")}),
        );
    }
    if let Some(amount) = usd_field(form.value("budget_usd"), "budget_usd")? {
        body.insert(
            "budget".into(),
            json!({"usd": amount, "period": form.value("budget_period")}),
        );
    }
    if !per_pool.pools.is_empty() {
        body.insert("pools".into(), json!(per_pool.pools));
    }
    let bytes = serde_json::to_vec(&Value::Object(body)).unwrap_or_default();
    parse_json(&bytes).map_err(|e| Problem::from_api(&e, key_field))
}

fn pools_from(form: &Form) -> Result<Vec<Name>, Problem> {
    form.values("pools")
        .into_iter()
        .map(|pool| {
            Name::try_from(pool)
                .map_err(|_| Problem::new("pools", format!("{pool} is not a pool name")))
        })
        .collect()
}

#[derive(Template)]
#[template(path = "console/key_created.html")]
struct KeyCreatedPage {
    chrome: Chrome,
    id: String,
    /// The client key itself: this page is the only place it ever appears.
    secret: String,
    pools: String,
    limits: String,
}

pub(crate) async fn create(
    State(state): State<ConsoleState>,
    Extension(visitor): Extension<Visitor>,
    Extension(form): Extension<Form>,
) -> Response {
    let parsed = (|| {
        let id = Name::try_from(form.value("id")).map_err(|e| Problem::new("id", e.to_string()))?;
        Ok::<_, Problem>(NewClientKey {
            id,
            pools: pools_from(&form)?,
            limits: limits_from(&form, &Limits::default())?,
        })
    })();
    let new = match parsed {
        Ok(new) => new,
        Err(problem) => {
            return keys_page(
                &state,
                &visitor,
                StatusCode::UNPROCESSABLE_ENTITY,
                Draft::refused(form, problem),
            )
            .await;
        }
    };
    match state.admin.store.create_key(&visitor.actor, new).await {
        Ok(created) => view::render(
            StatusCode::CREATED,
            &KeyCreatedPage {
                chrome: Chrome::for_visitor(&visitor, "keys"),
                id: created.record.key.id.to_string(),
                pools: pools_summary(&created.record.key.pools),
                limits: limits_summary(&created.record.key.limits),
                secret: created.secret,
            },
        ),
        Err(error) => match refusal(error) {
            Ok(api) => {
                let mut problem = Problem::from_api(&api, key_field);
                if problem.field.is_empty() && api.status() == StatusCode::CONFLICT {
                    problem.field = "id".to_owned();
                }
                keys_page(
                    &state,
                    &visitor,
                    api.status(),
                    Draft::refused(form, problem),
                )
                .await
            }
            Err(page) => *page,
        },
    }
}

#[derive(Template)]
#[template(path = "console/key.html")]
struct KeyPage {
    chrome: Chrome,
    key: KeyRow,
    revision: u64,
    pools: Vec<String>,
    per_pool: Vec<(String, String)>,
    draft: Draft,
    saved: bool,
}

impl KeyPage {
    fn general_error(&self) -> Option<&str> {
        let mut shown = vec!["pools"];
        shown.extend(LIMIT_FIELDS);
        self.draft.general_error(&shown)
    }
}

/// The form as the key is now.
fn form_of(record: &ClientKeyRecord) -> Form {
    let limits = &record.key.limits;
    let mut form = Form::with([
        (
            "quota_period",
            limits
                .token_quota
                .map_or("month", |q| period(q.period))
                .to_owned(),
        ),
        (
            "budget_period",
            limits
                .budget
                .map_or("month", |b| period(b.period))
                .to_owned(),
        ),
        ("revision", record.revision.to_string()),
    ]);
    if let Some(n) = limits.requests_per_minute {
        form.push("requests_per_minute", n.get().to_string());
    }
    if let Some(n) = limits.tokens_per_minute {
        form.push("tokens_per_minute", n.get().to_string());
    }
    if let Some(q) = limits.token_quota {
        form.push("quota_tokens", q.tokens.get().to_string());
    }
    if let Some(b) = limits.budget {
        form.push("budget_usd", usd(b.usd).trim_start_matches('$'));
    }
    for pool in &record.key.pools {
        form.push("pools", pool.as_str());
    }
    form
}

pub(crate) struct KeyView {
    status: StatusCode,
    /// What was submitted and refused; `None` shows the key as it is.
    draft: Option<Draft>,
    saved: bool,
    /// The key changed since the form was loaded: show it as it is now, and say so.
    conflict: bool,
}

async fn key_page(
    state: &ConsoleState,
    visitor: &Visitor,
    id: &str,
    view_state: KeyView,
) -> Response {
    let Ok(name) = Name::try_from(id) else {
        return view::not_found(format!("There is no client key {id}."));
    };
    let read = async {
        let record = state.admin.store.get_key(&name).await?;
        Ok::<_, StoreError>((record, pool_names(state).await?))
    };
    let (record, pools) = match read.await {
        Ok(read) => read,
        Err(StoreError::NotFound(resource)) => {
            return view::not_found(format!(
                "The {resource} does not exist; it may have been revoked."
            ));
        }
        Err(error) => return view::store_failure(&error),
    };
    let per_pool = record
        .key
        .limits
        .pools
        .iter()
        .map(|(pool, set)| {
            let limits = Limits {
                requests_per_minute: set.requests_per_minute,
                tokens_per_minute: set.tokens_per_minute,
                token_quota: set.token_quota,
                budget: set.budget,
                pools: Default::default(),
            };
            (pool.to_string(), limits_summary(&limits))
        })
        .collect();
    view::render(
        view_state.status,
        &KeyPage {
            chrome: Chrome::for_visitor(visitor, "keys"),
            key: KeyRow::of(&record),
            revision: record.revision,
            pools,
            per_pool,
            draft: match view_state.draft {
                Some(draft) => draft,
                None if view_state.conflict => Draft::refused(
                    form_of(&record),
                    Problem::new(
                        "",
                        "Someone changed this key since the page was loaded; here it is as it \
                         is now. Make your change again if it still applies.",
                    ),
                ),
                None => Draft::new(form_of(&record)),
            },
            saved: view_state.saved,
        },
    )
}

#[derive(Deserialize)]
pub(crate) struct KeyQuery {
    saved: Option<String>,
}

pub(crate) async fn detail(
    State(state): State<ConsoleState>,
    Extension(visitor): Extension<Visitor>,
    Path(id): Path<String>,
    query: Result<Query<KeyQuery>, QueryRejection>,
) -> Response {
    let saved = query.is_ok_and(|Query(q)| q.saved.is_some());
    let page = KeyView {
        status: StatusCode::OK,
        draft: None,
        saved,
        conflict: false,
    };
    key_page(&state, &visitor, &id, page).await
}

pub(crate) async fn update(
    State(state): State<ConsoleState>,
    Extension(visitor): Extension<Visitor>,
    Extension(form): Extension<Form>,
    Path(id): Path<String>,
) -> Response {
    let Ok(name) = Name::try_from(id.as_str()) else {
        return view::not_found(format!("There is no client key {id}."));
    };
    let refused = |status, problem| KeyView {
        status,
        draft: Some(Draft::refused(form.clone(), problem)),
        saved: false,
        conflict: false,
    };
    let current = match state.admin.store.get_key(&name).await {
        Ok(record) => record,
        Err(StoreError::NotFound(resource)) => {
            return view::not_found(format!(
                "The {resource} does not exist; it may have been revoked."
            ));
        }
        Err(error) => return view::store_failure(&error),
    };
    let update = pools_from(&form).and_then(|pools| {
        Ok(KeyUpdate {
            limits: limits_from(&form, &current.key.limits)?,
            pools,
        })
    });
    let update = match update {
        Ok(update) => update,
        Err(problem) => {
            return key_page(
                &state,
                &visitor,
                &id,
                refused(StatusCode::UNPROCESSABLE_ENTITY, problem),
            )
            .await;
        }
    };
    let precondition = form
        .value("revision")
        .parse::<u64>()
        .ok()
        .map(|revision| Precondition::AtRevision(vec![revision]));
    let updated = state
        .admin
        .store
        .update_key(&visitor.actor, &name, update, precondition.as_ref())
        .await;
    match updated {
        Ok(_) => see(&format!("/ui/keys/{name}?saved=1")),
        Err(StoreError::PreconditionFailed { .. }) => {
            let page = KeyView {
                status: StatusCode::CONFLICT,
                draft: None,
                saved: false,
                conflict: true,
            };
            key_page(&state, &visitor, &id, page).await
        }
        Err(error) => match refusal(error) {
            Ok(api) => {
                let problem = Problem::from_api(&api, key_field);
                key_page(&state, &visitor, &id, refused(api.status(), problem)).await
            }
            Err(page) => *page,
        },
    }
}

pub(crate) async fn confirm_revoke(
    Extension(visitor): Extension<Visitor>,
    Path(id): Path<String>,
) -> Response {
    view::ok(&ConfirmPage {
        chrome: Chrome::for_visitor(&visitor, "keys"),
        title: format!("Revoke client key {id}?"),
        message: "Clients using this key are refused as soon as the proxies receive the change. \
                  This cannot be undone: a new key would have a new secret."
            .to_owned(),
        action: format!("/ui/keys/{id}/revoke"),
        button: "Revoke key".to_owned(),
        back: format!("/ui/keys/{id}"),
    })
}

pub(crate) async fn revoke(
    State(state): State<ConsoleState>,
    Extension(visitor): Extension<Visitor>,
    Path(id): Path<String>,
) -> Response {
    let Ok(name) = Name::try_from(id.as_str()) else {
        return view::not_found(format!("There is no client key {id}."));
    };
    let removed = state
        .admin
        .store
        .delete_key(&visitor.actor, &name, None)
        .await;
    removal_outcome(
        removed,
        "/ui/keys",
        "The key was not revoked",
        (&format!("/ui/keys/{name}"), "Back to the key"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_read_back_from_the_form() {
        let form = Form::parse(
            b"requests_per_minute=600&tokens_per_minute=&quota_tokens=5000&quota_period=day\
              &budget_usd=12.5&budget_period=month",
        );
        let limits = limits_from(&form, &Limits::default()).unwrap();
        assert_eq!(limits.requests_per_minute.unwrap().get(), 600);
        assert_eq!(limits.tokens_per_minute, None);
        assert_eq!(limits.token_quota.unwrap().period, Period::Day);
        assert_eq!(limits.budget.unwrap().usd.micros(), 12_500_000);
        assert_eq!(usd(limits.budget.unwrap().usd), "$12.50");
        assert_eq!(
            limits_summary(&limits),
            "600 requests/min · 5000 tokens/day · $12.50/month"
        );
    }

    #[test]
    fn bad_limits_point_at_their_field() {
        let problem =
            limits_from(&Form::parse(b"requests_per_minute=0"), &Limits::default()).unwrap_err();
        assert_eq!(problem.field, "requests_per_minute");
        assert!(problem.message.contains("between 1 and"), "{problem:?}");
        let problem =
            limits_from(&Form::parse(b"quota_tokens=lots"), &Limits::default()).unwrap_err();
        assert_eq!(problem.field, "quota_tokens");
        let problem = limits_from(
            &Form::parse(b"budget_usd=-5&budget_period=day"),
            &Limits::default(),
        )
        .unwrap_err();
        assert_eq!(problem.field, "budget_usd");
    }
}
