//! ACL policies: Vault's policy language (HCL `path` blocks with capabilities), and the ACL a token's policies
//! give it.
//!
//! This module is pure: it parses policy text and answers "what may be done at this path"; storing policies
//! (`policy_store`) and enforcing them on requests (`http::acl`) live elsewhere.
//!
//! # Policy syntax
//!
//! ```hcl
//! path "secret/data/app/*" {
//!   capabilities          = ["create", "read", "update", "patch", "delete", "list", "sudo", "subscribe"]
//!   subscribe_event_types = ["kv*"]
//! }
//! path "secret/data/app/locked" { capabilities = ["deny"] }
//! path "legacy/*" { policy = "write" }    # Vault's older form: read, write, sudo or deny
//! ```
//!
//! - A path is exact (`secret/foo`), a prefix glob (`secret/foo/*` matches everything under `secret/foo/`,
//!   `secret/zip-*` everything starting with `secret/zip-`, `*` everything), and may use `+` for exactly one
//!   whole path segment (`secret/+/teamb`, `secret/+/data/*`). `*` is only allowed as the last character,
//!   and not right after `+`. A `+` that is not a whole segment (`a+b`) is an ordinary character. One leading `/`
//!   is dropped, as Vault does.
//! - The legacy `policy = "..."` expands like Vault's: `read` → read, list; `write` → create, read, update,
//!   delete, list (no `patch`: Vault's `write` predates it); `sudo` → write's and sudo; `deny` → deny. It is
//!   combined with `capabilities` when both are given.
//! - `deny` in a path block (or in any block for the same path, in any policy of an ACL) wins: that path
//!   pattern then grants nothing.
//! - Accepted but **not enforced** (parsed, type-checked, then ignored), so that Vault policies load
//!   unchanged: `allowed_parameters`, `denied_parameters`, `required_parameters`, `min_wrapping_ttl`,
//!   `max_wrapping_ttl`, `mfa_methods`, `control_group` and `comment` in a path block, and the top-level `name`
//!   (the name a policy is stored under is the one that counts, as in Vault).
//! - Everything else is an error naming its line: unknown fields and capabilities, wrong types, a `path` block
//!   without exactly one label, an empty path, misplaced wildcards, HCL syntax errors, empty policies.
//!
//! # Matching
//!
//! [`Acl::capabilities`] follows Vault: an exact rule for the path wins; otherwise, among the glob and `+`
//! rules that match, the one of highest priority (Vault's "priority matching", see [`Acl::capabilities`]).
//! Rules for the same pattern, from one policy or several, are merged first (union of capabilities and of
//! `subscribe_event_types`; any `deny` makes the merged rule deny everything). Only the chosen rule counts:
//! capabilities are never combined across different patterns.
//!
//! # Robustness
//!
//! Nothing here panics, whatever the input. The HCL parser is recursive-descent and would overflow the stack
//! (an abort, not an error) on absurdly nested input, so a small lexer first bounds nesting and operator
//! count (the same idea as in `config`); real policies are nowhere near the limits.

use std::cmp::Reverse;
use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;

use hcl::edit::expr::Expression;
use hcl::edit::structure::{Attribute, Block, Structure};
use hcl::edit::Span;
use serde::{Deserialize, Serialize};

/// Vigil's built-in `default` policy, written at initialization (it may be edited, not deleted). Modeled on
/// Vault's default policy, with only the paths Vigil serves.
pub const DEFAULT_POLICY: &str = r#"# Vigil's built-in default policy: what every token may do with and about itself.

# A token may look up its own properties.
path "auth/token/lookup-self" {
  capabilities = ["read"]
}

# A token may renew itself.
path "auth/token/renew-self" {
  capabilities = ["update"]
}

# A token may revoke itself.
path "auth/token/revoke-self" {
  capabilities = ["update"]
}

# A token may ask what it can do on a path.
path "sys/capabilities-self" {
  capabilities = ["update"]
}

# A token may read the ACL its policies add up to (for UIs).
path "sys/internal/ui/resultant-acl" {
  capabilities = ["read"]
}

# A token may ask which mount serves a path it has access to (clients use it to detect kv versions).
path "sys/internal/ui/mounts/*" {
  capabilities = ["read"]
}
"#;

/// Longest policy name [`validate_name`] accepts.
pub const MAX_NAME_LEN: usize = 128;

/// A capability a policy grants on a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Capability {
    /// `create`: write where nothing exists yet (PUT/POST).
    Create,
    /// `read` (GET).
    Read,
    /// `update`: write over existing data (PUT/POST).
    Update,
    /// `patch` (PATCH).
    Patch,
    /// `delete` (DELETE).
    Delete,
    /// `list` (LIST).
    List,
    /// `sudo`: needed, in addition, on root-protected paths.
    Sudo,
    /// `deny`: grants nothing, and overrides every other capability of the same path pattern.
    Deny,
    /// `subscribe`: receive events about the path (with `subscribe_event_types`).
    Subscribe,
}

impl Capability {
    /// Every capability: Vault's canonical order, then `deny`.
    pub const ALL: [Capability; 9] = [
        Capability::Create,
        Capability::Read,
        Capability::Update,
        Capability::Patch,
        Capability::Delete,
        Capability::List,
        Capability::Sudo,
        Capability::Subscribe,
        Capability::Deny,
    ];

    /// Vault's name for it, e.g. `"read"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Capability::Create => "create",
            Capability::Read => "read",
            Capability::Update => "update",
            Capability::Patch => "patch",
            Capability::Delete => "delete",
            Capability::List => "list",
            Capability::Sudo => "sudo",
            Capability::Deny => "deny",
            Capability::Subscribe => "subscribe",
        }
    }

    /// The capability Vault calls `name` (exact, lowercase), if any.
    pub fn from_name(name: &str) -> Option<Capability> {
        Capability::ALL.into_iter().find(|cap| cap.as_str() == name)
    }

    fn bit(self) -> u16 {
        1 << (self as u16)
    }
}

impl fmt::Display for Capability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A set of capabilities (a bitset; `Default` is empty).
///
/// The set an [`Acl`] gives for a path is either empty (nothing matched, or the matched rule lists no
/// capability), [`Capabilities::deny`] (exactly `{deny}`: the matched rule denies), or a set of granted
/// capabilities without `deny`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Capabilities(u16);

impl Capabilities {
    /// No capability.
    pub const fn empty() -> Capabilities {
        Capabilities(0)
    }

    /// Exactly `{deny}`.
    pub fn deny() -> Capabilities {
        Capabilities(Capability::Deny.bit())
    }

    /// Every capability but `deny`: what a root token has everywhere.
    pub fn root() -> Capabilities {
        Capability::ALL.into_iter().filter(|&cap| cap != Capability::Deny).collect()
    }

    /// Whether `cap` is in the set.
    pub fn contains(&self, cap: Capability) -> bool {
        self.0 & cap.bit() != 0
    }

    /// Adds `cap`.
    pub fn insert(&mut self, cap: Capability) {
        self.0 |= cap.bit();
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.0 == 0
    }

    /// The capabilities in the set, in Vault's canonical order (create, read, update, patch, delete, list, sudo,
    /// subscribe), then `deny`.
    pub fn iter(&self) -> impl Iterator<Item = Capability> {
        let set = *self;
        Capability::ALL.into_iter().filter(move |&cap| set.contains(cap))
    }

    /// Names of the granted capabilities in Vault's canonical order; `deny` is not listed (a denied path has
    /// no names: callers that answer like Vault's `sys/capabilities` print `["deny"]` for an empty list).
    pub fn names(&self) -> Vec<&'static str> {
        self.iter().filter(|&cap| cap != Capability::Deny).map(Capability::as_str).collect()
    }

    /// Both sets together.
    pub fn union(self, other: Capabilities) -> Capabilities {
        Capabilities(self.0 | other.0)
    }
}

impl FromIterator<Capability> for Capabilities {
    fn from_iter<I: IntoIterator<Item = Capability>>(iter: I) -> Capabilities {
        let mut set = Capabilities::empty();
        for cap in iter {
            set.insert(cap);
        }
        set
    }
}

/// A parsed policy.
///
/// Storage form: serde (de)serializes only `{"name": ..., "text": ...}`; deserializing parses the text again
/// (and fails if it no longer parses), so the stored form never depends on this module's internals. The rules
/// are derived from `text` by [`parse`]; changing the public fields afterwards does not re-parse.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "StoredPolicy", try_from = "StoredPolicy")]
pub struct Policy {
    /// The name it is stored under (as given to [`parse`]; normalize it with [`validate_name`] first).
    pub name: String,
    /// The HCL text, exactly as written.
    pub text: String,
    /// One rule per distinct path pattern, in order of first appearance, blocks for the same pattern merged.
    rules: Vec<PathRule>,
}

impl Policy {
    /// The policy's rules: one per distinct path pattern, in order of first appearance in the text, with the
    /// blocks for the same pattern merged.
    pub fn rules(&self) -> &[PathRule] {
        &self.rules
    }
}

/// The serde form of a [`Policy`].
#[derive(Serialize, Deserialize)]
struct StoredPolicy {
    name: String,
    text: String,
}

impl From<Policy> for StoredPolicy {
    fn from(policy: Policy) -> StoredPolicy {
        StoredPolicy { name: policy.name, text: policy.text }
    }
}

impl TryFrom<StoredPolicy> for Policy {
    type Error = PolicyError;

    fn try_from(stored: StoredPolicy) -> Result<Policy, PolicyError> {
        parse(&stored.name, &stored.text)
    }
}

/// The rule of one path pattern of a policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathRule {
    /// The path as written, without a leading `/`.
    path: String,
    pattern: Pattern,
    grant: Grant,
}

impl PathRule {
    /// The path pattern as written in the policy (without a leading `/`), e.g. `secret/+/data/*`.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The capabilities it grants: [`Capabilities::deny`] when it denies.
    pub fn capabilities(&self) -> Capabilities {
        self.grant.capabilities
    }

    /// Its `subscribe_event_types` globs (empty when it denies).
    pub fn subscribe_event_types(&self) -> &[String] {
        &self.grant.subscribe_event_types
    }
}

/// What a path pattern grants, merged over every block (and policy) for that pattern.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Grant {
    capabilities: Capabilities,
    subscribe_event_types: Vec<String>,
}

impl Grant {
    /// Vault's merge: a deny on either side leaves only deny; otherwise the union.
    fn merge(&mut self, other: &Grant) {
        if self.capabilities.contains(Capability::Deny) {
            return;
        }
        if other.capabilities.contains(Capability::Deny) {
            *self = Grant { capabilities: Capabilities::deny(), subscribe_event_types: Vec::new() };
            return;
        }
        self.capabilities = self.capabilities.union(other.capabilities);
        for event_type in &other.subscribe_event_types {
            if !self.subscribe_event_types.contains(event_type) {
                self.subscribe_event_types.push(event_type.clone());
            }
        }
    }
}

/// A path pattern. Two blocks with equal patterns are merged.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Pattern {
    /// Matches exactly this path.
    Exact(String),
    /// `foo*`: matches every path starting with `foo` (`*` alone: every path).
    Prefix(String),
    /// A path with `+` segments. `text` is the path without its trailing `*`; `segments` its `/`-separated parts
    /// (`None` for `+`); with `prefix` (a trailing `*`), the last part is matched as a prefix of its segment and
    /// any further segments are allowed.
    Segments { text: String, segments: Vec<Option<String>>, prefix: bool },
}

impl Pattern {
    /// Parses a policy path (already without its leading `/`).
    fn parse(path: &str) -> Result<Pattern, String> {
        if path.is_empty() {
            return Err("path is empty".into());
        }
        if path.contains("+*") {
            return Err("invalid use of wildcards ('+*' is forbidden)".into());
        }
        let (text, prefix) = match path.strip_suffix('*') {
            Some(text) => (text, true),
            None => (path, false),
        };
        if text.contains('*') {
            return Err("'*' is only allowed at the end of a path".into());
        }
        if !text.split('/').any(|segment| segment == "+") {
            return Ok(if prefix { Pattern::Prefix(text.into()) } else { Pattern::Exact(text.into()) });
        }
        let segments = text.split('/').map(|segment| (segment != "+").then(|| segment.to_string())).collect();
        Ok(Pattern::Segments { text: text.into(), segments, prefix })
    }

    /// Whether this (non-exact) pattern matches `path`.
    fn matches(&self, path: &str) -> bool {
        match self {
            Pattern::Exact(exact) => exact == path,
            Pattern::Prefix(prefix) => path.starts_with(prefix.as_str()),
            Pattern::Segments { segments, prefix, .. } => {
                let parts: Vec<&str> = path.split('/').collect();
                if parts.len() < segments.len() || (!prefix && parts.len() != segments.len()) {
                    return false;
                }
                let last = segments.len().saturating_sub(1);
                segments.iter().zip(&parts).enumerate().all(|(i, (segment, part))| match segment {
                    None => true,
                    Some(literal) if *prefix && i == last => part.starts_with(literal.as_str()),
                    Some(literal) => literal == part,
                })
            }
        }
    }

    /// Vault's priority among matching non-exact patterns: greater is preferred. Compares, in order: where the
    /// first `+` or `*` is (later wins), not ending in `*` (wins), fewer `+` segments (wins), length (longer
    /// wins), and the text (lexicographically greater wins).
    fn priority(&self) -> (usize, bool, Reverse<usize>, usize, &str) {
        match self {
            Pattern::Exact(text) => (text.len(), true, Reverse(0), text.len(), text),
            Pattern::Prefix(text) => (text.len(), false, Reverse(0), text.len(), text),
            Pattern::Segments { text, segments, prefix } => {
                // Byte offset of the first `+` segment: the lengths of the segments before it, plus their `/`s.
                let mut first = 0;
                for segment in segments {
                    match segment {
                        None => break,
                        Some(literal) => first += literal.len() + 1,
                    }
                }
                let wildcards = segments.iter().filter(|segment| segment.is_none()).count();
                (first, !prefix, Reverse(wildcards), text.len(), text)
            }
        }
    }
}

/// Why a policy was rejected. The HTTP layer answers 400 with its text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("failed to parse policy: line {line}: {message}")]
pub struct PolicyError {
    /// 1-based line of the offending item.
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

/// Fields of a path block that Vault has and Vigil accepts without enforcing them.
const IGNORED_FIELDS: [&str; 8] = [
    "allowed_parameters",
    "denied_parameters",
    "required_parameters",
    "min_wrapping_ttl",
    "max_wrapping_ttl",
    "mfa_methods",
    "control_group",
    "comment",
];

/// Parses policy `text`, to be stored under `name` (which is not checked here: see [`validate_name`]).
pub fn parse(name: &str, text: &str) -> Result<Policy, PolicyError> {
    // A UTF-8 byte order mark is not HCL; dropping it shifts offsets but not line numbers.
    let hcl_text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let src = Source { text: hcl_text };
    if hcl_text.trim().is_empty() {
        return Err(src.error(1, "policy is empty"));
    }
    crate::hcl_util::check_parser_limits(hcl_text)
        .map_err(|(offset, message)| src.error(src.line_of(Some(offset..offset), 1), message))?;
    let body = hcl::edit::parser::parse_body(hcl_text).map_err(|e| {
        let location = e.location();
        src.error(location.line(), format!("{} (column {})", e.message(), location.column()))
    })?;
    if body.is_empty() {
        // Only comments: nothing to grant, almost certainly a mistake.
        return Err(src.error(1, "policy is empty"));
    }

    let mut rules: Vec<PathRule> = Vec::new();
    for structure in body.iter() {
        match structure {
            Structure::Attribute(attr) => {
                let line = src.attribute_line(attr, 1);
                match attr.key.as_str() {
                    "name" if attr.value.as_str().is_some() => {}
                    "name" => return Err(src.error(line, "name must be a string")),
                    "path" => {
                        return Err(src.error(line, "path must be a block: path \"<path>\" { capabilities = [...] }"))
                    }
                    other => return Err(src.error(line, format!("invalid key {other:?}"))),
                }
            }
            Structure::Block(block) => {
                let line = src.block_line(block, 1);
                if block.ident.as_str() != "path" {
                    return Err(src.error(line, format!("invalid key {:?}", block.ident.as_str())));
                }
                let rule = parse_path_block(&src, block, line)?;
                match rules.iter_mut().find(|existing| existing.pattern == rule.pattern) {
                    Some(existing) => existing.grant.merge(&rule.grant),
                    None => rules.push(rule),
                }
            }
        }
    }
    Ok(Policy { name: name.to_string(), text: text.to_string(), rules })
}

/// Parses one `path "<path>" { ... }` block that starts on `line`.
fn parse_path_block(src: &Source<'_>, block: &Block, line: usize) -> Result<PathRule, PolicyError> {
    let label = match block.labels.as_slice() {
        [label] => label.as_str(),
        _ => return Err(src.error(line, "a path block needs exactly one label, the path: path \"<path>\" { ... }")),
    };
    let path = label.strip_prefix('/').unwrap_or(label);
    let pattern = Pattern::parse(path).map_err(|message| src.error(line, format!("path {label:?}: {message}")))?;
    let fail = |line: usize, message: String| src.error(line, format!("path {label:?}: {message}"));

    let mut grant = Grant::default();
    for structure in block.body.iter() {
        match structure {
            Structure::Attribute(attr) => {
                let key = attr.key.as_str();
                let line = src.attribute_line(attr, line);
                match key {
                    "capabilities" => {
                        for (value, value_line) in src.strings(attr, line).map_err(|m| fail(line, m))? {
                            let cap = Capability::from_name(value)
                                .ok_or_else(|| fail(value_line, format!("invalid capability {value:?}")))?;
                            grant.capabilities.insert(cap);
                        }
                    }
                    "policy" => {
                        let value = attr.value.as_str().ok_or_else(|| fail(line, "policy must be a string".into()))?;
                        grant.capabilities = grant.capabilities.union(legacy_policy(value).ok_or_else(|| {
                            fail(line, format!("invalid policy {value:?} (read, write, sudo or deny)"))
                        })?);
                    }
                    "subscribe_event_types" => {
                        for (value, _) in src.strings(attr, line).map_err(|m| fail(line, m))? {
                            if !grant.subscribe_event_types.iter().any(|known| known == value) {
                                grant.subscribe_event_types.push(value.to_string());
                            }
                        }
                    }
                    "allowed_parameters" | "denied_parameters" | "control_group" => {
                        if !matches!(attr.value, Expression::Object(_)) {
                            return Err(fail(line, format!("{key} must be an object")));
                        }
                    }
                    "required_parameters" | "mfa_methods" => {
                        src.strings(attr, line).map_err(|m| fail(line, m))?;
                    }
                    "min_wrapping_ttl" | "max_wrapping_ttl" => {
                        if !matches!(attr.value, Expression::String(_) | Expression::Number(_)) {
                            return Err(fail(
                                line,
                                format!("{key} must be a duration: a string such as \"1h\" or a number of seconds"),
                            ));
                        }
                    }
                    "comment" => {}
                    other => return Err(fail(line, format!("invalid key {other:?}"))),
                }
            }
            Structure::Block(inner) => {
                let key = inner.ident.as_str();
                let line = src.block_line(inner, line);
                match key {
                    // Vault's HCL 1 accepts `allowed_parameters { ... }` for an object; its contents are ignored.
                    "allowed_parameters" | "denied_parameters" | "control_group" => {}
                    "capabilities" | "policy" | "subscribe_event_types" => {
                        return Err(fail(line, format!("expected an attribute: {key} = ...")))
                    }
                    _ if IGNORED_FIELDS.contains(&key) => {
                        return Err(fail(line, format!("expected an attribute: {key} = ...")))
                    }
                    other => return Err(fail(line, format!("invalid key {other:?}"))),
                }
            }
        }
    }
    if grant.capabilities.contains(Capability::Deny) {
        grant = Grant { capabilities: Capabilities::deny(), subscribe_event_types: Vec::new() };
    }
    Ok(PathRule { path: path.to_string(), pattern, grant })
}

/// Vault's expansion of the legacy `policy = "..."` field.
fn legacy_policy(value: &str) -> Option<Capabilities> {
    use Capability::*;
    let write = [Create, Read, Update, Delete, List];
    Some(match value {
        "deny" => Capabilities::deny(),
        "read" => [Read, List].into_iter().collect(),
        "write" => write.into_iter().collect(),
        "sudo" => write.into_iter().chain([Sudo]).collect(),
        _ => return None,
    })
}

/// The policy text, to turn spans into line numbers.
struct Source<'a> {
    text: &'a str,
}

impl Source<'_> {
    /// The 1-based line holding the start of `span`, or `fallback` when the parser gave no span.
    fn line_of(&self, span: Option<Range<usize>>, fallback: usize) -> usize {
        crate::hcl_util::line_of(self.text, span, fallback)
    }

    fn attribute_line(&self, attr: &Attribute, fallback: usize) -> usize {
        self.line_of(attr.span().or_else(|| attr.key.span()).or_else(|| attr.value.span()), fallback)
    }

    fn block_line(&self, block: &Block, fallback: usize) -> usize {
        self.line_of(block.span().or_else(|| block.ident.span()), fallback)
    }

    fn error(&self, line: usize, message: impl Into<String>) -> PolicyError {
        PolicyError { line, message: message.into() }
    }

    /// The items of a list-of-strings attribute, each with its line; `Err` names the attribute otherwise.
    fn strings<'b>(&self, attr: &'b Attribute, line: usize) -> Result<Vec<(&'b str, usize)>, String> {
        let not_strings = || format!("{} must be a list of strings", attr.key.as_str());
        let Expression::Array(items) = &attr.value else { return Err(not_strings()) };
        items
            .iter()
            .map(|item| item.as_str().map(|s| (s, self.line_of(item.span(), line))).ok_or_else(not_strings))
            .collect()
    }
}

/// Whether `name` is reserved: `root` (any case), the implicit policy of root tokens, never stored.
pub fn is_reserved_name(name: &str) -> bool {
    name.eq_ignore_ascii_case("root")
}

/// Normalizes a policy name like Vault (lowercase) and checks it: 1 to [`MAX_NAME_LEN`] characters from
/// `[a-z0-9._-]`, and not `.` or `..` (which could not be addressed in a URL). Returns the normalized name.
pub fn validate_name(name: &str) -> Result<String, String> {
    let normalized = name.to_ascii_lowercase();
    if normalized.is_empty() {
        return Err("policy name missing".into());
    }
    if normalized.len() > MAX_NAME_LEN {
        return Err(format!("policy name is too long (more than {MAX_NAME_LEN} characters)"));
    }
    if let Some(c) = normalized.chars().find(|c| !matches!(c, 'a'..='z' | '0'..='9' | '.' | '_' | '-')) {
        return Err(format!("policy name {name:?} contains {c:?}: only a-z, 0-9, '.', '_' and '-' are allowed"));
    }
    if normalized == "." || normalized == ".." {
        return Err(format!("policy name {name:?} is not allowed"));
    }
    Ok(normalized)
}

/// The combined ACL of several policies.
///
/// Built once per request from the token's policies. A root ACL comes only from [`Acl::root`]: a policy named
/// `root` given to [`Acl::new`] has no special meaning here (root is implicit and never stored).
#[derive(Debug, Clone, Default)]
pub struct Acl {
    root: bool,
    /// Exact-path rules, by path.
    exact: BTreeMap<String, Grant>,
    /// Glob and `+` rules, merged by pattern.
    wildcard: Vec<(Pattern, Grant)>,
}

impl Acl {
    /// The ACL of `policies`: rules for the same path pattern are merged across policies (union; deny wins).
    pub fn new(policies: &[Policy]) -> Acl {
        let mut merged: BTreeMap<&Pattern, Grant> = BTreeMap::new();
        for rule in policies.iter().flat_map(|policy| &policy.rules) {
            merged
                .entry(&rule.pattern)
                .and_modify(|grant| grant.merge(&rule.grant))
                .or_insert_with(|| rule.grant.clone());
        }
        let mut acl = Acl::default();
        for (pattern, grant) in merged {
            match pattern {
                Pattern::Exact(path) => {
                    acl.exact.insert(path.clone(), grant);
                }
                _ => acl.wildcard.push((pattern.clone(), grant)),
            }
        }
        acl
    }

    /// The ACL of a root token: everything allowed everywhere.
    pub fn root() -> Acl {
        Acl { root: true, ..Acl::default() }
    }

    /// Whether this is a root ACL.
    pub fn is_root(&self) -> bool {
        self.root
    }

    /// Whether some rule that is not a deny could apply to a path under `mount` (e.g. `secret/`): Vault's "has
    /// mount access", which decides whether a token may learn about a mount. `+` patterns are judged by their
    /// literal segments up to the mount's depth.
    pub fn has_access_under(&self, mount: &str) -> bool {
        if self.root {
            return true;
        }
        let grants = |grant: &Grant| !grant.capabilities.is_empty() && !grant.capabilities.contains(Capability::Deny);
        let exact = self.exact.iter().any(|(path, grant)| path.starts_with(mount) && grants(grant));
        exact
            || self.wildcard.iter().any(|(pattern, grant)| {
                grants(grant)
                    && match pattern {
                        Pattern::Exact(path) => path.starts_with(mount),
                        Pattern::Prefix(prefix) => prefix.starts_with(mount) || mount.starts_with(prefix.as_str()),
                        Pattern::Segments { segments, .. } => mount
                            .trim_end_matches('/')
                            .split('/')
                            .zip(segments)
                            .all(|(part, segment)| segment.as_deref().is_none_or(|literal| literal == part)),
                    }
            })
    }

    /// The rule that applies to `path`, chosen as described on [`Acl::capabilities`].
    fn grant(&self, path: &str) -> Option<&Grant> {
        let path = path.trim_start_matches('/');
        if let Some(grant) = self.exact.get(path) {
            return Some(grant);
        }
        self.wildcard
            .iter()
            .filter(|(pattern, _)| pattern.matches(path))
            .max_by(|(a, _), (b, _)| a.priority().cmp(&b.priority()))
            .map(|(_, grant)| grant)
    }

    /// The capabilities on `path` (a request path without `/v1/`, e.g. `secret/data/app/db`; leading `/`s are
    /// ignored). Root: every capability but `deny`. Otherwise the rule that applies, chosen Vault's way: an exact
    /// rule for the path if there is one; else, among the matching glob and `+` rules, the one of highest priority,
    /// where of two matching patterns P1 and P2, P1 has lower priority if (1) its first `+` or `*` occurs earlier,
    /// (2) it ends in `*` and P2 does not, (3) it has more `+` segments, (4) it is shorter, (5) it is
    /// lexicographically smaller. Returns that rule's (merged) capabilities, [`Capabilities::deny`] if it denies,
    /// and an empty set if no rule matches.
    ///
    /// Unlike Vault for LIST requests, a trailing `/` is not retried without it: the path is matched as given.
    pub fn capabilities(&self, path: &str) -> Capabilities {
        if self.root {
            return Capabilities::root();
        }
        self.grant(path).map_or(Capabilities::empty(), |grant| grant.capabilities)
    }

    /// Whether `cap` is granted on `path`. Always true for root (except `Capability::Deny`, which is never
    /// "allowed": ask [`Acl::capabilities`] whether a path is denied).
    pub fn allows(&self, path: &str, cap: Capability) -> bool {
        cap != Capability::Deny && self.capabilities(path).contains(cap)
    }

    /// Whether events of type `event_type` about `path` may be delivered: always for root; otherwise the rule
    /// chosen for `path` must grant `subscribe` and one of its (merged) `subscribe_event_types` globs must match
    /// `event_type` (`*` matches any run of characters, `/` included; no other character is special).
    pub fn can_subscribe(&self, path: &str, event_type: &str) -> bool {
        if self.root {
            return true;
        }
        self.grant(path).is_some_and(|grant| {
            grant.capabilities.contains(Capability::Subscribe)
                && !grant.capabilities.contains(Capability::Deny)
                && grant.subscribe_event_types.iter().any(|glob| glob_matches(glob, event_type))
        })
    }
}

/// Whether `text` matches `glob`, where `*` matches any run of characters (possibly empty).
pub(crate) fn glob_matches(glob: &str, text: &str) -> bool {
    // Classic greedy matching with backtracking to the last `*`: O(len(glob) * len(text)) at worst.
    let (glob, text) = (glob.as_bytes(), text.as_bytes());
    let (mut g, mut t) = (0, 0);
    let mut backtrack: Option<(usize, usize)> = None;
    while t < text.len() {
        match glob.get(g) {
            Some(b'*') => {
                backtrack = Some((g, t));
                g += 1;
            }
            Some(&c) if Some(&c) == text.get(t) => {
                g += 1;
                t += 1;
            }
            _ => match backtrack {
                Some((star, start)) => {
                    backtrack = Some((star, start + 1));
                    g = star + 1;
                    t = start + 1;
                }
                None => return false,
            },
        }
    }
    glob.get(g..).unwrap_or_default().iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(text: &str) -> Policy {
        match parse("t", text) {
            Ok(policy) => policy,
            Err(e) => panic!("{text:?} does not parse: {e}"),
        }
    }

    fn acl<S: AsRef<str>>(texts: &[S]) -> Acl {
        Acl::new(&texts.iter().map(|text| policy(text.as_ref())).collect::<Vec<_>>())
    }

    fn caps(names: &[&str]) -> String {
        names.join(",")
    }

    fn rule(path: &str, capabilities: &str) -> String {
        format!("path \"{path}\" {{\n  capabilities = [{capabilities}]\n}}\n")
    }

    #[test]
    fn capabilities_by_path() {
        let secret_read = rule("secret/*", "\"read\"");
        let cases: Vec<(&str, Vec<String>, &str, Vec<&str>)> = vec![
            // Exact beats glob, and capabilities of different patterns are not combined.
            (
                "exact beats glob",
                vec![rule("secret/foo", "\"read\"") + &rule("secret/*", "\"list\", \"update\"")],
                "secret/foo",
                vec!["read"],
            ),
            (
                "glob when no exact",
                vec![rule("secret/foo", "\"read\"") + &rule("secret/*", "\"list\"")],
                "secret/food",
                vec!["list"],
            ),
            ("glob covers deeper paths", vec![secret_read.clone()], "secret/a/b/c", vec!["read"]),
            ("glob covers its own directory", vec![secret_read.clone()], "secret/", vec!["read"]),
            ("glob is a prefix, not a directory", vec![secret_read.clone()], "secret", vec![]),
            ("glob without slash", vec![rule("secret/zip-*", "\"read\"")], "secret/zip-zap/zong", vec!["read"]),
            ("glob without slash, no match", vec![rule("secret/zip-*", "\"read\"")], "secret/zip/zap", vec![]),
            ("star alone matches everything", vec![rule("*", "\"list\"")], "sys/mounts", vec!["list"]),
            ("exact does not match a longer path", vec![rule("secret/foo", "\"read\"")], "secret/foo/bar", vec![]),
            ("leading slash of a rule is dropped", vec![rule("/secret/foo", "\"read\"")], "secret/foo", vec!["read"]),
            (
                "leading slash of a request is dropped",
                vec![rule("secret/foo", "\"read\"")],
                "/secret/foo",
                vec!["read"],
            ),
            ("nothing matches", vec![secret_read.clone()], "kv/app", vec![]),
            ("no policies", vec![], "secret/foo", vec![]),
            (
                "empty capability list matches and grants nothing",
                vec![rule("secret/foo", "") + &secret_read],
                "secret/foo",
                vec![],
            ),
            // `+` is exactly one segment.
            ("plus one segment", vec![rule("secret/+/teamb", "\"read\"")], "secret/foo/teamb", vec!["read"]),
            ("plus not two segments", vec![rule("secret/+/teamb", "\"read\"")], "secret/foo/bar/teamb", vec![]),
            ("plus not zero segments", vec![rule("secret/+/teamb", "\"read\"")], "secret/teamb", vec![]),
            ("two plus segments", vec![rule("secret/+/+/teamb", "\"read\"")], "secret/foo/bar/teamb", vec!["read"]),
            ("plus at the end", vec![rule("secret/+", "\"read\"")], "secret/foo", vec!["read"]),
            ("plus at the end, deeper path", vec![rule("secret/+", "\"read\"")], "secret/foo/bar", vec![]),
            ("plus then glob", vec![rule("secret/+/data/*", "\"read\"")], "secret/app/data/x/y", vec!["read"]),
            ("plus then partial glob", vec![rule("secret/+/da*", "\"read\"")], "secret/app/dates/x", vec!["read"]),
            ("plus then partial glob, no match", vec![rule("secret/+/da*", "\"read\"")], "secret/app/metadata", vec![]),
            ("plus inside a segment is literal", vec![rule("a+b/c", "\"read\"")], "a+b/c", vec!["read"]),
            ("plus inside a segment is literal, no match", vec![rule("a+b/c", "\"read\"")], "axb/c", vec![]),
            // Priority rule 1: the first wildcard occurs later.
            (
                "rule 1: later first wildcard wins",
                vec![rule("secret/+/x", "\"read\"") + &rule("secret/a/+", "\"update\"")],
                "secret/a/x",
                vec!["update"],
            ),
            (
                "rule 1: a longer glob prefix beats a plus",
                vec![rule("secret/+/x/*", "\"read\"") + &rule("secret/a/*", "\"update\"")],
                "secret/a/x/y",
                vec!["update"],
            ),
            // Priority rule 2: not ending in `*` wins (here it has more `+` and is no longer: rules 3-4 lose).
            (
                "rule 2: not ending in star wins",
                vec![rule("foo/+/+", "\"read\"") + &rule("foo/+/b*", "\"update\"")],
                "foo/a/b",
                vec!["read"],
            ),
            (
                "rule 2: plus beats star",
                vec![rule("foo/*", "\"read\"") + &rule("foo/+", "\"update\"")],
                "foo/bar",
                vec!["update"],
            ),
            // Priority rule 3: fewer `+` wins (here it is shorter: rule 4 loses).
            (
                "rule 3: fewer plus segments win",
                vec![rule("secret/*", "\"read\"") + &rule("secret/+/+/foo/*", "\"update\"")],
                "secret/a/b/foo/c",
                vec!["read"],
            ),
            // Priority rule 4: longer wins.
            (
                "rule 4: longer wins",
                vec![rule("foo/+/bar/b*", "\"read\"") + &rule("foo/+/bar/ba*", "\"update\"")],
                "foo/x/bar/baz",
                vec!["update"],
            ),
            // Priority rule 5: lexicographically greater wins ("+/a/+" > "+/+/a").
            (
                "rule 5: lexicographically greater wins",
                vec![rule("+/+/a", "\"read\"") + &rule("+/a/+", "\"update\"")],
                "a/a/a",
                vec!["update"],
            ),
            (
                "rule 5: order of the rules does not matter",
                vec![rule("+/a/+", "\"update\"") + &rule("+/+/a", "\"read\"")],
                "a/a/a",
                vec!["update"],
            ),
            // Merging: same pattern in several policies (or twice in one).
            (
                "union across policies",
                vec![secret_read.clone(), rule("secret/*", "\"list\"")],
                "secret/x",
                vec!["read", "list"],
            ),
            (
                "union within a policy",
                vec![secret_read.clone() + &rule("secret/*", "\"list\"")],
                "secret/x",
                vec!["read", "list"],
            ),
            (
                "deny across policies",
                vec![rule("secret/*", "\"read\", \"sudo\""), rule("secret/*", "\"deny\"")],
                "secret/x",
                vec!["deny"],
            ),
            (
                "deny across policies, deny first",
                vec![rule("secret/*", "\"deny\""), rule("secret/*", "\"read\"")],
                "secret/x",
                vec!["deny"],
            ),
            (
                "deny within a policy",
                vec![rule("secret/x", "\"read\"") + &rule("secret/x", "\"deny\"")],
                "secret/x",
                vec!["deny"],
            ),
            (
                "deny with other capabilities in one block",
                vec![rule("secret/x", "\"read\", \"deny\"")],
                "secret/x",
                vec!["deny"],
            ),
            (
                "exact deny under a glob grant",
                vec![secret_read.clone(), rule("secret/super", "\"deny\"")],
                "secret/super",
                vec!["deny"],
            ),
            (
                "exact deny leaves siblings alone",
                vec![secret_read.clone(), rule("secret/super", "\"deny\"")],
                "secret/superb",
                vec!["read"],
            ),
            (
                "exact and glob are different patterns",
                vec![rule("secret/x", "\"read\""), rule("secret/x*", "\"deny\"")],
                "secret/x",
                vec!["read"],
            ),
            // Legacy `policy = ...`.
            ("legacy read", vec!["path \"a/*\" { policy = \"read\" }".into()], "a/b", vec!["read", "list"]),
            (
                "legacy write",
                vec!["path \"a/*\" { policy = \"write\" }".into()],
                "a/b",
                vec!["create", "read", "update", "delete", "list"],
            ),
            (
                "legacy sudo",
                vec!["path \"a/*\" { policy = \"sudo\" }".into()],
                "a/b",
                vec!["create", "read", "update", "delete", "list", "sudo"],
            ),
            (
                "legacy deny",
                vec!["path \"a/*\" { policy = \"deny\" }".into(), rule("a/*", "\"read\"")],
                "a/b",
                vec!["deny"],
            ),
            (
                "legacy combined with capabilities",
                vec!["path \"a/*\" {\n  policy = \"read\"\n  capabilities = [\"patch\"]\n}\n".into()],
                "a/b",
                vec!["read", "patch", "list"],
            ),
            // Canonical order, whatever the written order.
            (
                "every capability, canonical order",
                vec![rule(
                    "a",
                    "\"subscribe\", \"sudo\", \"list\", \"delete\", \"patch\", \"update\", \"read\", \"create\"",
                )],
                "a",
                vec!["create", "read", "update", "patch", "delete", "list", "sudo", "subscribe"],
            ),
        ];
        for (what, texts, path, expected) in cases {
            let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
            let got: Vec<&str> = acl(&texts).capabilities(path).iter().map(Capability::as_str).collect();
            assert_eq!(caps(&got), caps(&expected), "{what}: {path} with {texts:?}");
        }
    }

    #[test]
    fn allows_and_root() {
        let root = Acl::root();
        assert!(root.is_root());
        assert_eq!(
            root.capabilities("anything/at/all").names(),
            vec!["create", "read", "update", "patch", "delete", "list", "sudo", "subscribe"]
        );
        assert_eq!(
            Capability::ALL.map(|cap| root.allows("sys/raft", cap)),
            [true, true, true, true, true, true, true, true, false]
        );

        let acl = acl(&[&(rule("secret/*", "\"read\", \"update\"") + &rule("secret/no", "\"deny\""))]);
        assert!(!acl.is_root());
        assert_eq!(
            Capability::ALL.map(|cap| acl.allows("secret/x", cap)),
            [false, true, true, false, false, false, false, false, false]
        );
        assert_eq!(Capability::ALL.map(|cap| acl.allows("secret/no", cap)), [false; 9]);
        assert_eq!(Capability::ALL.map(|cap| acl.allows("other", cap)), [false; 9]);
        assert_eq!(acl.capabilities("secret/no"), Capabilities::deny());
        assert_eq!(acl.capabilities("secret/no").names(), Vec::<&str>::new());
        assert_eq!(acl.capabilities("other"), Capabilities::empty());
        assert!(!Acl::default().is_root());
        assert_eq!(Acl::default().capabilities(""), Capabilities::empty());
    }

    #[test]
    fn a_policy_named_root_is_not_root() {
        let root_named = parse("root", &rule("a", "\"read\"")).map(|p| Acl::new(&[p]));
        assert_eq!(root_named.map(|acl| (acl.is_root(), acl.capabilities("b").names())), Ok((false, vec![])));
    }

    #[test]
    fn subscribe_checks() {
        let sub = |path: &str, types: &str| {
            format!("path \"{path}\" {{\n  capabilities = [\"subscribe\"]\n  subscribe_event_types = [{types}]\n}}\n")
        };
        let kv = sub("secret/*", "\"kv*\"");
        let cases: Vec<(&str, Acl, &str, &str, bool)> = vec![
            ("glob matches", acl(&[&kv]), "secret/data/app", "kv-v2/data-write", true),
            ("glob does not match", acl(&[&kv]), "secret/data/app", "database/rotate", false),
            ("path not covered", acl(&[&kv]), "other/app", "kv-v2/data-write", false),
            ("star matches slashes", acl(&[&sub("a", "\"*\"")]), "a", "x/y/z", true),
            ("star matches empty", acl(&[&sub("a", "\"kv-v2/*\"")]), "a", "kv-v2/", true),
            ("star in the middle", acl(&[&sub("a", "\"kv-v2/*-write\"")]), "a", "kv-v2/data-write", true),
            ("star in the middle, no match", acl(&[&sub("a", "\"kv-v2/*-write\"")]), "a", "kv-v2/data-delete", false),
            ("exact type", acl(&[&sub("a", "\"kv-v2/data-write\"")]), "a", "kv-v2/data-write", true),
            ("exact type is not a prefix", acl(&[&sub("a", "\"kv-v2/data-write\"")]), "a", "kv-v2/data-writes", false),
            ("no event types", acl(&[&rule("a", "\"subscribe\"")]), "a", "kv-v2/data-write", false),
            ("empty event type list", acl(&[&sub("a", "")]), "a", "kv-v2/data-write", false),
            (
                "event types without subscribe",
                acl(&["path \"a\" {\n  capabilities = [\"read\"]\n  subscribe_event_types = [\"*\"]\n}\n"]),
                "a",
                "kv-v2/data-write",
                false,
            ),
            (
                "types merged across policies",
                acl(&[&sub("a", "\"kv-v1/*\""), &sub("a", "\"kv-v2/*\"")]),
                "a",
                "kv-v2/data-write",
                true,
            ),
            (
                "subscribe from one policy, types from another",
                acl(&[
                    rule("a", "\"subscribe\""),
                    "path \"a\" {\n  subscribe_event_types = [\"kv*\"]\n}\n".to_string(),
                ]),
                "a",
                "kv-v2/data-write",
                true,
            ),
            (
                "deny in another policy",
                acl(&[&kv, &rule("secret/*", "\"deny\"")]),
                "secret/x",
                "kv-v2/data-write",
                false,
            ),
            (
                "higher-priority rule without the type shadows",
                acl(&[&kv, &sub("secret/data/app", "\"database/*\"")]),
                "secret/data/app",
                "kv-v2/data-write",
                false,
            ),
            ("root", Acl::root(), "anything", "anything/at-all", true),
            ("nothing", Acl::default(), "a", "kv-v2/data-write", false),
        ];
        for (what, acl, path, event_type, expected) in cases {
            assert_eq!(acl.can_subscribe(path, event_type), expected, "{what}");
        }
    }

    #[test]
    fn glob_matching() {
        let cases = [
            ("", "", true),
            ("", "a", false),
            ("*", "", true),
            ("**", "abc", true),
            ("a*", "a", true),
            ("a*c", "abbbc", true),
            ("a*c", "abbbcd", false),
            ("*c*", "abcabc", true),
            ("a*b*c", "axxbyyc", true),
            ("a*b*c", "axxcyyb", false),
            ("ab", "a", false),
        ];
        for (glob, text, expected) in cases {
            assert_eq!(glob_matches(glob, text), expected, "{glob:?} on {text:?}");
        }
    }

    #[test]
    fn bad_policies() {
        let n = 100_000;
        let cases: Vec<(String, &str)> = vec![
            (String::new(), "line 1: policy is empty"),
            (" \n\t\n".into(), "line 1: policy is empty"),
            ("\u{feff}".into(), "line 1: policy is empty"),
            ("# only a comment\n".into(), "line 1: policy is empty"),
            ("\n\nbad = \"x\"\n".into(), "line 3: invalid key \"bad\""),
            ("name = \"x\"\nidentity \"x\" {\n}\n".into(), "line 2: invalid key \"identity\""),
            ("name = 1\n".into(), "line 1: name must be a string"),
            (
                "\npath = \"secret/*\"\n".into(),
                "line 2: path must be a block: path \"<path>\" { capabilities = [...] }",
            ),
            (
                "path {\n  capabilities = [\"read\"]\n}\n".into(),
                "line 1: a path block needs exactly one label, the path: path \"<path>\" { ... }",
            ),
            (
                "\n\npath \"a\" \"b\" {\n}\n".into(),
                "line 3: a path block needs exactly one label, the path: path \"<path>\" { ... }",
            ),
            ("path \"\" {\n}\n".into(), "line 1: path \"\": path is empty"),
            ("path \"/\" {\n}\n".into(), "line 1: path \"/\": path is empty"),
            ("path \"secret/*/x\" {\n}\n".into(), "line 1: path \"secret/*/x\": '*' is only allowed at the end of a path"),
            ("path \"secret/**\" {\n}\n".into(), "line 1: path \"secret/**\": '*' is only allowed at the end of a path"),
            ("path \"*a\" {\n}\n".into(), "line 1: path \"*a\": '*' is only allowed at the end of a path"),
            ("path \"foo/+*\" {\n}\n".into(), "line 1: path \"foo/+*\": invalid use of wildcards ('+*' is forbidden)"),
            (
                "path \"kv/*\" {\n  capabilities = [\"read\", \"fly\"]\n}\n".into(),
                "line 2: path \"kv/*\": invalid capability \"fly\"",
            ),
            (
                "path \"kv/*\" {\n  capabilities = [\n    \"read\",\n    \"READ\",\n  ]\n}\n".into(),
                "line 4: path \"kv/*\": invalid capability \"READ\"",
            ),
            (
                "path \"kv/*\" {\n  capabilities = [\"root\"]\n}\n".into(),
                "line 2: path \"kv/*\": invalid capability \"root\"",
            ),
            (
                "path \"kv/*\" {\n  capabilities = [\"read\", 1]\n}\n".into(),
                "line 2: path \"kv/*\": capabilities must be a list of strings",
            ),
            (
                "path \"kv/*\" {\n  capabilities = \"read\"\n}\n".into(),
                "line 2: path \"kv/*\": capabilities must be a list of strings",
            ),
            (
                "path \"kv/*\" {\n  capabilities = [\"${x}\"]\n}\n".into(),
                "line 2: path \"kv/*\": capabilities must be a list of strings",
            ),
            (
                "path \"kv/*\" {\n  capabilities = [\"read\"]\n  capabilites = [\"read\"]\n}\n".into(),
                "line 3: path \"kv/*\": invalid key \"capabilites\"",
            ),
            (
                "path \"kv/*\" {\n  capabilities {\n  }\n}\n".into(),
                "line 2: path \"kv/*\": expected an attribute: capabilities = ...",
            ),
            ("path \"kv/*\" {\n  nested {\n  }\n}\n".into(), "line 2: path \"kv/*\": invalid key \"nested\""),
            (
                "path \"/\" {\n  policy = \"banana\"\n}\n".into(),
                "line 1: path \"/\": path is empty",
            ),
            (
                "path \"kv\" {\n  policy = \"banana\"\n}\n".into(),
                "line 2: path \"kv\": invalid policy \"banana\" (read, write, sudo or deny)",
            ),
            ("path \"kv\" {\n  policy = [\"read\"]\n}\n".into(), "line 2: path \"kv\": policy must be a string"),
            (
                "path \"kv\" {\n  subscribe_event_types = \"kv*\"\n}\n".into(),
                "line 2: path \"kv\": subscribe_event_types must be a list of strings",
            ),
            (
                "path \"kv\" {\n  required_parameters = \"x\"\n}\n".into(),
                "line 2: path \"kv\": required_parameters must be a list of strings",
            ),
            (
                "path \"kv\" {\n  allowed_parameters = [\"x\"]\n}\n".into(),
                "line 2: path \"kv\": allowed_parameters must be an object",
            ),
            (
                "path \"kv\" {\n  min_wrapping_ttl = true\n}\n".into(),
                "line 2: path \"kv\": min_wrapping_ttl must be a duration: a string such as \"1h\" or a number of seconds",
            ),
            (
                "path \"kv\" {\n  mfa_methods {\n  }\n}\n".into(),
                "line 2: path \"kv\": expected an attribute: mfa_methods = ...",
            ),
            (
                "path \"kv\" {\n  capabilities = [\"read\"]\n  capabilities = [\"list\"]\n}\n".into(),
                "line 3: invalid attribute; expected unique attribute key; found redefined attribute (column 3)",
            ),
            ("path \"kv\" {\n  capabilities = [\"read\"\n}\n".into(), "line 3: expected `]` (column 1)"),
            ("path \"kv\" {\n  capabilities = [\"read\"]\n".into(), "line 2: invalid block body; expected `}`, newline or identifier (column 27)"),
            (
                format!("path \"a\" {{\n  capabilities = {}{}\n}}\n", "[".repeat(n), "]".repeat(n)),
                "line 2: nested too deeply (more than 32 levels)",
            ),
            (format!("{}{}", "path \"a\" {\n".repeat(n), "}\n".repeat(n)), "line 33: nested too deeply (more than 32 levels)"),
            (
                format!("path \"a\" {{\n  comment = {}1{}\n}}\n", "\"${".repeat(n), "}\"".repeat(n)),
                "line 2: nested too deeply (more than 32 levels)",
            ),
            (format!("name = {}1\n", "-".repeat(n)), "line 1: too many operators (more than 64): use literal values"),
            (format!("name = {}1\n", "1 + ".repeat(n)), "line 1: too many operators (more than 64): use literal values"),
            (format!("name = {}x\n", "!".repeat(n)), "line 1: too many operators (more than 64): use literal values"),
            (
                format!("name = \"{}{}\"\n", "%{ if x }".repeat(n), "%{ endif }".repeat(n)),
                "line 1: too many operators (more than 64): use literal values",
            ),
            (
                format!("name = <<EOF\n{}\nEOF\n", "${[]}".repeat(n)),
                "line 2: nested too deeply (more than 32 levels)",
            ),
        ];
        let mut wrong = Vec::new();
        for (text, expected) in cases {
            let got = parse("t", &text).map(|_| ()).map_err(|e| e.to_string());
            if got != Err(format!("failed to parse policy: {expected}")) {
                wrong.push(format!("{:?}: {got:?}", text.chars().take(80).collect::<String>()));
            }
        }
        assert_eq!(wrong, Vec::<String>::new());
    }

    #[test]
    fn comments_strings_and_identifiers_do_not_count_toward_the_limits() {
        let noise = format!("# {}\n// {}\n/* {} */\n", "-[(".repeat(100), "!{".repeat(100), "\n+((".repeat(100));
        let path = format!("a/{}", "-[(!+".repeat(100));
        let text = format!(
            "{noise}path \"{path}\" {{\n  capabilities = [\"read\"]\n  allowed_parameters = {{\n{}  }}\n}}\n",
            (0..100).map(|i| format!("    key-with-dashes-{i} = [\"-\", \"*\"]\n")).collect::<String>()
        );
        let acl = parse("t", &text).map(|p| Acl::new(&[p]).capabilities(&path).names());
        assert_eq!(acl, Ok(vec!["read"]));
    }

    #[test]
    fn vault_policies_with_ignored_fields_parse() {
        let text = r#"
name = "dev"
path "secret/restricted" {
  capabilities = ["create"]
  comment = "only foo and bar"
  allowed_parameters = {
    "foo" = []
    "bar" = ["zip", "zap"]
  }
  denied_parameters = {
    "baz" = []
  }
  required_parameters = ["foo"]
  min_wrapping_ttl = 300
  max_wrapping_ttl = "1h"
  mfa_methods = ["my_totp"]
}
path "secret/controlled" {
  capabilities = ["read"]
  control_group {
    max_ttl = "1h"
    factor "ops" {
      identity {
        group_names = ["managers"]
        approvals = 1
      }
    }
  }
  allowed_parameters {
    x = []
  }
}
path "secret/object-control-group" {
  capabilities = ["read"]
  control_group = {
    max_ttl = "1h"
  }
}
"#;
        let policy = policy(text);
        let rules: Vec<(&str, Vec<&str>)> =
            policy.rules().iter().map(|r| (r.path(), r.capabilities().names())).collect();
        assert_eq!(
            rules,
            vec![
                ("secret/restricted", vec!["create"]),
                ("secret/controlled", vec!["read"]),
                ("secret/object-control-group", vec!["read"]),
            ]
        );
        assert_eq!((policy.name.as_str(), policy.text.as_str()), ("t", text));
    }

    #[test]
    fn repeated_paths_are_merged_in_the_policy() {
        let text =
            "path \"a/*\" {\n  capabilities = [\"read\", \"subscribe\"]\n  subscribe_event_types = [\"x\", \"y\"]\n}\n\
                    path \"b\" {\n  capabilities = [\"list\"]\n}\n\
                    path \"/a/*\" {\n  capabilities = [\"update\"]\n  subscribe_event_types = [\"y\", \"z\"]\n}\n\
                    path \"b\" {\n  capabilities = [\"deny\"]\n}\n";
        let rules: Vec<(String, Vec<&str>, Vec<String>)> = policy(text)
            .rules()
            .iter()
            .map(|r| {
                (
                    r.path().to_string(),
                    r.capabilities().iter().map(Capability::as_str).collect(),
                    r.subscribe_event_types().to_vec(),
                )
            })
            .collect();
        assert_eq!(
            rules,
            vec![
                ("a/*".to_string(), vec!["read", "update", "subscribe"], vec!["x".to_string(), "y".into(), "z".into()]),
                ("b".to_string(), vec!["deny"], vec![]),
            ]
        );
    }

    #[test]
    fn the_default_policy_grants_exactly_what_it_says() {
        let default = policy(DEFAULT_POLICY);
        let acl = Acl::new(std::slice::from_ref(&default));
        let expected = [
            ("auth/token/lookup-self", vec!["read"]),
            ("auth/token/renew-self", vec!["update"]),
            ("auth/token/revoke-self", vec!["update"]),
            ("sys/capabilities-self", vec!["update"]),
            ("sys/internal/ui/resultant-acl", vec!["read"]),
            ("sys/internal/ui/mounts/*", vec!["read"]),
        ];
        let rules: Vec<(&str, Vec<&str>)> =
            default.rules().iter().map(|r| (r.path(), r.capabilities().names())).collect();
        assert_eq!(rules, expected.to_vec());
        for (path, names) in expected {
            let path = path.trim_end_matches('*');
            assert_eq!(acl.capabilities(path).names(), names, "{path}");
        }
        for path in ["auth/token/create", "auth/token/lookup", "sys/capabilities", "sys/mounts", "kv/x", ""] {
            assert_eq!(acl.capabilities(path), Capabilities::empty(), "{path}");
        }
    }

    #[test]
    fn mount_access_follows_rules_under_the_mount() {
        let reader = policy("path \"secret/data/app/*\" { capabilities = [\"read\"] }\npath \"kv/+/x\" { capabilities = [\"list\"] }\npath \"team/*\" { capabilities = [\"deny\"] }");
        let acl = Acl::new(std::slice::from_ref(&reader));
        let cases = [("secret/", true), ("kv/", true), ("team/", false), ("other/", false), ("secret/data/", true)];
        for (mount, expected) in cases {
            assert_eq!(acl.has_access_under(mount), expected, "{mount}");
        }
        assert!(Acl::root().has_access_under("anything/"));
        let everything = policy("path \"*\" { capabilities = [\"read\"] }");
        assert!(Acl::new(std::slice::from_ref(&everything)).has_access_under("secret/"));
    }

    #[test]
    fn capabilities_set() {
        let mut set = Capabilities::default();
        assert!(set.is_empty());
        assert_eq!(set.names(), Vec::<&str>::new());
        set.insert(Capability::Subscribe);
        set.insert(Capability::Create);
        set.insert(Capability::Sudo);
        set.insert(Capability::Create);
        assert!(!set.is_empty());
        assert_eq!(set.names(), vec!["create", "sudo", "subscribe"]);
        assert_eq!(set.iter().collect::<Vec<_>>(), vec![Capability::Create, Capability::Sudo, Capability::Subscribe]);
        assert_eq!(
            Capability::ALL.map(|cap| set.contains(cap)),
            [true, false, false, false, false, false, true, true, false]
        );
        assert_eq!(Capabilities::deny().iter().collect::<Vec<_>>(), vec![Capability::Deny]);
        assert_eq!(Capabilities::deny().names(), Vec::<&str>::new());
        assert!(!Capabilities::deny().is_empty());
        assert_eq!(
            Capabilities::root().names(),
            vec!["create", "read", "update", "patch", "delete", "list", "sudo", "subscribe"]
        );
        assert!(!Capabilities::root().contains(Capability::Deny));
        assert_eq!(
            Capability::ALL.map(Capability::as_str),
            ["create", "read", "update", "patch", "delete", "list", "sudo", "subscribe", "deny"]
        );
        assert_eq!(Capability::ALL.map(|cap| Capability::from_name(cap.as_str())), Capability::ALL.map(Some));
        assert_eq!(Capability::from_name("Read"), None);
        assert_eq!(Capability::Patch.to_string(), "patch");
    }

    #[test]
    fn names() {
        let long = "a".repeat(MAX_NAME_LEN);
        let too_long = "a".repeat(MAX_NAME_LEN + 1);
        let cases: Vec<(&str, Result<&str, String>)> = vec![
            ("app", Ok("app")),
            ("App-Reader_2.v1", Ok("app-reader_2.v1")),
            ("ROOT", Ok("root")),
            (long.as_str(), Ok(long.as_str())),
            ("", Err("policy name missing".into())),
            (too_long.as_str(), Err("policy name is too long (more than 128 characters)".into())),
            ("a b", Err("policy name \"a b\" contains ' ': only a-z, 0-9, '.', '_' and '-' are allowed".into())),
            ("a/b", Err("policy name \"a/b\" contains '/': only a-z, 0-9, '.', '_' and '-' are allowed".into())),
            (
                "\u{212a}ey",
                Err("policy name \"\u{212a}ey\" contains '\u{212a}': only a-z, 0-9, '.', '_' and '-' are allowed"
                    .into()),
            ),
            ("é", Err("policy name \"é\" contains 'é': only a-z, 0-9, '.', '_' and '-' are allowed".into())),
            (".", Err("policy name \".\" is not allowed".into())),
            ("..", Err("policy name \"..\" is not allowed".into())),
        ];
        for (name, expected) in cases {
            assert_eq!(validate_name(name), expected.map(str::to_string), "{name:?}");
        }
        assert_eq!(
            ["root", "Root", "ROOT", "default", "roots", ""].map(is_reserved_name),
            [true, true, true, false, false, false]
        );
    }

    #[test]
    fn storage_form_is_name_and_text_and_loading_parses_again() {
        let original = policy(&rule("kv/*", "\"read\""));
        let json = serde_json::to_value(&original).map_err(|e| e.to_string());
        assert_eq!(
            json,
            Ok(serde_json::json!({ "name": "t", "text": "path \"kv/*\" {\n  capabilities = [\"read\"]\n}\n" }))
        );
        let back: Result<Policy, String> =
            json.and_then(|json| serde_json::from_value(json).map_err(|e| e.to_string()));
        assert_eq!(back, Ok(original));
        let bad: Result<Policy, String> =
            serde_json::from_value(serde_json::json!({ "name": "t", "text": "nope = 1\n" })).map_err(|e| e.to_string());
        assert_eq!(bad, Err("failed to parse policy: line 1: invalid key \"nope\"".to_string()));
    }

    #[test]
    fn never_panics_on_mangled_input() {
        // Every prefix, and every single-byte deletion, of a policy using every feature: errors are fine, panics
        // are not.
        let text = format!(
            "{DEFAULT_POLICY}path \"secret/+/data/*\" {{\n  capabilities = [\"read\", \"subscribe\"]\n  \
             subscribe_event_types = [\"kv*\"]\n  allowed_parameters = {{ \"a\" = [] }}\n  policy = \"write\"\n}}\n"
        );
        for i in 0..=text.len() {
            if text.is_char_boundary(i) {
                let _ = parse("t", text.get(..i).unwrap_or_default());
                if i < text.len() {
                    let mut cut = text.clone();
                    cut.remove(i);
                    if let Ok(policy) = parse("t", &cut) {
                        let acl = Acl::new(&[policy]);
                        let _ = (acl.capabilities("secret/a/data/b"), acl.can_subscribe("secret/a/data/b", "kv-v2/x"));
                    }
                }
            }
        }
    }
}
