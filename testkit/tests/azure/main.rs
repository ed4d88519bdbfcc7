//! The fake Azure driven by the real Azure SDK (`azure_identity`,
//! `azure_security_keyvault_secrets`) and by raw requests, over HTTPS on ephemeral ports.

mod raw_identity;
mod raw_keyvault;
mod sdk_identity;
mod sdk_secrets;
mod support;
