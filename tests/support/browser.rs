//! Headless Chromium driven through chromedriver (Debian's packages; `scripts/ensure-chromium`
//! installs them), one driver on a free port and one fresh profile per browser.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};
use tempfile::TempDir;

pub const CHROMIUM: &str = "/usr/bin/chromium";
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

pub struct Browser {
    pub client: Client,
    driver: Child,
    _profile: TempDir,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Browser {
    pub async fn start() -> Self {
        assert!(
            std::path::Path::new(CHROMEDRIVER).exists(),
            "{CHROMEDRIVER} is missing: run scripts/ensure-chromium (scripts/test does)"
        );
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let profile = tempfile::tempdir().unwrap();
        let port = free_port();
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let capabilities = json!({
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                    "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync",
                    "--window-size=1280,800",
                    format!("--user-data-dir={}", profile.path().display()),
                ]
            }
        });
        let serde_json::Value::Object(capabilities) = capabilities else {
            unreachable!()
        };
        let url = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(30);
        let client = loop {
            let connected = ClientBuilder::rustls()
                .unwrap()
                .capabilities(capabilities.clone())
                .connect(&url)
                .await;
            match connected {
                Ok(client) => break client,
                Err(error) if Instant::now() < deadline => {
                    let _ = error;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(error) => panic!("no WebDriver session on {url}: {error}"),
            }
        };
        Self {
            client,
            driver,
            _profile: profile,
        }
    }

    /// Makes the page's viewport `width` × `height` CSS pixels (the window is a little larger).
    pub async fn viewport(&self, width: u32, height: u32) {
        self.client.set_window_size(width, height).await.unwrap();
        let inner = self
            .client
            .execute("return [window.innerWidth, window.innerHeight]", vec![])
            .await
            .unwrap();
        let (w, h) = (
            inner[0].as_u64().unwrap() as u32,
            inner[1].as_u64().unwrap() as u32,
        );
        if (w, h) != (width, height) {
            self.client
                .set_window_size(
                    width + width.saturating_sub(w),
                    height + height.saturating_sub(h),
                )
                .await
                .unwrap();
        }
    }

    /// Ends the WebDriver session (closing Chromium), then the driver.
    pub async fn stop(self) {
        let _ = self.client.clone().close().await;
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

// What a test does on a console page.

pub async fn text(client: &Client, css: &str) -> String {
    client
        .find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"))
        .text()
        .await
        .unwrap()
}

pub async fn fill(client: &Client, css: &str, value: &str) {
    let field = client.find(Locator::Css(css)).await.unwrap();
    field.clear().await.unwrap();
    field.send_keys(value).await.unwrap();
}

pub async fn click(client: &Client, css: &str) {
    client
        .find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"))
        .click()
        .await
        .unwrap();
}

/// Clicks what submits a form or follows a link, and waits until the next page has loaded
/// (which may have the same URL, as after a change redirects back to the page it was made on).
pub async fn navigate(client: &Client, css: &str) {
    client
        .execute("document.documentElement.dataset.left = 'yes'", vec![])
        .await
        .unwrap();
    click(client, css).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let loaded = client
            .execute(
                "return document.readyState === 'complete' && !document.documentElement.dataset.left",
                vec![],
            )
            .await;
        if loaded.is_ok_and(|v| v == Value::Bool(true)) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no page loaded after clicking {css}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

pub async fn path(client: &Client) -> String {
    client.current_url().await.unwrap().path().to_owned()
}

pub async fn sign_in(client: &Client, token: &str) {
    fill(client, "#f-token", token).await;
    navigate(client, "form[action='/ui/sign-in'] button[type=submit]").await;
}

/// Takes a screenshot of `page` at both widths; checks nothing overflows sideways and, when
/// asked to, stores it under docs/screenshots/.
pub async fn screenshots(browser: &Browser, page: &str, name: &str) {
    for (width, height) in [(1280, 800), (390, 844)] {
        browser.viewport(width, height).await;
        browser.client.goto(page).await.unwrap();
        // A goto that only changes the fragment does not load the page again: it would
        // keep what was laid out at the previous width.
        browser.client.refresh().await.unwrap();
        let overflow = browser
            .client
            .execute(
                "return document.documentElement.scrollWidth - window.innerWidth",
                vec![],
            )
            .await
            .unwrap();
        assert!(
            overflow.as_i64().unwrap() <= 0,
            "{name} overflows sideways at {width} px: {overflow}"
        );
        let png = browser.client.screenshot().await.unwrap();
        assert_eq!(&png[1..4], b"PNG");
        if std::env::var_os("SLUICE_UPDATE_SCREENSHOTS").is_some() {
            let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/screenshots");
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join(format!("{name}-{width}.png")), png).unwrap();
        }
    }
    browser.viewport(1280, 800).await;
}

/// Waits until the element's text contains `needle`, whatever refreshes it meanwhile.
pub async fn wait_for_text(client: &Client, css: &str, needle: &str, within: Duration) -> String {
    let deadline = Instant::now() + within;
    loop {
        let found = match client.find(Locator::Css(css)).await {
            Ok(element) => element.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        };
        if found.contains(needle) {
            return found;
        }
        assert!(
            Instant::now() < deadline,
            "{css} never showed {needle:?}; last: {found:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// What a form field holds now (its `value` property, not the attribute it started with).
pub async fn field_value(client: &Client, css: &str) -> String {
    let field = client.find(Locator::Css(css)).await.unwrap();
    field.prop("value").await.unwrap().unwrap_or_default()
}
