//! A small blocking client of the HTTP API.

use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use serde::de::DeserializeOwned;
use shoal_node::api::types::ErrorBody;

/// Where and how to reach an agent.
pub struct Client {
    base: String,
    token: Option<String>,
    agent: ureq::Agent,
}

impl Client {
    /// `addr` is a URL (`http://host:port`) or `host:port`.
    pub fn new(addr: &str, token: Option<String>) -> Client {
        let base = if addr.contains("://") {
            addr.trim_end_matches('/').to_owned()
        } else {
            format!("http://{}", addr.trim_end_matches('/'))
        };
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(30)))
            .build()
            .into();
        Client { base, token, agent }
    }

    /// `GET path`, decoded as `T`; an API error becomes its message.
    pub fn get<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        self.call("GET", path, None)
    }

    /// `POST path` with a JSON body.
    pub fn post<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &serde_json::Value,
    ) -> anyhow::Result<T> {
        self.call("POST", path, Some(body))
    }

    /// `DELETE path`.
    pub fn delete<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        self.call("DELETE", path, None)
    }

    fn call<T: DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> anyhow::Result<T> {
        let url = format!("{}{}", self.base, path);
        let auth = self.token.as_ref().map(|t| format!("Bearer {t}"));
        let sent = match (method, body) {
            ("POST", Some(b)) => {
                let mut req = self
                    .agent
                    .post(&url)
                    .header("Content-Type", "application/json");
                if let Some(a) = &auth {
                    req = req.header("Authorization", a);
                }
                req.send(serde_json::to_vec(b)?.as_slice())
            }
            ("DELETE", _) => {
                let mut req = self.agent.delete(&url);
                if let Some(a) = &auth {
                    req = req.header("Authorization", a);
                }
                req.call()
            }
            _ => {
                let mut req = self.agent.get(&url);
                if let Some(a) = &auth {
                    req = req.header("Authorization", a);
                }
                req.call()
            }
        };
        let mut resp = sent.map_err(|e| {
            anyhow!(
                "cannot reach the shoal API at {}: {e}; is an agent running there? (set --addr or SHOAL_ADDR)",
                self.base
            )
        })?;
        let status = resp.status();
        let body = resp
            .body_mut()
            .with_config()
            .limit(1 << 30)
            .read_to_string()
            .with_context(|| format!("reading the answer of {method} {url}"))?;
        if !status.is_success() {
            if let Ok(err) = serde_json::from_str::<ErrorBody>(&body) {
                bail!("{} ({})", err.error.message, err.error.code);
            }
            bail!("{method} {url}: HTTP {status}: {body}");
        }
        serde_json::from_str(&body).with_context(|| format!("{method} {url}: unexpected answer"))
    }
}
