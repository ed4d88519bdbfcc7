//! Driving the admin console over plain HTTP, as a browser would: form posts with an
//! `Origin`, the session cookie, the CSRF token read from the page.

use reqwest::header::{CONTENT_TYPE, COOKIE, ORIGIN, SET_COOKIE};
use reqwest::{Response, StatusCode, redirect};

/// An HTTP client that does not follow redirects, so tests see the console's 303s.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(redirect::Policy::none())
        .timeout(std::time::Duration::from_secs(30))
        .build()
        .unwrap()
}

/// `application/x-www-form-urlencoded` for simple values (tokens, names, numbers).
pub fn form(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| {
            let v: String = v
                .bytes()
                .map(|b| match b {
                    b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => {
                        (b as char).to_string()
                    }
                    _ => format!("%{b:02X}"),
                })
                .collect();
            format!("{k}={v}")
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// A browser-like visitor of the console at `base` (`http://127.0.0.1:PORT`).
pub struct Visitor {
    pub base: String,
    pub client: reqwest::Client,
    /// `sluice_console=…`, once signed in.
    pub cookie: Option<String>,
}

impl Visitor {
    pub fn new(addr: std::net::SocketAddr) -> Self {
        Self {
            base: format!("http://{addr}"),
            client: client(),
            cookie: None,
        }
    }

    pub async fn get(&self, path: &str) -> Response {
        let mut request = self.client.get(format!("{}{path}", self.base));
        if let Some(cookie) = &self.cookie {
            request = request.header(COOKIE, cookie);
        }
        request.send().await.unwrap()
    }

    /// A form post from `origin` (`None`: no `Origin` header at all).
    pub async fn post_from(&self, origin: Option<&str>, path: &str, body: String) -> Response {
        let mut request = self
            .client
            .post(format!("{}{path}", self.base))
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(body);
        if let Some(origin) = origin {
            request = request.header(ORIGIN, origin);
        }
        if let Some(cookie) = &self.cookie {
            request = request.header(COOKIE, cookie);
        }
        request.send().await.unwrap()
    }

    /// A form post from the console's own origin.
    pub async fn post(&self, path: &str, body: String) -> Response {
        let origin = self.base.clone();
        self.post_from(Some(&origin), path, body).await
    }

    /// Signs in with `token`; returns the sign-in response (303 on success).
    pub async fn sign_in(&mut self, token: &str) -> Response {
        let response = self.post("/ui/sign-in", form(&[("token", token)])).await;
        if let Some(cookie) = session_cookie(&response) {
            self.cookie = Some(cookie.split(';').next().unwrap().to_owned());
        }
        response
    }

    /// The CSRF token of the forms on `path`.
    pub async fn csrf(&self, path: &str) -> String {
        let response = self.get(path).await;
        assert_eq!(response.status(), StatusCode::OK, "GET {path}");
        csrf_in(&response.text().await.unwrap())
    }
}

/// The `Set-Cookie` header for the console session, if any.
pub fn session_cookie(response: &Response) -> Option<String> {
    response
        .headers()
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("sluice_console="))
        .map(str::to_owned)
}

/// The value of the first hidden `csrf` field in a page.
pub fn csrf_in(html: &str) -> String {
    let marker = "name=\"csrf\" value=\"";
    let start = html.find(marker).expect("the page has a CSRF field") + marker.len();
    let end = html[start..].find('"').unwrap();
    html[start..start + end].to_owned()
}

/// Where a redirect points.
pub fn location(response: &Response) -> &str {
    response
        .headers()
        .get("location")
        .map(|v| v.to_str().unwrap())
        .unwrap_or("")
}
