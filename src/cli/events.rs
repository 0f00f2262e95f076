//! `vigil events subscribe <TYPE>`: follows event notifications over WebSocket and prints one JSON line per event.
//!
//! The command opens `GET /v1/sys/events/subscribe/<TYPE>` (`X-Vault-Token` header) and prints every event it
//! receives to stdout, one line each, flushed at once:
//!
//! - `--format json` (the default) asks for CloudEvents JSON frames (`json=true`) and prints each frame as received;
//! - `--format protobuf` asks for Vault's protobuf `EventReceived` frames and prints each as the same CloudEvents
//!   shape, restricted to what the frame carries: `{"id", "sequence", "data": {"event": {"id", "metadata"},
//!   "event_type", "plugin_info"}}` (no `source`, `time`, `type`...; empty fields omitted).
//!
//! `--filter` passes a go-bexpr expression to the server, `--since` resumes after an event sequence.
//!
//! **Addresses and failover.** The address comes from `--address`, else `VIGIL_ADDR`, else `VAULT_ADDR` (as for
//! every client command) and may list several nodes, comma-separated (`http://n1:8200,http://n2:8200`). The
//! first connection tries them in order and uses the first that accepts; if none does, the command fails (exit
//! 2). Redirects (a plain standby answers 307 to the leader) are followed, up to [`MAX_REDIRECTS`].
//!
//! **Reconnection.** When an established subscription is lost (socket error, end of stream, a close frame other
//! than the two fatal ones below, or no frame — not even the server's 30-second ping — for [`IDLE_TIMEOUT`]), the
//! command reconnects forever: each round tries every address in order; after a failed round it waits (200 ms,
//! doubling up to 2 s). It resumes with `since=<the sequence of the last event it printed>`; before it has printed
//! anything, with the original `--since`, or without one with the cursor the first subscription started at (the
//! server's `X-Vigil-Event-Sequence` handshake header), so nothing is skipped or printed twice.
//!
//! **Fatal errors** (exit 2, the reason on stderr, no reconnection): a 4xx answer to the handshake (bad filter or
//! cursor: 400, permission denied: 403, cursor no longer retained: 410, ...), and the close codes 1008 (the token
//! was revoked or expired, or lost its permission) and 4410 (the cursor fell out of the event log's retention).
//! A 5xx answer (503: no leader yet), a refused connection or a timeout make the command try the next address.
//!
//! Progress notes (connected, connection lost) go to stderr, so stdout carries only events.
//!
//! Why the arguments are parsed here: the global `--format` option of the other commands only knows `table` and
//! `json`, so `vigil events` takes the rest of its command line verbatim and parses it with [`EventsCli`].

use std::io::Write;
use std::time::{Duration, Instant};

use clap::Parser;
use futures_util::StreamExt;
use prost::Message as _;
use serde_json::{Map, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{HeaderValue, StatusCode};
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::logical::api_path;
use super::output::{self, CliError, CmdResult};
use super::Ctx;
use crate::client::TOKEN_HEADER;
use crate::http::events::CURSOR_HEADER;
use crate::proto;

/// Redirects followed during one handshake.
pub const MAX_REDIRECTS: usize = 10;
/// The longest one handshake (TCP connect, HTTP upgrade) may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// A subscription that delivers nothing, not even the server's ping (every 30 s), for this long is taken as lost.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(75);
/// The first wait after a failed reconnection round.
const BACKOFF_START: Duration = Duration::from_millis(200);
/// The longest wait between reconnection rounds.
const BACKOFF_MAX: Duration = Duration::from_secs(2);
/// A connection that lasted this long resets the backoff even if it delivered no event.
const HEALTHY_CONNECTION: Duration = Duration::from_secs(5);
/// Close code: the token was revoked or expired, or may no longer subscribe (RFC 6455 policy violation).
pub const CLOSE_POLICY_VIOLATION: u16 = 1008;
/// Close code: the events after the cursor were trimmed from the event log.
pub const CLOSE_GONE: u16 = 4410;

/// The usage line of `vigil events subscribe`.
pub const SUBSCRIBE_USAGE: &str =
    "vigil events subscribe <TYPE> [--filter <EXPR>] [--since <SEQ>] [--format <json|protobuf>]";

/// `vigil events`: the arguments after `events`, parsed on their own.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "vigil events",
    bin_name = "vigil events",
    about = "Event notifications: `vigil events subscribe <TYPE>` prints events as JSON lines",
    disable_version_flag = true
)]
pub struct EventsCli {
    /// The node's API address; several comma-separated addresses to fail over between
    /// [default: $VIGIL_ADDR, else $VAULT_ADDR, else http://127.0.0.1:8200].
    #[arg(long, global = true, value_name = "URL[,URL...]", help_heading = "Client options")]
    pub address: Option<String>,
    /// The token to authenticate with [default: $VIGIL_TOKEN, else $VAULT_TOKEN].
    #[arg(long, global = true, value_name = "TOKEN", help_heading = "Client options")]
    pub token: Option<String>,
    #[command(subcommand)]
    pub command: EventsCmd,
}

/// `vigil events <command>`.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum EventsCmd {
    /// Print the events of a type as JSON lines, one per event, reconnecting (and resuming) when the connection
    /// is lost.
    #[command(override_usage = SUBSCRIBE_USAGE)]
    Subscribe(SubscribeArgs),
}

/// The options of `vigil events subscribe`.
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
pub struct SubscribeArgs {
    /// The event type; `*` matches any run of characters (e.g. kv-v2/data-write, kv-v2/data-*, kv*).
    #[arg(value_name = "TYPE")]
    pub event_type: String,
    /// Only events matching this go-bexpr expression, e.g. 'data_path matches "^secret/data/app/"'.
    #[arg(long, value_name = "EXPR")]
    pub filter: Option<String>,
    /// Start after this event sequence (the `sequence` of the last event already processed).
    #[arg(long, value_name = "SEQ")]
    pub since: Option<u64>,
    /// The frames to ask the server for; both are printed as JSON lines.
    #[arg(long, value_enum, value_name = "FORMAT", default_value_t = EventFormat::Json)]
    pub format: EventFormat,
}

/// `--format` of `vigil events subscribe`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum EventFormat {
    /// CloudEvents JSON frames, printed as received.
    Json,
    /// Protobuf `EventReceived` frames, printed as CloudEvents-shaped JSON.
    Protobuf,
}

/// Long options of `vigil events` that take a value, accepted with one dash too (`-filter=...`).
const VALUE_OPTIONS: &[&str] = &["filter", "since", "format", "address", "token"];

/// Rewrites the Vault-style single-dash spellings of this command's long options (`-since=3`, `-filter EXPR`,
/// `-help`) to double-dash, like [`super::argv::normalize`] does for the other commands. The value following a
/// value-taking option and everything after `--` are left alone.
pub fn normalize(args: &[String]) -> Vec<String> {
    let mut out = Vec::with_capacity(args.len());
    let mut verbatim = false;
    let mut next_is_value = false;
    for arg in args {
        if verbatim || next_is_value {
            next_is_value = false;
            out.push(arg.clone());
            continue;
        }
        if arg == "--" {
            verbatim = true;
            out.push(arg.clone());
            continue;
        }
        let (single, body) = match arg.strip_prefix("--") {
            Some(body) => (false, body),
            None => match arg.strip_prefix('-') {
                Some(body) => (true, body),
                None => {
                    out.push(arg.clone());
                    continue;
                }
            },
        };
        let (name, has_value) = match body.split_once('=') {
            Some((name, _)) => (name, true),
            None => (body, false),
        };
        let takes_value = VALUE_OPTIONS.contains(&name);
        if !takes_value && name != "help" {
            out.push(arg.clone());
            continue;
        }
        next_is_value = takes_value && !has_value;
        out.push(if single { format!("-{arg}") } else { arg.clone() });
    }
    out
}

/// Runs `vigil events ...`; `args` are the arguments after `events`.
pub async fn run(ctx: &Ctx, args: &[String]) -> CmdResult {
    let argv = std::iter::once("vigil events".to_string()).chain(normalize(args));
    let cli = match EventsCli::try_parse_from(argv) {
        Ok(cli) => cli,
        Err(e) if e.exit_code() == 0 => {
            // --help
            let _ = e.print();
            return Ok(());
        }
        Err(e) => return Err(CliError { message: e.render().to_string().trim_end().to_string(), code: 2 }),
    };
    let address = cli.address.unwrap_or_else(|| ctx.client.addr().to_string());
    let token = cli.token.or_else(|| ctx.client.token().map(str::to_string)).map(|t| t.trim().to_string());
    let EventsCmd::Subscribe(args) = &cli.command;
    let bases = websocket_bases(&address)?;
    subscribe(&bases, token.as_deref(), args, &mut std::io::stdout()).await
}

/// The WebSocket base URLs (`ws://host:port`) of a comma-separated list of API addresses (`http://host:port`).
pub fn websocket_bases(list: &str) -> Result<Vec<String>, CliError> {
    let mut bases = Vec::new();
    for addr in list.split(',').map(|a| a.trim().trim_end_matches('/')).filter(|a| !a.is_empty()) {
        let lower = addr.to_ascii_lowercase();
        let rest = if lower.starts_with("http://") || lower.starts_with("ws://") {
            &addr[addr.find("://").unwrap_or(0) + 3..]
        } else if lower.starts_with("https://") || lower.starts_with("wss://") {
            return Err(CliError::local(format!(
                "Error: {addr}: https is not supported by Vigil's client; use http://"
            )));
        } else {
            return Err(CliError::local(format!(
                "Error: {addr}: the address must start with http:// (e.g. http://127.0.0.1:8200)"
            )));
        };
        if rest.is_empty() || rest.contains(['?', '#']) {
            return Err(CliError::local(format!("Error: {addr}: expected http://host:port")));
        }
        bases.push(format!("ws://{rest}"));
    }
    if bases.is_empty() {
        return Err(CliError::local("Error: the address is empty (expected e.g. http://127.0.0.1:8200)"));
    }
    Ok(bases)
}

/// The subscription URL on `base` (`ws://host:port`), resuming after `since`.
pub fn subscribe_url(base: &str, args: &SubscribeArgs, since: Option<u64>) -> String {
    let mut url = format!("{base}{}", api_path(&format!("sys/events/subscribe/{}", args.event_type)));
    let mut query = Vec::new();
    if args.format == EventFormat::Json {
        query.push("json=true".to_string());
    }
    if let Some(filter) = args.filter.as_deref().filter(|f| !f.is_empty()) {
        query.push(format!("filter={}", query_encode(filter)));
    }
    if let Some(since) = since {
        query.push(format!("since={since}"));
    }
    if !query.is_empty() {
        url.push('?');
        url.push_str(&query.join("&"));
    }
    url
}

/// Percent-encodes a query parameter value (everything but RFC 3986's unreserved characters).
fn query_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Where a redirect's `Location` points, resolved against the URL that answered (`ws`/`wss` scheme kept or
/// converted from `http`/`https`).
pub fn resolve_location(current: &str, location: &str) -> String {
    let location = location.trim();
    let lower = location.to_ascii_lowercase();
    if lower.starts_with("http://") {
        return format!("ws://{}", &location["http://".len()..]);
    }
    if lower.starts_with("https://") {
        return format!("wss://{}", &location["https://".len()..]);
    }
    if lower.starts_with("ws://") || lower.starts_with("wss://") {
        return location.to_string();
    }
    // Relative: keep the scheme and authority of the current URL.
    let scheme_end = current.find("://").map(|i| i + 3).unwrap_or(0);
    let authority_end = current[scheme_end..].find('/').map(|i| i + scheme_end).unwrap_or(current.len());
    if location.starts_with('/') {
        format!("{}{location}", &current[..authority_end])
    } else {
        format!("{}/{location}", &current[..authority_end])
    }
}

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Why one handshake did not produce a subscription.
#[derive(Debug)]
enum ConnectError {
    /// The server refused the request itself (4xx): trying elsewhere would not help.
    Fatal(CliError),
    /// This node cannot serve now (refused connection, timeout, 5xx...): try the next address.
    Retry(String),
}

/// An accepted subscription.
struct Opened {
    ws: Ws,
    /// The URL that accepted it (after redirects).
    url: String,
    /// The sequence it starts after, from the handshake's `X-Vigil-Event-Sequence` header.
    starts_after: Option<u64>,
}

/// Opens the subscription at `url`, following redirects.
async fn connect(url: String, token: Option<&str>, event_type: &str) -> Result<Opened, ConnectError> {
    let mut url = url;
    for _ in 0..=MAX_REDIRECTS {
        let mut request = url
            .as_str()
            .into_client_request()
            .map_err(|e| ConnectError::Fatal(CliError::local(format!("Error: invalid subscription URL {url}: {e}"))))?;
        if let Some(token) = token {
            let value = HeaderValue::from_str(token)
                .map_err(|_| ConnectError::Fatal(CliError::local("Error: the token is not a valid header value")))?;
            request.headers_mut().insert(TOKEN_HEADER, value);
        }
        let response = match tokio::time::timeout(CONNECT_TIMEOUT, tokio_tungstenite::connect_async(request)).await {
            Err(_) => return Err(ConnectError::Retry(format!("{url}: timed out after {CONNECT_TIMEOUT:?}"))),
            Ok(Ok((ws, response))) => {
                let starts_after = response
                    .headers()
                    .get(CURSOR_HEADER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<u64>().ok());
                return Ok(Opened { ws, url, starts_after });
            }
            Ok(Err(tungstenite::Error::Http(response))) => response,
            Ok(Err(e)) => return Err(ConnectError::Retry(format!("{url}: {e}"))),
        };
        let status = response.status();
        let location = response.headers().get("location").and_then(|v| v.to_str().ok());
        if status.is_redirection() {
            if let Some(location) = location {
                url = resolve_location(&url, location);
                continue;
            }
        }
        let body = response.body().as_deref().unwrap_or_default();
        let message = api_error(event_type, status, body);
        let retryable = status.is_server_error()
            || status.is_redirection()
            || status == StatusCode::REQUEST_TIMEOUT
            || status == StatusCode::TOO_MANY_REQUESTS;
        return Err(if retryable {
            ConnectError::Retry(format!("{url}: {message}"))
        } else {
            ConnectError::Fatal(CliError::remote(message))
        });
    }
    Err(ConnectError::Retry(format!("{url}: more than {MAX_REDIRECTS} redirects")))
}

/// A refused handshake as the other commands print API errors:
/// `Error subscribing to kv*: Code: 403. Errors:\n\n* permission denied`.
pub fn api_error(event_type: &str, status: StatusCode, body: &[u8]) -> String {
    let mut errors: Vec<String> = Vec::new();
    match serde_json::from_slice::<Value>(body) {
        Ok(json) => {
            if let Some(list) = json.get("errors").and_then(Value::as_array) {
                errors.extend(list.iter().map(|e| e.as_str().map(str::to_string).unwrap_or_else(|| e.to_string())));
            }
        }
        Err(_) => {
            let text = String::from_utf8_lossy(body);
            if !text.trim().is_empty() {
                errors.push(text.trim().to_string());
            }
        }
    }
    let mut message = format!("Error subscribing to {event_type}: Code: {}. Errors:\n", status.as_u16());
    if errors.is_empty() {
        message.push_str("\n* (the response carried no error message)");
    }
    for e in errors {
        message.push_str("\n* ");
        message.push_str(&e);
    }
    message
}

/// Tries every base in order; returns the first subscription opened, or every address's error.
async fn connect_any(
    bases: &[String],
    token: Option<&str>,
    args: &SubscribeArgs,
    since: Option<u64>,
) -> Result<Opened, Result<Vec<String>, CliError>> {
    let mut errors = Vec::new();
    for base in bases {
        match connect(subscribe_url(base, args, since), token, &args.event_type).await {
            Ok(opened) => return Ok(opened),
            Err(ConnectError::Fatal(e)) => return Err(Err(e)),
            Err(ConnectError::Retry(why)) => errors.push(why),
        }
    }
    Err(Ok(errors))
}

/// How reading a subscription ended.
enum StreamEnd {
    /// The connection is gone: reconnect.
    Lost(String),
    /// Stop with this error.
    Fatal(CliError),
    /// stdout was closed (e.g. `| head -3`): stop quietly.
    StdoutClosed,
}

/// Subscribes and prints events to `out` until a fatal error (or stdout closes), reconnecting as needed.
async fn subscribe(bases: &[String], token: Option<&str>, args: &SubscribeArgs, out: &mut impl Write) -> CmdResult {
    // The resume cursor: the last sequence printed, else --since, else where the first subscription started.
    let mut cursor = args.since;
    let Opened { mut ws, mut url, starts_after } = match connect_any(bases, token, args, cursor).await {
        Ok(opened) => opened,
        Err(Err(fatal)) => return Err(fatal),
        Err(Ok(errors)) => {
            return Err(CliError::remote(format!(
                "Error subscribing to {}: no node accepted the subscription:\n\n* {}",
                args.event_type,
                errors.join("\n* ")
            )))
        }
    };
    cursor = cursor.or(starts_after);
    output::err(&connected_note(&url, cursor));
    let mut backoff = BACKOFF_START;
    loop {
        let started = Instant::now();
        let printed_before = cursor;
        let why = match follow(&mut ws, &mut cursor, out).await {
            StreamEnd::Fatal(e) => return Err(e),
            StreamEnd::StdoutClosed => return Ok(()),
            StreamEnd::Lost(why) => why,
        };
        drop(ws);
        if cursor != printed_before || started.elapsed() >= HEALTHY_CONNECTION {
            backoff = BACKOFF_START;
        }
        output::err(&format!("Lost the subscription at {url}: {why}; reconnecting"));
        let mut round = 0u64;
        (ws, url) = loop {
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(BACKOFF_MAX);
            match connect_any(bases, token, args, cursor).await {
                Ok(opened) => break (opened.ws, opened.url),
                Err(Err(fatal)) => return Err(fatal),
                Err(Ok(errors)) => {
                    round += 1;
                    // Say why once, then every 30 rounds (about a minute), not every two seconds.
                    if round == 1 || round % 30 == 0 {
                        output::err(&format!("Could not reconnect yet, retrying:\n* {}", errors.join("\n* ")));
                    }
                }
            }
        };
        output::err(&connected_note(&url, cursor));
    }
}

fn connected_note(url: &str, cursor: Option<u64>) -> String {
    // The URL without its query (which may hold the filter).
    let url = url.split('?').next().unwrap_or(url);
    match cursor {
        Some(since) => format!("Subscribed at {url} (after sequence {since})"),
        None => format!("Subscribed at {url}"),
    }
}

/// Reads one subscription, printing its events and advancing `cursor`, until it ends.
async fn follow(ws: &mut Ws, cursor: &mut Option<u64>, out: &mut impl Write) -> StreamEnd {
    loop {
        let message = match tokio::time::timeout(IDLE_TIMEOUT, ws.next()).await {
            Err(_) => return StreamEnd::Lost(format!("nothing received for {IDLE_TIMEOUT:?}")),
            Ok(None) => return StreamEnd::Lost("the connection closed".into()),
            Ok(Some(Err(e))) => return StreamEnd::Lost(e.to_string()),
            Ok(Some(Ok(message))) => message,
        };
        let (line, sequence) = match message {
            Message::Text(text) => match json_line(text.as_str()) {
                Ok(printed) => printed,
                Err(e) => return StreamEnd::Fatal(e),
            },
            Message::Binary(bytes) => match proto::EventReceived::decode(bytes.as_ref()) {
                Ok(frame) => {
                    let sequence = (frame.sequence > 0).then_some(frame.sequence);
                    (protobuf_event_json(&frame).to_string(), sequence)
                }
                Err(e) => {
                    return StreamEnd::Fatal(CliError::remote(format!(
                        "Error: the server sent a binary frame that is not an EventReceived: {e}"
                    )))
                }
            },
            Message::Close(frame) => {
                let (code, reason) = match &frame {
                    Some(frame) => (u16::from(frame.code), frame.reason.as_str().to_string()),
                    None => (1005, String::new()),
                };
                return match close_outcome(code, &reason) {
                    Ok(why) => StreamEnd::Lost(why),
                    Err(e) => StreamEnd::Fatal(e),
                };
            }
            // tungstenite answers pings itself while the stream is read.
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => continue,
        };
        if writeln!(out, "{line}").and_then(|()| out.flush()).is_err() {
            return StreamEnd::StdoutClosed;
        }
        if let Some(sequence) = sequence {
            *cursor = Some(cursor.map_or(sequence, |c| c.max(sequence)));
        }
    }
}

/// A close frame: `Err` for the codes that end the command, `Ok(why)` for a connection to re-establish.
pub fn close_outcome(code: u16, reason: &str) -> Result<String, CliError> {
    let reason = if reason.is_empty() { "(no reason given)" } else { reason };
    match code {
        CLOSE_POLICY_VIOLATION => {
            Err(CliError::remote(format!("Error: the server ended the subscription (code {code}): {reason}")))
        }
        CLOSE_GONE => Err(CliError::remote(format!(
            "Error: the server ended the subscription (code {code}, events no longer retained): {reason}"
        ))),
        _ => Ok(format!("the server closed the connection (code {code}): {reason}")),
    }
}

/// The line to print for a JSON frame (the frame itself, on one line) and its sequence, if it has one.
pub fn json_line(text: &str) -> Result<(String, Option<u64>), CliError> {
    let value: Value = serde_json::from_str(text)
        .map_err(|e| CliError::remote(format!("Error: the server sent a text frame that is not JSON: {e}")))?;
    if !value.is_object() {
        return Err(CliError::remote(format!("Error: the server sent a frame that is not an event: {text}")));
    }
    let sequence = value.get("sequence").and_then(|s| match s {
        Value::String(s) => s.trim().parse::<u64>().ok(),
        other => other.as_u64(),
    });
    let text = text.trim();
    let line = if text.contains('\n') || text.contains('\r') { value.to_string() } else { text.to_string() };
    Ok((line, sequence))
}

/// A protobuf frame as CloudEvents-shaped JSON: `{"id", "sequence", "data": {"event": {"id", "metadata", ...},
/// "event_type", "plugin_info"}}`, with the fields the frame leaves empty omitted. `sequence` is zero-padded to
/// 20 digits, as in the JSON frames.
pub fn protobuf_event_json(frame: &proto::EventReceived) -> Value {
    let mut top = Map::new();
    let mut data = Map::new();
    if let Some(event) = &frame.event {
        let mut inner = Map::new();
        if !event.id.is_empty() {
            top.insert("id".into(), Value::String(event.id.clone()));
            inner.insert("id".into(), Value::String(event.id.clone()));
        }
        if let Some(metadata) = &event.metadata {
            inner.insert("metadata".into(), struct_json(metadata));
        }
        if !event.entity_ids.is_empty() {
            inner.insert("entity_ids".into(), event.entity_ids.iter().cloned().map(Value::String).collect());
        }
        if !event.note.is_empty() {
            inner.insert("note".into(), Value::String(event.note.clone()));
        }
        data.insert("event".into(), Value::Object(inner));
    }
    if frame.sequence > 0 {
        top.insert("sequence".into(), Value::String(format!("{:020}", frame.sequence)));
    }
    if !frame.namespace.is_empty() {
        data.insert("namespace".into(), Value::String(frame.namespace.clone()));
    }
    if !frame.event_type.is_empty() {
        data.insert("event_type".into(), Value::String(frame.event_type.clone()));
    }
    if let Some(info) = &frame.plugin_info {
        data.insert("plugin_info".into(), info.to_json());
    }
    top.insert("data".into(), Value::Object(data));
    Value::Object(top)
}

fn struct_json(s: &prost_types::Struct) -> Value {
    Value::Object(s.fields.iter().map(|(k, v)| (k.clone(), value_json(v))).collect())
}

fn value_json(v: &prost_types::Value) -> Value {
    use prost_types::value::Kind;
    match &v.kind {
        None | Some(Kind::NullValue(_)) => Value::Null,
        Some(Kind::NumberValue(n)) => serde_json::Number::from_f64(*n).map(Value::Number).unwrap_or(Value::Null),
        Some(Kind::StringValue(s)) => Value::String(s.clone()),
        Some(Kind::BoolValue(b)) => Value::Bool(*b),
        Some(Kind::StructValue(s)) => struct_json(s),
        Some(Kind::ListValue(list)) => list.values.iter().map(value_json).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{argv, Cli, Command};
    use prost_types::value::Kind;
    use serde_json::json;

    /// Parses a full command line the way the binary does: outer parse, then this module's.
    fn parse(args: &[&str]) -> Result<EventsCli, clap::Error> {
        let mut full = vec!["vigil", "events"];
        full.extend_from_slice(args);
        let cli = Cli::try_parse_from(argv::normalize(full))?;
        let Command::Events { args } = cli.command else { panic!("not an events command") };
        EventsCli::try_parse_from(std::iter::once("vigil events".to_string()).chain(normalize(&args)))
    }

    fn subscribe_args(args: &[&str]) -> SubscribeArgs {
        let mut full = vec!["subscribe"];
        full.extend_from_slice(args);
        let EventsCmd::Subscribe(args) = parse(&full).unwrap().command;
        args
    }

    #[test]
    fn subscribe_options_in_every_spelling() {
        let args = subscribe_args(&["kv*"]);
        assert_eq!(
            args,
            SubscribeArgs { event_type: "kv*".into(), filter: None, since: None, format: EventFormat::Json }
        );
        for spelling in [
            &["--filter", "a == b", "--since", "7", "--format", "protobuf", "kv-v2/*"][..],
            &["-filter=a == b", "-since=7", "-format=protobuf", "kv-v2/*"],
            &["kv-v2/*", "-filter", "a == b", "-since", "7", "-format", "protobuf"],
            &["--filter=a == b", "kv-v2/*", "--since=7", "--format=protobuf"],
        ] {
            assert_eq!(
                subscribe_args(spelling),
                SubscribeArgs {
                    event_type: "kv-v2/*".into(),
                    filter: Some("a == b".into()),
                    since: Some(7),
                    format: EventFormat::Protobuf,
                },
                "{spelling:?}"
            );
        }
        // The value of an option is never rewritten, nor anything after `--`.
        let norm = |args: &[&str]| normalize(&args.iter().map(|a| a.to_string()).collect::<Vec<_>>());
        assert_eq!(norm(&["-filter", "-since", "-x", "-help"]), ["--filter", "-since", "-x", "--help"]);
        assert_eq!(norm(&["-since=1", "--", "-format"]), ["--since=1", "--", "-format"]);
        let cli = parse(&["subscribe", "x", "-address=http://a:1,http://b:2", "-token", "t"]).unwrap();
        assert_eq!((cli.address.as_deref(), cli.token.as_deref()), (Some("http://a:1,http://b:2"), Some("t")));
        for bad in [
            &["subscribe"][..],
            &["subscribe", "x", "--format", "table"],
            &["subscribe", "x", "--since", "-1"],
            &["subscribe", "x", "y"],
            &["unsubscribe", "x"],
            &[],
        ] {
            assert_eq!(parse(bad).unwrap_err().exit_code(), 2, "{bad:?}");
        }
        assert_eq!(parse(&["subscribe", "--help"]).unwrap_err().kind(), clap::error::ErrorKind::DisplayHelp);
        assert_eq!(parse(&["-help"]).unwrap_err().kind(), clap::error::ErrorKind::DisplayHelp);
    }

    #[test]
    fn addresses() {
        assert_eq!(
            websocket_bases(" http://127.0.0.1:8200/ , HTTP://h:2,,ws://w:3").unwrap(),
            ["ws://127.0.0.1:8200", "ws://h:2", "ws://w:3"]
        );
        let err = websocket_bases("http://a:1,https://b:2").unwrap_err();
        assert_eq!(
            (err.code, err.message.as_str()),
            (1, "Error: https://b:2: https is not supported by Vigil's client; use http://")
        );
        assert!(websocket_bases("a:1").unwrap_err().message.contains("must start with http://"));
        assert!(websocket_bases(" , ").unwrap_err().message.contains("the address is empty"));
        assert!(websocket_bases("http://a:1?x=1").is_err());
    }

    #[test]
    fn urls() {
        let mut args = subscribe_args(&["kv-v2/data-*"]);
        assert_eq!(subscribe_url("ws://h:1", &args, None), "ws://h:1/v1/sys/events/subscribe/kv-v2/data-*?json=true");
        args.filter = Some(r#"data_path == "secret/data/a b""#.into());
        args.format = EventFormat::Protobuf;
        assert_eq!(
            subscribe_url("ws://h:1", &args, Some(42)),
            "ws://h:1/v1/sys/events/subscribe/kv-v2/data-*?filter=data_path%20%3D%3D%20%22secret%2Fdata%2Fa%20b%22&since=42"
        );
        args.filter = None;
        assert_eq!(subscribe_url("ws://h:1", &args, None), "ws://h:1/v1/sys/events/subscribe/kv-v2/data-*");

        let current = "ws://a:1/v1/sys/events/subscribe/kv*?json=true";
        assert_eq!(resolve_location(current, "ws://b:2/v1/x?y=1"), "ws://b:2/v1/x?y=1");
        assert_eq!(resolve_location(current, "http://b:2/v1/x"), "ws://b:2/v1/x");
        assert_eq!(resolve_location(current, "https://b:2/v1/x"), "wss://b:2/v1/x");
        assert_eq!(resolve_location(current, "/v1/y?since=3"), "ws://a:1/v1/y?since=3");
        assert_eq!(resolve_location("ws://a:1", "v1/y"), "ws://a:1/v1/y");
    }

    #[test]
    fn api_errors_and_close_codes() {
        assert_eq!(
            api_error("kv*", StatusCode::FORBIDDEN, br#"{"errors":["permission denied"]}"#),
            "Error subscribing to kv*: Code: 403. Errors:\n\n* permission denied"
        );
        assert_eq!(
            api_error("kv*", StatusCode::BAD_GATEWAY, b"upstream down\n"),
            "Error subscribing to kv*: Code: 502. Errors:\n\n* upstream down"
        );
        assert!(api_error("kv*", StatusCode::GONE, b"").ends_with("(the response carried no error message)"));

        let fatal = close_outcome(1008, "the subscription's token was revoked").unwrap_err();
        assert_eq!(fatal.code, 2);
        assert_eq!(
            fatal.message,
            "Error: the server ended the subscription (code 1008): the subscription's token was revoked"
        );
        assert!(close_outcome(4410, "gone").unwrap_err().message.contains("events no longer retained): gone"));
        assert_eq!(close_outcome(1011, "").unwrap(), "the server closed the connection (code 1011): (no reason given)");
        assert!(close_outcome(1000, "bye").is_ok());
    }

    #[test]
    fn json_frames_are_printed_verbatim() {
        let frame = r#"{"id":"e1","sequence":"00000000000000000012","data":{"event_type":"kv-v1/write"}}"#;
        assert_eq!(json_line(frame).unwrap(), (frame.to_string(), Some(12)));
        assert_eq!(json_line("{\n \"id\": \"x\"\n}").unwrap(), (r#"{"id":"x"}"#.to_string(), None));
        assert!(json_line("not json").is_err());
        assert!(json_line("[1]").is_err());
    }

    #[test]
    fn protobuf_frames_become_cloud_event_json() {
        let string = |s: &str| prost_types::Value { kind: Some(Kind::StringValue(s.into())) };
        let frame = proto::EventReceived {
            event: Some(proto::EventData {
                id: "e1".into(),
                metadata: Some(prost_types::Struct {
                    fields: [
                        ("path".to_string(), string("secret/data/a")),
                        ("n".to_string(), prost_types::Value { kind: Some(Kind::NumberValue(2.0)) }),
                    ]
                    .into_iter()
                    .collect(),
                }),
                entity_ids: vec![],
                note: String::new(),
            }),
            namespace: String::new(),
            event_type: "kv-v2/data-write".into(),
            plugin_info: Some(proto::EventPluginInfo {
                mount_class: "secret".into(),
                mount_accessor: "kv_1".into(),
                mount_path: "secret/".into(),
                plugin: "kv".into(),
                plugin_version: String::new(),
                version: "2".into(),
            }),
            sequence: 12,
        };
        assert_eq!(
            protobuf_event_json(&frame),
            json!({
                "id": "e1",
                "sequence": "00000000000000000012",
                "data": {
                    "event": {"id": "e1", "metadata": {"path": "secret/data/a", "n": 2.0}},
                    "event_type": "kv-v2/data-write",
                    "plugin_info": {
                        "mount_class": "secret", "mount_accessor": "kv_1", "mount_path": "secret/",
                        "plugin": "kv", "version": "2"
                    },
                },
            })
        );
        assert_eq!(protobuf_event_json(&proto::EventReceived::default()), json!({"data": {}}));
    }
}
