//! `POST /{tenant}/oauth2/v2.0/token`, the client-credentials grant as Entra ID answers it.
//!
//! `ClientSecretCredential` sends `client_secret`; `WorkloadIdentityCredential` (through
//! `ClientAssertionCredential`) sends the federated token file's content as
//! `client_assertion` with the JWT-bearer assertion type. Errors carry Entra's shape
//! (`error`, `error_description` starting `AADSTS…` and ending with `\r\nTrace ID: …`,
//! `error_codes`). Note azure_identity 1.0.0 cannot parse such a description (it borrows it
//! as `&str`, and `\r\n` is a JSON escape): its credential error then holds the AADSTS text
//! inside a `DataConversion` error, with neither status nor code, exactly as against Entra.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::rejection::FormRejection;
use axum::extract::{Form, Path, State};
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE, PRAGMA};
use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use super::identity::{IdentitySettings, IdentityShared};
use super::random::random_hex;

const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

pub(crate) fn router(shared: Arc<IdentityShared>) -> Router {
    Router::new()
        .route(
            "/{tenant}/oauth2/v2.0/token",
            post(token).fallback(wrong_method),
        )
        .fallback(not_found)
        .with_state(shared)
}

/// The form fields the fake looks at; any others are ignored, as Entra ignores extras.
#[derive(Debug, Default, Deserialize)]
struct TokenForm {
    grant_type: Option<String>,
    client_id: Option<String>,
    scope: Option<String>,
    client_secret: Option<String>,
    client_assertion: Option<String>,
    client_assertion_type: Option<String>,
}

/// What a successful grant is for.
#[derive(Debug, PartialEq)]
struct Grant {
    scope: String,
    client_id: String,
    lifetime: Duration,
}

async fn token(
    State(shared): State<Arc<IdentityShared>>,
    Path(tenant): Path<String>,
    form: Result<Form<TokenForm>, FormRejection>,
) -> Response {
    shared.count_token_request();
    if shared.is_down() {
        return AadError::unavailable().into_response();
    }
    // No form (wrong content type, unparsable body) reads to Entra as missing fields.
    let form = form.map(|Form(form)| form).unwrap_or_default();
    match grant(&shared.settings(), &tenant, form) {
        Ok(grant) => {
            let issued = shared.issue(&grant.scope, &grant.client_id, grant.lifetime);
            let seconds = grant.lifetime.as_secs();
            let body = json!({
                "token_type": "Bearer",
                "expires_in": seconds,
                "ext_expires_in": seconds,
                "access_token": issued.token,
            });
            (no_store_headers(), Json(body)).into_response()
        }
        Err(error) => error.into_response(),
    }
}

/// Decides a token request, checking in Entra's order: tenant, grant type, client, scope,
/// then the client's credential.
fn grant(settings: &IdentitySettings, tenant: &str, form: TokenForm) -> Result<Grant, AadError> {
    if !tenant.eq_ignore_ascii_case(&settings.tenant_id) {
        return Err(AadError::unknown_tenant(tenant));
    }
    match non_empty(form.grant_type) {
        None => return Err(AadError::missing("grant_type")),
        Some(grant_type) if grant_type != "client_credentials" => {
            return Err(AadError::unsupported_grant_type(&grant_type));
        }
        Some(_) => {}
    }
    let client_id = non_empty(form.client_id).ok_or_else(|| AadError::missing("client_id"))?;
    if !client_id.eq_ignore_ascii_case(&settings.client_id) {
        return Err(AadError::unknown_client(&client_id, tenant));
    }
    let scope = non_empty(form.scope).ok_or_else(|| AadError::missing("scope"))?;
    if scope.split_whitespace().count() != 1 || !scope.ends_with("/.default") {
        return Err(AadError::invalid_scope(&scope));
    }
    let secret = non_empty(form.client_secret);
    let assertion = non_empty(form.client_assertion);
    match (secret, assertion) {
        (Some(_), Some(_)) => return Err(AadError::two_credentials()),
        (None, None) => return Err(AadError::missing_credential()),
        (Some(secret), None) if secret != settings.client_secret => {
            return Err(AadError::invalid_secret(&client_id));
        }
        (None, Some(_)) if form.client_assertion_type.as_deref() != Some(ASSERTION_TYPE) => {
            return Err(AadError::invalid_assertion_type(
                form.client_assertion_type.as_deref(),
            ));
        }
        _ => {}
    }
    Ok(Grant {
        scope,
        client_id,
        lifetime: settings.token_lifetime,
    })
}

/// Entra treats `field=` like an absent field.
fn non_empty(value: Option<String>) -> Option<String> {
    value.filter(|value| !value.is_empty())
}

fn no_store_headers() -> [(axum::http::HeaderName, &'static str); 2] {
    [(CACHE_CONTROL, "no-store, no-cache"), (PRAGMA, "no-cache")]
}

async fn wrong_method(method: Method) -> Response {
    AadError::new(
        StatusCode::BAD_REQUEST,
        "invalid_request",
        Some(900561),
        format!("The endpoint only accepts POST, OPTIONS requests. Received a {method} request."),
    )
    .into_response()
}

async fn not_found(uri: Uri) -> Response {
    let message = format!(
        "the fake identity serves only POST /{{tenant}}/oauth2/v2.0/token, not {}",
        uri.path()
    );
    AadError::new(StatusCode::NOT_FOUND, "not_found", None, message).into_response()
}

/// An Entra ID error answer.
#[derive(Debug, PartialEq)]
struct AadError {
    status: StatusCode,
    error: &'static str,
    code: Option<u32>,
    description: String,
}

impl AadError {
    fn new(
        status: StatusCode,
        error: &'static str,
        code: Option<u32>,
        description: String,
    ) -> Self {
        let description = match code {
            Some(code) => format!("AADSTS{code}: {description}"),
            None => description,
        };
        Self {
            status,
            error,
            code,
            description,
        }
    }

    fn unavailable() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "temporarily_unavailable",
            Some(90033),
            "A transient error has occurred. Please try again. (The fake identity is down: \
             FakeIdentity::set_down.)"
                .to_owned(),
        )
    }

    fn unknown_tenant(tenant: &str) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            Some(90002),
            format!(
                "Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID \
                 and are signing into the correct cloud."
            ),
        )
    }

    fn missing(field: &str) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            Some(900144),
            format!("The request body must contain the following parameter: '{field}'."),
        )
    }

    fn unsupported_grant_type(grant_type: &str) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            Some(70003),
            format!("The app requested an unsupported grant type '{grant_type}'."),
        )
    }

    fn unknown_client(client_id: &str, tenant: &str) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "unauthorized_client",
            Some(700016),
            format!(
                "Application with identifier '{client_id}' was not found in the directory \
                 '{tenant}'. This can happen if the application has not been installed by the \
                 administrator of the tenant or consented to by any user in the tenant. You may \
                 have sent your authentication request to the wrong tenant."
            ),
        )
    }

    fn invalid_scope(scope: &str) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            Some(1002012),
            format!(
                "The provided value for scope {scope} is not valid. Client credential flows \
                 must have a scope value with /.default suffixed to the resource identifier \
                 (application ID URI)."
            ),
        )
    }

    fn missing_credential() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            Some(7000218),
            "The request body must contain the following parameter: 'client_assertion' or \
             'client_secret'."
                .to_owned(),
        )
    }

    fn two_credentials() -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            None,
            "Send either client_secret or client_assertion, not both.".to_owned(),
        )
    }

    fn invalid_secret(client_id: &str) -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            Some(7000215),
            format!(
                "Invalid client secret provided. Ensure the secret being sent in the request is \
                 the client secret value, not the client secret ID, for a secret added to app \
                 '{client_id}'."
            ),
        )
    }

    fn invalid_assertion_type(got: Option<&str>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            None,
            format!("client_assertion_type must be '{ASSERTION_TYPE}', got {got:?}."),
        )
    }
}

impl IntoResponse for AadError {
    fn into_response(self) -> Response {
        let trace_id = uuid_like();
        let correlation_id = uuid_like();
        let timestamp = timestamp();
        let description = format!(
            "{}\r\nTrace ID: {trace_id}\r\nCorrelation ID: {correlation_id}\r\nTimestamp: {timestamp}",
            self.description
        );
        let body = json!({
            "error": self.error,
            "error_description": description,
            "error_codes": self.code.into_iter().collect::<Vec<_>>(),
            "timestamp": timestamp,
            "trace_id": trace_id,
            "correlation_id": correlation_id,
            "error_uri": self
                .code
                .map(|code| format!("https://login.microsoftonline.com/error?code={code}")),
        });
        let mut response = (self.status, no_store_headers(), Json(body)).into_response();
        // Entra says charset explicitly; some clients care.
        if let Ok(value) = "application/json; charset=utf-8".parse() {
            response.headers_mut().insert(CONTENT_TYPE, value);
        }
        response
    }
}

fn uuid_like() -> String {
    let hex = random_hex(32);
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

/// Entra's `2024-05-01 12:34:56Z` format.
fn timestamp() -> String {
    let now = time::OffsetDateTime::now_utc();
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}Z",
        now.year(),
        u8::from(now.month()),
        now.day(),
        now.hour(),
        now.minute(),
        now.second()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const VAULT: &str = "https://vault.azure.net/.default";

    fn settings() -> IdentitySettings {
        IdentitySettings::default()
    }

    fn secret_form(settings: &IdentitySettings) -> TokenForm {
        TokenForm {
            grant_type: Some("client_credentials".to_owned()),
            client_id: Some(settings.client_id.clone()),
            scope: Some(VAULT.to_owned()),
            client_secret: Some(settings.client_secret.clone()),
            ..TokenForm::default()
        }
    }

    fn assertion_form(settings: &IdentitySettings, assertion: &str) -> TokenForm {
        TokenForm {
            client_secret: None,
            client_assertion: Some(assertion.to_owned()),
            client_assertion_type: Some(ASSERTION_TYPE.to_owned()),
            ..secret_form(settings)
        }
    }

    fn code_of(result: Result<Grant, AadError>) -> (StatusCode, &'static str, Option<u32>) {
        let error = result.expect_err("refused");
        (error.status, error.error, error.code)
    }

    #[test]
    fn grants_a_secret_or_an_assertion() {
        let s = settings();
        let granted = grant(&s, &s.tenant_id, secret_form(&s)).expect("secret accepted");
        assert_eq!(granted.scope, VAULT);
        assert_eq!(granted.lifetime, s.token_lifetime);
        // Tenant and client ids are GUIDs: Entra compares them ignoring case.
        let tenant_upper = s.tenant_id.to_uppercase();
        assert!(grant(&s, &tenant_upper, assertion_form(&s, "eyJ.a.b")).is_ok());
    }

    #[test]
    fn every_bad_request_gets_its_entra_error() {
        let s = settings();
        let t = s.tenant_id.as_str();
        let unknown_tenant = code_of(grant(&s, "other-tenant", secret_form(&s)));
        assert_eq!(
            unknown_tenant,
            (StatusCode::BAD_REQUEST, "invalid_request", Some(90002))
        );

        let no_grant = TokenForm {
            grant_type: None,
            ..secret_form(&s)
        };
        assert_eq!(code_of(grant(&s, t, no_grant)).2, Some(900144));
        let password = TokenForm {
            grant_type: Some("password".to_owned()),
            ..secret_form(&s)
        };
        assert_eq!(
            code_of(grant(&s, t, password)),
            (
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                Some(70003)
            )
        );

        let stranger = TokenForm {
            client_id: Some("someone-else".to_owned()),
            ..secret_form(&s)
        };
        assert_eq!(
            code_of(grant(&s, t, stranger)),
            (StatusCode::BAD_REQUEST, "unauthorized_client", Some(700016))
        );

        let no_scope = TokenForm {
            scope: Some(String::new()),
            ..secret_form(&s)
        };
        assert_eq!(code_of(grant(&s, t, no_scope)).2, Some(900144));
        for scope in ["https://vault.azure.net", "a/.default b/.default"] {
            let bad_scope = TokenForm {
                scope: Some(scope.to_owned()),
                ..secret_form(&s)
            };
            assert_eq!(
                code_of(grant(&s, t, bad_scope)),
                (StatusCode::BAD_REQUEST, "invalid_scope", Some(1002012)),
                "{scope}"
            );
        }

        let wrong_secret = TokenForm {
            client_secret: Some("guess".to_owned()),
            ..secret_form(&s)
        };
        assert_eq!(
            code_of(grant(&s, t, wrong_secret)),
            (StatusCode::UNAUTHORIZED, "invalid_client", Some(7000215))
        );

        let empty_assertion = assertion_form(&s, "");
        assert_eq!(
            code_of(grant(&s, t, empty_assertion)),
            (StatusCode::UNAUTHORIZED, "invalid_client", Some(7000218))
        );
        let wrong_type = TokenForm {
            client_assertion_type: Some("jwt".to_owned()),
            ..assertion_form(&s, "eyJ.a.b")
        };
        assert_eq!(code_of(grant(&s, t, wrong_type)).0, StatusCode::BAD_REQUEST);
        let both = TokenForm {
            client_secret: Some(s.client_secret.clone()),
            ..assertion_form(&s, "eyJ.a.b")
        };
        assert_eq!(code_of(grant(&s, t, both)).0, StatusCode::BAD_REQUEST);
    }

    #[test]
    fn errors_carry_the_code_in_the_description() {
        let error = AadError::missing("scope");
        assert!(error.description.starts_with("AADSTS900144: "));
        assert!(timestamp().ends_with('Z'));
        assert_eq!(uuid_like().len(), 36);
    }
}
