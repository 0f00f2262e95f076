//! A small async client for Vigil's Vault-shaped HTTP API.
//!
//! Used by the `vigil` CLI, by the integration tests (which start real server processes) and by the load tool.
//! It is deliberately thin: it sends one request, waits for the whole response and hands back the status,
//! headers and body. Interpreting the body is left to the caller ([`Response::json`], [`Response::errors`]).
//!
//! ```no_run
//! # async fn demo() -> Result<(), vigil::client::ClientError> {
//! use vigil::client::Client;
//! let client = Client::new("http://127.0.0.1:8200").with_token("root");
//! let resp = client.put("/v1/kv/foo", &serde_json::json!({"a": "1"})).await?;
//! assert!(resp.is_success(), "{:?}", resp.errors());
//! let secret = client.get("/v1/kv/foo").await?.json()?;
//! # Ok(()) }
//! ```
//!
//! Only plain `http://` is supported. Connections are pooled (HTTP/1.1 keep-alive) and `TCP_NODELAY` is set,
//! and a [`Client`] is cheap to clone: clones share the pool.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{HeaderName, HeaderValue, CONTENT_TYPE};
use hyper::{HeaderMap, Method, Request, Uri};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

/// The header that carries the client token.
pub const TOKEN_HEADER: &str = "X-Vault-Token";

/// The per-request timeout used unless [`Client::with_timeout`] says otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// The longest the TCP connect of a request may take (it is also bounded by the request timeout).
const MAX_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a request did not produce a [`Response`] (or why a response could not be decoded).
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The base address is unusable (not `http://host:port`, or the path does not form a valid URI).
    #[error("invalid address: {0}")]
    InvalidAddress(String),
    /// No connection could be made: the request was certainly not delivered, so retrying it is safe.
    #[error("could not connect: {0}")]
    Connect(String),
    /// The request failed after it may have been sent: the server may or may not have acted on it.
    #[error("request failed: {0}")]
    Io(String),
    /// No complete response within the timeout: the server may or may not have acted on the request.
    #[error("request timed out")]
    Timeout,
    /// The response body is not what was expected (e.g. not JSON).
    #[error("could not decode response: {0}")]
    Decode(String),
}

impl ClientError {
    /// True when the request was certainly not delivered (no connection could be made).
    pub fn is_connect(&self) -> bool {
        matches!(self, ClientError::Connect(_))
    }
}

/// A complete HTTP response.
#[derive(Debug, Clone)]
pub struct Response {
    /// The HTTP status code.
    pub status: u16,
    /// The response headers.
    pub headers: HeaderMap,
    /// The whole response body.
    pub body: Bytes,
}

impl Response {
    /// The body parsed as JSON; an error if it is not JSON (an empty body is not JSON either).
    pub fn json(&self) -> Result<serde_json::Value, ClientError> {
        serde_json::from_slice(&self.body).map_err(|e| {
            ClientError::Decode(format!(
                "body of HTTP {} response is not JSON ({e}): {}",
                self.status,
                snippet(&self.body)
            ))
        })
    }

    /// The `errors` array of Vault's `{"errors": [...]}` error body; empty when there is none.
    /// Non-string entries are rendered as JSON.
    pub fn errors(&self) -> Vec<String> {
        let Ok(value) = serde_json::from_slice::<serde_json::Value>(&self.body) else {
            return Vec::new();
        };
        match value.get("errors") {
            Some(serde_json::Value::Array(items)) => items
                .iter()
                .map(|item| match item {
                    serde_json::Value::String(s) => s.clone(),
                    other => other.to_string(),
                })
                .collect(),
            _ => Vec::new(),
        }
    }

    /// True for a 2xx status.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The body as (lossy) UTF-8 text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// The first few hundred characters of a body, for error messages.
fn snippet(body: &[u8]) -> String {
    const MAX: usize = 200;
    let text = String::from_utf8_lossy(body);
    if text.chars().count() <= MAX {
        text.into_owned()
    } else {
        let mut s: String = text.chars().take(MAX).collect();
        s.push('…');
        s
    }
}

/// A client for one Vigil node. Cheap to clone; clones share the connection pool.
#[derive(Clone)]
pub struct Client {
    /// The address as given, minus trailing slashes (e.g. `http://127.0.0.1:8200`).
    addr: String,
    /// Why `addr` is unusable, if it is; reported by every request.
    addr_error: Option<String>,
    token: Option<String>,
    timeout: Duration,
    http: hyper_util::client::legacy::Client<HttpConnector, Full<Bytes>>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("addr", &self.addr)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl Client {
    /// A client for the node at `addr` (e.g. `http://127.0.0.1:8200`; trailing `/` are trimmed).
    ///
    /// This never fails: an unusable address (anything but `http://host[:port][/prefix]`) makes every request
    /// fail with [`ClientError::InvalidAddress`].
    pub fn new(addr: &str) -> Client {
        let addr = addr.trim().trim_end_matches('/').to_string();
        let addr_error = validate_addr(&addr).err();
        Client { addr, addr_error, token: None, timeout: DEFAULT_TIMEOUT, http: build_http(DEFAULT_TIMEOUT) }
    }

    /// Sends `token` as `X-Vault-Token` with every request.
    pub fn with_token(mut self, token: impl Into<String>) -> Client {
        self.token = Some(token.into());
        self
    }

    /// Sets the per-request timeout (connect + send + whole response); the default is 30 s.
    pub fn with_timeout(mut self, timeout: Duration) -> Client {
        self.timeout = timeout;
        self.http = build_http(timeout);
        self
    }

    /// The base address (without trailing `/`).
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// The token sent with each request, if any.
    pub fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }

    /// The per-request timeout.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Sends a request and waits for the whole response.
    ///
    /// `path` is the URL path plus optional query, e.g. `/v1/kv/foo?list=true` (a missing leading `/` is
    /// added). `method` may be any method name, including `LIST`. `body`, if any, is sent as JSON with
    /// `Content-Type: application/json`. Any HTTP status is a successful `Response`; only transport failures
    /// are errors.
    pub async fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<Response, ClientError> {
        match body {
            Some(value) => {
                let bytes = serde_json::to_vec(value).map_err(|e| ClientError::Io(format!("encoding body: {e}")))?;
                self.request_raw(method, path, &[("Content-Type", "application/json")], bytes).await
            }
            None => self.request_raw(method, path, &[], Vec::new()).await,
        }
    }

    /// Sends a request with an arbitrary body and extra headers (for tests of malformed input).
    ///
    /// The headers are added after `X-Vault-Token`; a header named here replaces a default one of the same
    /// name (so a test can send another token), and a name given several times is sent several times.
    pub async fn request_raw(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> Result<Response, ClientError> {
        let request = self.build_request(method, path, headers, body)?;
        match tokio::time::timeout(self.timeout, self.send(request)).await {
            Ok(result) => result,
            Err(_) => Err(ClientError::Timeout),
        }
    }

    /// `GET path`.
    pub async fn get(&self, path: &str) -> Result<Response, ClientError> {
        self.request("GET", path, None).await
    }

    /// `PUT path` with a JSON body.
    pub async fn put(&self, path: &str, body: &serde_json::Value) -> Result<Response, ClientError> {
        self.request("PUT", path, Some(body)).await
    }

    /// `POST path` with a JSON body.
    pub async fn post(&self, path: &str, body: &serde_json::Value) -> Result<Response, ClientError> {
        self.request("POST", path, Some(body)).await
    }

    /// `DELETE path`.
    pub async fn delete(&self, path: &str) -> Result<Response, ClientError> {
        self.request("DELETE", path, None).await
    }

    /// `LIST path` (Vault's list verb; servers also accept `GET path?list=true`).
    pub async fn list(&self, path: &str) -> Result<Response, ClientError> {
        self.request("LIST", path, None).await
    }

    /// The full URI for `path` (`path` gets a leading `/` if it lacks one).
    fn uri(&self, path: &str) -> Result<Uri, ClientError> {
        if let Some(e) = &self.addr_error {
            return Err(ClientError::InvalidAddress(e.clone()));
        }
        let sep = if path.starts_with('/') { "" } else { "/" };
        let full = format!("{}{sep}{path}", self.addr);
        full.parse::<Uri>().map_err(|e| ClientError::InvalidAddress(format!("{full:?} is not a valid URI: {e}")))
    }

    fn build_request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> Result<Request<Full<Bytes>>, ClientError> {
        let uri = self.uri(path)?;
        let method = Method::from_bytes(method.as_bytes())
            .map_err(|e| ClientError::Io(format!("invalid method {method:?}: {e}")))?;
        let has_body = !body.is_empty();
        let mut request = Request::new(Full::new(Bytes::from(body)));
        *request.method_mut() = method;
        *request.uri_mut() = uri;
        let map = request.headers_mut();
        if let Some(token) = &self.token {
            let value = HeaderValue::from_str(token)
                .map_err(|_| ClientError::Io("the token is not a valid header value".to_string()))?;
            map.insert(HeaderName::from_static("x-vault-token"), value);
        }
        let mut replaced: Vec<HeaderName> = Vec::new();
        for (name, value) in headers {
            let name = HeaderName::from_bytes(name.as_bytes())
                .map_err(|e| ClientError::Io(format!("invalid header name {name:?}: {e}")))?;
            let value = HeaderValue::from_str(value)
                .map_err(|e| ClientError::Io(format!("invalid value for header {name}: {e}")))?;
            if replaced.contains(&name) {
                map.append(name, value);
            } else {
                map.insert(name.clone(), value);
                replaced.push(name);
            }
        }
        // A body is labelled JSON unless the caller named another content type.
        if has_body && !map.contains_key(CONTENT_TYPE) {
            map.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        }
        Ok(request)
    }

    async fn send(&self, request: Request<Full<Bytes>>) -> Result<Response, ClientError> {
        let response = self.http.request(request).await.map_err(classify)?;
        let (parts, body) = response.into_parts();
        let body = body
            .collect()
            .await
            .map_err(|e| ClientError::Io(format!("reading response body: {}", error_chain(&e))))?
            .to_bytes();
        Ok(Response { status: parts.status.as_u16(), headers: parts.headers, body })
    }
}

/// Checks that `addr` is `http://authority[/prefix]` without query or fragment.
fn validate_addr(addr: &str) -> Result<(), String> {
    if addr.is_empty() {
        return Err("the address is empty (expected e.g. http://127.0.0.1:8200)".to_string());
    }
    let lower = addr.to_ascii_lowercase();
    if lower.starts_with("https://") {
        return Err(format!("{addr}: https is not supported by Vigil's client; use http://"));
    }
    if !lower.starts_with("http://") {
        return Err(format!("{addr}: the address must start with http:// (e.g. http://127.0.0.1:8200)"));
    }
    let uri: Uri = addr.parse().map_err(|e| format!("{addr}: {e}"))?;
    match uri.authority() {
        Some(a) if !a.host().is_empty() => {}
        _ => return Err(format!("{addr}: the address has no host")),
    }
    if uri.query().is_some() || addr.contains('#') {
        return Err(format!("{addr}: the address must not have a query or fragment"));
    }
    Ok(())
}

fn build_http(timeout: Duration) -> hyper_util::client::legacy::Client<HttpConnector, Full<Bytes>> {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.enforce_http(true);
    connector.set_connect_timeout(Some(timeout.min(MAX_CONNECT_TIMEOUT)));
    hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .pool_timer(TokioTimer::new())
        .build(connector)
}

/// Maps a hyper client error to "not delivered" ([`ClientError::Connect`]) or "maybe delivered"
/// ([`ClientError::Io`]).
fn classify(e: hyper_util::client::legacy::Error) -> ClientError {
    // hyper-util's own message ("client error (Connect)") adds nothing when there is an underlying cause.
    let message = match std::error::Error::source(&e) {
        Some(source) => error_chain(source),
        None => e.to_string(),
    };
    if e.is_connect() || is_unsent(&e) {
        ClientError::Connect(message)
    } else {
        ClientError::Io(message)
    }
}

/// hyper-util reports a request it got back unsent (the connection closed before the request was written) as
/// its private `Canceled` kind, visible only through `Debug`. Such a request was certainly not delivered.
fn is_unsent(e: &hyper_util::client::legacy::Error) -> bool {
    format!("{e:?}").starts_with("hyper_util::client::legacy::Error(Canceled")
}

/// An error and its sources, joined with `: ` (hyper's own messages are terse, the cause is in the sources).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(status: u16, body: &str) -> Response {
        Response { status, headers: HeaderMap::new(), body: Bytes::from(body.to_string()) }
    }

    #[test]
    fn trailing_slashes_are_trimmed() {
        assert_eq!(Client::new("http://127.0.0.1:8200/").addr(), "http://127.0.0.1:8200");
        assert_eq!(Client::new("http://127.0.0.1:8200//").addr(), "http://127.0.0.1:8200");
        assert_eq!(Client::new(" http://h:1 ").addr(), "http://h:1");
    }

    #[test]
    fn uri_adds_leading_slash_and_keeps_query() {
        let c = Client::new("http://127.0.0.1:8200/");
        assert_eq!(c.uri("v1/kv/foo").unwrap().to_string(), "http://127.0.0.1:8200/v1/kv/foo");
        let u = c.uri("/v1/kv/foo?list=true").unwrap();
        assert_eq!(u.path(), "/v1/kv/foo");
        assert_eq!(u.query(), Some("list=true"));
        let prefixed = Client::new("http://h:1/prefix");
        assert_eq!(prefixed.uri("/v1/x").unwrap().to_string(), "http://h:1/prefix/v1/x");
    }

    #[test]
    fn invalid_addresses_are_rejected() {
        for bad in ["https://127.0.0.1:8200", "127.0.0.1:8200", "", "ftp://x", "http://", "http://h:1?x=1"] {
            let c = Client::new(bad);
            match c.uri("/v1/sys/health") {
                Err(ClientError::InvalidAddress(msg)) => assert!(!msg.is_empty()),
                other => panic!("{bad:?}: expected InvalidAddress, got {other:?}"),
            }
        }
        let err = Client::new("https://x:1").uri("/").unwrap_err();
        assert!(err.to_string().contains("https is not supported"), "{err}");
    }

    #[tokio::test]
    async fn invalid_address_fails_requests() {
        let err = Client::new("https://127.0.0.1:8200").get("/v1/sys/health").await.unwrap_err();
        assert!(matches!(err, ClientError::InvalidAddress(_)), "{err:?}");
        assert!(!err.is_connect());
    }

    #[tokio::test]
    async fn refused_connection_is_a_connect_error() {
        // Bind then drop a listener to get a port that is (almost certainly) closed.
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let c = Client::new(&format!("http://127.0.0.1:{port}")).with_timeout(Duration::from_secs(5));
        let err = c.list("/v1/kv/").await.unwrap_err();
        assert!(err.is_connect(), "{err:?}");
    }

    #[test]
    fn request_headers() {
        let c = Client::new("http://h:1").with_token("t1");
        let r = c.build_request("LIST", "/v1/kv", &[], Vec::new()).unwrap();
        assert_eq!(r.method().as_str(), "LIST");
        assert_eq!(r.headers()["x-vault-token"], "t1");
        assert!(!r.headers().contains_key(CONTENT_TYPE));

        let r = c
            .build_request("PUT", "/v1/kv/a", &[("X-Vault-Token", "t2"), ("X-A", "1"), ("x-a", "2")], b"{}".to_vec())
            .unwrap();
        assert_eq!(r.headers()["x-vault-token"], "t2");
        assert_eq!(r.headers().get_all("x-a").iter().count(), 2);
        assert_eq!(r.headers()[CONTENT_TYPE], "application/json");

        let r = c.build_request("POST", "/v1/kv/a", &[("Content-Type", "text/plain")], b"x".to_vec()).unwrap();
        assert_eq!(r.headers()[CONTENT_TYPE], "text/plain");
    }

    #[test]
    fn errors_are_parsed() {
        assert_eq!(
            response(403, r#"{"errors":["permission denied"]}"#).errors(),
            vec!["permission denied".to_string()]
        );
        assert_eq!(response(400, r#"{"errors":["a","b"]}"#).errors(), vec!["a", "b"]);
        assert_eq!(response(400, r#"{"errors":[1]}"#).errors(), vec!["1"]);
        assert!(response(200, r#"{"data":{}}"#).errors().is_empty());
        assert!(response(500, "not json").errors().is_empty());
        assert!(response(204, "").errors().is_empty());
        assert!(response(400, r#"{"errors":"x"}"#).errors().is_empty());
    }

    #[test]
    fn json_and_success() {
        let r = response(200, r#"{"data":{"a":"1"}}"#);
        assert!(r.is_success());
        assert_eq!(r.json().unwrap()["data"]["a"], "1");
        let r = response(204, "");
        assert!(r.is_success());
        assert!(matches!(r.json(), Err(ClientError::Decode(_))));
        assert!(!response(404, "").is_success());
        assert!(!response(199, "").is_success());
        assert!(!response(300, "").is_success());
    }

    /// A tiny HTTP server that echoes each request as JSON; `/slow` sleeps 2 s, `/missing` answers 404 with
    /// Vault's error body. Returns its address and a counter of accepted connections.
    async fn echo_server() -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use std::sync::Arc;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = format!("http://{}", listener.local_addr().unwrap());
        let connections = Arc::new(AtomicUsize::new(0));
        let counter = connections.clone();
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                counter.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(|req: Request<hyper::body::Incoming>| async move {
                        let header = |name: &str| req.headers().get(name).map(|v| v.to_str().unwrap().to_string());
                        let (method, uri) = (req.method().to_string(), req.uri().clone());
                        let (token, content_type) = (header("x-vault-token"), header("content-type"));
                        let body = req.into_body().collect().await?.to_bytes();
                        if uri.path() == "/slow" {
                            tokio::time::sleep(Duration::from_secs(2)).await;
                        }
                        let (status, reply) = if uri.path() == "/missing" {
                            (404, serde_json::json!({"errors": ["no handler for route"]}))
                        } else {
                            let echo = serde_json::json!({
                                "method": method, "path": uri.path(), "query": uri.query(), "token": token,
                                "content_type": content_type, "body": String::from_utf8_lossy(&body),
                            });
                            (200, echo)
                        };
                        let resp = hyper::Response::builder()
                            .status(status)
                            .header("content-type", "application/json")
                            .body(Full::new(Bytes::from(reply.to_string())))
                            .unwrap();
                        Ok::<_, hyper::Error>(resp)
                    });
                    let io = hyper_util::rt::TokioIo::new(stream);
                    let _ = hyper::server::conn::http1::Builder::new().serve_connection(io, service).await;
                });
            }
        });
        (addr, connections)
    }

    #[tokio::test]
    async fn round_trips_against_a_server() {
        let (addr, connections) = echo_server().await;
        let c = Client::new(&format!("{addr}/")).with_token("tok");

        let r = c.list("v1/kv/dir/").await.unwrap();
        assert_eq!(r.status, 200);
        let echo = r.json().unwrap();
        assert_eq!(echo["method"], "LIST");
        assert_eq!(echo["path"], "/v1/kv/dir/");
        assert_eq!(echo["token"], "tok");
        assert_eq!(echo["content_type"], serde_json::Value::Null);

        let echo = c.put("/v1/kv/a", &serde_json::json!({"x": "1"})).await.unwrap().json().unwrap();
        assert_eq!((echo["method"].as_str(), echo["body"].as_str()), (Some("PUT"), Some(r#"{"x":"1"}"#)));
        assert_eq!(echo["content_type"], "application/json");

        let echo = c.get("/v1/kv/a?list=true").await.unwrap().json().unwrap();
        assert_eq!(echo["query"], "list=true");

        let echo = c
            .request_raw("POST", "/v1/x", &[("X-Vault-Token", "other")], b"{not json".to_vec())
            .await
            .unwrap()
            .json()
            .unwrap();
        assert_eq!((echo["token"].as_str(), echo["body"].as_str()), (Some("other"), Some("{not json")));

        let r = c.delete("/missing").await.unwrap();
        assert_eq!(r.status, 404);
        assert!(!r.is_success());
        assert_eq!(r.errors(), ["no handler for route"]);

        // Sequential requests reuse one pooled keep-alive connection.
        assert_eq!(connections.load(std::sync::atomic::Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn slow_responses_time_out() {
        let (addr, _) = echo_server().await;
        let c = Client::new(&addr).with_timeout(Duration::from_millis(200));
        let started = std::time::Instant::now();
        let err = c.get("/slow").await.unwrap_err();
        assert!(matches!(err, ClientError::Timeout), "{err:?}");
        assert!(started.elapsed() < Duration::from_secs(2));
    }
}
