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
/// The vendored uPlot release, for the usage charts (same README).
pub(crate) const UPLOT_VERSION: &str = "1.6.32";
const UPLOT: &[u8] = include_bytes!("../../assets/uplot-1.6.32.min.js");
const UPLOT_CSS: &[u8] = include_bytes!("../../assets/uplot-1.6.32.min.css");
const UPLOT_LICENSE: &[u8] = include_bytes!("../../assets/uplot-1.6.32.LICENSE");
const CSS: &[u8] = include_bytes!("../../assets/console.css");
const JS: &[u8] = include_bytes!("../../assets/console.js");
const CHART_JS: &[u8] = include_bytes!("../../assets/usage-chart.js");

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

const JAVASCRIPT: &str = "text/javascript; charset=utf-8";
const TEXT: &str = "text/plain; charset=utf-8";
const STYLESHEET: &str = "text/css; charset=utf-8";

fn assets() -> &'static [Asset; 8] {
    static ASSETS: OnceLock<[Asset; 8]> = OnceLock::new();
    ASSETS.get_or_init(|| {
        [
            Asset {
                name: format!("htmx-{HTMX_VERSION}.min.js"),
                content_type: JAVASCRIPT,
                body: HTMX,
            },
            Asset {
                name: format!("htmx-{HTMX_VERSION}.LICENSE.txt"),
                content_type: TEXT,
                body: HTMX_LICENSE,
            },
            Asset {
                name: hashed("console", "css", CSS),
                content_type: STYLESHEET,
                body: CSS,
            },
            Asset {
                name: hashed("console", "js", JS),
                content_type: JAVASCRIPT,
                body: JS,
            },
            Asset {
                name: format!("uplot-{UPLOT_VERSION}.min.js"),
                content_type: JAVASCRIPT,
                body: UPLOT,
            },
            Asset {
                name: format!("uplot-{UPLOT_VERSION}.min.css"),
                content_type: STYLESHEET,
                body: UPLOT_CSS,
            },
            Asset {
                name: format!("uplot-{UPLOT_VERSION}.LICENSE.txt"),
                content_type: TEXT,
                body: UPLOT_LICENSE,
            },
            Asset {
                name: hashed("usage-chart", "js", CHART_JS),
                content_type: JAVASCRIPT,
                body: CHART_JS,
            },
        ]
    })
}

/// Where pages load each asset from.
pub(crate) struct AssetUrls {
    pub htmx: String,
    pub css: String,
    pub js: String,
    /// Loaded by the usage page only.
    pub uplot: String,
    pub uplot_css: String,
    pub chart: String,
}

pub(crate) fn urls() -> AssetUrls {
    let [htmx, _, css, js, uplot, uplot_css, _, chart] = assets();
    let url = |asset: &Asset| format!("/ui/assets/{}", asset.name);
    AssetUrls {
        htmx: url(htmx),
        css: url(css),
        js: url(js),
        uplot: url(uplot),
        uplot_css: url(uplot_css),
        chart: url(chart),
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
        assert_eq!(urls.uplot, "/ui/assets/uplot-1.6.32.min.js");
        assert!(urls.chart.starts_with("/ui/assets/usage-chart.") && urls.chart.ends_with(".js"));
        assert!(urls.css.starts_with("/ui/assets/console.") && urls.css.ends_with(".css"));
        assert_eq!(urls.css.len(), "/ui/assets/console.0123456789ab.css".len());
        assert_ne!(hashed("a", "css", b"x"), hashed("a", "css", b"y"));
    }
}
