//! The fake Key Vault's HTTP side: which vault (`Host`), challenge-based auth, `api-version`,
//! routes, and Key Vault's JSON shapes for secrets, pages and errors.
//!
//! Checks run in the order a client meets them on the real service: outage, vault, token,
//! `api-version`, method, then the resource. The SDK's first request carries no token on
//! purpose and must get the `WWW-Authenticate` challenge that tells it which scope to ask for.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE, HOST, HeaderMap, WWW_AUTHENTICATE};
use axum::http::request::Parts;
use axum::http::{HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::keyvault::{
    SUPPORTED_API_VERSIONS, VAULT_DOMAIN, VAULT_RESOURCE, VAULT_SCOPE, VaultRequest, VaultShared,
};
use super::random::random_hex;
use super::tokens::TokenCheck;
use super::vault_store::{KeyVaultError, SecretVersion, check_secret_name};

/// Key Vault's page size when `maxresults` is absent, and its maximum.
const PAGE_SIZE: usize = 25;
const LATEST_API_VERSION: &str = "2025-07-01";

pub(crate) fn router(shared: Arc<VaultShared>) -> Router {
    Router::new().fallback(handle).with_state(shared)
}

async fn handle(State(shared): State<Arc<VaultShared>>, request: Request) -> Response {
    // Only GETs are served, so the body is never read.
    let (parts, _body) = request.into_parts();
    let host = host_of(&parts);
    let vault = host.as_deref().and_then(vault_of_host);
    let token = bearer_token(&parts.headers);
    let reply = answer(&shared, &parts, host.as_deref(), vault.as_deref(), token);
    shared.log.record(VaultRequest {
        method: parts.method.to_string(),
        path: parts.uri.path().to_owned(),
        query: parts.uri.query().map(str::to_owned),
        vault,
        bearer_token: token.is_some(),
        status: reply.status.as_u16(),
    });
    reply.into_response()
}

/// The answer to one request; every early `Err` is an error answer.
fn answer(
    shared: &VaultShared,
    parts: &Parts,
    host: Option<&str>,
    vault: Option<&str>,
    token: Option<&str>,
) -> Reply {
    try_answer(shared, parts, host, vault, token).unwrap_or_else(|error| error)
}

fn try_answer(
    shared: &VaultShared,
    parts: &Parts,
    host: Option<&str>,
    vault: Option<&str>,
    token: Option<&str>,
) -> Result<Reply, Reply> {
    if shared.down.load(Ordering::Relaxed) {
        return Err(Reply::error(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailable",
            "The service is temporarily unavailable. (The fake Key Vault is down: \
             FakeKeyVault::set_down.)",
        ));
    }
    let vault = existing_vault(shared, host, vault)?;
    authorize(shared, token)?;
    let query = Query(parts.uri.query().unwrap_or_default());
    let api_version = api_version(&query)?;
    let route = route(parts)?;
    let vault_host = format!("{vault}.{VAULT_DOMAIN}");
    let items = match route {
        Route::Latest(name) => return Ok(get_secret(shared, &vault_host, vault, name, None)),
        Route::Version(name, version) => {
            return Ok(get_secret(shared, &vault_host, vault, name, Some(version)));
        }
        Route::Versions(name) => shared.store.versions(vault, name),
        Route::List => shared.store.latest_of_each(vault),
    };
    let page = Page::from_query(&query).map_err(|message| Reply::bad_parameter(&message))?;
    let with_version = matches!(route, Route::Versions(_));
    let items = items
        .map_err(|error| Reply::from_store(&error))?
        .iter()
        .map(|secret| item_json(&vault_host, secret, with_version))
        .collect();
    let link_host = host.unwrap_or(&vault_host);
    Ok(page.render(items, link_host, parts.uri.path(), &api_version))
}

/// The vault the host names, if the fake holds it.
fn existing_vault<'a>(
    shared: &VaultShared,
    host: Option<&str>,
    vault: Option<&'a str>,
) -> Result<&'a str, Reply> {
    let Some(vault) = vault else {
        return Err(Reply::error(
            StatusCode::NOT_FOUND,
            "VaultNotFound",
            &format!("Host {host:?} does not name a vault: expected {{vault}}.{VAULT_DOMAIN}."),
        ));
    };
    if !shared.store.has_vault(vault) {
        let known = shared.store.vault_names().join(", ");
        return Err(Reply::error(
            StatusCode::NOT_FOUND,
            "VaultNotFound",
            &format!("Vault '{vault}' does not exist in the fake Key Vault (known: [{known}])."),
        ));
    }
    Ok(vault)
}

fn api_version(query: &Query<'_>) -> Result<String, Reply> {
    match query.get("api-version") {
        Some(version) if SUPPORTED_API_VERSIONS.contains(&version.as_str()) => Ok(version),
        Some(version) => Err(Reply::bad_parameter(&format!(
            "The specified version ({version}) is not recognized. Consider using the latest \
             supported version ({LATEST_API_VERSION})."
        ))),
        None => Err(Reply::bad_parameter(&format!(
            "The api-version query parameter is missing. Consider using the latest supported \
             version ({LATEST_API_VERSION})."
        ))),
    }
}

/// A served path, read with GET, naming a well-formed secret.
fn route(parts: &Parts) -> Result<Route<'_>, Reply> {
    let path = parts.uri.path();
    let Some(route) = Route::parse(path) else {
        return Err(Reply::error(
            StatusCode::NOT_FOUND,
            "NotFound",
            &format!(
                "The fake Key Vault serves GET /secrets, /secrets/{{name}}[/], \
                 /secrets/{{name}}/versions and /secrets/{{name}}/{{version}}; not {path}."
            ),
        ));
    };
    if parts.method != Method::GET {
        return Err(Reply::error(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            &format!(
                "The fake Key Vault only reads over HTTP ({} given); tests change secrets with \
                 FakeKeyVault::set_secret.",
                parts.method
            ),
        ));
    }
    if let Some(name) = route.name()
        && check_secret_name(name).is_err()
    {
        return Err(Reply::bad_parameter(&format!(
            "The request URI contains an invalid name: {name}"
        )));
    }
    Ok(route)
}

/// Key Vault's challenge-based auth: anything short of a live vault token gets 401 with the
/// challenge, so the SDK (re)acquires a token for the scope it names and retries once.
fn authorize(shared: &VaultShared, token: Option<&str>) -> Result<(), Reply> {
    let message = match token.map(|token| shared.identity.check_token(token, VAULT_SCOPE)) {
        Some(TokenCheck::Valid) => return Ok(()),
        None => "AKV10000: Request is missing a Bearer or PoP token.".to_owned(),
        Some(TokenCheck::WrongScope(scope)) => {
            let resource = scope.strip_suffix("/.default").unwrap_or(&scope);
            format!("AKV10022: Invalid audience. Expected {VAULT_RESOURCE}, found: {resource}.")
        }
        Some(TokenCheck::Expired) => "The access token has expired.".to_owned(),
        Some(TokenCheck::Unknown) => {
            "The access token was not issued by the fake identity.".to_owned()
        }
    };
    let tenant = shared.identity.settings().tenant_id;
    let mut reply = Reply::error(StatusCode::UNAUTHORIZED, "Unauthorized", &message);
    reply.challenge = Some(format!(
        "Bearer authorization=\"https://login.microsoftonline.com/{tenant}\", \
         resource=\"{VAULT_RESOURCE}\""
    ));
    Err(reply)
}

fn get_secret(
    shared: &VaultShared,
    vault_host: &str,
    vault: &str,
    name: &str,
    version: Option<&str>,
) -> Reply {
    match shared.store.get(vault, name, version) {
        Ok(secret) if !secret.enabled => {
            let mut reply = Reply::error(
                StatusCode::FORBIDDEN,
                "Forbidden",
                "Operation get is not allowed on a disabled secret.",
            );
            reply.body["error"]["innererror"] = json!({ "code": "SecretDisabled" });
            reply
        }
        Ok(secret) => {
            let mut body = item_json(vault_host, &secret, true);
            body["value"] = Value::String(secret.value);
            Reply::ok(body)
        }
        Err(error) => Reply::from_store(&error),
    }
}

/// A secret without its value, as in lists; `with_version` puts the version in the id.
fn item_json(vault_host: &str, secret: &SecretVersion, with_version: bool) -> Value {
    let mut id = format!("https://{vault_host}/secrets/{}", secret.name);
    if with_version {
        id = format!("{id}/{}", secret.version);
    }
    json!({
        "id": id,
        "attributes": {
            "enabled": secret.enabled,
            "created": secret.created,
            "updated": secret.updated,
            "recoveryLevel": "Recoverable+Purgeable",
            "recoverableDays": 90,
        },
        "tags": {},
    })
}

/// The paths the fake serves. The SDK asks for the latest version as `/secrets/{name}/`
/// (an empty version segment); the slash is optional here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Route<'a> {
    List,
    Latest(&'a str),
    Versions(&'a str),
    Version(&'a str, &'a str),
}

impl<'a> Route<'a> {
    fn parse(path: &'a str) -> Option<Self> {
        let rest = path.strip_prefix("/secrets")?;
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.is_empty() {
            return Some(Self::List);
        }
        let mut segments = rest.strip_prefix('/')?.split('/');
        match (segments.next(), segments.next(), segments.next()) {
            (Some(name), None, None) => Some(Self::Latest(name)),
            (Some(name), Some("versions"), None) => Some(Self::Versions(name)),
            (Some(name), Some(version), None) => Some(Self::Version(name, version)),
            _ => None,
        }
    }

    fn name(self) -> Option<&'a str> {
        match self {
            Self::List => None,
            Self::Latest(name) | Self::Versions(name) | Self::Version(name, _) => Some(name),
        }
    }
}

/// Which slice of a list to answer: `maxresults` (1-25) and the `$skiptoken` of a nextLink.
#[derive(Debug, PartialEq, Eq)]
struct Page {
    size: usize,
    skip: usize,
}

impl Page {
    fn from_query(query: &Query<'_>) -> Result<Self, String> {
        let size = match query.get("maxresults") {
            None => PAGE_SIZE,
            Some(raw) => raw
                .parse()
                .ok()
                .filter(|size| (1..=PAGE_SIZE).contains(size))
                .ok_or_else(|| {
                    format!("Invalid maxresults {raw:?}: it must be an integer from 1 to 25.")
                })?,
        };
        let skip = match query.get("$skiptoken") {
            None => 0,
            Some(raw) => raw
                .parse()
                .map_err(|_| format!("Invalid $skiptoken {raw:?}."))?,
        };
        Ok(Self { size, skip })
    }

    /// `{"value":[…],"nextLink":…}`; the link keeps the host (and port) the client used.
    fn render(&self, items: Vec<Value>, host: &str, path: &str, api_version: &str) -> Reply {
        let end = self.skip.saturating_add(self.size);
        let next_link = (end < items.len()).then(|| {
            format!(
                "https://{host}{path}?api-version={api_version}&$skiptoken={end}&maxresults={}",
                self.size
            )
        });
        let value: Vec<Value> = items.into_iter().skip(self.skip).take(self.size).collect();
        Reply::ok(json!({ "value": value, "nextLink": next_link }))
    }
}

/// Query parameters, percent-decoded: the SDK re-encodes a nextLink's `$skiptoken` as
/// `%24skiptoken` when it sets `api-version` on it.
struct Query<'a>(&'a str);

impl Query<'_> {
    fn get(&self, wanted: &str) -> Option<String> {
        self.0
            .split('&')
            .filter_map(|pair| {
                let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
                (percent_decode(key) == wanted).then(|| percent_decode(value))
            })
            .next()
    }
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let decoded = match bytes[i] {
            b'+' => Some((b' ', 1)),
            b'%' => text
                .get(i + 1..i + 3)
                .and_then(|hex| u8::from_str_radix(hex, 16).ok())
                .map(|byte| (byte, 3)),
            _ => None,
        };
        let (byte, width) = decoded.unwrap_or((bytes[i], 1));
        out.push(byte);
        i += width;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `Host` (HTTP/1.1) or the URI authority (HTTP/2 `:authority`).
fn host_of(parts: &Parts) -> Option<String> {
    parts
        .headers
        .get(HOST)
        .and_then(|host| host.to_str().ok())
        .map(str::to_owned)
        .or_else(|| parts.uri.authority().map(|authority| authority.to_string()))
}

/// `myvault.vault.azure.net:8443` gives `myvault`.
fn vault_of_host(host: &str) -> Option<String> {
    let name = host.rsplit_once(':').map_or(host, |(name, port)| {
        if port.bytes().all(|b| b.is_ascii_digit()) {
            name
        } else {
            host
        }
    });
    let name = name.to_ascii_lowercase();
    let vault = name.strip_suffix(VAULT_DOMAIN)?.strip_suffix('.')?;
    (!vault.is_empty() && !vault.contains('.')).then(|| vault.to_owned())
}

fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .filter(|token| !token.is_empty())
}

/// An answer before it becomes a response.
#[derive(Debug)]
struct Reply {
    status: StatusCode,
    body: Value,
    challenge: Option<String>,
}

impl Reply {
    fn ok(body: Value) -> Self {
        Self {
            status: StatusCode::OK,
            body,
            challenge: None,
        }
    }

    fn error(status: StatusCode, code: &str, message: &str) -> Self {
        Self {
            status,
            body: json!({ "error": { "code": code, "message": message } }),
            challenge: None,
        }
    }

    fn bad_parameter(message: &str) -> Self {
        Self::error(StatusCode::BAD_REQUEST, "BadParameter", message)
    }

    fn from_store(error: &KeyVaultError) -> Self {
        const NOT_FOUND_HELP: &str = "was not found in this key vault. If you recently deleted \
            this secret you may be able to recover it using the correct recovery command. For \
            help resolving this issue, please see https://go.microsoft.com/fwlink/?linkid=2125182";
        match error {
            KeyVaultError::UnknownSecret { name, .. } => Self::error(
                StatusCode::NOT_FOUND,
                "SecretNotFound",
                &format!("A secret with (name/id) {name} {NOT_FOUND_HELP}"),
            ),
            KeyVaultError::UnknownVersion { name, version, .. } => Self::error(
                StatusCode::NOT_FOUND,
                "SecretNotFound",
                &format!("A secret with (name/id) {name}/{version} {NOT_FOUND_HELP}"),
            ),
            KeyVaultError::UnknownVault(_) => {
                Self::error(StatusCode::NOT_FOUND, "VaultNotFound", &error.to_string())
            }
            KeyVaultError::InvalidVaultName(_) | KeyVaultError::InvalidSecretName(_) => {
                Self::bad_parameter(&error.to_string())
            }
        }
    }
}

impl IntoResponse for Reply {
    fn into_response(self) -> Response {
        let mut response = (self.status, self.body.to_string()).into_response();
        let headers = response.headers_mut();
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/json; charset=utf-8"),
        );
        if let Ok(id) = HeaderValue::try_from(random_hex(32)) {
            headers.insert("x-ms-request-id", id);
        }
        headers.insert("x-ms-keyvault-region", HeaderValue::from_static("fake"));
        if let Some(challenge) = self.challenge.and_then(|c| HeaderValue::try_from(c).ok()) {
            headers.insert(WWW_AUTHENTICATE, challenge);
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_cover_what_the_sdk_sends() {
        assert_eq!(Route::parse("/secrets"), Some(Route::List));
        assert_eq!(Route::parse("/secrets/"), Some(Route::List));
        assert_eq!(Route::parse("/secrets/k/"), Some(Route::Latest("k")));
        assert_eq!(Route::parse("/secrets/k"), Some(Route::Latest("k")));
        assert_eq!(
            Route::parse("/secrets/k/versions"),
            Some(Route::Versions("k"))
        );
        assert_eq!(
            Route::parse("/secrets/k/abc"),
            Some(Route::Version("k", "abc"))
        );
        for other in [
            "/",
            "/keys/k",
            "/secretsx",
            "/secrets/k/v/extra",
            "/deletedsecrets",
        ] {
            assert_eq!(Route::parse(other), None, "{other}");
        }
    }

    #[test]
    fn vault_names_come_from_the_host() {
        assert_eq!(
            vault_of_host("myvault.vault.azure.net:4431").as_deref(),
            Some("myvault")
        );
        assert_eq!(
            vault_of_host("MyVault.Vault.Azure.Net").as_deref(),
            Some("myvault")
        );
        for other in [
            "vault.azure.net",
            "a.b.vault.azure.net",
            "127.0.0.1:80",
            "evilvault.azure.net",
        ] {
            assert_eq!(vault_of_host(other), None, "{other}");
        }
    }

    #[test]
    fn queries_are_decoded() {
        let query = Query("api-version=7.5&%24skiptoken=25&maxresults=3&x=a+b%2F");
        assert_eq!(query.get("api-version").as_deref(), Some("7.5"));
        assert_eq!(query.get("$skiptoken").as_deref(), Some("25"));
        assert_eq!(query.get("x").as_deref(), Some("a b/"));
        assert_eq!(query.get("missing"), None);
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
    }

    #[test]
    fn pages_are_bounded() {
        let page = |q| Page::from_query(&Query(q));
        assert_eq!(page(""), Ok(Page { size: 25, skip: 0 }));
        assert_eq!(
            page("maxresults=2&$skiptoken=4"),
            Ok(Page { size: 2, skip: 4 })
        );
        for bad in [
            "maxresults=0",
            "maxresults=26",
            "maxresults=x",
            "$skiptoken=-1",
        ] {
            assert!(page(bad).is_err(), "{bad}");
        }
        let items = (0..5).map(|i| json!(i)).collect();
        let reply =
            Page { size: 2, skip: 2 }.render(items, "v.vault.azure.net:1", "/secrets", "7.5");
        assert_eq!(reply.body["value"], json!([2, 3]));
        assert_eq!(
            reply.body["nextLink"],
            "https://v.vault.azure.net:1/secrets?api-version=7.5&$skiptoken=4&maxresults=2"
        );
    }
}
