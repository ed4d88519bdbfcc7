//! A pool's backends: adding one, switching it on and off, its weight and priority, removal.
//! Edits carry the revision the page showed, so a change made meanwhile by someone else is
//! not silently overwritten.

use axum::Extension;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{Map, Value, json};

use sluice_model::{Backend, Name, Weight};

use super::number_field;
use super::pools::{ConfirmPage, PoolView, pool_page};
use super::{refusal, see};
use crate::admin::{ApiError, parse_json};
use crate::console::ConsoleState;
use crate::console::form::{Draft, Form, Problem};
use crate::console::session::Visitor;
use crate::console::view::{self, Chrome};
use crate::store::{Precondition, StoreError};

/// The API's field path for a backend, as the form's field.
fn backend_field(path: &str) -> &'static str {
    match path.split(['.', '[']).next().unwrap_or("") {
        "name" => "name",
        "url" => "url",
        "kind" => "kind",
        "auth" if path.contains("secret") => "secret",
        "auth" => "auth",
        "deployments" => "deployments",
        "weight" => "weight",
        "priority" => "priority",
        "api_version" => "api_version",
        _ => "",
    }
}

/// `client-name = backend-name`, one per line.
fn deployments(raw: &str) -> Result<Map<String, Value>, Problem> {
    let mut map = Map::new();
    for line in raw.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let Some((from, to)) = line.split_once('=') else {
            return Err(Problem::new(
                "deployments",
                "write one mapping per line as client-name = backend-name",
            ));
        };
        map.insert(from.trim().to_owned(), json!(to.trim()));
    }
    Ok(map)
}

fn backend_from(form: &Form) -> Result<Backend, Problem> {
    let mut body = Map::new();
    body.insert("name".into(), json!(form.value("name")));
    body.insert("url".into(), json!(form.value("url")));
    body.insert("kind".into(), json!(form.value("kind")));
    let mut auth = Map::new();
    auth.insert("type".into(), json!(form.value("auth")));
    if !form.value("secret").is_empty() || form.value("auth") == "api_key" {
        auth.insert("secret".into(), json!(form.value("secret")));
    }
    body.insert("auth".into(), Value::Object(auth));
    body.insert(
        "deployments".into(),
        Value::Object(deployments(form.value("deployments"))?),
    );
    for field in ["weight", "priority"] {
        if let Some(n) = number_field(form.value(field), field)? {
            body.insert(field.into(), n);
        }
    }
    if !form.value("api_version").is_empty() {
        body.insert("api_version".into(), json!(form.value("api_version")));
    }
    let bytes = serde_json::to_vec(&Value::Object(body)).unwrap_or_default();
    let backend: Backend = parse_json(&bytes).map_err(|e| Problem::from_api(&e, backend_field))?;
    backend
        .validate()
        .map_err(|e| Problem::from_api(&ApiError::from(e), backend_field))?;
    Ok(backend)
}

pub(crate) async fn create(
    State(state): State<ConsoleState>,
    Extension(visitor): Extension<Visitor>,
    Extension(form): Extension<Form>,
    Path(pool): Path<String>,
) -> Response {
    let refused = |status, problem| PoolView {
        status,
        draft: Draft::refused(form.clone(), problem),
        backend_problem: None,
    };
    let backend = match backend_from(&form) {
        Ok(backend) => backend,
        Err(problem) => {
            let page = refused(StatusCode::UNPROCESSABLE_ENTITY, problem);
            return pool_page(&state, &visitor, &pool, page).await;
        }
    };
    let Ok(pool_name) = Name::try_from(pool.as_str()) else {
        return view::not_found(format!("There is no pool named {pool}."));
    };
    let created = state
        .admin
        .store
        .create_backend(&visitor.actor, &pool_name, &backend)
        .await;
    match created {
        Ok(_) => see(&format!("/ui/pools/{pool_name}")),
        Err(error) => match refusal(error) {
            Ok(api) => {
                let mut problem = Problem::from_api(&api, backend_field);
                if problem.field.is_empty() && api.status() == StatusCode::CONFLICT {
                    problem.field = "name".to_owned();
                }
                pool_page(&state, &visitor, &pool, refused(api.status(), problem)).await
            }
            Err(page) => *page,
        },
    }
}

/// Applies `change` to the backend as it was at the revision the page showed.
async fn edit(
    state: &ConsoleState,
    visitor: &Visitor,
    form: &Form,
    pool: &str,
    backend: &str,
    change: impl FnOnce(&mut Backend) -> Result<(), String>,
) -> Response {
    let (Ok(pool_name), Ok(backend_name)) = (Name::try_from(pool), Name::try_from(backend)) else {
        return view::not_found(format!("There is no backend {backend} in pool {pool}."));
    };
    let problem = |message: String| PoolView {
        status: StatusCode::UNPROCESSABLE_ENTITY,
        backend_problem: Some((backend.to_owned(), message)),
        ..PoolView::default()
    };
    let precondition = form
        .value("revision")
        .parse::<u64>()
        .ok()
        .map(|revision| Precondition::AtRevision(vec![revision]));
    let store = &state.admin.store;
    let mut current = match store.get_backend(&pool_name, &backend_name).await {
        Ok(stored) => stored.value,
        Err(StoreError::NotFound(resource)) => {
            return view::not_found(format!("The {resource} does not exist."));
        }
        Err(error) => return view::store_failure(&error),
    };
    if let Err(message) = change(&mut current) {
        return pool_page(state, visitor, pool, problem(message)).await;
    }
    let replaced = store
        .replace_backend(&visitor.actor, &pool_name, &current, precondition.as_ref())
        .await;
    match replaced {
        Ok(_) => see(&format!("/ui/pools/{pool_name}")),
        Err(StoreError::PreconditionFailed { .. }) => {
            let message = "Someone changed this backend since the page was loaded; here it is \
                           as it is now. Make the change again if it still applies."
                .to_owned();
            let page = PoolView {
                status: StatusCode::CONFLICT,
                ..problem(message)
            };
            pool_page(state, visitor, pool, page).await
        }
        Err(error) => match refusal(error) {
            Ok(api) => pool_page(state, visitor, pool, problem(api.detail().message.clone())).await,
            Err(page) => *page,
        },
    }
}

pub(crate) async fn set_enabled(
    State(state): State<ConsoleState>,
    Extension(visitor): Extension<Visitor>,
    Extension(form): Extension<Form>,
    Path((pool, backend)): Path<(String, String)>,
) -> Response {
    let enabled = match form.value("enabled") {
        "true" => true,
        "false" => false,
        _ => {
            return view::failure(
                StatusCode::BAD_REQUEST,
                view::Failure::new("Bad request", "enabled must be true or false"),
            );
        }
    };
    edit(&state, &visitor, &form, &pool, &backend, |b| {
        b.enabled = enabled;
        Ok(())
    })
    .await
}

pub(crate) async fn set_balance(
    State(state): State<ConsoleState>,
    Extension(visitor): Extension<Visitor>,
    Extension(form): Extension<Form>,
    Path((pool, backend)): Path<(String, String)>,
) -> Response {
    let weight = form.value("weight").parse::<u32>().map_err(|_| ());
    let weight = weight.and_then(|w| Weight::try_from(w).map_err(|_| ()));
    let priority = form.value("priority").parse::<u32>();
    edit(&state, &visitor, &form, &pool, &backend, |b| {
        b.weight =
            weight.map_err(|()| "weight must be a whole number between 1 and 1000".to_owned())?;
        b.priority = priority.map_err(|_| {
            "priority must be a whole number, 0 or more (0 is tried first)".to_owned()
        })?;
        Ok(())
    })
    .await
}

pub(crate) async fn confirm_delete(
    Extension(visitor): Extension<Visitor>,
    Path((pool, backend)): Path<(String, String)>,
) -> Response {
    view::ok(&ConfirmPage {
        chrome: Chrome::for_visitor(&visitor, "pools"),
        title: format!("Remove backend {backend} from pool {pool}?"),
        message: "Proxies stop sending calls to it as soon as they receive the change.".to_owned(),
        action: format!("/ui/pools/{pool}/backends/{backend}/delete"),
        button: "Remove backend".to_owned(),
        back: format!("/ui/pools/{pool}"),
    })
}

pub(crate) async fn delete(
    State(state): State<ConsoleState>,
    Extension(visitor): Extension<Visitor>,
    Path((pool, backend)): Path<(String, String)>,
) -> Response {
    let (Ok(pool_name), Ok(backend_name)) = (
        Name::try_from(pool.as_str()),
        Name::try_from(backend.as_str()),
    ) else {
        return view::not_found(format!("There is no backend {backend} in pool {pool}."));
    };
    let deleted = state
        .admin
        .store
        .delete_backend(&visitor.actor, &pool_name, &backend_name, None)
        .await;
    match deleted {
        Ok(()) | Err(StoreError::NotFound(_)) => see(&format!("/ui/pools/{pool_name}")),
        Err(error) => match refusal(error) {
            Ok(api) => {
                pool_page(
                    &state,
                    &visitor,
                    &pool,
                    PoolView {
                        status: api.status(),
                        backend_problem: Some((backend, api.detail().message.clone())),
                        ..PoolView::default()
                    },
                )
                .await
            }
            Err(page) => *page,
        },
    }
}
