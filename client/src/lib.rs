//! A blocking client of the shoal HTTP API, shared by the `shoal` CLI and
//! the tests' harness.
//!
//! [`Client`] talks to one node: [`Client::get`], [`Client::post`] and
//! [`Client::delete`] decode a success into the caller's type and turn the
//! API's error format, `{"error": {"code", "message", "field"?, …}}`, into
//! [`Error::Api`] with the status, code, message and field. [`Client::send`]
//! returns any answer as it came (status and body), for callers that check
//! statuses themselves. Everything that goes into a URL path from a name
//! (jobs, tasks, nodes) goes through [`segment`], which percent-encodes every
//! byte outside RFC 3986's unreserved set, so `web/api`, `a b`, `50%`,
//! `what?`, `#1` and `zürich` reach the API as the same string.
//!
//! Blocking (ureq), no async runtime: the CLI and the tests call it from
//! plain threads.

use std::time::Duration;

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Bytes encoded in a path segment: every one but RFC 3986's unreserved
/// `ALPHA / DIGIT / "-" / "." / "_" / "~"`. Stricter than the URL standard's
/// path-segment set, which is allowed: an encoded byte decodes to itself.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// `name` encoded as one URL path segment: `web/api` → `web%2Fapi`,
/// `a b?` → `a%20b%3F`, `zürich` → `z%C3%BCrich`.
///
/// `.` and `..` are encoded too (`%2E`, `%2E%2E`), so that no client or
/// proxy that removes dot segments changes the path.
pub fn segment(name: &str) -> String {
    if name == "." || name == ".." {
        return name.replace('.', "%2E");
    }
    utf8_percent_encode(name, SEGMENT).to_string()
}

/// How long a call may take by default, connecting and reading included.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// The largest answer read, in bytes.
const MAX_BODY: u64 = 1 << 30;

/// An HTTP method the API uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    /// `GET`.
    Get,
    /// `POST`, with a JSON body.
    Post,
    /// `DELETE`.
    Delete,
}

impl Method {
    /// The method's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Post => "POST",
            Method::Delete => "DELETE",
        }
    }
}

impl std::fmt::Display for Method {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An answer as it came.
#[derive(Clone, Debug)]
pub struct Response {
    /// HTTP status.
    pub status: u16,
    /// The body, as text.
    pub body: String,
    /// `X-Total-Count`: how many items match a paged list's filters
    /// (`GET /v1/nodes`, `GET /v1/jobs`).
    pub total_count: Option<u64>,
}

impl Response {
    /// The body as JSON; `Null` when it is not JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or(serde_json::Value::Null)
    }

    /// The API's error, when the body is in its error format.
    pub fn api_error(&self) -> Option<ApiError> {
        #[derive(serde::Deserialize)]
        struct Wrapper {
            error: ApiError,
        }
        let mut e = serde_json::from_str::<Wrapper>(&self.body).ok()?.error;
        e.status = self.status;
        Some(e)
    }
}

/// An error answered by the API: `{"error": {"code", "message", "field"?}}`.
#[derive(Clone, Debug, PartialEq, serde::Deserialize, thiserror::Error)]
#[error("{message} ({code})")]
pub struct ApiError {
    /// HTTP status (401, 404, 409, 422, 503, …).
    #[serde(skip)]
    pub status: u16,
    /// Machine-readable code: `unauthorized`, `not_found`, `invalid_spec`,
    /// `version_mismatch`, … (see docs/api.md).
    pub code: String,
    /// What was wrong and what to do, for people.
    pub message: String,
    /// The offending field of the request (`task.resources.cpus`), when one.
    #[serde(default)]
    pub field: Option<String>,
    /// Any further members of the error object (`errors`,
    /// `expected_version`, `actual_version`, …).
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No answer at all: nothing listens there, the connection broke, or
    /// the call timed out.
    #[error("cannot reach the shoal API at {base}: {error}; is an agent running there?")]
    Unreachable {
        /// The node's base URL.
        base: String,
        /// What the HTTP client saw.
        error: Box<ureq::Error>,
    },
    /// The API answered with an error in its format.
    #[error(transparent)]
    Api(#[from] ApiError),
    /// An error status whose body is not the API's error format (something
    /// else answers at that address, or a proxy in between).
    #[error("{method} {url}: HTTP {status}: {body}")]
    Http {
        /// The method.
        method: Method,
        /// The URL.
        url: String,
        /// HTTP status.
        status: u16,
        /// The body, as text.
        body: String,
    },
    /// The answer could not be read, or a success was not the JSON expected.
    #[error("{method} {url}: unexpected answer: {why}")]
    Answer {
        /// The method.
        method: Method,
        /// The URL.
        url: String,
        /// What was wrong with it.
        why: String,
    },
    /// The request body could not be encoded as JSON.
    #[error("cannot encode the request body as JSON: {0}")]
    Encode(#[source] serde_json::Error),
}

impl Error {
    /// The API's error, when the API answered with one.
    pub fn api(&self) -> Option<&ApiError> {
        match self {
            Error::Api(e) => Some(e),
            _ => None,
        }
    }

    /// The HTTP status of an error answer.
    pub fn status(&self) -> Option<u16> {
        match self {
            Error::Api(e) => Some(e.status),
            Error::Http { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// The CAs a client trusts for `https://` (the cluster's API CA, from an
/// agent's `api-ca.pem`), instead of the public roots.
#[derive(Clone)]
pub struct Trust(ureq::tls::TlsConfig);

impl std::fmt::Debug for Trust {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Trust(…)")
    }
}

/// Why a CA file cannot be trusted.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct TrustError(String);

impl Trust {
    /// Trust exactly the certificates of the PEM text `pem` (`what` names
    /// where it came from in errors).
    pub fn from_pem(pem: &[u8], what: &str) -> Result<Trust, TrustError> {
        let mut certs = Vec::new();
        for item in ureq::tls::parse_pem(pem) {
            match item {
                Ok(ureq::tls::PemItem::Certificate(c)) => certs.push(c),
                Ok(_) => {}
                Err(e) => return Err(TrustError(format!("{what}: not PEM: {e}"))),
            }
        }
        if certs.is_empty() {
            return Err(TrustError(format!(
                "{what}: no certificate in it; it must hold a `-----BEGIN CERTIFICATE-----` block (an agent's api-ca.pem)"
            )));
        }
        Ok(Trust(
            ureq::tls::TlsConfig::builder()
                .root_certs(ureq::tls::RootCerts::new_with_certs(&certs))
                .build(),
        ))
    }
}

/// The host of a URL or `host:port` (brackets of an IPv6 address removed).
fn host_of(addr: &str) -> &str {
    let rest = addr.split_once("://").map_or(addr, |(_, r)| r);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let authority = authority.rsplit_once('@').map_or(authority, |(_, a)| a);
    if let Some(v6) = authority.strip_prefix('[') {
        return v6.split(']').next().unwrap_or("");
    }
    match authority.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => authority,
    }
}

/// Whether `addr` (a URL or `host:port`) names this machine: `localhost`
/// or a loopback address, where plain HTTP never leaves the machine.
pub fn is_loopback(addr: &str) -> bool {
    let host = host_of(addr);
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.to_canonical().is_loopback())
}

/// A node's API, with an optional bearer token.
#[derive(Clone)]
pub struct Client {
    base: String,
    token: Option<String>,
    agent: ureq::Agent,
    trust: Option<Trust>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("base", &self.base)
            .field("token", &self.token.as_ref().map(|_| "…"))
            .finish()
    }
}

/// `addr` as a base URL: a URL as given; `host:port` is `http://` on this
/// machine and `https://` elsewhere (what an agent serves there).
fn base_url(addr: &str) -> String {
    let addr = addr.trim_end_matches('/');
    if addr.contains("://") {
        addr.to_owned()
    } else if is_loopback(addr) {
        format!("http://{addr}")
    } else {
        format!("https://{addr}")
    }
}

impl Client {
    /// A client of the node at `addr`, a URL (`http://host:port`) or
    /// `host:port`, with calls limited to [`DEFAULT_TIMEOUT`].
    pub fn new(addr: &str, token: Option<String>) -> Client {
        Client {
            base: base_url(addr),
            token,
            agent: agent(DEFAULT_TIMEOUT, None),
            trust: None,
        }
    }

    /// The same client with calls limited to `timeout` (a new connection
    /// pool).
    pub fn with_timeout(self, timeout: Duration) -> Client {
        Client {
            agent: agent(timeout, self.trust.as_ref()),
            ..self
        }
    }

    /// The same client trusting `trust` for `https://` (a new connection
    /// pool with the default timeout).
    pub fn with_trust(self, trust: Trust) -> Client {
        Client {
            agent: agent(DEFAULT_TIMEOUT, Some(&trust)),
            trust: Some(trust),
            ..self
        }
    }

    /// A client of another node (`addr`, `token`) with the same settings,
    /// sharing this one's connection pool.
    pub fn at(&self, addr: &str, token: Option<String>) -> Client {
        Client {
            base: base_url(addr),
            token,
            agent: self.agent.clone(),
            trust: self.trust.clone(),
        }
    }

    /// The node's base URL (`http://host:port`).
    pub fn base(&self) -> &str {
        &self.base
    }

    /// `GET path`, decoded as `T`.
    pub fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, Error> {
        self.call(Method::Get, path, None::<&()>)
    }

    /// `POST path` with `body` as JSON, the answer decoded as `T`.
    pub fn post<T: DeserializeOwned>(&self, path: &str, body: &impl Serialize) -> Result<T, Error> {
        self.call(Method::Post, path, Some(body))
    }

    /// `GET path`: the body's bytes as they came (an archive), at most
    /// `limit` bytes.
    pub fn get_bytes(&self, path: &str, limit: u64) -> Result<Vec<u8>, Error> {
        let url = format!("{}{}", self.base, path);
        let auth = self.token.as_ref().map(|t| format!("Bearer {t}"));
        let mut resp = with_auth(self.agent.get(&url), auth.as_deref())
            .call()
            .map_err(|e| Error::Unreachable {
                base: self.base.clone(),
                error: Box::new(e),
            })?;
        let status = resp.status().as_u16();
        let read = |e: ureq::Error| Error::Answer {
            method: Method::Get,
            url: url.clone(),
            why: format!("cannot read it: {e}"),
        };
        if !(200..300).contains(&status) {
            let body = resp
                .body_mut()
                .with_config()
                .limit(MAX_BODY)
                .read_to_string()
                .map_err(read)?;
            let r = Response {
                status,
                body,
                total_count: None,
            };
            if let Some(e) = r.api_error() {
                return Err(Error::Api(e));
            }
            return Err(Error::Http {
                method: Method::Get,
                url,
                status,
                body: r.body,
            });
        }
        resp.body_mut()
            .with_config()
            .limit(limit)
            .read_to_vec()
            .map_err(read)
    }

    /// `DELETE path`, decoded as `T`.
    pub fn delete<T: DeserializeOwned>(&self, path: &str) -> Result<T, Error> {
        self.call(Method::Delete, path, None::<&()>)
    }

    /// `POST path` with the bytes `reader` yields as the body (streamed,
    /// whatever their size), the answer decoded as `T`.
    pub fn post_stream<T: DeserializeOwned>(
        &self,
        path: &str,
        reader: &mut dyn std::io::Read,
    ) -> Result<T, Error> {
        let url = format!("{}{}", self.base, path);
        let auth = self.token.as_ref().map(|t| format!("Bearer {t}"));
        let req = with_auth(self.agent.post(&url), auth.as_deref())
            .content_type("application/octet-stream");
        let mut resp =
            req.send(ureq::SendBody::from_reader(reader))
                .map_err(|e| Error::Unreachable {
                    base: self.base.clone(),
                    error: Box::new(e),
                })?;
        let status = resp.status().as_u16();
        let body = resp
            .body_mut()
            .with_config()
            .limit(MAX_BODY)
            .read_to_string()
            .map_err(|e| Error::Answer {
                method: Method::Post,
                url: url.clone(),
                why: format!("cannot read it: {e}"),
            })?;
        let resp = Response {
            status,
            body,
            total_count: None,
        };
        if !(200..300).contains(&resp.status) {
            if let Some(e) = resp.api_error() {
                return Err(Error::Api(e));
            }
            return Err(Error::Http {
                method: Method::Post,
                url,
                status: resp.status,
                body: resp.body,
            });
        }
        serde_json::from_str(&resp.body).map_err(|e| Error::Answer {
            method: Method::Post,
            url,
            why: e.to_string(),
        })
    }

    /// `method path` (with `body` as JSON, for `POST`): the answer as it
    /// came, whatever its status. Errs only when there is no answer.
    pub fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&impl Serialize>,
    ) -> Result<Response, Error> {
        let url = format!("{}{}", self.base, path);
        let bytes = match body {
            Some(b) => Some(serde_json::to_vec(b).map_err(Error::Encode)?),
            None => None,
        };
        let auth = self.token.as_ref().map(|t| format!("Bearer {t}"));
        let sent = match method {
            Method::Get => with_auth(self.agent.get(&url), auth.as_deref()).call(),
            Method::Delete => with_auth(self.agent.delete(&url), auth.as_deref()).call(),
            Method::Post => {
                let req = with_auth(self.agent.post(&url), auth.as_deref());
                match &bytes {
                    Some(b) => req.content_type("application/json").send(b.as_slice()),
                    None => req.send_empty(),
                }
            }
        };
        let mut resp = sent.map_err(|e| Error::Unreachable {
            base: self.base.clone(),
            error: Box::new(e),
        })?;
        let status = resp.status().as_u16();
        let total_count = resp
            .headers()
            .get("x-total-count")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        let body = resp
            .body_mut()
            .with_config()
            .limit(MAX_BODY)
            .read_to_string()
            .map_err(|e| Error::Answer {
                method,
                url: url.clone(),
                why: format!("cannot read it: {e}"),
            })?;
        Ok(Response {
            status,
            body,
            total_count,
        })
    }

    fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&impl Serialize>,
    ) -> Result<T, Error> {
        let resp = self.send(method, path, body)?;
        let url = || format!("{}{}", self.base, path);
        if !(200..300).contains(&resp.status) {
            if let Some(e) = resp.api_error() {
                return Err(Error::Api(e));
            }
            return Err(Error::Http {
                method,
                url: url(),
                status: resp.status,
                body: resp.body,
            });
        }
        serde_json::from_str(&resp.body).map_err(|e| Error::Answer {
            method,
            url: url(),
            why: e.to_string(),
        })
    }
}

fn with_auth<B>(req: ureq::RequestBuilder<B>, auth: Option<&str>) -> ureq::RequestBuilder<B> {
    match auth {
        Some(a) => req.header("Authorization", a),
        None => req,
    }
}

fn agent(timeout: Duration, trust: Option<&Trust>) -> ureq::Agent {
    let mut config = ureq::Agent::config_builder();
    if let Some(t) = trust {
        config = config.tls_config(t.0.clone());
    }
    config
        .http_status_as_error(false)
        .timeout_global(Some(timeout))
        .build()
        .into()
}

#[cfg(test)]
mod tests {
    use std::io::{BufRead, BufReader, Read, Write};
    use std::net::TcpListener;

    use percent_encoding::percent_decode_str;
    use serde_json::{Value, json};

    use super::*;

    #[test]
    fn loopback_addresses_are_told_from_others() {
        for a in [
            "http://127.0.0.1:5480",
            "127.0.0.1:5480",
            "localhost:5480",
            "http://LOCALHOST/",
            "http://[::1]:5480/v1",
            "https://user@127.0.0.2",
        ] {
            assert!(is_loopback(a), "{a}");
        }
        for a in [
            "http://10.0.0.5:5480",
            "10.0.0.5:5480",
            "http://example.com",
            "[2001:db8::1]:5480",
            "http://127.0.0.1.example.com",
        ] {
            assert!(!is_loopback(a), "{a}");
        }
        assert_eq!(base_url("10.0.0.5:5480"), "https://10.0.0.5:5480");
        assert_eq!(base_url("127.0.0.1:5480"), "http://127.0.0.1:5480");
        assert_eq!(base_url("http://10.0.0.5:5480/"), "http://10.0.0.5:5480");
    }

    #[test]
    fn segments_round_trip_and_stay_one_segment() {
        for name in [
            "web",
            "web/frontend",
            "a b",
            "50%",
            "what?",
            "#1",
            "zürich/東京",
            "a+b=c&d",
            "..",
            ".",
            "x\\y",
        ] {
            let s = segment(name);
            assert!(
                s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-._~%".contains(&b)),
                "{name:?} -> {s:?}"
            );
            assert_ne!(s, "..");
            assert_ne!(s, ".");
            assert_eq!(percent_decode_str(&s).decode_utf8().unwrap(), name);
        }
        assert_eq!(segment("web/frontend"), "web%2Ffrontend");
        assert_eq!(segment("a b?#%"), "a%20b%3F%23%25");
    }

    /// Serves one canned answer on 127.0.0.1 (port 0) and returns the base
    /// URL and a handle giving the request's head and body.
    fn serve_once(status: &str, body: &str) -> (String, std::thread::JoinHandle<(String, String)>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let answer = format!(
            "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        let handle = std::thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            let mut reader = BufReader::new(stream);
            let mut head = String::new();
            let mut length = 0;
            loop {
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap();
                }
                if line == "\r\n" || line.is_empty() {
                    break;
                }
                head.push_str(&line);
            }
            let mut body = vec![0; length];
            reader.read_exact(&mut body).unwrap();
            reader.get_mut().write_all(answer.as_bytes()).unwrap();
            (head, String::from_utf8(body).unwrap())
        });
        (base, handle)
    }

    #[test]
    fn api_errors_are_typed() {
        let (base, server) = serve_once(
            "422 Unprocessable Entity",
            r#"{"error": {"code": "invalid_spec", "message": "task.resources.cpus: must be > 0 (got -1)", "field": "task.resources.cpus", "errors": []}}"#,
        );
        let client = Client::new(&base, Some("shoal1_x".into()));
        let e = client
            .post::<Value>("/v1/jobs", &json!({"name": "web"}))
            .unwrap_err();
        let (head, body) = server.join().unwrap();
        assert!(head.starts_with("POST /v1/jobs HTTP/1.1"), "{head}");
        assert!(
            head.to_ascii_lowercase()
                .contains("authorization: bearer shoal1_x"),
            "{head}"
        );
        assert_eq!(
            serde_json::from_str::<Value>(&body).unwrap(),
            json!({"name": "web"})
        );
        let api = e.api().expect("an API error");
        assert_eq!(api.status, 422);
        assert_eq!(api.code, "invalid_spec");
        assert_eq!(api.field.as_deref(), Some("task.resources.cpus"));
        assert_eq!(api.extra["errors"], json!([]));
        assert_eq!(
            e.to_string(),
            "task.resources.cpus: must be > 0 (got -1) (invalid_spec)"
        );
    }

    #[test]
    fn other_failures_say_what_answered() {
        let (base, server) = serve_once("502 Bad Gateway", "<html>bad gateway</html>");
        let e = Client::new(&base, None)
            .get::<Value>("/v1/nodes")
            .unwrap_err();
        server.join().unwrap();
        assert_eq!(e.status(), Some(502));
        assert!(e.api().is_none());
        assert!(
            e.to_string().contains("HTTP 502") && e.to_string().contains("bad gateway"),
            "{e}"
        );

        let (base, server) = serve_once("200 OK", "not json");
        let e = Client::new(&base, None)
            .get::<Value>("/v1/nodes")
            .unwrap_err();
        server.join().unwrap();
        assert!(matches!(e, Error::Answer { .. }), "{e}");

        // A port nobody listens on: bound, noted, closed.
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let e = Client::new(&format!("127.0.0.1:{port}"), None)
            .get::<Value>("/v1/nodes")
            .unwrap_err();
        assert!(matches!(e, Error::Unreachable { .. }), "{e}");
        assert!(
            e.to_string()
                .starts_with("cannot reach the shoal API at http://127.0.0.1:"),
            "{e}"
        );
    }

    #[test]
    fn send_returns_any_status() {
        let (base, server) = serve_once(
            "404 Not Found",
            r#"{"error": {"code": "not_found", "message": "no job named \"x\""}}"#,
        );
        let r = Client::new(&base, None)
            .send(Method::Delete, "/v1/jobs/x", None::<&()>)
            .unwrap();
        server.join().unwrap();
        assert_eq!(r.status, 404);
        assert_eq!(r.json()["error"]["code"], "not_found");
        assert_eq!(r.api_error().unwrap().message, "no job named \"x\"");
    }
}
