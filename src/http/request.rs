//! A parsed Vault API request: operation, decoded path, query, token and the raw parts kept for forwarding.

use axum::body::Bytes;
use axum::http::{request::Parts, HeaderMap, Method, Uri};
use serde_json::{Map, Value};

use super::error::ApiError;

/// The header a forwarding node adds; a request carrying it is never forwarded again (loop guard).
pub const FORWARDED_HEADER: &str = "x-vigil-forwarded-by";
/// The response header carrying the Raft log index of a write, so a forwarding node can wait for it locally.
pub const INDEX_HEADER: &str = "x-vigil-raft-index";

/// What a request asks for, in Vault's terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// GET or HEAD.
    Read,
    /// LIST, or GET with `list=true`.
    List,
    /// PUT or POST.
    Update,
    /// PATCH.
    Patch,
    /// DELETE.
    Delete,
}

impl Operation {
    /// True for operations that change state (and so must run on the active node).
    pub fn is_write(self) -> bool {
        !matches!(self, Operation::Read | Operation::List)
    }
}

/// One API request.
#[derive(Debug, Clone)]
pub struct VaultRequest {
    /// The HTTP method as received.
    pub method: Method,
    /// The original URI (for forwarding).
    pub uri: Uri,
    /// The operation.
    pub op: Operation,
    /// The percent-decoded path after `/v1/`, e.g. `kv/foo`.
    pub path: String,
    /// Query parameters, decoded.
    pub query: Vec<(String, String)>,
    /// Request headers.
    pub headers: HeaderMap,
    /// The raw body.
    pub body: Bytes,
}

impl VaultRequest {
    /// Parses the request parts; errors are 400/405 answers.
    pub fn parse(parts: Parts, body: Bytes) -> Result<Self, ApiError> {
        let raw_path = parts.uri.path();
        let Some(rest) = raw_path.strip_prefix("/v1/") else {
            return Err(ApiError::new(axum::http::StatusCode::NOT_FOUND, format!("no such path {raw_path:?}")));
        };
        let path = percent_decode(rest).ok_or_else(|| ApiError::bad_request("invalid percent-encoding in path"))?;
        let query = parse_query(parts.uri.query().unwrap_or(""))?;
        let list = query.iter().any(|(k, v)| k == "list" && v == "true");
        let op = match parts.method.as_str() {
            "GET" | "HEAD" if list => Operation::List,
            "GET" | "HEAD" => Operation::Read,
            "LIST" => Operation::List,
            "PUT" | "POST" => Operation::Update,
            "PATCH" => Operation::Patch,
            "DELETE" => Operation::Delete,
            other => {
                return Err(ApiError::new(
                    axum::http::StatusCode::METHOD_NOT_ALLOWED,
                    format!("unsupported method {other}"),
                ))
            }
        };
        Ok(VaultRequest { method: parts.method, uri: parts.uri, op, path, query, headers: parts.headers, body })
    }

    /// The client token: `X-Vault-Token`, else `Authorization: Bearer <token>`.
    pub fn token(&self) -> Option<&str> {
        token_from_headers(&self.headers)
    }

    /// The value of query parameter `name`, if present.
    pub fn query_param(&self, name: &str) -> Option<&str> {
        self.query.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    /// True if another node forwarded this request.
    pub fn was_forwarded(&self) -> bool {
        self.headers.contains_key(FORWARDED_HEADER)
    }

    /// The body as a JSON object; an empty body is an empty object.
    pub fn json_body(&self) -> Result<Map<String, Value>, ApiError> {
        if self.body.iter().all(u8::is_ascii_whitespace) {
            return Ok(Map::new());
        }
        crate::engines::decode_json_object(&self.body)
            .map_err(|e| ApiError::bad_request(format!("failed to parse JSON input: {e}")))
    }
}

/// Reads an optional string field of a JSON body.
pub fn optional_string(body: &Map<String, Value>, field: &str) -> Result<Option<String>, ApiError> {
    match body.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(ApiError::bad_request(format!("field {field:?} must be a string"))),
    }
}

/// Reads a required, non-empty string field of a JSON body.
pub fn required_string(body: &Map<String, Value>, field: &str) -> Result<String, ApiError> {
    match optional_string(body, field)? {
        Some(s) if !s.trim().is_empty() => Ok(s),
        _ => Err(ApiError::bad_request(format!("missing required field {field:?}"))),
    }
}

/// Parses a boolean query value the way Vault's `parseutil.ParseBool` does.
pub fn parse_bool(name: &str, value: &str) -> Result<bool, ApiError> {
    match value.to_ascii_lowercase().as_str() {
        "" | "1" | "t" | "true" => Ok(true),
        "0" | "f" | "false" => Ok(false),
        _ => Err(ApiError::bad_request(format!("invalid value for {name:?}: {value:?} is not a boolean"))),
    }
}

/// The client token of a request: `X-Vault-Token`, else `Authorization: Bearer <token>`.
pub fn token_from_headers(headers: &HeaderMap) -> Option<&str> {
    if let Some(token) = headers.get("x-vault-token").and_then(|v| v.to_str().ok()) {
        return Some(token.trim()).filter(|t| !t.is_empty());
    }
    let auth = headers.get("authorization")?.to_str().ok()?;
    let token = auth.strip_prefix("Bearer ").or_else(|| auth.strip_prefix("bearer "))?;
    Some(token.trim()).filter(|t| !t.is_empty())
}

/// Decodes a query string into its parameters, in order.
pub fn parse_query(query: &str) -> Result<Vec<(String, String)>, ApiError> {
    let decode = |s: &str| {
        percent_decode(&s.replace('+', " ")).ok_or_else(|| ApiError::bad_request("invalid percent-encoding in query"))
    };
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            Ok((decode(k)?, decode(v)?))
        })
        .collect()
}

/// Decodes `%XX` escapes; `None` for a malformed escape or non-UTF-8 result.
pub fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(method: &str, uri: &str, headers: &[(&str, &str)]) -> Result<VaultRequest, ApiError> {
        let mut builder = axum::http::Request::builder().method(method).uri(uri);
        for (k, v) in headers {
            builder = builder.header(*k, *v);
        }
        let (parts, ()) = builder.body(()).expect("request").into_parts();
        VaultRequest::parse(parts, Bytes::new())
    }

    #[test]
    fn operations_paths_and_queries() {
        let r = request("GET", "/v1/kv/a%20b?list=true&x=1", &[]).unwrap();
        assert_eq!((r.op, r.path.as_str(), r.query_param("x")), (Operation::List, "kv/a b", Some("1")));
        assert_eq!(request("LIST", "/v1/kv/", &[]).unwrap().op, Operation::List);
        assert_eq!(request("POST", "/v1/kv/a", &[]).unwrap().op, Operation::Update);
        assert_eq!(request("PATCH", "/v1/kv/a", &[]).unwrap().op, Operation::Patch);
        assert_eq!(request("GET", "/v1/kv/%zz", &[]).unwrap_err().status, 400);
        assert_eq!(request("OPTIONS", "/v1/kv/a", &[]).unwrap_err().status, 405);
        assert_eq!(request("GET", "/v2/kv/a", &[]).unwrap_err().status, 404);
    }

    #[test]
    fn token_from_either_header() {
        assert_eq!(request("GET", "/v1/x", &[("X-Vault-Token", "t1")]).unwrap().token(), Some("t1"));
        assert_eq!(request("GET", "/v1/x", &[("Authorization", "Bearer t2")]).unwrap().token(), Some("t2"));
        assert_eq!(request("GET", "/v1/x", &[("Authorization", "Basic abc")]).unwrap().token(), None);
        assert_eq!(request("GET", "/v1/x", &[("X-Vault-Token", "")]).unwrap().token(), None);
    }

    #[test]
    fn vault_booleans() {
        assert!(parse_bool("standbyok", "true").unwrap());
        assert!(parse_bool("standbyok", "").unwrap());
        assert!(!parse_bool("standbyok", "F").unwrap());
        assert_eq!(
            parse_bool("standbyok", "yes").unwrap_err().errors,
            vec!["invalid value for \"standbyok\": \"yes\" is not a boolean"]
        );
    }
}
