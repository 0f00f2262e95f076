//! `GET /v1/sys/events/subscribe/{eventType}`: event notifications over WebSocket.
//!
//! Before the upgrade, the request goes through the same checks as every other endpoint, in the same order: the
//! node must be initialized, the token must exist here, and it needs `read` on `sys/events/subscribe/<pattern>`.
//! Then the node decides whether it serves the subscription: the active node and performance standbys do, from
//! their own applied event log; a plain standby — or a follower that does not know the token yet, or any follower
//! asked with a limited-use token (uses are counted on the active node) — answers 307 to the leader's `api_addr`
//! with the `ws` scheme, and 503 when no leader is known.
//!
//! After the upgrade the subscription is a loop over this node's [`EventBus`]: it delivers every event after its
//! cursor that matches the pattern and filter and that the token may see, then waits for the bus to move. Before
//! each batch it re-checks the token when tokens or policies changed, so a revocation or policy change applied
//! before an event is in force for that event; a token that is gone or expired ends the subscription with a
//! policy-violation close frame. The server pings every 30 s and ignores what the client sends, except Close.
//!
//! Frames are protobuf `EventReceived` (Vault's `event.proto`) by default, or CloudEvents JSON with `json=true`.
//! Both carry the event's `sequence`; `since=<sequence>` or a `Last-Event-ID` header resumes after it. The 101
//! answer names the starting cursor in `X-Vigil-Event-Sequence` (the `since` given, or the head at that moment),
//! so a client that subscribed without `since` can still resume without a gap before its first event.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use prost::Message as _;
use serde_json::{json, Value};

use super::error::ApiError;
use super::request::{parse_query, percent_decode};
use super::Api;
use crate::engines::events::bus::{BusError, EventBus, Published};
use crate::engines::events::filter::Filter;
use crate::engines::events::{may_see, Event};
use crate::engines::policy::{glob_matches, Acl, Capability};
use crate::engines::tokens::{self, TokenEntry};
use crate::engines::{policy_store, tokens::TokenCommand, Command, Engines};
use crate::proto;

/// The path prefix of the endpoint, after `/v1/`.
pub const SUBSCRIBE_PREFIX: &str = "sys/events/subscribe";
/// Handshake response header: the sequence the subscription starts after. A client that resumes with
/// `since=<this>` (until it has seen an event) misses nothing, even if it subscribed without `since`.
pub const CURSOR_HEADER: &str = "x-vigil-event-sequence";
/// How often the server pings an open subscription.
const PING_INTERVAL: Duration = Duration::from_secs(30);
/// Events handed out per batch; between batches the token is re-checked if tokens or policies changed.
const BATCH: usize = 256;
/// Close code for "your token is gone or no longer allowed" (RFC 6455 policy violation).
const CLOSE_POLICY_VIOLATION: u16 = 1008;
/// Close code (application range) for "the events after your cursor were trimmed": HTTP 410's number.
const CLOSE_GONE: u16 = 4410;
/// Close code for an internal failure (RFC 6455).
const CLOSE_INTERNAL: u16 = 1011;

/// Which encoding a subscription asked for; also the slot of [`Published::encoded`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Protobuf = 0,
    CloudEventsJson = 1,
}

/// A validated subscription request.
struct SubscribeRequest {
    pattern: String,
    format: Format,
    filter: Option<Filter>,
    since: Option<u64>,
}

/// Whether `path` (after `/v1/`, percent-encoded) is this endpoint.
pub fn is_subscribe_path(raw_path: &str) -> bool {
    raw_path == SUBSCRIBE_PREFIX || raw_path.starts_with("sys/events/subscribe/")
}

/// Handles a subscription request (its head only: the body is never read).
pub async fn subscribe(api: Arc<Api>, mut parts: Parts) -> Response {
    let mut response = match prepare(&api, &mut parts).await {
        Ok(response) => response,
        Err(e) => e.into_response(),
    };
    // A body was sent and is left unread, so the server will not reuse this connection: say so, or a client that
    // pools connections would send its next request into a closing one.
    let has_body = parts.headers.contains_key(header::TRANSFER_ENCODING)
        || parts.headers.get(header::CONTENT_LENGTH).is_some_and(|v| v.as_bytes() != b"0");
    if has_body && response.status() != StatusCode::SWITCHING_PROTOCOLS {
        response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

async fn prepare(api: &Arc<Api>, parts: &mut Parts) -> Result<Response, ApiError> {
    if parts.method != Method::GET {
        return Err(ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("unsupported method {}: subscribe with GET and a WebSocket upgrade", parts.method),
        ));
    }
    let request = SubscribeRequest::parse(parts)?;
    let node = api.node();
    if !node.is_initialized() {
        return Err(ApiError::unavailable("this node is not initialized"));
    }
    let leader = node.is_leader();
    let token_id = super::request::token_from_headers(&parts.headers);
    let state = api.engines.state();
    let token = match token_id.map(|id| tokens::lookup(&state, id)).transpose().map_err(ApiError::from)?.flatten() {
        Some(token) if !token.is_expired(tokens::now_unix_nanos()) => token,
        // A follower may not have applied a brand-new token yet: the leader decides.
        None if token_id.is_some() && !leader => return redirect_to_leader(api, parts).await,
        _ => return Err(ApiError::permission_denied()),
    };
    let acl = policy_store::acl_for(&state, &token).map_err(ApiError::from)?;
    if !acl.allows(&format!("{SUBSCRIBE_PREFIX}/{}", request.pattern), Capability::Read) {
        return Err(ApiError::permission_denied());
    }
    if !leader && (!api.performance_standby || token.num_uses > 0) {
        return redirect_to_leader(api, parts).await;
    }
    if token.num_uses > 0 {
        let command = Command::Token(TokenCommand::Use { id_hash: token.id_hash.clone() });
        api.engines.execute(&command).await.map_err(|e| match e {
            crate::engines::Error::Apply(crate::engines::ApplyError::NotFound) => ApiError::permission_denied(),
            e => ApiError::from(e),
        })?;
    }
    let status = api.engines.events().status();
    let cursor = match request.since {
        Some(since) if since < status.trimmed_through => {
            return Err(ApiError::new(
                StatusCode::GONE,
                format!(
                    "events after sequence {since} are no longer retained: the event log starts after sequence {}; \
                     resubscribe with since={} or later, or without since",
                    status.trimmed_through, status.trimmed_through
                ),
            ))
        }
        Some(since) => since,
        None => status.last_sequence,
    };
    let upgrade = WebSocketUpgrade::from_request_parts(parts, &()).await.map_err(|e| {
        ApiError::bad_request(format!(
            "this endpoint needs a WebSocket upgrade (Connection: Upgrade): {}",
            e.body_text()
        ))
    })?;
    let subscription = Subscription {
        engines: api.engines.clone(),
        token_hash: token.id_hash.clone(),
        expires: token.expire_unix_nanos,
        acl,
        request,
        cursor,
    };
    let mut response = upgrade
        // Clients send nothing but control frames: small buffers keep idle subscriptions cheap.
        .read_buffer_size(4 * 1024)
        .write_buffer_size(16 * 1024)
        .max_message_size(64 * 1024)
        .on_upgrade(move |socket| subscription.run(socket));
    response.headers_mut().insert(CURSOR_HEADER, HeaderValue::from(cursor));
    Ok(response)
}

impl SubscribeRequest {
    fn parse(parts: &Parts) -> Result<SubscribeRequest, ApiError> {
        let raw = parts.uri.path().strip_prefix("/v1/").unwrap_or("");
        let raw_pattern = raw.strip_prefix(SUBSCRIBE_PREFIX).unwrap_or("").trim_start_matches('/');
        let pattern =
            percent_decode(raw_pattern).ok_or_else(|| ApiError::bad_request("invalid percent-encoding in path"))?;
        if pattern.is_empty() {
            return Err(ApiError::bad_request(
                "missing event type: subscribe to /v1/sys/events/subscribe/{eventType}, e.g. kv-v2/data-write or kv*",
            ));
        }
        let query = parse_query(parts.uri.query().unwrap_or(""))?;
        let param = |name: &str| query.iter().rev().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
        let format = match param("json") {
            None => Format::Protobuf,
            Some(value) => match parse_bool(value) {
                Some(true) => Format::CloudEventsJson,
                Some(false) => Format::Protobuf,
                None => {
                    return Err(ApiError::bad_request(format!(
                        "invalid value {value:?} for json: expected true or false"
                    )))
                }
            },
        };
        let filter = match param("filter") {
            None | Some("") => None,
            Some(expression) => Some(Filter::parse(expression).map_err(|e| ApiError::bad_request(e.to_string()))?),
        };
        let last_event_id = parts.headers.get("last-event-id").map(|v| v.to_str().unwrap_or("\u{fffd}"));
        let since = match (param("since"), last_event_id) {
            (Some(value), _) => Some(parse_cursor("since", value)?),
            (None, Some(value)) => Some(parse_cursor("Last-Event-ID", value)?),
            (None, None) => None,
        };
        Ok(SubscribeRequest { pattern, format, filter, since })
    }
}

/// Go's `strconv.ParseBool`, which Vault uses for query flags.
fn parse_bool(value: &str) -> Option<bool> {
    match value {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Some(false),
        _ => None,
    }
}

fn parse_cursor(name: &str, value: &str) -> Result<u64, ApiError> {
    value.trim().parse::<u64>().map_err(|_| {
        ApiError::bad_request(format!(
            "invalid {name} {value:?}: expected an event sequence number (a non-negative integer)"
        ))
    })
}

/// 307 to the same path and query on the leader, with the `ws`/`wss` scheme; 503 with no leader.
async fn redirect_to_leader(api: &Api, parts: &Parts) -> Result<Response, ApiError> {
    let Some((_, leader)) = api.node().wait_for_leader(None, super::forward::LEADER_WAIT).await else {
        return Err(ApiError::unavailable("no active node is known (the cluster has no leader); retry"));
    };
    let base = if let Some(rest) = leader.api_addr.strip_prefix("https://") {
        format!("wss://{rest}")
    } else {
        format!("ws://{}", leader.api_addr.strip_prefix("http://").unwrap_or(&leader.api_addr))
    };
    let path_and_query = parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let location = HeaderValue::from_str(&format!("{base}{path_and_query}"))
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("bad leader address: {e}")))?;
    Ok((StatusCode::TEMPORARY_REDIRECT, [(header::LOCATION, location)]).into_response())
}

/// Why a subscription ended, as the close frame tells the client.
struct Ending {
    code: u16,
    reason: String,
}

/// One open subscription.
struct Subscription {
    engines: Engines,
    token_hash: String,
    /// When the token expires (leader clock, nanoseconds), if it does.
    expires: Option<i64>,
    acl: Acl,
    request: SubscribeRequest,
    /// The sequence of the last event this subscription has passed (delivered or skipped).
    cursor: u64,
}

impl Subscription {
    async fn run(mut self, socket: WebSocket) {
        let (mut sink, mut stream) = socket.split();
        let bus = self.engines.events().clone();
        let mut status = bus.watch();
        let mut auth_epoch = status.borrow().auth_epoch;
        let mut ping = tokio::time::interval(PING_INTERVAL);
        ping.reset(); // the first tick would fire at once
        let ending = loop {
            // Deliver everything up to what is applied now, re-checking the token first if it may have changed.
            let current = *status.borrow_and_update();
            if current.auth_epoch != auth_epoch {
                auth_epoch = current.auth_epoch;
                if let Err(ending) = self.reauthorize() {
                    break Some(ending);
                }
            }
            if let Err(ending) = self.check_expiry() {
                break Some(ending);
            }
            match self.deliver(&bus, current.last_sequence, &mut sink).await {
                Ok(true) => continue, // more to send: go round (and re-check the token) first
                Ok(false) => {}
                Err(Some(ending)) => break Some(ending),
                Err(None) => break None, // the client went away
            }
            tokio::select! {
                changed = status.changed() => if changed.is_err() { break None },
                _ = ping.tick() => {
                    if sink.send(Message::Ping(Bytes::new())).await.is_err() {
                        break None;
                    }
                }
                _ = sleep_until_nanos(self.expires) => {}
                frame = stream.next() => match frame {
                    Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break None,
                    Some(Ok(_)) => {} // clients' frames are ignored
                },
            }
        };
        if let Some(Ending { code, reason }) = ending {
            tracing::debug!(code, %reason, "closing event subscription");
            let frame = CloseFrame { code, reason: Utf8Bytes::from(reason) };
            let _ = sink.send(Message::Close(Some(frame))).await;
        }
    }

    /// Sends the visible events after the cursor, up to `through`, one batch at most. `Ok(true)`: more remain.
    async fn deliver(
        &mut self,
        bus: &EventBus,
        through: u64,
        sink: &mut futures_util::stream::SplitSink<WebSocket, Message>,
    ) -> Result<bool, Option<Ending>> {
        let batch = match bus.events_after(self.cursor, through, BATCH) {
            Ok(batch) => batch,
            Err(e @ BusError::Gone { .. }) => return Err(Some(Ending { code: CLOSE_GONE, reason: e.to_string() })),
            Err(BusError::Storage(e)) => {
                tracing::error!(error = %e, "cannot read the event log for a subscription");
                return Err(Some(Ending { code: CLOSE_INTERNAL, reason: "cannot read the event log".into() }));
            }
        };
        let Some(last) = batch.last().map(|p| p.event.sequence) else { return Ok(false) };
        let mut sent = false;
        for published in &batch {
            if self.visible(&published.event) {
                sink.feed(self.frame(published)).await.map_err(|_| None)?;
                sent = true;
            }
        }
        if sent {
            sink.flush().await.map_err(|_| None)?;
        }
        self.cursor = last;
        Ok(last < through)
    }

    fn visible(&self, event: &Event) -> bool {
        if !glob_matches(&self.request.pattern, &event.event_type) {
            return false;
        }
        if let Some(filter) = &self.request.filter {
            if !filter.matches(&event.filter_fields()) {
                return false;
            }
        }
        may_see(&self.acl, event)
    }

    fn frame(&self, published: &Published) -> Message {
        let format = self.request.format;
        let bytes = published.encoded(format as usize, |event| match format {
            Format::Protobuf => Bytes::from(protobuf_frame(event).encode_to_vec()),
            Format::CloudEventsJson => Bytes::from(cloud_event(event).to_string()),
        });
        match format {
            Format::Protobuf => Message::Binary(bytes),
            // Built from a serde_json string just above, so always UTF-8.
            Format::CloudEventsJson => Message::Text(Utf8Bytes::try_from(bytes).unwrap_or_default()),
        }
    }

    /// Reloads the token and its ACL after tokens or policies changed.
    fn reauthorize(&mut self) -> Result<(), Ending> {
        let state = self.engines.state();
        let gone = || Ending { code: CLOSE_POLICY_VIOLATION, reason: "the subscription's token was revoked".into() };
        let token: TokenEntry = match tokens::lookup_hash(&state, &self.token_hash) {
            Ok(Some(token)) => token,
            Ok(None) => return Err(gone()),
            Err(e) => {
                tracing::error!(error = %e, "cannot re-check a subscription's token");
                return Err(Ending { code: CLOSE_INTERNAL, reason: "cannot check the token".into() });
            }
        };
        self.expires = token.expire_unix_nanos;
        match policy_store::acl_for(&state, &token) {
            Ok(acl) => self.acl = acl,
            Err(e) => {
                tracing::error!(error = %e, "cannot re-check a subscription's policies");
                return Err(Ending { code: CLOSE_INTERNAL, reason: "cannot check the token's policies".into() });
            }
        }
        // Losing `read` on the subscribe path itself ends the subscription too.
        if !self.acl.allows(&format!("{SUBSCRIBE_PREFIX}/{}", self.request.pattern), Capability::Read) {
            return Err(Ending {
                code: CLOSE_POLICY_VIOLATION,
                reason: "the token may no longer subscribe to this event type".into(),
            });
        }
        Ok(())
    }

    fn check_expiry(&self) -> Result<(), Ending> {
        match self.expires {
            Some(at) if tokens::now_unix_nanos() >= at => {
                Err(Ending { code: CLOSE_POLICY_VIOLATION, reason: "the subscription's token expired".into() })
            }
            _ => Ok(()),
        }
    }
}

/// Sleeps until the wall-clock instant `at` (nanoseconds since the epoch), or forever for `None`.
async fn sleep_until_nanos(at: Option<i64>) {
    match at {
        Some(at) => {
            let wait = u64::try_from(at.saturating_sub(tokens::now_unix_nanos())).unwrap_or(0);
            tokio::time::sleep(Duration::from_nanos(wait)).await;
        }
        None => std::future::pending().await,
    }
}

/// The event as Vault's protobuf `EventReceived`, with Vigil's cursor extension.
pub fn protobuf_frame(event: &Event) -> proto::EventReceived {
    use prost_types::value::Kind;
    let metadata = prost_types::Struct {
        fields: event
            .metadata
            .iter()
            .map(|(k, v)| (k.clone(), prost_types::Value { kind: Some(Kind::StringValue(v.clone())) }))
            .collect(),
    };
    proto::EventReceived {
        event: Some(proto::EventData {
            id: event.id.clone(),
            metadata: Some(metadata),
            entity_ids: Vec::new(),
            note: String::new(),
        }),
        namespace: String::new(),
        event_type: event.event_type.clone(),
        plugin_info: Some(plugin_info(event)),
        sequence: event.sequence,
    }
}

fn plugin_info(event: &Event) -> proto::EventPluginInfo {
    let info = &event.plugin_info;
    proto::EventPluginInfo {
        mount_class: info.mount_class.clone(),
        mount_accessor: info.mount_accessor.clone(),
        mount_path: info.mount_path.clone(),
        plugin: info.plugin.clone(),
        plugin_version: String::new(),
        version: info.version.clone(),
    }
}

/// The event as a CloudEvents 1.0 JSON object, shaped like Vault's (`data` in snake_case, empty fields omitted),
/// plus the `sequence` extension attribute: a string, as the CloudEvents sequence extension requires, zero-padded
/// to 20 digits so that it orders lexicographically as well as numerically.
pub fn cloud_event(event: &Event) -> Value {
    let time = chrono::DateTime::from_timestamp_nanos(event.time_unix_nanos)
        .to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
    json!({
        "id": event.id,
        "source": format!("vault://{}", event.source_node),
        "specversion": "1.0",
        "type": "*",
        "datacontenttype": "application/json",
        "time": time,
        "sequence": format!("{:020}", event.sequence),
        "data": {
            "event": { "id": event.id, "metadata": event.metadata },
            "event_type": event.event_type,
            "plugin_info": plugin_info(event).to_json(),
        },
    })
}
