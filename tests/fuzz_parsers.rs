//! Property tests ("fuzzing") of every parser that reads untrusted input, through the crate's public API:
//!
//! - the HCL node configuration (`Config::parse`): random text, and structured mutations of a valid file;
//! - ACL policies (`policy::parse`): random text, and mutations of valid policies;
//! - event subscription filters (`Filter::parse`, `Filter::matches`): random text, grammar-generated expressions
//!   (whose canonical form must parse back to a filter that decides every event the same way), random fields;
//! - the Raft RPC decoder (`raft::codec::decode`): random bytes and mutated valid encodings of AppendEntries, Vote
//!   and InstallSnapshot requests, plus length prefixes that claim absurd sizes.
//!
//! The properties: nothing panics (proptest turns a panic into a failure and shrinks it), and every rejection
//! carries a non-empty message that points at a line (config, policy) or position (filter) inside the input.
//!
//! `VIGIL_FUZZ_CASES=<n>` sets the number of generated cases per property (default 1000); each target prints how
//! many inputs it tried. See docs/fuzzing.md.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicUsize, Ordering};

use openraft::raft::{AppendEntriesRequest, InstallSnapshotRequest, VoteRequest};
use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId, Membership, SnapshotMeta, StoredMembership, Vote};
use proptest::prelude::*;
use proptest::test_runner::{Config as RunnerConfig, TestCaseError, TestRunner};
use vigil::config::Config;
use vigil::engines::events::filter::{Filter, FilterFields};
use vigil::engines::policy;
use vigil::raft::{codec, NodeId, NodeInfo, RaftRequest, TypeConfig};

/// Cases per property: `VIGIL_FUZZ_CASES`, else `default`.
fn cases(default: u32) -> u32 {
    std::env::var("VIGIL_FUZZ_CASES").ok().and_then(|v| v.trim().parse().ok()).filter(|n| *n > 0).unwrap_or(default)
}

/// Runs `test` on `cases` values of `strategy` (a panic is a failure, shrunk to a minimal input), prints how many
/// inputs were tried, and fails the test on the first counterexample.
fn fuzz<S: Strategy>(name: &str, cases: u32, strategy: S, test: impl Fn(S::Value) -> Result<(), TestCaseError>)
where
    S::Value: std::fmt::Debug,
{
    let config = RunnerConfig { cases, failure_persistence: None, max_shrink_iters: 4096, ..RunnerConfig::default() };
    let mut runner = TestRunner::new(config);
    let tried = AtomicUsize::new(0);
    let result = runner.run(&strategy, |value| {
        tried.fetch_add(1, Ordering::Relaxed);
        test(value)
    });
    eprintln!("fuzz {name}: {} inputs tried", tried.load(Ordering::Relaxed));
    if let Err(e) = result {
        panic!("fuzz {name}: {e}");
    }
}

/// Arbitrary text with a bias towards characters that matter to HCL and to filters.
fn text_strategy(max_len: usize) -> impl Strategy<Value = String> {
    let interesting = prop::sample::select(vec![
        "{",
        "}",
        "[",
        "]",
        "(",
        ")",
        "\"",
        "'",
        "`",
        "=",
        "==",
        "!=",
        "\n",
        "\r\n",
        " ",
        "\t",
        "#",
        "//",
        "/*",
        "*/",
        "${",
        "%{",
        "<<EOF\n",
        "EOF\n",
        "\\",
        ",",
        ":",
        "?",
        "-",
        "+",
        "*",
        "/",
        ".",
        "true",
        "false",
        "null",
        "path",
        "storage",
        "raft",
        "listener",
        "tcp",
        "capabilities",
        "and",
        "or",
        "not",
        "in",
        "contains",
        "matches",
        "is",
        "empty",
        "event_type",
        "data_path",
        "\u{feff}",
        "é",
        "😀",
        "\u{0}",
        "\u{202e}",
        "1e999",
        "-0",
        "0x1F",
        "99999999999999999999999",
    ]);
    let piece = prop_oneof![
        3 => interesting.prop_map(str::to_string),
        2 => "[a-z_]{1,8}",
        1 => any::<String>().prop_map(|s| s.chars().take(8).collect()),
    ];
    prop::collection::vec(piece, 0..max_len).prop_map(|pieces| pieces.concat())
}

// ----- HCL configuration -----

/// Every setting a node's configuration has (shared with `config`'s unit test of it).
const VALID_CONFIG: &str = include_str!("fixtures/full-config.hcl");

/// Values of every type (and of none), for replacing the right-hand side of an attribute.
fn hcl_value() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("\"\"".to_string()),
        Just("true".to_string()),
        Just("null".to_string()),
        Just("[]".to_string()),
        Just("{}".to_string()),
        Just("-1".to_string()),
        Just("0".to_string()),
        Just("1.5".to_string()),
        Just("18446744073709551616".to_string()),
        Just("99999999999999999999999999999999999999".to_string()),
        Just("1e308".to_string()),
        Just("\"${var.x}\"".to_string()),
        Just("\"%{ if true }x%{ endif }\"".to_string()),
        Just("[\"a\", 1, true]".to_string()),
        Just("{ a = 1 }".to_string()),
        Just("\"http://\"".to_string()),
        Just("\"127.0.0.1:99999\"".to_string()),
        Just("\"[::1]\"".to_string()),
        Just("\"-5s\"".to_string()),
        Just("\"99999999999999999999h\"".to_string()),
        Just("\"\u{1F600}\u{202e}\"".to_string()),
        Just("<<EOF\nx\nEOF".to_string()),
        any::<i64>().prop_map(|n| n.to_string()),
        any::<u64>().prop_map(|n| n.to_string()),
        any::<f64>().prop_map(|n| n.to_string()),
        "\"[ -~]{0,20}\"",
        any::<String>().prop_map(|s| format!("{s:?}")),
        text_strategy(6),
    ]
}

/// One edit of a file, given as lines.
#[derive(Debug, Clone)]
enum LineEdit {
    Delete(usize),
    Duplicate(usize),
    /// Insert `text` at a character position of a line.
    Garble(usize, usize, String),
    /// Replace what follows `=` on a line.
    Retype(usize, String),
    /// Insert a line `name = value`.
    Unknown(usize, String, String),
    /// Insert an arbitrary line.
    Insert(usize, String),
    Swap(usize, usize),
    Truncate(usize),
}

fn line_edit() -> impl Strategy<Value = LineEdit> {
    let field = prop_oneof![
        prop::sample::select(vec![
            "path",
            "node_id",
            "address",
            "cluster_address",
            "tls_disable",
            "api_addr",
            "cluster_addr",
            "log_level",
            "retention_count",
            "retention_age",
            "retry_join",
            "storage",
            "listener",
            "events",
            "capabilities",
            "subscribe_event_types",
            "policy",
            "max_wrapping_ttl",
            "unknown_field",
            "node-id",
        ])
        .prop_map(str::to_string),
        "[a-z_]{1,12}",
    ];
    prop_oneof![
        any::<usize>().prop_map(LineEdit::Delete),
        any::<usize>().prop_map(LineEdit::Duplicate),
        (any::<usize>(), any::<usize>(), text_strategy(4)).prop_map(|(l, c, t)| LineEdit::Garble(l, c, t)),
        (any::<usize>(), hcl_value()).prop_map(|(l, v)| LineEdit::Retype(l, v)),
        (any::<usize>(), field, hcl_value()).prop_map(|(l, f, v)| LineEdit::Unknown(l, f, v)),
        (any::<usize>(), text_strategy(8)).prop_map(|(l, t)| LineEdit::Insert(l, t)),
        (any::<usize>(), any::<usize>()).prop_map(|(a, b)| LineEdit::Swap(a, b)),
        any::<usize>().prop_map(LineEdit::Truncate),
    ]
}

fn apply_edits(text: &str, edits: &[LineEdit]) -> String {
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    for edit in edits {
        let n = lines.len().max(1);
        match edit {
            LineEdit::Delete(l) if !lines.is_empty() => {
                lines.remove(l % n);
            }
            LineEdit::Duplicate(l) if !lines.is_empty() => {
                let line = lines[l % n].clone();
                lines.insert(l % n, line);
            }
            LineEdit::Garble(l, c, t) if !lines.is_empty() => {
                let line = &mut lines[l % n];
                let chars: Vec<char> = line.chars().collect();
                let at = c % (chars.len() + 1);
                *line = chars[..at].iter().collect::<String>() + t + &chars[at..].iter().collect::<String>();
            }
            LineEdit::Retype(l, v) => {
                // Retype the l-th line that has an attribute.
                let attributes: Vec<usize> = (0..lines.len()).filter(|i| lines[*i].contains('=')).collect();
                if let Some(&i) = attributes.get(l % attributes.len().max(1)) {
                    let (name, _) = lines[i].split_once('=').unwrap_or_default();
                    lines[i] = format!("{name}= {v}");
                }
            }
            LineEdit::Unknown(l, f, v) => lines.insert(l % (lines.len() + 1), format!("  {f} = {v}")),
            LineEdit::Insert(l, t) => lines.insert(l % (lines.len() + 1), t.clone()),
            LineEdit::Swap(a, b) if !lines.is_empty() => lines.swap(a % n, b % n),
            LineEdit::Truncate(l) => lines.truncate(l % (lines.len() + 1)),
            _ => {}
        }
    }
    lines.join("\n") + "\n"
}

/// The config parser's contract on any input: no panic; an error names a line inside the text, a field and a reason.
fn check_config(text: &str) -> Result<(), TestCaseError> {
    match Config::parse(text, "fuzz.hcl") {
        Ok(config) => {
            prop_assert!(!config.storage.node_id.is_empty());
            prop_assert!(config.listener.address != config.listener.cluster_address);
        }
        Err(e) => {
            let lines = text.lines().count().max(1);
            prop_assert_eq!(&e.file, "fuzz.hcl");
            prop_assert!(e.line >= 1 && e.line <= lines + 1, "line {} outside 1..={}: {e}", e.line, lines + 1);
            prop_assert!(!e.field.is_empty(), "no field: {e}");
            prop_assert!(!e.message.trim().is_empty(), "no message: {e}");
        }
    }
    Ok(())
}

#[test]
fn config_parser_valid_seed_parses() {
    let config = Config::parse(VALID_CONFIG, "fuzz.hcl").expect("the seed of the mutations is valid");
    assert_eq!(config.storage.node_id, "node-2.east_1");
}

#[test]
fn config_parser_random_text() {
    fuzz("config/random-text", cases(1000), text_strategy(64), |text| check_config(&text));
}

#[test]
fn config_parser_random_unicode() {
    fuzz("config/random-unicode", cases(1000), any::<String>(), |text| check_config(&text));
}

#[test]
fn config_parser_mutated_valid_file() {
    let strategy = prop::collection::vec(line_edit(), 1..6);
    fuzz("config/mutated", cases(2000), strategy, |edits| check_config(&apply_edits(VALID_CONFIG, &edits)));
}

#[test]
fn config_parser_regressions() {
    for text in [
        "",
        "\u{feff}",
        "storage \"raft\" {",
        "storage \"raft\" { path = 18446744073709551616 }",
        "events { retention_count = 99999999999999999999999999 }",
        "events { retention_age = \"9999999999999999999h\" }",
        "events { retention_count = -1 }",
        "events { retention_count = 1e308 }",
        "api_addr = \"http://[::1\"",
        "a = b = c",
        "\"\u{0}\" = 1",
        &"[".repeat(100_000),
        &"a = \"${".repeat(10_000),
        &"x = 1 + ".repeat(10_000),
    ] {
        check_config(text).unwrap_or_else(|e| panic!("{text:?}: {e}"));
    }
}

// ----- ACL policies -----

const VALID_POLICIES: [&str; 3] = [
    policy::DEFAULT_POLICY,
    r#"
path "secret/data/app/*" {
  capabilities = ["create", "read", "update", "patch", "delete", "list"]
}
path "secret/+/team-+/config" {
  capabilities = ["read", "subscribe"]
  subscribe_event_types = ["kv*", "kv-v2/data-write"]
}
path "sys/*" { capabilities = ["deny"] }
"#,
    r#"
name = "dev"
path "secret/restricted" {
  capabilities = ["create"]
  comment = "only foo and bar"
  allowed_parameters = {
    "foo" = []
    "bar" = ["zip", "zap"]
  }
  denied_parameters = { "baz" = [] }
  required_parameters = ["foo"]
  min_wrapping_ttl = "1s"
  max_wrapping_ttl = "90s"
}
"#,
];

fn check_policy(text: &str) -> Result<(), TestCaseError> {
    match policy::parse("fuzz", text) {
        Ok(parsed) => {
            // A parsed policy must be usable by the evaluator on any path.
            let acl = policy::Acl::new(std::slice::from_ref(&parsed));
            for path in ["", "secret/data/app/x", "sys/mounts", "a/b/c/d", "secret/x/team-1/config"] {
                let _ = acl.capabilities(path);
                let _ = acl.can_subscribe(path, "kv-v2/data-write");
            }
        }
        Err(e) => {
            let lines = text.lines().count().max(1);
            prop_assert!(e.line >= 1 && e.line <= lines + 1, "line {} outside 1..={}: {e}", e.line, lines + 1);
            prop_assert!(!e.message.trim().is_empty(), "no message: {e}");
        }
    }
    Ok(())
}

#[test]
fn policy_parser_random_text() {
    fuzz("policy/random-text", cases(1000), text_strategy(64), |text| check_policy(&text));
}

#[test]
fn policy_parser_random_unicode() {
    fuzz("policy/random-unicode", cases(1000), any::<String>(), |text| check_policy(&text));
}

#[test]
fn policy_parser_mutated_valid_policies() {
    let strategy = (0..VALID_POLICIES.len(), prop::collection::vec(line_edit(), 1..6));
    fuzz("policy/mutated", cases(2000), strategy, |(seed, edits)| {
        check_policy(&apply_edits(VALID_POLICIES[seed], &edits))
    });
}

#[test]
fn policy_acl_on_random_paths() {
    let policies: Vec<policy::Policy> =
        VALID_POLICIES.iter().map(|text| policy::parse("p", text).expect("valid seed")).collect();
    let acl = policy::Acl::new(&policies);
    fuzz("policy/acl-random-paths", cases(1000), (text_strategy(12), any::<String>()), |(path, event_type)| {
        let _ = acl.capabilities(&path);
        let _ = acl.has_access_under(&path);
        let _ = acl.can_subscribe(&path, &event_type);
        Ok(())
    });
}

#[test]
fn policy_parser_regressions() {
    for text in [
        "",
        "path",
        "path \"\" {}",
        "path \"*\" { capabilities = [\"read\", \"read\", 1, null] }",
        "path \"a\" { capabilities = \"read\" }",
        "path \"a\" { capabilities = [\"read\"] }\npath \"a\" { capabilities = [\"list\"] }",
        "path \"a\" { subscribe_event_types = [[]] }",
        "path \"+/+/+\" { capabilities = [\"deny\"] }",
        "path \"a\" \"b\" { }",
        &"path \"a\" {".repeat(10_000),
        &"#\n".repeat(10_000),
    ] {
        check_policy(text).unwrap_or_else(|e| panic!("{text:?}: {e}"));
    }
}

// ----- event filters -----

fn check_filter_error(text: &str, result: &Result<Filter, vigil::engines::events::filter::FilterError>) -> bool {
    match result {
        Ok(_) => true,
        Err(e) => {
            let chars = text.chars().count();
            // Positions are 1-based characters; one past the end for "unexpected end"; an over-long expression is
            // reported just after the maximum length.
            (e.position >= 1 && (e.position <= chars + 1 || e.position == 4097)) && !e.message.trim().is_empty()
        }
    }
}

/// A value: bare word, double-quoted with escapes, or raw.
fn filter_value() -> impl Strategy<Value = String> {
    prop_oneof![
        12 => "[A-Za-z0-9_./:*-]{1,10}",
        12 => "[ -~]{0,10}".prop_map(|s| format!("{s:?}")),
        6 => "[ -_a-~]{0,10}".prop_map(|s| format!("`{s}`")),
        1 => Just(r#""\x41\u00e9\U0001F600\101\a\b\f\v""#.to_string()),
        1 => Just(r#""(a|b)+.*[x-z]""#.to_string()),
        1 => Just(r#""[""#.to_string()),
        1 => Just(r#""\q""#.to_string()),
        1 => Just(r#""\xZZ""#.to_string()),
        1 => Just("\"\\U00110000\"".to_string()),
        1 => Just(r#""\ud800""#.to_string()),
        1 => text_strategy(3),
    ]
}

fn filter_selector() -> impl Strategy<Value = String> {
    prop_oneof![
        12 => prop::sample::select(vec!["event_type", "operation", "source_plugin_mount", "data_path", "namespace"])
            .prop_map(str::to_string),
        1 => prop::sample::select(vec![
            "event_type",
            "operation",
            "source_plugin_mount",
            "data_path",
            "namespace",
            "\"/data_path\"",
            "\"/event_type\"",
            "metadata",
            "data_path.x",
            "\"/\"",
        ])
        .prop_map(str::to_string),
        1 => "[a-z_]{1,6}",
    ]
}

fn filter_comparison() -> impl Strategy<Value = String> {
    (filter_selector(), filter_value(), 0..10usize).prop_map(|(sel, v, op)| match op {
        0 => format!("{sel} == {v}"),
        1 => format!("{sel} != {v}"),
        2 => format!("{v} in {sel}"),
        3 => format!("{v} not in {sel}"),
        4 => format!("{sel} contains {v}"),
        5 => format!("{sel} not contains {v}"),
        6 => format!("{sel} matches {v}"),
        7 => format!("{sel} not matches {v}"),
        8 => format!("{sel} is empty"),
        _ => format!("{sel} is not empty"),
    })
}

/// Grammar-shaped expressions (mostly valid), with occasional junk spliced in.
fn filter_expression() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![40 => filter_comparison(), 1 => text_strategy(3)];
    leaf.prop_recursive(5, 48, 3, |inner| {
        prop_oneof![
            8 => (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("{a} and {b}")),
            8 => (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("{a} or {b}")),
            6 => inner.clone().prop_map(|a| format!("not {a}")),
            6 => inner.clone().prop_map(|a| format!("({a})")),
            1 => inner.prop_map(|a| format!("(({a})")),
        ]
    })
}

fn filter_field() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "",
            "kv-v2/data-write",
            "data-write",
            "secret/",
            "secret/data/app/db",
            "kv/app",
            "a",
            "ab",
            "*",
        ])
        .prop_map(str::to_string),
        "[a-z/._-]{0,12}",
        any::<String>(),
    ]
}

#[derive(Debug, Clone)]
struct Fields([String; 5]);

impl Fields {
    fn view(&self) -> FilterFields<'_> {
        FilterFields {
            event_type: &self.0[0],
            operation: &self.0[1],
            source_plugin_mount: &self.0[2],
            data_path: &self.0[3],
            namespace: &self.0[4],
        }
    }
}

fn fields_strategy() -> impl Strategy<Value = Fields> {
    [filter_field(), filter_field(), filter_field(), filter_field(), filter_field()].prop_map(Fields)
}

#[test]
fn filter_parser_random_text() {
    fuzz("filter/random-text", cases(1000), text_strategy(48), |text| {
        let result = Filter::parse(&text);
        prop_assert!(check_filter_error(&text, &result), "{text:?}: {:?}", result.err());
        Ok(())
    });
}

#[test]
fn filter_parser_random_unicode() {
    fuzz("filter/random-unicode", cases(1000), any::<String>(), |text| {
        let result = Filter::parse(&text);
        prop_assert!(check_filter_error(&text, &result), "{text:?}: {:?}", result.err());
        Ok(())
    });
}

/// Grammar-generated expressions; a parsed filter is evaluated on random events, and its canonical form
/// (`Display`) must parse back to a filter that decides every one of them the same way.
#[test]
fn filter_grammar_round_trip_and_matches() {
    let strategy = (filter_expression(), prop::collection::vec(fields_strategy(), 1..6));
    let parsed = AtomicUsize::new(0);
    fuzz("filter/grammar", cases(2000), strategy, |(text, events)| {
        let result = Filter::parse(&text);
        prop_assert!(check_filter_error(&text, &result), "{text:?}: {:?}", result.as_ref().err());
        let Ok(filter) = result else { return Ok(()) };
        parsed.fetch_add(1, Ordering::Relaxed);
        let canonical = filter.to_string();
        let again = Filter::parse(&canonical);
        prop_assert!(again.is_ok(), "{text:?} printed as {canonical:?}, which does not parse: {:?}", again.err());
        let again = again.expect("checked");
        for fields in &events {
            prop_assert_eq!(
                filter.matches(&fields.view()),
                again.matches(&fields.view()),
                "{:?} and its canonical form {:?} disagree on {:?}",
                text,
                canonical,
                fields
            );
        }
        Ok(())
    });
    eprintln!("fuzz filter/grammar: {} expressions parsed", parsed.load(Ordering::Relaxed));
    assert!(parsed.load(Ordering::Relaxed) > 0, "the grammar never produced a valid filter");
}

#[test]
fn filter_parser_regressions() {
    for text in [
        "",
        "(",
        ")",
        "not",
        "\"",
        "`",
        "data_path matches \"(\"",
        "data_path matches \"a{1000000}\"",
        "data_path == \"\\U00110000\"",
        "data_path == \"\\ud800\"",
        "data_path == \"\\777\"",
        "\u{feff}data_path is empty",
        &"(".repeat(10_000),
        &"not ".repeat(10_000),
        &"a".repeat(5000),
        &"é".repeat(4097),
        &format!("{}data_path is empty", "not ".repeat(1000)),
    ] {
        let result = Filter::parse(text);
        assert!(check_filter_error(text, &result), "{text:?}: {:?}", result.err());
    }
}

// ----- the Raft RPC decoder -----

type AppendEntries = AppendEntriesRequest<TypeConfig>;
type InstallSnapshot = InstallSnapshotRequest<TypeConfig>;
type VoteRpc = VoteRequest<NodeId>;

fn log_id(term: u64, node: NodeId, index: u64) -> LogId<NodeId> {
    LogId::new(CommittedLeaderId::new(term, node), index)
}

fn node_info(name: &str) -> NodeInfo {
    NodeInfo {
        name: name.into(),
        api_addr: "http://127.0.0.1:8200".into(),
        cluster_addr: "http://127.0.0.1:8201".into(),
    }
}

fn membership() -> Membership<NodeId, NodeInfo> {
    let nodes: BTreeMap<NodeId, NodeInfo> = [(1, node_info("node1")), (2, node_info("node2"))].into();
    Membership::new(vec![BTreeSet::from([1, 2])], nodes)
}

fn sample_append() -> AppendEntries {
    let request = RaftRequest {
        time_unix_nanos: 1_700_000_000_000_000_000,
        proposer: "node1".into(),
        commands: vec![b"command one".to_vec(), vec![0, 1, 2, 255]],
    };
    AppendEntries {
        vote: Vote::new_committed(3, 1),
        prev_log_id: Some(log_id(3, 1, 41)),
        entries: vec![
            Entry { log_id: log_id(3, 1, 42), payload: EntryPayload::Blank },
            Entry { log_id: log_id(3, 1, 43), payload: EntryPayload::Normal(request) },
            Entry { log_id: log_id(3, 1, 44), payload: EntryPayload::Membership(membership()) },
        ],
        leader_commit: Some(log_id(3, 1, 40)),
    }
}

fn sample_vote() -> VoteRpc {
    VoteRequest { vote: Vote::new(4, 2), last_log_id: Some(log_id(3, 1, 44)) }
}

fn sample_snapshot() -> InstallSnapshot {
    InstallSnapshotRequest {
        vote: Vote::new_committed(3, 1),
        meta: SnapshotMeta {
            last_log_id: Some(log_id(3, 1, 44)),
            last_membership: StoredMembership::new(Some(log_id(3, 1, 44)), membership()),
            snapshot_id: "3-1-44-7".into(),
        },
        offset: 1 << 20,
        data: (0..=255).collect(),
        done: false,
    }
}

/// Decodes `bytes` as every RPC type; any error must have a message.
fn check_decode(bytes: &[u8]) -> Result<(), TestCaseError> {
    fn one<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<(), TestCaseError> {
        if let Err(e) = codec::decode::<T>(bytes) {
            prop_assert!(!e.to_string().trim().is_empty());
        }
        Ok(())
    }
    one::<AppendEntries>(bytes)?;
    one::<VoteRpc>(bytes)?;
    one::<InstallSnapshot>(bytes)?;
    one::<RaftRequest>(bytes)?;
    one::<vigil::engines::Command>(bytes)
}

/// One mutation of an encoding.
#[derive(Debug, Clone)]
enum ByteEdit {
    Flip(usize, u8),
    Set(usize, u8),
    Insert(usize, Vec<u8>),
    Remove(usize, usize),
    Truncate(usize),
    /// Overwrite with a varint claiming a huge length (bincode: 0xfd + u64 little-endian).
    HugeLength(usize, u64),
}

fn byte_edit() -> impl Strategy<Value = ByteEdit> {
    let huge = prop_oneof![Just(u64::MAX), Just(1u64 << 60), Just(1u64 << 40), Just(1u64 << 32), any::<u64>()];
    prop_oneof![
        (any::<usize>(), 1..=255u8).prop_map(|(i, b)| ByteEdit::Flip(i, b)),
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| ByteEdit::Set(i, b)),
        (any::<usize>(), prop::collection::vec(any::<u8>(), 1..9)).prop_map(|(i, b)| ByteEdit::Insert(i, b)),
        (any::<usize>(), 1..8usize).prop_map(|(i, n)| ByteEdit::Remove(i, n)),
        any::<usize>().prop_map(ByteEdit::Truncate),
        (any::<usize>(), huge).prop_map(|(i, n)| ByteEdit::HugeLength(i, n)),
    ]
}

fn mutate(mut bytes: Vec<u8>, edits: &[ByteEdit]) -> Vec<u8> {
    for edit in edits {
        let n = bytes.len().max(1);
        match edit {
            ByteEdit::Flip(i, b) if !bytes.is_empty() => bytes[i % n] ^= b,
            ByteEdit::Set(i, b) if !bytes.is_empty() => bytes[i % n] = *b,
            ByteEdit::Insert(i, b) => {
                let at = i % (bytes.len() + 1);
                bytes.splice(at..at, b.iter().copied());
            }
            ByteEdit::Remove(i, k) if !bytes.is_empty() => {
                let at = i % n;
                let end = (at + k).min(bytes.len());
                bytes.drain(at..end);
            }
            ByteEdit::Truncate(i) => bytes.truncate(i % (bytes.len() + 1)),
            ByteEdit::HugeLength(i, len) => {
                let at = i % (bytes.len() + 1);
                let mut claim = vec![0xfd];
                claim.extend_from_slice(&len.to_le_bytes());
                let end = (at + claim.len()).min(bytes.len());
                bytes.splice(at..end, claim);
            }
            _ => {}
        }
    }
    bytes
}

#[test]
fn codec_samples_round_trip() {
    let append = codec::encode(&sample_append()).expect("encode");
    assert_eq!(codec::decode::<AppendEntries>(&append).expect("decode").entries.len(), 3);
    let vote = codec::encode(&sample_vote()).expect("encode");
    assert_eq!(codec::decode::<VoteRpc>(&vote).expect("decode").vote, Vote::new(4, 2));
    let snapshot = codec::encode(&sample_snapshot()).expect("encode");
    assert_eq!(codec::decode::<InstallSnapshot>(&snapshot).expect("decode").data.len(), 256);
}

#[test]
fn codec_random_bytes() {
    fuzz("codec/random-bytes", cases(2000), prop::collection::vec(any::<u8>(), 0..256), |bytes| check_decode(&bytes));
}

#[test]
fn codec_mutated_valid_requests() {
    let seeds = [
        codec::encode(&sample_append()).expect("encode"),
        codec::encode(&sample_vote()).expect("encode"),
        codec::encode(&sample_snapshot()).expect("encode"),
    ];
    let strategy = (0..seeds.len(), prop::collection::vec(byte_edit(), 1..5));
    fuzz("codec/mutated", cases(2000), strategy, |(seed, edits)| check_decode(&mutate(seeds[seed].clone(), &edits)));
}

/// Regression: bincode's standard configuration has no size limit, and it allocates a string's bytes (zeroed) as
/// soon as it reads the length prefix. A few bytes claiming a 2^60-byte string made `decode` panic ("capacity
/// overflow"), and a 2^40-byte claim made the process abort when the allocation failed. `codec::decode` now
/// bounds what a value may claim by the size of its input.
#[test]
fn codec_huge_length_claims_are_errors() {
    for claim in [u64::MAX, 1 << 60, 1 << 48, 1 << 40, 1 << 32, 1 << 31, 1 << 24, 1 << 20, 4097] {
        let mut prefix = vec![0xfd];
        prefix.extend_from_slice(&claim.to_le_bytes());
        // RaftRequest { time_unix_nanos: 0, proposer: <claim> bytes, ... }
        let request: Vec<u8> = [&[0u8][..], &prefix, b"node1"].concat();
        assert!(codec::decode::<RaftRequest>(&request).is_err(), "{claim}");
        // AppendEntries: a vote and no previous log id, then a vector of entries claiming `claim` elements.
        let empty = AppendEntries { prev_log_id: None, entries: vec![], leader_commit: None, ..sample_append() };
        let empty = codec::encode(&empty).expect("encode");
        let append: Vec<u8> = [&empty[..empty.len() - 2], &prefix, &[0, 0]].concat();
        assert!(codec::decode::<AppendEntries>(&append).is_err(), "{claim}");
        // A huge snapshot id string.
        let mut meta = codec::encode(&sample_snapshot()).expect("encode");
        let id = b"3-1-44-7";
        let at = meta.windows(id.len()).position(|w| w == id).expect("snapshot id") - 1;
        meta.splice(at..at + 1, prefix.iter().copied());
        assert!(codec::decode::<InstallSnapshot>(&meta).is_err(), "{claim}");
    }
    // The exact 10-byte shape of the brief: a u64::MAX-element claim right at the start.
    let ten = [0xfdu8, 0, 0, 0, 0, 0, 0, 0, 0x10, 0];
    check_decode(&ten).expect("no panic");
}
