//! Pools: the list with a creation form, one pool with its backends, deletion.

use askama::Template;
use axum::Extension;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{Map, Value, json};

use sluice_model::{Backend, Name, Pool};

use super::pool_fleet::{self, PoolLive};
use super::{refusal, removal_outcome, see, usd_field};
use crate::admin::{ApiError, parse_json};
use crate::console::ConsoleState;
use crate::console::form::{Draft, Form, Problem};
use crate::console::session::Visitor;
use crate::console::view::{self, Chrome};
use crate::store::{Precondition, Stored};

pub(crate) struct PoolRow {
    pub name: String,
    pub strategy: &'static str,
    pub backends: usize,
    pub enabled: usize,
    pub priced: bool,
}

#[derive(Template)]
#[template(path = "console/pools.html")]
struct PoolsPage {
    chrome: Chrome,
    pools: Vec<PoolRow>,
    draft: Draft,
}

pub(crate) fn strategy_name(pool: &Pool) -> &'static str {
    match pool.strategy {
        sluice_model::Strategy::RoundRobin => "round_robin",
        sluice_model::Strategy::Weighted => "weighted",
        sluice_model::Strategy::LeastLatency => "least_latency",
    }
}

async fn pools_page(
    state: &ConsoleState,
    visitor: &Visitor,
    status: StatusCode,
    draft: Draft,
) -> Response {
    let pools = match state.admin.store.list_pools().await {
        Ok(pools) => pools,
        Err(error) => return view::store_failure(&error),
    };
    let pools = pools
        .into_iter()
        .map(|Stored { value: pool, .. }| PoolRow {
            strategy: strategy_name(&pool),
            backends: pool.backends.len(),
            enabled: pool.backends.iter().filter(|b| b.enabled).count(),
            priced: pool.price.is_some(),
            name: pool.name.to_string(),
        })
        .collect();
    view::render(
        status,
        &PoolsPage {
            chrome: Chrome::for_visitor(visitor, "pools"),
            pools,
            draft,
        },
    )
}

pub(crate) async fn list(
    State(state): State<ConsoleState>,
    Extension(visitor): Extension<Visitor>,
) -> Response {
    let draft = Draft::new(Form::with([("strategy", "round_robin".to_owned())]));
    pools_page(&state, &visitor, StatusCode::OK, draft).await
}

/// The API's field path for a pool, as the creation form's field.
fn pool_field(path: &str) -> &'static str {
    match path.split(['.', '[']).next().unwrap_or("") {
        "name" => "name",
        "strategy" => "strategy",
        "price" if path.contains("output") => "price_output",
        "price" => "price_input",
        _ => "",
    }
}

fn pool_from(form: &Form) -> Result<Pool, Problem> {
    let mut body = Map::new();
    body.insert("name".into(), json!(form.value("name")));
    body.insert("strategy".into(), json!(form.value("strategy")));
    let input = usd_field(form.value("price_input"), "price_input")?;
    let output = usd_field(form.value("price_output"), "price_output")?;
    match (input, output) {
        (None, None) => {}
        (Some(input), Some(output)) => {
            body.insert(
                "price".into(),
                json!({"input_per_1m_usd": input, "output_per_1m_usd": output}),
            );
        }
        (None, Some(_)) => return Err(Problem::new("price_input", "give both prices, or neither")),
        (Some(_), None) => {
            return Err(Problem::new("price_output", "give both prices, or neither"));
        }
    }
    let bytes = serde_json::to_vec(&Value::Object(body)).unwrap_or_default();
    let pool: Pool = parse_json(&bytes).map_err(|e| Problem::from_api(&e, pool_field))?;
    pool.validate()
        .map_err(|e| Problem::from_api(&ApiError::from(e), pool_field))?;
    Ok(pool)
}

pub(crate) async fn create(
    State(state): State<ConsoleState>,
    Extension(visitor): Extension<Visitor>,
    Extension(form): Extension<Form>,
) -> Response {
    let pool = match pool_from(&form) {
        Ok(pool) => pool,
        Err(problem) => {
            return pools_page(
                &state,
                &visitor,
                StatusCode::UNPROCESSABLE_ENTITY,
                Draft::refused(form, problem),
            )
            .await;
        }
    };
    match state.admin.store.create_pool(&visitor.actor, &pool).await {
        Ok(_) => see(&format!("/ui/pools/{}", pool.name)),
        Err(error) => match refusal(error) {
            Ok(api) => {
                let problem = Problem::from_api(&api, pool_field);
                let problem = if problem.field.is_empty() && api.status() == StatusCode::CONFLICT {
                    Problem::new("name", api.detail().message.clone())
                } else {
                    problem
                };
                pools_page(
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

pub(crate) struct BackendRow {
    pub name: String,
    pub url: String,
    pub kind: &'static str,
    pub auth: String,
    pub deployments: String,
    pub weight: u32,
    pub priority: u32,
    pub enabled: bool,
    /// The backend's ETag revision: edits apply only to the backend as the page showed it.
    pub revision: u64,
}

impl BackendRow {
    fn of(
        Stored {
            value: backend,
            revision,
        }: &Stored<Backend>,
    ) -> Self {
        Self {
            revision: *revision,
            name: backend.name.to_string(),
            url: backend.url.to_string(),
            kind: match backend.kind {
                sluice_model::BackendKind::AzureOpenai => "azure_openai",
                sluice_model::BackendKind::Openai => "openai",
            },
            auth: match &backend.auth {
                sluice_model::Auth::ApiKey { secret } => format!("key from {secret}"),
                sluice_model::Auth::EntraId {} => "Entra ID".to_owned(),
                sluice_model::Auth::None {} => "none".to_owned(),
            },
            deployments: backend
                .deployments
                .iter()
                .map(|(from, to)| format!("{from} → {to}"))
                .collect::<Vec<_>>()
                .join(", "),
            weight: backend.weight.get(),
            priority: backend.priority,
            enabled: backend.enabled,
        }
    }
}

#[derive(Template)]
#[template(path = "console/pool.html")]
struct PoolPage {
    chrome: Chrome,
    name: String,
    strategy: &'static str,
    price: Option<String>,
    /// The pool's ETag revision (its last change, or any of its backends').
    revision: u64,
    backends: Vec<BackendRow>,
    live: PoolLive,
    /// A refused change to one backend: its name and why.
    backend_problem: Option<(String, String)>,
    draft: Draft,
}

impl PoolPage {
    pub fn problem_for(&self, backend: &str) -> Option<&str> {
        self.backend_problem
            .as_ref()
            .filter(|(name, _)| name == backend)
            .map(|(_, message)| message.as_str())
    }
}

pub(crate) struct PoolView {
    pub status: StatusCode,
    pub draft: Draft,
    pub backend_problem: Option<(String, String)>,
}

impl Default for PoolView {
    fn default() -> Self {
        Self {
            status: StatusCode::OK,
            draft: Draft::new(Form::with([
                ("kind", "azure_openai".to_owned()),
                ("auth", "api_key".to_owned()),
                ("weight", "1".to_owned()),
                ("priority", "0".to_owned()),
            ])),
            backend_problem: None,
        }
    }
}

pub(crate) async fn pool_page(
    state: &ConsoleState,
    visitor: &Visitor,
    name: &str,
    view_state: PoolView,
) -> Response {
    let Ok(name) = Name::try_from(name) else {
        return view::not_found(format!("There is no pool named {name}."));
    };
    let stored = match state.admin.store.get_pool(&name).await {
        Ok(stored) => stored,
        Err(crate::store::StoreError::NotFound(resource)) => {
            return view::not_found(format!("The {resource} does not exist."));
        }
        Err(error) => return view::store_failure(&error),
    };
    let backends = match state.admin.store.list_backends(&name).await {
        Ok(backends) => backends,
        Err(error) => return view::store_failure(&error),
    };
    let live = match pool_fleet::read(state, &name).await {
        Ok(live) => live,
        Err(error) => return view::store_failure(&error),
    };
    let pool = stored.value;
    view::render(
        view_state.status,
        &PoolPage {
            chrome: Chrome::for_visitor(visitor, "pools"),
            strategy: strategy_name(&pool),
            price: pool.price.map(|p| {
                format!(
                    "{} in, {} out per million tokens",
                    p.input_per_1m_usd, p.output_per_1m_usd
                )
            }),
            name: pool.name.to_string(),
            revision: stored.revision,
            backends: backends.iter().map(BackendRow::of).collect(),
            live,
            backend_problem: view_state.backend_problem,
            draft: view_state.draft,
        },
    )
}

pub(crate) async fn detail(
    State(state): State<ConsoleState>,
    Extension(visitor): Extension<Visitor>,
    Path(pool): Path<String>,
) -> Response {
    pool_page(&state, &visitor, &pool, PoolView::default()).await
}

#[derive(Template)]
#[template(path = "console/confirm.html")]
pub(crate) struct ConfirmPage {
    pub chrome: Chrome,
    pub title: String,
    pub message: String,
    pub action: String,
    pub button: String,
    pub back: String,
}

pub(crate) async fn confirm_delete(
    State(_): State<ConsoleState>,
    Extension(visitor): Extension<Visitor>,
    Path(pool): Path<String>,
) -> Response {
    view::ok(&ConfirmPage {
        chrome: Chrome::for_visitor(&visitor, "pools"),
        title: format!("Delete pool {pool}?"),
        message: "The pool and all its backends are removed from every proxy at once; clients \
                  calling it get 404 from then on."
            .to_owned(),
        action: format!("/ui/pools/{pool}/delete"),
        button: "Delete pool".to_owned(),
        back: format!("/ui/pools/{pool}"),
    })
}

pub(crate) async fn delete(
    State(state): State<ConsoleState>,
    Extension(visitor): Extension<Visitor>,
    Path(pool): Path<String>,
) -> Response {
    let Ok(name) = Name::try_from(pool.as_str()) else {
        return view::not_found(format!("There is no pool named {pool}."));
    };
    let removed = state
        .admin
        .store
        .delete_pool(&visitor.actor, &name, None::<&Precondition>)
        .await;
    removal_outcome(
        removed,
        "/ui/pools",
        "The pool was not deleted",
        (&format!("/ui/pools/{name}"), "Back to the pool"),
    )
}
