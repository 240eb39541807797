//! The CLI's HTTP client of the Hutch API: base URL and key from
//! `HUTCH_URL` / `HUTCH_API_KEY`, errors turned into one-line messages.

use hutch_api_types::ErrorBody;
use reqwest::{Method, RequestBuilder, Response};
use serde::de::DeserializeOwned;

/// A failed CLI operation, printed as one line.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("{message} ({code}, HTTP {status})")]
    Api {
        status: u16,
        code: String,
        message: String,
    },
    #[error("cannot reach the Hutch API at {url}: {source}")]
    Unreachable {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("{0}")]
    Usage(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("unexpected reply from the API: {0}")]
    Protocol(String),
}

impl CliError {
    pub fn io(context: impl Into<String>, source: std::io::Error) -> CliError {
        CliError::Io {
            context: context.into(),
            source,
        }
    }
}

#[derive(Clone)]
pub struct Api {
    http: reqwest::Client,
    pub base: String,
    key: Option<String>,
}

impl Api {
    pub fn new(base: &str, key: Option<String>) -> Api {
        Api {
            http: reqwest::Client::new(),
            base: base.trim_end_matches('/').to_owned(),
            key,
        }
    }

    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        let mut r = self.http.request(method, format!("{}{}", self.base, path));
        if let Some(k) = &self.key {
            r = r.bearer_auth(k);
        }
        r
    }

    /// Sends a request; a non-2xx reply becomes [`CliError::Api`].
    pub async fn send(&self, req: RequestBuilder) -> Result<Response, CliError> {
        let resp = req.send().await.map_err(|source| CliError::Unreachable {
            url: self.base.clone(),
            source,
        })?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        Err(api_error(resp).await)
    }

    pub async fn json<T: DeserializeOwned>(&self, req: RequestBuilder) -> Result<T, CliError> {
        let resp = self.send(req).await?;
        resp.json()
            .await
            .map_err(|e| CliError::Protocol(e.to_string()))
    }

    /// The WebSocket URL of an API path.
    pub fn ws_url(&self, path: &str) -> String {
        let base = if let Some(rest) = self.base.strip_prefix("https://") {
            format!("wss://{rest}")
        } else if let Some(rest) = self.base.strip_prefix("http://") {
            format!("ws://{rest}")
        } else {
            self.base.clone()
        };
        format!("{base}{path}")
    }

    pub fn key(&self) -> Option<&str> {
        self.key.as_deref()
    }
}

pub async fn api_error(resp: Response) -> CliError {
    let status = resp.status();
    let text = resp.text().await.unwrap_or_default();
    match serde_json::from_str::<ErrorBody>(&text) {
        Ok(ErrorBody { code, message }) => CliError::Api {
            status: status.as_u16(),
            code,
            message,
        },
        // Not the API's error body (a proxy's page, an empty reply).
        Err(_) => CliError::Api {
            status: status.as_u16(),
            code: status
                .canonical_reason()
                .unwrap_or("error")
                .to_lowercase()
                .replace(' ', "_"),
            message: if text.is_empty() {
                "request failed".into()
            } else {
                text.chars().take(200).collect()
            },
        },
    }
}

/// Percent-encodes a query value.
pub fn q(v: &str) -> String {
    percent_encoding::utf8_percent_encode(v, percent_encoding::NON_ALPHANUMERIC).to_string()
}
