//! The console's static files, embedded in the binary and served under names that change
//! with their content, so browsers may keep them for a year.

use std::sync::OnceLock;

use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

/// The vendored htmx release (see `control-plane/assets/README.md`).
pub(crate) const HTMX_VERSION: &str = "2.0.4";
const HTMX: &[u8] = include_bytes!("../../assets/htmx-2.0.4.min.js");
const HTMX_LICENSE: &[u8] = include_bytes!("../../assets/htmx-2.0.4.LICENSE");
const CSS: &[u8] = include_bytes!("../../assets/console.css");
const JS: &[u8] = include_bytes!("../../assets/console.js");

struct Asset {
    /// The file name in `/ui/assets/`, with a version or content hash in it.
    name: String,
    content_type: &'static str,
    body: &'static [u8],
}

fn hashed(stem: &str, extension: &str, body: &[u8]) -> String {
    let digest = Sha256::digest(body);
    let hash: String = digest[..6].iter().map(|b| format!("{b:02x}")).collect();
    format!("{stem}.{hash}.{extension}")
}

fn assets() -> &'static [Asset; 4] {
    static ASSETS: OnceLock<[Asset; 4]> = OnceLock::new();
    ASSETS.get_or_init(|| {
        [
            Asset {
                name: format!("htmx-{HTMX_VERSION}.min.js"),
                content_type: "text/javascript; charset=utf-8",
                body: HTMX,
            },
            Asset {
                name: format!("htmx-{HTMX_VERSION}.LICENSE.txt"),
                content_type: "text/plain; charset=utf-8",
                body: HTMX_LICENSE,
            },
            Asset {
                name: hashed("console", "css", CSS),
                content_type: "text/css; charset=utf-8",
                body: CSS,
            },
            Asset {
                name: hashed("console", "js", JS),
                content_type: "text/javascript; charset=utf-8",
                body: JS,
            },
        ]
    })
}

/// Where pages load each asset from.
pub(crate) struct AssetUrls {
    pub htmx: String,
    pub css: String,
    pub js: String,
}

pub(crate) fn urls() -> AssetUrls {
    let [htmx, _, css, js] = assets();
    let url = |asset: &Asset| format!("/ui/assets/{}", asset.name);
    AssetUrls {
        htmx: url(htmx),
        css: url(css),
        js: url(js),
    }
}

pub(crate) async fn serve(Path(file): Path<String>) -> Response {
    let Some(asset) = assets().iter().find(|a| a.name == file) else {
        return (StatusCode::NOT_FOUND, "no such asset").into_response();
    };
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static(asset.content_type),
            ),
            (
                header::CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=31536000, immutable"),
            ),
        ],
        asset.body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_carry_versions_and_content_hashes() {
        let urls = urls();
        assert_eq!(urls.htmx, "/ui/assets/htmx-2.0.4.min.js");
        assert!(urls.css.starts_with("/ui/assets/console.") && urls.css.ends_with(".css"));
        assert_eq!(urls.css.len(), "/ui/assets/console.0123456789ab.css".len());
        assert_ne!(hashed("a", "css", b"x"), hashed("a", "css", b"y"));
    }
}
