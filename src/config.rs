//! Node configuration, read from an HCL file shaped like Vault's server configuration.
//!
//! Why it is built this way:
//!
//! - The file is parsed with `hcl-edit` (reached as [`hcl::edit`], which `hcl-rs` re-exports), not
//!   deserialized through serde. The edit parser keeps a byte span for every attribute and block, so
//!   every error can point at a line, and walking the syntax tree by hand lets each error name the
//!   dotted path of what is wrong (`storage.raft.node_id`) instead of serde's generic messages.
//! - It is strict: unknown or misplaced fields, wrong types, duplicates and unsupported block types
//!   are errors. A typo in one node's config (say `node-id`) would otherwise be silently ignored and
//!   surface much later as a confusing cluster failure.
//! - All validation happens here, once, so the rest of the server can trust a [`Config`]: socket
//!   addresses are parsed, URLs are checked and normalised (no trailing `/`), defaults are filled in.
//! - Errors read like a compiler's, `file:line: field: message`, and the first one found is reported.
//! - Nothing here panics, whatever the input. Because the HCL parser is recursive and would overflow
//!   the stack (an abort, not an error) on absurdly nested input, a small lexer first bounds nesting
//!   and operator count; real files are nowhere near the limits (see `crate::hcl_util`).

use std::net::{Ipv6Addr, SocketAddr};
use std::ops::Range;
use std::path::{Path, PathBuf};

use hcl::edit::expr::Expression;
use hcl::edit::structure::{Attribute, Block, Body, Structure};
use hcl::edit::Span;

/// One node's configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// `storage "raft" { ... }`: where and how this node keeps its Raft log and state.
    pub storage: RaftStorageConfig,
    /// `listener "tcp" { ... }`: the sockets this node listens on.
    pub listener: ListenerConfig,
    /// The URL other nodes and forwarded clients use to reach this node's API, e.g. `http://127.0.0.1:8200`.
    pub api_addr: String,
    /// The URL other nodes use to reach this node's cluster (Raft) port, e.g. `http://127.0.0.1:8201`.
    pub cluster_addr: String,
    /// When true this node, as a follower, is a plain standby that forwards reads too.
    pub disable_performance_standby: bool,
    /// Log filter (`trace`, `debug`, `info`, `warn`, `error`, or a tracing directive). Default `info`.
    pub log_level: String,
    /// `events { ... }`: how long the event log keeps events (applied by whichever node is active).
    pub events: EventsConfig,
}

/// `events` block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventsConfig {
    /// Keep at most this many events.
    pub retention_count: u64,
    /// Trim events older than this (written as a Vault duration, e.g. `"24h"` or `"7d"`).
    pub retention_age: std::time::Duration,
}

impl Default for EventsConfig {
    /// One million events or 24 hours, whichever is reached first: a day of moderate traffic (about 10 writes/s)
    /// stays resumable.
    fn default() -> Self {
        EventsConfig { retention_count: 1_000_000, retention_age: std::time::Duration::from_secs(24 * 3600) }
    }
}

/// `storage "raft"` block.
#[derive(Debug, Clone, PartialEq)]
pub struct RaftStorageConfig {
    /// Directory holding this node's database.
    pub path: PathBuf,
    /// This node's Raft node id, a non-empty name such as `node1`.
    pub node_id: String,
    /// Leaders to join at start-up when this node is not yet part of a cluster.
    pub retry_join: Vec<RetryJoin>,
    /// Take a snapshot after this many log entries since the last one (Vault's `snapshot_threshold`).
    pub snapshot_threshold: u64,
    /// Keep this many log entries behind a snapshot before purging (Vault's `trailing_logs`).
    pub trailing_logs: u64,
}

/// `retry_join` block inside `storage "raft"`.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryJoin {
    /// API address of a cluster member to join through, e.g. `http://127.0.0.1:8200`.
    pub leader_api_addr: String,
    /// File holding a token allowed to join nodes (read at each attempt); `VIGIL_TOKEN` is used when unset.
    pub leader_token_file: Option<PathBuf>,
}

/// `listener "tcp"` block.
#[derive(Debug, Clone, PartialEq)]
pub struct ListenerConfig {
    /// API socket address.
    pub address: SocketAddr,
    /// Cluster (Raft transport) socket address.
    pub cluster_address: SocketAddr,
}

/// Why a configuration file was rejected.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{file}:{line}: {field}: {message}")]
pub struct ConfigError {
    pub file: String,
    pub line: usize,
    pub field: String,
    pub message: String,
}

impl Config {
    /// `log_level` when the file does not set it.
    pub const DEFAULT_LOG_LEVEL: &'static str = "info";

    /// Reads and validates the configuration file at `path`.
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: path.display().to_string(),
            line: 0,
            field: "-".into(),
            message: e.to_string(),
        })?;
        Config::parse(&text, &path.display().to_string())
    }

    /// Parses configuration text; `file` names it in errors.
    pub fn parse(text: &str, file: &str) -> Result<Config, ConfigError> {
        // A UTF-8 byte order mark is not HCL; dropping it shifts offsets but not line numbers.
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let src = Source { text, file };
        crate::hcl_util::check_parser_limits(text)
            .map_err(|(offset, message)| src.error(src.line_of(Some(offset..offset), 1), "-", message))?;
        let body = hcl::edit::parser::parse_body(text).map_err(|e| {
            let location = e.location();
            src.error(location.line(), "-", format!("{} (column {})", e.message(), location.column()))
        })?;

        let top = Section::new(
            &src,
            &body,
            "",
            1,
            &["api_addr", "cluster_addr", "disable_performance_standby", "log_level"],
            &["storage", "listener", "events"],
        )?;

        let (storage_block, storage_line) = top.labeled_block(&src, "storage", "raft")?;
        let storage = RaftStorageConfig::parse(&src, storage_block, storage_line)?;

        let (listener_block, listener_line) = top.labeled_block(&src, "listener", "tcp")?;
        let listener = ListenerConfig::parse(&src, listener_block, listener_line)?;

        let (api_addr, line) = top.require(&src, "api_addr", top.string(&src, "api_addr")?)?;
        let api_addr = http_url(api_addr).map_err(|m| src.error(line, top.field("api_addr"), m))?;

        let (cluster_addr, line) = top.require(&src, "cluster_addr", top.string(&src, "cluster_addr")?)?;
        let cluster_addr = http_url(cluster_addr).map_err(|m| src.error(line, top.field("cluster_addr"), m))?;

        let disable_performance_standby =
            top.boolean(&src, "disable_performance_standby")?.is_some_and(|(value, _)| value);

        let log_level = match top.string(&src, "log_level")? {
            None => Config::DEFAULT_LOG_LEVEL.to_string(),
            Some(("", line)) => return Err(src.error(line, top.field("log_level"), "must not be empty")),
            Some((level, _)) => level.to_string(),
        };

        let mut events = EventsConfig::default();
        for (i, block) in top.blocks("events").enumerate() {
            let line = src.line_of(block.span(), 1);
            if i > 0 {
                return Err(src.error(line, "events", "duplicate block"));
            }
            if !block.labels.is_empty() {
                return Err(src.error(line, "events", "unexpected block label: write events { ... }"));
            }
            events = EventsConfig::parse(&src, block, line)?;
        }

        Ok(Config { storage, listener, api_addr, cluster_addr, disable_performance_standby, log_level, events })
    }
}

impl EventsConfig {
    fn parse(src: &Source<'_>, block: &Block, line: usize) -> Result<EventsConfig, ConfigError> {
        let s = Section::new(src, &block.body, "events", line, &["retention_count", "retention_age"], &[])?;
        let mut events = EventsConfig::default();
        if let Some(count) = s.positive_integer(src, "retention_count")? {
            events.retention_count = count;
        }
        if let Some((age, line)) = s.string(src, "retention_age")? {
            let secs = crate::engines::duration::parse_duration_seconds(age)
                .map_err(|m| src.error(line, s.field("retention_age"), format!("invalid duration {age:?}: {m}")))?;
            if secs < 1 {
                return Err(src.error(line, s.field("retention_age"), "must be at least 1s"));
            }
            events.retention_age = std::time::Duration::from_secs(secs.unsigned_abs());
        }
        Ok(events)
    }
}

impl RaftStorageConfig {
    /// `snapshot_threshold` when the file does not set it.
    pub const DEFAULT_SNAPSHOT_THRESHOLD: u64 = 8192;
    /// `trailing_logs` when the file does not set it.
    pub const DEFAULT_TRAILING_LOGS: u64 = 10_000;
    /// The longest accepted `node_id`, in characters.
    pub const MAX_NODE_ID_LEN: usize = 64;

    fn parse(src: &Source<'_>, block: &Block, line: usize) -> Result<RaftStorageConfig, ConfigError> {
        let s = Section::new(
            src,
            &block.body,
            "storage.raft",
            line,
            &["path", "node_id", "snapshot_threshold", "trailing_logs"],
            &["retry_join"],
        )?;

        let (path, line) = s.require(src, "path", s.string(src, "path")?)?;
        if path.is_empty() {
            return Err(src.error(line, s.field("path"), "must not be empty"));
        }

        let (node_id, line) = s.require(src, "node_id", s.string(src, "node_id")?)?;
        check_node_id(node_id).map_err(|m| src.error(line, s.field("node_id"), m))?;

        let snapshot_threshold =
            s.positive_integer(src, "snapshot_threshold")?.unwrap_or(RaftStorageConfig::DEFAULT_SNAPSHOT_THRESHOLD);
        let trailing_logs =
            s.positive_integer(src, "trailing_logs")?.unwrap_or(RaftStorageConfig::DEFAULT_TRAILING_LOGS);

        let mut retry_join = Vec::new();
        for block in s.blocks("retry_join") {
            let line = src.line_of(block.span(), s.line);
            if !block.labels.is_empty() {
                return Err(src.error(line, s.field("retry_join"), "unexpected block label: write retry_join { ... }"));
            }
            retry_join.push(RetryJoin::parse(src, block, line)?);
        }

        Ok(RaftStorageConfig {
            path: PathBuf::from(path),
            node_id: node_id.to_string(),
            retry_join,
            snapshot_threshold,
            trailing_logs,
        })
    }
}

impl RetryJoin {
    fn parse(src: &Source<'_>, block: &Block, line: usize) -> Result<RetryJoin, ConfigError> {
        let s = Section::new(
            src,
            &block.body,
            "storage.raft.retry_join",
            line,
            &["leader_api_addr", "leader_token_file"],
            &[],
        )?;

        let (addr, line) = s.require(src, "leader_api_addr", s.string(src, "leader_api_addr")?)?;
        let leader_api_addr = http_url(addr).map_err(|m| src.error(line, s.field("leader_api_addr"), m))?;

        let leader_token_file = match s.string(src, "leader_token_file")? {
            None => None,
            Some(("", line)) => return Err(src.error(line, s.field("leader_token_file"), "must not be empty")),
            Some((file, _)) => Some(PathBuf::from(file)),
        };

        Ok(RetryJoin { leader_api_addr, leader_token_file })
    }
}

impl ListenerConfig {
    fn parse(src: &Source<'_>, block: &Block, line: usize) -> Result<ListenerConfig, ConfigError> {
        let s =
            Section::new(src, &block.body, "listener.tcp", line, &["address", "cluster_address", "tls_disable"], &[])?;

        let (address, line) = s.require(src, "address", s.string(src, "address")?)?;
        let address = socket_addr(address).map_err(|m| src.error(line, s.field("address"), m))?;

        let (cluster_address, line) = s.require(src, "cluster_address", s.string(src, "cluster_address")?)?;
        let cluster_address =
            socket_addr(cluster_address).map_err(|m| src.error(line, s.field("cluster_address"), m))?;
        // Port 0 asks the OS for any free port, so two such addresses do not collide.
        if cluster_address == address && address.port() != 0 {
            return Err(src.error(line, s.field("cluster_address"), "must differ from listener.tcp.address"));
        }

        if let Some((false, line)) = s.boolean(src, "tls_disable")? {
            return Err(src.error(line, s.field("tls_disable"), "TLS is not supported yet: set tls_disable = true"));
        }

        Ok(ListenerConfig { address, cluster_address })
    }
}

/// The text being parsed and its name, to turn byte offsets into [`ConfigError`]s.
struct Source<'a> {
    text: &'a str,
    file: &'a str,
}

impl Source<'_> {
    /// The 1-based line holding the start of `span`, or `fallback` when the parser gave no span.
    fn line_of(&self, span: Option<Range<usize>>, fallback: usize) -> usize {
        crate::hcl_util::line_of(self.text, span, fallback)
    }

    fn error(&self, line: usize, field: impl Into<String>, message: impl Into<String>) -> ConfigError {
        ConfigError { file: self.file.to_string(), line, field: field.into(), message: message.into() }
    }
}

/// One body (the top level or a block's), checked against the attribute and block names it allows.
struct Section<'b> {
    /// Dotted path of the body, e.g. `storage.raft`; empty at the top level.
    path: &'static str,
    /// Line of the enclosing block (1 at the top level), where missing fields are reported.
    line: usize,
    attributes: Vec<&'b Attribute>,
    blocks: Vec<&'b Block>,
}

impl<'b> Section<'b> {
    /// Rejects unknown names, attributes written as blocks and vice versa, and duplicate attributes.
    fn new(
        src: &Source<'_>,
        body: &'b Body,
        path: &'static str,
        line: usize,
        attribute_names: &[&str],
        block_names: &[&str],
    ) -> Result<Section<'b>, ConfigError> {
        let mut section = Section { path, line, attributes: Vec::new(), blocks: Vec::new() };
        for structure in body.iter() {
            match structure {
                Structure::Attribute(attr) => {
                    let name = attr.key.as_str();
                    let line = section.attribute_line(src, attr);
                    if block_names.contains(&name) {
                        return Err(src.error(
                            line,
                            section.field(name),
                            format!("expected a block: {name} {{ ... }}"),
                        ));
                    }
                    if !attribute_names.contains(&name) {
                        return Err(src.error(line, section.field(name), "unknown field"));
                    }
                    if let Some(first) = section.attribute(name) {
                        let first = section.attribute_line(src, first);
                        return Err(src.error(
                            line,
                            section.field(name),
                            format!("duplicate attribute (first set on line {first})"),
                        ));
                    }
                    section.attributes.push(attr);
                }
                Structure::Block(block) => {
                    let name = block.ident.as_str();
                    let line = src.line_of(block.span().or_else(|| block.ident.span()), section.line);
                    if attribute_names.contains(&name) {
                        return Err(src.error(
                            line,
                            section.field(name),
                            format!("expected an attribute, not a block: {name} = ..."),
                        ));
                    }
                    if !block_names.contains(&name) {
                        return Err(src.error(line, section.field(name), "unknown field"));
                    }
                    section.blocks.push(block);
                }
            }
        }
        Ok(section)
    }

    /// The dotted path of `name` in this section.
    fn field(&self, name: &str) -> String {
        if self.path.is_empty() {
            name.to_string()
        } else {
            format!("{}.{name}", self.path)
        }
    }

    fn attribute(&self, name: &str) -> Option<&'b Attribute> {
        self.attributes.iter().copied().find(|attr| attr.key.as_str() == name)
    }

    fn attribute_line(&self, src: &Source<'_>, attr: &Attribute) -> usize {
        src.line_of(attr.span().or_else(|| attr.key.span()).or_else(|| attr.value.span()), self.line)
    }

    fn blocks<'s>(&'s self, name: &'s str) -> impl Iterator<Item = &'b Block> + 's {
        self.blocks.iter().copied().filter(move |block| block.ident.as_str() == name)
    }

    /// The single `kind "label" { ... }` block this section must hold, and its line.
    fn labeled_block(&self, src: &Source<'_>, kind: &str, supported: &str) -> Result<(&'b Block, usize), ConfigError> {
        let mut found: Option<(&'b Block, usize)> = None;
        for block in self.blocks(kind) {
            let line = src.line_of(block.span().or_else(|| block.ident.span()), self.line);
            match block.labels.as_slice() {
                [label] if label.as_str() == supported => {}
                [label] => {
                    return Err(src.error(
                        line,
                        self.field(kind),
                        format!("unsupported {kind} type {:?}: only {supported:?} is supported", label.as_str()),
                    ))
                }
                _ => {
                    return Err(src.error(
                        line,
                        self.field(kind),
                        format!("expected exactly one label: {kind} {supported:?} {{ ... }}"),
                    ))
                }
            }
            if let Some((_, first)) = found {
                return Err(src.error(
                    line,
                    self.field(kind),
                    format!("duplicate block (first defined on line {first})"),
                ));
            }
            found = Some((block, line));
        }
        found.ok_or_else(|| {
            src.error(self.line, self.field(kind), format!("missing required block: {kind} {supported:?} {{ ... }}"))
        })
    }

    /// `value`, or a "missing required field" error for `name` at the enclosing block's line.
    fn require<T>(&self, src: &Source<'_>, name: &str, value: Option<T>) -> Result<T, ConfigError> {
        value.ok_or_else(|| src.error(self.line, self.field(name), "missing required field"))
    }

    /// Looks `name` up and converts its value with `convert`, which returns `None` on a type mismatch.
    fn typed<T>(
        &self,
        src: &Source<'_>,
        name: &str,
        expected: &str,
        convert: impl FnOnce(&'b Expression) -> Option<T>,
    ) -> Result<Option<(T, usize)>, ConfigError> {
        let Some(attr) = self.attribute(name) else {
            return Ok(None);
        };
        let line = self.attribute_line(src, attr);
        match convert(&attr.value) {
            Some(value) => Ok(Some((value, line))),
            None => Err(src.error(line, self.field(name), format!("expected {expected}"))),
        }
    }

    /// A string attribute (a plain quoted string: no interpolation, no heredoc), with its line.
    fn string(&self, src: &Source<'_>, name: &str) -> Result<Option<(&'b str, usize)>, ConfigError> {
        if let Some(attr) = self.attribute(name) {
            if matches!(attr.value, Expression::StringTemplate(_) | Expression::HeredocTemplate(_)) {
                let line = self.attribute_line(src, attr);
                return Err(src.error(
                    line,
                    self.field(name),
                    "expected a plain string: interpolations and heredocs are not supported",
                ));
            }
        }
        self.typed(src, name, "a string", |expr| match expr {
            Expression::String(s) => Some(s.value().as_str()),
            _ => None,
        })
    }

    fn boolean(&self, src: &Source<'_>, name: &str) -> Result<Option<(bool, usize)>, ConfigError> {
        self.typed(src, name, "a boolean", |expr| match expr {
            Expression::Bool(b) => Some(*b.value()),
            _ => None,
        })
    }

    /// An integer attribute that must be at least 1.
    fn positive_integer(&self, src: &Source<'_>, name: &str) -> Result<Option<u64>, ConfigError> {
        let value = self.typed(src, name, "a non-negative integer", |expr| match expr {
            Expression::Number(n) if !n.value().is_f64() => n.value().as_u64(),
            _ => None,
        })?;
        match value {
            Some((0, line)) => Err(src.error(line, self.field(name), "must be at least 1")),
            other => Ok(other.map(|(n, _)| n)),
        }
    }
}

/// Checks a Raft node id: 1 to [`RaftStorageConfig::MAX_NODE_ID_LEN`] characters from `[A-Za-z0-9._-]`.
fn check_node_id(id: &str) -> Result<(), String> {
    if id.is_empty() {
        return Err("must not be empty".into());
    }
    let valid_chars = id.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if !valid_chars || id.len() > RaftStorageConfig::MAX_NODE_ID_LEN {
        return Err(format!(
            "invalid node id {id:?}: use 1 to {} characters from A-Z, a-z, 0-9, '.', '_' and '-'",
            RaftStorageConfig::MAX_NODE_ID_LEN
        ));
    }
    Ok(())
}

/// Parses an `IP:port` socket address (`127.0.0.1:8200`, `[::1]:8200`; no host names).
fn socket_addr(text: &str) -> Result<SocketAddr, String> {
    text.parse().map_err(|_| format!("invalid socket address {text:?}: expected IP:port, e.g. \"127.0.0.1:8200\""))
}

/// Checks an `http://host:port` or `https://host:port` URL (an optional trailing `/` is allowed) and
/// returns it without the trailing `/`.
fn http_url(text: &str) -> Result<String, String> {
    let invalid = |why: &str| format!("invalid URL {text:?}: {why}; expected http://host:port or https://host:port");
    let Some(rest) = text.strip_prefix("http://").or_else(|| text.strip_prefix("https://")) else {
        return Err(invalid("the scheme must be http or https"));
    };
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    if authority.contains(['/', '?', '#']) {
        return Err(invalid("a path, query or fragment is not allowed"));
    }
    if authority.contains('@') {
        return Err(invalid("user info is not allowed"));
    }
    let (host, port) = if let Some(bracketed) = authority.strip_prefix('[') {
        // IPv6 literal: [addr]:port
        let Some((addr, after)) = bracketed.split_once(']') else {
            return Err(invalid("unterminated IPv6 address"));
        };
        if addr.parse::<Ipv6Addr>().is_err() {
            return Err(invalid("invalid IPv6 address"));
        }
        match after.strip_prefix(':') {
            Some(port) => (addr, port),
            None => return Err(invalid("the port is missing")),
        }
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) => (host, port),
            None => return Err(invalid("the port is missing")),
        }
    };
    let host_ok = !host.is_empty()
        && (authority.starts_with('[')
            || host.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_')));
    if !host_ok {
        return Err(invalid("invalid host"));
    }
    if port.is_empty() {
        return Err(invalid("the port is missing"));
    }
    match port.parse::<u16>() {
        Ok(p) if p != 0 && port.bytes().all(|b| b.is_ascii_digit()) => {}
        _ => return Err(invalid("the port must be a number from 1 to 65535")),
    }
    Ok(text.strip_suffix('/').unwrap_or(text).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The smallest valid file; the bad cases below are edits of it, so their line numbers are easy to check.
    const MINIMAL: &str = r#"storage "raft" {
  path    = "data/node1"
  node_id = "node1"
}
listener "tcp" {
  address         = "127.0.0.1:8200"
  cluster_address = "127.0.0.1:8201"
}
api_addr     = "http://127.0.0.1:8200"
cluster_addr = "http://127.0.0.1:8201"
"#;

    fn parse(text: &str) -> Result<Config, String> {
        Config::parse(text, "test.hcl").map_err(|e| e.to_string())
    }

    #[test]
    fn full_config() {
        // Shared with the parser fuzzing (tests/fuzz_parsers.rs), which mutates it.
        let text = include_str!("../tests/fixtures/full-config.hcl");
        let config = Config::parse(text, "test.hcl").map_err(|e| e.to_string());
        assert_eq!(
            config,
            Ok(Config {
                storage: RaftStorageConfig {
                    path: PathBuf::from(".cluster/node2"),
                    node_id: "node-2.east_1".into(),
                    retry_join: vec![
                        RetryJoin { leader_api_addr: "http://127.0.0.1:8200".into(), leader_token_file: None },
                        RetryJoin {
                            leader_api_addr: "https://[::1]:8300".into(),
                            leader_token_file: Some(PathBuf::from(".cluster/root-token")),
                        },
                    ],
                    snapshot_threshold: 100,
                    trailing_logs: 50,
                },
                listener: ListenerConfig {
                    address: SocketAddr::from(([0, 0, 0, 0], 8210)),
                    cluster_address: SocketAddr::from((Ipv6Addr::LOCALHOST, 8211)),
                },
                api_addr: "http://127.0.0.1:8210".into(),
                cluster_addr: "https://node2.example.com:8211".into(),
                disable_performance_standby: true,
                log_level: "vigil=debug,info".into(),
                events: EventsConfig {
                    retention_count: 500,
                    retention_age: std::time::Duration::from_secs(7 * 86_400)
                },
            })
        );
    }

    #[test]
    fn defaults() {
        let config = parse(MINIMAL);
        assert_eq!(
            config,
            Ok(Config {
                storage: RaftStorageConfig {
                    path: PathBuf::from("data/node1"),
                    node_id: "node1".into(),
                    retry_join: vec![],
                    snapshot_threshold: 8192,
                    trailing_logs: 10_000,
                },
                listener: ListenerConfig {
                    address: SocketAddr::from(([127, 0, 0, 1], 8200)),
                    cluster_address: SocketAddr::from(([127, 0, 0, 1], 8201)),
                },
                api_addr: "http://127.0.0.1:8200".into(),
                cluster_addr: "http://127.0.0.1:8201".into(),
                disable_performance_standby: false,
                log_level: "info".into(),
                events: EventsConfig::default(),
            })
        );
    }

    #[test]
    fn the_example_from_the_docs_parses() {
        let text = r#"storage "raft" {
  path    = ".cluster/node1"
  node_id = "node1"
  retry_join { leader_api_addr = "http://127.0.0.1:8200" }
}
listener "tcp" {
  address         = "127.0.0.1:8200"
  cluster_address = "127.0.0.1:8201"
  tls_disable     = true
}
api_addr     = "http://127.0.0.1:8200"
cluster_addr = "http://127.0.0.1:8201"
disable_performance_standby = false
log_level = "info"   # optional
"#;
        let config = parse(text);
        assert!(config.is_ok(), "{config:?}");
    }

    #[test]
    fn byte_order_mark_and_crlf_are_accepted() {
        let text = format!("\u{feff}{}", MINIMAL.replace('\n', "\r\n"));
        assert_eq!(parse(&text), parse(MINIMAL));
        // Lines are still counted right after a BOM and with CRLF line endings.
        let text = text.replace("\"node1\"", "\"node 1\"");
        assert_eq!(
            parse(&text),
            Err("test.hcl:3: storage.raft.node_id: invalid node id \"node 1\": \
                 use 1 to 64 characters from A-Z, a-z, 0-9, '.', '_' and '-'"
                .into())
        );
    }

    #[test]
    fn bad_configs() {
        let retry_join = "  node_id = \"node1\"\n  retry_join {\n    leader_api_addr = \"http://127.0.0.1:8200\"\n";
        let cases: Vec<(&str, String, &str)> = vec![
            (
                "unknown top-level field",
                format!("{MINIMAL}ui = true\n"),
                "test.hcl:11: ui: unknown field",
            ),
            (
                "unknown field in events",
                format!("{MINIMAL}events {{\n  retention = 5\n}}\n"),
                "test.hcl:12: events.retention: unknown field",
            ),
            (
                "bad retention_age",
                format!("{MINIMAL}events {{\n  retention_age = \"a day\"\n}}\n"),
                "test.hcl:12: events.retention_age: invalid duration \"a day\": time: invalid duration \"a day\"",
            ),
            (
                "zero retention_count",
                format!("{MINIMAL}events {{\n  retention_count = 0\n}}\n"),
                "test.hcl:12: events.retention_count: must be at least 1",
            ),
            (
                "duplicate events block",
                format!("{MINIMAL}events {{\n}}\nevents {{\n}}\n"),
                "test.hcl:13: events: duplicate block",
            ),
            (
                "unknown top-level block",
                format!("{MINIMAL}seal \"awskms\" {{\n}}\n"),
                "test.hcl:11: seal: unknown field",
            ),
            (
                "unknown field in storage",
                MINIMAL.replace("  node_id = \"node1\"\n", "  node_id = \"node1\"\n  bogus = 1\n"),
                "test.hcl:4: storage.raft.bogus: unknown field",
            ),
            (
                "unknown field in listener",
                MINIMAL.replace("8201\"\n}", "8201\"\n  tls_cert_file = \"cert.pem\"\n}"),
                "test.hcl:8: listener.tcp.tls_cert_file: unknown field",
            ),
            (
                "unknown field in retry_join",
                MINIMAL.replace("  node_id = \"node1\"\n", &format!("{retry_join}    token = \"s.x\"\n  }}\n")),
                "test.hcl:6: storage.raft.retry_join.token: unknown field",
            ),
            (
                "wrong type: number for a string",
                MINIMAL.replace("\"node1\"", "1"),
                "test.hcl:3: storage.raft.node_id: expected a string",
            ),
            (
                "wrong type: string for a boolean",
                format!("{MINIMAL}disable_performance_standby = \"true\"\n"),
                "test.hcl:11: disable_performance_standby: expected a boolean",
            ),
            (
                "wrong type: string for an integer",
                MINIMAL.replace("  node_id = \"node1\"\n", "  node_id = \"node1\"\n  trailing_logs = \"5\"\n"),
                "test.hcl:4: storage.raft.trailing_logs: expected a non-negative integer",
            ),
            (
                "wrong type: negative integer",
                MINIMAL.replace("  node_id = \"node1\"\n", "  node_id = \"node1\"\n  trailing_logs = -5\n"),
                "test.hcl:4: storage.raft.trailing_logs: expected a non-negative integer",
            ),
            (
                "wrong type: fraction",
                MINIMAL.replace("  node_id = \"node1\"\n", "  node_id = \"node1\"\n  trailing_logs = 2.5\n"),
                "test.hcl:4: storage.raft.trailing_logs: expected a non-negative integer",
            ),
            (
                "wrong type: interpolation",
                MINIMAL.replace("\"data/node1\"", "\"${env}/node1\""),
                "test.hcl:2: storage.raft.path: expected a plain string: interpolations and heredocs are not supported",
            ),
            (
                "attribute where a block is expected",
                MINIMAL.replace("  node_id = \"node1\"\n", "  node_id = \"node1\"\n  retry_join = \"x\"\n"),
                "test.hcl:4: storage.raft.retry_join: expected a block: retry_join { ... }",
            ),
            (
                "block where an attribute is expected",
                MINIMAL.replace("  node_id = \"node1\"\n", "  node_id {\n  }\n"),
                "test.hcl:3: storage.raft.node_id: expected an attribute, not a block: node_id = ...",
            ),
            (
                "missing node_id",
                MINIMAL.replace("  node_id = \"node1\"\n", ""),
                "test.hcl:1: storage.raft.node_id: missing required field",
            ),
            (
                "missing node_id with the storage block further down",
                format!("\n\n{}", MINIMAL.replace("  node_id = \"node1\"\n", "")),
                "test.hcl:3: storage.raft.node_id: missing required field",
            ),
            (
                "missing api_addr",
                MINIMAL.replace("api_addr     = \"http://127.0.0.1:8200\"\n", ""),
                "test.hcl:1: api_addr: missing required field",
            ),
            (
                "unknown block",
                MINIMAL.replace("listener \"tcp\"", "listen \"tcp\""),
                "test.hcl:5: listen: unknown field",
            ),
            (
                "missing listener block",
                MINIMAL.replace(
                    "listener \"tcp\" {\n  address         = \"127.0.0.1:8200\"\n  cluster_address = \"127.0.0.1:8201\"\n}\n",
                    "",
                ),
                "test.hcl:1: listener: missing required block: listener \"tcp\" { ... }",
            ),
            (
                "missing storage block",
                MINIMAL.replacen("storage \"raft\" {\n  path    = \"data/node1\"\n  node_id = \"node1\"\n}\n", "", 1),
                "test.hcl:1: storage: missing required block: storage \"raft\" { ... }",
            ),
            (
                "missing leader_api_addr",
                MINIMAL.replace("  node_id = \"node1\"\n", "  node_id = \"node1\"\n  retry_join {\n  }\n"),
                "test.hcl:4: storage.raft.retry_join.leader_api_addr: missing required field",
            ),
            (
                "empty path",
                MINIMAL.replace("\"data/node1\"", "\"\""),
                "test.hcl:2: storage.raft.path: must not be empty",
            ),
            (
                "empty node_id",
                MINIMAL.replace("\"node1\"", "\"\""),
                "test.hcl:3: storage.raft.node_id: must not be empty",
            ),
            (
                "node_id too long",
                MINIMAL.replace("\"node1\"", &format!("\"{}\"", "n".repeat(65))),
                "test.hcl:3: storage.raft.node_id: invalid node id \"nnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnn\": \
                 use 1 to 64 characters from A-Z, a-z, 0-9, '.', '_' and '-'",
            ),
            (
                "node_id with a slash",
                MINIMAL.replace("\"node1\"", "\"a/b\""),
                "test.hcl:3: storage.raft.node_id: invalid node id \"a/b\": \
                 use 1 to 64 characters from A-Z, a-z, 0-9, '.', '_' and '-'",
            ),
            (
                "bad socket address",
                MINIMAL.replace("\"127.0.0.1:8200\"", "\"localhost:8200\""),
                "test.hcl:6: listener.tcp.address: invalid socket address \"localhost:8200\": \
                 expected IP:port, e.g. \"127.0.0.1:8200\"",
            ),
            (
                "socket address without a port",
                MINIMAL.replace("\"127.0.0.1:8201\"", "\"127.0.0.1\""),
                "test.hcl:7: listener.tcp.cluster_address: invalid socket address \"127.0.0.1\": \
                 expected IP:port, e.g. \"127.0.0.1:8200\"",
            ),
            (
                "same API and cluster address",
                MINIMAL.replace("\"127.0.0.1:8201\"", "\"127.0.0.1:8200\""),
                "test.hcl:7: listener.tcp.cluster_address: must differ from listener.tcp.address",
            ),
            (
                "api_addr without a scheme",
                MINIMAL.replace("\"http://127.0.0.1:8200\"", "\"127.0.0.1:8200\""),
                "test.hcl:9: api_addr: invalid URL \"127.0.0.1:8200\": the scheme must be http or https; \
                 expected http://host:port or https://host:port",
            ),
            (
                "cluster_addr without a port",
                MINIMAL.replace("\"http://127.0.0.1:8201\"", "\"http://127.0.0.1\""),
                "test.hcl:10: cluster_addr: invalid URL \"http://127.0.0.1\": the port is missing; \
                 expected http://host:port or https://host:port",
            ),
            (
                "leader_api_addr with a path",
                MINIMAL.replace("  node_id = \"node1\"\n", "  node_id = \"node1\"\n  retry_join { leader_api_addr = \"http://a:1/v1\" }\n"),
                "test.hcl:4: storage.raft.retry_join.leader_api_addr: invalid URL \"http://a:1/v1\": \
                 a path, query or fragment is not allowed; expected http://host:port or https://host:port",
            ),
            (
                "unsupported storage type",
                MINIMAL.replace("storage \"raft\"", "storage \"file\""),
                "test.hcl:1: storage: unsupported storage type \"file\": only \"raft\" is supported",
            ),
            (
                "unsupported listener type",
                MINIMAL.replace("listener \"tcp\"", "listener \"unix\""),
                "test.hcl:5: listener: unsupported listener type \"unix\": only \"tcp\" is supported",
            ),
            (
                "storage without a label",
                MINIMAL.replace("storage \"raft\"", "storage"),
                "test.hcl:1: storage: expected exactly one label: storage \"raft\" { ... }",
            ),
            (
                "duplicate listener block",
                format!("{MINIMAL}listener \"tcp\" {{\n  address = \"127.0.0.1:9200\"\n}}\n"),
                "test.hcl:11: listener: duplicate block (first defined on line 5)",
            ),
            (
                "duplicate storage block",
                format!("{MINIMAL}\nstorage \"raft\" {{\n}}\n"),
                "test.hcl:12: storage: duplicate block (first defined on line 1)",
            ),
            (
                "duplicate attribute (rejected by the HCL parser itself)",
                MINIMAL.replace("  node_id = \"node1\"\n", "  node_id = \"node1\"\n  node_id = \"node2\"\n"),
                "test.hcl:4: -: invalid attribute; expected unique attribute key; found redefined attribute (column 3)",
            ),
            (
                "tls_disable = false",
                MINIMAL.replace("8201\"\n}", "8201\"\n  tls_disable = false\n}"),
                "test.hcl:8: listener.tcp.tls_disable: TLS is not supported yet: set tls_disable = true",
            ),
            (
                "syntax error: a value is missing",
                MINIMAL.replace("  address         = ", "  address = = "),
                "test.hcl:6: -: invalid expression; expected `\"`, `[`, `{`, `-`, `!`, `(`, `_`, `<`, letter or digit \
                 (column 13)",
            ),
            (
                "syntax error: a block is not closed (reported at the end of the file)",
                MINIMAL.replace("8201\"\n}\n", "8201\"\n"),
                "test.hcl:9: -: invalid block body; expected `}`, newline or identifier (column 40)",
            ),
            (
                "zero snapshot_threshold",
                MINIMAL.replace("  node_id = \"node1\"\n", "  node_id = \"node1\"\n  snapshot_threshold = 0\n"),
                "test.hcl:4: storage.raft.snapshot_threshold: must be at least 1",
            ),
            (
                "empty log_level",
                format!("{MINIMAL}log_level = \"\"\n"),
                "test.hcl:11: log_level: must not be empty",
            ),
            (
                "empty leader_token_file",
                MINIMAL.replace("  node_id = \"node1\"\n", &format!("{retry_join}    leader_token_file = \"\"\n  }}\n")),
                "test.hcl:6: storage.raft.retry_join.leader_token_file: must not be empty",
            ),
        ];
        let mut failures = Vec::new();
        for (name, text, expected) in &cases {
            match parse(text) {
                Err(got) if got == *expected => {}
                got => failures.push(format!("{name}:\n  expected Err({expected:?})\n  got      {got:?}")),
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }

    #[test]
    fn urls() {
        let ok = [
            ("http://127.0.0.1:8200", "http://127.0.0.1:8200"),
            ("https://vault.example.com:443/", "https://vault.example.com:443"),
            ("http://[::1]:8200", "http://[::1]:8200"),
            ("http://node-1:65535", "http://node-1:65535"),
        ];
        for (input, want) in ok {
            assert_eq!(http_url(input).as_deref(), Ok(want), "{input}");
        }
        let bad = [
            "",
            "http://",
            "http://:8200",
            "ftp://a:1",
            "HTTP://a:1",
            "http://a",
            "http://a:",
            "http://a:0",
            "http://a:65536",
            "http://a:+80",
            "http://a:80//",
            "http://a:80?x",
            "http://u@a:80",
            "http://[::1]",
            "http://[::1:80",
            "http://[zz]:80",
            "http://a b:80",
            "http://::1:80",
        ];
        for input in bad {
            assert!(http_url(input).is_err(), "{input} should be rejected");
        }
    }

    #[test]
    fn io_error_has_line_zero() {
        let err = Config::from_file(Path::new("/nonexistent/vigil.hcl"));
        assert!(matches!(&err, Err(ConfigError { line: 0, field, .. }) if field == "-"), "{err:?}");
    }

    #[test]
    fn from_file_names_the_file() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let path = dir.path().join("node.hcl");
        std::fs::write(&path, MINIMAL.replace("\"node1\"", "2")).expect("write the config");
        let err = Config::from_file(&path).map_err(|e| e.to_string());
        assert_eq!(err, Err(format!("{}:3: storage.raft.node_id: expected a string", path.display())));
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_stack_overflow() {
        let n = 100_000;
        let cases = [
            (format!("a = {}{}\n", "[".repeat(n), "]".repeat(n)), "nested too deeply (more than 32 levels)"),
            (format!("a = {}1{}\n", "(".repeat(n), ")".repeat(n)), "nested too deeply (more than 32 levels)"),
            (format!("{}{}", "b {\n".repeat(n), "}\n".repeat(n)), "nested too deeply (more than 32 levels)"),
            (format!("a = {}1{}\n", "\"${".repeat(n), "}\"".repeat(n)), "nested too deeply (more than 32 levels)"),
            (format!("a = {}1\n", "-".repeat(n)), "too many operators (more than 64): use literal values"),
            (format!("a = {}x\n", "!".repeat(n)), "too many operators (more than 64): use literal values"),
            (format!("a = {}1\n", "1 + ".repeat(n)), "too many operators (more than 64): use literal values"),
            (format!("a = {}1\n", "x ? 1 : ".repeat(n)), "too many operators (more than 64): use literal values"),
            (format!("a = 1 == {}1\n", "1 == ".repeat(n)), "too many operators (more than 64): use literal values"),
            (
                format!("a = \"{}{}\"\n", "%{ if x }".repeat(n), "%{ endif }".repeat(n)),
                "too many operators (more than 64): use literal values",
            ),
            // Heredocs are not lexed: from `<<` on, every opening counts and none closes.
            (format!("a = <<EOF\n{}\nEOF\n", "${[]}".repeat(n)), "nested too deeply (more than 32 levels)"),
        ];
        for (text, message) in cases {
            let err = Config::parse(&text, "deep.hcl").map_err(|e| (e.line, e.field, e.message));
            assert!(matches!(&err, Err((_, field, m)) if field == "-" && m == message), "{err:?}");
        }
    }

    #[test]
    fn brackets_and_dashes_in_strings_and_comments_do_not_count() {
        let noise = format!("# {}\n// {}\n/* {} */\n", "-[(".repeat(100), "!{".repeat(100), "\n+((".repeat(100));
        let text =
            format!("{noise}{MINIMAL}").replace("\"data/node1\"", &format!("\"{}\\\"$${{%%{{\"", "/-[(".repeat(100)));
        let config = parse(&text).map(|c| c.storage.path);
        assert_eq!(config, Ok(PathBuf::from(format!("{}\"${{%{{", "/-[(".repeat(100)))));
    }

    #[test]
    fn never_panics_on_mangled_input() {
        // Every prefix, and every single-byte deletion, of a full file: errors are fine, panics are not.
        let text = MINIMAL.replace(
            "  node_id = \"node1\"\n",
            "  node_id = \"node1\"\n  retry_join { leader_api_addr = \"http://[::1]:1\" }\n",
        );
        for i in 0..=text.len() {
            if text.is_char_boundary(i) {
                let _ = Config::parse(&text[..i], "t");
                let mut cut = text.clone();
                if i < text.len() {
                    cut.remove(i);
                    let _ = Config::parse(&cut, "t");
                }
            }
        }
    }
}
