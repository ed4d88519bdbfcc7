//! OpenAPI schemas for the self-validating string types, so the published document states
//! the same rules the parsers enforce.

use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{ObjectBuilder, Schema, SchemaFormat, Type};
use utoipa::{PartialSchema, ToSchema};

use crate::{ApiVersion, BackendUrl, DeploymentName, KeyHash, Name, SecretRef};

fn string_schema(pattern: &str, description: &str, example: &str) -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .pattern(Some(pattern))
        .description(Some(description))
        .examples([example])
}

macro_rules! string_schema {
    ($ty:ty, $build:expr) => {
        impl PartialSchema for $ty {
            fn schema() -> RefOr<Schema> {
                $build.into()
            }
        }

        impl ToSchema for $ty {}
    };
}

string_schema!(
    Name,
    string_schema(Name::PATTERN, "Resource name", "gpt-4o")
);
string_schema!(
    SecretRef,
    string_schema(
        SecretRef::PATTERN,
        "Secret reference: keyvault://VAULT/NAME[/VERSION], env://VAR or file:///path. Never a key value.",
        "keyvault://my-vault/aoai-eastus-key",
    )
);
string_schema!(
    BackendUrl,
    string_schema(
        "^https?://[^?#@]+$",
        "Base URL: http or https, a host and an optional path prefix",
        "https://aoai-eastus.openai.azure.com",
    )
    .format(Some(SchemaFormat::Custom("uri".into())))
);
string_schema!(
    DeploymentName,
    string_schema(
        DeploymentName::PATTERN,
        "Deployment or model name",
        "gpt-4o"
    )
);
string_schema!(
    ApiVersion,
    string_schema(
        ApiVersion::PATTERN,
        "Azure OpenAI api-version",
        ApiVersion::DEFAULT
    )
);
string_schema!(
    KeyHash,
    string_schema(
        "^sha256\\$[A-Za-z0-9_-]+\\$[A-Za-z0-9_-]+$",
        "Salted SHA-256 of a client key (sha256$SALT$DIGEST, base64url); never the key",
        "sha256$3q2-7w$5kR1",
    )
);
